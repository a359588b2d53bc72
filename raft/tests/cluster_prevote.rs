//! Pre-vote (`node::prevote`): a voter that cannot reach the leader does
//! not raise the term, so it cannot unseat a healthy leader when it comes
//! back; a cluster that lost its leader still elects one.

mod fixtures;

use std::time::Duration;

use filesyncd_raft::config::RaftConfig;
use fixtures::ops::init;
use fixtures::{init_tracing, must_propose, test_config, Cluster};

const T: Duration = Duration::from_secs(20);

/// Isolates a follower for many election timeouts, heals, and returns
/// (the leader before, the leader after, the term before, the follower's
/// highest term while isolated, the term after).
async fn isolate_a_follower(config: RaftConfig, seed: u64) -> (u64, u64, u64, u64, u64) {
    let c = Cluster::new(3, seed, config.clone()).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    c.wait_converged(T).await;
    let term = c.node(leader).metrics().current_term;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.router.isolate(follower);
    // Five leases plus timeouts: without pre-vote, several elections.
    let span = (config.election_timeout_max * 2) * 5;
    let mut isolated_term = term;
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        isolated_term = isolated_term.max(c.node(follower).metrics().current_term);
        tokio::time::sleep(config.heartbeat_interval).await;
    }
    c.router.heal();
    // Long enough for the leader to replicate to it again (and, without
    // pre-vote, to meet its higher term and step down).
    tokio::time::sleep(config.election_timeout_max * 4).await;
    let after = c.wait_leader(T).await;
    c.wait_converged(T).await;
    let term_after = c.node(after).metrics().current_term;
    assert!(
        c.leaders.violations().is_empty(),
        "{:?}",
        c.leaders.violations()
    );
    c.shutdown_all().await;
    (leader, after, term, isolated_term, term_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_neither_raises_the_term_nor_unseats_the_leader() {
    init_tracing();
    let config = test_config();
    assert!(config.pre_vote);
    let (leader, after, term, isolated, term_after) = isolate_a_follower(config, 7).await;
    assert_eq!(isolated, term, "the isolated follower raised its term");
    assert_eq!(after, leader, "the leader changed");
    assert_eq!(term_after, term, "the term changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pre_vote_the_same_isolation_raises_the_term() {
    // The control: the test above can fail. openraft alone lets the
    // isolated follower campaign, and its higher term ends the leader's.
    init_tracing();
    let config = RaftConfig {
        pre_vote: false,
        ..test_config()
    };
    let (_, _, term, isolated, term_after) = isolate_a_follower(config, 7).await;
    assert!(isolated > term, "no election while isolated");
    assert!(term_after > term, "the term stayed at {term}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_is_replaced_and_a_restarted_follower_changes_nothing() {
    init_tracing();
    let mut c = Cluster::new(5, 11, test_config()).await;
    let first = c.wait_leader(T).await;
    must_propose(c.node(first), vec![init()]).await;
    c.wait_converged(T).await;
    // A follower restarts: it has no leader contact until the leader's
    // next heartbeat, and must not campaign meanwhile.
    let follower = c.ids().into_iter().find(|id| *id != first).unwrap();
    let term = c.node(first).metrics().current_term;
    c.restart(follower).await;
    tokio::time::sleep(test_config().election_timeout_max * 4).await;
    assert_eq!(c.wait_leader(T).await, first);
    assert_eq!(c.node(first).metrics().current_term, term);
    // The leader stops: the others agree through pre-vote and elect one.
    c.stop(first).await;
    let rest = c.running();
    let second = c.wait_leader_among(&rest, T).await;
    assert_ne!(second, first);
    must_propose(
        c.node(second),
        vec![fixtures::ops::put("a", "1", None, second)],
    )
    .await;
    c.start(first).await;
    c.wait_converged(T).await;
    c.check_apply_order().unwrap();
    assert!(
        c.leaders.violations().is_empty(),
        "{:?}",
        c.leaders.violations()
    );
    c.shutdown_all().await;
}
