//! Merkle tree figures, each against a baseline measured in the same run.
//!
//! `cargo bench -p filesyncd-merkle --bench merkle`
//!
//! * build of a 16k-chunk file tree vs plain blake3 over its chunk list;
//! * diff after a 1-chunk insert vs a diff from nothing (nodes, round trips, time);
//! * nodes and bytes changed by a 1-chunk insert vs the whole tree;
//! * path tree with 100k paths: one update, and a batch of 10k, vs a full rebuild.

use filesyncd_merkle::{
    build, diff, diff_trusting, BuiltTree, ChunkEntry, EntryKind, Hash, MemNodeStore, NodeSource,
    PathTree, PathValue,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

const LEAVES: usize = 16_384;
const PATHS: u32 = 100_000;

fn entries(rng: &mut StdRng, n: usize) -> Vec<ChunkEntry> {
    (0..n)
        .map(|_| ChunkEntry {
            hash: Hash(rng.gen()),
            len: rng.gen_range(16_384..131_072),
        })
        .collect()
}

/// Median time of `runs` calls.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    v.sort();
    v[runs / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn store_of(b: &BuiltTree) -> MemNodeStore {
    let mut s = MemNodeStore::new();
    b.store_into(&mut s);
    s
}

fn fetcher(s: &MemNodeStore) -> impl FnMut(&[Hash]) -> Result<Vec<Vec<u8>>, Infallible> + '_ {
    move |hs: &[Hash]| {
        Ok(hs
            .iter()
            .map(|h| s.get_node(h).expect("remote holds its tree"))
            .collect())
    }
}

fn file_tree(rng: &mut StdRng) {
    let a = entries(rng, LEAVES);
    let built = build(&a);
    let nodes = built.nodes.len();
    let bytes: usize = built.nodes.iter().map(|n| n.1.len()).sum();
    println!("file tree, {LEAVES} chunks: {nodes} nodes, {bytes} bytes of nodes");

    let flat: Vec<u8> = a
        .iter()
        .flat_map(|c| c.hash.0.into_iter().chain(c.len.to_le_bytes()))
        .collect();
    let t_build = median(21, || build(&a));
    let t_hash = median(21, || blake3::hash(&flat));
    println!(
        "  build: {:.0} us; blake3 of the chunk list alone: {:.0} us; ratio {:.2}",
        us(t_build),
        us(t_hash),
        t_build.as_secs_f64() / t_hash.as_secs_f64()
    );

    // Nodes and bytes changed by a 1-chunk insert, over random positions.
    let old: HashSet<Hash> = built.nodes.iter().map(|n| n.0).collect();
    let trials = 200;
    let (mut n_sum, mut b_sum, mut n_max) = (0usize, 0usize, 0usize);
    for _ in 0..trials {
        let mut b = a.clone();
        b.insert(rng.gen_range(0..=b.len()), entries(rng, 1)[0]);
        let nb = build(&b);
        let fresh: Vec<_> = nb.nodes.iter().filter(|n| !old.contains(&n.0)).collect();
        n_sum += fresh.len();
        n_max = n_max.max(fresh.len());
        b_sum += fresh.iter().map(|n| n.1.len()).sum::<usize>();
    }
    println!(
        "  1-chunk insert ({trials} positions): {:.2} new nodes avg (max {n_max}) of {nodes} = {:.3}%; {:.0} new bytes avg of {bytes} = {:.3}%",
        n_sum as f64 / trials as f64,
        100.0 * n_sum as f64 / trials as f64 / nodes as f64,
        b_sum as f64 / trials as f64,
        100.0 * b_sum as f64 / trials as f64 / bytes as f64,
    );

    // Diff after one insert in the middle vs a diff from nothing.
    let mut b = a.clone();
    b.insert(LEAVES / 2, entries(rng, 1)[0]);
    let tb = build(&b);
    let (ls, rs) = (store_of(&built), store_of(&tb));
    let has: HashSet<Hash> = a.iter().map(|c| c.hash).collect();
    let one = diff(&ls, |h| has.contains(h), tb.root, fetcher(&rs)).expect("diff");
    let full = diff(&MemNodeStore::new(), |_| false, tb.root, fetcher(&rs)).expect("diff");
    let t_one = median(21, || {
        diff(&ls, |h| has.contains(h), tb.root, fetcher(&rs)).expect("diff")
    });
    let t_full = median(21, || {
        diff(&MemNodeStore::new(), |_| false, tb.root, fetcher(&rs)).expect("diff")
    });
    println!(
        "  diff after 1-chunk insert: {} missing chunk(s), {} nodes fetched ({} bytes) in {} round trips, {} local nodes read, {:.0} us",
        one.missing.len(),
        one.nodes_fetched,
        one.fetched.iter().map(|n| n.1.len()).sum::<usize>(),
        one.round_trips,
        one.nodes_local,
        us(t_one)
    );
    let t_trust = median(21, || {
        diff_trusting(
            &ls,
            |h| has.contains(h),
            |h| ls.has_node(h),
            tb.root,
            fetcher(&rs),
        )
        .expect("diff")
    });
    println!(
        "  same diff trusting held subtrees as complete (diff_trusting): {:.0} us",
        us(t_trust)
    );
    println!(
        "  diff from nothing: {} nodes fetched in {} round trips, {:.0} us; fetched-node ratio {:.4}, time ratio {:.2}",
        full.nodes_fetched,
        full.round_trips,
        us(t_full),
        one.nodes_fetched as f64 / full.nodes_fetched as f64,
        t_one.as_secs_f64() / t_full.as_secs_f64()
    );
}

fn value(rng: &mut StdRng) -> PathValue {
    PathValue {
        kind: EntryKind::File,
        root: Hash(rng.gen()),
        size: rng.gen_range(0..1 << 30),
        mode: 0o644,
    }
}

fn path_tree(rng: &mut StdRng) {
    let map: BTreeMap<String, PathValue> = (0..PATHS)
        .map(|i| {
            (
                format!("home/user{}/project{}/src/file{i}.rs", i % 50, i % 7),
                value(rng),
            )
        })
        .collect();
    let mut store = MemNodeStore::new();
    let t0 = Instant::now();
    let mut root = PathTree::build(&mut store, map.clone()).expect("build");
    let t_build = t0.elapsed();
    let t_rebuild = median(5, || {
        PathTree::build(&mut MemNodeStore::new(), map.clone()).expect("build")
    });
    println!(
        "path tree, {PATHS} paths: {} nodes, {} bytes; build {:.1} ms (first {:.1} ms)",
        store.len(),
        store.bytes(),
        t_rebuild.as_secs_f64() * 1e3,
        t_build.as_secs_f64() * 1e3
    );

    let keys: Vec<&String> = map.keys().collect();
    let ops: u32 = std::env::var("FILESYNCD_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let t = Instant::now();
    for i in 0..ops {
        let k = keys[rng.gen_range(0..keys.len())];
        let v = if i % 10 == 9 { None } else { Some(value(rng)) };
        root = PathTree::update(&mut store, root, k, v).expect("update");
    }
    let per_op = t.elapsed() / ops;
    println!(
        "  single update: {:.1} us/op; full rebuild / update = {:.0}x",
        us(per_op),
        t_rebuild.as_secs_f64() / per_op.as_secs_f64()
    );

    let batch: BTreeMap<String, Option<PathValue>> = (0..10_000)
        .map(|_| {
            let k = keys[rng.gen_range(0..keys.len())].clone();
            (k, Some(value(rng)))
        })
        .collect();
    let t = Instant::now();
    let r2 = PathTree::update_many(&mut store, root, batch.clone()).expect("batch");
    let t_batch = t.elapsed();
    println!(
        "  batch of {} updates: {:.1} ms ({:.1} us/op); full rebuild / batch = {:.1}x",
        batch.len(),
        t_batch.as_secs_f64() * 1e3,
        us(t_batch) / batch.len() as f64,
        t_rebuild.as_secs_f64() / t_batch.as_secs_f64()
    );
    // A clustered batch: 10k new files in one new directory (an import).
    let import: BTreeMap<String, Option<PathValue>> = (0..10_000)
        .map(|i| (format!("home/user7/import/f{i:05}"), Some(value(rng))))
        .collect();
    let mut s2 = store.clone();
    let t = Instant::now();
    let r3 = PathTree::update_many(&mut s2, r2, import.clone()).expect("batch");
    let t_import = t.elapsed();
    println!(
        "  clustered batch of {} inserts: {:.1} ms ({:.1} us/op); full rebuild / batch = {:.1}x",
        import.len(),
        t_import.as_secs_f64() * 1e3,
        us(t_import) / import.len() as f64,
        t_rebuild.as_secs_f64() / t_import.as_secs_f64()
    );
    black_box(r3);
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    // FILESYNCD_BENCH_ONLY=file|path runs one part.
    let only = std::env::var("FILESYNCD_BENCH_ONLY").unwrap_or_default();
    let mut rng = StdRng::seed_from_u64(2026);
    if only.is_empty() || only == "file" {
        file_tree(&mut rng);
    }
    if only.is_empty() || only == "path" {
        path_tree(&mut rng);
    }
}
