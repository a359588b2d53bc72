//! The [`ChunkStore`] operations of [`RedbChunkStore`] (its on-disk
//! structure and helpers are in `redb_store.rs`, gc in `redb_gc.rs`).

use super::error::{Result, StoreError};
use super::inline::{InlineValue, INLINE};
use super::live::{placed_unchanged, read_live, read_live_with, stamp_matches, LiveRead};
use super::locs::{
    add_file_loc, decode_file, decode_locs, encode_file, encode_locs, is_own, take_inline, FileRec,
    Loc,
};
use super::redb_store::{
    InlineRead, OwnKind, RedbChunkStore, CHUNKS, FILES, META, META_NEXT_FILE, PATHS,
};
use super::{
    check_batch, validate_rel_path, ChunkStore, FileIndex, FileMove, FileStamp, GcStats, Location,
};
use crate::{ChunkEntry, Hash};
use redb::{ReadableTable, WriteTransaction};

impl ChunkStore for RedbChunkStore {
    fn put(&self, hash: Hash, data: &[u8]) -> Result<()> {
        self.put_many(&[(hash, data)])
    }

    fn free_bytes(&self) -> Option<u64> {
        let s = rustix::fs::statvfs(&self.root).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
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
        // An inline location is taken at its word (the value is written and
        // removed with it, in one transaction): `has` does not read the
        // value, which for small files cost a page read per chunk asked
        // about. `get` still verifies the bytes, and drops a corrupt copy.
        let found = self.lookup(hash, InlineRead::Skip)?;
        for (loc, rec) in found.entries {
            match (loc, rec) {
                (Loc::Blob { len }, _) => {
                    if self.blobs.len_of(hash)? == Some(len) {
                        return Ok(true);
                    }
                }
                (Loc::Inline { .. }, _) => return Ok(true),
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

    fn get_to_serve(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        let looked = self.lookup(hash, InlineRead::Skip)?;
        for (loc, rec) in &looked.entries {
            let (Loc::File { offset, len, .. }, Some(rec)) = (loc, rec) else {
                continue;
            };
            if let Ok(LiveRead::Verified(b)) =
                read_live_with(&self.root, rec, *offset, *len, None, Some(&self.open))
            {
                return Ok(Some(b));
            }
        }
        self.get(hash)
    }

    fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        let looked = self.lookup(hash, InlineRead::Copy)?;
        let entries = looked.entries;
        let mut found = None;
        let mut stale_files = Vec::new();
        let mut bad_own = None;
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
                    tracing::info!(chunk = %hash, path = %rec.path, why, "stale live-file location dropped");
                    stale_files.push((*file, rec.path.clone()));
                }
                Err(e) => {
                    tracing::warn!(chunk = %hash, error = %e, "live-file location unreadable");
                    first_err.get_or_insert(e);
                }
            }
        }
        let own = entries.iter().map(|(l, _)| *l).find(is_own);
        match own {
            _ if found.is_some() => {}
            Some(Loc::Blob { .. }) => match self.blobs.read(hash) {
                Ok(Some(b)) if Hash::of_chunk(&b) == *hash => found = Some(b),
                Ok(Some(_)) => {
                    tracing::warn!(chunk = %hash, "corrupt blob dropped");
                    bad_own = Some(OwnKind::Blob);
                }
                Ok(None) => {
                    tracing::warn!(chunk = %hash, "indexed blob is missing, entry dropped");
                    bad_own = Some(OwnKind::Blob);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            },
            Some(Loc::Inline { len }) => match looked.inline {
                Some(InlineValue::Present { bytes: Some(b) }) if Hash::of_chunk(&b) == *hash => {
                    found = Some(b)
                }
                other => {
                    let why = match other {
                        Some(InlineValue::Present { .. }) => "bytes do not hash to the chunk",
                        Some(InlineValue::WrongLen(_)) => "length is not the indexed one",
                        Some(InlineValue::Missing) | None => "value is missing",
                    };
                    tracing::warn!(chunk = %hash, indexed_len = len, why, "corrupt inline value dropped");
                    bad_own = Some(OwnKind::Inline);
                }
            },
            Some(Loc::File { .. }) | None => {}
        }
        if !stale_files.is_empty() || bad_own.is_some() {
            if let Err(e) = self.drop_stale(hash, &stale_files, bad_own) {
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

    fn file_stamp(&self, rel_path: &str) -> Result<Option<FileStamp>> {
        validate_rel_path(rel_path)?;
        let txn = self.db.begin_read()?;
        let paths = txn.open_table(PATHS)?;
        let Some(id) = paths.get(rel_path)?.map(|g| g.value()) else {
            return Ok(None);
        };
        let files = txn.open_table(FILES)?;
        let rec = match files.get(id)? {
            Some(g) => decode_file(g.value())?,
            None => return Ok(None),
        };
        Ok((rec.path == rel_path).then_some(rec.stamp))
    }

    fn locate(&self, hash: &Hash) -> Result<Option<Location>> {
        let found = self.lookup(hash, InlineRead::Check)?;
        let entries = found.entries;
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
            match loc {
                Loc::Blob { len } => {
                    if self.blobs.len_of(hash)? == Some(*len) {
                        return Ok(Some(Location::Blob { len: *len }));
                    }
                }
                Loc::Inline { len } => {
                    if matches!(found.inline, Some(InlineValue::Present { .. })) {
                        return Ok(Some(Location::Inline { len: *len }));
                    }
                }
                Loc::File { .. } => {}
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
        self.index_batch(files, false)
    }

    fn index_placed(&self, files: &[FileIndex<'_>]) -> Result<()> {
        self.index_batch(files, true)
    }

    fn forget_files(&self, rel_paths: &[&str]) -> Result<()> {
        rel_paths.iter().try_for_each(|p| validate_rel_path(p))?;
        if rel_paths.is_empty() {
            return Ok(());
        }
        let txn = self.write_txn()?;
        {
            let mut tables = FileTables::open(&txn)?;
            for p in rel_paths {
                tables.forget(p)?;
            }
            tables.finish()?;
        }
        txn.commit()?;
        Ok(())
    }

    fn move_files(&self, moves: &[FileMove<'_>]) -> Result<Vec<bool>> {
        for m in moves {
            validate_rel_path(m.from)?;
            validate_rel_path(m.to)?;
        }
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.write_txn()?;
        let mut done = Vec::with_capacity(moves.len());
        {
            let mut tables = FileTables::open(&txn)?;
            for m in moves {
                done.push(tables.relink(m)?);
            }
            tables.finish()?;
        }
        txn.commit()?;
        Ok(done)
    }

    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats> {
        self.gc_impl(keep)
    }
}

impl RedbChunkStore {
    /// `index_files` (and, with `drop_inline`, `index_placed`): one commit.
    fn index_batch(&self, files: &[FileIndex<'_>], drop_inline: bool) -> Result<()> {
        check_batch(files)?;
        if files.is_empty() {
            return Ok(());
        }
        let txn = self.write_txn()?;
        {
            let mut tables = FileTables::open(&txn)?;
            let mut inline = if drop_inline {
                Some(txn.open_table(INLINE)?)
            } else {
                None
            };
            for f in files {
                // Like gc, drop a copy only for a live copy that is still the
                // one indexed: a file changed since it was placed keeps them.
                let drop = match inline.as_mut() {
                    Some(t) if placed_unchanged(&self.root, f) => Some(t),
                    _ => None,
                };
                tables.index(f, drop)?;
            }
            tables.finish()?;
        }
        // Dropped uncommitted on any error above: nothing of the batch lands.
        txn.commit()?;
        Ok(())
    }
}

/// The tables a live-file index write touches, open in one write
/// transaction: `index_file`, `forget_file` and their batch forms all go
/// through [`FileTables::index`]/[`FileTables::forget`], then
/// [`FileTables::finish`], then one commit.
struct FileTables<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    files: redb::Table<'t, u64, &'static [u8]>,
    paths: redb::Table<'t, &'static str, u64>,
    chunks: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
    /// The next file id to hand out (written back to `meta` by `finish`).
    next_id: u64,
    /// Whether `next_id` moved since `open`.
    ids_used: bool,
}

impl<'t> FileTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        let meta = txn.open_table(META)?;
        let next_id = meta
            .get(META_NEXT_FILE)?
            .map(|g| g.value())
            .ok_or_else(|| StoreError::CorruptIndex("meta has no next_file_id".into()))?;
        Ok(FileTables {
            meta,
            files: txn.open_table(FILES)?,
            paths: txn.open_table(PATHS)?,
            chunks: txn.open_table(CHUNKS)?,
            next_id,
            ids_used: false,
        })
    }

    /// Records one live file (its table already checked): a fresh file id,
    /// the path's previous record dropped, one location per chunk. With
    /// `drop_inline` (the `inline` table), an inline own copy of each chunk
    /// is removed with its location (`index_placed`).
    fn index(
        &mut self,
        f: &FileIndex<'_>,
        mut drop_inline: Option<&mut redb::Table<'t, &'static [u8; 32], &'static [u8]>>,
    ) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.ids_used = true;
        let old = self.paths.get(f.rel_path)?.map(|g| g.value());
        if let Some(old) = old {
            self.files.remove(old)?;
        }
        let rec = FileRec {
            path: f.rel_path.to_owned(),
            stamp: f.stamp,
        };
        self.files.insert(id, encode_file(&rec).as_slice())?;
        self.paths.insert(f.rel_path, id)?;
        for (offset, ce) in f.chunks {
            let old = match self.chunks.get(ce.hash.as_bytes())? {
                Some(g) => decode_locs(g.value())?,
                None => Vec::new(),
            };
            let mut locs = old.clone();
            let new = Loc::File {
                file: id,
                offset: *offset,
                len: ce.len,
            };
            let files = &self.files;
            add_file_loc(&mut locs, new, |f| {
                Ok::<_, StoreError>(files.get(f)?.is_some())
            })?;
            if let Some(inline) = drop_inline.as_deref_mut() {
                if take_inline(&mut locs) {
                    inline.remove(ce.hash.as_bytes())?;
                }
            }
            if locs != old {
                self.chunks
                    .insert(ce.hash.as_bytes(), encode_locs(&locs).as_slice())?;
            }
        }
        Ok(())
    }

    /// Moves the record of `m.from` (file id and chunk locations kept) to
    /// `m.to` under `m.stamp`; `to`'s previous record is dropped. `false`:
    /// `from` has no record, nothing done.
    fn relink(&mut self, m: &FileMove<'_>) -> Result<bool> {
        let Some(id) = self.paths.get(m.from)?.map(|g| g.value()) else {
            return Ok(false);
        };
        if m.from != m.to {
            self.paths.remove(m.from)?;
            let old = self.paths.insert(m.to, id)?.map(|g| g.value());
            if let Some(old) = old.filter(|o| *o != id) {
                self.files.remove(old)?;
            }
        }
        let rec = FileRec {
            path: m.to.to_owned(),
            stamp: m.stamp,
        };
        self.files.insert(id, encode_file(&rec).as_slice())?;
        Ok(true)
    }

    /// Drops the record of one path (its validity already checked).
    fn forget(&mut self, rel_path: &str) -> Result<()> {
        let id = self.paths.remove(rel_path)?.map(|g| g.value());
        if let Some(id) = id {
            self.files.remove(id)?;
        }
        Ok(())
    }

    /// Writes back what must outlive the batch (the next file id).
    fn finish(mut self) -> Result<()> {
        if self.ids_used {
            self.meta.insert(META_NEXT_FILE, self.next_id)?;
        }
        Ok(())
    }
}
