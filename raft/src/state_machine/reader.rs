//! [`SmReader`]: a cheap, cloneable, read-only handle on the state machine's database.
//!
//! Every call opens its own redb read transaction (a consistent snapshot; readers never
//! block the writer nor each other) and returns owned data. Calls are synchronous and do disk
//! reads: from async code, run large ones (`list` of a big tree, `as_of`) in
//! `spawn_blocking`. No lock is taken.

use std::sync::Arc;

use openraft::{LogId, StoredMembership};
use redb::{Database, ReadTransaction, ReadableTable, ReadableTableMetadata};

use filesyncd_merkle::Hash;

use super::error::SmError;
use super::tables::{self, dec};
use super::view::SmView;
use crate::history::{fold_as_of, ClusterState, PathRecord, Settings, TokenRecord};
use crate::{NodeId, NodeInfo};

#[derive(Clone)]
pub struct SmReader {
    db: Arc<Database>,
}

impl SmReader {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        SmReader { db }
    }

    fn txn(&self) -> Result<ReadTransaction, SmError> {
        Ok(self.db.begin_read()?)
    }

    /// One read snapshot for many reads that must agree (see [`SmView`]).
    pub fn view(&self) -> Result<SmView, SmError> {
        SmView::new(self.txn()?)
    }

    /// The live record of `path` (`None` if absent or deleted).
    pub fn get(&self, path: &str) -> Result<Option<PathRecord>, SmError> {
        tables::read_live(&self.txn()?.open_table(tables::LIVE)?, path)
    }

    /// Live paths under directory `dir` (recursively; `""` = everything), in path order,
    /// strictly after `after` when given, at most `limit`.
    pub fn list(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, PathRecord)>, SmError> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let txn = self.txn()?;
        let live = txn.open_table(tables::LIVE)?;
        let start = match after {
            Some(a) if a >= prefix.as_str() => a,
            _ => prefix.as_str(),
        };
        let mut out = Vec::new();
        for item in live.range::<&str>(start..)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            if after == Some(k) {
                continue;
            }
            out.push((k.to_string(), dec(v.value())?));
        }
        Ok(out)
    }

    /// Every retained version of `path`, oldest first, tombstones included.
    pub fn history(&self, path: &str) -> Result<Vec<PathRecord>, SmError> {
        tables::read_versions(&self.txn()?.open_table(tables::HISTORY)?, path)
    }

    /// Calls `f` with every retained record of every path (tombstones
    /// included), in `(path, version)` order, streaming: one pass over the
    /// history table in one read transaction.
    pub fn for_each_retained(&self, mut f: impl FnMut(&str, &PathRecord)) -> Result<(), SmError> {
        let txn = self.txn()?;
        let hist = txn.open_table(tables::HISTORY)?;
        for item in hist.iter()? {
            let (k, v) = item?;
            let (path, _, _) = k.value();
            f(path, &dec(v.value())?);
        }
        Ok(())
    }

    /// The newest retained record (tombstones included) of every path whose
    /// newest record was written after log index `index`, in path order.
    ///
    /// A range scan of the `changed` index from `index + 1` plus one history
    /// lookup per reported path: O(k log n) for k changed paths, whatever the
    /// size of the tree or of the history. When a large part of the tree
    /// changed (k above a twelfth of the history records, `SCAN_RATIO`; e.g.
    /// the first step of a fresh engine) one sequential pass over the history
    /// is cheaper than k lookups, and is used instead: still O(k) as k is then
    /// at least a twelfth of the history. A path whose history was pruned entirely
    /// is not reported.
    pub fn changed_since(&self, index: u64) -> Result<Vec<(String, PathRecord)>, SmError> {
        self.changed_since_by(index, ChangedRead::Auto)
    }

    /// The paths [`SmReader::changed_since`] reports, in path order, read
    /// from the `changed` index alone: one range read, no history lookup
    /// and no record decoded (a scheduler that only needs the paths of a
    /// million-path change does not hold a million records).
    pub fn changed_paths_since(&self, index: u64) -> Result<Vec<String>, SmError> {
        let Some(from) = index.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.txn()?;
        let changed = txn.open_table(tables::CHANGED)?;
        let mut paths: Vec<String> = Vec::new();
        for item in changed.range((from, 0u32)..)? {
            let (_, v) = item?;
            paths.push(v.value().to_string());
        }
        paths.sort_unstable();
        Ok(paths)
    }

    /// [`SmReader::changed_since`], reading as `how` says (collected from one
    /// [`SmView`], which holds the one implementation).
    pub(crate) fn changed_since_by(
        &self,
        index: u64,
        how: ChangedRead,
    ) -> Result<Vec<(String, PathRecord)>, SmError> {
        let mut out = Vec::new();
        self.view()?.changed_since_by(index, how, |p, rec| {
            out.push((p.to_string(), rec));
            Ok(())
        })?;
        Ok(out)
    }

    /// The pre-index `changed_since`: one pass over the whole history table.
    /// Kept as the reference the indexed one is tested against.
    #[cfg(test)]
    pub(crate) fn changed_since_scan(
        &self,
        index: u64,
    ) -> Result<Vec<(String, PathRecord)>, SmError> {
        let txn = self.txn()?;
        let hist = txn.open_table(tables::HISTORY)?;
        let mut out: Vec<(String, PathRecord)> = Vec::new();
        let mut pending: Option<(String, Vec<u8>)> = None;
        for item in hist.iter()? {
            let (k, v) = item?;
            let (path, idx, _pos) = k.value();
            match &mut pending {
                Some((p, bytes)) if p == path => {
                    // Same path: a later key is a newer version.
                    if idx > index {
                        *bytes = v.value().to_vec();
                    } else {
                        bytes.clear();
                    }
                }
                _ => {
                    if let Some((p, bytes)) = pending.take() {
                        if !bytes.is_empty() {
                            out.push((p, dec(&bytes)?));
                        }
                    }
                    let bytes = if idx > index {
                        v.value().to_vec()
                    } else {
                        Vec::new()
                    };
                    pending = Some((path.to_string(), bytes));
                }
            }
        }
        if let Some((p, bytes)) = pending {
            if !bytes.is_empty() {
                out.push((p, dec(&bytes)?));
            }
        }
        Ok(out)
    }

    /// Every key of the `changed` index, in key order (tests).
    #[cfg(test)]
    pub(crate) fn changed_keys(&self) -> Result<Vec<(u64, u32, String)>, SmError> {
        let txn = self.txn()?;
        let changed = txn.open_table(tables::CHANGED)?;
        let mut out = Vec::new();
        for item in changed.iter()? {
            let (k, v) = item?;
            let (i, p) = k.value();
            out.push((i, p, v.value().to_string()));
        }
        Ok(out)
    }

    /// Calls `f` for every path alive as of log index `at` (in path order), streaming.
    /// Fails if `at` is before the retention horizon or after the last applied index.
    pub fn as_of_each(
        &self,
        at: u64,
        mut f: impl FnMut(String, PathRecord),
    ) -> Result<(), SmError> {
        let txn = self.txn()?;
        let state = tables::read_state(&txn.open_table(tables::STATE)?)?;
        if at < state.horizon {
            return Err(SmError::OutsideRetention {
                at,
                horizon: state.horizon,
            });
        }
        let applied = applied_in(&txn)?.map_or(0, |l| l.index);
        if at > applied {
            return Err(SmError::NotYetApplied { at, applied });
        }
        let hist = txn.open_table(tables::HISTORY)?;
        let records = hist.iter()?.map(|item| {
            let (k, v) = item?;
            Ok::<_, SmError>((k.value().0.to_string(), dec::<PathRecord>(v.value())?))
        });
        fold_as_of(records, at, |p, r| {
            f(p, r);
            Ok(())
        })
    }

    /// The whole live tree as of log index `at` (see [`SmReader::as_of_each`]).
    pub fn as_of(&self, at: u64) -> Result<Vec<(String, PathRecord)>, SmError> {
        let mut out = Vec::new();
        self.as_of_each(at, |p, r| out.push((p, r)))?;
        Ok(out)
    }

    /// The cluster root and the log id it is the root at (one transaction).
    pub fn cluster_root(&self) -> Result<(Hash, Option<LogId<NodeId>>), SmError> {
        let txn = self.txn()?;
        let meta = txn.open_table(tables::META)?;
        let root = match meta.get(tables::META_ROOT)? {
            Some(v) => dec(v.value())?,
            None => super::empty_root(),
        };
        Ok((root, applied_in(&txn)?))
    }

    pub fn applied(&self) -> Result<Option<LogId<NodeId>>, SmError> {
        applied_in(&self.txn()?)
    }

    pub fn membership(&self) -> Result<StoredMembership<NodeId, NodeInfo>, SmError> {
        let txn = self.txn()?;
        let meta = txn.open_table(tables::META)?;
        match meta.get(tables::META_MEMBERSHIP)? {
            Some(v) => dec(v.value()),
            None => Ok(StoredMembership::default()),
        }
    }

    /// The replicated scalars: settings, entry clock, retention horizon.
    pub fn state(&self) -> Result<ClusterState, SmError> {
        tables::read_state(&self.txn()?.open_table(tables::STATE)?)
    }

    /// The cluster settings, once `InitCluster` applied.
    pub fn settings(&self) -> Result<Option<Settings>, SmError> {
        Ok(self.state()?.settings)
    }

    pub fn token(&self, hash: &Hash) -> Result<Option<TokenRecord>, SmError> {
        tables::read_token(&self.txn()?.open_table(tables::TOKENS)?, hash)
    }

    /// The token registered under `id` (`AddNamedToken`): its hash and record, read in one
    /// transaction.
    pub fn token_by_id(&self, id: &str) -> Result<Option<(Hash, TokenRecord)>, SmError> {
        let txn = self.txn()?;
        let Some(hash) = tables::read_token_id(&txn.open_table(tables::TOKEN_IDS)?, id)? else {
            return Ok(None);
        };
        let rec = tables::read_token(&txn.open_table(tables::TOKENS)?, &hash)?
            .ok_or_else(|| SmError::Corrupt(format!("token id {id:?} names an unknown hash")))?;
        Ok(Some((hash, rec)))
    }

    /// The cluster key's seed, once `SetClusterKey` applied.
    pub fn cluster_key(&self) -> Result<Option<crate::command::ClusterSeed>, SmError> {
        tables::read_cluster_key(&self.txn()?.open_table(tables::STATE)?)
    }

    /// Whether `node` was removed from the membership (revoked for good).
    pub fn revoked(&self, node: NodeId) -> Result<Option<crate::history::RevokedRecord>, SmError> {
        tables::read_revoked(&self.txn()?.open_table(tables::REVOKED)?, node)
    }

    /// The node id that had PeerId `peer` when it was removed, if it was.
    pub fn revoked_peer(&self, peer: &str) -> Result<Option<NodeId>, SmError> {
        let txn = self.txn()?;
        let t = txn.open_table(tables::REVOKED_PEERS)?;
        let found = t.get(peer)?.map(|v| v.value());
        Ok(found)
    }

    /// Up to `limit` PeerIds of removed members (text form), in order.
    pub fn revoked_peers(&self, limit: usize) -> Result<Vec<String>, SmError> {
        let txn = self.txn()?;
        let t = txn.open_table(tables::REVOKED_PEERS)?;
        let mut out = Vec::new();
        for item in t.iter()?.take(limit) {
            let (k, _) = item?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    /// Number of live paths.
    pub fn live_count(&self) -> Result<u64, SmError> {
        Ok(self.txn()?.open_table(tables::LIVE)?.len()?)
    }
}

/// How [`SmReader::changed_since_by`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangedRead {
    /// The `changed` index, or the history scan when a large part of the paths changed.
    Auto,
    /// Always the `changed` index (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Index,
    /// Always the history scan (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Scan,
}

/// `changed_since` reads the whole history instead of the index once more than one path in
/// `SCAN_RATIO` history records changed. Measured on 200,000 paths / 400,000 records
/// (`changed_tests::changed_since_cost`, release, page cache warm): a lookup per changed path
/// costs 2-4 us, a sequential pass 80-100 ms; break-even near 30,000 paths, 1 in 13.
pub(crate) const SCAN_RATIO: u64 = 12;

pub(crate) fn applied_in(txn: &ReadTransaction) -> Result<Option<LogId<NodeId>>, SmError> {
    let meta = txn.open_table(tables::META)?;
    match meta.get(tables::META_APPLIED)? {
        Some(v) => dec(v.value()),
        None => Ok(None),
    }
}
