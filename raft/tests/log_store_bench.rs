//! Append throughput of `RedbLogStore` (ignored by default; prints figures, asserts none).
//!
//! `cargo test -p filesyncd-raft --test log_store_bench -- --ignored --nocapture`
//!
//! Baseline and candidate run in the same process on the same disk:
//! - `wait each`: one entry per append, waiting for its fsync before the next (what a store
//!   that commits durably inside `append` costs openraft, which appends one entry per call);
//! - `pipelined`: one entry per append without waiting (how openraft drives storage-v2); the
//!   writer thread group-commits whatever queued up during the previous fsync;
//! - `3 stores`: three pipelined stores at once (three in-process nodes share one disk);
//! - `reopen`: the open-time verification scan (every record's checksum).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use filesyncd_raft::log_store::{Entry, LogId, RedbLogStore};
use filesyncd_raft::NodeInfo;
use openraft::entry::RaftEntry;
use openraft::{CommittedLeaderId, Membership};

fn entry(index: u64, bytes: usize) -> Entry {
    let info = NodeInfo {
        peer_id: "peer".into(),
        addr: "a".repeat(bytes),
    };
    Entry::new_membership(
        LogId::new(CommittedLeaderId::new(1, 1), index),
        Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, info)])),
    )
}

async fn wait_each(store: &mut RedbLogStore, from: u64, n: u64, bytes: usize) -> Duration {
    let t = Instant::now();
    for i in from..from + n {
        let f = store
            .append_entries([entry(i, bytes)])
            .await
            .expect("append");
        f.wait().await.expect("flush");
    }
    t.elapsed()
}

async fn pipelined(store: &mut RedbLogStore, from: u64, n: u64, bytes: usize) -> Duration {
    let t = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in from..from + n {
        pending.push(
            store
                .append_entries([entry(i, bytes)])
                .await
                .expect("append"),
        );
    }
    for f in pending {
        f.wait().await.expect("flush");
    }
    t.elapsed()
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn append_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bytes in [1024usize, 64 * 1024] {
        let mut store =
            RedbLogStore::open(dir.path().join(format!("one-{bytes}.redb")), 1).expect("open");
        let n_wait = 200;
        let d_wait = wait_each(&mut store, 0, n_wait, bytes).await;
        let n_pipe = 5_000;
        let d_pipe = pipelined(&mut store, n_wait, n_pipe, bytes).await;
        let (a, b) = (rate(n_wait, d_wait), rate(n_pipe, d_pipe));
        println!(
            "entry {bytes:>6} B: wait each {a:>8.0} entries/s | pipelined {b:>8.0} entries/s | ratio {:.1}x",
            b / a
        );
        drop(store);
        let path = dir.path().join(format!("one-{bytes}.redb"));
        let size = std::fs::metadata(&path).expect("stat").len();
        let t = Instant::now();
        let store = RedbLogStore::open(&path, 1).expect("reopen");
        let d_open = t.elapsed();
        println!(
            "entry {bytes:>6} B: reopen + verify {} entries ({} MiB file) in {:.0} ms",
            store.open_report().entries,
            size >> 20,
            d_open.as_secs_f64() * 1e3
        );
        drop(store);

        let mut handles = Vec::new();
        let t = Instant::now();
        for node in 0..3u64 {
            let path = dir.path().join(format!("three-{bytes}-{node}.redb"));
            handles.push(tokio::spawn(async move {
                let mut s = RedbLogStore::open(path, node + 1).expect("open");
                pipelined(&mut s, 0, n_pipe, bytes).await
            }));
        }
        for h in handles {
            h.await.expect("join");
        }
        let d3 = t.elapsed();
        println!(
            "entry {bytes:>6} B: 3 stores pipelined {:>8.0} entries/s per store",
            rate(n_pipe, d3)
        );
    }
}
