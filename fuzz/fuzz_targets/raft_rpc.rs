//! Raft RPC payloads from peers, as the node's transport and
//! `raft::network` decode them: the p2p frame (kind byte, then payload;
//! `node::daemon::transport::unframe`), the sender a request claims
//! (`claimed_sender`, read before anything else is decoded), then the
//! request of each kind (AppendEntries, Vote, InstallSnapshot chunk,
//! forwarded ClientWrite and Admin) and the replies a caller decodes.
//! The entries of an AppendEntries request are then applied in order to an
//! in-memory index by the state machine's own pure `apply_batch`, under the
//! voter sets of the last membership entry before them, as a follower
//! applies what a leader sent. No panic anywhere; a decoded value
//! re-encodes to bytes that decode to the same value.
#![no_main]

use std::collections::BTreeSet;

use filesyncd::daemon::transport::unframe;
use filesyncd_raft::apply::MemIndex;
use filesyncd_raft::command::Request;
use filesyncd_raft::network::{claimed_sender, decode, encode, Reply};
use filesyncd_raft::node::prevote::{PreVoteRequest, PreVoteResponse};
use filesyncd_raft::node::{decode_admin_reply, decode_write_reply, AdminRequest};
use filesyncd_raft::transport::RpcKind;
use filesyncd_raft::{NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `payload` as `T`; if it decodes, its encoding decodes to a value
/// with the same encoding (several openraft types have no `PartialEq`).
fn round_trip<T: DeserializeOwned + Serialize>(payload: &[u8]) -> Option<T> {
    let v: T = decode(payload).ok()?;
    let once = encode(&v).expect("a decoded value encodes");
    let back: T = decode(&once).expect("a re-encoded value decodes");
    assert_eq!(encode(&back).expect("encodes"), once);
    Some(v)
}

/// Applies the entries as a follower's state machine would (pure rules).
fn apply_entries(req: &AppendEntriesRequest<TypeConfig>) {
    let mut index = MemIndex::new();
    let mut voters: Vec<BTreeSet<NodeId>> = Vec::new();
    for entry in req.entries.iter().take(64) {
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(Request::V1(batch)) => {
                let _ = index.apply_with(entry.log_id.index, batch, &voters);
            }
            EntryPayload::Membership(m) => {
                voters = m.get_joint_config().clone();
                let _ = m.voter_ids().count();
                let _ = m.learner_ids().count();
                let _ = m.nodes().count();
            }
        }
    }
}

/// Seeds: one real message of every kind, framed as the transport sends it.
fn seeds() -> Vec<Vec<u8>> {
    use filesyncd::daemon::transport::frame;
    use filesyncd_fuzz::samples::{entries, log_id, stored_membership};
    use filesyncd_raft::command::Response;
    use filesyncd_raft::NodeInfo;
    use openraft::{SnapshotMeta, Vote};
    let vote = Vote::new_committed(3, 1);
    let mut out = Vec::new();
    let mut push = |kind: RpcKind, bytes: Vec<u8>| out.push(frame(kind, &bytes));
    let all = entries();
    for take in [0, 1, all.len()] {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id(1, 0)),
            entries: all[..take].to_vec(),
            leader_commit: Some(log_id(1, take as u64)),
        };
        push(RpcKind::AppendEntries, encode(&req).unwrap());
    }
    push(
        RpcKind::Vote,
        encode(&VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 9)))).unwrap(),
    );
    let snap = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(1, 5)),
            last_membership: stored_membership(2),
            snapshot_id: "5-0123456789abcdef".into(),
        },
        offset: 0,
        data: b"FSDSNAP\0\x01\0\0\0".to_vec(),
        done: false,
    };
    push(RpcKind::InstallSnapshot, encode(&snap).unwrap());
    for e in all.iter().skip(2) {
        if let EntryPayload::Normal(r) = &e.payload {
            push(RpcKind::ClientWrite, encode(r).unwrap());
        }
    }
    push(
        RpcKind::Admin,
        encode(&AdminRequest::AddLearner {
            id: 4,
            info: NodeInfo {
                peer_id: "12D3KooWx".into(),
                addr: "/ip4/10.0.0.4/udp/7946/quic-v1".into(),
            },
            blocking: true,
        })
        .unwrap(),
    );
    push(
        RpcKind::Admin,
        encode(&AdminRequest::Remove { id: 2 }).unwrap(),
    );
    push(
        RpcKind::Admin,
        encode(&AdminRequest::Change {
            change: openraft::ChangeMembers::AddVoterIds([4].into()),
            retain: true,
        })
        .unwrap(),
    );
    // Replies.
    push(
        RpcKind::AppendEntries,
        encode(
            &Reply::<AppendEntriesResponse<NodeId>, RaftError<NodeId>>::Ok(
                AppendEntriesResponse::Success,
            ),
        )
        .unwrap(),
    );
    push(
        RpcKind::AppendEntries,
        encode(
            &Reply::<AppendEntriesResponse<NodeId>, RaftError<NodeId>>::Ok(
                AppendEntriesResponse::HigherVote(Vote::new(9, 3)),
            ),
        )
        .unwrap(),
    );
    push(
        RpcKind::Vote,
        encode(&Reply::<VoteResponse<NodeId>, RaftError<NodeId>>::Ok(
            VoteResponse::new(vote, Some(log_id(3, 9)), true),
        ))
        .unwrap(),
    );
    push(
        RpcKind::InstallSnapshot,
        encode(&Reply::<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        >::Ok(InstallSnapshotResponse { vote }))
        .unwrap(),
    );
    push(
        RpcKind::ClientWrite,
        encode(&Reply::<
            (openraft::LogId<NodeId>, Response),
            RaftError<NodeId>,
        >::Ok((log_id(1, 3), Response::Empty)))
        .unwrap(),
    );
    push(
        RpcKind::PreVote,
        encode(&PreVoteRequest {
            vote: openraft::Vote::new(4, 2),
            last_log_id: Some(log_id(3, 9)),
        })
        .unwrap(),
    );
    push(
        RpcKind::PreVote,
        encode(&Reply::<PreVoteResponse, openraft::error::Infallible>::Ok(
            PreVoteResponse {
                granted: true,
                vote: openraft::Vote::new(3, 1),
            },
        ))
        .unwrap(),
    );
    out
}

libfuzzer_sys::fuzz_target!(init: filesyncd_fuzz::write_seeds_if_asked(seeds), |data: &[u8]| {
    let Some((kind, payload)) = unframe(data.to_vec()) else {
        assert!(data.is_empty() || RpcKind::from_u8(data[0]).is_none());
        return;
    };
    let claimed = claimed_sender(kind, &payload);
    match kind {
        RpcKind::AppendEntries => {
            if let Some(req) = round_trip::<AppendEntriesRequest<TypeConfig>>(&payload) {
                assert_eq!(claimed, req.vote.leader_id().voted_for());
                apply_entries(&req);
            }
            let _ = round_trip::<Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(&payload);
        }
        RpcKind::Vote => {
            if let Some(req) = round_trip::<VoteRequest<NodeId>>(&payload) {
                assert_eq!(claimed, req.vote.leader_id().voted_for());
            }
            let _ = round_trip::<Reply<VoteResponse<NodeId>, RaftError<NodeId>>>(&payload);
        }
        RpcKind::InstallSnapshot => {
            if let Some(req) = round_trip::<InstallSnapshotRequest<TypeConfig>>(&payload) {
                assert_eq!(claimed, req.vote.leader_id().voted_for());
            }
            let _ = round_trip::<
                Reply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
            >(&payload);
        }
        RpcKind::ClientWrite => {
            assert_eq!(claimed, None);
            if let Some(Request::V1(batch)) = round_trip::<Request>(&payload) {
                let _ = MemIndex::new().apply(1, &batch);
            }
            let _ = decode_write_reply(&payload);
        }
        RpcKind::Admin => {
            assert_eq!(claimed, None);
            let _ = round_trip::<AdminRequest>(&payload);
            let _ = decode_admin_reply(&payload);
        }
        RpcKind::PreVote => {
            if let Some(req) = round_trip::<PreVoteRequest>(&payload) {
                assert_eq!(claimed, req.vote.leader_id().voted_for());
            }
            let _ = round_trip::<Reply<PreVoteResponse, openraft::error::Infallible>>(&payload);
        }
    }
});
