//! The content-addressed, deduplicated chunk store — without a second copy of
//! the synced tree.
//!
//! # Goal
//!
//! A chunk (named by `blake3(bytes)`, [`Hash::of_chunk`]) must be readable by
//! hash, but a NAS user cannot pay twice the disk: a chunk that a live file in
//! the synced directory already holds is *not* copied. The store therefore
//! keeps an index from chunk hash to where the bytes are:
//!
//! - a **live file**: `<synced root>/<rel path>`, offset, length, plus the
//!   file's [`FileStamp`] `(inode, size, mtime_ns)` when it was indexed
//!   ([`ChunkStore::index_file`]); or
//! - the store's **own copy**, for chunks no live file holds (Merkle nodes,
//!   chunks fetched but not yet placed, chunks of retained old versions)
//!   ([`ChunkStore::put`]): a **blob** file in the store's own area, or, for a
//!   chunk of at most [`INLINE_MAX`] bytes, an **inline value** in the index
//!   database itself (see "Small chunks inline"). A chunk has at most one
//!   own copy.
//!
//! # Invariants
//!
//! 1. **Every byte returned was verified.** `get` hashes what it read (live
//!    file, blob or inline value) and compares with the requested hash. On
//!    mismatch the stale location is dropped (a changed live file loses its
//!    file record, a corrupt blob or inline value is deleted), a warning is
//!    logged, and the next location is tried; if none verifies, `Ok(None)`.
//!    Never wrong bytes.
//! 2. **`put` returns only when durable**: a blob is written to a temp file,
//!    fsynced, renamed into place, its directory fsynced, and only then is
//!    the index updated in a redb transaction committed with
//!    `Durability::Immediate`; an inline value is written *in* that
//!    transaction, with its location. A `put_many` is all or nothing: its
//!    blob files are made durable first, then ONE commit records the blobs,
//!    the inline values and their locations (a batch of small chunks only is
//!    one commit and no file). `index_file`/`forget_file`/`gc` commit the
//!    same way; `index_files`/`forget_files` do the work of many
//!    `index_file`/`forget_file` calls in one such commit (one fsync for a
//!    whole batch instead of one per file, all or nothing).
//! 3. **No second copy of live files.** `index_file` records locations, it
//!    copies nothing. An own copy (blob or inline value) whose chunk a live
//!    file also holds is removed by `gc` once the live copy has been read and
//!    verified (so a chunk is never left with zero verified copies by gc
//!    unless `keep` rejected it).
//! 4. **Consistent after a crash at any point.** The index never points at a
//!    blob that was not durable first; an inline value and its location are
//!    one commit, so they exist together or not at all (nothing to recover).
//!    On open, `tmp/` is emptied, and every blob the index does not know is
//!    hashed: if it hashes to its name it is indexed (replacing an inline
//!    value of the same chunk, if any), otherwise deleted. An index entry
//!    whose blob or inline value vanished reads as absent and is pruned.
//! 5. **Paths are canonical relative paths** (`a/b/c`: no leading `/`, no
//!    `.`/`..`/empty component, no NUL); anything else is
//!    [`StoreError::InvalidPath`].
//!
//! # On-disk layout (`RedbChunkStore`)
//!
//! ```text
//! <store dir>/index.redb        redb (file format v3), tables below
//! <store dir>/blobs/ab/<hex>    one blob per chunk over INLINE_MAX bytes, named by its 64-hex hash
//! <store dir>/tmp/              temp files of puts in flight (emptied on open)
//! ```
//!
//! | table    | key              | value                                                 |
//! |----------|------------------|-------------------------------------------------------|
//! | `meta`   | `&str`           | `u64`: `format` (= 2), `next_file_id`                 |
//! | `chunks` | `[u8; 32]` hash  | concatenated `Loc`s as postcard varints (see below)   |
//! | `files`  | `u64` file id    | postcard `FileRec { path, stamp }`                    |
//! | `paths`  | `&str` rel path  | `u64` file id                                         |
//! | `inline` | `[u8; 32]` hash  | the chunk's bytes, at most [`INLINE_LIMIT`] (64 KiB)  |
//!
//! A `Loc` is encoded as postcard varints: `file_id, offset, len` for a
//! live file (file ids start at 1), `0, len` for a blob, `0, 2^63 + len` for
//! an inline value (`len` at most [`INLINE_LIMIT`], checked on decode); a
//! chunk's value is its `Loc`s back to back. A typical live-file entry is 32
//! bytes of key + ~9 bytes of value + redb's 4-byte value offset; an inline
//! location costs 11 bytes of value. An `inline` row exists iff its chunk's
//! entry has an inline `Loc`.
//!
//! **Format history.** 1: no `inline` table, no inline `Loc`. 2: both. Open
//! upgrades a format-1 index in place in one commit (it creates the `inline`
//! table and sets `format = 2`: format-1 values decode unchanged and its
//! blobs, small ones included, stay valid blobs). A format above 2 is
//! refused with [`StoreError::IndexFormatTooNew`] before anything is
//! written; the format-1 build refuses format 2 the same way, as corrupt.
//!
//! ## Index size (measured by `benches/store_index.rs`)
//!
//! - The `chunks` table's pages cost ~64-66 bytes per entry (random keys
//!   fill B-tree leaves to ~70%): 0.20% of the bytes indexed at a 32 KiB
//!   average chunk, 0.13% at 48 KiB.
//! - The redb *file* costs more on disk: copy-on-write commits leave freed
//!   pages that later commits reuse, and redb grows its file by doubling
//!   (the unwritten tail is a hole) and shrinks it only when over half of
//!   the tail is free. At 16 GiB indexed that is ~72-98 bytes per entry on
//!   disk (0.22-0.30% at 32 KiB, 0.20% at 48 KiB); at 1 GiB, where every bulk
//!   `index_file` of 2000 random keys rewrites the whole tree, 100-210.
//!   [`RedbChunkStore::compact`] returns what it can.
//! - Keys are the full 32-byte hash on purpose: a truncated key would save
//!   ~10 bytes per entry but let a crafted prefix collision make `has` lie.
//!
//! **File ids are never reused.** Re-indexing a path gives it a new id and
//! deletes the old id's record; forgetting a path deletes its record. Chunk
//! entries still naming a dead id are *dangling*: they read as absent and are
//! pruned lazily (by the next `index_file` touching that chunk, or `gc`).
//! This keeps `index_file`/`forget_file` O(chunks of this file) without a
//! second per-file list of hashes, which would double the index.
//!
//! A chunk keeps at most one blob location and up to
//! [`MAX_FILE_LOCS`] live-file locations (the most
//! recently indexed), so forgetting one of several files holding a chunk does
//! not lose track of it.
//!
//! # Small chunks inline
//!
//! A blob file costs a create, a write, a rename and a share of the batch's
//! flushes at `put`, an `open` and a read at `get`, and a 4 KiB block on
//! disk however small the chunk. On a peer receiving 100,000 to 1,000,000
//! files of 0-4 KiB that dominates, so a chunk of at most
//! [`StoreOptions::inline_max`] bytes ([`INLINE_MAX`] = 16 KiB by default)
//! is stored as its value in the `inline` table, in the commit that records
//! it (see `inline.rs` for the rules). `has`/`locate` report it as
//! [`Location::Inline`]; larger chunks keep the blob-file path unchanged.
//!
//! The threshold, measured by `benches/store_inline.rs` (`cargo bench -p
//! filesyncd-chunkstore --bench store_inline`; ext4 on this project's 2-core
//! VM, 4 runs, ratio = blob-file time / inline time, above 1 inline wins):
//!
//! | chunks (`put_many` batch)   | `put` ratio | `get` ratio | disk, blob files / inline |
//! |-----------------------------|-------------|-------------|---------------------------|
//! | 10,000 x 2 KiB (256)        | 1.7-9.7     | 1.6-2.5     | 41 / 45 MiB               |
//! | 10,000 x 2 KiB (1,024)      | 9.1-12.4    | 1.9-2.5     | 41 / 50 MiB               |
//! | 10,000 x 0-4 KiB (256)      | 8.6-10.6    | 2.0-2.1     | 41 / 36 MiB               |
//! | 40 MiB of 4 KiB (256)       | 7.4-8.6     | 0.9-1.8     | 42 / 84 MiB               |
//! | 40 MiB of 16 KiB (256)      | 7.0-10.5    | 0.7-1.5     | 41 / 82 MiB               |
//! | 40 MiB of 64 KiB (256)      | 2.9-4.3     | 0.3-1.2     | 41 / 81 MiB               |
//!
//! In absolute terms, 10,000 x 2 KiB in batches of 256: `put_many` 0.65-1.0 s
//! inline against 1.7-8.3 s as files (the file path swings with the VM's
//! disk), `get` 0.05-0.10 s against 0.12-0.16 s. Inline `put` wins at every
//! size (one commit instead of a file and its flushes per chunk); inline
//! `get` wins clearly up to 4 KiB, is even at 16 KiB (within the noise) and
//! tends to lose at 64 KiB. 16 KiB keeps the whole `put` gain for small
//! files and the tails of large ones (the chunker cuts no chunk under
//! 24 KiB except a file's last) without turning the index into a copy of
//! most chunks, as 64 KiB (the chunker's maximum) would. Disk: a value of
//! exactly 2^k bytes fills a 2^(k+1)-byte redb page (so 2x for the
//! power-of-two rows above; `compact` does not help), while a file rounds
//! up to 4 KiB: at mixed sizes (0-4 KiB) inline is the smaller. Most inline
//! values are short-lived anyway: the materializer indexes a received file
//! with [`ChunkStore::index_placed`], whose commit removes the inline copies
//! the placed file now holds (the rule of invariant 3, applied at once
//! instead of at the next `gc`), so the `inline` table holds only content
//! in flight, not a second copy of every small file received.
//!
//! # Validity checks, by cost
//!
//! - `has`/`locate`: index lookup + one `stat` (live file: stamp equal; blob:
//!   exists with the indexed length) or, for an inline value, a lookup of its
//!   row and its length (no copy). No read, so a same-stamp in-place edit
//!   is only caught by `get`.
//! - `get`: opens, compares the stamp of the open handle, reads, hashes; an
//!   inline value is copied (at most its indexed length) from the same read
//!   transaction as its location and hashed.
//! - `put` dedup: if the own copy exists, it is read and compared with the
//!   data (already hashed), so a corrupt blob or inline value is replaced,
//!   not trusted. A good blob of a small chunk (written by format 1) is kept
//!   as it is; a bad one is replaced by an inline value.
//!
//! # Concurrency
//!
//! All methods take `&self`; the store is `Send + Sync`. Index writes are
//! serialized by redb's single writer, and every blob rename or deletion
//! happens inside a write transaction, so a `get` deleting a corrupt blob
//! cannot delete the fresh copy a concurrent `put` just renamed into place
//! (inline values are written and deleted by write transactions only; `get`
//! re-checks a corrupt one under the writer lock before deleting it).
//! A `put` that races a `gc` whose `keep` rejects that same chunk may be
//! undone by it: the caller asked for both.
//!
//! # The twin
//!
//! [`MemChunkStore`] has the same semantics with the index and the own copies
//! in memory (chunks of at most [`INLINE_MAX`] bytes recorded as inline, so
//! both stores report the same [`Location`]s); its live-file locations are
//! read from the *real* filesystem under its synced root (so the same
//! conformance suite can edit files under both).

mod blobs;
mod error;
pub mod flush;
mod inline;
mod live;
mod locs;
mod mem_store;
mod path;
mod policy;
mod redb_gc;
mod redb_ops;
mod redb_put;
mod redb_store;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod model_tests;

pub use blobs::par_map;
pub use error::{Result, StoreError};
pub use inline::{INLINE_LIMIT, INLINE_MAX};
pub use locs::MAX_FILE_LOCS;
pub use mem_store::MemChunkStore;
pub use path::{validate_rel_path, MAX_REL_PATH};
pub use redb_store::{IndexStats, RecoveryStats, RedbChunkStore, StoreOptions};

use crate::{ChunkEntry, Hash};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What identifies one version of a live file cheaply: if any of these
/// changed, the file's indexed chunk locations are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    pub inode: u64,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

impl FileStamp {
    /// The stamp of a file from its metadata (as returned by
    /// `std::fs::metadata`, i.e. following symlinks, like the store does).
    pub fn from_metadata(m: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileStamp {
                inode: m.ino(),
                size: m.size(),
                mtime_ns: m
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(m.mtime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            FileStamp {
                inode: 0,
                size: m.len(),
                mtime_ns,
            }
        }
    }

    /// `stat`s `path` (following symlinks).
    pub fn of_path(path: &Path) -> std::io::Result<FileStamp> {
        std::fs::metadata(path).map(|m| FileStamp::from_metadata(&m))
    }
}

/// Where a chunk can currently be read from (a hint: the bytes are only
/// verified by [`ChunkStore::get`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A live file under the synced root; its stamp matched when located.
    LiveFile {
        rel_path: String,
        offset: u64,
        len: u32,
        stamp: FileStamp,
    },
    /// A blob in the store's own area (`RedbChunkStore::blob_path`).
    Blob { len: u64 },
    /// The store's own copy of a small chunk (at most [`INLINE_LIMIT`]
    /// bytes), kept inside the index database rather than as a file: there
    /// is no path to it, only [`ChunkStore::get`] reads it.
    Inline { len: u32 },
}

/// What one [`ChunkStore::gc`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub entries_scanned: u64,
    /// Entries left with no location, removed from the index.
    pub entries_removed: u64,
    /// Own copies deleted, blob files and inline values alike (rejected by
    /// `keep`, or redundant with a verified live copy).
    pub blobs_removed: u64,
    /// Of `blobs_removed`, those that were inline values.
    pub inline_removed: u64,
    /// Of `blobs_removed`, those deleted because a live file holds the chunk.
    pub redundant_blobs_removed: u64,
    /// Bytes of the own copies deleted.
    pub blob_bytes_freed: u64,
    /// Live-file locations pruned (file re-indexed, forgotten or changed).
    pub stale_locations_pruned: u64,
    /// Own-copy locations whose blob or inline value was missing or had the
    /// wrong length.
    pub missing_blobs_pruned: u64,
    /// File records dropped because the file changed under the index.
    pub files_dropped: u64,
}

/// One live file's chunk table, for [`ChunkStore::index_files`].
#[derive(Clone, Copy, Debug)]
pub struct FileIndex<'a> {
    pub rel_path: &'a str,
    pub stamp: FileStamp,
    pub chunks: &'a [(u64, ChunkEntry)],
}

/// A live file that moved or got a new stamp with the same content, for
/// [`ChunkStore::move_files`].
#[derive(Clone, Copy, Debug)]
pub struct FileMove<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The file's stamp at `to`.
    pub stamp: FileStamp,
}

/// The store's contract. Both [`RedbChunkStore`] and [`MemChunkStore`]
/// implement it and pass the same conformance suite.
pub trait ChunkStore: Send + Sync {
    /// Stores the store's own copy of a chunk: inline in the index if it is
    /// at most [`INLINE_MAX`] bytes (by default), else a blob. Verifies
    /// `blake3(data) == hash` first ([`StoreError::HashMismatch`]
    /// otherwise). Durable when it returns. A no-op if a valid own copy is
    /// already there. (A live copy does not count: live files change without
    /// notice; `gc` removes the own copy once the live copy is verified.)
    fn put(&self, hash: Hash, data: &[u8]) -> Result<()>;

    /// Bytes free for an unprivileged writer on the file system that holds
    /// the store (`None`: unknown, e.g. not a file system). A pull checks it
    /// before it fetches, so that a full disk is a clear error before any
    /// byte moves, not a failed write halfway.
    fn free_bytes(&self) -> Option<u64> {
        None
    }

    /// Like `put` for many chunks, with one index commit (which also holds
    /// the inline values) and one fsync per blob directory. All hashes are
    /// verified before anything is written; all or nothing.
    fn put_many(&self, items: &[(Hash, &[u8])]) -> Result<()> {
        for (h, d) in items {
            self.put(*h, d)?;
        }
        Ok(())
    }

    /// Whether some location of the chunk looks valid (index + `stat`; an
    /// own inline copy by its location alone: its value is checked by `get`
    /// and `locate`, which drop a bad one).
    fn has(&self, hash: &Hash) -> Result<bool>;

    /// The chunk's bytes, verified; `None` if absent or no location verifies
    /// (stale locations found on the way are dropped).
    fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>>;

    /// The chunk's bytes for a peer, which verifies every byte itself: as
    /// [`ChunkStore::get`], except that a live file whose open handle still
    /// has the indexed stamp is read without hashing (it was hashed when it
    /// was indexed), through a handle kept open between reads. Serving a
    /// file then costs a `pread` per chunk, not an open and a hash.
    fn get_to_serve(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.get(hash)
    }

    /// `get` for many chunks, in order.
    fn get_many(&self, hashes: &[Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        hashes.iter().map(|h| self.get(h)).collect()
    }

    /// A currently plausible location (live files preferred), unverified.
    fn locate(&self, hash: &Hash) -> Result<Option<Location>>;

    /// The stamp `rel_path` was last indexed with ([`ChunkStore::index_file`]),
    /// if it is indexed: a caller compares it with the file's `stat` to know
    /// the file is still what was indexed (a staged version, `node::engine::stage`).
    fn file_stamp(&self, rel_path: &str) -> Result<Option<FileStamp>>;

    /// Records that the live file `rel_path`, whose stamp is `stamp`, holds
    /// `chunks` (`(offset, entry)` pairs). Replaces all of that path's
    /// previous locations. Every chunk must end within `stamp.size`.
    fn index_file(
        &self,
        rel_path: &str,
        stamp: FileStamp,
        chunks: &[(u64, ChunkEntry)],
    ) -> Result<()>;

    /// Forgets everything `index_file` recorded for `rel_path` (no-op if
    /// unknown).
    fn forget_file(&self, rel_path: &str) -> Result<()>;

    /// `index_file` for many files in ONE durable commit (all or nothing: on
    /// error nothing of the batch is recorded). A path listed twice: the last
    /// one wins. Every entry is checked (path, chunk table) before anything
    /// is written.
    ///
    /// The provided default loops over `index_file` (one commit per file, not
    /// atomic); both stores of this crate override it.
    fn index_files(&self, files: &[FileIndex<'_>]) -> Result<()> {
        for f in files {
            self.index_file(f.rel_path, f.stamp, f.chunks)?;
        }
        Ok(())
    }

    /// `index_files` for files the caller has just WRITTEN from verified
    /// chunks and flushed (the materializer's placed files): in the same
    /// commit, the own inline copy of each of their chunks is removed, since
    /// the file now holds it, verified by construction. This is the rule of
    /// `gc` (an own copy a verified live file duplicates goes), applied at
    /// once: a peer receiving a million small files otherwise carries every
    /// one of them twice, once as an inline value, until the next sweep, and
    /// every insert and read of the `inline` table walks a tree that size.
    /// As `gc` does, a copy goes only if the file still has the stamp it is
    /// indexed with (one `stat` per file): a file changed since it was placed
    /// keeps its chunks' copies. Blob copies are left to `gc` (removing a
    /// file cannot be part of the commit). The provided default is `index_files` (copies kept until
    /// `gc`); both stores of this crate override it.
    fn index_placed(&self, files: &[FileIndex<'_>]) -> Result<()> {
        self.index_files(files)
    }

    /// Records, in ONE durable commit, that live files moved (a rename) or
    /// got a new stamp (chmod, utime) without a change of content: each
    /// move takes the record of `from`, with every chunk location it holds,
    /// to `to` under `stamp`, replacing what `to` had. The cost is per
    /// file, not per chunk. Returns, per move, whether `from` had a record:
    /// for a `false` one nothing was done and the caller indexes the file
    /// in full. Every path is checked before anything is written.
    ///
    /// The provided default knows no record (all `false`: the caller's full
    /// index is the fallback); both stores of this crate override it.
    fn move_files(&self, moves: &[FileMove<'_>]) -> Result<Vec<bool>> {
        for m in moves {
            validate_rel_path(m.from)?;
            validate_rel_path(m.to)?;
        }
        Ok(vec![false; moves.len()])
    }

    /// `forget_file` for many paths in ONE durable commit (all or nothing;
    /// every path is checked before anything is written).
    ///
    /// The provided default loops over `forget_file`; both stores of this
    /// crate override it.
    fn forget_files(&self, rel_paths: &[&str]) -> Result<()> {
        for p in rel_paths {
            self.forget_file(p)?;
        }
        Ok(())
    }

    /// Prunes stale locations and deletes own copies (blobs and inline
    /// values) no retained version needs:
    /// see `policy.rs` for the exact rule. Never deletes the last verified
    /// copy of a chunk that `keep` accepts.
    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats>;
}

/// Checks a chunk table against its file (shared by both stores).
pub(crate) fn check_chunk_table(
    rel_path: &str,
    stamp: &FileStamp,
    chunks: &[(u64, ChunkEntry)],
) -> Result<()> {
    validate_rel_path(rel_path)?;
    for (offset, ce) in chunks {
        let end = offset.checked_add(u64::from(ce.len));
        if end.is_none_or(|end| end > stamp.size) {
            return Err(StoreError::InvalidChunkTable {
                path: rel_path.to_owned(),
                reason: format!(
                    "chunk {} at offset {offset}, {} bytes, ends past the file size {}",
                    ce.hash, ce.len, stamp.size
                ),
            });
        }
    }
    Ok(())
}

/// Checks every entry of an `index_files` batch (shared by both stores), so
/// a bad entry fails the batch before anything is written.
pub(crate) fn check_batch(files: &[FileIndex<'_>]) -> Result<()> {
    files
        .iter()
        .try_for_each(|f| check_chunk_table(f.rel_path, &f.stamp, f.chunks))
}
