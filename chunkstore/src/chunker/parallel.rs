//! Parallel chunking of one large file: units cut on several threads, then
//! stitched into exactly the chunk list of a serial run.
//!
//! # Why it is exact
//! [`Chunker::cut`] is a pure function of the bytes from the chunk's start:
//! the fingerprint restarts from zero `min - window` bytes into every chunk,
//! and nothing else (no rolling state, no length) crosses a cut. So a
//! chunking is a chain `p0 = 0, p(i+1) = p(i) + cut(data[p(i)..])`, and two
//! chains that share one position share every later one.
//!
//! # How
//! The file (its length `len` when we start) is split into units of `unit`
//! bytes. A worker claims the next unit `k` (with a free buffer), reads
//! `[start(k), end(k) + max_size)` with positional reads (the overlap holds
//! the rest of any chunk that starts in the unit) and cuts the unit's own
//! chain from `start(k)`, as if a chunk started there. That is the
//! expensive part, and it runs on every worker at once. Then, in unit
//! order, the worker *stitches*: it takes the true chain's first position
//! `q >= start(k)` (published by unit `k - 1`; 0 for unit 0) and walks the
//! true chain with `cut` until it reaches a position of the unit's own
//! chain; from there on the unit's chain *is* the true one. (Usually after
//! one or two chunks; data that never cuts naturally, e.g. zeros, may never
//! meet it, and is then walked serially to the unit's end: still exact,
//! only slower.) It publishes the first true position at or after
//! `end(k)`, so the next unit can stitch, and then hashes (blake3) the true
//! chunks that start in its unit, from the same buffer.
//!
//! The caller's thread receives the units in order and feeds the sink
//! `(offset, entry, bytes)` chunk by chunk, in stream order, as the serial
//! pipeline does, then returns the buffer to the pool.
//!
//! Each byte is read from the file once (plus `max_size` of overlap per
//! unit), fingerprinted once (plus the stitched prefix of each unit and the
//! overlap, typically one or two chunks per unit) and hashed once.
//!
//! # Memory
//! At most `pool` buffers of `unit + max_size` bytes exist, allocated as
//! needed (never more than there are units): with the defaults (`unit`
//! 4 MiB, `pool` = threads + 2, threads = cores, at most [`MAX_THREADS`])
//! that is (threads + 2) × (4 MiB + 64 KiB): 16.3 MiB on 2 cores, 40.6 MiB
//! on 8, plus ~56 bytes per chunk of the units in flight (~100 chunks
//! each). No whole-file buffer: a file larger than RAM is fine.
//!
//! # A file that changes meanwhile
//! As with the serial pipeline, whatever was read is chunked and the
//! caller compares `total_len` and the file's stat before and after. A
//! unit whose read stops short (the file shrank) ends the stream there. If
//! the last unit reads past `len` (the file grew), the rest is chunked by
//! the serial pipeline from the last true position, until the real end of
//! file. A read error ends the run with [`ReadError::Io`] at its offset,
//! once every chunk that starts before the failed unit went to the sink
//! (the lowest failed unit, if several fail).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroUsize;
use std::sync::mpsc::{channel, Receiver};
use std::thread;

use crate::ChunkEntry;

use super::error::{PipelineError, ReadError};
use super::pipeline::{chunk_and_hash_with, FileChunks};
use super::rabin::Chunker;

mod worker;

#[cfg(test)]
pub(super) use worker::stitch;
use worker::{work, Shared, StopOnDrop};

/// Regular files at least this long are chunked in parallel (when more than
/// one core is available). Measured with `benches/chunker.rs`
/// (`parallel-threshold`, 2 cores, page cache): from 8 MiB (2 units) on
/// the parallel path is faster (1.1-1.6× at 16-64 MiB, 1.3-1.9× at
/// 256 MiB); below 16 MiB the gain is a few milliseconds against up to 4
/// freshly allocated buffers and threads per file.
pub const PARALLEL_MIN_LEN: u64 = 16 << 20;

/// Most worker threads one file gets.
pub const MAX_THREADS: usize = 8;

/// Bytes per unit (raised to `4 * max_size` for large `max_size`).
const UNIT: usize = 4 << 20;

/// A source read at any offset, by several threads at once.
pub(super) trait ReadAt: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(from) = usize::try_from(offset) else {
            return Ok(0);
        };
        let rest = self.get(from..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// A [`ReadAt`] read as a stream from `pos` on (the file's own cursor is
/// neither used nor moved).
pub(super) struct ReadAtReader<'a, S: ?Sized> {
    pub src: &'a S,
    pub pos: u64,
}

impl<S: ReadAt + ?Sized> Read for ReadAtReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// How one file is split: unit size, worker threads, buffers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Bytes per unit (any size >= 1 is exact; tests use tiny ones).
    pub unit: usize,
    pub threads: usize,
    /// Buffers of `unit + max_size` bytes, at most.
    pub pool: usize,
}

impl Layout {
    fn new(chunker: &Chunker, threads: usize) -> Layout {
        let threads = threads.clamp(1, MAX_THREADS);
        Layout {
            unit: UNIT.max(4 * chunker.max_size()),
            threads,
            pool: threads + 2,
        }
    }
}

/// Chunks and hashes an open file: in parallel if it is a regular file of
/// at least [`PARALLEL_MIN_LEN`] bytes and more than one core is available
/// (up to [`MAX_THREADS`] threads), else with the two-thread pipeline of
/// [`chunk_and_hash_with`]. Either way the result, and the sink's calls
/// (in stream order, on the caller's thread), are the same. The file is
/// read from offset 0 with positional reads; its cursor is not moved.
pub fn chunk_open_file_with<E, F>(
    file: &File,
    chunker: &Chunker,
    sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let len = match file.metadata() {
        Ok(m) if m.is_file() && cores > 1 && m.len() >= PARALLEL_MIN_LEN => m.len(),
        _ => {
            let reader = ReadAtReader { src: file, pos: 0 };
            return chunk_and_hash_with(reader, chunker, sink);
        }
    };
    parallel_at(file, len, chunker, Layout::new(chunker, cores), sink)
}

/// The parallel path of [`chunk_open_file_with`], whatever the file's size,
/// on `threads` workers (clamped to `1..=MAX_THREADS`); for measurements.
pub fn chunk_file_parallel_with<E, F>(
    file: &File,
    chunker: &Chunker,
    threads: usize,
    sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let len = file
        .metadata()
        .map_err(|source| ReadError::Io { offset: 0, source })?
        .len();
    parallel_at(file, len, chunker, Layout::new(chunker, threads), sink)
}

/// Chunks `src`, `len` bytes long when we start, in units of
/// `layout.unit` (see the module doc).
pub(super) fn parallel_at<S, E, F>(
    src: &S,
    len: u64,
    chunker: &Chunker,
    layout: Layout,
    mut sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    S: ReadAt + ?Sized,
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let plan = Plan::new(len, chunker.max_size(), layout);
    let shared = Shared::new(plan.units);
    let (mut out, resume) = thread::scope(|scope| {
        let (tx, rx) = channel::<Msg>();
        let workers: Vec<_> = (0..plan.threads)
            .map(|_| {
                let tx = tx.clone();
                let (shared, plan) = (&shared, &plan);
                scope.spawn(move || work(shared, src, chunker, plan, tx))
            })
            .collect();
        drop(tx);
        let received = {
            // Stops the workers also on a panic in the sink (the scope
            // would otherwise wait for them forever).
            let _stop = StopOnDrop(&shared);
            receive(&rx, &shared, &plan, &mut sink)
        };
        drop(rx);
        for w in workers {
            // Joined here so that a worker's panic is not re-raised by the
            // scope: it was reported as `WorkerPanicked` if it mattered.
            let _ = w.join();
        }
        received
    })?;
    drop(shared); // The free buffers, before the serial pipeline's.
    if let Some(at) = resume {
        let reader = ReadAtReader { src, pos: at };
        let rest = chunk_and_hash_with(reader, chunker, |o, e, b| sink(at + o, e, b)).map_err(
            |e| match e {
                PipelineError::Read(ReadError::Io { offset, source }) => {
                    PipelineError::Read(ReadError::Io {
                        offset: at + offset,
                        source,
                    })
                }
                other => other,
            },
        )?;
        out.entries.extend(rest.entries);
        out.total_len += rest.total_len;
    }
    Ok(out)
}

/// The caller's side: units in order, each fed to the sink. Returns the
/// chunks and, if the file grew past the last unit, where to go on from.
fn receive<E, F>(
    rx: &Receiver<Msg>,
    shared: &Shared,
    plan: &Plan,
    sink: &mut F,
) -> Result<(FileChunks, Option<u64>), PipelineError<E>>
where
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let mut out = FileChunks::default();
    let mut done: BTreeMap<usize, Unit> = BTreeMap::new();
    let mut failed: BTreeMap<usize, ReadError> = BTreeMap::new();
    let mut next = 0;
    loop {
        if let Some(unit) = done.remove(&next) {
            unit.deliver(&mut out, sink)?;
            if unit.ends_stream {
                return Ok((out, None));
            }
            next += 1;
            if next == plan.units {
                // The last unit read `max_size` bytes past `len`: the file
                // grew.
                return Ok((out, Some(unit.exit)));
            }
            shared.give_back(unit.buf);
            continue;
        }
        if let Some(e) = failed.remove(&next) {
            // Every chunk before the failed unit went to the sink.
            return Err(e.into());
        }
        match rx.recv() {
            Ok(Msg::Done(unit)) => {
                done.insert(unit.index, unit);
            }
            Ok(Msg::Failed(index, e)) => {
                failed.insert(index, e);
            }
            // Every worker has exited, and unit `next` neither came nor
            // failed: a worker panicked (and stopped the run).
            Err(_) => return Err(ReadError::WorkerPanicked.into()),
        }
    }
}

/// Unit geometry of one run.
struct Plan {
    len: u64,
    unit: u64,
    units: usize,
    threads: usize,
    pool: usize,
    max: usize,
}

impl Plan {
    fn new(len: u64, max: usize, layout: Layout) -> Plan {
        let unit = layout.unit.max(1) as u64;
        let units = usize::try_from(len.div_ceil(unit).max(1)).unwrap_or(usize::MAX);
        Plan {
            len,
            unit,
            units,
            threads: layout.threads.clamp(1, units),
            pool: layout.pool.max(1),
            max,
        }
    }

    fn start(&self, k: usize) -> u64 {
        k as u64 * self.unit
    }

    /// End of unit `k`'s own range (chunks starting before it are its own).
    fn end(&self, k: usize) -> u64 {
        (self.start(k) + self.unit).min(self.len)
    }

    fn buffer_size(&self) -> usize {
        // unit <= len here unless there is a single unit.
        self.unit.min(self.len) as usize + self.max
    }
}

/// A unit, stitched and hashed, with its buffer.
struct Unit {
    index: usize,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// Start of each true chunk (relative to `start`) and its entry.
    chunks: Vec<(usize, ChunkEntry)>,
    /// First true position at or after the unit's end (absolute).
    exit: u64,
    /// The read stopped short: the stream ends at `exit`.
    ends_stream: bool,
}

impl Unit {
    fn deliver<E, F>(&self, out: &mut FileChunks, sink: &mut F) -> Result<(), PipelineError<E>>
    where
        F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
    {
        for (at, entry) in &self.chunks {
            let bytes = &self.buf[*at..*at + entry.len as usize];
            sink(self.start + *at as u64, entry, bytes).map_err(PipelineError::Sink)?;
            out.entries.push(*entry);
            out.total_len += u64::from(entry.len);
        }
        Ok(())
    }
}

enum Msg {
    Done(Unit),
    Failed(usize, ReadError),
}
