//! The read interface apply needs ([`IndexView`]) and the change set it produces
//! ([`Changes`]), which doubles as an overlay so that later ops of a batch see earlier ones.

use std::collections::BTreeMap;

use filesyncd_merkle::Hash;

use crate::command::{ClusterSeed, Outcome, RequestId, Version};
use crate::history::{ClusterState, Hint, PathRecord, RevokedRecord, TokenRecord};
use crate::NodeId;

/// A read-only view of the index, as of the start of an entry.
pub trait IndexView {
    type Error;
    fn state(&self) -> Result<ClusterState, Self::Error>;
    /// The live (non-tombstone current) record of `path`.
    fn live(&self, path: &str) -> Result<Option<PathRecord>, Self::Error>;
    /// Every retained record of `path`, oldest first.
    fn versions(&self, path: &str) -> Result<Vec<PathRecord>, Self::Error>;
    /// The first live path `> after` that starts with `prefix`.
    fn next_live_with_prefix(
        &self,
        prefix: &str,
        after: &str,
    ) -> Result<Option<String>, Self::Error>;
    fn token(&self, hash: &Hash) -> Result<Option<TokenRecord>, Self::Error>;
    /// The hash of the token registered under `id` (`AddNamedToken`).
    fn token_by_id(&self, id: &str) -> Result<Option<Hash>, Self::Error>;
    fn dedup(&self, id: RequestId) -> Result<Option<Vec<Outcome>>, Self::Error>;
    /// The sequence numbers recorded for `origin`, ascending.
    fn dedup_seqs(&self, origin: NodeId) -> Result<Vec<u64>, Self::Error>;
    /// Up to `limit` hints with `at_ms <= until_ms`, oldest first.
    fn hints_due(&self, until_ms: u64, limit: usize) -> Result<Vec<Hint>, Self::Error>;
    /// Up to `limit` token records, by hash.
    fn tokens(&self, limit: usize) -> Result<Vec<(Hash, TokenRecord)>, Self::Error>;
    /// Up to `limit` (token id, hash) pairs, by id.
    fn token_ids(&self, limit: usize) -> Result<Vec<(String, Hash)>, Self::Error>;
    /// The cluster key's seed (`SetClusterKey`).
    fn cluster_key(&self) -> Result<Option<ClusterSeed>, Self::Error>;
    /// Whether `node` was removed from the membership (and when).
    fn revoked(&self, node: NodeId) -> Result<Option<RevokedRecord>, Self::Error>;
}

/// The mutations of one entry, final value per key (`None`/`false` = delete). Iteration
/// order is the key order, so writing them out is deterministic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub state: Option<ClusterState>,
    pub live: BTreeMap<String, Option<PathRecord>>,
    pub history: BTreeMap<(String, Version), Option<PathRecord>>,
    pub hints: BTreeMap<Hint, bool>,
    pub tokens: BTreeMap<Hash, Option<TokenRecord>>,
    /// Token id → token hash (`None`: the id is pruned with its token).
    pub token_ids: BTreeMap<String, Option<Hash>>,
    /// Removed members (only ever added).
    pub revoked: BTreeMap<NodeId, RevokedRecord>,
    /// Set once, by the first `SetClusterKey`.
    pub cluster_key: Option<ClusterSeed>,
    pub dedup: BTreeMap<(NodeId, u64), Option<Vec<Outcome>>>,
    /// For every path this entry writes a record of or drops records from: the version of
    /// its newest record before the entry (`None`: it had none). Not state: it lets the
    /// state machine move the path's key in its `changed` index without a lookup.
    pub newest_before: BTreeMap<String, Option<Version>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// `base` seen through `changes`.
pub struct Overlay<'a, V: IndexView> {
    pub base: &'a V,
    pub changes: Changes,
}

impl<'a, V: IndexView> Overlay<'a, V> {
    pub fn new(base: &'a V) -> Self {
        Overlay {
            base,
            changes: Changes::default(),
        }
    }

    pub fn state(&self) -> Result<ClusterState, V::Error> {
        match &self.changes.state {
            Some(s) => Ok(s.clone()),
            None => self.base.state(),
        }
    }

    pub fn live(&self, path: &str) -> Result<Option<PathRecord>, V::Error> {
        match self.changes.live.get(path) {
            Some(v) => Ok(v.clone()),
            None => self.base.live(path),
        }
    }

    pub fn versions(&self, path: &str) -> Result<Vec<PathRecord>, V::Error> {
        let base = self.base.versions(path)?;
        let lo = (path.to_string(), Version::new(0, 0));
        let hi = (path.to_string(), Version::new(u64::MAX, u32::MAX));
        let mut ov = self.changes.history.range(lo..=hi).peekable();
        if ov.peek().is_none() {
            return Ok(base);
        }
        let mut merged: BTreeMap<Version, PathRecord> =
            base.into_iter().map(|r| (r.version, r)).collect();
        for ((_, v), r) in ov {
            match r {
                Some(r) => merged.insert(*v, r.clone()),
                None => merged.remove(v),
            };
        }
        Ok(merged.into_values().collect())
    }

    /// Whether any live path lies strictly under directory `dir`.
    pub fn has_live_children(&self, dir: &str) -> Result<bool, V::Error> {
        let prefix = format!("{dir}/");
        let in_overlay = self
            .changes
            .live
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(_, v)| v.is_some());
        if in_overlay {
            return Ok(true);
        }
        let mut cursor = prefix.clone();
        while let Some(k) = self.base.next_live_with_prefix(&prefix, &cursor)? {
            match self.changes.live.get(&k) {
                Some(None) => cursor = k, // deleted earlier in this entry
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    pub fn token(&self, hash: &Hash) -> Result<Option<TokenRecord>, V::Error> {
        match self.changes.tokens.get(hash) {
            Some(t) => Ok(t.clone()),
            None => self.base.token(hash),
        }
    }

    pub fn token_by_id(&self, id: &str) -> Result<Option<Hash>, V::Error> {
        match self.changes.token_ids.get(id) {
            Some(h) => Ok(*h),
            None => self.base.token_by_id(id),
        }
    }

    /// Every token record (at most `limit` from the base), this entry's
    /// changes included, by hash.
    pub fn tokens(&self, limit: usize) -> Result<Vec<(Hash, TokenRecord)>, V::Error> {
        let mut all: BTreeMap<Hash, TokenRecord> = self.base.tokens(limit)?.into_iter().collect();
        for (h, t) in &self.changes.tokens {
            match t {
                Some(t) => all.insert(*h, t.clone()),
                None => all.remove(h),
            };
        }
        Ok(all.into_iter().collect())
    }

    /// Every (token id, hash) pair (at most `limit` from the base), this
    /// entry's changes included.
    pub fn token_ids(&self, limit: usize) -> Result<Vec<(String, Hash)>, V::Error> {
        let mut all: BTreeMap<String, Hash> = self.base.token_ids(limit)?.into_iter().collect();
        for (id, h) in &self.changes.token_ids {
            match h {
                Some(h) => all.insert(id.clone(), *h),
                None => all.remove(id),
            };
        }
        Ok(all.into_iter().collect())
    }

    pub fn cluster_key(&self) -> Result<Option<ClusterSeed>, V::Error> {
        match self.changes.cluster_key {
            Some(k) => Ok(Some(k)),
            None => self.base.cluster_key(),
        }
    }

    pub fn revoked(&self, node: NodeId) -> Result<Option<RevokedRecord>, V::Error> {
        match self.changes.revoked.get(&node) {
            Some(r) => Ok(Some(r.clone())),
            None => self.base.revoked(node),
        }
    }

    pub fn dedup(&self, id: RequestId) -> Result<Option<Vec<Outcome>>, V::Error> {
        match self.changes.dedup.get(&(id.origin, id.seq)) {
            Some(v) => Ok(v.clone()),
            None => self.base.dedup(id),
        }
    }

    pub fn dedup_seqs(&self, origin: NodeId) -> Result<Vec<u64>, V::Error> {
        let mut seqs: std::collections::BTreeSet<u64> =
            self.base.dedup_seqs(origin)?.into_iter().collect();
        for ((_, s), v) in self.changes.dedup.range((origin, 0)..=(origin, u64::MAX)) {
            if v.is_some() {
                seqs.insert(*s);
            } else {
                seqs.remove(s);
            }
        }
        Ok(seqs.into_iter().collect())
    }

    pub fn hints_due(&self, until_ms: u64, limit: usize) -> Result<Vec<Hint>, V::Error> {
        let mut all: std::collections::BTreeSet<Hint> = self
            .base
            .hints_due(until_ms, limit)?
            .into_iter()
            .filter(|h| self.changes.hints.get(h) != Some(&false))
            .collect();
        for (h, present) in &self.changes.hints {
            if *present && h.at_ms <= until_ms {
                all.insert(h.clone());
            }
        }
        Ok(all.into_iter().take(limit).collect())
    }

    /// Writes a new newest record of `path`, whose newest record in this view is `newest`.
    pub fn put_record(&mut self, path: &str, rec: PathRecord, newest: Option<Version>) {
        self.note_newest(path, newest);
        self.changes
            .history
            .insert((path.to_string(), rec.version), Some(rec.clone()));
        let live = if rec.is_tombstone() { None } else { Some(rec) };
        self.changes.live.insert(path.to_string(), live);
    }

    /// Drops a record of `path`, whose newest record in this view is `newest`.
    pub fn drop_record(&mut self, path: &str, version: Version, newest: Option<Version>) {
        self.note_newest(path, newest);
        self.changes
            .history
            .insert((path.to_string(), version), None);
    }

    /// Records `newest` as the newest version of `path` before the entry, unless an earlier
    /// record or drop of `path` in this entry did (only those change the set of versions).
    fn note_newest(&mut self, path: &str, newest: Option<Version>) {
        if !self.changes.newest_before.contains_key(path) {
            self.changes.newest_before.insert(path.to_string(), newest);
        }
    }

    pub fn set_live(&mut self, path: &str, rec: Option<PathRecord>) {
        self.changes.live.insert(path.to_string(), rec);
    }

    pub fn set_history(&mut self, path: &str, rec: PathRecord) {
        self.changes
            .history
            .insert((path.to_string(), rec.version), Some(rec));
    }
}
