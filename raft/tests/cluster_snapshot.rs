//! A node that falls behind the leader's purged log catches up by snapshot
//! (streamed in chunks over the transport) and ends identical.

mod fixtures;

use std::time::Duration;

use filesyncd_raft::config::SnapshotPolicy;
use fixtures::ops::{init, put};
use fixtures::{init_tracing, must_propose, test_config, Applied, Cluster};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_by_snapshot() {
    init_tracing();
    let mut config = test_config();
    config.snapshot_policy = SnapshotPolicy::LogsSinceLast(20);
    config.max_in_snapshot_log_to_keep = 0;
    // Small chunks: the snapshot crosses the transport in several RPCs.
    config.snapshot_chunk_bytes = 4 * 1024;
    let c = Cluster::new(3, 11, config).await;
    let leader = c.wait_leader(T).await;
    must_propose(c.node(leader), vec![init()]).await;
    c.wait_converged(T).await;

    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.router.isolate(lagging);
    let writer = c.ids().into_iter().find(|id| *id != lagging).unwrap();
    for i in 0..120 {
        let ops = (0..4)
            .map(|j| {
                put(
                    &format!("dir{i}/file{j}.bin"),
                    &format!("{i}-{j}"),
                    None,
                    writer,
                )
            })
            .collect();
        must_propose(c.node(writer), ops).await;
    }
    let lagging_applied = c
        .node(lagging)
        .metrics()
        .last_applied
        .map_or(0, |l| l.index);

    // Wait until the leader purged past what the lagging node has.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let leader = c
            .wait_leader_among(
                &c.ids()
                    .into_iter()
                    .filter(|i| *i != lagging)
                    .collect::<Vec<_>>(),
                T,
            )
            .await;
        let purged = c.node(leader).metrics().purged.map_or(0, |l| l.index);
        if purged > lagging_applied + 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader never purged its log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    c.router.heal();
    let (root, _) = c.wait_converged(T).await;
    let log = c.nodes[&lagging].applied.lock().unwrap().clone();
    assert!(
        log.iter().any(|a| matches!(a, Applied::Snapshot(Some(_)))),
        "node {lagging} caught up without a snapshot"
    );
    assert_eq!(c.node(lagging).reader().cluster_root().unwrap().0, root);
    assert_eq!(
        c.node(lagging).reader().live_count().unwrap(),
        c.node(writer).reader().live_count().unwrap()
    );
    assert!(c
        .node(lagging)
        .reader()
        .get("dir119/file3.bin")
        .unwrap()
        .is_some());
    c.check_apply_order().unwrap();
    assert!(c.router.stats().delivered > 0);
    c.shutdown_all().await;
}
