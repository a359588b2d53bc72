//! The chunk+hash pipeline: fingerprint on one thread, hash on another.
//!
//! ```text
//!  fingerprinting thread                      caller's thread
//!  read block → cut → copy tail to next ──▶ [bounded: 1] ──▶ blake3 each chunk → sink
//!        ▲                                                          │
//!        └──────────────── free blocks [pool of 4] ◀────────────────┘
//! ```
//!
//! A block is one reusable buffer of `max(2 * max_size, 2 MiB)` bytes plus
//! the list of chunk lengths cut in it. The fingerprinting thread reads the
//! source into a block, cuts every chunk whose boundary is decided (all but
//! a tail shorter than `max_size`, or everything at end of stream), copies
//! the tail to the front of the next free block, hands the block over and
//! refills the next one while the caller hashes the previous: chunk n is
//! hashed while chunk n+1 is fingerprinted. Four blocks circulate, so
//! memory is bounded (8 MiB with the defaults) and nothing is allocated per
//! chunk. An input that fits in the first block is processed on the caller's
//! thread without spawning.
//!
//! The sink runs on the caller's thread, in stream order, and sees
//! `(offset, entry, bytes)` for each chunk; an error from it stops the
//! pipeline (the fingerprinting thread notices the closed channel and
//! exits). A read error ends the pipeline with [`ReadError`].
//!
//! # Large files: the parallel path
//! Fingerprinting is the bottleneck here (one core, ~1,400 MiB/s). A stream
//! cannot be split, but a file can: [`chunk_file`], [`chunk_file_with`] and
//! [`chunk_open_file_with`] take a regular file of at least
//! [`PARALLEL_MIN_LEN`](super::PARALLEL_MIN_LEN) (16 MiB) on a machine with
//! more than one core to `parallel.rs`, which cuts 4 MiB units of it on up
//! to `min(cores, 8)` threads with positional reads, stitches them in order
//! into exactly the serial chunk list (a cut depends only on the bytes from
//! the chunk's start: once the true chain meets a unit's own chain, they
//! agree) and hashes each unit's chunks on its thread; the sink still gets
//! `(offset, entry, bytes)` in stream order on the caller's thread. Memory:
//! `threads + 2` buffers of 4 MiB + `max_size`. Everything else, and any
//! plain `Read` given to [`chunk_and_hash_with`], uses this pipeline.

use std::convert::Infallible;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

use crate::{ChunkEntry, Hash};

use super::error::{PipelineError, ReadError};
use super::parallel::chunk_open_file_with;
use super::rabin::Chunker;
use super::reader::fill;

/// Buffers circulating in one pipeline.
const POOL: usize = 4;
/// Smallest block size.
const MIN_BLOCK: usize = 2 << 20;
/// The first read of a stream goes into a buffer of at most this size; the
/// block grows to its full size only for a stream that does not end there.
/// A small file then costs a 64 KiB buffer, not a zeroed 2 MiB block (the
/// `memset` of that block was 12 % of an origin's CPU while it hashed
/// 100,000 files of 0-4 KiB).
const FIRST_READ: usize = 64 << 10;

/// The chunk list of one file or stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileChunks {
    /// In stream order; lengths sum to `total_len`.
    pub entries: Vec<ChunkEntry>,
    pub total_len: u64,
}

/// A buffer of stream bytes and the chunk lengths cut in it.
struct Block {
    data: Vec<u8>,
    /// Valid bytes in `data` (all of them belong to cut chunks once the
    /// block is handed to the hasher).
    len: usize,
    /// Stream offset of `data[0]`.
    offset: u64,
    cuts: Vec<u32>,
}

impl Block {
    fn new(size: usize) -> Block {
        Block {
            data: vec![0; size],
            len: 0,
            offset: 0,
            cuts: Vec::new(),
        }
    }

    /// Cuts every chunk whose boundary is decided; returns the bytes they
    /// cover. Without `eof`, needs `len == data.len() >= max_size`.
    fn find_cuts(&mut self, chunker: &Chunker, eof: bool) -> usize {
        self.cuts.clear();
        let max = chunker.max_size();
        let mut pos = 0;
        while pos < self.len && (eof || self.len - pos >= max) {
            let n = chunker.cut(&self.data[pos..self.len]);
            // n <= max_size <= 16 MiB (validated).
            self.cuts.push(n as u32);
            pos += n;
        }
        pos
    }
}

/// Chunks and hashes a stream; see [`chunk_and_hash_with`].
pub fn chunk_and_hash<R: Read + Send>(
    reader: R,
    chunker: &Chunker,
) -> Result<FileChunks, ReadError> {
    chunk_and_hash_with(reader, chunker, |_, _, _| Ok::<(), Infallible>(())).map_err(|e| match e {
        PipelineError::Read(e) => e,
        PipelineError::Sink(never) => match never {},
    })
}

/// Chunks and hashes a stream on two threads, calling
/// `sink(offset, &entry, bytes)` for every chunk in order on the caller's
/// thread. Returns every entry and the stream length. (A `Read` cannot be
/// split: for an open file, [`chunk_open_file_with`] goes parallel when the
/// file is large.)
pub fn chunk_and_hash_with<R, E, F>(
    reader: R,
    chunker: &Chunker,
    sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    R: Read + Send,
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let block_size = (2 * chunker.max_size()).max(MIN_BLOCK);
    pipeline(reader, chunker, block_size, sink)
}

/// [`chunk_and_hash_with`] with a chosen block size (`>= 2 * max_size`);
/// tests use small blocks to exercise the hand-over path.
pub(super) fn pipeline<R, E, F>(
    reader: R,
    chunker: &Chunker,
    block_size: usize,
    sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    R: Read + Send,
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    pipeline_from(
        reader,
        chunker,
        block_size,
        block_size.min(FIRST_READ),
        sink,
    )
}

/// [`pipeline`] whose first read fills at most `first_read` bytes.
pub(super) fn pipeline_from<R, E, F>(
    mut reader: R,
    chunker: &Chunker,
    block_size: usize,
    first_read: usize,
    mut sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    R: Read + Send,
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    debug_assert!(block_size >= 2 * chunker.max_size());
    debug_assert!(first_read > 0 && first_read <= block_size);
    let mut first = Block::new(first_read);
    let mut filled = fill(&mut reader, &mut first.data, 0)?;
    first.len = filled.len;
    if !filled.eof && first_read < block_size {
        first.data.resize(block_size, 0);
        let at = first.len;
        filled = fill(&mut reader, &mut first.data[at..], at as u64)?;
        first.len += filled.len;
    }
    let mut out = FileChunks::default();
    if filled.eof {
        first.find_cuts(chunker, true);
        hash_block(&first, &mut out, &mut sink)?;
        return Ok(out);
    }
    thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Block>(1);
        let (free_tx, free_rx) = sync_channel::<Block>(POOL);
        let fingerprinter = scope.spawn(move || {
            fingerprint_blocks(reader, chunker, first, block_size, full_tx, free_rx)
        });
        let mut sunk = Ok(());
        for block in full_rx.iter() {
            if let Err(e) = hash_block(&block, &mut out, &mut sink) {
                sunk = Err(e);
                break;
            }
            // Fails only once the fingerprinter has exited: nothing to do.
            let _ = free_tx.send(block);
        }
        drop(full_rx);
        drop(free_tx);
        let read = fingerprinter
            .join()
            .map_err(|_| ReadError::WorkerPanicked)?;
        sunk?;
        read?;
        Ok(out)
    })
}

/// The fingerprinting thread. Returns `Ok` also when the hasher hung up
/// (its own error is reported by the caller).
fn fingerprint_blocks<R: Read>(
    mut reader: R,
    chunker: &Chunker,
    mut cur: Block,
    block_size: usize,
    full_tx: SyncSender<Block>,
    free_rx: Receiver<Block>,
) -> Result<(), ReadError> {
    let mut allocated = 1;
    let mut eof = false;
    loop {
        let consumed = cur.find_cuts(chunker, eof);
        if eof {
            let _ = full_tx.send(cur);
            return Ok(());
        }
        let mut next = if allocated < POOL {
            allocated += 1;
            Block::new(block_size)
        } else {
            match free_rx.recv() {
                Ok(block) => block,
                Err(_) => return Ok(()),
            }
        };
        let tail = cur.len - consumed;
        next.data[..tail].copy_from_slice(&cur.data[consumed..cur.len]);
        next.offset = cur.offset + consumed as u64;
        cur.len = consumed;
        if full_tx.send(cur).is_err() {
            return Ok(());
        }
        let filled = fill(
            &mut reader,
            &mut next.data[tail..],
            next.offset + tail as u64,
        )?;
        next.len = tail + filled.len;
        eof = filled.eof;
        cur = next;
    }
}

fn hash_block<E, F>(
    block: &Block,
    out: &mut FileChunks,
    sink: &mut F,
) -> Result<(), PipelineError<E>>
where
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let mut pos = 0usize;
    for &len in &block.cuts {
        let bytes = &block.data[pos..pos + len as usize];
        let entry = ChunkEntry {
            hash: Hash::of_chunk(bytes),
            len,
        };
        sink(block.offset + pos as u64, &entry, bytes).map_err(PipelineError::Sink)?;
        out.entries.push(entry);
        out.total_len += u64::from(len);
        pos += len as usize;
    }
    Ok(())
}

/// Chunks and hashes one file: in parallel if it is large (see
/// [`chunk_open_file_with`]), else with the pipeline.
pub fn chunk_file(path: &Path, chunker: &Chunker) -> Result<FileChunks, ReadError> {
    chunk_file_with(path, chunker, |_, _, _| Ok::<(), Infallible>(())).map_err(|e| match e {
        PipelineError::Read(e) => e,
        PipelineError::Sink(never) => match never {},
    })
}

/// [`chunk_file`] with a sink (see [`chunk_and_hash_with`]).
pub fn chunk_file_with<E, F>(
    path: &Path,
    chunker: &Chunker,
    sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    let file = open(path)?;
    chunk_open_file_with(&file, chunker, sink)
}

/// [`chunk_file`] on the two-thread pipeline, whatever the size.
fn chunk_file_serial(path: &Path, chunker: &Chunker) -> Result<FileChunks, ReadError> {
    chunk_and_hash(open(path)?, chunker)
}

fn open(path: &Path) -> Result<File, ReadError> {
    File::open(path).map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Chunks and hashes several files, at most `parallel` at a time (at least
/// one). Each file in flight uses its worker thread plus, if larger than one
/// block, a fingerprinting thread: at most `2 * parallel` threads. Results
/// are in the order of `paths`. (The files are the parallelism here: a
/// large one is not split as [`chunk_file`] would.)
pub fn chunk_files<P: AsRef<Path> + Sync>(
    paths: &[P],
    chunker: &Chunker,
    parallel: usize,
) -> Vec<Result<FileChunks, ReadError>> {
    let workers = parallel.clamp(1, paths.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<FileChunks, ReadError>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        done.push((i, chunk_file_serial(path.as_ref(), chunker)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            // A worker that panicked reports nothing: its files get
            // `WorkerPanicked` below.
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let mut ordered: Vec<Result<FileChunks, ReadError>> = Vec::with_capacity(paths.len());
    let mut results = results.into_iter().peekable();
    for i in 0..paths.len() {
        match results.next_if(|(j, _)| *j == i) {
            Some((_, r)) => ordered.push(r),
            None => ordered.push(Err(ReadError::WorkerPanicked)),
        }
    }
    ordered
}
