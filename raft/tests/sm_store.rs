//! The redb state machine: durability across reopen, read API, snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use filesyncd_merkle::Hash;
use filesyncd_raft::command::{
    ChunkerParams, Op, Outcome, PutKind, Request, RequestId, Response, Retention, Version,
};
use filesyncd_raft::state_machine::{SmError, StateMachine};
use filesyncd_raft::{NodeInfo, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: u64 = 1_700_000_000_000;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn normal(index: u64, seq: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::new(RequestId { origin: 1, seq }, T0, ops)),
    }
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let nodes = BTreeMap::from([(
        1u64,
        NodeInfo {
            peer_id: "p1".into(),
            addr: "a1".into(),
        },
    )]);
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1u64])], nodes)),
    }
}

fn init(retention: Retention) -> Op {
    Op::InitCluster {
        cluster_id: "c".into(),
        chunker: ChunkerParams::default(),
        retention,
    }
}

fn put(path: &str, c: u8, base: Option<Version>) -> Op {
    Op::Put {
        path: path.into(),
        kind: PutKind::File,
        root: Hash([c; 32]),
        size: 10,
        mode: 0o644,
        mtime_ns: 0,
        origin: 1,
        base,
        holders: vec![1],
    }
}

/// Index 1 membership, 2 init, 3 puts a,b/c,b/d, 4 edits a, 5 deletes b/c.
fn populate(sm: &StateMachine, retention: Retention) -> Vec<Response> {
    sm.apply_blocking(vec![
        membership(1),
        normal(2, 1, vec![init(retention)]),
        normal(
            3,
            2,
            vec![put("a", 1, None), put("b/c", 1, None), put("b/d", 1, None)],
        ),
        normal(4, 3, vec![put("a", 2, Some(Version::new(3, 0)))]),
        normal(
            5,
            4,
            vec![Op::Delete {
                path: "b/c".into(),
                base: Version::new(3, 1),
            }],
        ),
    ])
    .expect("apply")
}

fn paths_of(v: &[(String, filesyncd_raft::history::PathRecord)]) -> Vec<String> {
    v.iter().map(|(p, _)| p.clone()).collect()
}

#[test]
fn apply_read_api_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root_before;
    {
        let sm = StateMachine::open(dir.path()).expect("open");
        let resp = populate(&sm, Retention::default());
        assert_eq!(resp[0], Response::Empty);
        assert_eq!(
            resp[4].outcomes(),
            &[Outcome::Applied {
                version: Version::new(5, 0)
            }]
        );
        let r = sm.reader();
        assert_eq!(
            r.get("a").expect("get").map(|x| x.version),
            Some(Version::new(4, 0))
        );
        assert_eq!(r.get("b/c").expect("get"), None);
        assert_eq!(
            paths_of(&r.list("", None, 100).expect("list")),
            vec!["a", "b/d"]
        );
        assert_eq!(
            paths_of(&r.list("b", None, 100).expect("list")),
            vec!["b/d"]
        );
        assert_eq!(
            paths_of(&r.list("", Some("a"), 100).expect("list")),
            vec!["b/d"]
        );
        assert_eq!(paths_of(&r.list("", None, 1).expect("list")), vec!["a"]);
        let h = r.history("b/c").expect("history");
        assert_eq!(h.len(), 2);
        assert!(h[1].is_tombstone());
        // Every retained record, path by path, in history order.
        let mut all: Vec<(String, Version)> = Vec::new();
        r.for_each_retained(|p, rec| all.push((p.to_string(), rec.version)))
            .expect("for_each_retained");
        let b_c: Vec<_> = all
            .iter()
            .filter(|(p, _)| p == "b/c")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(b_c, h.iter().map(|x| x.version).collect::<Vec<_>>());
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(
            paths_of(&r.as_of(3).expect("as_of")),
            vec!["a", "b/c", "b/d"]
        );
        assert_eq!(r.as_of(3).expect("as_of")[0].1.version, Version::new(3, 0));
        assert_eq!(paths_of(&r.as_of(5).expect("as_of")), vec!["a", "b/d"]);
        assert!(matches!(r.as_of(6), Err(SmError::NotYetApplied { .. })));
        let (root, at) = r.cluster_root().expect("root");
        assert_eq!(at, Some(log_id(5)));
        assert_eq!((root, at), sm.cluster_root());
        assert_ne!(root, filesyncd_raft::state_machine::empty_root());
        assert_eq!(
            r.settings().expect("settings").map(|s| s.cluster_id),
            Some("c".into())
        );
        assert_eq!(r.membership().expect("m").log_id(), &Some(log_id(1)));
        root_before = root;
    }
    let mut sm = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(sm.cluster_root(), (root_before, Some(log_id(5))));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let (applied, m) = rt.block_on(sm.applied_state()).expect("applied_state");
    assert_eq!(applied, Some(log_id(5)));
    assert_eq!(m.log_id(), &Some(log_id(1)));
    // Dedup survives the restart too.
    let again = sm
        .apply_blocking(vec![normal(6, 4, vec![])])
        .expect("apply");
    assert!(matches!(again[0], Response::Duplicate(_)));
}

#[test]
fn as_of_refuses_beyond_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    populate(
        &sm,
        Retention {
            keep_versions: Some(1),
            keep_days: None,
        },
    );
    let r = sm.reader();
    assert_eq!(r.history("a").expect("h").len(), 1);
    // a@3 was superseded at 4, b/c@3 at 5 (its tombstone): exact from 5 on.
    assert!(matches!(
        r.as_of(4),
        Err(SmError::OutsideRetention { horizon: 5, .. })
    ));
    assert_eq!(paths_of(&r.as_of(5).expect("as_of")), vec!["a", "b/d"]);
}

#[tokio::test]
async fn token_ids_survive_reopen_and_travel_in_snapshots() {
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let named = |id: &str, c: u8| Op::AddNamedToken {
        token_id: id.into(),
        token_hash: Hash([c; 32]),
        expires_ms: T0 + 60_000,
    };
    {
        let sm = StateMachine::open(da.path()).expect("open");
        populate(&sm, Retention::default());
        let out = sm
            .apply_blocking(vec![
                normal(6, 10, vec![named("tok001", 1), named("tok002", 2)]),
                normal(
                    7,
                    11,
                    vec![Op::ConsumeToken {
                        token_hash: Hash([2; 32]),
                        node: 5,
                    }],
                ),
            ])
            .expect("apply");
        assert!(matches!(out[1].outcomes(), [Outcome::Applied { .. }]));
    }
    let mut a = StateMachine::open(da.path()).expect("reopen");
    let ra = a.reader();
    let (h1, r1) = ra.token_by_id("tok001").expect("read").expect("known");
    assert_eq!((h1, r1.consumed), (Hash([1; 32]), None));
    let (h2, r2) = ra.token_by_id("tok002").expect("read").expect("known");
    assert_eq!(h2, Hash([2; 32]));
    assert_eq!(r2.consumed.map(|u| u.node), Some(5));
    assert_eq!(ra.token_by_id("nope00").expect("read"), None);

    let mut b = StateMachine::open(db.path()).expect("open");
    b.apply_blocking(vec![normal(1, 1, vec![init(Retention::default())])])
        .expect("apply");
    transfer(&mut a, &mut b).await.expect("transfer");
    let rb = b.reader();
    for id in ["tok001", "tok002", "nope00"] {
        assert_eq!(
            ra.token_by_id(id).expect("a"),
            rb.token_by_id(id).expect("b"),
            "{id}"
        );
    }
    // After the install, an id is still unique on the receiving side.
    let out = b
        .apply_blocking(vec![normal(8, 12, vec![named("tok001", 9)])])
        .expect("apply");
    assert!(matches!(
        out[0].outcomes(),
        [Outcome::Rejected {
            reason: filesyncd_raft::command::RejectReason::TokenExists
        }]
    ));
}

async fn transfer(from: &mut StateMachine, to: &mut StateMachine) -> Result<(), String> {
    let snap = from
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut f = snap.snapshot;
    f.read_to_end(&mut bytes).await.map_err(|e| e.to_string())?;
    install_bytes(to, &snap.meta, &bytes).await
}

async fn install_bytes(
    to: &mut StateMachine,
    meta: &openraft::SnapshotMeta<u64, NodeInfo>,
    bytes: &[u8],
) -> Result<(), String> {
    let mut dst = to
        .begin_receiving_snapshot()
        .await
        .map_err(|e| e.to_string())?;
    dst.write_all(bytes).await.map_err(|e| e.to_string())?;
    dst.flush().await.map_err(|e| e.to_string())?;
    to.install_snapshot(meta, dst)
        .await
        .map_err(|e| e.to_string())
}

fn snap_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn snapshot_round_trip_and_current_snapshot() {
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = StateMachine::open(da.path()).expect("open");
    let mut b = StateMachine::open(db.path()).expect("open");
    populate(
        &a,
        Retention {
            keep_versions: Some(5),
            keep_days: Some(3),
        },
    );
    // b had some other state: it is replaced whole.
    b.apply_blocking(vec![normal(1, 1, vec![init(Retention::default())])])
        .expect("apply");
    transfer(&mut a, &mut b).await.expect("transfer");
    assert_eq!(a.cluster_root(), b.cluster_root());
    let (ra, rb) = (a.reader(), b.reader());
    assert_eq!(
        ra.list("", None, 100).expect("l"),
        rb.list("", None, 100).expect("l")
    );
    assert_eq!(ra.history("b/c").expect("h"), rb.history("b/c").expect("h"));
    assert_eq!(ra.state().expect("s"), rb.state().expect("s"));
    assert_eq!(ra.cluster_root().expect("r"), rb.cluster_root().expect("r"));
    assert_eq!(ra.membership().expect("m"), rb.membership().expect("m"));
    assert_eq!(b.applied_state().await.expect("a").0, Some(log_id(5)));
    // Same subsequent entry → same outcome and root on both (dedup table moved too).
    let next = vec![normal(6, 3, vec![]), normal(7, 9, vec![put("z", 1, None)])];
    let out_a = a.apply_blocking(next.clone()).expect("apply");
    let out_b = b.apply_blocking(next).expect("apply");
    assert_eq!(out_a, out_b);
    assert!(matches!(out_a[0], Response::Duplicate(_)));
    assert_eq!(a.cluster_root(), b.cluster_root());

    // The installed snapshot is b's current one; one snapshot file is kept.
    let cur = b.get_current_snapshot().await.expect("cur").expect("some");
    assert_eq!(cur.meta.last_log_id, Some(log_id(5)));
    assert_eq!(snap_files(db.path()).len(), 1);
    // Building again on a replaces its older snapshot.
    let s2 = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(s2.meta.last_log_id, Some(log_id(7)));
    let files = snap_files(da.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("snap-00000000000000000007-"));
    let cur = a.get_current_snapshot().await.expect("cur").expect("some");
    assert_eq!(cur.meta, s2.meta);
}

#[tokio::test]
async fn corrupt_or_mismatched_snapshot_is_rejected_before_touching_state() {
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = StateMachine::open(da.path()).expect("open");
    let mut b = StateMachine::open(db.path()).expect("open");
    populate(&a, Retention::default());
    b.apply_blocking(vec![normal(1, 1, vec![init(Retention::default())])])
        .expect("apply");
    let before = (b.cluster_root(), b.reader().state().expect("s"));
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let mut bytes = Vec::new();
    let mut f = snap.snapshot;
    f.read_to_end(&mut bytes).await.expect("read");
    for at in [0, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        let err = install_bytes(&mut b, &snap.meta, &bad).await;
        assert!(err.is_err(), "flipped byte {at} accepted");
    }
    let truncated = &bytes[..bytes.len() - 10];
    assert!(install_bytes(&mut b, &snap.meta, truncated).await.is_err());
    let mut wrong_meta = snap.meta.clone();
    wrong_meta.last_log_id = Some(log_id(4));
    assert!(install_bytes(&mut b, &wrong_meta, &bytes).await.is_err());
    assert_eq!((b.cluster_root(), b.reader().state().expect("s")), before);
    assert!(b.get_current_snapshot().await.expect("cur").is_none());
    // No temp file left behind; the good one still installs.
    install_bytes(&mut b, &snap.meta, &bytes)
        .await
        .expect("good install");
    assert_eq!(a.cluster_root(), b.cluster_root());
    assert_eq!(snap_files(db.path()).len(), 1);
}

#[test]
fn changed_since_reports_the_newest_record_of_each_changed_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    populate(&sm, Retention::default());
    let r = sm.reader();
    let all = r.changed_since(0).expect("changed_since");
    assert_eq!(paths_of(&all), vec!["a", "b/c", "b/d"]);
    assert_eq!(all[0].1.version, Version::new(4, 0));
    assert!(
        all[1].1.is_tombstone(),
        "a delete is reported as its tombstone"
    );
    let after3 = r.changed_since(3).expect("changed_since");
    assert_eq!(paths_of(&after3), vec!["a", "b/c"]);
    let after4 = r.changed_since(4).expect("changed_since");
    assert_eq!(paths_of(&after4), vec!["b/c"]);
    assert!(r.changed_since(5).expect("changed_since").is_empty());
}

#[tokio::test]
async fn an_installed_snapshot_whose_file_was_lost_is_rebuilt_at_open() {
    // A crash between the install's commit and the promotion of its file
    // (crash point `raft::snapshot_installed`) leaves the state at the
    // installed index and the current snapshot file older: openraft would
    // purge the log past every snapshot and panic at start-up.
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = StateMachine::open(da.path()).expect("open");
    let mut b = StateMachine::open(db.path()).expect("open");
    b.apply_blocking(vec![normal(1, 1, vec![init(Retention::default())])])
        .expect("apply");
    let old = b
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(old.meta.last_log_id, Some(log_id(1)));
    let old_files = snap_files(db.path());
    let old_bytes: Vec<(String, Vec<u8>)> = old_files
        .iter()
        .map(|n| {
            let p = db.path().join("snapshots").join(n);
            (n.clone(), std::fs::read(p).expect("read"))
        })
        .collect();
    populate(&a, Retention::default());
    transfer(&mut a, &mut b).await.expect("transfer");
    drop(b);
    // Put the old file back in place of the installed one.
    for n in snap_files(db.path()) {
        std::fs::remove_file(db.path().join("snapshots").join(n)).expect("rm");
    }
    for (n, bytes) in &old_bytes {
        std::fs::write(db.path().join("snapshots").join(n), bytes).expect("write");
    }
    let mut b = StateMachine::open(db.path()).expect("reopen");
    let cur = b
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot");
    assert_eq!(cur.meta.last_log_id, Some(log_id(5)));
    assert_eq!(b.applied_state().await.expect("a").0, Some(log_id(5)));
    assert_eq!(a.cluster_root(), b.cluster_root());
    // A normal reopen builds nothing.
    let files = snap_files(db.path());
    drop(b);
    let _b = StateMachine::open(db.path()).expect("reopen");
    assert_eq!(snap_files(db.path()), files);
}

fn membership_of(index: u64, ids: &[u64]) -> Entry<TypeConfig> {
    let nodes: BTreeMap<u64, NodeInfo> = ids
        .iter()
        .map(|id| {
            let info = NodeInfo {
                peer_id: format!("p{id}"),
                addr: format!("a{id}"),
            };
            (*id, info)
        })
        .collect();
    let voters = BTreeSet::from_iter(ids.iter().copied());
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

#[tokio::test]
async fn removed_members_stay_revoked_across_reopen_and_snapshots() {
    use filesyncd_raft::command::ClusterSeed;
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    {
        let sm = StateMachine::open(da.path()).expect("open");
        let out = sm
            .apply_blocking(vec![
                membership_of(1, &[1, 2, 3]),
                normal(
                    2,
                    1,
                    vec![
                        init(Retention::default()),
                        Op::SetClusterKey {
                            seed: ClusterSeed([4; 32]),
                        },
                        Op::AddNamedToken {
                            token_id: "tok001".into(),
                            token_hash: Hash([1; 32]),
                            expires_ms: T0 + 60_000,
                        },
                    ],
                ),
                // 3 is dropped (a learner or a voter alike).
                membership_of(3, &[1, 2]),
            ])
            .expect("apply");
        assert!(out[1]
            .outcomes()
            .iter()
            .all(|o| matches!(o, Outcome::Applied { .. })));
        let r = sm.reader();
        assert_eq!(r.revoked(3).expect("read").map(|x| x.index), Some(3));
        assert_eq!(r.revoked(2).expect("read"), None);
    }
    let mut a = StateMachine::open(da.path()).expect("reopen");
    let ra = a.reader();
    assert_eq!(ra.revoked_peer("p3").expect("read"), Some(3));
    assert_eq!(ra.revoked_peer("p2").expect("read"), None);
    assert_eq!(ra.revoked_peers(10).expect("read"), vec!["p3".to_string()]);
    assert_eq!(ra.cluster_key().expect("read"), Some(ClusterSeed([4; 32])));
    let (_, tok) = ra.token_by_id("tok001").expect("read").expect("known");
    assert_eq!(
        tok.consumed.map(|u| u.node),
        Some(filesyncd_raft::apply::REVOKED_BY_REMOVAL),
        "the removal revoked the outstanding token"
    );

    let mut b = StateMachine::open(db.path()).expect("open");
    transfer(&mut a, &mut b).await.expect("transfer");
    let rb = b.reader();
    assert_eq!(rb.revoked_peer("p3").expect("read"), Some(3));
    assert_eq!(rb.revoked(3).expect("read"), ra.revoked(3).expect("read"));
    assert_eq!(rb.cluster_key().expect("read"), Some(ClusterSeed([4; 32])));
}
