//! Write-to-visible latency through the engine, without a network: a file
//! written on node A is seen by A's watcher, scanned, proposed to an
//! in-memory log, and materialized on node B. Prints p50/p90 (ignored: a
//! figure, not a check; timings are never asserted).
//!
//! `cargo test -p filesyncd --release --test engine_latency -- --ignored --nocapture`

use std::sync::Arc;
use std::time::{Duration, Instant};

use filesyncd::engine::fs_real::RootFs;
use filesyncd::engine::plan::{PlanConfig, Scope};
use filesyncd::engine::ports::{MemCommitted, MemFetcher};
use filesyncd::engine::sync::Engine;
use filesyncd::engine::watch::{watch, Dirty, WatchConfig};
use filesyncd_chunkstore::chunker::ChunkerParams;
use filesyncd_chunkstore::store::{ChunkStore, MemChunkStore};

fn engine(
    id: u64,
    dir: &std::path::Path,
    c: &MemCommitted,
    net: &MemFetcher,
) -> Engine<MemCommitted, MemFetcher> {
    std::fs::write(dir.join(".filesyncd-marker"), b"c1").expect("marker");
    let store: Arc<dyn ChunkStore> = Arc::new(MemChunkStore::new(dir));
    let e = Engine::new(
        Arc::new(RootFs::open(dir).expect("root")),
        store.clone(),
        ChunkerParams::default().validate().expect("params"),
        c.clone(),
        net.clone(),
        PlanConfig::new("c1", id),
    );
    net.add(id, store, e.nodes.clone());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints a latency figure"]
async fn write_to_visible_latency() {
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let root_a = da.path().canonicalize().expect("canonical");
    let c = MemCommitted::new();
    let net = MemFetcher::default();
    let mut a = engine(1, &root_a, &c, &net);
    let mut b = engine(2, db.path(), &c, &net);
    a.step(Scope::Full, 0).await.expect("a");
    b.step(Scope::Full, 0).await.expect("b");
    let (_w, mut rx) = watch(&root_a, &WatchConfig::default()).expect("watch");
    let payload = vec![7u8; 100_000];
    let mut samples = Vec::new();
    for i in 0..30 {
        let name = format!("f{i}.bin");
        let t0 = Instant::now();
        std::fs::write(root_a.join(&name), &payload).expect("write");
        loop {
            let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("event")
                .expect("open");
            let scope = match d {
                Dirty::Paths(p) => Scope::Paths(p),
                Dirty::Rescan => Scope::Full,
            };
            a.step(scope, 0).await.expect("a");
            b.step(Scope::Paths(Vec::new()), 0).await.expect("b");
            if db.path().join(&name).exists() {
                break;
            }
        }
        samples.push(t0.elapsed());
    }
    samples.sort();
    println!(
        "write-to-visible (watcher debounce {:?}, 100 kB, no network): p50 {:?}, p90 {:?}, n {}",
        WatchConfig::default().debounce,
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples.len()
    );
}
