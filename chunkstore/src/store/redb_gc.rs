//! `gc` for [`RedbChunkStore`]: the shared rule of `policy.rs` applied to
//! every index entry, in batches of keys, inside one write transaction (so
//! blob and inline-value deletions cannot race with puts of the same chunk,
//! and an inline value goes in the same commit as its location).

use super::blobs::BlobDir;
use super::error::Result;
use super::inline::INLINE;
use super::live::{read_live, stamp_matches, LiveRead};
use super::locs::{decode_file, decode_locs, encode_locs, FileRec, Loc};
use super::policy::{gc_entry, GcEnv};
use super::redb_store::{remove_file_record, RedbChunkStore, CHUNKS, FILES, PATHS};
use super::GcStats;
use crate::Hash;
use redb::{ReadableTable, Table};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

/// Keys read per batch of the scan.
const BATCH: usize = 4096;

struct RedbGcEnv<'a, 't> {
    root: &'a Path,
    blobs: &'a BlobDir,
    files: &'a Table<'t, u64, &'static [u8]>,
    inline: &'a mut Table<'t, &'static [u8; 32], &'static [u8]>,
    /// file id → its record if current (stamp still matches).
    cache: HashMap<u64, Option<FileRec>>,
    /// Records to delete after the scan: the file changed under the index.
    dropped: Vec<(u64, String)>,
}

impl RedbGcEnv<'_, '_> {
    fn drop_file(&mut self, id: u64, path: &str) {
        self.cache.insert(id, None);
        if !self.dropped.iter().any(|(d, _)| *d == id) {
            self.dropped.push((id, path.to_owned()));
        }
    }
}

impl GcEnv for RedbGcEnv<'_, '_> {
    fn current_file(&mut self, id: u64) -> Result<Option<FileRec>> {
        if let Some(state) = self.cache.get(&id) {
            return Ok(state.clone());
        }
        let rec = match self.files.get(id)? {
            Some(g) => Some(decode_file(g.value())?),
            None => None,
        };
        let state = match rec {
            Some(rec) if stamp_matches(self.root, &rec)? => Some(rec),
            Some(rec) => {
                tracing::info!(path = %rec.path, "file changed since indexed, its locations are dropped");
                self.drop_file(id, &rec.path);
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
        offset: u64,
        len: u32,
        hash: &Hash,
    ) -> Result<bool> {
        match read_live(self.root, rec, offset, len, hash) {
            Ok(LiveRead::Verified(_)) => Ok(true),
            Ok(LiveRead::Stale(why)) => {
                tracing::info!(path = %rec.path, why, "live copy failed verification, blob kept");
                self.drop_file(id, &rec.path);
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(path = %rec.path, error = %e, "live copy unreadable, blob kept");
                Ok(false)
            }
        }
    }

    fn own_len(&mut self, hash: &Hash, own: &Loc) -> Result<Option<u64>> {
        match own {
            Loc::Inline { .. } => Ok(self
                .inline
                .get(hash.as_bytes())?
                .map(|g| g.value().len() as u64)),
            Loc::Blob { .. } | Loc::File { .. } => self.blobs.len_of(hash),
        }
    }

    fn remove_own(&mut self, hash: &Hash, own: &Loc) -> Result<u64> {
        match own {
            Loc::Inline { .. } => Ok(self
                .inline
                .remove(hash.as_bytes())?
                .map_or(0, |g| g.value().len() as u64)),
            Loc::Blob { .. } | Loc::File { .. } => self.blobs.remove(hash),
        }
    }
}

impl RedbChunkStore {
    pub(super) fn gc_impl(&self, keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats> {
        let mut stats = GcStats::default();
        let txn = self.write_txn()?;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut files = txn.open_table(FILES)?;
            let mut paths = txn.open_table(PATHS)?;
            let mut inline = txn.open_table(INLINE)?;
            let dropped = {
                let mut env = RedbGcEnv {
                    root: &self.root,
                    blobs: &self.blobs,
                    files: &files,
                    inline: &mut inline,
                    cache: HashMap::new(),
                    dropped: Vec::new(),
                };
                let mut after: Option<[u8; 32]> = None;
                loop {
                    let lower = match &after {
                        Some(k) => Bound::Excluded(k),
                        None => Bound::Unbounded,
                    };
                    let batch = chunks
                        .range::<&[u8; 32]>((lower, Bound::Unbounded))?
                        .take(BATCH)
                        .map(|r| r.map(|(k, v)| (*k.value(), v.value().to_vec())))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    let Some((last, _)) = batch.last() else { break };
                    after = Some(*last);
                    for (key, value) in batch {
                        let hash = Hash(key);
                        let mut locs = decode_locs(&value)?;
                        if gc_entry(&hash, &mut locs, keep, &mut env, &mut stats)? {
                            if locs.is_empty() {
                                chunks.remove(&key)?;
                            } else {
                                chunks.insert(&key, encode_locs(&locs).as_slice())?;
                            }
                        }
                    }
                }
                env.dropped
            };
            for (id, path) in &dropped {
                remove_file_record(&mut files, &mut paths, *id, path)?;
            }
            stats.files_dropped = dropped.len() as u64;
        }
        txn.commit()?;
        tracing::info!(?stats, "chunk store gc done");
        Ok(stats)
    }
}
