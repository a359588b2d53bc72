//! The `changed` index (issue 12): `changed_since` through the index equals the pre-index full
//! scan of the history (kept as `SmReader::changed_since_scan`) after any sequence of applied
//! batches, with and without retention pruning, across snapshot install and across the
//! upgrade of a file written without the index; plus an ignored cost figure:
//! `cargo test --release -p filesyncd-raft --lib changed_since_cost -- --ignored --nocapture`
//! (`CHANGED_BENCH_PATHS`, default 200 000).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use filesyncd_merkle::Hash;

use super::reader::ChangedRead;
use super::tables::{self, enc};
use super::{SmError, SmReader, StateMachine};
use crate::apply::MemIndex;
use crate::command::{ChunkerParams, Op, PutKind, Request, RequestId, Retention, Version};
use crate::TypeConfig;

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;
const PATHS: &[&str] = &[
    "a", "b.txt", "d", "d/x", "d/y.md", "d/e", "d/e/f", ".hidden", "z",
];

fn entry(index: u64, seq: u64, time_ms: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::new(RequestId { origin: 9, seq }, time_ms, ops)),
    }
}

fn init(retention: Retention) -> Op {
    Op::InitCluster {
        cluster_id: "c".into(),
        chunker: ChunkerParams::default(),
        retention,
    }
}

fn file(path: &str, c: u8, origin: u64, base: Option<Version>) -> Op {
    Op::Put {
        path: path.into(),
        kind: PutKind::File,
        root: Hash([c; 32]),
        size: u64::from(c) + 1,
        mode: 0o644,
        mtime_ns: 0,
        origin,
        base,
        holders: vec![origin],
    }
}

/// What every `changed_since(i)` must answer, and the one key per path the index must hold.
fn check(r: &SmReader, last: u64) -> Result<(), TestCaseError> {
    for i in 0..=last + 1 {
        let old = r.changed_since_scan(i).map_err(fail)?;
        for how in [ChangedRead::Auto, ChangedRead::Index, ChangedRead::Scan] {
            let new = r.changed_since_by(i, how).map_err(fail)?;
            prop_assert_eq!(&new, &old, "changed_since({}) by {:?}", i, how);
        }
        let paths: Vec<String> = old.iter().map(|(p, _)| p.clone()).collect();
        prop_assert_eq!(
            r.changed_paths_since(i).map_err(fail)?,
            paths,
            "changed_paths_since({})",
            i
        );
    }
    prop_assert!(r.changed_since(u64::MAX).map_err(fail)?.is_empty());
    check_view(r, last)?;
    // Exactly one key per path of the history: its newest record's version.
    let mut newest: BTreeMap<String, Version> = BTreeMap::new();
    r.for_each_retained(|p, rec| {
        newest.insert(p.to_string(), rec.version);
    })
    .map_err(fail)?;
    let mut expected: Vec<(u64, u32, String)> = newest
        .into_iter()
        .map(|(p, v)| (v.index, v.pos, p))
        .collect();
    expected.sort();
    prop_assert_eq!(r.changed_keys().map_err(fail)?, expected);
    Ok(())
}

/// The snapshot view answers what the reader's full scan does: the newest record of every
/// path, what changed after every index, and the paths under every directory.
fn check_view(r: &SmReader, last: u64) -> Result<(), TestCaseError> {
    let view = r.view().map_err(fail)?;
    prop_assert_eq!(view.applied(), r.applied().map_err(fail)?);
    let streamed = |i: u64| -> Result<Vec<(String, crate::history::PathRecord)>, SmError> {
        let mut out = Vec::new();
        view.changed_since(i, |p, rec| {
            out.push((p.to_string(), rec));
            Ok(())
        })?;
        Ok(out)
    };
    for i in 0..=last + 1 {
        prop_assert_eq!(
            streamed(i).map_err(fail)?,
            r.changed_since_scan(i).map_err(fail)?,
            "view.changed_since({})",
            i
        );
    }
    let all = r.changed_since_scan(0).map_err(fail)?;
    let mut each = Vec::new();
    view.for_each_newest(|p, rec| {
        each.push((p.to_string(), rec));
        Ok(())
    })
    .map_err(fail)?;
    prop_assert_eq!(&each, &all);
    for p in PATHS.iter().chain(&["absent", "d/e/f/g"]) {
        let want = all.iter().find(|(q, _)| q == p).map(|(_, rec)| rec.clone());
        prop_assert_eq!(view.newest(p).map_err(fail)?, want, "newest({})", p);
    }
    for root in ["", "d", "d/e", "a", "absent", "d/x"] {
        let mut got = Vec::new();
        view.paths_under(root, &mut got).map_err(fail)?;
        let want: Vec<String> = all
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| root.is_empty() || p == root || p.starts_with(&format!("{root}/")))
            .collect();
        prop_assert_eq!(got, want, "paths_under({})", root);
    }
    Ok(())
}

fn fail(e: SmError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Makes the file at `dir` look as written by format 1: no `changed` table, no marker.
fn downgrade_to_format_1(dir: &Path) {
    let db = redb::Database::create(dir.join("state.redb")).expect("raw open");
    let txn = db.begin_write().expect("txn");
    assert!(txn.delete_table(tables::CHANGED).expect("delete"));
    {
        let mut meta = txn.open_table(tables::META).expect("meta");
        meta.remove(tables::META_FORMAT).expect("rm");
        meta.remove(tables::META_CHANGED_AT).expect("rm");
    }
    txn.commit().expect("commit");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Builds a snapshot of `src` and installs it into a fresh state machine under `dir`.
fn copy_by_snapshot(src: &mut StateMachine, dir: &Path) -> StateMachine {
    rt().block_on(async {
        let snap = src
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        let mut dst = StateMachine::open(dir).expect("open");
        let mut f = snap.snapshot;
        let mut recv = dst.begin_receiving_snapshot().await.expect("recv");
        tokio::io::copy(&mut f, &mut recv).await.expect("copy");
        recv.flush().await.expect("flush");
        dst.install_snapshot(&snap.meta, recv)
            .await
            .expect("install");
        dst
    })
}

#[derive(Clone, Debug)]
enum Base {
    Absent,
    Current,
    Stale(u64),
}

#[derive(Clone, Debug)]
enum AOp {
    Put {
        p: usize,
        c: u8,
        dir: bool,
        base: Base,
        origin: u64,
    },
    Del {
        p: usize,
        base: Base,
    },
    Holders {
        p: usize,
        node: u64,
    },
}

fn base_s() -> impl Strategy<Value = Base> {
    prop_oneof![
        1 => Just(Base::Absent),
        3 => Just(Base::Current),
        1 => (1u64..40).prop_map(Base::Stale),
    ]
}

fn op_s() -> impl Strategy<Value = AOp> {
    prop_oneof![
        4 => (0..PATHS.len(), 0u8..3, prop::bool::weighted(0.2), base_s(), 1u64..4)
            .prop_map(|(p, c, dir, base, origin)| AOp::Put { p, c, dir, base, origin }),
        2 => (0..PATHS.len(), base_s()).prop_map(|(p, base)| AOp::Del { p, base }),
        1 => (0..PATHS.len(), 1u64..5).prop_map(|(p, node)| AOp::Holders { p, node }),
    ]
}

fn retention_s() -> impl Strategy<Value = Retention> {
    prop_oneof![
        Just(Retention::default()),
        (1u32..3).prop_map(|n| Retention {
            keep_versions: Some(n),
            keep_days: None,
        }),
        prop::option::of(1u32..3).prop_map(|n| Retention {
            keep_versions: n,
            keep_days: Some(1),
        }),
    ]
}

/// (ops, hours since the previous entry, applied together with the next entry?).
fn batches_s() -> impl Strategy<Value = Vec<(Vec<AOp>, u64, bool)>> {
    prop::collection::vec(
        (
            prop::collection::vec(op_s(), 0..7),
            0u64..30,
            prop::bool::weighted(0.3),
        ),
        1..25,
    )
}

fn newest(ix: &MemIndex, path: &str) -> Option<Version> {
    ix.history
        .range(
            (path.to_string(), Version::new(0, 0))
                ..=(path.to_string(), Version::new(u64::MAX, u32::MAX)),
        )
        .next_back()
        .map(|(_, r)| r.version)
}

fn resolve(ix: &MemIndex, path: &str, b: &Base) -> Option<Version> {
    match b {
        Base::Absent => None,
        Base::Current => newest(ix, path),
        Base::Stale(i) => Some(Version::new(*i, 0)),
    }
}

fn concrete(ix: &MemIndex, a: &AOp) -> Op {
    match a {
        AOp::Put {
            p,
            c,
            dir,
            base,
            origin,
        } => {
            let path = PATHS[*p];
            let base = resolve(ix, path, base);
            if *dir {
                Op::Put {
                    path: path.into(),
                    kind: PutKind::Dir,
                    root: Hash::ZERO,
                    size: 0,
                    mode: 0o755,
                    mtime_ns: 0,
                    origin: *origin,
                    base,
                    holders: vec![],
                }
            } else {
                file(path, *c, *origin, base)
            }
        }
        AOp::Del { p, base } => Op::Delete {
            path: PATHS[*p].into(),
            base: resolve(ix, PATHS[*p], base).unwrap_or_default(),
        },
        AOp::Holders { p, node } => Op::AddHolders {
            path: PATHS[*p].into(),
            version: newest(ix, PATHS[*p]).unwrap_or_default(),
            holders: vec![*node],
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn changed_since_equals_the_full_scan(
        batches in batches_s(),
        retention in retention_s(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = StateMachine::open(dir.path()).expect("open");
        let mut model = MemIndex::new();
        let init = entry(1, 1, T0, vec![init(retention)]);
        if let EntryPayload::Normal(Request::V1(b)) = &init.payload {
            model.apply(1, b);
        }
        sm.apply_blocking(vec![init]).map_err(fail)?;
        check(&sm.reader(), 1)?;

        let mut time = T0;
        let mut pending = Vec::new();
        let mut last = 1;
        for (i, (ops, hours, together)) in batches.iter().enumerate() {
            last = i as u64 + 2;
            time += hours * HOUR;
            let ops: Vec<Op> = ops.iter().map(|o| concrete(&model, o)).collect();
            let e = entry(last, last, time, ops);
            if let EntryPayload::Normal(Request::V1(b)) = &e.payload {
                model.apply(last, b);
            }
            pending.push(e);
            if !together || i + 1 == batches.len() {
                sm.apply_blocking(std::mem::take(&mut pending)).map_err(fail)?;
                check(&sm.reader(), last)?;
            }
        }
        let want: Vec<_> = (0..=last + 1)
            .map(|i| sm.reader().changed_since_scan(i))
            .collect::<Result<_, _>>()
            .map_err(fail)?;

        // Snapshot install rebuilds the index.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = copy_by_snapshot(&mut sm, other_dir.path());
        check(&other.reader(), last)?;
        let got: Vec<_> = (0..=last + 1)
            .map(|i| other.reader().changed_since(i))
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        prop_assert_eq!(&got, &want);
        drop(other);

        // A file without the index is upgraded on open.
        drop(sm);
        downgrade_to_format_1(dir.path());
        let sm = StateMachine::open(dir.path()).expect("reopen");
        check(&sm.reader(), last)?;
        let got: Vec<_> = (0..=last + 1)
            .map(|i| sm.reader().changed_since(i))
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        prop_assert_eq!(&got, &want);
    }
}

/// Index 1 init, 2 puts a, b, c, 3 edits a, 4 deletes b.
fn populate(sm: &StateMachine) {
    let del_b = Op::Delete {
        path: "b".into(),
        base: Version::new(2, 1),
    };
    sm.apply_blocking(vec![
        entry(1, 1, T0, vec![init(Retention::default())]),
        entry(
            2,
            2,
            T0,
            vec![
                file("a", 1, 1, None),
                file("b", 1, 1, None),
                file("c", 1, 1, None),
            ],
        ),
        entry(3, 3, T0, vec![file("a", 2, 1, Some(Version::new(2, 0)))]),
        entry(4, 4, T0, vec![del_b]),
    ])
    .expect("apply");
}

fn paths(v: Vec<(String, crate::history::PathRecord)>) -> Vec<(String, Version)> {
    v.into_iter().map(|(p, r)| (p, r.version)).collect()
}

#[test]
fn a_file_without_the_index_is_upgraded_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    populate(&sm);
    let before: Vec<_> = (0..6)
        .map(|i| sm.reader().changed_since(i).expect("changed"))
        .collect();
    assert_eq!(
        paths(before[2].clone()),
        vec![
            ("a".into(), Version::new(3, 0)),
            ("b".into(), Version::new(4, 0))
        ]
    );
    drop(sm);

    downgrade_to_format_1(dir.path());
    {
        // Really without the table now.
        let db = redb::Database::create(dir.path().join("state.redb")).expect("raw");
        let txn = db.begin_read().expect("txn");
        assert!(matches!(
            txn.open_table(tables::CHANGED),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
    }
    let sm = StateMachine::open(dir.path()).expect("reopen");
    let after: Vec<_> = (0..6)
        .map(|i| sm.reader().changed_since(i).expect("changed"))
        .collect();
    assert_eq!(after, before);
    assert_eq!(
        sm.reader().changed_keys().expect("keys"),
        vec![
            (2, 2, "c".to_string()),
            (3, 0, "a".to_string()),
            (4, 0, "b".to_string())
        ]
    );
    // The marker is written: the next open does not rebuild (the index survives a wipe of
    // its content that a rebuild would repair).
    drop(sm);
    {
        let db = redb::Database::create(dir.path().join("state.redb")).expect("raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::CHANGED)
            .expect("t")
            .remove((2, 2))
            .expect("rm");
        txn.commit().expect("commit");
    }
    let sm = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(sm.reader().changed_keys().expect("keys").len(), 2);
}

#[test]
fn an_index_left_behind_by_an_older_binary_is_rebuilt() {
    // A format-1 binary applying to a format-2 file moves `applied` but not `changed_at`.
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    populate(&sm);
    let want = sm.reader().changed_keys().expect("keys");
    drop(sm);
    {
        let db = redb::Database::create(dir.path().join("state.redb")).expect("raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::CHANGED)
            .expect("t")
            .remove((4, 0))
            .expect("rm");
        let stale: Option<LogId<u64>> = Some(LogId::new(CommittedLeaderId::new(1, 1), 3));
        txn.open_table(tables::META)
            .expect("meta")
            .insert(
                tables::META_CHANGED_AT,
                enc(&stale).expect("enc").as_slice(),
            )
            .expect("insert");
        txn.commit().expect("commit");
    }
    let sm = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(sm.reader().changed_keys().expect("keys"), want);
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(StateMachine::open(dir.path()).expect("open"));
    {
        let db = redb::Database::create(dir.path().join("state.redb")).expect("raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::META)
            .expect("meta")
            .insert(
                tables::META_FORMAT,
                enc(&(tables::SM_FORMAT + 1)).expect("enc").as_slice(),
            )
            .expect("insert");
        txn.commit().expect("commit");
    }
    assert!(matches!(
        StateMachine::open(dir.path()),
        Err(SmError::UnsupportedFormat { found, .. }) if found == tables::SM_FORMAT + 1
    ));
}

#[test]
fn the_index_holds_one_key_per_path_whatever_the_history_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    sm.apply_blocking(vec![
        entry(1, 1, T0, vec![init(Retention::default())]),
        entry(2, 2, T0, vec![file("a", 0, 1, None), file("b", 0, 1, None)]),
    ])
    .expect("apply");
    let mut base = Version::new(2, 0);
    for i in 3..50u64 {
        sm.apply_blocking(vec![entry(
            i,
            i,
            T0,
            vec![file("a", i as u8, 1, Some(base))],
        )])
        .expect("apply");
        base = Version::new(i, 0);
    }
    assert_eq!(sm.reader().history("a").expect("h").len(), 48);
    assert_eq!(
        sm.reader().changed_keys().expect("keys"),
        vec![(2, 1, "b".to_string()), (49, 0, "a".to_string())]
    );
    assert_eq!(
        paths(sm.reader().changed_since(48).expect("c")),
        vec![("a".into(), base)]
    );
    assert_eq!(
        paths(sm.reader().changed_since(2).expect("c")),
        vec![("a".into(), base)]
    );
    assert_eq!(sm.reader().changed_since(1).expect("c").len(), 2);
}

#[test]
fn a_path_pruned_away_entirely_leaves_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    let day = 24 * HOUR;
    let retention = Retention {
        keep_versions: Some(1),
        keep_days: Some(1),
    };
    let del_a = Op::Delete {
        path: "a".into(),
        base: Version::new(2, 0),
    };
    sm.apply_blocking(vec![
        entry(1, 1, T0, vec![init(retention)]),
        entry(2, 2, T0, vec![file("a", 1, 1, None), file("b", 1, 1, None)]),
        entry(3, 3, T0 + HOUR, vec![del_a]),
    ])
    .expect("apply");
    assert_eq!(
        paths(sm.reader().changed_since(2).expect("c")),
        vec![("a".into(), Version::new(3, 0))]
    );
    // Two days later the tombstone's hint falls due: the whole history of `a` goes.
    sm.apply_blocking(vec![entry(4, 4, T0 + 2 * day, vec![])])
        .expect("apply");
    assert!(sm.reader().history("a").expect("h").is_empty());
    assert_eq!(
        sm.reader().changed_keys().expect("keys"),
        vec![(2, 1, "b".to_string())]
    );
    assert!(sm.reader().changed_since(2).expect("c").is_empty());
    assert_eq!(
        sm.reader().changed_since(0).expect("c"),
        sm.reader().changed_since_scan(0).expect("c")
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_path(i: usize) -> String {
    format!("dir{:03}/sub{:02}/file-{i:08}.dat", i % 997, i % 31)
}

#[test]
#[ignore]
fn changed_since_cost() {
    let n: usize = std::env::var("CHANGED_BENCH_PATHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let per = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    let retention = Retention {
        keep_versions: Some(3),
        keep_days: Some(30),
    };
    sm.apply_blocking(vec![entry(1, 1, T0, vec![init(retention)])])
        .expect("init");
    let mut index = 1;
    let mut version: Vec<Version> = Vec::with_capacity(n);
    // Every path created, then every path edited once: 2 history records per path.
    let t = Instant::now();
    for round in 0..2u8 {
        for start in (0..n).step_by(per) {
            index += 1;
            let ops: Vec<Op> = (start..(start + per).min(n))
                .map(|i| {
                    let base = (round > 0).then(|| version[i]);
                    let mut op = file(&bench_path(i), round, 1, base);
                    if let Op::Put { root, .. } = &mut op {
                        *root = Hash(*blake3::hash(&[round, i as u8, (i >> 8) as u8]).as_bytes());
                    }
                    op
                })
                .collect();
            sm.apply_blocking(vec![entry(index, index, T0 + index, ops)])
                .expect("apply");
            for i in start..(start + per).min(n) {
                let v = Version::new(index, (i - start) as u32);
                if round == 0 {
                    version.push(v);
                } else {
                    version[i] = v;
                }
            }
        }
    }
    let build_s = t.elapsed().as_secs_f64();
    // The last entry: 10 paths edited.
    index += 1;
    let ops: Vec<Op> = (0..10)
        .map(|k| {
            let i = k * (n / 10);
            file(&bench_path(i), 7, 1, Some(version[i]))
        })
        .collect();
    sm.apply_blocking(vec![entry(index, index, T0 + index, ops)])
        .expect("apply");
    let last = index;
    let r = sm.reader();
    let mut hist_records = 0u64;
    r.for_each_retained(|_, _| hist_records += 1)
        .expect("count");
    println!(
        "{n} paths, {hist_records} history records, {} index keys, last index {last} (built in {build_s:.1}s)",
        r.changed_keys().expect("keys").len()
    );

    let time = |f: &dyn Fn() -> usize, runs: usize| {
        let v: Vec<Duration> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect();
        median(v)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // since: 10 paths (the last entry), one 10k-op entry more, then a quarter, half, all.
    let entries = (n / per) as u64;
    for since in [
        last,
        last - 1,
        last - 2,
        last - 1 - entries / 4,
        last - 1 - entries / 2,
        0,
    ] {
        let want = r.changed_since_scan(since).expect("old");
        for how in [ChangedRead::Auto, ChangedRead::Index, ChangedRead::Scan] {
            assert_eq!(r.changed_since_by(since, how).expect("new"), want);
        }
        let k = want.len();
        let runs = if k <= 100 { 1000 } else { 5 };
        let idx = time(
            &|| {
                r.changed_since_by(since, ChangedRead::Index)
                    .expect("i")
                    .len()
            },
            runs,
        );
        let auto = time(&|| r.changed_since(since).expect("a").len(), runs);
        let scan = time(
            &|| {
                r.changed_since_by(since, ChangedRead::Scan)
                    .expect("s")
                    .len()
            },
            5,
        );
        let old = time(&|| r.changed_since_scan(since).expect("o").len(), 5);
        println!(
            "changed_since({since:>2}) -> {k:>6} paths: changed_since {:>9.3} ms (index only {:>9.3} ms, backward scan {:>7.1} ms) | old full scan {:>7.1} ms",
            ms(auto),
            ms(idx),
            ms(scan),
            ms(old)
        );
    }
    let new = r.changed_since(last - 1).expect("new");
    drop(r);

    // Upgrade on open: a file without the index.
    drop(sm);
    downgrade_to_format_1(dir.path());
    let t = Instant::now();
    let sm = StateMachine::open(dir.path()).expect("reopen");
    let upgrade_s = t.elapsed().as_secs_f64();
    drop(sm);
    let t = Instant::now();
    let sm = StateMachine::open(dir.path()).expect("reopen");
    let open_s = t.elapsed().as_secs_f64();
    println!(
        "open with {n} paths: {open_s:.2}s; open that rebuilds the index (format 1 file): {upgrade_s:.2}s"
    );
    assert_eq!(sm.reader().changed_since(last - 1).expect("new"), new);
}
