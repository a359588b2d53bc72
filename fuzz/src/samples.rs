//! Real messages built through the crates' public APIs, for the seeds.

use std::collections::{BTreeMap, BTreeSet};

use filesyncd_chunkstore::chunker::ChunkerParams;
use filesyncd_merkle::Hash;
use filesyncd_raft::command::{Op, PutKind, Request, RequestId, Retention, Version};
use filesyncd_raft::{NodeInfo, TypeConfig};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership};

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn membership(voters: &[u64]) -> Membership<u64, NodeInfo> {
    let nodes: BTreeMap<u64, NodeInfo> = voters
        .iter()
        .map(|id| {
            (
                *id,
                NodeInfo {
                    peer_id: format!("12D3KooWpeer{id}"),
                    addr: format!("/ip4/10.0.0.{id}/udp/7946/quic-v1"),
                },
            )
        })
        .collect();
    let set: BTreeSet<u64> = voters.iter().copied().collect();
    Membership::new(vec![set], nodes)
}

pub fn stored_membership(index: u64) -> StoredMembership<u64, NodeInfo> {
    StoredMembership::new(Some(log_id(1, index)), membership(&[1, 2, 3]))
}

/// Every kind of op, in an order that applies (init first).
pub fn ops() -> Vec<Vec<Op>> {
    let file = |path: &str, root: u8, base: Option<Version>| Op::Put {
        path: path.into(),
        kind: PutKind::File,
        root: Hash([root; 32]),
        size: 1000,
        mode: 0o644,
        mtime_ns: 1_700_000_000_000_000_000,
        origin: 1,
        base,
        holders: vec![1, 2],
    };
    vec![
        vec![Op::InitCluster {
            cluster_id: "fuzz-cluster".into(),
            chunker: ChunkerParams::default(),
            retention: Retention {
                keep_versions: Some(3),
                keep_days: Some(30),
            },
        }],
        vec![
            Op::Put {
                path: "docs".into(),
                kind: PutKind::Dir,
                root: Hash::ZERO,
                size: 0,
                mode: 0o755,
                mtime_ns: 0,
                origin: 1,
                base: None,
                holders: vec![],
            },
            file("docs/report.odt", 7, None),
            Op::Put {
                path: "link".into(),
                kind: PutKind::Symlink {
                    target: "docs".into(),
                },
                root: Hash::of_chunk(b"docs"),
                size: 4,
                mode: 0o777,
                mtime_ns: 0,
                origin: 2,
                base: None,
                holders: vec![],
            },
            file("a.txt", 9, None),
        ],
        vec![
            file("docs/report.odt", 8, Some(Version::new(3, 1))),
            file("docs/report.odt", 10, Some(Version::new(3, 1))),
            Op::Delete {
                path: "a.txt".into(),
                base: Version::new(3, 3),
            },
            Op::AddHolders {
                path: "docs/report.odt".into(),
                version: Version::new(4, 0),
                holders: vec![3],
            },
            Op::AddToken {
                token_hash: Hash([5; 32]),
                expires_ms: 2_000_000_000_000,
            },
            Op::AddNamedToken {
                token_id: "abcdef".into(),
                token_hash: Hash([6; 32]),
                expires_ms: 2_000_000_000_000,
            },
            Op::ConsumeToken {
                token_hash: Hash([6; 32]),
                node: 4,
            },
        ],
    ]
}

/// A log: a blank entry, the membership, then one batch per [`ops`] group.
pub fn entries() -> Vec<Entry<TypeConfig>> {
    let mut out = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(membership(&[1, 2, 3])),
        },
    ];
    for (i, ops) in ops().into_iter().enumerate() {
        let index = 3 + i as u64;
        out.push(Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(Request::new(
                RequestId {
                    origin: 1,
                    seq: index,
                },
                1_700_000_000_000 + index,
                ops,
            )),
        });
    }
    out
}
