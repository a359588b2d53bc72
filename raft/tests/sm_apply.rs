//! Table-driven tests of the pure apply function on the in-memory index.

use filesyncd_merkle::Hash;
use filesyncd_raft::apply::MemIndex;
use filesyncd_raft::command::{
    Batch, ChunkerParams, Op, Outcome, PutKind, RejectReason, Request, RequestId, Response,
    Retention, Version,
};

const T0: u64 = 1_735_689_599_000; // 2024-12-31 23:59:59 UTC
const DAY: u64 = 86_400_000;

fn batch(origin: u64, seq: u64, time_ms: u64, ops: Vec<Op>) -> Batch {
    match Request::new(RequestId { origin, seq }, time_ms, ops) {
        Request::V1(b) => b,
    }
}

fn init(retention: Retention) -> Op {
    Op::InitCluster {
        cluster_id: "c1".into(),
        chunker: ChunkerParams::default(),
        retention,
    }
}

fn put(path: &str, content: u8, origin: u64, base: Option<Version>) -> Op {
    Op::Put {
        path: path.into(),
        kind: PutKind::File,
        root: Hash([content; 32]),
        size: u64::from(content) + 1,
        mode: 0o644,
        mtime_ns: 5,
        origin,
        base,
        holders: vec![origin],
    }
}

fn dir(path: &str, base: Option<Version>) -> Op {
    Op::Put {
        path: path.into(),
        kind: PutKind::Dir,
        root: Hash::ZERO,
        size: 0,
        mode: 0o755,
        mtime_ns: 0,
        origin: 1,
        base,
        holders: vec![],
    }
}

fn del(path: &str, base: Version) -> Op {
    Op::Delete {
        path: path.into(),
        base,
    }
}

/// A fresh index with `InitCluster` applied at index 1.
fn fresh(retention: Retention) -> MemIndex {
    let mut ix = MemIndex::new();
    let r = ix.apply(1, &batch(1, 1, T0, vec![init(retention)]));
    assert_eq!(r.outcomes(), &[Outcome::Applied { version: v(1, 0) }]);
    ix
}

fn v(index: u64, pos: u32) -> Version {
    Version::new(index, pos)
}

fn applied(v: Version) -> Outcome {
    Outcome::Applied { version: v }
}

fn rejected(reason: RejectReason) -> Outcome {
    Outcome::Rejected { reason }
}

#[test]
fn compare_and_set_and_conflict_copies() {
    let mut ix = fresh(Retention::default());
    let r = ix.apply(2, &batch(1, 2, T0, vec![put("docs/r.pdf", 1, 1, None)]));
    assert_eq!(r, Response::Applied(vec![applied(v(2, 0))]));
    // Matching base: new version.
    let r = ix.apply(
        3,
        &batch(1, 3, T0, vec![put("docs/r.pdf", 2, 1, Some(v(2, 0)))]),
    );
    assert_eq!(r.outcomes(), &[applied(v(3, 0))]);
    // Node 2 edited version 2 concurrently: stale → conflict copy, original untouched.
    let stale = batch(2, 1, T0, vec![put("docs/r.pdf", 3, 2, Some(v(2, 0)))]);
    let r = ix.apply(4, &stale);
    let name = "docs/r.sync-conflict-20241231-235959-2.pdf";
    assert_eq!(
        r.outcomes(),
        &[Outcome::Conflict {
            conflict_path: name.into(),
            version: v(4, 0)
        }]
    );
    assert_eq!(ix.live["docs/r.pdf"].version, v(3, 0));
    assert_eq!(ix.live[name].version, v(4, 0));
    // Base None while the path exists: conflict too; same name taken → "-2", then "-3".
    let r = ix.apply(
        5,
        &batch(
            2,
            2,
            T0,
            vec![put("docs/r.pdf", 4, 2, None), put("docs/r.pdf", 5, 2, None)],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            Outcome::Conflict {
                conflict_path: "docs/r.sync-conflict-20241231-235959-2-2.pdf".into(),
                version: v(5, 0)
            },
            Outcome::Conflict {
                conflict_path: "docs/r.sync-conflict-20241231-235959-2-3.pdf".into(),
                version: v(5, 1)
            }
        ]
    );
    // Base Some while the path is absent: conflict copy (no extension, no dot suffix).
    let r = ix.apply(
        6,
        &batch(3, 1, T0 + 1000, vec![put("Makefile", 6, 3, Some(v(2, 0)))]),
    );
    assert_eq!(
        r.outcomes(),
        &[Outcome::Conflict {
            conflict_path: "Makefile.sync-conflict-20250101-000000-3".into(),
            version: v(6, 0)
        }]
    );
}

#[test]
fn conflict_copy_is_identical_on_every_node() {
    let mut a = fresh(Retention::default());
    let mut b = fresh(Retention::default());
    let entries = [
        batch(1, 2, T0, vec![put(".bashrc", 1, 1, None)]),
        batch(2, 1, T0 + 7, vec![put(".bashrc", 2, 2, None)]),
    ];
    for (i, e) in entries.iter().enumerate() {
        let ra = a.apply(2 + i as u64, e);
        let rb = b.apply(2 + i as u64, e);
        assert_eq!(ra, rb);
    }
    assert_eq!(a, b);
    assert!(a
        .live
        .contains_key(".bashrc.sync-conflict-20241231-235959-2"));
}

#[test]
fn stale_put_with_same_content_is_unchanged_and_merges_holders() {
    let mut ix = fresh(Retention::default());
    ix.apply(2, &batch(1, 2, T0, vec![put("a", 1, 1, None)]));
    let r = ix.apply(3, &batch(2, 1, T0, vec![put("a", 1, 2, None)]));
    assert_eq!(r.outcomes(), &[Outcome::Unchanged { version: v(2, 0) }]);
    let meta = ix.live["a"].state.clone().expect("live");
    assert_eq!(meta.holders, vec![1, 2]);
    assert_eq!(ix.live.len(), 1);
}

/// A stale put whose content an intermediate version holds (a node placed
/// it, crashed before recording it, and proposes it at restart with its old
/// base) is that version: `Unchanged` at it, no conflict copy, nothing new.
/// Content older than the base, or never committed, still conflicts.
#[test]
fn stale_put_of_a_version_newer_than_its_base_is_that_version() {
    let mut ix = fresh(Retention::default());
    ix.apply(2, &batch(1, 2, T0, vec![put("a", 1, 1, None)]));
    ix.apply(3, &batch(1, 3, T0, vec![put("a", 2, 1, Some(v(2, 0)))]));
    ix.apply(4, &batch(1, 4, T0, vec![put("a", 3, 1, Some(v(3, 0)))]));
    // Node 2 recorded version 2 and placed version 3.
    let r = ix.apply(5, &batch(2, 1, T0, vec![put("a", 2, 2, Some(v(2, 0)))]));
    assert_eq!(r.outcomes(), &[Outcome::Unchanged { version: v(3, 0) }]);
    // A node without a base (its old synced dir, joining again).
    let r = ix.apply(6, &batch(3, 1, T0, vec![put("a", 1, 3, None)]));
    assert_eq!(r.outcomes(), &[Outcome::Unchanged { version: v(2, 0) }]);
    assert_eq!(ix.live.len(), 1, "no conflict copy");
    assert_eq!(ix.live["a"].version, v(4, 0), "the live version stays");
    // The base's own content, proposed against the base, is an edit back
    // to it that lost the race: a conflict copy, as before.
    let r = ix.apply(7, &batch(2, 2, T0, vec![put("a", 1, 2, Some(v(2, 0)))]));
    assert!(
        matches!(&r.outcomes()[0], Outcome::Conflict { .. }),
        "{:?}",
        r.outcomes()
    );
    // New content with a stale base conflicts.
    let r = ix.apply(8, &batch(2, 3, T0, vec![put("a", 9, 2, Some(v(3, 0)))]));
    assert!(matches!(&r.outcomes()[0], Outcome::Conflict { .. }));
}

#[test]
fn deletes_and_stale_deletes() {
    let mut ix = fresh(Retention::default());
    ix.apply(2, &batch(1, 2, T0, vec![put("f", 1, 1, None)]));
    ix.apply(3, &batch(1, 3, T0, vec![put("f", 2, 1, Some(v(2, 0)))]));
    // Node 2 deletes what it saw (version 2): the delete loses, version 3 stays.
    let r = ix.apply(4, &batch(2, 1, T0, vec![del("f", v(2, 0))]));
    assert_eq!(r.outcomes(), &[Outcome::DeleteLost { current: v(3, 0) }]);
    assert_eq!(ix.live["f"].version, v(3, 0));
    // Matching delete: tombstone.
    let r = ix.apply(5, &batch(2, 2, T0, vec![del("f", v(3, 0))]));
    assert_eq!(r.outcomes(), &[applied(v(5, 0))]);
    assert!(!ix.live.contains_key("f"));
    assert!(ix.history[&("f".to_string(), v(5, 0))].is_tombstone());
    let r = ix.apply(6, &batch(2, 3, T0, vec![del("f", v(3, 0))]));
    assert_eq!(r.outcomes(), &[Outcome::AlreadyAbsent]);
    // Re-create: base None or the tombstone's version both match.
    let r = ix.apply(
        7,
        &batch(
            1,
            4,
            T0,
            vec![put("f", 3, 1, Some(v(5, 0))), put("g", 3, 1, None)],
        ),
    );
    assert_eq!(r.outcomes(), &[applied(v(7, 0)), applied(v(7, 1))]);
}

#[test]
fn invalid_paths_and_values_are_rejected_never_indexed() {
    let mut ix = fresh(Retention::default());
    let bad = [
        "../x",
        "/abs",
        "a//b",
        "a/./b",
        ".filesyncd/db",
        "x/.filesyncd-marker",
        "f.filesyncd-tmp.1",
        "a\0b",
        "tab\there",
        "",
    ];
    let ops: Vec<Op> = bad.iter().map(|p| put(p, 1, 1, None)).collect();
    let r = ix.apply(2, &batch(1, 2, T0, ops));
    assert_eq!(r.outcomes().len(), bad.len());
    for o in r.outcomes() {
        assert!(
            matches!(
                o,
                Outcome::Rejected {
                    reason: RejectReason::InvalidPath(_)
                }
            ),
            "{o:?}"
        );
    }
    let mut bad_mode = put("m", 1, 1, None);
    if let Op::Put { mode, .. } = &mut bad_mode {
        *mode = 0o100644;
    }
    let mut no_holders = put("h", 1, 1, None);
    if let Op::Put { holders, .. } = &mut no_holders {
        holders.clear();
    }
    let bad_link = Op::Put {
        path: "l".into(),
        kind: PutKind::Symlink { target: "t".into() },
        root: Hash([1; 32]),
        size: 1,
        mode: 0o777,
        mtime_ns: 0,
        origin: 1,
        base: None,
        holders: vec![],
    };
    let good_link = Op::Put {
        path: "l2".into(),
        kind: PutKind::Symlink { target: "t".into() },
        root: Hash::of_chunk(b"t"),
        size: 1,
        mode: 0o777,
        mtime_ns: 0,
        origin: 1,
        base: None,
        holders: vec![],
    };
    let r = ix.apply(
        3,
        &batch(1, 3, T0, vec![bad_mode, no_holders, bad_link, good_link]),
    );
    let o = r.outcomes();
    assert!(matches!(
        &o[0],
        Outcome::Rejected {
            reason: RejectReason::InvalidValue(_)
        }
    ));
    assert_eq!(o[1], rejected(RejectReason::NoHolders));
    assert!(matches!(
        &o[2],
        Outcome::Rejected {
            reason: RejectReason::InvalidValue(_)
        }
    ));
    assert_eq!(o[3], applied(v(3, 3)));
    assert_eq!(ix.live.keys().collect::<Vec<_>>(), vec!["l2"]);
    assert_eq!(ix.history.len(), 1);
}

#[test]
fn directory_rules() {
    let mut ix = fresh(Retention::default());
    let r = ix.apply(
        2,
        &batch(
            1,
            2,
            T0,
            vec![
                dir("d", None),
                put("d/f", 1, 1, None),
                put("file", 1, 1, None),
            ],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[applied(v(2, 0)), applied(v(2, 1)), applied(v(2, 2))]
    );
    let r = ix.apply(
        3,
        &batch(
            1,
            3,
            T0,
            vec![
                put("file/x", 1, 1, None),
                del("d", v(2, 0)),
                put("d", 2, 1, Some(v(2, 0))),
                // Children first, then the directory: fine within one batch.
                del("d/f", v(2, 1)),
                del("d", v(2, 0)),
            ],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            rejected(RejectReason::NotADirectory {
                ancestor: "file".into()
            }),
            rejected(RejectReason::DirectoryNotEmpty),
            rejected(RejectReason::DirectoryNotEmpty),
            applied(v(3, 3)),
            applied(v(3, 4)),
        ]
    );
    assert_eq!(ix.live.keys().collect::<Vec<_>>(), vec!["file"]);
}

#[test]
fn tokens_are_single_use_and_expire_on_entry_time() {
    let mut ix = fresh(Retention::default());
    let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
    let add = |h, expires_ms| Op::AddToken {
        token_hash: h,
        expires_ms,
    };
    let consume = |h, node| Op::ConsumeToken {
        token_hash: h,
        node,
    };
    let r = ix.apply(
        2,
        &batch(
            1,
            2,
            T0,
            vec![
                add(a, T0 + 1000),
                add(b, T0 + 1000),
                add(a, T0 + 5),
                add(c, T0),
            ],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            applied(v(2, 0)),
            applied(v(2, 1)),
            rejected(RejectReason::TokenExists),
            rejected(RejectReason::TokenExpired),
        ]
    );
    let r = ix.apply(
        3,
        &batch(
            1,
            3,
            T0 + 999,
            vec![consume(a, 7), consume(a, 8), consume(c, 7)],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            applied(v(3, 0)),
            rejected(RejectReason::TokenReused),
            rejected(RejectReason::UnknownToken),
        ]
    );
    assert_eq!(ix.tokens[&a].consumed.as_ref().map(|u| u.node), Some(7));
    // Expiry compares with the entry clock, which never runs backwards.
    let r = ix.apply(4, &batch(1, 4, T0 + 1000, vec![consume(b, 7)]));
    assert_eq!(r.outcomes(), &[rejected(RejectReason::TokenExpired)]);
    // Expiry is checked first: a spent token past its expiry is expired,
    // even for the node that spent it.
    let r = ix.apply(5, &batch(1, 5, T0 + 1000, vec![consume(a, 7)]));
    assert_eq!(r.outcomes(), &[rejected(RejectReason::TokenExpired)]);
}

#[test]
fn named_tokens_are_found_by_id_and_unique_by_id_and_hash() {
    let mut ix = fresh(Retention::default());
    let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
    let add = |id: &str, h, expires_ms| Op::AddNamedToken {
        token_id: id.into(),
        token_hash: h,
        expires_ms,
    };
    let bad_id = |r: &Outcome| {
        matches!(
            r,
            Outcome::Rejected {
                reason: RejectReason::InvalidValue(_)
            }
        )
    };
    let r = ix.apply(
        2,
        &batch(
            1,
            2,
            T0,
            vec![
                add("abc123", a, T0 + 1000),
                // Same id, another hash; same hash, another id: both taken.
                add("abc123", b, T0 + 1000),
                add("zzz999", a, T0 + 1000),
                add("", b, T0 + 1000),
                add("has.dot", b, T0 + 1000),
                add(&"x".repeat(33), b, T0 + 1000),
                add("late00", b, T0),
                add("second", b, T0 + 1000),
            ],
        ),
    );
    let o = r.outcomes();
    assert_eq!(o[0], applied(v(2, 0)));
    assert_eq!(o[1], rejected(RejectReason::TokenExists));
    assert_eq!(o[2], rejected(RejectReason::TokenExists));
    assert!(bad_id(&o[3]) && bad_id(&o[4]) && bad_id(&o[5]), "{o:?}");
    assert_eq!(o[6], rejected(RejectReason::TokenExpired));
    assert_eq!(o[7], applied(v(2, 7)));
    // Rejected ops left no id behind.
    assert_eq!(
        ix.token_ids
            .iter()
            .map(|(k, h)| (k.as_str(), *h))
            .collect::<Vec<_>>(),
        vec![("abc123", a), ("second", b)]
    );
    // An id-less token (old op) cannot take a named token's hash either.
    let r = ix.apply(
        3,
        &batch(
            1,
            3,
            T0 + 1,
            vec![Op::AddToken {
                token_hash: b,
                expires_ms: T0 + 1000,
            }],
        ),
    );
    assert_eq!(r.outcomes(), &[rejected(RejectReason::TokenExists)]);
    // Consuming goes by hash; the id keeps naming the spent token, so a second join with
    // it is told "reused" rather than "unknown".
    let consume = |h, node| Op::ConsumeToken {
        token_hash: h,
        node,
    };
    let r = ix.apply(4, &batch(1, 4, T0 + 2, vec![consume(a, 9), consume(a, 10)]));
    assert_eq!(
        r.outcomes(),
        &[applied(v(4, 0)), rejected(RejectReason::TokenReused)]
    );
    assert_eq!(ix.token_ids.get("abc123"), Some(&a));
    assert_eq!(ix.tokens[&a].consumed.as_ref().map(|u| u.node), Some(9));
    // An unknown hash is still unknown; a token with c can be added under a new id.
    let r = ix.apply(
        5,
        &batch(1, 5, T0 + 3, vec![consume(c, 9), add("third1", c, T0 + 9)]),
    );
    assert_eq!(
        r.outcomes(),
        &[rejected(RejectReason::UnknownToken), applied(v(5, 1))]
    );
}

#[test]
fn retried_request_ids_replay_the_original_response() {
    let mut ix = fresh(Retention::default());
    let b = batch(5, 10, T0, vec![put("x", 1, 5, None)]);
    let first = ix.apply(2, &b);
    assert_eq!(first, Response::Applied(vec![applied(v(2, 0))]));
    let before = ix.clone();
    let again = ix.apply(3, &b);
    assert_eq!(again, Response::Duplicate(vec![applied(v(2, 0))]));
    assert_eq!(ix, before, "a duplicate changes nothing");
    // A reordered older id within the window still applies.
    let r = ix.apply(4, &batch(5, 9, T0, vec![put("y", 1, 5, None)]));
    assert_eq!(r.outcomes(), &[applied(v(4, 0))]);
    // Far ahead: ids at or below highest - window are too old.
    ix.apply(5, &batch(5, 10 + 64, T0, vec![]));
    let r = ix.apply(6, &batch(5, 10, T0, vec![put("z", 1, 5, None)]));
    assert_eq!(r, Response::TooOld);
    assert!(!ix.live.contains_key("z"));
    let kept: Vec<u64> = ix
        .dedup
        .keys()
        .filter(|(o, _)| *o == 5)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(kept, vec![74], "window pruned");
}

#[test]
fn init_cluster_once_and_required_first() {
    let mut ix = MemIndex::new();
    let r = ix.apply(
        1,
        &batch(
            1,
            1,
            T0,
            vec![
                put("a", 1, 1, None),
                Op::AddToken {
                    token_hash: Hash([1; 32]),
                    expires_ms: T0 + 1,
                },
            ],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            rejected(RejectReason::NotInitialized),
            rejected(RejectReason::NotInitialized)
        ]
    );
    let r = ix.apply(
        2,
        &batch(
            1,
            2,
            T0,
            vec![
                Op::InitCluster {
                    cluster_id: "c1".into(),
                    chunker: ChunkerParams {
                        polynomial: 4, // degree 2: not a valid Rabin polynomial
                        ..ChunkerParams::default()
                    },
                    retention: Retention::default(),
                },
                init(Retention::default()),
                init(Retention {
                    keep_versions: Some(1),
                    keep_days: None,
                }),
            ],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            rejected(RejectReason::InvalidSettings),
            applied(v(2, 1)),
            rejected(RejectReason::AlreadyInitialized)
        ]
    );
    let s = ix.state.settings.clone().expect("settings");
    assert_eq!(s.retention, Retention::default());
    assert_eq!(s.chunker, ChunkerParams::default());
}

#[test]
fn add_holders_to_live_and_old_versions() {
    let mut ix = fresh(Retention::default());
    ix.apply(2, &batch(1, 2, T0, vec![put("a", 1, 1, None)]));
    ix.apply(3, &batch(1, 3, T0, vec![put("a", 2, 1, Some(v(2, 0)))]));
    let r = ix.apply(
        4,
        &batch(
            1,
            4,
            T0,
            vec![
                Op::AddHolders {
                    path: "a".into(),
                    version: v(3, 0),
                    holders: vec![3, 2, 3],
                },
                Op::AddHolders {
                    path: "a".into(),
                    version: v(2, 0),
                    holders: vec![9],
                },
                Op::AddHolders {
                    path: "a".into(),
                    version: v(9, 0),
                    holders: vec![9],
                },
            ],
        ),
    );
    assert_eq!(
        r.outcomes(),
        &[
            applied(v(3, 0)),
            applied(v(2, 0)),
            rejected(RejectReason::UnknownVersion)
        ]
    );
    assert_eq!(
        ix.live["a"].state.as_ref().map(|m| m.holders.clone()),
        Some(vec![1, 2, 3])
    );
    let old = &ix.history[&("a".to_string(), v(2, 0))];
    assert_eq!(
        old.state.as_ref().map(|m| m.holders.clone()),
        Some(vec![1, 9])
    );
}

#[test]
fn retention_keeps_last_n_versions() {
    let mut ix = fresh(Retention {
        keep_versions: Some(2),
        keep_days: None,
    });
    let mut base = None;
    for i in 0..6u64 {
        let r = ix.apply(
            2 + i,
            &batch(1, 2 + i, T0, vec![put("a", i as u8, 1, base)]),
        );
        base = Some(v(2 + i, 0));
        assert_eq!(r.outcomes(), &[applied(v(2 + i, 0))]);
    }
    let kept: Vec<_> = ix.history.keys().map(|(_, v)| v.index).collect();
    assert_eq!(kept, vec![6, 7]);
    // Records 2..=5 dropped: "as of" is exact from index 6 (when 5 was superseded).
    assert_eq!(ix.state.horizon, 6);
}

#[test]
fn retention_by_days_via_hints_and_tombstones() {
    let mut ix = fresh(Retention {
        keep_versions: None,
        keep_days: Some(1),
    });
    ix.apply(
        2,
        &batch(1, 2, T0, vec![put("a", 1, 1, None), put("b", 1, 1, None)]),
    );
    ix.apply(
        3,
        &batch(
            1,
            3,
            T0 + 10,
            vec![put("a", 2, 1, Some(v(2, 0))), del("b", v(2, 1))],
        ),
    );
    assert_eq!(ix.history.len(), 4);
    // Within a day nothing goes.
    ix.apply(4, &batch(1, 4, T0 + DAY, vec![]));
    assert_eq!(ix.history.len(), 4);
    // An unrelated entry after a day: a's old version and b's whole history are pruned.
    ix.apply(5, &batch(1, 5, T0 + DAY + 11, vec![]));
    let left: Vec<_> = ix.history.keys().cloned().collect();
    assert_eq!(left, vec![("a".to_string(), v(3, 0))]);
    assert!(ix.hints.is_empty());
    assert_eq!(ix.state.horizon, 3);
    // A leader with a late clock cannot roll time back.
    ix.apply(6, &batch(1, 6, T0, vec![]));
    assert_eq!(ix.state.clock_ms, T0 + DAY + 11);
}

fn held(path: &str, content: u8, holders: &[u64]) -> Op {
    let mut op = put(path, content, holders[0], None);
    if let Op::Put { holders: h, .. } = &mut op {
        *h = holders.to_vec();
    }
    op
}

fn voters(ids: &[u64]) -> std::collections::BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn a_put_commits_only_when_its_holders_are_a_majority_of_every_voter_set() {
    let mut ix = fresh(Retention::default());
    let three = [voters(&[1, 2, 3])];
    let r = ix.apply_with(
        2,
        &batch(
            1,
            2,
            T0,
            vec![
                // The origin alone, or with a node that is not a voter: a
                // minority of {1, 2, 3}.
                held("alone", 1, &[1]),
                held("learner", 1, &[1, 7]),
                // Two of three, duplicates not counted twice.
                held("two", 1, &[2, 1, 2]),
                held("dup", 1, &[1, 1, 1]),
                // An empty file carries no content: no holders needed.
                {
                    let mut e = held("empty", 1, &[1]);
                    if let Op::Put { size, holders, .. } = &mut e {
                        *size = 0;
                        holders.clear();
                    }
                    e
                },
                dir("d", None),
            ],
        ),
        &three,
    );
    let o = r.outcomes();
    let too_few = |holders, voters| rejected(RejectReason::TooFewHolders { holders, voters });
    assert_eq!(o[0], too_few(1, 3));
    assert_eq!(o[1], too_few(1, 3));
    assert_eq!(o[2], applied(v(2, 2)));
    assert_eq!(o[3], too_few(1, 3));
    assert_eq!(o[4], applied(v(2, 4)));
    assert_eq!(o[5], applied(v(2, 5)));
    assert_eq!(
        ix.live.keys().collect::<Vec<_>>(),
        vec!["d", "empty", "two"],
        "a refused put leaves nothing"
    );

    // A joint change {1, 2, 3} -> {3, 4, 5}: a majority of each set.
    let joint = [voters(&[1, 2, 3]), voters(&[3, 4, 5])];
    let r = ix.apply_with(
        3,
        &batch(
            1,
            3,
            T0,
            vec![
                held("old-only", 2, &[1, 2]),
                held("new-only", 2, &[4, 5]),
                held("both", 2, &[1, 3, 4]),
            ],
        ),
        &joint,
    );
    let o = r.outcomes();
    assert_eq!(o[0], too_few(0, 3));
    assert_eq!(o[1], too_few(0, 3));
    assert_eq!(o[2], applied(v(3, 2)));

    // The same ops, replayed on another index, refuse the same way: the rule
    // reads only the entry and the applied membership.
    let mut other = fresh(Retention::default());
    let again = other.apply_with(
        3,
        &batch(
            1,
            3,
            T0,
            vec![held("old-only", 2, &[1, 2]), held("both", 2, &[1, 3, 4])],
        ),
        &joint,
    );
    assert_eq!(again.outcomes()[0], too_few(0, 3));
    assert_eq!(again.outcomes()[1], applied(v(3, 1)));
}

#[test]
fn a_removal_revokes_the_member_and_every_outstanding_token() {
    use filesyncd_raft::apply::{apply_removal, REVOKED_BY_REMOVAL};
    let mut ix = fresh(Retention::default());
    let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
    let add = |id: &str, h| Op::AddNamedToken {
        token_id: id.into(),
        token_hash: h,
        expires_ms: T0 + 60_000,
    };
    let consume = |h, node| Op::ConsumeToken {
        token_hash: h,
        node,
    };
    let r = ix.apply(
        2,
        &batch(1, 2, T0, vec![add("aaa", a), add("bbb", b), consume(a, 7)]),
    );
    assert!(r
        .outcomes()
        .iter()
        .all(|o| matches!(o, Outcome::Applied { .. })));
    // Node 9 (PeerId "p9") is dropped by the membership entry at index 3.
    let changes = apply_removal(&ix, 3, &[(9, "p9".into())]).expect("pure");
    ix.commit(changes);
    let rec = ix.revoked.get(&9).expect("revoked");
    assert_eq!((rec.peer_id.as_str(), rec.index, rec.at_ms), ("p9", 3, T0));
    // The outstanding token b is revoked; the spent one a keeps its spender.
    assert_eq!(
        ix.tokens[&b].consumed.as_ref().map(|u| u.node),
        Some(REVOKED_BY_REMOVAL)
    );
    assert_eq!(ix.tokens[&a].consumed.as_ref().map(|u| u.node), Some(7));
    let r = ix.apply(4, &batch(1, 4, T0 + 1, vec![consume(b, 8), add("ccc", c)]));
    assert_eq!(
        r.outcomes(),
        &[rejected(RejectReason::TokenRevoked), applied(v(4, 1))]
    );
    // A token created after the removal is good; a second removal of the
    // same node keeps the first record.
    let changes = apply_removal(&ix, 5, &[(9, "p9-other".into())]).expect("pure");
    assert!(changes.revoked.is_empty(), "{changes:?}");
    ix.commit(changes);
    let r = ix.apply(6, &batch(1, 6, T0 + 2, vec![consume(c, 10)]));
    assert_eq!(
        r.outcomes(),
        &[rejected(RejectReason::TokenRevoked)],
        "the removal at 5 revoked c too"
    );
}

#[test]
fn ended_tokens_are_pruned_a_day_later_and_tokens_are_bounded() {
    use filesyncd_raft::apply::{MAX_TOKENS, TOKEN_KEEP_MS};
    let mut ix = fresh(Retention::default());
    let named = |id: String, n: u32, expires_ms| Op::AddNamedToken {
        token_id: id,
        token_hash: Hash(*blake3::hash(&n.to_le_bytes()).as_bytes()),
        expires_ms,
    };
    // A token spent at T0, one expired at T0 + 10, one outstanding for long.
    let spent = Hash(*blake3::hash(&0u32.to_le_bytes()).as_bytes());
    let r = ix.apply(
        2,
        &batch(
            1,
            2,
            T0,
            vec![
                named("spent".into(), 0, T0 + 1000),
                named("short".into(), 1, T0 + 10),
                named("long".into(), 2, T0 + 10 * TOKEN_KEEP_MS),
                Op::ConsumeToken {
                    token_hash: spent,
                    node: 7,
                },
            ],
        ),
    );
    assert!(r
        .outcomes()
        .iter()
        .all(|o| matches!(o, Outcome::Applied { .. })));
    // Just before a day has passed since their end, both are still known.
    let r = ix.apply(
        3,
        &batch(
            1,
            3,
            T0 + TOKEN_KEEP_MS - 1,
            vec![named("x1".into(), 3, u64::MAX)],
        ),
    );
    assert!(matches!(r.outcomes(), [Outcome::Applied { .. }]));
    assert_eq!(ix.tokens.len(), 4);
    // A day after the spend: the spent one goes, with its id; then the
    // expired one.
    let r = ix.apply(
        4,
        &batch(
            1,
            4,
            T0 + TOKEN_KEEP_MS,
            vec![named("x2".into(), 4, u64::MAX)],
        ),
    );
    assert!(matches!(r.outcomes(), [Outcome::Applied { .. }]));
    assert!(!ix.tokens.contains_key(&spent));
    assert!(!ix.token_ids.contains_key("spent"));
    assert!(ix.token_ids.contains_key("short"));
    let r = ix.apply(
        5,
        &batch(
            1,
            5,
            T0 + TOKEN_KEEP_MS + 10,
            vec![named("x3".into(), 5, u64::MAX)],
        ),
    );
    assert!(matches!(r.outcomes(), [Outcome::Applied { .. }]));
    let mut ids: Vec<_> = ix.token_ids.keys().cloned().collect();
    ids.sort();
    assert_eq!(ids, vec!["long", "x1", "x2", "x3"]);
    assert_eq!(ix.tokens.len(), 4);
    // At most MAX_TOKENS are recorded.
    let ops: Vec<Op> = (0..MAX_TOKENS as u32)
        .map(|n| named(format!("n{n}"), 100 + n, u64::MAX))
        .collect();
    let r = ix.apply(6, &batch(1, 6, T0 + TOKEN_KEEP_MS + 11, ops));
    let o = r.outcomes();
    assert!(o[..MAX_TOKENS - 4]
        .iter()
        .all(|o| matches!(o, Outcome::Applied { .. })));
    assert!(o[MAX_TOKENS - 4..]
        .iter()
        .all(|o| *o == rejected(RejectReason::TooManyTokens)));
    assert_eq!(ix.tokens.len(), MAX_TOKENS);
}

#[test]
fn the_cluster_key_is_set_once() {
    use filesyncd_raft::command::ClusterSeed;
    let mut ix = fresh(Retention::default());
    let set = |b| Op::SetClusterKey {
        seed: ClusterSeed([b; 32]),
    };
    let r = ix.apply(2, &batch(1, 2, T0, vec![set(1), set(2)]));
    assert_eq!(
        r.outcomes(),
        &[applied(v(2, 0)), rejected(RejectReason::AlreadyInitialized)]
    );
    assert_eq!(ix.cluster_key, Some(ClusterSeed([1; 32])));
    assert_eq!(
        format!("{:?}", set(3)).matches("ClusterSeed(..)").count(),
        1
    );
}
