//! [`MemChunkStore`]: the in-memory twin of [`super::RedbChunkStore`].
//!
//! Same contract and same rules (the gc rule is literally shared, see
//! `policy.rs`); the index and the own copies live in `Mutex`ed maps,
//! nothing is durable. Chunks of at most [`INLINE_MAX`] bytes are recorded
//! as inline copies and larger ones as blobs, like the default
//! [`super::RedbChunkStore`], so both report the same [`Location`]s (the
//! bytes sit in the same map either way). Live-file locations are read
//! from the **real filesystem** under the synced root given to
//! [`MemChunkStore::new`], with the same stamp and hash checks, so tests of
//! higher layers can edit real files under it.

use super::error::{Result, StoreError};
use super::inline::INLINE_MAX;
use super::live::{placed_unchanged, read_live, stamp_matches, LiveRead};
use super::locs::{add_file_loc, add_own_loc, is_own, own_loc, take_inline, FileRec, Loc};
use super::policy::{gc_entry, GcEnv};
use super::{
    check_batch, validate_rel_path, ChunkStore, FileIndex, FileMove, FileStamp, GcStats, Location,
};
use crate::{ChunkEntry, Hash};
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct MemState {
    chunks: HashMap<Hash, Vec<Loc>>,
    files: HashMap<u64, FileRec>,
    paths: HashMap<String, u64>,
    next_file: u64,
    blobs: HashMap<Hash, Vec<u8>>,
    /// What [`ChunkStore::free_bytes`] answers (tests set it).
    free_bytes: Option<u64>,
}

impl MemState {
    /// Records one live file (its table already checked); cannot fail, so a
    /// checked batch is applied whole.
    fn index(&mut self, f: &FileIndex<'_>) {
        let id = self.next_file;
        self.next_file += 1;
        if let Some(old) = self.paths.get(f.rel_path).copied() {
            self.files.remove(&old);
        }
        self.files.insert(
            id,
            FileRec {
                path: f.rel_path.to_owned(),
                stamp: f.stamp,
            },
        );
        self.paths.insert(f.rel_path.to_owned(), id);
        for (offset, ce) in f.chunks {
            let locs = self.chunks.entry(ce.hash).or_default();
            let new = Loc::File {
                file: id,
                offset: *offset,
                len: ce.len,
            };
            let files = &self.files;
            let added = add_file_loc(locs, new, |f| Ok::<_, Infallible>(files.contains_key(&f)));
            if let Err(never) = added {
                match never {}
            }
        }
    }

    fn remove_file_record(&mut self, id: u64) {
        if let Some(rec) = self.files.remove(&id) {
            if self.paths.get(&rec.path) == Some(&id) {
                self.paths.remove(&rec.path);
            }
        }
    }
}

/// The in-memory chunk store (see the module doc).
pub struct MemChunkStore {
    root: PathBuf,
    state: Mutex<MemState>,
}

impl std::fmt::Debug for MemChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemChunkStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl MemChunkStore {
    /// An empty store whose live files are under `synced_root`.
    pub fn new(synced_root: impl AsRef<Path>) -> Self {
        MemChunkStore {
            root: synced_root.as_ref().to_path_buf(),
            state: Mutex::new(MemState {
                next_file: 1,
                ..MemState::default()
            }),
        }
    }

    /// Sets what [`ChunkStore::free_bytes`] answers (default `None`).
    pub fn set_free_bytes(&self, free: Option<u64>) {
        self.lock().free_bytes = free;
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic elsewhere cannot leave the maps half-updated in a way that
        // breaks the rules: every method mutates after its checks.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put_verified(&self, hash: Hash, data: &[u8]) {
        let own = if data.len() <= INLINE_MAX {
            // (INLINE_MAX < 4 GiB: the cast is exact.)
            Loc::Inline {
                len: data.len() as u32,
            }
        } else {
            Loc::Blob {
                len: data.len() as u64,
            }
        };
        let mut st = self.lock();
        let st = &mut *st;
        let locs = st.chunks.entry(hash).or_default();
        if st.blobs.get(&hash).map(Vec::as_slice) == Some(data) && own_loc(locs) == Some(own) {
            return;
        }
        st.blobs.insert(hash, data.to_vec());
        add_own_loc(locs, own);
    }

    /// Flips one byte of the chunk's own copy, blob or inline (tests:
    /// simulated bit rot).
    #[cfg(test)]
    pub(crate) fn corrupt_blob(&self, hash: &Hash) -> bool {
        match self.lock().blobs.get_mut(hash) {
            // Bit rot does not heal: a blob already corrupt stays as it is
            // (flipping the byte again would restore it).
            Some(b) if !b.is_empty() && Hash::of_chunk(b) != *hash => true,
            Some(b) if !b.is_empty() => {
                b[0] ^= 0x55;
                true
            }
            Some(_) | None => false,
        }
    }
}

struct MemGcEnv<'a> {
    root: &'a Path,
    files: &'a HashMap<u64, FileRec>,
    blobs: &'a mut HashMap<Hash, Vec<u8>>,
    cache: HashMap<u64, Option<FileRec>>,
    dropped: Vec<u64>,
}

impl GcEnv for MemGcEnv<'_> {
    fn current_file(&mut self, id: u64) -> Result<Option<FileRec>> {
        if let Some(s) = self.cache.get(&id) {
            return Ok(s.clone());
        }
        let state = match self.files.get(&id) {
            Some(rec) if stamp_matches(self.root, rec)? => Some(rec.clone()),
            Some(_) => {
                self.dropped.push(id);
                None
            }
            None => None,
        };
        self.cache.insert(id, state.clone());
        Ok(state)
    }

    fn live_copy_ok(
        &mut self,
        id: u64,
        rec: &FileRec,
        off: u64,
        len: u32,
        h: &Hash,
    ) -> Result<bool> {
        match read_live(self.root, rec, off, len, h) {
            Ok(LiveRead::Verified(_)) => Ok(true),
            Ok(LiveRead::Stale(_)) => {
                self.cache.insert(id, None);
                if !self.dropped.contains(&id) {
                    self.dropped.push(id);
                }
                Ok(false)
            }
            Err(_) => Ok(false),
        }
    }

    fn own_len(&mut self, hash: &Hash, _own: &Loc) -> Result<Option<u64>> {
        Ok(self.blobs.get(hash).map(|b| b.len() as u64))
    }

    fn remove_own(&mut self, hash: &Hash, _own: &Loc) -> Result<u64> {
        Ok(self.blobs.remove(hash).map_or(0, |b| b.len() as u64))
    }
}

impl ChunkStore for MemChunkStore {
    fn put(&self, hash: Hash, data: &[u8]) -> Result<()> {
        self.put_many(&[(hash, data)])
    }

    fn free_bytes(&self) -> Option<u64> {
        self.lock().free_bytes
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
        for (h, data) in items {
            self.put_verified(*h, data);
        }
        Ok(())
    }

    fn has(&self, hash: &Hash) -> Result<bool> {
        let st = self.lock();
        for loc in st.chunks.get(hash).into_iter().flatten() {
            match *loc {
                Loc::Blob { len } => {
                    if st.blobs.get(hash).map(|b| b.len() as u64) == Some(len) {
                        return Ok(true);
                    }
                }
                Loc::Inline { len } => {
                    if st.blobs.get(hash).map(|b| b.len() as u64) == Some(u64::from(len)) {
                        return Ok(true);
                    }
                }
                Loc::File { file, .. } => {
                    if let Some(rec) = st.files.get(&file) {
                        if stamp_matches(&self.root, rec)? {
                            return Ok(true);
                        }
                    }
                }
            }
        }
        Ok(false)
    }

    fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        let mut st = self.lock();
        let locs = st.chunks.get(hash).cloned().unwrap_or_default();
        let mut first_err = None;
        let mut found = None;
        for loc in &locs {
            let Loc::File { file, offset, len } = loc else {
                continue;
            };
            let Some(rec) = st.files.get(file).cloned() else {
                continue;
            };
            match read_live(&self.root, &rec, *offset, *len, hash) {
                Ok(LiveRead::Verified(b)) => {
                    found = Some(b);
                    break;
                }
                Ok(LiveRead::Stale(why)) => {
                    tracing::info!(chunk = %hash, path = %rec.path, why, "stale live-file location dropped");
                    st.remove_file_record(*file);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut drop_blob = false;
        if found.is_none() && locs.iter().any(is_own) {
            match st.blobs.get(hash) {
                Some(b) if Hash::of_chunk(b) == *hash => found = Some(b.clone()),
                _ => {
                    tracing::warn!(chunk = %hash, "corrupt or missing own copy dropped");
                    st.blobs.remove(hash);
                    drop_blob = true;
                }
            }
        }
        let st = &mut *st;
        if let Some(locs) = st.chunks.get_mut(hash) {
            let files = &st.files;
            locs.retain(|l| match l {
                Loc::File { file, .. } => files.contains_key(file),
                Loc::Blob { .. } | Loc::Inline { .. } => !drop_blob,
            });
            if locs.is_empty() {
                st.chunks.remove(hash);
            }
        }
        match (found, first_err) {
            (Some(b), _) => Ok(Some(b)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    fn file_stamp(&self, rel_path: &str) -> Result<Option<FileStamp>> {
        validate_rel_path(rel_path)?;
        let st = self.lock();
        Ok(st
            .paths
            .get(rel_path)
            .and_then(|id| st.files.get(id))
            .map(|r| r.stamp))
    }

    fn locate(&self, hash: &Hash) -> Result<Option<Location>> {
        let st = self.lock();
        let locs = st.chunks.get(hash).cloned().unwrap_or_default();
        for loc in &locs {
            if let Loc::File { file, offset, len } = loc {
                if let Some(rec) = st.files.get(file) {
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
        }
        let stored = st.blobs.get(hash).map(|b| b.len() as u64);
        for loc in &locs {
            match *loc {
                Loc::Blob { len } if stored == Some(len) => {
                    return Ok(Some(Location::Blob { len }));
                }
                Loc::Inline { len } if stored == Some(u64::from(len)) => {
                    return Ok(Some(Location::Inline { len }));
                }
                _ => {}
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
        self.index_files(&[FileIndex {
            rel_path,
            stamp,
            chunks,
        }])
    }

    fn forget_file(&self, rel_path: &str) -> Result<()> {
        self.forget_files(&[rel_path])
    }

    fn index_files(&self, files: &[FileIndex<'_>]) -> Result<()> {
        check_batch(files)?;
        // Checked first, applied under one lock: all or nothing, and no
        // reader sees half a batch.
        let mut st = self.lock();
        for f in files {
            st.index(f);
        }
        Ok(())
    }

    fn index_placed(&self, files: &[FileIndex<'_>]) -> Result<()> {
        check_batch(files)?;
        let mut st = self.lock();
        let st = &mut *st;
        for f in files {
            st.index(f);
            if !placed_unchanged(&self.root, f) {
                continue;
            }
            for (_, ce) in f.chunks {
                if st.chunks.get_mut(&ce.hash).is_some_and(take_inline) {
                    st.blobs.remove(&ce.hash);
                }
            }
        }
        Ok(())
    }

    fn move_files(&self, moves: &[FileMove<'_>]) -> Result<Vec<bool>> {
        for m in moves {
            validate_rel_path(m.from)?;
            validate_rel_path(m.to)?;
        }
        let mut st = self.lock();
        let mut done = Vec::with_capacity(moves.len());
        for m in moves {
            let Some(id) = st.paths.get(m.from).copied() else {
                done.push(false);
                continue;
            };
            if m.from != m.to {
                st.paths.remove(m.from);
                if let Some(old) = st.paths.insert(m.to.to_owned(), id).filter(|o| *o != id) {
                    st.files.remove(&old);
                }
            }
            st.files.insert(
                id,
                FileRec {
                    path: m.to.to_owned(),
                    stamp: m.stamp,
                },
            );
            done.push(true);
        }
        Ok(done)
    }

    fn forget_files(&self, rel_paths: &[&str]) -> Result<()> {
        rel_paths.iter().try_for_each(|p| validate_rel_path(p))?;
        let mut st = self.lock();
        for p in rel_paths {
            if let Some(id) = st.paths.remove(*p) {
                st.files.remove(&id);
            }
        }
        Ok(())
    }

    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats> {
        let mut stats = GcStats::default();
        let mut st = self.lock();
        let st = &mut *st;
        let mut env = MemGcEnv {
            root: &self.root,
            files: &st.files,
            blobs: &mut st.blobs,
            cache: HashMap::new(),
            dropped: Vec::new(),
        };
        let hashes: Vec<Hash> = st.chunks.keys().copied().collect();
        for hash in hashes {
            let Some(locs) = st.chunks.get_mut(&hash) else {
                continue;
            };
            gc_entry(&hash, locs, keep, &mut env, &mut stats)?;
            if locs.is_empty() {
                st.chunks.remove(&hash);
            }
        }
        let dropped = std::mem::take(&mut env.dropped);
        stats.files_dropped = dropped.len() as u64;
        for id in dropped {
            st.remove_file_record(id);
        }
        Ok(stats)
    }
}
