//! Commit throughput and latency of `RaftNode::propose` on in-process
//! clusters (MemTransport, no injected delay, real redb stores with fsync in a
//! temp dir).
//!
//! Prints, for a 3-node cluster and, as the same-run baseline, a 1-node
//! cluster (no replication), each measured on a fresh cluster (the index
//! grows with every run, so sharing one would favour the first line):
//! - committed file ops/s with 1,000-op batches, `CONCURRENCY` proposals in
//!   flight (`FILESYNCD_BENCH_CONCURRENCY`, default 16), proposed on the leader
//!   and (3 nodes) forwarded from a follower;
//! - p50/p99 commit latency of single-op proposals, one at a time.
//!
//! Run: `cargo bench -p filesyncd-raft --bench commit`
//! (`FILESYNCD_BENCH_BATCHES` sets the batch count, default 64).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use filesyncd_merkle::Hash;
use filesyncd_raft::command::{ChunkerParams, Op, PutKind, Response, Retention};
use filesyncd_raft::config::RaftConfig;
use filesyncd_raft::node::RaftNode;
use filesyncd_raft::transport::mem::{MemRouter, MemTransport};
use filesyncd_raft::{NodeId, NodeInfo};

const BATCH: usize = 1000;
const LATENCY_SAMPLES: usize = 300;

type Node = RaftNode<MemTransport>;

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        peer_id: format!("peer-{id}"),
        addr: format!("mem://{id}"),
    }
}

fn put(path: String, origin: NodeId) -> Op {
    Op::Put {
        root: Hash(*blake3::hash(path.as_bytes()).as_bytes()),
        path,
        kind: PutKind::File,
        size: 4096,
        mode: 0o644,
        mtime_ns: 1,
        origin,
        base: None,
        holders: vec![origin],
    }
}

struct Bench {
    nodes: Vec<Node>,
    _tmp: tempfile::TempDir,
}

async fn cluster(n: u64) -> Bench {
    let tmp = tempfile::tempdir().expect("temp dir");
    let router = MemRouter::new(1);
    let mut config = RaftConfig::default();
    // Keep snapshots out of the measurement.
    config.snapshot_policy = filesyncd_raft::config::SnapshotPolicy::Never;
    let mut nodes = Vec::new();
    for id in 1..=n {
        let node = RaftNode::open(
            tmp.path().join(format!("n{id}")),
            id,
            config.clone(),
            Arc::new(router.transport(id)),
        )
        .await
        .expect("open node");
        router.register(id, Arc::new(node.clone()));
        nodes.push(node);
    }
    let members: BTreeMap<NodeId, NodeInfo> = (1..=n).map(|id| (id, info(id))).collect();
    nodes[0].initialize(members).await.expect("initialize");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().any(|n| n.is_leader()) {
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let init = Op::InitCluster {
        cluster_id: "bench".into(),
        chunker: ChunkerParams::default(),
        retention: Retention::default(),
    };
    nodes[0].propose(vec![init]).await.expect("init");
    Bench { nodes, _tmp: tmp }
}

/// Proposals in flight (`FILESYNCD_BENCH_CONCURRENCY`, default 16).
fn concurrency() -> usize {
    env_usize("FILESYNCD_BENCH_CONCURRENCY")
        .unwrap_or(16)
        .max(1)
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Committed ops/s proposing `batches` batches of `BATCH` ops from `node`.
async fn throughput(node: &Node, batches: usize, tag: &str) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let concurrency = concurrency();
    let per_task = batches.div_ceil(concurrency);
    for t in 0..concurrency {
        let node = node.clone();
        let tag = tag.to_string();
        tasks.spawn(async move {
            let mut ops_done = 0usize;
            for b in 0..per_task {
                let ops: Vec<Op> = (0..BATCH)
                    .map(|i| put(format!("{tag}/t{t}/b{b}/f{i:04}"), node.id()))
                    .collect();
                let p = node.propose(ops).await.expect("propose");
                match &p.response {
                    Response::Applied(o) => ops_done += o.len(),
                    other => panic!("unexpected response {other:?}"),
                }
            }
            ops_done
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.expect("task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// (p50, p99) of single-op commit latency from `node`.
async fn latency(node: &Node, tag: &str) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let op = put(format!("{tag}/single-{i}"), node.id());
        let t0 = Instant::now();
        node.propose(vec![op]).await.expect("propose");
        samples.push(t0.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// One measurement on a fresh cluster of `n` nodes, proposing on the leader
/// or on a follower: (ops/s, p50, p99).
async fn measure(n: u64, on_follower: bool, batches: usize) -> (f64, Duration, Duration) {
    let c = cluster(n).await;
    let node = c
        .nodes
        .iter()
        .find(|x| x.is_leader() != on_follower)
        .expect("a node in that role");
    let tag = if on_follower { "follower" } else { "leader" };
    let (p50, p99) = latency(node, tag).await;
    let tput = throughput(node, batches, tag).await;
    for x in &c.nodes {
        x.shutdown().await.expect("shutdown");
    }
    (tput, p50, p99)
}

async fn run() {
    let batches = env_usize("FILESYNCD_BENCH_BATCHES").unwrap_or(64);
    let c = concurrency();
    let ops = batches.div_ceil(c) * c * BATCH;
    println!("commit bench: {ops} file ops per run, {BATCH}-op batches, {c} in flight, fresh cluster per line");
    let rows = [
        ("1 node  (baseline)", 1, false),
        ("3 nodes, on leader", 3, false),
        ("3 nodes, forwarded", 3, true),
    ];
    let mut tputs = Vec::new();
    for (label, n, on_follower) in rows {
        let (tput, p50, p99) = measure(n, on_follower, batches).await;
        println!("{label:<20}: {tput:>10.0} ops/s   single-op p50 {p50:>9.2?} p99 {p99:>9.2?}");
        tputs.push(tput);
    }
    println!(
        "ratio 3-node/1-node throughput: {:.2} (leader), {:.2} (forwarded)",
        tputs[1] / tputs[0],
        tputs[2] / tputs[0]
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}
