//! [`RedbChunkStore`]: the on-disk store (layout and invariants in the
//! module doc of `store`).

use super::blobs::{sync_dir, BlobDir};
use super::error::{Result, StoreError};
use super::locs::{add_blob_loc, decode_file, decode_locs, encode_locs, has_blob, FileRec, Loc};
use crate::Hash;
use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

pub(super) const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
pub(super) const FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("files");
pub(super) const PATHS: TableDefinition<&str, u64> = TableDefinition::new("paths");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
pub(super) const META_NEXT_FILE: &str = "next_file_id";
/// Version of the table layout and value encodings described in the module doc.
const FORMAT: u64 = 1;

/// Tuning knobs of [`RedbChunkStore::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb page cache, bytes (redb's own default is 1 GiB; a NAS has less).
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
        }
    }
}

/// What opening the store had to clean up after a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Files found in `tmp/` and deleted.
    pub temp_files_removed: u64,
    /// Blobs on disk the index did not know, that hashed to their name and
    /// were indexed.
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
}

/// The chunk store on disk: a redb index over live files and own blobs.
pub struct RedbChunkStore {
    pub(super) db: Database,
    pub(super) root: PathBuf,
    pub(super) blobs: BlobDir,
    index_path: PathBuf,
    recovery: RecoveryStats,
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
            index_path,
            recovery: RecoveryStats::default(),
        };
        store.init_tables()?;
        store.recovery = store.recover()?;
        Ok(store)
    }

    /// The redb file (its size is the index's disk cost).
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// Where the blob of `hash` lives (whether or not it exists).
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

    fn init_tables(&self) -> Result<()> {
        let txn = self.write_txn()?;
        {
            txn.open_table(CHUNKS)?;
            txn.open_table(FILES)?;
            txn.open_table(PATHS)?;
            let mut meta = txn.open_table(META)?;
            let format = meta.get(META_FORMAT)?.map(|g| g.value());
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT)?;
                    meta.insert(META_NEXT_FILE, 1)?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::CorruptIndex(format!(
                        "index format {other}, this build reads format {FORMAT}"
                    )))
                }
            }
        }
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
                for (h, len) in &good {
                    let mut locs = match chunks.get(h.as_bytes())? {
                        Some(g) => decode_locs(g.value())?,
                        None => Vec::new(),
                    };
                    add_blob_loc(&mut locs, *len);
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
    /// record still exists (dangling ones get `None`).
    pub(super) fn lookup(&self, hash: &Hash) -> Result<Vec<(Loc, Option<FileRec>)>> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let locs = match chunks.get(hash.as_bytes())? {
            Some(g) => decode_locs(g.value())?,
            None => return Ok(Vec::new()),
        };
        let files = txn.open_table(FILES)?;
        let mut out = Vec::with_capacity(locs.len());
        for loc in locs {
            let rec = match loc {
                Loc::File { file, .. } => match files.get(file)? {
                    Some(g) => Some(decode_file(g.value())?),
                    None => None,
                },
                Loc::Blob { .. } => None,
            };
            out.push((loc, rec));
        }
        Ok(out)
    }

    /// Whether the index has a blob for `hash` whose bytes equal `data`.
    pub(super) fn blob_holds(&self, hash: &Hash, data: &[u8]) -> Result<bool> {
        let indexed = self
            .lookup(hash)?
            .iter()
            .any(|(l, _)| matches!(l, Loc::Blob { len } if *len == data.len() as u64));
        Ok(indexed && self.blobs.read(hash)?.as_deref() == Some(data))
    }

    /// Renames synced temp files into place, fsyncs their directories, then
    /// indexes them, all under the index's writer lock (so `get`'s removal
    /// of a corrupt blob cannot race with a put of the same chunk).
    fn publish_and_index(&self, items: &[(Hash, PathBuf, u64)]) -> Result<()> {
        let txn = self.write_txn()?;
        let mut dirs = BTreeSet::new();
        for (h, tmp, _) in items {
            dirs.insert(self.blobs.publish(tmp, h)?);
        }
        let dirs: Vec<PathBuf> = dirs.into_iter().collect();
        self.blobs.sync_dirs(&dirs)?;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            for (h, _, len) in items {
                let mut locs = match chunks.get(h.as_bytes())? {
                    Some(g) => decode_locs(g.value())?,
                    None => Vec::new(),
                };
                add_blob_loc(&mut locs, *len);
                chunks.insert(h.as_bytes(), encode_locs(&locs).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub(super) fn put_verified(&self, items: &[(Hash, &[u8])]) -> Result<()> {
        let mut seen = HashSet::new();
        let mut todo = Vec::with_capacity(items.len());
        for (h, data) in items {
            if seen.insert(*h) && !self.blob_holds(h, data)? {
                todo.push((*h, *data));
            }
        }
        let written: Vec<Result<(Hash, PathBuf, u64)>> = self
            .blobs
            .write_temps(&todo)
            .into_iter()
            .zip(&todo)
            .map(|(r, (h, data))| r.map(|tmp| (*h, tmp, data.len() as u64)))
            .collect();
        let mut temps = Vec::with_capacity(written.len());
        let mut result = Ok(());
        for w in written {
            match w {
                Ok(t) => temps.push(t),
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() && !temps.is_empty() {
            result = self.publish_and_index(&temps);
        }
        if result.is_err() {
            for (_, tmp, _) in &temps {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }

    /// Drops what `get` found stale: the records of changed files, and a
    /// corrupt or missing blob (re-checked under the writer lock first).
    pub(super) fn drop_stale(
        &self,
        hash: &Hash,
        stale_files: &[(u64, String)],
        bad_blob: bool,
    ) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut files = txn.open_table(FILES)?;
            let mut paths = txn.open_table(PATHS)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            for (id, path) in stale_files {
                remove_file_record(&mut files, &mut paths, *id, path)?;
            }
            let mut drop_blob = false;
            if bad_blob {
                let still_bad = match self.blobs.read(hash)? {
                    Some(b) => Hash::of_chunk(&b) != *hash,
                    None => true,
                };
                if still_bad {
                    self.blobs.remove(hash)?;
                    drop_blob = true;
                }
            }
            let old = match chunks.get(hash.as_bytes())? {
                Some(g) => decode_locs(g.value())?,
                None => Vec::new(),
            };
            let mut locs = Vec::with_capacity(old.len());
            for loc in &old {
                let keep = match loc {
                    Loc::File { file, .. } => files.get(*file)?.is_some(),
                    Loc::Blob { .. } => !drop_blob,
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
