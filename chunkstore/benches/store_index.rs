//! Chunk store figures, each against a baseline measured in the same run.
//!
//! 1. Index cost: index the live-file locations of `FILESYNCD_BENCH_MIB`
//!    (default 1024) MiB of chunks with random hashes at a 32 KiB and a
//!    48 KiB average chunk (lengths uniform in [avg/2, 3avg/2]), in files of
//!    `FILESYNCD_BENCH_FILE_MIB` (default 64) MiB, plus one run with 1 MiB
//!    files. Reports, in bytes per entry and as a percentage of the bytes
//!    indexed: the `chunks` table's pages, all pages redb has allocated, and
//!    the redb file's size (before and after `compact()`). (No file data is
//!    written: `index_file` with a fake stamp.)
//! 2. Throughput: `put` (one durable commit per chunk), `put_many` (batches
//!    of 64) and `get` of `FILESYNCD_BENCH_PUT_MIB` (default
//!    min(MIB, 128)) MiB of random `FILESYNCD_BENCH_CHUNK_KIB` (default 32)
//!    KiB chunks (0 skips this part), vs `std::fs::write`+fsync and `std::fs::read` of the same
//!    chunks as files (serially, and on 8 threads as `put_many` fsyncs); and
//!    `get` from an indexed live file vs reads (+blake3) of the same ranges.
//! 3. Many small files: index `FILESYNCD_BENCH_FILES` (default 10000; 0
//!    skips) real single-chunk 4 KiB files, one `index_file` (one durable
//!    commit) per file vs `index_files` in batches of 1024, each into a fresh
//!    store.
//!
//! `FILESYNCD_BENCH_DIR` picks where the stores are created (default: the
//! system temp dir; it must be a real disk for the fsync figures to mean
//! anything).

use filesyncd_chunkstore::store::{ChunkStore, FileIndex, FileStamp, RedbChunkStore};
use filesyncd_chunkstore::{ChunkEntry, Hash};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs;
use std::io::Write;
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

fn index_cost(total_mib: u64, avg_kib: u64, file_mib: u64) {
    let dir = bench_dir();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut store = RedbChunkStore::open(dir.path().join("store"), &root).unwrap();
    let mut rng = StdRng::seed_from_u64(avg_kib * 1000 + file_mib);
    let total = total_mib << 20;
    let file_bytes = (file_mib << 20).min(total);
    let avg = avg_kib << 10;
    let (mut indexed, mut entries, mut files) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    while indexed < total {
        let size = file_bytes.min(total - indexed);
        let mut table = Vec::new();
        let mut off = 0u64;
        while off < size {
            let len = rng.gen_range(avg / 2..=avg * 3 / 2).min(size - off);
            let mut h = [0u8; 32];
            rng.fill_bytes(&mut h);
            table.push((
                off,
                ChunkEntry {
                    hash: Hash(h),
                    len: len as u32,
                },
            ));
            off += len;
        }
        let stamp = FileStamp {
            inode: 1_000_000 + files,
            size,
            mtime_ns: 1_700_000_000_000_000_000 + files as i64,
        };
        let path = format!("photos/{:04}/IMG_{files:06}.raw", files / 100);
        store.index_file(&path, stamp, &table).unwrap();
        entries += table.len() as u64;
        indexed += size;
        files += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let st = store.index_stats().unwrap();
    assert_eq!(st.entries, entries);
    store.compact().unwrap();
    let compacted = store.index_stats().unwrap();
    let fig = |b: u64| {
        format!(
            "{:.1} B/entry = {:.3}%",
            b as f64 / entries as f64,
            100.0 * b as f64 / indexed as f64
        )
    };
    println!(
        "index  {total_mib} MiB at ~{avg_kib} KiB chunks, {files} files of {file_mib} MiB, \
         {entries} entries ({secs:.2} s):\n  \
         chunks table {}; redb allocated {};\n  \
         redb file on disk {} (apparent size {:.2} MiB); after compact: on disk {}",
        fig(st.chunk_table_bytes),
        fig(st.allocated_bytes),
        fig(st.disk_bytes),
        st.file_bytes as f64 / 1048576.0,
        fig(compacted.disk_bytes),
    );
}

fn mibps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1048576.0 / secs
}

fn throughput(total_mib: u64, chunk_kib: u64) {
    let dir = bench_dir();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let store = RedbChunkStore::open(dir.path().join("store"), &root).unwrap();
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let n = ((total_mib << 20) / (chunk_kib << 10)).max(1) as usize;
    let chunks: Vec<Vec<u8>> = (0..3 * n)
        .map(|_| {
            let mut c = vec![0u8; (chunk_kib << 10) as usize];
            rng.fill_bytes(&mut c);
            c
        })
        .collect();
    let hashes: Vec<Hash> = chunks.iter().map(|c| Hash::of_chunk(c)).collect();
    let bytes = (n as u64) * (chunk_kib << 10);

    let t = Instant::now();
    for (h, c) in hashes[..n].iter().zip(&chunks[..n]) {
        let mut f = fs::File::create(plain.join(h.to_hex())).unwrap();
        f.write_all(c).unwrap();
        f.sync_all().unwrap();
    }
    let base_put = mibps(bytes, t.elapsed().as_secs_f64());

    // The same, on 8 threads (what put_many does with its fsyncs).
    let plain8 = dir.path().join("plain8");
    fs::create_dir(&plain8).unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..8 {
            let (plain8, hashes, chunks) = (&plain8, &hashes[2 * n..], &chunks[2 * n..]);
            s.spawn(move || {
                for i in (w..n).step_by(8) {
                    let mut f = fs::File::create(plain8.join(hashes[i].to_hex())).unwrap();
                    f.write_all(&chunks[i]).unwrap();
                    f.sync_all().unwrap();
                }
            });
        }
    });
    let base_put8 = mibps(bytes, t.elapsed().as_secs_f64());

    let t = Instant::now();
    for (h, c) in hashes[n..2 * n].iter().zip(&chunks[n..2 * n]) {
        store.put(*h, c).unwrap();
    }
    let put = mibps(bytes, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let items: Vec<(Hash, &[u8])> = hashes[2 * n..]
        .iter()
        .zip(&chunks[2 * n..])
        .map(|(h, c)| (*h, c.as_slice()))
        .collect();
    for batch in items.chunks(64) {
        store.put_many(batch).unwrap();
    }
    let put_many = mibps(bytes, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut sum = 0usize;
    for h in &hashes[..n] {
        sum += fs::read(plain.join(h.to_hex())).unwrap().len();
    }
    let base_get = mibps(bytes, t.elapsed().as_secs_f64());

    let t = Instant::now();
    for h in &hashes[n..2 * n] {
        sum += store.get(h).unwrap().expect("stored").len();
    }
    let get = mibps(bytes, t.elapsed().as_secs_f64());
    assert_eq!(sum as u64, 2 * bytes);

    println!(
        "blobs  {n} x {chunk_kib} KiB:\n  \
         put {put:.1} MiB/s vs fs::write+fsync {base_put:.1} MiB/s (ratio {:.2})\n  \
         put_many(64) {put_many:.1} MiB/s vs fs::write+fsync on 8 threads {base_put8:.1} MiB/s \
         (ratio {:.2}; vs the serial baseline {:.2})\n  \
         get (verified) {get:.0} MiB/s vs fs::read {base_get:.0} MiB/s (ratio {:.2})",
        put / base_put,
        put_many / base_put8,
        put_many / base_put,
        get / base_get
    );
    live_get(&store, &root, &chunks[..n], &hashes[..n]);
}

fn live_get(store: &RedbChunkStore, root: &Path, chunks: &[Vec<u8>], hashes: &[Hash]) {
    use std::os::unix::fs::FileExt;
    let path = root.join("big.bin");
    let mut f = fs::File::create(&path).unwrap();
    let mut table = Vec::new();
    let mut off = 0u64;
    for (c, h) in chunks.iter().zip(hashes) {
        f.write_all(c).unwrap();
        table.push((
            off,
            ChunkEntry {
                hash: *h,
                len: c.len() as u32,
            },
        ));
        off += c.len() as u64;
    }
    f.sync_all().unwrap();
    drop(f);
    let stamp = FileStamp::of_path(&path).unwrap();
    // These chunks are also blobs (put above); `get` tries live files first.
    store.index_file("big.bin", stamp, &table).unwrap();

    let t = Instant::now();
    let file = fs::File::open(&path).unwrap();
    let mut buf = Vec::new();
    for (o, ce) in &table {
        buf.resize(ce.len as usize, 0);
        file.read_exact_at(&mut buf, *o).unwrap();
    }
    let base = mibps(off, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for (o, ce) in &table {
        buf.resize(ce.len as usize, 0);
        file.read_exact_at(&mut buf, *o).unwrap();
        assert_eq!(Hash::of_chunk(&buf), ce.hash);
    }
    let base_hash = mibps(off, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for (_, ce) in &table {
        assert_eq!(
            store.get(&ce.hash).unwrap().map(|b| b.len()),
            Some(ce.len as usize)
        );
    }
    let ours = mibps(off, t.elapsed().as_secs_f64());
    println!(
        "live   get of {} chunks from an indexed file (lookup+open+fstat+read+blake3 each) \
         {ours:.0} MiB/s vs pread+blake3 of the same ranges {base_hash:.0} MiB/s (ratio {:.2}); \
         plain pread {base:.0} MiB/s (ratio {:.2})",
        table.len(),
        ours / base_hash,
        ours / base
    );
}

/// Files per `index_files` call in `many_files`.
const BATCH: usize = 1024;

fn many_files(n: usize) {
    let dir = bench_dir();
    let root = dir.path().join("root");
    let mut rng = StdRng::seed_from_u64(11);
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let rel = format!("d{:03}/f{i:05}", i / 100);
        let p = root.join(&rel);
        if i % 100 == 0 {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        let mut data = vec![0u8; 4096];
        rng.fill_bytes(&mut data);
        fs::write(&p, &data).unwrap();
        let table = vec![(
            0u64,
            ChunkEntry {
                hash: Hash::of_chunk(&data),
                len: data.len() as u32,
            },
        )];
        files.push((rel, FileStamp::of_path(&p).unwrap(), table));
    }
    let one = RedbChunkStore::open(dir.path().join("one"), &root).unwrap();
    let t = Instant::now();
    for (rel, stamp, table) in &files {
        one.index_file(rel, *stamp, table).unwrap();
    }
    let serial = t.elapsed().as_secs_f64();
    let batched_store = RedbChunkStore::open(dir.path().join("batched"), &root).unwrap();
    let batch: Vec<FileIndex<'_>> = files
        .iter()
        .map(|(rel, stamp, table)| FileIndex {
            rel_path: rel,
            stamp: *stamp,
            chunks: table,
        })
        .collect();
    let t = Instant::now();
    for b in batch.chunks(BATCH) {
        batched_store.index_files(b).unwrap();
    }
    let batched = t.elapsed().as_secs_f64();
    for (_, _, table) in files.iter().step_by(97) {
        assert!(batched_store.locate(&table[0].1.hash).unwrap().is_some());
        assert!(one.locate(&table[0].1.hash).unwrap().is_some());
    }
    println!(
        "files  {n} single-chunk files: index_file one by one {:.2} s ({:.0} files/s); \
         index_files in batches of {BATCH} {:.3} s ({:.0} files/s); {:.0}x faster",
        serial,
        n as f64 / serial,
        batched,
        n as f64 / batched,
        serial / batched
    );
}

fn main() {
    let mib = env_u64("FILESYNCD_BENCH_MIB", 1024);
    let file_mib = env_u64("FILESYNCD_BENCH_FILE_MIB", 64);
    let put_mib = env_u64("FILESYNCD_BENCH_PUT_MIB", mib.min(128));
    let chunk_kib = env_u64("FILESYNCD_BENCH_CHUNK_KIB", 32);
    let many = env_u64("FILESYNCD_BENCH_FILES", 10_000) as usize;
    if many > 0 {
        many_files(many);
    }
    for avg in [32, 48] {
        index_cost(mib, avg, file_mib);
    }
    index_cost(mib, 32, 1);
    if put_mib > 0 {
        throughput(put_mib, chunk_kib);
    }
}
