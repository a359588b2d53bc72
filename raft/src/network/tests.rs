use std::sync::Mutex;

use futures::future::BoxFuture;
use openraft::error::ClientWriteError;
use openraft::error::ForwardToLeader;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use proptest::prelude::*;

use super::*;
use crate::command::{Request, RequestId};
use crate::transport::mem::MemRouter;
use crate::transport::RpcHandler;

fn entry(index: u64, ops: usize) -> Entry<TypeConfig> {
    let id = RequestId {
        origin: 1,
        seq: index,
    };
    let ops = (0..ops)
        .map(|i| crate::command::Op::Delete {
            path: format!("dir/file-{i:06}"),
            base: crate::command::Version::new(index, i as u32),
        })
        .collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
        payload: EntryPayload::Normal(Request::new(id, 1_700_000_000_000, ops)),
    }
}

fn append_request(entries: usize, ops: usize) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
        leader_commit: Some(LogId::new(CommittedLeaderId::new(3, 1), 10)),
        entries: (0..entries as u64).map(|i| entry(10 + i, ops)).collect(),
    }
}

#[test]
fn payloads_round_trip_with_version_byte() {
    let req = append_request(3, 2);
    let bytes = encode(&req).unwrap();
    assert_eq!(bytes[0], WIRE_VERSION);
    let back: AppendEntriesRequest<TypeConfig> = decode(&bytes).unwrap();
    assert_eq!(back.entries, req.entries);
    assert_eq!(back.vote, req.vote);
    assert_eq!(back.prev_log_id, req.prev_log_id);

    let err: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>> =
        RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_id: Some(2),
            leader_node: Some(NodeInfo {
                peer_id: "p2".into(),
                addr: "a2".into(),
            }),
        }));
    let reply: Reply<(), _> = Reply::Raft(err.clone());
    let back: Reply<(), RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> =
        decode(&encode(&reply).unwrap()).unwrap();
    assert_eq!(back, Reply::Raft(err));
}

#[test]
fn refuses_other_versions_and_empty_payloads() {
    let mut bytes = encode(&VoteRequest::new(Vote::new(1, 1), None)).unwrap();
    assert_eq!(
        decode::<VoteRequest<NodeId>>(&[]).unwrap_err(),
        WireError::Empty
    );
    bytes[0] = WIRE_VERSION + 1;
    assert_eq!(
        decode::<VoteRequest<NodeId>>(&bytes).unwrap_err(),
        WireError::Version(WIRE_VERSION + 1)
    );
}

#[test]
fn entries_hint_is_proportional_and_shrinks() {
    assert_eq!(entries_hint(100, 1000, 500), 50);
    assert_eq!(entries_hint(100, 1000, 1), 1);
    assert_eq!(entries_hint(2, 1000, 999), 1);
    // Never hint the same count again (that would loop).
    assert_eq!(entries_hint(10, 1000, 5000), 9);
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<AppendEntriesRequest<TypeConfig>>(&bytes);
        let _ = decode::<Reply<VoteResponse<NodeId>, RaftError<NodeId>>>(&bytes);
        let _ = decode::<InstallSnapshotRequest<TypeConfig>>(&bytes);
    }

    #[test]
    fn reply_round_trips(ok in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..64), msg in ".{0,20}") {
        let reply: Reply<Vec<u8>, ()> = if ok { Reply::Ok(data) } else { Reply::Failed(RemoteFailure::Unavailable(msg)) };
        let back: Reply<Vec<u8>, ()> = decode(&encode(&reply).unwrap()).unwrap();
        prop_assert_eq!(back, reply);
    }
}

type Seen = Arc<Mutex<Vec<(RpcKind, Vec<u8>)>>>;

/// Answers every request with fixed bytes and records what it received.
struct Canned {
    reply: Vec<u8>,
    seen: Seen,
}

impl RpcHandler for Canned {
    fn handle(&self, kind: RpcKind, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        if let Ok(mut s) = self.seen.lock() {
            s.push((kind, payload));
        }
        let reply = self.reply.clone();
        Box::pin(async move { reply })
    }
}

async fn connection(reply: Vec<u8>, max: usize) -> (MemRouter, Connection<MemTransport>, Seen) {
    let router = MemRouter::new(7);
    let seen = Arc::new(Mutex::new(Vec::new()));
    router.register(
        2,
        Arc::new(Canned {
            reply,
            seen: seen.clone(),
        }),
    );
    let mut factory = NetworkFactory::new(
        1,
        Arc::new(router.transport(1)),
        max,
        Duration::from_millis(10),
    );
    let conn = factory.new_client(2, &NodeInfo::default()).await;
    (router, conn, seen)
}

use crate::transport::mem::MemTransport;

fn opt() -> RPCOption {
    RPCOption::new(Duration::from_secs(5))
}

#[tokio::test]
async fn vote_reaches_the_handler_and_decodes_the_answer() {
    let resp = VoteResponse::new(Vote::new(4, 2), None, true);
    let reply = encode_reply::<_, RaftError<NodeId>>(&Reply::Ok(resp.clone()));
    let (_r, mut conn, seen) = connection(reply, 1 << 20).await;
    let req = VoteRequest::new(Vote::new(4, 1), None);
    let got = conn.vote(req.clone(), opt()).await.unwrap();
    assert_eq!(got, resp);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, RpcKind::Vote);
    assert_eq!(decode::<VoteRequest<NodeId>>(&seen[0].1).unwrap(), req);
}

#[tokio::test]
async fn failures_map_to_openraft_retry_classes() {
    let reply = failure_reply(RemoteFailure::Unavailable("stopping".into()));
    let (router, mut conn, _) = connection(reply, 1 << 20).await;
    let req = VoteRequest::new(Vote::new(4, 1), None);
    // The node answers "unavailable": back off.
    let e = conn.vote(req.clone(), opt()).await.unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    // The reverse link is cut: the request got there, the answer did not.
    router.block(2, 1);
    let e = conn.vote(req.clone(), opt()).await.unwrap_err();
    assert!(matches!(e, RPCError::Timeout(_)), "{e:?}");
    // The forward link is cut.
    router.partition(&[1], &[2]);
    let e = conn.vote(req.clone(), opt()).await.unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    router.heal();
    router.unregister(2);
    let e = conn.vote(req, opt()).await.unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
}

#[tokio::test]
async fn garbage_reply_is_a_network_error_and_raft_errors_are_remote() {
    let (_r, mut conn, _) = connection(vec![WIRE_VERSION, 0xff, 0xff], 1 << 20).await;
    let e = conn
        .vote(VoteRequest::new(Vote::new(4, 1), None), opt())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Network(_)), "{e:?}");

    let fatal: RaftError<NodeId> = RaftError::Fatal(openraft::error::Fatal::Stopped);
    let reply = encode_reply::<VoteResponse<NodeId>, _>(&Reply::Raft(fatal.clone()));
    let (_r, mut conn, _) = connection(reply, 1 << 20).await;
    let e = conn
        .vote(VoteRequest::new(Vote::new(4, 1), None), opt())
        .await
        .unwrap_err();
    match e {
        RPCError::RemoteError(r) => {
            assert_eq!(r.target, 2);
            assert_eq!(r.source, fatal);
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_append_entries_asks_openraft_to_split() {
    let req = append_request(8, 50);
    let size = encode(&req).unwrap().len();
    let (_r, mut conn, seen) = connection(vec![], size / 2).await;
    let e = conn.append_entries(req, opt()).await.unwrap_err();
    match e {
        RPCError::PayloadTooLarge(p) => {
            let hint = p.entries_hint();
            assert!((1..8).contains(&hint), "hint {hint}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // Nothing was sent.
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn the_claimed_sender_is_read_from_the_vote_of_each_kind() {
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    let vote = Vote::new(9, 7);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(9, 7), 41)),
        entries: vec![entry(42, 3)],
        leader_commit: None,
    };
    let vote_req = VoteRequest::<NodeId>::new(Vote::new(10, 3), None);
    let snap = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(9, 5),
        meta: Default::default(),
        offset: 0,
        data: vec![1, 2, 3],
        done: false,
    };
    let pre = crate::node::prevote::PreVoteRequest {
        vote: Vote::new(11, 4),
        last_log_id: None,
    };
    let cases = [
        (RpcKind::PreVote, encode(&pre).unwrap(), Some(4)),
        (RpcKind::AppendEntries, encode(&append).unwrap(), Some(7)),
        (RpcKind::Vote, encode(&vote_req).unwrap(), Some(3)),
        (RpcKind::InstallSnapshot, encode(&snap).unwrap(), Some(5)),
        (RpcKind::ClientWrite, encode(&append).unwrap(), None),
        (RpcKind::AppendEntries, vec![], None),
        (RpcKind::AppendEntries, vec![WIRE_VERSION + 1, 0, 7], None),
        (RpcKind::AppendEntries, vec![WIRE_VERSION, 0xff], None),
    ];
    for (kind, payload, want) in cases {
        assert_eq!(
            claimed_sender(kind, &payload),
            want,
            "{kind:?} {:?}",
            &payload[..payload.len().min(12)]
        );
    }
}
