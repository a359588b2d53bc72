//! Chunker throughput and edit locality, on random bytes in memory.
//!
//! `cargo bench -p filesyncd-chunkstore --bench chunker`
//!
//! Environment:
//! - `FILESYNCD_BENCH_MIB` (default 1024): buffer size in MiB.
//! - `FILESYNCD_BENCH_INSERTS` (default 20): 1-byte inserts re-chunked in
//!   full (the whole modified buffer is chunked again).
//! - `FILESYNCD_BENCH_LOCAL_INSERTS` (default 20000): further inserts measured
//!   by re-chunking only from the edited chunk until the new boundaries
//!   rejoin the old ones (exactly equivalent, since a boundary depends only
//!   on the bytes from its chunk's start; checked against the full method
//!   on the first inserts). Gives the tail of the distribution cheaply.
//! - `FILESYNCD_BENCH_PARAMS` = `min,avg,max,normalization[,window]`: try
//!   other sizes (default: `ChunkerParams::default()`).
//! - `FILESYNCD_BENCH_REPEAT` (default 3): throughput runs; the best is kept.
//!
//! - `FILESYNCD_BENCH_PAR_MIB` (default 256): size of the file of the
//!   serial-vs-parallel comparison; `FILESYNCD_BENCH_DIR` where it is
//!   written (default: the system temp dir). It is read from the page cache
//!   (it was just written): the figures are CPU-bound, as on a fast disk.
//! - `FILESYNCD_BENCH_PAR_SWEEP` (default `4,8,16,32,64,128`): file sizes
//!   in MiB of the threshold sweep.
//!
//! A filter argument runs only the sections whose name contains it:
//! `throughput` (in memory), `inserts` (edit locality, needs the
//! throughput's chunking), `parallel-file` (one file, serial pipeline vs the
//! parallel path) and `parallel-threshold` (both on smaller files), e.g.
//! `cargo bench -p filesyncd-chunkstore --bench chunker -- parallel`.
//!
//! Prints throughputs and the ratios chunker/blake3 and pipeline/blake3
//! measured in the same run; then, per insert method, the number of chunks
//! of the new version not present in the old and their total bytes (worst
//! and mean), and the mean chunk size with the index overhead at 64 bytes
//! of index per chunk.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use filesyncd_chunkstore::chunker::{
    chunk_and_hash, chunk_file, chunk_file_parallel_with, ChunkReader, Chunker, ChunkerParams,
    FileChunks, MAX_THREADS, PARALLEL_MIN_LEN,
};
use filesyncd_chunkstore::Hash;
use rand::{Rng, RngCore, SeedableRng};

const INDEX_BYTES_PER_CHUNK: f64 = 64.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn params_from_env() -> ChunkerParams {
    let mut p = ChunkerParams::default();
    if let Ok(spec) = std::env::var("FILESYNCD_BENCH_PARAMS") {
        let v: Vec<u32> = spec
            .split(',')
            .map(|s| s.trim().parse().expect("number"))
            .collect();
        assert!(
            v.len() == 4 || v.len() == 5,
            "FILESYNCD_BENCH_PARAMS=min,avg,max,normalization[,window]"
        );
        p.min_size = v[0];
        p.avg_size = v[1];
        p.max_size = v[2];
        p.normalization = u8::try_from(v[3]).expect("small level");
        if let Some(&w) = v.get(4) {
            p.window = w;
        }
    }
    p
}

fn lengths(c: &Chunker, data: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(data.len() / 16_384 + 1);
    let mut pos = 0;
    while pos < data.len() {
        let n = c.cut(&data[pos..]);
        out.push(n as u32);
        pos += n;
    }
    out
}

fn ends_of(lens: &[u32]) -> Vec<u64> {
    let mut acc = 0u64;
    lens.iter()
        .map(|&n| {
            acc += u64::from(n);
            acc
        })
        .collect()
}

fn mib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

/// CPU seconds used so far by this process, all threads (Linux
/// `/proc/self/stat`, 100 ticks/s); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A measurement: best wall time of `repeat` runs, and the CPU time that
/// run used (all threads), when known.
struct Timing {
    wall: f64,
    cpu: Option<f64>,
}

fn best<T>(repeat: usize, mut f: impl FnMut() -> T) -> (Timing, T) {
    let mut best = Timing {
        wall: f64::INFINITY,
        cpu: None,
    };
    let mut out = None;
    for _ in 0..repeat {
        let c = cpu_seconds();
        let t = Instant::now();
        let r = std::hint::black_box(f());
        let wall = t.elapsed().as_secs_f64();
        if wall < best.wall {
            best = Timing {
                wall,
                cpu: cpu_seconds().zip(c).map(|(b, a)| b - a),
            };
        }
        out = Some(r);
    }
    (best, out.expect("repeat >= 1"))
}

fn cpu_note(t: &Timing) -> String {
    match t.cpu {
        Some(cpu) => format!("(wall {:.2} s, cpu {:.2} s)", t.wall, cpu),
        None => format!("(wall {:.2} s)", t.wall),
    }
}

/// What an insert cost: chunks of the new version absent from the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cost {
    chunks: usize,
    bytes: u64,
}

/// The old version: its chunk ends and chunk hashes.
struct OldOwned {
    ends: Vec<u64>,
    hashes: HashSet<Hash>,
}

/// Inserts `byte` at `at` in place, re-chunks the whole buffer, restores it.
fn insert_full(c: &Chunker, buf: &mut Vec<u8>, old: &OldOwned, at: usize, byte: u8) -> Cost {
    buf.insert(at, byte);
    let new_lens = lengths(c, buf);
    let new_ends = ends_of(&new_lens);
    let mut cost = Cost {
        chunks: 0,
        bytes: 0,
    };
    let mut start = 0u64;
    for &end in &new_ends {
        // Old coordinates of this chunk, if it lies wholly before or after
        // the inserted byte.
        let old_range = if end <= at as u64 {
            Some((start, end))
        } else if start > at as u64 {
            Some((start - 1, end - 1))
        } else {
            None
        };
        let same_place = old_range.is_some_and(|(s, e)| match old.ends.binary_search(&e) {
            Ok(i) => (if i == 0 { 0 } else { old.ends[i - 1] }) == s,
            Err(_) => false,
        });
        if !same_place {
            let h = Hash::of_chunk(&buf[start as usize..end as usize]);
            if !old.hashes.contains(&h) {
                cost.chunks += 1;
                cost.bytes += end - start;
            }
        }
        start = end;
    }
    buf.remove(at);
    cost
}

/// Same result as [`insert_full`], re-chunking only from the chunk holding
/// `at` until a new boundary coincides with a (shifted) old one.
fn insert_local(c: &Chunker, data: &[u8], old: &OldOwned, at: usize, byte: u8) -> Cost {
    let max = c.max_size();
    // First old chunk that ends after `at`: chunks before it are unchanged.
    let i = old.ends.partition_point(|&e| e <= at as u64);
    let s = if i == 0 { 0 } else { old.ends[i - 1] as usize };
    let mut span = 8 * max;
    loop {
        let stop = (at + span).min(data.len());
        let mut local = Vec::with_capacity(stop - s + 1);
        local.extend_from_slice(&data[s..at]);
        local.push(byte);
        local.extend_from_slice(&data[at..stop]);
        let at_end = stop == data.len();
        let mut cost = Cost {
            chunks: 0,
            bytes: 0,
        };
        let mut pos = 0usize;
        let mut rejoined = false;
        while pos < local.len() && (at_end || local.len() - pos >= max) {
            let n = c.cut(&local[pos..]);
            let h = Hash::of_chunk(&local[pos..pos + n]);
            if !old.hashes.contains(&h) {
                cost.chunks += 1;
                cost.bytes += n as u64;
            }
            pos += n;
            // New offset s + pos is old offset s + pos - 1 (past the insert).
            let new_end = s + pos;
            if new_end > at && old.ends.binary_search(&((new_end - 1) as u64)).is_ok() {
                rejoined = true;
                break;
            }
        }
        if rejoined || at_end {
            return cost;
        }
        span *= 2;
    }
}

fn summarize(name: &str, costs: &[Cost]) {
    let n = costs.len().max(1) as f64;
    let worst_chunks = costs.iter().map(|c| c.chunks).max().unwrap_or(0);
    let worst_bytes = costs.iter().map(|c| c.bytes).max().unwrap_or(0);
    let mean_chunks = costs.iter().map(|c| c.chunks as f64).sum::<f64>() / n;
    let mean_bytes = costs.iter().map(|c| c.bytes as f64).sum::<f64>() / n;
    // Buckets: 0, 1, 2, 3, 4..=7, 8+ changed chunks.
    let mut hist = [0usize; 6];
    for c in costs {
        hist[match c.chunks {
            0..=3 => c.chunks,
            4..=7 => 4,
            _ => 5,
        }] += 1;
    }
    let over = costs
        .iter()
        .filter(|c| c.chunks > 2 || c.bytes > 136_000)
        .count();
    println!(
        "{name}: {} inserts: changed chunks worst {worst_chunks} mean {mean_chunks:.3}; \
         new bytes worst {worst_bytes} mean {mean_bytes:.0}; \
         changed-chunk histogram [0,1,2,3,4-7,8+] = {hist:?}; \
         over target (>2 chunks or >136000 B): {over} ({:.3}%)",
        costs.len(),
        100.0 * over as f64 / n,
    );
}

/// Writes `mib` MiB of random bytes (seeded by `seed`) to a new file in
/// `dir`.
fn random_file(dir: &Path, mib: usize, seed: u64) -> PathBuf {
    let path = dir.join(format!("chunker-bench-{mib}MiB-{seed}"));
    let mut f = File::create(&path).expect("create bench file");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        rng.fill_bytes(&mut block);
        f.write_all(&block).expect("write bench file");
    }
    f.sync_all().expect("sync bench file");
    path
}

fn no_sink(_: u64, _: &filesyncd_chunkstore::ChunkEntry, _: &[u8]) -> Result<(), Infallible> {
    Ok(())
}

/// The serial pipeline (a `File` as a `Read`) against the parallel path
/// (`chunk_file_parallel_with`) on the same file, same run.
fn serial_vs_parallel(
    chunker: &Chunker,
    path: &Path,
    threads: usize,
    repeat: usize,
) -> (Timing, Timing, FileChunks) {
    let (t_serial, serial) = best(repeat, || {
        let f = File::open(path).expect("open");
        chunk_and_hash(f, chunker).expect("read")
    });
    let (t_par, par) = best(repeat, || {
        let f = File::open(path).expect("open");
        chunk_file_parallel_with(&f, chunker, threads, no_sink).expect("read")
    });
    assert_eq!(serial, par, "the parallel path must equal the serial one");
    (t_serial, t_par, serial)
}

fn parallel_section(chunker: &Chunker, dir: &Path, repeat: usize) {
    let mib = env_usize("FILESYNCD_BENCH_PAR_MIB", 256);
    let size = mib << 20;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(MAX_THREADS);
    let path = random_file(dir, mib, 0xF11E);
    println!(
        "parallel-file: {mib} MiB file of random bytes, {cores} cores, {threads} worker threads"
    );
    let (t_serial, t_par, chunks) = serial_vs_parallel(chunker, &path, threads, repeat);
    let (t_auto, auto) = best(repeat, || chunk_file(&path, chunker).expect("read"));
    assert_eq!(auto, chunks);
    let (t_one, _) = best(repeat, || {
        let f = File::open(&path).expect("open");
        chunk_file_parallel_with(&f, chunker, 1, no_sink).expect("read")
    });
    let line = |name: &str, t: &Timing| {
        let mibs = mib_s(size, t.wall);
        println!(
            "  {name:<38} {mibs:7.0} MiB/s = {:7.0} MB/s {}",
            mibs * 1.048_576,
            cpu_note(t)
        );
    };
    line("serial pipeline (2 threads)", &t_serial);
    line(&format!("parallel path ({threads} workers)"), &t_par);
    line("parallel path (1 worker)", &t_one);
    line("chunk_file (picks by itself)", &t_auto);
    println!(
        "  parallel/serial = {:.2}; {} chunks identical",
        t_serial.wall / t_par.wall,
        chunks.entries.len()
    );
    std::fs::remove_file(&path).expect("remove bench file");
}

fn threshold_section(chunker: &Chunker, dir: &Path, repeat: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(MAX_THREADS);
    let sweep = std::env::var("FILESYNCD_BENCH_PAR_SWEEP").unwrap_or("4,8,16,32,64,128".into());
    println!(
        "parallel-threshold: serial vs parallel ({threads} workers), best of {repeat}; \
         PARALLEL_MIN_LEN = {} MiB",
        PARALLEL_MIN_LEN >> 20
    );
    for mib in sweep
        .split(',')
        .map(|s| s.trim().parse::<usize>().expect("MiB"))
    {
        let path = random_file(dir, mib, 0x5EE9 + mib as u64);
        let (t_serial, t_par, _) = serial_vs_parallel(chunker, &path, threads, repeat);
        println!(
            "  {mib:5} MiB: serial {:6.0} MiB/s ({:6.1} ms), parallel {:6.0} MiB/s ({:6.1} ms), ratio {:.2}",
            mib_s(mib << 20, t_serial.wall),
            t_serial.wall * 1e3,
            mib_s(mib << 20, t_par.wall),
            t_par.wall * 1e3,
            t_serial.wall / t_par.wall,
        );
        std::fs::remove_file(&path).expect("remove bench file");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument filters.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let wanted = |section: &str| section.contains(filter.as_str());
    let repeat = env_usize("FILESYNCD_BENCH_REPEAT", 3).max(1);
    let params = params_from_env();
    let chunker = params.validate().expect("valid params");
    println!("params: {params:?}");
    if wanted("parallel-file") || wanted("parallel-threshold") {
        let dir = match std::env::var_os("FILESYNCD_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d),
            None => tempfile::tempdir(),
        }
        .expect("bench dir");
        if wanted("parallel-file") {
            parallel_section(&chunker, dir.path(), repeat);
        }
        if wanted("parallel-threshold") {
            threshold_section(&chunker, dir.path(), repeat);
        }
    }
    if !wanted("throughput") && !wanted("inserts") {
        return;
    }
    let mib = env_usize("FILESYNCD_BENCH_MIB", 1024);
    let inserts = env_usize("FILESYNCD_BENCH_INSERTS", 20);
    let local_inserts = env_usize("FILESYNCD_BENCH_LOCAL_INSERTS", 20_000);

    let size = mib << 20;
    let mut buf = Vec::with_capacity(size + 1);
    buf.resize(size, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    rng.fill_bytes(&mut buf);
    println!("buffer: {mib} MiB of random bytes");

    // Throughput, same run, best of `repeat`.
    let (t_blake3, _) = best(repeat, || blake3::hash(&buf));
    let (t_chunk, lens) = best(repeat, || lengths(&chunker, &buf));
    let (t_seq, seq_count) = best(repeat, || {
        let mut r = ChunkReader::new(&buf[..], chunker.clone());
        let mut n = 0usize;
        while let Some(ch) = r.next_chunk().expect("in memory") {
            std::hint::black_box(Hash::of_chunk(ch.data));
            n += 1;
        }
        n
    });
    let (t_pipe, out) = best(repeat, || {
        chunk_and_hash(&buf[..], &chunker).expect("in memory")
    });
    assert_eq!(out.entries.len(), lens.len());
    assert_eq!(seq_count, lens.len());
    assert_eq!(out.total_len, size as u64);
    let (b3, ch, seq, pipe) = (
        mib_s(size, t_blake3.wall),
        mib_s(size, t_chunk.wall),
        mib_s(size, t_seq.wall),
        mib_s(size, t_pipe.wall),
    );
    println!(
        "blake3::hash alone (1 thread):   {b3:8.0} MiB/s {}",
        cpu_note(&t_blake3)
    );
    println!(
        "chunker only (1 thread):         {ch:8.0} MiB/s {}",
        cpu_note(&t_chunk)
    );
    println!(
        "chunk then hash (1 thread):      {seq:8.0} MiB/s {}",
        cpu_note(&t_seq)
    );
    println!(
        "chunk+hash pipeline (2 threads): {pipe:8.0} MiB/s {}",
        cpu_note(&t_pipe)
    );
    println!(
        "ratios: chunker/blake3 = {:.2}, pipeline/blake3 = {:.2}, sequential/blake3 = {:.2}, pipeline/sequential = {:.2}",
        ch / b3,
        pipe / b3,
        seq / b3,
        pipe / seq
    );

    // Chunk sizes.
    let count = lens.len();
    let mean = size as f64 / count as f64;
    let forced = lens.iter().filter(|&&n| n == params.max_size).count();
    let below_avg = lens.iter().filter(|&&n| n < params.avg_size).count();
    println!(
        "chunks: {count}, mean {mean:.0} B, min {} max {}, cut at max_size {forced} ({:.3}%), shorter than avg {:.1}%; \
         index at {INDEX_BYTES_PER_CHUNK} B/chunk = {:.3}% of data",
        lens.iter().min().copied().unwrap_or(0),
        lens.iter().max().copied().unwrap_or(0),
        100.0 * forced as f64 / count as f64,
        100.0 * below_avg as f64 / count as f64,
        100.0 * INDEX_BYTES_PER_CHUNK / mean,
    );

    // 1-byte inserts.
    if !wanted("inserts") {
        return;
    }
    let old = OldOwned {
        ends: ends_of(&lens),
        hashes: out.entries.iter().map(|e| e.hash).collect(),
    };
    let margin = 1 << 20;
    let mut positions = Vec::new();
    for _ in 0..inserts.max(local_inserts) {
        positions.push((
            rng.gen_range(margin.min(size / 4)..size - margin.min(size / 4)),
            rng.gen::<u8>(),
        ));
    }
    let t = Instant::now();
    let mut full = Vec::new();
    for &(at, byte) in positions.iter().take(inserts) {
        let cost = insert_full(&chunker, &mut buf, &old, at, byte);
        let local = insert_local(&chunker, &buf, &old, at, byte);
        assert_eq!(cost, local, "local method disagrees at {at}");
        full.push(cost);
    }
    if inserts > 0 {
        summarize("full re-chunk", &full);
        println!("  ({:.1} s)", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let local: Vec<Cost> = positions
        .iter()
        .take(local_inserts)
        .map(|&(at, byte)| insert_local(&chunker, &buf, &old, at, byte))
        .collect();
    if local_inserts > 0 {
        summarize("local re-chunk", &local);
        println!("  ({:.1} s)", t.elapsed().as_secs_f64());
    }
}
