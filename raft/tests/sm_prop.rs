//! Property: random op sequences give the same responses and state on the in-memory model
//! and on two redb state machines (one entry per apply call vs all in one call), and the
//! incrementally maintained cluster root equals a fresh tree build over the final paths.

use filesyncd_merkle::{Hash, MemNodeStore, PathTree};
use filesyncd_raft::apply::{tree_value, MemIndex};
use filesyncd_raft::command::{ChunkerParams, Op, PutKind, Request, RequestId, Retention, Version};
use filesyncd_raft::state_machine::StateMachine;
use filesyncd_raft::TypeConfig;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;

const PATHS: &[&str] = &[
    "a", "b.txt", "d", "d/x", "d/y.md", "d/e", "d/e/f", ".hidden",
];
const T0: u64 = 1_700_000_000_000;

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

/// (ops, time step in hours, retried seq?) per entry.
fn batches_s() -> impl Strategy<Value = Vec<(Vec<AOp>, u64, bool)>> {
    prop::collection::vec(
        (
            prop::collection::vec(op_s(), 0..6),
            0u64..30,
            prop::bool::weighted(0.1),
        ),
        1..25,
    )
}

fn resolve(ix: &MemIndex, path: &str, b: &Base) -> Option<Version> {
    match b {
        Base::Absent => None,
        Base::Current => ix
            .history
            .range(
                (path.to_string(), Version::new(0, 0))
                    ..=(path.to_string(), Version::new(u64::MAX, u32::MAX)),
            )
            .next_back()
            .map(|(_, r)| r.version),
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
                Op::Put {
                    path: path.into(),
                    kind: PutKind::File,
                    root: Hash([*c; 32]),
                    size: u64::from(*c) + 1,
                    mode: 0o644,
                    mtime_ns: 0,
                    origin: *origin,
                    base,
                    holders: vec![*origin],
                }
            }
        }
        AOp::Del { p, base } => {
            let path = PATHS[*p];
            Op::Delete {
                path: path.into(),
                base: resolve(ix, path, base).unwrap_or_default(),
            }
        }
        AOp::Holders { p, node } => {
            let path = PATHS[*p];
            Op::AddHolders {
                path: path.into(),
                version: resolve(ix, path, &Base::Current).unwrap_or_default(),
                holders: vec![*node],
            }
        }
    }
}

fn entry(index: u64, req: Request) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(req),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn redb_and_model_agree(batches in batches_s(), keep_v in prop::option::of(1u32..3)) {
        let retention = Retention { keep_versions: keep_v, keep_days: Some(1) };
        let (da, db) = (tempfile::tempdir().expect("t"), tempfile::tempdir().expect("t"));
        let a = StateMachine::open(da.path()).expect("open");
        let b = StateMachine::open(db.path()).expect("open");
        let mut model = MemIndex::new();

        let init = Request::new(RequestId { origin: 9, seq: 1 }, T0, vec![Op::InitCluster {
            cluster_id: "p".into(),
            chunker: ChunkerParams::default(),
            retention,
        }]);
        let mut entries = vec![entry(1, init.clone())];
        let mut expected = vec![model.apply(1, match &init { Request::V1(b) => b })];
        let mut time = T0;
        let mut seq = 1;
        for (i, (ops, hours, retry)) in batches.iter().enumerate() {
            let index = i as u64 + 2;
            time += hours * 3_600_000;
            if !retry {
                seq += 1;
            }
            let ops: Vec<Op> = ops.iter().map(|o| concrete(&model, o)).collect();
            let req = Request::new(RequestId { origin: 9, seq }, time, ops);
            expected.push(model.apply(index, match &req { Request::V1(b) => b }));
            entries.push(entry(index, req));
        }
        let mut got_a = Vec::new();
        for e in &entries {
            got_a.extend(a.apply_blocking(vec![e.clone()]).expect("apply a"));
        }
        let got_b = b.apply_blocking(entries.clone()).expect("apply b");
        prop_assert_eq!(&got_a, &expected);
        prop_assert_eq!(&got_b, &expected);
        prop_assert_eq!(a.cluster_root(), b.cluster_root());

        let ra = a.reader();
        let live = ra.list("", None, usize::MAX).expect("list");
        let model_live: Vec<_> = model.live.clone().into_iter().collect();
        prop_assert_eq!(&live, &model_live);
        for p in PATHS {
            let h = ra.history(p).expect("history");
            let mh: Vec<_> = model
                .history
                .iter()
                .filter(|((mp, _), _)| mp == p)
                .map(|(_, r)| r.clone())
                .collect();
            prop_assert_eq!(h, mh);
        }
        prop_assert_eq!(ra.state().expect("state"), model.state.clone());

        let mut store = MemNodeStore::new();
        let fresh = PathTree::build(
            &mut store,
            live.iter().map(|(p, r)| (p.clone(), tree_value(r.state.as_ref().expect("live")))),
        )
        .expect("build");
        prop_assert_eq!(a.cluster_root().0, fresh);
        prop_assert_eq!(ra.cluster_root().expect("root").0, fresh);
    }
}
