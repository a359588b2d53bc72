//! The garbage-collection rule for one chunk entry, shared by both stores so
//! that the twin cannot drift from the real thing.
//!
//! A chunk's *own copy* is its blob or its inline value (at most one of
//! them); both follow the same rule. For a chunk with locations `locs`:
//! 1. A live-file location whose file record is gone (file re-indexed or
//!    forgotten) or whose file's stamp changed is pruned.
//! 2. An own-copy location whose copy is missing or has the wrong length is
//!    pruned (a wrong-length copy is deleted: it cannot be the chunk).
//! 3. An own copy whose chunk `keep()` rejects is deleted.
//! 4. An own copy whose chunk is kept is deleted only if a live copy of the
//!    chunk is *read and verified* now (not merely stat'ed): then the own
//!    copy is a second copy of live data. A live copy that fails
//!    verification is pruned and the own copy stays.
//! 5. An entry left with no location is removed.

use super::error::StoreError;
use super::locs::{FileRec, Loc};
use super::GcStats;
use crate::Hash;

/// What the rule needs to ask of a store.
pub trait GcEnv {
    /// The record of file `id` if it exists and the file on disk still has
    /// the recorded stamp. A record whose stamp no longer matches is dropped
    /// by the store (and counted in `files_dropped`).
    fn current_file(&mut self, id: u64) -> Result<Option<FileRec>, StoreError>;
    /// Reads the live location and verifies it hashes to `hash`. On failure
    /// the store drops the file's record.
    fn live_copy_ok(
        &mut self,
        id: u64,
        rec: &FileRec,
        offset: u64,
        len: u32,
        hash: &Hash,
    ) -> Result<bool, StoreError>;
    /// The length of the own copy `own` (a blob or inline location) as
    /// stored, `None` if absent.
    fn own_len(&mut self, hash: &Hash, own: &Loc) -> Result<Option<u64>, StoreError>;
    /// Deletes the own copy `own`, returning the bytes freed.
    fn remove_own(&mut self, hash: &Hash, own: &Loc) -> Result<u64, StoreError>;
}

/// Applies the rule (module doc) to one entry. Returns whether `locs`
/// changed; an empty `locs` afterwards means "remove the entry".
pub fn gc_entry(
    hash: &Hash,
    locs: &mut Vec<Loc>,
    keep: &dyn Fn(&Hash) -> bool,
    env: &mut dyn GcEnv,
    stats: &mut GcStats,
) -> Result<bool, StoreError> {
    stats.entries_scanned += 1;
    let before = std::mem::take(locs);
    let mut kept = Vec::with_capacity(before.len());
    let mut live = Vec::new();
    let mut own = None;
    for loc in &before {
        match *loc {
            Loc::File { file, offset, len } => match env.current_file(file)? {
                Some(rec) => {
                    kept.push(*loc);
                    live.push((file, rec, offset, len));
                }
                None => stats.stale_locations_pruned += 1,
            },
            Loc::Blob { len } => own = Some((*loc, len, false)),
            Loc::Inline { len } => own = Some((*loc, u64::from(len), true)),
        }
    }
    if let Some((own, len, inline)) = own {
        let removed = |env: &mut dyn GcEnv, stats: &mut GcStats| -> Result<(), StoreError> {
            stats.blob_bytes_freed += env.remove_own(hash, &own)?;
            stats.blobs_removed += 1;
            stats.inline_removed += u64::from(inline);
            Ok(())
        };
        match env.own_len(hash, &own)? {
            None => stats.missing_blobs_pruned += 1,
            Some(stored) if stored != len => {
                tracing::warn!(chunk = %hash, stored, indexed = len, inline, "own copy has the wrong length, deleted");
                env.remove_own(hash, &own)?;
                stats.missing_blobs_pruned += 1;
            }
            Some(_) if !keep(hash) => removed(env, stats)?,
            Some(_) => {
                let mut live_ok = false;
                for (id, rec, offset, len) in &live {
                    if env.live_copy_ok(*id, rec, *offset, *len, hash)? {
                        live_ok = true;
                        break;
                    }
                    kept.retain(|l| !matches!(l, Loc::File { file, .. } if file == id));
                    stats.stale_locations_pruned += 1;
                }
                if live_ok {
                    removed(env, stats)?;
                    stats.redundant_blobs_removed += 1;
                } else {
                    kept.push(own);
                }
            }
        }
    }
    if kept.is_empty() {
        stats.entries_removed += 1;
    }
    let changed = kept != before;
    *locs = kept;
    Ok(changed)
}
