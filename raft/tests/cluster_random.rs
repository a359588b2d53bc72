//! Seeded random schedules of writes, partitions, heals, message loss and
//! restarts on 3- or 5-node clusters, then heal everything and check:
//! - no acknowledged write is lost (its log id is the one every node applied
//!   at that index, and each op's recorded version exists on every node);
//! - every node applied the same entries in the same order;
//! - every node ends with the same cluster root;
//! - no term ever had two leaders (every metrics change sampled).
//!
//! `FILESYNCD_SEED=<u64>` replays a run (the seed is printed); the schedule
//! is a pure function of the seed, the timing of Raft itself is not.
//! `FILESYNCD_RANDOM_ITERS=<n>` runs n schedules (default 2).

mod fixtures;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use filesyncd_raft::command::{Op, Outcome, Response, Version};
use filesyncd_raft::config::SnapshotPolicy;
use filesyncd_raft::node::{NodeError, Proposed};
use filesyncd_raft::NodeId;
use fixtures::ops::{del, init, put};
use fixtures::{init_tracing, must_propose, test_config, Applied, Cluster};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const PATHS: [&str; 10] = [
    "a.txt", "b.txt", "c.txt", "d/e.txt", "d/f.txt", "g", "h", "i/j/k", "l", "m",
];

#[derive(Default, Debug)]
struct Tally {
    acked: usize,
    duplicates: usize,
    timeouts: usize,
    shut_down: usize,
    other_errors: usize,
    partitions: usize,
    restarts: usize,
}

type Acked = Arc<Mutex<Vec<(Vec<Op>, Proposed)>>>;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_keep_raft_invariants() {
    init_tracing();
    let seed = env_u64("FILESYNCD_SEED").unwrap_or_else(rand::random);
    let iters = env_u64("FILESYNCD_RANDOM_ITERS").unwrap_or(2);
    eprintln!("cluster_random: seed={seed} iters={iters} (replay: FILESYNCD_SEED={seed})");
    for i in 0..iters {
        let s = seed.wrapping_add(i);
        let tally = run_schedule(s).await;
        eprintln!("cluster_random: schedule seed={s}: {tally:?}");
    }
}

/// A write of 1–3 ops on random paths, based on what `node` currently sees.
fn random_ops(rng: &mut StdRng, c: &Cluster, node: NodeId, step: usize) -> Vec<Op> {
    let reader = c.node(node).reader();
    (0..rng.gen_range(1..=3))
        .map(|k| {
            let path = *PATHS.choose(rng).unwrap();
            let current = reader.get(path).ok().flatten().map(|r| r.version);
            // Sometimes write from a stale or made-up base to force conflicts.
            let base = if rng.gen_bool(0.2) {
                Some(Version::new(rng.gen_range(1..50), 0))
            } else {
                current
            };
            match (current, rng.gen_bool(0.25)) {
                (Some(v), true) => del(path, v),
                _ => put(path, &format!("{node}-{step}-{k}"), base, node),
            }
        })
        .collect()
}

async fn run_schedule(seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = if rng.gen_bool(0.5) { 3 } else { 5 };
    let mut config = test_config();
    config.snapshot_policy = SnapshotPolicy::LogsSinceLast(rng.gen_range(10..30));
    config.max_in_snapshot_log_to_keep = rng.gen_range(0..5);
    config.propose_timeout = Duration::from_secs(4);
    let mut c = Cluster::new(n, seed, config).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    must_propose(c.node(leader), vec![init()]).await;
    c.router.set_drop_probability(rng.gen_range(0.0..0.05));
    c.router
        .set_delay(Duration::ZERO, Duration::from_millis(rng.gen_range(0..4)));

    let acked: Acked = Arc::default();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut writes = tokio::task::JoinSet::new();
    let steps = 40;
    for step in 0..steps {
        let running = c.running();
        match rng.gen_range(0..100) {
            0..=49 => {
                for _ in 0..rng.gen_range(1..=6) {
                    let id = *running.choose(&mut rng).unwrap();
                    let ops = random_ops(&mut rng, &c, id, step);
                    let node = c.node(id).clone();
                    let (acked, tally) = (acked.clone(), tally.clone());
                    writes.spawn(async move {
                        let res = node.propose(ops.clone()).await;
                        let mut t = tally.lock().unwrap();
                        match res {
                            Ok(p) => {
                                t.acked += 1;
                                if matches!(p.response, Response::Duplicate(_)) {
                                    t.duplicates += 1;
                                }
                                acked.lock().unwrap().push((ops, p));
                            }
                            Err(NodeError::Timeout { .. }) => t.timeouts += 1,
                            Err(NodeError::ShuttingDown) => t.shut_down += 1,
                            Err(_) => t.other_errors += 1,
                        }
                    });
                }
            }
            50..=62 => {
                let mut ids = c.ids();
                ids.shuffle(&mut rng);
                let k = rng.gen_range(1..=n as usize / 2);
                c.router.partition(&ids[..k], &ids[k..]);
                tally.lock().unwrap().partitions += 1;
            }
            63..=67 => {
                let ids = c.ids();
                let a = *ids.choose(&mut rng).unwrap();
                let b = *ids.choose(&mut rng).unwrap();
                if a != b {
                    c.router.block(a, b);
                }
            }
            68..=72 => {
                // Mostly the leader: that is what forces elections.
                let target = match running.iter().find(|id| c.node(**id).is_leader()) {
                    Some(l) if rng.gen_bool(0.7) => *l,
                    _ => *c.ids().choose(&mut rng).unwrap(),
                };
                c.router.isolate(target);
            }
            73..=84 => c.router.heal(),
            _ => {
                let stopped: Vec<_> = c
                    .ids()
                    .into_iter()
                    .filter(|i| !running.contains(i))
                    .collect();
                if !stopped.is_empty() && rng.gen_bool(0.5) {
                    c.start(*stopped.choose(&mut rng).unwrap()).await;
                } else if running.len() > 1 {
                    let victim = match running.iter().find(|id| c.node(**id).is_leader()) {
                        Some(l) if rng.gen_bool(0.5) => *l,
                        _ => *running.choose(&mut rng).unwrap(),
                    };
                    c.stop(victim).await;
                    tally.lock().unwrap().restarts += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..400))).await;
    }

    // Settle: heal, lossless network, everyone back, all writes finished.
    c.router.heal();
    c.router.set_drop_probability(0.0);
    for id in c.ids() {
        if !c.running().contains(&id) {
            c.start(id).await;
        }
    }
    while let Some(r) = writes.join_next().await {
        r.unwrap();
    }
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    // A last write proves the healed cluster commits, and pushes every node to
    // the leader's last index.
    must_propose(c.node(leader), vec![put("final", "f", None, leader)]).await;
    let (root, applied) = c.wait_converged(Duration::from_secs(30)).await;

    check(&c, &acked.lock().unwrap(), seed);
    for id in c.ids() {
        assert_eq!(
            c.node(id).reader().cluster_root().unwrap(),
            (root, applied),
            "seed {seed}: node {id} differs"
        );
    }
    let violations = c.leaders.violations();
    assert!(
        violations.is_empty(),
        "seed {seed}: two leaders in one term: {violations:?}"
    );
    let snapshots = c
        .nodes
        .values()
        .map(|t| {
            t.applied
                .lock()
                .unwrap()
                .iter()
                .filter(|a| matches!(a, Applied::Snapshot(Some(_))))
                .count()
        })
        .sum::<usize>();
    eprintln!(
        "cluster_random: seed={seed} nodes={n} terms={} snapshots_installed={snapshots} applied={:?} router={:?}",
        c.leaders.terms(),
        applied,
        c.router.stats()
    );
    let t = std::mem::take(&mut *tally.lock().unwrap());
    c.shutdown_all().await;
    t
}

fn check(c: &Cluster, acked: &[(Vec<Op>, Proposed)], seed: u64) {
    let applied_at: BTreeMap<u64, _> = match c.apply_order() {
        Ok(m) => m,
        Err(e) => panic!("seed {seed}: apply order differs: {e}"),
    };
    for (ops, p) in acked {
        if let Some(l) = applied_at.get(&p.log_id.index) {
            assert_eq!(
                *l, p.log_id,
                "seed {seed}: acked {:?} lost: index taken by {l}",
                p.id
            );
        }
        for (op, outcome) in ops.iter().zip(p.response.outcomes()) {
            let (path, version) = match (op, outcome) {
                (Op::Put { path, .. } | Op::Delete { path, .. }, Outcome::Applied { version }) => {
                    (path.clone(), *version)
                }
                (
                    _,
                    Outcome::Conflict {
                        conflict_path,
                        version,
                    },
                ) => (conflict_path.clone(), *version),
                _ => continue,
            };
            for id in c.ids() {
                let h = c.node(id).reader().history(&path).unwrap();
                assert!(
                    h.iter().any(|r| r.version == version),
                    "seed {seed}: node {id} lost acked {path}@{version} of {:?}",
                    p.id
                );
            }
        }
    }
}
