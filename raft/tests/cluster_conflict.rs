//! Concurrent writes to one path, and retried forwards: the outcome is
//! decided once, by the log order, and is the same on every node.

mod fixtures;

use std::time::Duration;

use filesyncd_raft::command::{Outcome, Response, Version};
use filesyncd_raft::transport::RpcKind;
use fixtures::ops::{init, put, root_of};
use fixtures::{init_tracing, must_propose, test_config, Cluster};

const T: Duration = Duration::from_secs(20);

fn version_of(o: &Outcome) -> Version {
    match o {
        Outcome::Applied { version } | Outcome::Conflict { version, .. } => *version,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_base_from_two_nodes_gives_one_winner_and_one_conflict_copy() {
    init_tracing();
    let c = Cluster::new(3, 21, test_config()).await;
    let leader = c.wait_leader(T).await;
    let first = must_propose(
        c.node(leader),
        vec![init(), put("doc.txt", "v0", None, leader)],
    )
    .await;
    let base = version_of(&first.response.outcomes()[1]);
    c.wait_converged(T).await;

    let (a, b) = (2, 3);
    let (ra, rb) = tokio::join!(
        c.node(a)
            .propose(vec![put("doc.txt", "from-a", Some(base), a)]),
        c.node(b)
            .propose(vec![put("doc.txt", "from-b", Some(base), b)]),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let outcomes = [(a, "from-a", &ra), (b, "from-b", &rb)];
    let winners: Vec<_> = outcomes
        .iter()
        .filter(|(_, _, p)| matches!(p.response.outcomes()[0], Outcome::Applied { .. }))
        .collect();
    let losers: Vec<_> = outcomes
        .iter()
        .filter(|(_, _, p)| matches!(p.response.outcomes()[0], Outcome::Conflict { .. }))
        .collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "{ra:?} {rb:?}");
    // The loser was committed after the winner.
    assert!(losers[0].2.log_id.index > winners[0].2.log_id.index);
    let conflict_path = match &losers[0].2.response.outcomes()[0] {
        Outcome::Conflict { conflict_path, .. } => conflict_path.clone(),
        _ => unreachable!(),
    };
    assert_ne!(conflict_path, "doc.txt");

    let (root, _) = c.wait_converged(T).await;
    for id in c.ids() {
        let r = c.node(id).reader();
        assert_eq!(r.cluster_root().unwrap().0, root);
        let main = r.get("doc.txt").unwrap().unwrap();
        assert_eq!(main.state.unwrap().root, root_of(winners[0].1), "node {id}");
        let copy = r.get(&conflict_path).unwrap().unwrap();
        assert_eq!(copy.state.unwrap().root, root_of(losers[0].1), "node {id}");
        assert_eq!(copy.origin, losers[0].0);
        assert_eq!(
            r.history("doc.txt").unwrap(),
            c.node(1).reader().history("doc.txt").unwrap()
        );
    }
    c.check_apply_order().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_write_retried_after_a_lost_reply_applies_once() {
    init_tracing();
    let c = Cluster::new(3, 22, test_config()).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();

    // The leader applies the forwarded write, but its answer is lost: the
    // follower retries the same request id.
    c.router.lose_next_replies(RpcKind::ClientWrite, 1);
    let p = must_propose(c.node(follower), vec![put("once.txt", "x", None, follower)]).await;
    let original = match &p.response {
        Response::Duplicate(o) => o.clone(),
        other => panic!("expected the retry to be a duplicate, got {other:?}"),
    };
    assert!(matches!(original[0], Outcome::Applied { .. }));
    // Both copies are in the log; the second, later one answered.
    assert!(version_of(&original[0]).index < p.log_id.index);

    // Re-proposing the id by hand is also answered from the record.
    let again = c
        .node(follower)
        .propose_with_id(p.id, vec![put("once.txt", "x", None, follower)])
        .await
        .unwrap();
    assert_eq!(again.response, Response::Duplicate(original.clone()));

    c.wait_converged(T).await;
    for id in c.ids() {
        let h = c.node(id).reader().history("once.txt").unwrap();
        assert_eq!(h.len(), 1, "node {id}: {h:?}");
        assert_eq!(h[0].version, version_of(&original[0]));
    }
    assert!(c.router.stats().dropped >= 1);
    c.check_apply_order().unwrap();
}
