//! `MemCommitted` (the engine tests' Raft) against the state machine's apply
//! (`filesyncd_raft::apply` on a `MemIndex`), driven directly with the Raft
//! commands built here, by hand: random batches of puts (matching, stale,
//! tombstone and `None` bases; same content against stale bases; files,
//! directories, symlinks; several origins; holders or none), deletes
//! (right and wrong base), ops on conflict names (so candidates collide),
//! several ops of one batch on one path, and an entry clock that moves
//! forwards and backwards. Every outcome the engine is told, and every
//! record it can read afterwards, must be what the state machine decided.
//! This pins the twin's conversion, request ids, log indices and clock.

use std::collections::BTreeMap;

use filesyncd::engine::ports::{
    mem_init_op, Committed, MemCommitted, ProposeOp, ProposeOutcome, MEM_PROPOSER, MEM_START_MS,
};
use filesyncd::engine::types::{Kind, Meta, VersionId, VersionRecord};
use filesyncd_merkle::Hash;
use filesyncd_raft::apply::MemIndex;
use filesyncd_raft::command::{Batch, Op, Outcome, PutKind, RequestId, Response, Version};
use filesyncd_raft::history::PathRecord;
use filesyncd_raft::paths::conflict_name;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// `time_ms` of batches: forwards, then backwards (the clock must not follow).
const TIMES: [u64; 4] = [
    MEM_START_MS,
    MEM_START_MS + 61_000,
    MEM_START_MS - 3_600_000,
    MEM_START_MS + 7_200_000,
];
const ORIGINS: [u64; 3] = [1, 2, 7];

/// Paths ops name: plain ones, a directory and a child, the conflict copies
/// of "a" (so a later stale put of "a" finds its candidate taken), and one
/// in the daemon's namespace.
fn path_pool() -> Vec<String> {
    let mut p: Vec<String> = ["a", "d", "d/x", "b.txt"].map(String::from).to_vec();
    for t in [TIMES[0], TIMES[1]] {
        for o in [ORIGINS[0], ORIGINS[1]] {
            for n in [1, 2] {
                p.push(conflict_name("a", t, o, n));
            }
        }
    }
    p.push(".filesyncd-x".into());
    p
}

#[derive(Clone, Copy, Debug)]
enum AKind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Copy, Debug)]
enum ABase {
    None,
    /// The newest record's version (live or tombstone).
    Newest,
    /// Some version the path had (stale unless it is the newest).
    Seen(usize),
    /// A version that may not exist.
    Made(u64, u32),
}

#[derive(Clone, Debug)]
enum AOp {
    Put {
        path: usize,
        kind: AKind,
        content: u8,
        mode: u32,
        mtime: i64,
        origin: usize,
        base: ABase,
        holders: Vec<usize>,
    },
    Delete {
        path: usize,
        base: ABase,
    },
}

#[derive(Clone, Debug)]
struct Step {
    time: Option<usize>,
    ops: Vec<AOp>,
}

fn path_index() -> impl Strategy<Value = usize> {
    let n = path_pool().len();
    // Mostly the few plain paths, so ops meet on them.
    prop_oneof![6 => 0usize..4, 2 => 4usize..n - 1, 1 => Just(n - 1)]
}

fn base() -> impl Strategy<Value = ABase> {
    prop_oneof![
        2 => Just(ABase::None),
        4 => Just(ABase::Newest),
        3 => any::<usize>().prop_map(ABase::Seen),
        1 => (0u64..12, 0u32..3).prop_map(|(i, p)| ABase::Made(i, p)),
    ]
}

fn aop() -> impl Strategy<Value = AOp> {
    let kind =
        prop_oneof![6 => Just(AKind::File), 2 => Just(AKind::Dir), 1 => Just(AKind::Symlink)];
    let put = (
        path_index(),
        kind,
        0u8..3,
        prop_oneof![Just(0o644u32), Just(0o600u32)],
        0i64..3,
        0usize..ORIGINS.len(),
        base(),
        prop::collection::vec(0usize..ORIGINS.len(), 0..3),
    )
        .prop_map(
            |(path, kind, content, mode, mtime, origin, base, holders)| AOp::Put {
                path,
                kind,
                content,
                mode,
                mtime,
                origin,
                base,
                holders,
            },
        );
    let delete = (path_index(), base()).prop_map(|(path, base)| AOp::Delete { path, base });
    prop_oneof![3 => put, 1 => delete]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        prop::option::weighted(0.3, 0usize..TIMES.len()),
        prop::collection::vec(aop(), 1..5),
    )
        .prop_map(|(time, ops)| Step { time, ops });
    prop::collection::vec(step, 1..25)
}

/// Every version each path has had, oldest first (the reference's history
/// keeps them all: retention is off).
fn seen(ix: &MemIndex, path: &str) -> Vec<Version> {
    ix.history
        .keys()
        .filter(|(p, _)| p == path)
        .map(|(_, v)| *v)
        .collect()
}

fn resolve(ix: &MemIndex, path: &str, b: ABase) -> Option<Version> {
    match b {
        ABase::None => None,
        ABase::Newest => ix.newest(path).map(|r| r.version),
        ABase::Seen(k) => {
            let s = seen(ix, path);
            (!s.is_empty()).then(|| s[k % s.len()])
        }
        ABase::Made(i, p) => Some(Version::new(i, p)),
    }
}

fn vid(v: Version) -> VersionId {
    VersionId::new(v.index, v.pos)
}

/// The same op, once as the engine proposes it and once as the Raft
/// command the daemon must turn it into (built independently here).
fn concrete(ix: &MemIndex, pool: &[String], a: &AOp) -> (ProposeOp, Op) {
    match a {
        AOp::Put {
            path,
            kind,
            content,
            mode,
            mtime,
            origin,
            base,
            holders,
        } => {
            let path = pool[*path].clone();
            let base = resolve(ix, &path, *base);
            let origin = ORIGINS[*origin];
            let holders: Vec<u64> = holders.iter().map(|h| ORIGINS[*h]).collect();
            let (meta, pkind) = match kind {
                AKind::File => (
                    Meta::file(Hash([*content; 32]), u64::from(*content), *mode),
                    PutKind::File,
                ),
                AKind::Dir => (Meta::dir(0o755), PutKind::Dir),
                AKind::Symlink => {
                    let target = format!("t{content}");
                    let meta = Meta {
                        kind: Kind::Symlink {
                            target: target.clone(),
                        },
                        root: Hash::of_chunk(target.as_bytes()),
                        size: target.len() as u64,
                        mode: 0o777,
                    };
                    (meta, PutKind::Symlink { target })
                }
            };
            let op = Op::Put {
                path: path.clone(),
                kind: pkind,
                root: meta.root,
                size: meta.size,
                mode: meta.mode,
                mtime_ns: *mtime,
                origin,
                base,
                holders: holders.clone(),
            };
            let pop = ProposeOp::Put {
                path,
                meta,
                mtime_ns: *mtime,
                origin,
                base: base.map(vid),
                holders,
            };
            (pop, op)
        }
        AOp::Delete { path, base } => {
            let path = pool[*path].clone();
            // A delete always names a base: the engine deletes what it saw.
            let base = resolve(ix, &path, *base).unwrap_or(Version::new(1, 0));
            let op = Op::Delete {
                path: path.clone(),
                base,
            };
            (
                ProposeOp::Delete {
                    path,
                    base: vid(base),
                },
                op,
            )
        }
    }
}

/// What the engine must be told of `o`.
fn told(o: &Outcome) -> ProposeOutcome {
    match o {
        Outcome::Applied { version } => ProposeOutcome::Applied(vid(*version)),
        Outcome::Conflict {
            conflict_path,
            version,
        } => ProposeOutcome::Conflict {
            path: conflict_path.clone(),
            version: vid(*version),
        },
        Outcome::Unchanged { version } => ProposeOutcome::Unchanged(vid(*version)),
        Outcome::DeleteLost { current } => ProposeOutcome::DeleteLost {
            current: vid(*current),
        },
        Outcome::AlreadyAbsent => ProposeOutcome::AlreadyAbsent,
        Outcome::Rejected { reason } => ProposeOutcome::Rejected(format!("{reason:?}")),
    }
}

/// What the engine must read for `path`'s newest record `r`.
fn read(path: &str, r: &PathRecord) -> VersionRecord {
    let version = vid(r.version);
    match &r.state {
        Some(m) => VersionRecord {
            path: path.into(),
            meta: Meta {
                kind: match &m.kind {
                    PutKind::File => Kind::File,
                    PutKind::Dir => Kind::Dir,
                    PutKind::Symlink { target } => Kind::Symlink {
                        target: target.clone(),
                    },
                },
                root: m.root,
                size: m.size,
                mode: m.mode,
            },
            mtime_ns: m.mtime_ns,
            version,
            origin: r.origin,
            holders: m.holders.clone(),
            deleted: false,
        },
        None => VersionRecord {
            path: path.into(),
            meta: Meta::dir(0),
            mtime_ns: 0,
            version,
            origin: r.origin,
            holders: Vec::new(),
            deleted: true,
        },
    }
}

/// The newest record of every path of the reference, as the engine must read it.
fn expected_records(ix: &MemIndex) -> BTreeMap<String, VersionRecord> {
    let mut out = BTreeMap::new();
    for ((path, _), r) in &ix.history {
        out.insert(path.clone(), read(path, r));
    }
    for (path, r) in &ix.live {
        out.insert(path.clone(), read(path, r));
    }
    out
}

/// Runs `steps` through both; panics at the first difference. Returns every
/// outcome the twin answered, for the coverage check.
fn run(steps: &[Step]) -> Vec<ProposeOutcome> {
    let pool = path_pool();
    let twin = MemCommitted::new();
    let mut reference = MemIndex::new();
    let init = Batch {
        id: RequestId {
            origin: MEM_PROPOSER,
            seq: 0,
        },
        time_ms: MEM_START_MS,
        ops: vec![mem_init_op()],
    };
    assert!(matches!(
        reference.apply(0, &init).outcomes(),
        [Outcome::Applied { .. }]
    ));
    let mut time = MEM_START_MS;
    let mut all = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let index = i as u64 + 1;
        if let Some(t) = step.time {
            time = TIMES[t];
            twin.set_time_ms(time);
        }
        let (pops, ops): (Vec<ProposeOp>, Vec<Op>) = step
            .ops
            .iter()
            .map(|a| concrete(&reference, &pool, a))
            .unzip();
        let batch = Batch {
            id: RequestId {
                origin: MEM_PROPOSER,
                seq: index,
            },
            time_ms: time,
            ops,
        };
        let want = match reference.apply(index, &batch) {
            Response::Applied(o) => o.iter().map(told).collect::<Vec<_>>(),
            other => panic!("reference answered {other:?}"),
        };
        let got = twin.apply(pops.clone());
        assert_eq!(got, want, "outcomes of batch {index}: {pops:?}");

        let want = expected_records(&reference);
        let snap = twin.snapshot().expect("snapshot");
        assert_eq!(snap.applied, index);
        let mut read_all = BTreeMap::new();
        snap.view.for_each(&mut |r| {
            read_all.insert(r.path.clone(), r);
        });
        assert_eq!(read_all, want, "records after batch {index}");
        for p in &pool {
            assert_eq!(
                twin.get(p).as_ref(),
                want.get(p),
                "get({p}) after batch {index}"
            );
        }
        let live: Vec<String> = reference.live.keys().cloned().collect();
        assert_eq!(twin.live_paths(), live, "live paths after batch {index}");
        let since = index.saturating_sub(2);
        let mut changed = Vec::new();
        snap.view
            .changed_since(since, &mut |r| changed.push(r.path));
        let want_changed: Vec<String> = want
            .values()
            .filter(|r| r.version.index > since)
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(changed, want_changed, "changed since {since}");
        all.extend(got);
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mem_committed_answers_and_reads_as_the_state_machine(steps in steps()) {
        run(&steps);
    }
}

/// Whether `path` is a conflict copy's second candidate (`...-<origin>-2`;
/// the first ends `...-<HHMMSS>-<origin>`, and origins here are one digit).
fn second_candidate(path: &str) -> bool {
    let parts: Vec<&str> = path.rsplitn(3, '-').collect();
    matches!(parts.as_slice(), ["2", o, _] if o.len() == 1)
}

/// The generator reaches every outcome the engine acts on, including a
/// conflict copy whose first candidate name was taken and one named by a
/// clock moved forwards: without them the property above would check less
/// than it claims.
#[test]
fn the_generated_ops_reach_every_rule() {
    let mut runner = TestRunner::deterministic();
    let strategy = steps();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..256 {
        let steps = strategy.new_tree(&mut runner).expect("generate").current();
        for o in run(&steps) {
            let kind = match &o {
                ProposeOutcome::Applied(_) => "applied",
                ProposeOutcome::Conflict { path, .. } if second_candidate(path) => "conflict-2",
                ProposeOutcome::Conflict { path, .. } if path.contains("-20250101-000100-") => {
                    "conflict-later-clock"
                }
                ProposeOutcome::Conflict { .. } => "conflict",
                ProposeOutcome::Unchanged(_) => "unchanged",
                ProposeOutcome::DeleteLost { .. } => "delete-lost",
                ProposeOutcome::AlreadyAbsent => "already-absent",
                ProposeOutcome::Rejected(r) if r.starts_with("NotADirectory") => "not-a-dir",
                ProposeOutcome::Rejected(r) if r.starts_with("DirectoryNotEmpty") => {
                    "dir-not-empty"
                }
                ProposeOutcome::Rejected(r) if r.starts_with("NoHolders") => "no-holders",
                ProposeOutcome::Rejected(r) if r.starts_with("InvalidPath") => "invalid-path",
                ProposeOutcome::Rejected(_) => "rejected",
                // No membership in the twin: holders are never counted.
                ProposeOutcome::Retry(_) => "retry",
            };
            *counts.entry(kind).or_default() += 1;
        }
    }
    for kind in [
        "applied",
        "conflict",
        "conflict-2",
        "conflict-later-clock",
        "unchanged",
        "delete-lost",
        "already-absent",
        "not-a-dir",
        "dir-not-empty",
        "no-holders",
        "invalid-path",
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) > 0,
            "{kind} never reached: {counts:?}"
        );
    }
}
