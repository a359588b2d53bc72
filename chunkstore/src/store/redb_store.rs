//! [`RedbChunkStore`]: the on-disk store (layout and invariants in the
//! module doc of `store`).

use super::blobs::{sync_dir, BlobDir};
use super::error::{Result, StoreError};
use super::live::{read_live, stamp_matches, LiveRead};
use super::locs::{
    add_blob_loc, add_file_loc, decode_file, decode_locs, encode_file, encode_locs, has_blob,
    FileRec, Loc,
};
use super::{check_chunk_table, validate_rel_path, ChunkStore, FileStamp, GcStats, Location};
use crate::{ChunkEntry, Hash};
use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

pub(super) const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
pub(super) const FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("files");
pub(super) const PATHS: TableDefinition<&str, u64> = TableDefinition::new("paths");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
const META_NEXT_FILE: &str = "next_file_id";
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
        fs::create_dir_all(store_dir).map_err(|e| StoreError::io(store_dir, e))?;
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
    fn lookup(&self, hash: &Hash) -> Result<Vec<(Loc, Option<FileRec>)>> {
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
    fn blob_holds(&self, hash: &Hash, data: &[u8]) -> Result<bool> {
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
        for d in &dirs {
            sync_dir(d)?;
        }
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

    fn put_verified(&self, items: &[(Hash, &[u8])]) -> Result<()> {
        let mut seen = HashSet::new();
        let mut temps: Vec<(Hash, PathBuf, u64)> = Vec::new();
        let mut result = Ok(());
        for (h, data) in items {
            if !seen.insert(*h) {
                continue;
            }
            match self.blob_holds(h, data) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            match self.blobs.write_temp(h, data) {
                Ok(tmp) => temps.push((*h, tmp, data.len() as u64)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
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
    fn drop_stale(&self, hash: &Hash, stale_files: &[(u64, String)], bad_blob: bool) -> Result<()> {
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

impl ChunkStore for RedbChunkStore {
    fn put(&self, hash: Hash, data: &[u8]) -> Result<()> {
        self.put_many(&[(hash, data)])
    }

    fn put_many(&self, items: &[(Hash, &[u8])]) -> Result<()> {
        for (h, data) in items {
            let actual = Hash::of_chunk(data);
            if actual != *h {
                return Err(StoreError::HashMismatch {
                    expected: *h,
                    actual,
                });
            }
        }
        self.put_verified(items)
    }

    fn has(&self, hash: &Hash) -> Result<bool> {
        for (loc, rec) in self.lookup(hash)? {
            match (loc, rec) {
                (Loc::Blob { len }, _) => {
                    if self.blobs.len_of(hash)? == Some(len) {
                        return Ok(true);
                    }
                }
                (Loc::File { .. }, Some(rec)) => {
                    if stamp_matches(&self.root, &rec)? {
                        return Ok(true);
                    }
                }
                (Loc::File { .. }, None) => {}
            }
        }
        Ok(false)
    }

    fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        let entries = self.lookup(hash)?;
        let mut found = None;
        let mut stale_files = Vec::new();
        let mut bad_blob = false;
        let mut first_err = None;
        for (loc, rec) in &entries {
            let (Loc::File { file, offset, len }, Some(rec)) = (loc, rec) else {
                continue;
            };
            match read_live(&self.root, rec, *offset, *len, hash) {
                Ok(LiveRead::Verified(b)) => {
                    found = Some(b);
                    break;
                }
                Ok(LiveRead::Stale(why)) => {
                    tracing::warn!(chunk = %hash, path = %rec.path, why, "stale live-file location dropped");
                    stale_files.push((*file, rec.path.clone()));
                }
                Err(e) => {
                    tracing::warn!(chunk = %hash, error = %e, "live-file location unreadable");
                    first_err.get_or_insert(e);
                }
            }
        }
        if found.is_none() && entries.iter().any(|(l, _)| matches!(l, Loc::Blob { .. })) {
            match self.blobs.read(hash) {
                Ok(Some(b)) if Hash::of_chunk(&b) == *hash => found = Some(b),
                Ok(Some(_)) => {
                    tracing::warn!(chunk = %hash, "corrupt blob dropped");
                    bad_blob = true;
                }
                Ok(None) => {
                    tracing::warn!(chunk = %hash, "indexed blob is missing, entry dropped");
                    bad_blob = true;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !stale_files.is_empty() || bad_blob {
            if let Err(e) = self.drop_stale(hash, &stale_files, bad_blob) {
                if found.is_none() {
                    return Err(e);
                }
                tracing::warn!(chunk = %hash, error = %e, "could not drop stale locations");
            }
        }
        match (found, first_err) {
            (Some(b), _) => Ok(Some(b)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    fn locate(&self, hash: &Hash) -> Result<Option<Location>> {
        let entries = self.lookup(hash)?;
        for (loc, rec) in &entries {
            if let (Loc::File { offset, len, .. }, Some(rec)) = (loc, rec) {
                if stamp_matches(&self.root, rec)? {
                    return Ok(Some(Location::LiveFile {
                        rel_path: rec.path.clone(),
                        offset: *offset,
                        len: *len,
                        stamp: rec.stamp,
                    }));
                }
            }
        }
        for (loc, _) in &entries {
            if let Loc::Blob { len } = loc {
                if self.blobs.len_of(hash)? == Some(*len) {
                    return Ok(Some(Location::Blob { len: *len }));
                }
            }
        }
        Ok(None)
    }

    fn index_file(
        &self,
        rel_path: &str,
        stamp: FileStamp,
        chunks: &[(u64, ChunkEntry)],
    ) -> Result<()> {
        check_chunk_table(rel_path, &stamp, chunks)?;
        let txn = self.write_txn()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut files = txn.open_table(FILES)?;
            let mut paths = txn.open_table(PATHS)?;
            let mut table = txn.open_table(CHUNKS)?;
            let id = meta
                .get(META_NEXT_FILE)?
                .map(|g| g.value())
                .ok_or_else(|| StoreError::CorruptIndex("meta has no next_file_id".into()))?;
            meta.insert(META_NEXT_FILE, id + 1)?;
            let old = paths.get(rel_path)?.map(|g| g.value());
            if let Some(old) = old {
                files.remove(old)?;
            }
            let rec = FileRec {
                path: rel_path.to_owned(),
                stamp,
            };
            files.insert(id, encode_file(&rec).as_slice())?;
            paths.insert(rel_path, id)?;
            for (offset, ce) in chunks {
                let old = match table.get(ce.hash.as_bytes())? {
                    Some(g) => decode_locs(g.value())?,
                    None => Vec::new(),
                };
                let mut locs = old.clone();
                let new = Loc::File {
                    file: id,
                    offset: *offset,
                    len: ce.len,
                };
                add_file_loc(&mut locs, new, |f| {
                    Ok::<_, StoreError>(files.get(f)?.is_some())
                })?;
                if locs != old {
                    table.insert(ce.hash.as_bytes(), encode_locs(&locs).as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn forget_file(&self, rel_path: &str) -> Result<()> {
        validate_rel_path(rel_path)?;
        let txn = self.write_txn()?;
        {
            let mut files = txn.open_table(FILES)?;
            let mut paths = txn.open_table(PATHS)?;
            let id = paths.remove(rel_path)?.map(|g| g.value());
            if let Some(id) = id {
                files.remove(id)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats> {
        self.gc_impl(keep)
    }
}
