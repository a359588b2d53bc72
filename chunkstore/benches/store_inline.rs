//! Small chunks inline in the index vs one blob file each, measured in the
//! same run (module doc of `store`, "Small chunks inline").
//!
//! 1. `put_many` of `FILESYNCD_BENCH_SMALL` (default 10,000) random 2 KiB
//!    chunks in batches of 256, and in batches of 1,024, then `get` of all
//!    of them (best of three passes), each into a fresh store: with `inline_max: None` (every chunk
//!    a blob file, the old path) and with the default
//!    [`INLINE_MAX`](filesyncd_chunkstore::store::INLINE_MAX). Prints both
//!    and the ratio (blob time / inline time: above 1, inline is faster).
//! 2. The threshold: the same (batches of 256) for `FILESYNCD_BENCH_SIZE_MIB`
//!    (default 40; 0 skips) MiB of 4, 16 and 64 KiB chunks, blob files vs
//!    inline (`inline_max: INLINE_LIMIT`), with the disk each store takes.
//! 3. Small files as they come: the same as 1 (batches of 256) with lengths
//!    uniform in 0..=4 KiB (a 2^k-byte value fills a 2^(k+1)-byte redb page,
//!    so 1 flatters blob files on disk).
//!
//! `FILESYNCD_BENCH_CACHE_MIB` sets the redb cache (default: the store's
//! default). `FILESYNCD_BENCH_DIR` picks where the stores are created (default: the
//! system temp dir; it must be a real disk for the fsync figures to mean
//! anything).

use filesyncd_chunkstore::store::{
    ChunkStore, RedbChunkStore, StoreOptions, INLINE_LIMIT, INLINE_MAX,
};
use filesyncd_chunkstore::Hash;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs;
use std::path::Path;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("FILESYNCD_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("FILESYNCD_BENCH_DIR is writable"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// Bytes the files under `dir` occupy on disk (`st_blocks * 512`).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut sum = 0;
    for e in fs::read_dir(dir).expect("readable") {
        let e = e.expect("entry");
        let m = e.metadata().expect("stat");
        sum += if m.is_dir() {
            disk_bytes(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    sum
}

/// One store's figures.
struct Run {
    put_s: f64,
    get_s: f64,
    /// Index file plus blob files, on disk.
    disk: u64,
    /// The same after `compact()` (the free pages of the index returned).
    compacted: u64,
}

/// `put_many` of `chunks` in batches of `batch`, then `get` of each, into a
/// fresh store with `inline_max`.
fn run(chunks: &[Vec<u8>], batch: usize, inline_max: Option<usize>) -> Run {
    let dir = bench_dir();
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("root");
    let store_dir = dir.path().join("store");
    let default = StoreOptions::default();
    let opts = StoreOptions {
        inline_max,
        cache_bytes: env_u64("FILESYNCD_BENCH_CACHE_MIB", 0)
            .checked_shl(20)
            .filter(|b| *b > 0)
            .map_or(default.cache_bytes, |b| b as usize),
    };
    let mut store = RedbChunkStore::open_with(&store_dir, &root, opts).expect("open");
    let items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    let t = Instant::now();
    for b in items.chunks(batch) {
        store.put_many(b).expect("put_many");
    }
    let put_s = t.elapsed().as_secs_f64();
    // The best of three passes (one pass takes tens of ms: noisy).
    let mut get_s = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut sum = 0;
        for (h, _) in &items {
            sum += store.get(h).expect("get").expect("stored").len();
        }
        get_s = get_s.min(t.elapsed().as_secs_f64());
        assert_eq!(sum, chunks.iter().map(Vec::len).sum::<usize>());
    }
    let stats = store.index_stats().expect("stats");
    let inline = items
        .iter()
        .filter(|(_, c)| inline_max.is_some_and(|m| c.len() <= m))
        .map(|(h, _)| *h)
        .collect::<std::collections::HashSet<Hash>>()
        .len();
    assert_eq!(stats.inline_values as usize, inline);
    let disk = disk_bytes(&store_dir);
    store.compact().expect("compact");
    Run {
        put_s,
        get_s,
        disk,
        compacted: disk_bytes(&store_dir),
    }
}

/// `n` random chunks of `len(rng)` bytes each.
fn random_chunks(n: usize, seed: u64, len: impl Fn(&mut StdRng) -> usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut c = vec![0u8; len(&mut rng)];
            rng.fill_bytes(&mut c);
            c
        })
        .collect()
}

fn compare(label: &str, chunks: &[Vec<u8>], batch: usize, inline_max: usize) {
    let n = chunks.len();
    let blob = run(chunks, batch, None);
    let inline = run(chunks, batch, Some(inline_max));
    let rate = |s: f64| n as f64 / s;
    let (lo, hi) = chunks.iter().fold((usize::MAX, 0), |(lo, hi), c| {
        (lo.min(c.len()), hi.max(c.len()))
    });
    let size_label = if lo == hi {
        format!("{}", lo >> 10)
    } else {
        format!("{:.1}-{:.1}", lo as f64 / 1024.0, hi as f64 / 1024.0)
    };
    let mib = chunks.iter().map(Vec::len).sum::<usize>() as f64 / 1048576.0;
    println!(
        "{label}: {n} x {} KiB ({mib:.1} MiB), put_many({batch}):\n  \
         put  blob files {:.3} s ({:.0} chunks/s, {:.1} MiB/s) | inline {:.3} s ({:.0} chunks/s, \
         {:.1} MiB/s) | ratio {:.2}\n  \
         get  blob files {:.3} s ({:.0} chunks/s) | inline {:.3} s ({:.0} chunks/s) | ratio {:.2}\n  \
         disk blob files {:.1} MiB | inline {:.1} MiB (index + blobs; after compact: {:.1} | {:.1})",
        size_label,
        blob.put_s,
        rate(blob.put_s),
        mib / blob.put_s,
        inline.put_s,
        rate(inline.put_s),
        mib / inline.put_s,
        blob.put_s / inline.put_s,
        blob.get_s,
        rate(blob.get_s),
        inline.get_s,
        rate(inline.get_s),
        blob.get_s / inline.get_s,
        blob.disk as f64 / 1048576.0,
        inline.disk as f64 / 1048576.0,
        blob.compacted as f64 / 1048576.0,
        inline.compacted as f64 / 1048576.0,
    );
}

fn main() {
    let small = env_u64("FILESYNCD_BENCH_SMALL", 10_000) as usize;
    let size_mib = env_u64("FILESYNCD_BENCH_SIZE_MIB", 40) as usize;
    if small > 0 {
        let chunks = random_chunks(small, 1, |_| 2048);
        for batch in [256, 1024] {
            compare("small", &chunks, batch, INLINE_MAX);
        }
    }
    if size_mib > 0 {
        for kib in [4usize, 16, 64] {
            let n = (size_mib << 10) / kib;
            let chunks = random_chunks(n, kib as u64, |_| kib << 10);
            compare("size", &chunks, 256, INLINE_LIMIT);
        }
    }
    if small > 0 {
        let chunks = random_chunks(small, 2, |r| r.gen_range(0..=4096));
        compare("files", &chunks, 256, INLINE_MAX);
    }
}
