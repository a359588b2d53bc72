//! [`RedbChunkStore`]: the on-disk store (layout and invariants in the
//! module doc of `store`).

use super::blobs::{sync_dir, BlobDir};
use super::error::{Result, StoreError};
use super::inline::{read_inline, InlineValue, INLINE, INLINE_LIMIT, INLINE_MAX};
use super::locs::{add_own_loc, decode_file, decode_locs, encode_locs, has_blob, FileRec, Loc};
use crate::Hash;
use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

pub(super) const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
pub(super) const FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("files");
pub(super) const PATHS: TableDefinition<&str, u64> = TableDefinition::new("paths");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
pub(super) const META_NEXT_FILE: &str = "next_file_id";
/// Version of the table layout and value encodings described in the module
/// doc. 1: no `inline` table; 2: the `inline` table and inline locations.
const FORMAT: u64 = 2;

/// Tuning knobs of [`RedbChunkStore::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb page cache, bytes (redb's own default is 1 GiB; a NAS has less).
    pub cache_bytes: usize,
    /// Largest chunk `put` stores inline in the index rather than as a blob
    /// file, bytes; at most [`INLINE_LIMIT`]. `None` stores every chunk as
    /// a blob file (benchmarks). Only decides where new puts go: whatever
    /// is stored stays readable under any value.
    pub inline_max: Option<usize>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 32 << 20,
            inline_max: Some(INLINE_MAX),
        }
    }
}

/// What opening the store had to clean up after a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Files found in `tmp/` and deleted.
    pub temp_files_removed: u64,
    /// Blobs on disk the index did not know, that hashed to their name and
    /// were indexed (replacing an inline copy of the same chunk, if any:
    /// one own copy per chunk).
    pub orphan_blobs_indexed: u64,
    /// Blobs on disk the index did not know, that did not hash to their name
    /// and were deleted.
    pub bad_blobs_removed: u64,
}

/// Where the index's bytes go, from redb's own accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Chunk entries (including dangling ones not yet pruned by `gc`).
    pub entries: u64,
    /// Live files with a record.
    pub files: u64,
    /// Apparent size of the redb file.
    pub file_bytes: u64,
    /// Disk space the redb file really occupies (`st_blocks * 512`; redb
    /// grows its file with `set_len`, so the unwritten tail is a hole).
    /// Equals `file_bytes` on non-Unix systems.
    pub disk_bytes: u64,
    /// Bytes of all pages redb has allocated (every table and its own
    /// metadata). The file is larger: redb grows it by doubling, shrinks it
    /// only when more than half of its tail is free, and pages freed by the
    /// last commits are reused only by later ones.
    pub allocated_bytes: u64,
    /// Bytes of the `chunks` table's pages (keys, values, page headers and
    /// free space inside its pages).
    pub chunk_table_bytes: u64,
    /// Chunks stored inline.
    pub inline_values: u64,
    /// Bytes of the `inline` table's pages (as `chunk_table_bytes`).
    pub inline_table_bytes: u64,
}

/// The chunk store on disk: a redb index over live files and own blobs.
pub struct RedbChunkStore {
    pub(super) db: Database,
    pub(super) root: PathBuf,
    pub(super) blobs: BlobDir,
    /// Chunks up to this length are put inline (`None`: none are).
    pub(super) inline_max: Option<usize>,
    index_path: PathBuf,
    recovery: RecoveryStats,
    /// Live files kept open for [`ChunkStore::get_to_serve`].
    pub(super) open: super::live::OpenFiles,
}

impl std::fmt::Debug for RedbChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbChunkStore")
            .field("index", &self.index_path)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl RedbChunkStore {
    /// Opens (creating if needed) the store in `store_dir` for the synced
    /// tree at `synced_root`, with default options. Recovers from a crash
    /// (see [`RecoveryStats`]).
    pub fn open(store_dir: impl AsRef<Path>, synced_root: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(store_dir, synced_root, StoreOptions::default())
    }

    pub fn open_with(
        store_dir: impl AsRef<Path>,
        synced_root: impl AsRef<Path>,
        opts: StoreOptions,
    ) -> Result<Self> {
        let store_dir = store_dir.as_ref();
        if let Some(max) = opts.inline_max.filter(|m| *m > INLINE_LIMIT) {
            return Err(StoreError::InvalidOption {
                name: "inline_max",
                reason: format!("{max} bytes is over the {INLINE_LIMIT}-byte limit"),
            });
        }
        if !store_dir.is_dir() {
            fs::create_dir_all(store_dir).map_err(|e| StoreError::io(store_dir, e))?;
            if let Some(parent) = store_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let blobs = BlobDir::open(store_dir)?;
        let index_path = store_dir.join("index.redb");
        let db = redb::Builder::new()
            .set_cache_size(opts.cache_bytes)
            .create_with_file_format_v3(true)
            .create(&index_path)?;
        sync_dir(store_dir)?;
        let mut store = RedbChunkStore {
            db,
            root: synced_root.as_ref().to_path_buf(),
            blobs,
            inline_max: opts.inline_max,
            index_path,
            recovery: RecoveryStats::default(),
            open: Default::default(),
        };
        store.init_tables()?;
        store.recovery = store.recover()?;
        Ok(store)
    }

    /// The redb file (its size is the index's disk cost).
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// Where the blob of `hash` lives (whether or not it exists; a chunk
    /// stored inline has none, see [`super::Location::Inline`]).
    pub fn blob_path(&self, hash: &Hash) -> PathBuf {
        self.blobs.path(hash)
    }

    /// What opening had to clean up.
    pub fn recovery(&self) -> RecoveryStats {
        self.recovery
    }

    /// Number of chunk entries in the index (including dangling ones not yet
    /// pruned by `gc`).
    pub fn entry_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CHUNKS)?.len()?)
    }

    /// Sizes of the index (see [`IndexStats`]).
    pub fn index_stats(&self) -> Result<IndexStats> {
        let txn = self.db.begin_write()?;
        let db_stats = txn.stats()?;
        let (entries, chunk_table_bytes) = {
            let chunks = txn.open_table(CHUNKS)?;
            let st = chunks.stats()?;
            (
                chunks.len()?,
                st.stored_bytes() + st.metadata_bytes() + st.fragmented_bytes(),
            )
        };
        let files = txn.open_table(FILES)?.len()?;
        let (inline_values, inline_table_bytes) = {
            let inline = txn.open_table(INLINE)?;
            let st = inline.stats()?;
            (
                inline.len()?,
                st.stored_bytes() + st.metadata_bytes() + st.fragmented_bytes(),
            )
        };
        txn.abort()?;
        let meta =
            fs::metadata(&self.index_path).map_err(|e| StoreError::io(&self.index_path, e))?;
        #[cfg(unix)]
        let disk_bytes = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        #[cfg(not(unix))]
        let disk_bytes = meta.len();
        Ok(IndexStats {
            entries,
            files,
            file_bytes: meta.len(),
            disk_bytes,
            allocated_bytes: db_stats.allocated_pages() * db_stats.page_size() as u64,
            chunk_table_bytes,
            inline_values,
            inline_table_bytes,
        })
    }

    /// Rewrites the redb file to reclaim free pages (e.g. after a large gc).
    /// Returns whether anything was compacted.
    pub fn compact(&mut self) -> Result<bool> {
        Ok(self.db.compact()?)
    }

    pub(super) fn write_txn(&self) -> Result<WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        Ok(txn)
    }

    /// Creates the tables of a new index, or checks the format of an
    /// existing one and upgrades it: format 1 lacks only the `inline` table
    /// (its values decode unchanged, its blobs stay blobs). A newer format
    /// is refused before anything is written.
    fn init_tables(&self) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut meta = txn.open_table(META)?;
            let format = meta.get(META_FORMAT)?.map(|g| g.value());
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT)?;
                    meta.insert(META_NEXT_FILE, 1)?;
                }
                Some(FORMAT) => {}
                Some(1) => {
                    meta.insert(META_FORMAT, FORMAT)?;
                    tracing::info!(from = 1, to = FORMAT, index = %self.index_path.display(), "chunk index format upgraded");
                }
                Some(found) if found > FORMAT => {
                    return Err(StoreError::IndexFormatTooNew {
                        found,
                        supported: FORMAT,
                    })
                }
                Some(other) => {
                    return Err(StoreError::CorruptIndex(format!(
                        "index format {other}, this build reads formats 1 to {FORMAT}"
                    )))
                }
            }
            txn.open_table(CHUNKS)?;
            txn.open_table(FILES)?;
            txn.open_table(PATHS)?;
            txn.open_table(INLINE)?;
        }
        // Dropped uncommitted on a refused format: the file is not touched.
        txn.commit()?;
        Ok(())
    }

    /// Crash recovery (module doc, invariant 4).
    fn recover(&self) -> Result<RecoveryStats> {
        let mut stats = RecoveryStats {
            temp_files_removed: self.blobs.clean_tmp()?,
            ..RecoveryStats::default()
        };
        let on_disk = self.blobs.scan()?;
        let mut orphans = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let chunks = txn.open_table(CHUNKS)?;
            for h in on_disk {
                let indexed = match chunks.get(h.as_bytes())? {
                    Some(g) => has_blob(&decode_locs(g.value())?),
                    None => false,
                };
                if !indexed {
                    orphans.push(h);
                }
            }
        }
        let mut good = Vec::new();
        for h in orphans {
            match self.blobs.read(&h)? {
                Some(bytes) if Hash::of_chunk(&bytes) == h => good.push((h, bytes.len() as u64)),
                Some(_) => {
                    tracing::warn!(chunk = %h, "un-indexed blob does not hash to its name, deleted");
                    self.blobs.remove(&h)?;
                    stats.bad_blobs_removed += 1;
                }
                None => {}
            }
        }
        if !good.is_empty() {
            // The rename may not have been made durable before the crash.
            let dirs: BTreeSet<PathBuf> = good
                .iter()
                .filter_map(|(h, _)| self.blobs.path(h).parent().map(Path::to_path_buf))
                .collect();
            for d in &dirs {
                sync_dir(d)?;
            }
            let txn = self.write_txn()?;
            {
                let mut chunks = txn.open_table(CHUNKS)?;
                let mut inline = txn.open_table(INLINE)?;
                for (h, len) in &good {
                    let mut locs = match chunks.get(h.as_bytes())? {
                        Some(g) => decode_locs(g.value())?,
                        None => Vec::new(),
                    };
                    // The blob was just verified; an inline copy of the same
                    // chunk (a crash after a put at another threshold) goes.
                    if locs.iter().any(|l| matches!(l, Loc::Inline { .. })) {
                        inline.remove(h.as_bytes())?;
                    }
                    add_own_loc(&mut locs, Loc::Blob { len: *len });
                    chunks.insert(h.as_bytes(), encode_locs(&locs).as_slice())?;
                }
            }
            txn.commit()?;
            stats.orphan_blobs_indexed = good.len() as u64;
        }
        if stats != RecoveryStats::default() {
            tracing::info!(?stats, "chunk store recovered after an unclean stop");
        }
        Ok(stats)
    }

    /// The chunk's locations, each live-file one with its record if the
    /// record still exists (dangling ones get `None`), and its inline value
    /// if it has one (read as `inline` says), all from one snapshot.
    pub(super) fn lookup(&self, hash: &Hash, inline: InlineRead) -> Result<Lookup> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let locs = match chunks.get(hash.as_bytes())? {
            Some(g) => decode_locs(g.value())?,
            None => return Ok(Lookup::default()),
        };
        let files = txn.open_table(FILES)?;
        let mut out = Lookup {
            entries: Vec::with_capacity(locs.len()),
            inline: None,
        };
        for loc in locs {
            let rec = match loc {
                Loc::File { file, .. } => match files.get(file)? {
                    Some(g) => Some(decode_file(g.value())?),
                    None => None,
                },
                Loc::Blob { .. } => None,
                Loc::Inline { len } => {
                    if inline != InlineRead::Skip {
                        let table = txn.open_table(INLINE)?;
                        let copy = inline == InlineRead::Copy;
                        out.inline = Some(read_inline(&table, hash, len, copy)?);
                    }
                    None
                }
            };
            out.entries.push((loc, rec));
        }
        Ok(out)
    }

    /// Drops what `get` found stale: the records of changed files, and a
    /// corrupt or missing own copy of kind `bad_own` (re-checked under the
    /// writer lock first: a concurrent put may have repaired it).
    pub(super) fn drop_stale(
        &self,
        hash: &Hash,
        stale_files: &[(u64, String)],
        bad_own: Option<OwnKind>,
    ) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut files = txn.open_table(FILES)?;
            let mut paths = txn.open_table(PATHS)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut inline = txn.open_table(INLINE)?;
            for (id, path) in stale_files {
                remove_file_record(&mut files, &mut paths, *id, path)?;
            }
            let old = match chunks.get(hash.as_bytes())? {
                Some(g) => decode_locs(g.value())?,
                None => Vec::new(),
            };
            let mut drop_own = false;
            match bad_own {
                Some(OwnKind::Blob) => {
                    let still_bad = match self.blobs.read(hash)? {
                        Some(b) => Hash::of_chunk(&b) != *hash,
                        None => true,
                    };
                    if still_bad {
                        self.blobs.remove(hash)?;
                        drop_own = true;
                    }
                }
                Some(OwnKind::Inline) => {
                    if let Some(Loc::Inline { len }) = old.iter().copied().find(super::locs::is_own)
                    {
                        if !read_inline(&inline, hash, len, true)?.verifies(hash) {
                            inline.remove(hash.as_bytes())?;
                            drop_own = true;
                        }
                    }
                }
                None => {}
            }
            let mut locs = Vec::with_capacity(old.len());
            for loc in &old {
                let keep = match (loc, bad_own) {
                    (Loc::File { file, .. }, _) => files.get(*file)?.is_some(),
                    (Loc::Blob { .. }, Some(OwnKind::Blob)) => !drop_own,
                    (Loc::Inline { .. }, Some(OwnKind::Inline)) => !drop_own,
                    (Loc::Blob { .. } | Loc::Inline { .. }, _) => true,
                };
                if keep {
                    locs.push(*loc);
                }
            }
            if locs.is_empty() {
                chunks.remove(hash.as_bytes())?;
            } else if locs != old {
                chunks.insert(hash.as_bytes(), encode_locs(&locs).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// How [`RedbChunkStore::lookup`] reads a chunk's inline value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum InlineRead {
    /// Not at all: the location alone says it exists (an inline value
    /// exists iff its chunk has an inline location, see `inline.rs`).
    Skip,
    /// Its presence and length, not its bytes.
    Check,
    /// Its bytes.
    Copy,
}

/// What [`RedbChunkStore::lookup`] found for a chunk.
#[derive(Debug, Default)]
pub(super) struct Lookup {
    /// Every location, live-file ones with their record if it still exists.
    pub entries: Vec<(Loc, Option<FileRec>)>,
    /// The inline row, if the chunk has an inline location.
    pub inline: Option<InlineValue>,
}

/// The two kinds of own copy a chunk can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OwnKind {
    Blob,
    Inline,
}

/// Removes file record `id` and, if `path` still maps to it, the path entry.
pub(super) fn remove_file_record(
    files: &mut redb::Table<u64, &[u8]>,
    paths: &mut redb::Table<&str, u64>,
    id: u64,
    path: &str,
) -> Result<()> {
    files.remove(id)?;
    let current = paths.get(path)?.map(|g| g.value());
    if current == Some(id) {
        paths.remove(path)?;
    }
    Ok(())
}
