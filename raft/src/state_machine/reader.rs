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
use crate::history::{
    fold_as_of, fold_then_now, AsOf, AsOfSpec, ClusterState, PathRecord, Settings, ThenNow,
    TokenRecord,
};
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

    /// Resolves `spec` to an [`AsOf`], checked against retention and the applied index.
    ///
    /// An index must lie in `horizon..=applied`. A time `T` at or after the entry clock is
    /// "as of the last applied entry". An earlier time needs a log index known to be stamped
    /// at or before `T` (the [`AsOf::floor`]) at or after the horizon. The state machine has
    /// no time index; the `changed` index does: its keys are the versions of each path's
    /// newest record, and the clock is monotone along the log, so a binary search over log
    /// indexes (each probe: the last `changed` key at or before the index, then that record's
    /// time) finds the newest such record stamped at or before `T` in O(log(applied)) probes
    /// of O(log n) each, whatever the size of the history. Only when that record lies before
    /// the horizon (every path written since `T` was written again later, e.g. one hot file in
    /// a tree otherwise untouched since long before) is the history streamed, once, up to the
    /// first record at or after the horizon stamped at or before `T`. A time with no such
    /// record is refused as outside retention (conservative: the entries between the horizon
    /// and `T` then wrote no record that is still retained).
    pub fn resolve_as_of(&self, spec: AsOfSpec) -> Result<AsOf, SmError> {
        let txn = self.txn()?;
        let state = tables::read_state(&txn.open_table(tables::STATE)?)?;
        let applied = applied_in(&txn)?.map_or(0, |l| l.index);
        let t = match spec {
            AsOfSpec::Index(at) => {
                if at < state.horizon {
                    return Err(SmError::OutsideRetention {
                        at,
                        horizon: state.horizon,
                    });
                }
                if at > applied {
                    return Err(SmError::NotYetApplied { at, applied });
                }
                return Ok(AsOf::index(at));
            }
            AsOfSpec::Time(t) => t,
        };
        if t >= state.clock_ms {
            return Ok(AsOf::index(applied));
        }
        let changed = txn.open_table(tables::CHANGED)?;
        let hist = txn.open_table(tables::HISTORY)?;
        // The newest `changed` key at or before index `m`, and its record's time.
        let probe = |m: u64| -> Result<Option<(u64, u64)>, SmError> {
            let Some(item) = changed.range(..=(m, u32::MAX))?.next_back() else {
                return Ok(None);
            };
            let (k, v) = item?;
            let (index, pos) = k.value();
            let path = v.value();
            let rec = hist.get((path, index, pos))?.ok_or_else(|| {
                SmError::Corrupt(format!(
                    "changed names {path:?} at {index}.{pos}, not in history"
                ))
            })?;
            let rec: PathRecord = dec(rec.value())?;
            Ok(Some((index, rec.time_ms)))
        };
        // Largest `lo` whose probe is stamped at or before `t` (0: none).
        let (mut lo, mut hi) = (0u64, applied);
        let mut floor = 0;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match probe(mid)? {
                Some((index, time)) if time <= t => {
                    floor = index;
                    lo = mid;
                }
                _ => hi = mid - 1,
            }
        }
        if floor < state.horizon {
            // Rare: stream the history for a later retained record stamped by then.
            for item in hist.iter()? {
                let (k, v) = item?;
                let (_, index, _) = k.value();
                if index < state.horizon || index <= floor || index > applied {
                    continue;
                }
                let rec: PathRecord = dec(v.value())?;
                if rec.time_ms <= t {
                    floor = index;
                    break;
                }
            }
        }
        if floor < state.horizon {
            return Err(SmError::OutsideRetention {
                at: floor,
                horizon: state.horizon,
            });
        }
        Ok(AsOf {
            index: applied,
            time_ms: Some(t),
            floor,
        })
    }

    /// One page of the tree under `dir` (`""`: everything; a file: itself) as of `at` and
    /// now: every path alive at either, in path order, strictly after `after`, at most
    /// `limit` of them; the second value is the `after` of the next page (`None`: done).
    ///
    /// One read transaction, streaming a range of the history table: the records of `dir`
    /// and of `dir/...` only (a page costs the records of its paths, and of dead paths
    /// between them), never the whole history. Fails like [`SmReader::resolve_as_of`] if
    /// retention moved past `at` meanwhile (a long job reads many pages).
    pub fn then_and_now(
        &self,
        dir: &str,
        at: &AsOf,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ThenNow>, Option<String>), SmError> {
        let txn = self.txn()?;
        let state = tables::read_state(&txn.open_table(tables::STATE)?)?;
        if at.floor < state.horizon {
            return Err(SmError::OutsideRetention {
                at: at.floor,
                horizon: state.horizon,
            });
        }
        let hist = txn.open_table(tables::HISTORY)?;
        let decode = |item: Result<
            (
                redb::AccessGuard<'_, tables::HistKey>,
                redb::AccessGuard<'_, &[u8]>,
            ),
            redb::StorageError,
        >| {
            let (k, v) = item?;
            Ok::<_, SmError>((k.value().0.to_string(), dec::<PathRecord>(v.value())?))
        };
        let mut out = Vec::new();
        let mut more = false;
        let mut emit = |t: ThenNow| {
            if out.len() >= limit {
                more = true;
                return Ok(false);
            }
            out.push(t);
            Ok(true)
        };
        let prefix = format!("{dir}/");
        if dir.is_empty() {
            let start = after.unwrap_or("");
            let records = hist
                .range((start, 0u64, 0u32)..)?
                .map(decode)
                .filter(|r| !matches!((r, after), (Ok((p, _)), Some(a)) if p == a));
            fold_then_now(records, at, &mut emit)?;
        } else {
            // `dir` itself, then `dir/...` (paths such as `dir-x` sort between the two).
            let own = if after.is_some_and(|a| a >= dir) {
                None
            } else {
                Some(hist.range((dir, 0u64, 0u32)..=(dir, u64::MAX, u32::MAX))?)
            };
            let start = match after {
                Some(a) if a > prefix.as_str() => a,
                _ => prefix.as_str(),
            };
            let below = hist
                .range((start, 0u64, 0u32)..)?
                .map(decode)
                .take_while(|r| !matches!(r, Ok((p, _)) if !p.starts_with(&prefix)))
                .filter(|r| !matches!((r, after), (Ok((p, _)), Some(a)) if p == a));
            let records = own.into_iter().flatten().map(decode).chain(below);
            fold_then_now(records, at, &mut emit)?;
        }
        let next = if more {
            out.last().map(|t| t.path.clone())
        } else {
            None
        };
        Ok((out, next))
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

#[cfg(test)]
mod as_of_tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use filesyncd_merkle::Hash;

    use super::super::StateMachine;
    use super::*;
    use crate::command::{ChunkerParams, Op, PutKind, Request, RequestId, Retention, Version};
    use crate::TypeConfig;

    const T0: u64 = 1_700_000_000_000;

    fn entry(index: u64, time_ms: u64, op: Op) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::new(
                RequestId {
                    origin: 9,
                    seq: index,
                },
                time_ms,
                vec![op],
            )),
        }
    }

    fn put(path: &str, c: u8, base: Option<Version>) -> Op {
        Op::Put {
            path: path.into(),
            kind: PutKind::File,
            root: Hash([c; 32]),
            size: 1,
            mode: 0o644,
            mtime_ns: 0,
            origin: 9,
            base,
            holders: vec![9],
        }
    }

    /// 1 init; 2 d/a; 3 d/b; 4 d/a again; 5 d/b deleted; 6 d-x; 7 d/c; 8 e. Entry `i` is
    /// stamped `T0 + 10 * i`.
    fn machine(dir: &std::path::Path, retention: Retention) -> StateMachine {
        let sm = StateMachine::open(dir).expect("open");
        let ops = vec![
            Op::InitCluster {
                cluster_id: "c".into(),
                chunker: ChunkerParams::default(),
                retention,
            },
            put("d/a", 1, None),
            put("d/b", 2, None),
            put("d/a", 3, Some(Version::new(2, 0))),
            Op::Delete {
                path: "d/b".into(),
                base: Version::new(3, 0),
            },
            put("d-x", 4, None),
            put("d/c", 5, None),
            put("e", 6, None),
        ];
        let entries = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                let i = i as u64 + 1;
                entry(i, T0 + 10 * i, op)
            })
            .collect();
        sm.apply_blocking(entries).expect("apply");
        sm
    }

    fn page(r: &SmReader, dir: &str, at: &AsOf) -> Vec<(String, Option<u64>, Option<u64>)> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (items, next) = r.then_and_now(dir, at, after.as_deref(), 1).expect("page");
            assert!(items.len() <= 1);
            out.extend(items.into_iter().map(|t| {
                (
                    t.path,
                    t.then.map(|r| r.version.index),
                    t.now.map(|r| r.version.index),
                )
            }));
            match next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    #[test]
    fn times_resolve_like_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = machine(dir.path(), Retention::default());
        let r = sm.reader();
        // Stamped between entries 3 and 4: as of index 3. Entries 2 and 3 wrote no newest
        // record (4 and 5 superseded them), so the floor known is 0.
        let at = r.resolve_as_of(AsOfSpec::Time(T0 + 35)).expect("resolve");
        assert_eq!((at.index, at.time_ms, at.floor), (8, Some(T0 + 35), 0));
        let later = r.resolve_as_of(AsOfSpec::Time(T0 + 65)).expect("resolve");
        assert_eq!(later.floor, 6);
        let by_index = r.resolve_as_of(AsOfSpec::Index(3)).expect("index");
        let want = vec![
            ("d/a".to_string(), Some(2), Some(4)),
            ("d/b".to_string(), Some(3), None),
            ("d/c".to_string(), None, Some(7)),
        ];
        assert_eq!(page(&r, "d", &at), want);
        assert_eq!(page(&r, "d", &by_index), want);
        // A file, and everything (`d-x` sorts between `d` and `d/`).
        assert_eq!(page(&r, "d/a", &at), want[..1].to_vec());
        let all = page(&r, "", &at);
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(all.iter().any(|(p, _, _)| p == "d-x"));
        // At or after the clock: as of the last applied entry.
        let now = r.resolve_as_of(AsOfSpec::Time(T0 + 1000)).expect("now");
        assert_eq!(now, AsOf::index(8));
        assert!(page(&r, "", &now).iter().all(|(_, a, b)| a == b));
        // Before anything was written: an empty tree.
        let before = r.resolve_as_of(AsOfSpec::Time(T0)).expect("before");
        assert!(page(&r, "d", &before).iter().all(|(_, a, _)| a.is_none()));
        assert!(matches!(
            r.resolve_as_of(AsOfSpec::Index(9)),
            Err(SmError::NotYetApplied { at: 9, applied: 8 })
        ));
    }

    #[test]
    fn retention_bounds_times_and_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = machine(
            dir.path(),
            Retention {
                keep_versions: Some(1),
                keep_days: None,
            },
        );
        let r = sm.reader();
        // d/a's first version (2) was dropped when 4 superseded it: exact from 4.
        let horizon = r.state().expect("state").horizon;
        assert!(horizon >= 4, "{horizon}");
        assert!(matches!(
            r.resolve_as_of(AsOfSpec::Index(3)),
            Err(SmError::OutsideRetention { .. })
        ));
        assert!(matches!(
            r.resolve_as_of(AsOfSpec::Time(T0 + 35)),
            Err(SmError::OutsideRetention { .. })
        ));
        let at = r
            .resolve_as_of(AsOfSpec::Time(T0 + 10 * horizon + 5))
            .expect("within retention");
        assert!(at.floor >= horizon);
        let stale = AsOf::index(3);
        assert!(matches!(
            r.then_and_now("d", &stale, None, 10),
            Err(SmError::OutsideRetention { .. })
        ));
    }
}
