//! Per-path version history: the records, the retention rule, and "as of" reconstruction.
//!
//! # Model
//! Every put and delete of a path writes a [`PathRecord`] keyed by `(path, version)`, where
//! the [`Version`] is `(log index, position in the batch)`. A delete writes a tombstone
//! (`state: None`). The newest record of a path is its current state; the live table holds
//! only the current records that are not tombstones.
//!
//! # Retention (pruned at apply, deterministically)
//! Time is the entry clock (`ClusterState::clock_ms`: the leader-stamped `time_ms`, never
//! allowed to run backwards), so every node prunes the same records at the same log index.
//! With `N = keep_versions` and `D = keep_days` (see [`Retention`]):
//! - the current record is always kept;
//! - a superseded record is kept while it is among the `N` newest records of the path, or
//!   while its successor is younger than `D` (it was live less than `D` ago); with neither
//!   bound set everything is kept;
//! - a path whose current record is a tombstone older than `D` loses its whole history.
//!
//! A path is re-examined when it is written and when one of its wake-up hints falls due (a
//! hint `(due time, path, version)` is queued when a record is superseded or a tombstone is
//! written, and only when `D` is set). At most [`MAX_HINTS_PER_ENTRY`] hints are processed
//! per entry, the oldest first.
//!
//! # As of
//! `as_of(X)` is the set of paths whose newest record with `version.index <= X` is not a
//! tombstone. Pruning a record that was superseded at index `s` makes every `X < s` inexact,
//! so the state keeps a horizon (`ClusterState::horizon`, the largest such `s`): `as_of(X)`
//! is answered only for `X >= horizon` ("within retention").

use serde::{Deserialize, Serialize};

use filesyncd_merkle::Hash;

use crate::command::{ChunkerParams, PutKind, Retention, Version};
use crate::NodeId;

/// Wake-up hints processed per entry at most (bounds the work of one apply).
pub const MAX_HINTS_PER_ENTRY: usize = 4096;

const DAY_MS: u64 = 86_400_000;

/// The content of a live version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub kind: PutKind,
    pub root: Hash,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    /// Sorted, without duplicates.
    pub holders: Vec<NodeId>,
}

impl FileMeta {
    /// Same content for the cluster (kind incl. symlink target, root, size, mode).
    pub fn same_content(&self, other: &FileMeta) -> bool {
        self.kind == other.kind
            && self.root == other.root
            && self.size == other.size
            && self.mode == other.mode
    }

    pub fn is_dir(&self) -> bool {
        self.kind == PutKind::Dir
    }
}

/// One version of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    pub version: Version,
    /// The entry clock when this version was written.
    pub time_ms: u64,
    /// The node whose change this is (a put's `origin`, a delete's request origin).
    pub origin: NodeId,
    /// `None`: a tombstone (the path was deleted).
    pub state: Option<FileMeta>,
}

impl PathRecord {
    pub fn is_tombstone(&self) -> bool {
        self.state.is_none()
    }
}

/// Cluster settings, fixed by the first `InitCluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub cluster_id: String,
    pub chunker: ChunkerParams,
    pub retention: Retention,
    /// Where `InitCluster` applied.
    pub created: Version,
    pub created_ms: u64,
}

/// The replicated scalars of the state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub settings: Option<Settings>,
    /// The entry clock: max of every applied entry's `time_ms`.
    pub clock_ms: u64,
    /// `as_of(X)` is exact for `X >= horizon`.
    pub horizon: u64,
}

/// A join token (keyed by its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub expires_ms: u64,
    pub created: Version,
    pub consumed: Option<TokenUse>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUse {
    pub node: NodeId,
    pub at_ms: u64,
    pub version: Version,
}

/// A member removed from the membership: refused for good, under its node
/// id and its PeerId, on every member and across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedRecord {
    /// The libp2p PeerId it had as a member (text form).
    pub peer_id: String,
    /// Log index of the membership entry that dropped it.
    pub index: u64,
    /// The entry clock when it was dropped.
    pub at_ms: u64,
}

/// A retention wake-up: re-examine `path` once the clock passes `at_ms + D`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hint {
    pub at_ms: u64,
    pub path: String,
    pub version: Version,
}

/// What pruning one path decides.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    pub drop: Vec<Version>,
    /// The new horizon candidate (0 when nothing is dropped).
    pub horizon: u64,
}

/// `keep_days` in milliseconds.
pub fn keep_ms(r: &Retention) -> Option<u64> {
    r.keep_days.map(|d| u64::from(d).saturating_mul(DAY_MS))
}

/// Which records of one path (oldest first) the retention drops at clock `now`.
pub fn prune_plan(versions: &[PathRecord], r: &Retention, now: u64) -> PrunePlan {
    let mut plan = PrunePlan::default();
    let n = versions.len();
    let Some(last) = versions.last() else {
        return plan;
    };
    let d = keep_ms(r);
    let older_than_d = |t: u64| d.is_some_and(|d| now.saturating_sub(t) > d);
    if last.is_tombstone() && older_than_d(last.time_ms) {
        plan.drop = versions.iter().map(|v| v.version).collect();
        plan.horizon = last.version.index;
        return plan;
    }
    if r.keep_versions.is_none() && d.is_none() {
        return plan;
    }
    for i in 0..n - 1 {
        let successor = &versions[i + 1];
        let within_n = r
            .keep_versions
            .is_some_and(|k| i + usize::try_from(k).unwrap_or(usize::MAX) >= n);
        let within_d = d.is_some() && !older_than_d(successor.time_ms);
        if !within_n && !within_d {
            plan.drop.push(versions[i].version);
            plan.horizon = plan.horizon.max(successor.version.index);
        }
    }
    plan
}

/// Folds a `(path, record)` stream sorted by `(path, version)` into the live state as of log
/// index `at`: calls `emit` once per path alive then, in path order. Streams: holds one
/// record at a time.
pub fn fold_as_of<E>(
    records: impl Iterator<Item = Result<(String, PathRecord), E>>,
    at: u64,
    mut emit: impl FnMut(String, PathRecord) -> Result<(), E>,
) -> Result<(), E> {
    let mut pending: Option<(String, PathRecord)> = None;
    for item in records {
        let (path, rec) = item?;
        if let Some((p, _)) = &pending {
            if *p != path {
                if let Some((p, r)) = pending.take() {
                    if !r.is_tombstone() {
                        emit(p, r)?;
                    }
                }
            }
        }
        if rec.version.index <= at {
            pending = Some((path, rec));
        }
    }
    if let Some((p, r)) = pending {
        if !r.is_tombstone() {
            emit(p, r)?;
        }
    }
    Ok(())
}

/// A point of the history to read the tree as of: a log index, or a time of the entry clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsOfSpec {
    /// Everything up to and including this log index.
    Index(u64),
    /// Everything whose entry clock was at most this (ms since the Unix epoch).
    Time(u64),
}

/// A resolved [`AsOfSpec`]: a record belongs to the tree as of then iff
/// [`AsOf::includes`] it.
///
/// For a time `T` the state machine keeps no map from times to log indexes, so the rule is
/// applied to the records themselves: a record is included when its index is at most
/// `index` (the last applied index when the time was resolved: nothing applied later counts)
/// and its entry clock is at most `T`. The clock never runs backwards along the log, so the
/// records with `time_ms <= T` are exactly those of the entries up to the last one stamped
/// at or before `T`: the same set as "as of that entry's index", found without knowing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOf {
    /// No record after this log index counts.
    pub index: u64,
    /// No record stamped after this time counts (`None`: only `index` bounds).
    pub time_ms: Option<u64>,
    /// A log index known to be at or before the last entry that counts (equal to `index`
    /// for an index). The tree as of then is exact while the retention horizon is at most
    /// this ([`ClusterState::horizon`]).
    pub floor: u64,
}

impl AsOf {
    /// As of log index `index`.
    pub fn index(index: u64) -> AsOf {
        AsOf {
            index,
            time_ms: None,
            floor: index,
        }
    }

    /// Whether `r` was written at or before this point.
    pub fn includes(&self, r: &PathRecord) -> bool {
        r.version.index <= self.index && self.time_ms.is_none_or(|t| r.time_ms <= t)
    }
}

/// One path's state as of a point ([`AsOf`]) and now: the newest record of each, `None` when
/// the path was absent or deleted. At least one of them is `Some`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThenNow {
    pub path: String,
    pub then: Option<PathRecord>,
    pub now: Option<PathRecord>,
}

impl ThenNow {
    /// Whether the path's content (kind, root, size, mode) differs between then and now.
    pub fn changed(&self) -> bool {
        match (
            self.then.as_ref().and_then(|r| r.state.as_ref()),
            self.now.as_ref().and_then(|r| r.state.as_ref()),
        ) {
            (Some(a), Some(b)) => !a.same_content(b),
            (None, None) => false,
            _ => true,
        }
    }
}

/// Folds a `(path, record)` stream sorted by `(path, version)` into each path's state as of
/// `at` and now (its newest record); calls `emit` once per path alive at either, in path
/// order, until `emit` answers `false`. Streams: holds one path's two records at a time.
pub fn fold_then_now<E>(
    records: impl Iterator<Item = Result<(String, PathRecord), E>>,
    at: &AsOf,
    mut emit: impl FnMut(ThenNow) -> Result<bool, E>,
) -> Result<(), E> {
    // The current path, its newest record included by `at`, and its newest record.
    let mut cur: Option<(String, Option<PathRecord>, PathRecord)> = None;
    fn flush<E>(
        (path, then, now): (String, Option<PathRecord>, PathRecord),
        emit: &mut impl FnMut(ThenNow) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let then = then.filter(|r| !r.is_tombstone());
        let now = Some(now).filter(|r| !r.is_tombstone());
        if then.is_none() && now.is_none() {
            return Ok(true);
        }
        emit(ThenNow { path, then, now })
    }
    for item in records {
        let (path, rec) = item?;
        match &mut cur {
            Some((p, then, now)) if *p == path => {
                if at.includes(&rec) {
                    *then = Some(rec.clone());
                }
                *now = rec;
            }
            _ => {
                if let Some(c) = cur.take() {
                    if !flush(c, &mut emit)? {
                        return Ok(());
                    }
                }
                let then = at.includes(&rec).then(|| rec.clone());
                cur = Some((path, then, rec));
            }
        }
    }
    if let Some(c) = cur {
        flush(c, &mut emit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, time_ms: u64, live: bool) -> PathRecord {
        PathRecord {
            version: Version::new(index, 0),
            time_ms,
            origin: 1,
            state: live.then(|| FileMeta {
                kind: PutKind::File,
                root: Hash([index as u8; 32]),
                size: index,
                mode: 0o644,
                mtime_ns: 0,
                holders: vec![1],
            }),
        }
    }

    fn ret(n: Option<u32>, d: Option<u32>) -> Retention {
        Retention {
            keep_versions: n,
            keep_days: d,
        }
    }

    #[test]
    fn keep_last_n() {
        let v: Vec<_> = (1..=5).map(|i| rec(i, i, true)).collect();
        let p = prune_plan(&v, &ret(Some(2), None), 100);
        assert_eq!(
            p.drop,
            vec![Version::new(1, 0), Version::new(2, 0), Version::new(3, 0)]
        );
        assert_eq!(p.horizon, 4);
        assert_eq!(prune_plan(&v, &ret(None, None), 100), PrunePlan::default());
        assert!(prune_plan(&v, &ret(Some(5), None), 100).drop.is_empty());
    }

    #[test]
    fn keep_days_counts_from_supersession() {
        let day = DAY_MS;
        // v1 superseded at day 1, v2 at day 10, v3 current.
        let v = vec![rec(1, 0, true), rec(2, day, true), rec(3, 10 * day, true)];
        // At day 5 with D = 2 days: v1 (superseded day 1) goes, v2 (superseded day 10) stays.
        let p = prune_plan(&v, &ret(None, Some(2)), 5 * day);
        assert_eq!(p.drop, vec![Version::new(1, 0)]);
        assert_eq!(p.horizon, 2);
        // Union with N = 2: v2 is kept by both; v1 still goes.
        let p = prune_plan(&v, &ret(Some(2), Some(2)), 20 * day);
        assert_eq!(p.drop, vec![Version::new(1, 0)]);
        // N = 3 keeps everything even when old.
        assert!(prune_plan(&v, &ret(Some(3), Some(2)), 20 * day)
            .drop
            .is_empty());
    }

    #[test]
    fn old_tombstone_drops_the_path() {
        let day = DAY_MS;
        let v = vec![rec(1, 0, true), rec(2, day, false)];
        assert!(prune_plan(&v, &ret(Some(5), Some(3)), 3 * day)
            .drop
            .is_empty());
        let p = prune_plan(&v, &ret(Some(5), Some(3)), 5 * day);
        assert_eq!(p.drop.len(), 2);
        assert_eq!(p.horizon, 2);
        // Without D a tombstone stays forever.
        assert!(prune_plan(&v, &ret(Some(5), None), 500 * day)
            .drop
            .is_empty());
    }

    #[test]
    fn as_of_by_time_is_as_of_by_index() {
        // Entry clock 10 * index (monotone along the log).
        let recs = vec![
            ("a".to_string(), rec(1, 10, true)),
            ("a".to_string(), rec(5, 50, true)),
            ("b".to_string(), rec(3, 30, true)),
            ("b".to_string(), rec(6, 60, false)),
            ("c".to_string(), rec(7, 70, true)),
            ("d".to_string(), rec(2, 20, false)),
        ];
        let fold = |at: AsOf, stop_after: usize| {
            let mut out = vec![];
            fold_then_now::<()>(recs.clone().into_iter().map(Ok), &at, |t| {
                out.push((
                    t.path.clone(),
                    t.then.map(|r| r.version.index),
                    t.now.map(|r| r.version.index),
                ));
                Ok(out.len() < stop_after)
            })
            .expect("fold");
            out
        };
        let by_index = fold(AsOf::index(4), usize::MAX);
        assert_eq!(
            by_index,
            vec![
                ("a".into(), Some(1), Some(5)),
                ("b".into(), Some(3), None),
                ("c".into(), None, Some(7)),
            ]
        );
        for t in 40..50 {
            let at = AsOf {
                index: 7,
                time_ms: Some(t),
                floor: 3,
            };
            assert_eq!(fold(at, usize::MAX), by_index, "time {t}");
        }
        assert_eq!(fold(AsOf::index(4), 2).len(), 2, "stops when asked");
        // As of now: nothing changed.
        assert!(fold(AsOf::index(9), usize::MAX)
            .iter()
            .all(|(_, a, b)| a == b));
    }

    #[test]
    fn then_now_changes() {
        let t = |then: Option<PathRecord>, now: Option<PathRecord>| ThenNow {
            path: "p".into(),
            then,
            now,
        };
        assert!(!t(Some(rec(1, 0, true)), Some(rec(1, 0, true))).changed());
        assert!(t(Some(rec(1, 0, true)), Some(rec(2, 0, true))).changed());
        assert!(t(None, Some(rec(2, 0, true))).changed());
        assert!(t(Some(rec(1, 0, true)), None).changed());
    }

    #[test]
    fn as_of_fold() {
        let recs = vec![
            ("a".to_string(), rec(1, 0, true)),
            ("a".to_string(), rec(5, 0, false)),
            ("b".to_string(), rec(3, 0, true)),
            ("b".to_string(), rec(6, 0, true)),
            ("c".to_string(), rec(7, 0, true)),
        ];
        let at = |x: u64| {
            let mut out = vec![];
            fold_as_of::<()>(recs.clone().into_iter().map(Ok), x, |p, r| {
                out.push((p, r.version.index));
                Ok(())
            })
            .expect("fold");
            out
        };
        assert_eq!(at(0), vec![]);
        assert_eq!(at(1), vec![("a".into(), 1)]);
        assert_eq!(at(4), vec![("a".into(), 1), ("b".into(), 3)]);
        assert_eq!(at(5), vec![("b".into(), 3)]);
        assert_eq!(at(9), vec![("b".into(), 6), ("c".into(), 7)]);
    }
}
