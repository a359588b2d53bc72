//! `put` for [`RedbChunkStore`]: small chunks inline in the index, large
//! ones as blob files, one durable commit for a whole batch.
//!
//! The order that keeps a batch all or nothing (module doc of `store`,
//! invariants 2 and 4):
//! 1. The caller (`put_many`) verified every hash; duplicates are dropped.
//! 2. Large chunks whose blob does not already hold them are written to temp
//!    files, made durable.
//! 3. One write transaction: the temps are renamed into `blobs/` and the
//!    renames made durable; then blob locations, inline values and inline
//!    locations are inserted; one commit with `Durability::Immediate`.
//!
//! A crash before the commit leaves no inline value and no location of the
//! batch; at worst renamed blobs, which the next open indexes (they hash to
//! their names) like any blob renamed before a crash. A batch of small
//! chunks only is one commit and no file at all.

use super::error::Result;
use super::inline::{InlineValue, INLINE};
use super::locs::{add_own_loc, decode_locs, encode_locs, is_own, own_loc, Loc};
use super::redb_store::{InlineRead, RedbChunkStore, CHUNKS};
use crate::Hash;
use redb::ReadableTable;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;

/// A chunk's locations as the table holds them (empty if it has none).
pub(super) fn chunk_locs(
    chunks: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    hash: &Hash,
) -> Result<Vec<Loc>> {
    match chunks.get(hash.as_bytes())? {
        Some(g) => decode_locs(g.value()),
        None => Ok(Vec::new()),
    }
}

impl RedbChunkStore {
    /// Whether a chunk of `len` bytes is put inline.
    pub(super) fn goes_inline(&self, len: usize) -> bool {
        self.inline_max.is_some_and(|max| len <= max)
    }

    /// Whether the chunk's own copy (blob or inline) holds exactly `data`.
    fn own_holds(&self, hash: &Hash, data: &[u8]) -> Result<bool> {
        let found = self.lookup(hash, InlineRead::Copy)?;
        let own = found.entries.iter().map(|(l, _)| *l).find(is_own);
        Ok(match own {
            Some(Loc::Blob { len }) if len == data.len() as u64 => {
                self.blobs.read(hash)?.as_deref() == Some(data)
            }
            Some(Loc::Inline { .. }) => matches!(
                &found.inline,
                Some(InlineValue::Present { bytes: Some(b) }) if b == data
            ),
            _ => false,
        })
    }

    /// `put_many` once the hashes are verified (module doc).
    pub(super) fn put_verified(&self, items: &[(Hash, &[u8])]) -> Result<()> {
        let mut seen = HashSet::with_capacity(items.len());
        let mut small = Vec::new();
        let mut large = Vec::new();
        for (h, data) in items {
            if !seen.insert(*h) {
                continue;
            }
            if self.goes_inline(data.len()) {
                // Deduplicated inside the write transaction (no read first).
                small.push((*h, *data));
            } else if !self.own_holds(h, data)? {
                large.push((*h, *data));
            }
        }
        if small.is_empty() && large.is_empty() {
            return Ok(());
        }
        let mut temps = Vec::with_capacity(large.len());
        let mut result = Ok(());
        if !large.is_empty() {
            let written = self.blobs.write_temps(&large);
            for (w, (h, data)) in written.into_iter().zip(&large) {
                match w {
                    Ok(tmp) => temps.push((*h, tmp, data.len() as u64)),
                    Err(e) => result = Err(e),
                }
            }
        }
        if result.is_ok() {
            result = self.commit_batch(&temps, &small);
        }
        if result.is_err() {
            // (Temps already renamed are blobs now: indexed at next open.)
            for (_, tmp, _) in &temps {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }

    /// Step 3 of the module doc: publishes the durable temps and records
    /// them and the inline chunks in one commit, under the index's writer
    /// lock (so `get`'s removal of a corrupt copy cannot race with a put of
    /// the same chunk). Commits nothing if nothing changed.
    fn commit_batch(&self, blobs: &[(Hash, PathBuf, u64)], small: &[(Hash, &[u8])]) -> Result<()> {
        let txn = self.write_txn()?;
        if !blobs.is_empty() {
            let mut dirs = BTreeSet::new();
            for (h, tmp, _) in blobs {
                dirs.insert(self.blobs.publish(tmp, h)?);
            }
            let dirs: Vec<PathBuf> = dirs.into_iter().collect();
            self.blobs.sync_dirs(&dirs)?;
        }
        let mut changed = !blobs.is_empty();
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut inline = txn.open_table(INLINE)?;
            for (h, _, len) in blobs {
                let mut locs = chunk_locs(&chunks, h)?;
                if matches!(own_loc(&locs), Some(Loc::Inline { .. })) {
                    inline.remove(h.as_bytes())?;
                }
                add_own_loc(&mut locs, Loc::Blob { len: *len });
                chunks.insert(h.as_bytes(), encode_locs(&locs).as_slice())?;
            }
            for (h, data) in small {
                let mut locs = chunk_locs(&chunks, h)?;
                // `data.len() <= inline_max <= INLINE_LIMIT` (checked at open).
                let len = data.len() as u32;
                match own_loc(&locs) {
                    Some(Loc::Inline { len: indexed }) if indexed == len => {
                        let same = inline
                            .get(h.as_bytes())?
                            .is_some_and(|g| g.value() == *data);
                        if same {
                            continue;
                        }
                    }
                    Some(Loc::Blob { len: indexed }) => {
                        // A blob of a small chunk (format 1, or another
                        // threshold): kept if good, else replaced; deleted
                        // before the commit so no crash leaves two copies.
                        if indexed == data.len() as u64
                            && self.blobs.read(h)?.as_deref() == Some(*data)
                        {
                            continue;
                        }
                        self.blobs.remove(h)?;
                    }
                    _ => {}
                }
                inline.insert(h.as_bytes(), *data)?;
                add_own_loc(&mut locs, Loc::Inline { len });
                chunks.insert(h.as_bytes(), encode_locs(&locs).as_slice())?;
                changed = true;
            }
        }
        if changed {
            crate::failpoint::hit("chunkstore::put_before_commit");
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(())
    }
}
