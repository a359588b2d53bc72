//! Quick figures (ignored by default; timings are printed, never asserted):
//! `cargo test --release -p filesyncd-raft --test sm_bench -- --ignored --nocapture`
//! `SM_BENCH_BATCHES` (default 10) batches of `SM_BENCH_OPS` (default 10 000) ops.

use std::time::Instant;

use filesyncd_merkle::Hash;
use filesyncd_raft::apply::MemIndex;
use filesyncd_raft::command::{ChunkerParams, Op, PutKind, Request, RequestId, Retention, Version};
use filesyncd_raft::state_machine::StateMachine;
use filesyncd_raft::TypeConfig;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use redb::TableDefinition;
use tokio::io::AsyncWriteExt;

const T0: u64 = 1_700_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmHWM of this process (Linux), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn put(i: usize, c: u8, base: Option<Version>) -> Op {
    Op::Put {
        path: format!("dir{:03}/sub{:02}/file-{i:08}.dat", i % 997, i % 31),
        kind: PutKind::File,
        root: Hash(*blake3::hash(&[c, i as u8, (i >> 8) as u8, (i >> 16) as u8]).as_bytes()),
        size: i as u64,
        mode: 0o644,
        mtime_ns: i as i64,
        origin: 1,
        base,
        holders: vec![1, 2],
    }
}

fn entry(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::new(
            RequestId {
                origin: 1,
                seq: index,
            },
            T0 + index,
            ops,
        )),
    }
}

fn init() -> Op {
    Op::InitCluster {
        cluster_id: "bench".into(),
        chunker: ChunkerParams::default(),
        retention: Retention {
            keep_versions: Some(3),
            keep_days: Some(30),
        },
    }
}

#[test]
#[ignore]
fn apply_throughput() {
    let batches = env("SM_BENCH_BATCHES", 10);
    let per = env("SM_BENCH_OPS", 10_000);
    let total = batches * per;
    let create = |b: usize| {
        entry(
            b as u64 + 2,
            (b * per..(b + 1) * per).map(|i| put(i, 0, None)).collect(),
        )
    };
    let update = |b: usize| {
        let ops = (b * per..(b + 1) * per)
            .map(|i| {
                put(
                    i,
                    1,
                    Some(Version::new((i / per) as u64 + 2, (i % per) as u32)),
                )
            })
            .collect();
        entry((batches + b) as u64 + 2, ops)
    };

    // Pure apply on the in-memory model (skipped with SM_BENCH_NO_MODEL=1, so that the
    // peak RSS below is the state machine's alone).
    if env("SM_BENCH_NO_MODEL", 0) == 0 {
        let mut mem = MemIndex::new();
        let mut index = 1;
        mem.apply(
            index,
            match &Request::new(RequestId { origin: 1, seq: 1 }, T0, vec![init()]) {
                Request::V1(b) => b,
            },
        );
        let mut spent = 0.0;
        for e in (0..batches).map(create).chain((0..batches).map(update)) {
            index += 1;
            if let EntryPayload::Normal(Request::V1(b)) = &e.payload {
                let t = Instant::now();
                mem.apply(index, b);
                spent += t.elapsed().as_secs_f64();
            }
        }
        println!(
            "pure apply (MemIndex): {} ops in {spent:.2}s = {:.0} ops/s",
            2 * total,
            (2 * total) as f64 / spent
        );
    }

    // redb state machine: one apply call (one fsynced txn) per 10k-op entry.
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(dir.path()).expect("open");
    sm.apply_blocking(vec![entry(1, vec![init()])])
        .expect("init");
    let (mut create_s, mut update_s) = (0.0, 0.0);
    for e in (0..batches).map(create) {
        let t = Instant::now();
        sm.apply_blocking(vec![e]).expect("apply");
        create_s += t.elapsed().as_secs_f64();
    }
    for e in (0..batches).map(update) {
        let t = Instant::now();
        sm.apply_blocking(vec![e]).expect("apply");
        update_s += t.elapsed().as_secs_f64();
    }
    println!(
        "redb SM, {batches} x {per}-op entries: create {:.0} ops/s, CAS update {:.0} ops/s",
        total as f64 / create_s,
        total as f64 / update_s
    );

    // Baseline: the bare redb cost of writing the same number of records (live + history,
    // postcard values of the same size) in the same number of fsynced transactions.
    const L: TableDefinition<&str, &[u8]> = TableDefinition::new("l");
    const H: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("h");
    let bdir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::create(bdir.path().join("b.redb")).expect("db");
    let value = vec![7u8; 90];
    let t = Instant::now();
    for b in 0..batches {
        let txn = db.begin_write().expect("txn");
        {
            let mut l = txn.open_table(L).expect("t");
            let mut h = txn.open_table(H).expect("t");
            for i in b * per..(b + 1) * per {
                let p = format!("dir{:03}/sub{:02}/file-{i:08}.dat", i % 997, i % 31);
                l.insert(p.as_str(), value.as_slice()).expect("insert");
                h.insert((p.as_str(), b as u64, i as u32), value.as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let base_s = t.elapsed().as_secs_f64();
    println!(
        "baseline bare redb inserts (2 records/op): {:.0} ops/s; SM create / baseline = {:.2}",
        total as f64 / base_s,
        base_s / create_s
    );

    let (nodes, bytes) = sm.tree_memory();
    println!(
        "cluster tree in memory: {nodes} nodes, {:.1} MiB encoded",
        bytes as f64 / (1 << 20) as f64
    );
    println!("peak RSS so far: {} MiB", peak_rss_mib());
    // Reopen: rebuild the cluster tree from the live table.
    let root = sm.cluster_root();
    drop(sm);
    let t = Instant::now();
    let mut sm = StateMachine::open(dir.path()).expect("reopen");
    println!(
        "reopen with {total} live paths (tree rebuild + check): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(sm.cluster_root(), root);

    // Snapshot build and install.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let t = Instant::now();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        let build_s = t.elapsed().as_secs_f64();
        let mut f = snap.snapshot;
        let d2 = tempfile::tempdir().expect("tempdir");
        let mut other = StateMachine::open(d2.path()).expect("open");
        let mut dst = other.begin_receiving_snapshot().await.expect("recv");
        let size = tokio::io::copy(&mut f, &mut dst).await.expect("copy");
        dst.flush().await.expect("flush");
        let t = Instant::now();
        other.install_snapshot(&snap.meta, dst).await.expect("install");
        let install_s = t.elapsed().as_secs_f64();
        assert_eq!(other.cluster_root(), sm.cluster_root());
        println!(
            "snapshot of {total} paths ({} history records): {:.1} MiB, build {build_s:.2}s, install {install_s:.2}s",
            2 * total,
            size as f64 / (1 << 20) as f64
        );
        println!("peak RSS at the end: {} MiB", peak_rss_mib());
    });
}
