//! 3- and 5-node clusters on the in-memory transport with the real redb
//! stores: replication and forwarding, leader loss, partitions, restarts.

mod fixtures;

use std::collections::BTreeSet;
use std::time::Duration;

use filesyncd_raft::command::{Op, Outcome, RejectReason, Response};
use filesyncd_raft::network::{decode, encode, RemoteFailure, Reply};
use filesyncd_raft::node::NodeError;
use filesyncd_raft::transport::RpcKind;
use fixtures::ops::{init, put, root_of};
use fixtures::{info, init_tracing, is_timeout, must_propose, test_config, Cluster};
use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::Vote;

const T: Duration = Duration::from_secs(20);

fn applied_version(r: &Response, i: usize) -> filesyncd_raft::command::Version {
    match &r.outcomes()[i] {
        Outcome::Applied { version } => *version,
        other => panic!("op {i} not applied: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_writes_from_any_node() {
    init_tracing();
    let c = Cluster::new(3, 1, test_config()).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    // Every node proposes; followers forward to the leader.
    for id in c.ids() {
        let p = must_propose(
            c.node(id),
            vec![put(&format!("from-{id}.txt"), "x", None, id)],
        )
        .await;
        assert!(matches!(p.response, Response::Applied(_)), "{p:?}");
        assert_eq!(p.id.origin, id);
    }
    let (root, applied) = c.wait_converged(T).await;
    assert_ne!(root, filesyncd_raft::state_machine::empty_root());
    assert!(applied.is_some());
    for id in c.ids() {
        let r = c.node(id).reader();
        for from in c.ids() {
            let rec = r
                .get(&format!("from-{from}.txt"))
                .unwrap()
                .expect("replicated");
            assert_eq!(rec.state.unwrap().root, root_of("x"));
        }
    }
    // 1 init + 3 puts (+ a blank leader entry) on each of 3 nodes.
    assert!(c.check_apply_order().unwrap() >= 12);
    assert!(c.leaders.violations().is_empty());
}

/// A put whose holders are not a quorum of the voters (here: the origin
/// alone, as an origin that skipped or faked its offer would propose it) is
/// refused by every node's apply: it never becomes a committed version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_held_by_a_minority_is_refused_on_every_node() {
    init_tracing();
    let c = Cluster::new(3, 11, test_config()).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    let mut minority = put("minority.txt", "m", None, leader);
    if let Op::Put { holders, .. } = &mut minority {
        *holders = vec![leader];
    }
    let mut quorum = put("quorum.txt", "q", None, leader);
    let other = c.ids().into_iter().find(|i| *i != leader).unwrap();
    if let Op::Put { holders, .. } = &mut quorum {
        *holders = vec![leader, other];
    }
    let p = must_propose(c.node(leader), vec![minority, quorum]).await;
    assert_eq!(
        p.response.outcomes()[0],
        Outcome::Rejected {
            reason: RejectReason::TooFewHolders {
                holders: 1,
                voters: 3
            }
        }
    );
    applied_version(&p.response, 1);
    c.wait_converged(T).await;
    for id in c.ids() {
        let r = c.node(id).reader();
        assert!(r.get("minority.txt").unwrap().is_none(), "node {id}");
        assert!(r.get("quorum.txt").unwrap().is_some(), "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_refuses_work_with_typed_errors() {
    init_tracing();
    let mut c = Cluster::new(1, 6, test_config()).await;
    must_propose(c.node(1), vec![init()]).await;
    let handle = c.node(1).clone();
    c.stop(1).await;
    let e = handle
        .propose(vec![put("late", "x", None, 1)])
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::ShuttingDown), "{e:?}");
    // Incoming RPCs are answered "unavailable" (callers back off).
    let req = VoteRequest::new(Vote::new(9, 2), None);
    let bytes = handle
        .handle_rpc(RpcKind::Vote, encode(&req).unwrap())
        .await;
    let reply: Reply<VoteResponse<u64>, RaftError<u64>> = decode(&bytes).unwrap();
    assert!(
        matches!(reply, Reply::Failed(RemoteFailure::Unavailable(_))),
        "{reply:?}"
    );
    // Shutting down twice is fine.
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader_and_writes_continue() {
    init_tracing();
    let mut c = Cluster::new(3, 2, test_config()).await;
    let old = c.wait_leader(T).await;
    let follower = c.ids().into_iter().find(|id| *id != old).unwrap();
    must_propose(c.node(follower), vec![init()]).await;
    let before = must_propose(c.node(follower), vec![put("a", "1", None, follower)]).await;
    let v1 = applied_version(&before.response, 0);

    c.stop(old).await;
    let rest: Vec<_> = c.running();
    let new = c.wait_leader_among(&rest, T).await;
    assert_ne!(new, old);
    let after = must_propose(c.node(follower), vec![put("a", "2", Some(v1), follower)]).await;
    assert!(matches!(after.response, Response::Applied(_)));
    assert!(after.log_id.leader_id.term > before.log_id.leader_id.term);

    // The old leader comes back as a follower and catches up.
    c.start(old).await;
    c.wait_converged(T).await;
    let rec = c.node(old).reader().get("a").unwrap().unwrap();
    assert_eq!(rec.state.unwrap().root, root_of("2"));
    c.check_apply_order().unwrap();
    assert!(
        c.leaders.violations().is_empty(),
        "{:?}",
        c.leaders.violations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_cannot_commit_majority_can_and_heal_converges() {
    init_tracing();
    let mut config = test_config();
    config.propose_timeout = Duration::from_secs(3);
    let c = Cluster::new(5, 3, config).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    c.wait_converged(T).await;

    // The leader and one follower on the minority side.
    let ids = c.ids();
    let buddy = *ids.iter().find(|id| **id != leader).unwrap();
    let minority = vec![leader, buddy];
    let majority: Vec<_> = ids
        .iter()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    c.router.partition(&minority, &majority);

    let stuck = c
        .node(buddy)
        .propose(vec![put("minority.txt", "m", None, buddy)])
        .await;
    assert!(matches!(&stuck, Err(e) if is_timeout(e)), "{stuck:?}");

    let new = c.wait_leader_among(&majority, T).await;
    assert!(majority.contains(&new));
    let ok = must_propose(
        c.node(majority[0]),
        vec![put("majority.txt", "M", None, majority[0])],
    )
    .await;
    assert!(matches!(ok.response, Response::Applied(_)));
    for id in &minority {
        assert!(c.node(*id).reader().get("majority.txt").unwrap().is_none());
    }

    c.router.heal();
    c.wait_converged(T).await;
    for id in c.ids() {
        let r = c.node(id).reader();
        assert!(r.get("majority.txt").unwrap().is_some(), "node {id}");
        // Never acknowledged, and never committed: gone everywhere.
        assert!(r.get("minority.txt").unwrap().is_none(), "node {id}");
    }
    c.check_apply_order().unwrap();
    assert!(
        c.leaders.violations().is_empty(),
        "{:?}",
        c.leaders.violations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_from_disk() {
    init_tracing();
    let mut c = Cluster::new(3, 4, test_config()).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    for i in 0..20 {
        must_propose(
            c.node(leader),
            vec![put(&format!("f{i}"), "v", None, leader)],
        )
        .await;
    }
    let (root, applied) = c.wait_converged(T).await;

    for id in c.ids() {
        c.stop(id).await;
    }
    for id in c.ids() {
        c.start(id).await;
        // State is back before any leader exists: it was read from disk.
        assert_eq!(c.node(id).reader().cluster_root().unwrap(), (root, applied));
    }
    let leader = c.wait_leader(T).await;
    must_propose(
        c.node(leader),
        vec![put("after-restart", "v", None, leader)],
    )
    .await;
    let (root2, _) = c.wait_converged(T).await;
    assert_ne!(root2, root);
    assert_eq!(c.node(1).reader().live_count().unwrap(), 21);
    c.check_apply_order().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_and_shrinks_from_any_node() {
    init_tracing();
    let mut c = Cluster::new(1, 5, test_config()).await;
    // Already initialized: a second initialize is a no-op.
    assert!(!c.node(1).initialize_single(info(1)).await.unwrap());
    must_propose(c.node(1), vec![init(), put("early", "e", None, 1)]).await;
    c.add_node(2).await;
    c.add_node(3).await;
    c.node(1).add_learner(2, info(2), true).await.unwrap();
    c.node(1).add_learner(3, info(3), true).await.unwrap();
    // Node 2 is a learner: its promotion is forwarded to the leader.
    c.wait_leader_among(&[1, 2, 3], T).await;
    c.node(2).promote(2).await.unwrap();
    c.node(3)
        .change_membership(BTreeSet::from([1, 2, 3]), false)
        .await
        .unwrap();
    let voters: BTreeSet<u64> = c
        .node(1)
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));
    c.wait_converged(T).await;
    assert!(c.node(3).reader().get("early").unwrap().is_some());

    // Remove a voter through a follower; removing twice is harmless.
    c.node(2).remove(3).await.unwrap();
    c.node(2).remove(3).await.unwrap();
    let m = c.node(1).metrics();
    let mem = m.membership_config.membership();
    assert_eq!(
        mem.voter_ids().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2])
    );
    assert!(mem.get_node(&3).is_none());
    c.stop(3).await;
    must_propose(c.node(2), vec![put("late", "l", None, 2)]).await;
    c.wait_converged(T).await;
    c.check_apply_order().unwrap();
}
