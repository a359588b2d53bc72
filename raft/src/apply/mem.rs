//! An in-memory index (ordered maps) implementing [`IndexView`]: the reference model for
//! tests and property tests of apply, without redb.

use std::collections::BTreeMap;
use std::convert::Infallible;

use filesyncd_merkle::Hash;

use super::overlay::{Changes, IndexView};
use crate::command::{Outcome, RequestId, Response, Version};
use crate::history::{ClusterState, Hint, PathRecord, TokenRecord};
use crate::NodeId;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemIndex {
    pub state: ClusterState,
    pub live: BTreeMap<String, PathRecord>,
    pub history: BTreeMap<(String, Version), PathRecord>,
    pub hints: BTreeMap<Hint, ()>,
    pub tokens: BTreeMap<Hash, TokenRecord>,
    pub token_ids: BTreeMap<String, Hash>,
    pub dedup: BTreeMap<(NodeId, u64), Vec<Outcome>>,
}

impl MemIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `changes` (the output of `apply_batch`).
    pub fn commit(&mut self, changes: Changes) {
        if let Some(s) = changes.state {
            self.state = s;
        }
        for (k, v) in changes.live {
            match v {
                Some(r) => self.live.insert(k, r),
                None => self.live.remove(&k),
            };
        }
        for (k, v) in changes.history {
            match v {
                Some(r) => self.history.insert(k, r),
                None => self.history.remove(&k),
            };
        }
        for (h, present) in changes.hints {
            if present {
                self.hints.insert(h, ());
            } else {
                self.hints.remove(&h);
            }
        }
        self.tokens.extend(changes.tokens);
        self.token_ids.extend(changes.token_ids);
        for (k, v) in changes.dedup {
            match v {
                Some(o) => self.dedup.insert(k, o),
                None => self.dedup.remove(&k),
            };
        }
    }

    /// Applies a batch at `index` and commits it; returns the response.
    pub fn apply(&mut self, index: u64, batch: &crate::command::Batch) -> Response {
        let (changes, resp) = match super::apply_batch(self, index, batch) {
            Ok(r) => r,
            Err(never) => match never {},
        };
        self.commit(changes);
        resp
    }
}

impl IndexView for MemIndex {
    type Error = Infallible;

    fn state(&self) -> Result<ClusterState, Infallible> {
        Ok(self.state.clone())
    }

    fn live(&self, path: &str) -> Result<Option<PathRecord>, Infallible> {
        Ok(self.live.get(path).cloned())
    }

    fn versions(&self, path: &str) -> Result<Vec<PathRecord>, Infallible> {
        let lo = (path.to_string(), Version::new(0, 0));
        let hi = (path.to_string(), Version::new(u64::MAX, u32::MAX));
        Ok(self
            .history
            .range(lo..=hi)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn next_live_with_prefix(
        &self,
        prefix: &str,
        after: &str,
    ) -> Result<Option<String>, Infallible> {
        use std::ops::Bound;
        Ok(self
            .live
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .next()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(prefix))
            .cloned())
    }

    fn token(&self, hash: &Hash) -> Result<Option<TokenRecord>, Infallible> {
        Ok(self.tokens.get(hash).cloned())
    }

    fn token_by_id(&self, id: &str) -> Result<Option<Hash>, Infallible> {
        Ok(self.token_ids.get(id).copied())
    }

    fn dedup(&self, id: RequestId) -> Result<Option<Vec<Outcome>>, Infallible> {
        Ok(self.dedup.get(&(id.origin, id.seq)).cloned())
    }

    fn dedup_seqs(&self, origin: NodeId) -> Result<Vec<u64>, Infallible> {
        Ok(self
            .dedup
            .range((origin, 0)..=(origin, u64::MAX))
            .map(|((_, s), _)| *s)
            .collect())
    }

    fn hints_due(&self, until_ms: u64, limit: usize) -> Result<Vec<Hint>, Infallible> {
        Ok(self
            .hints
            .keys()
            .take_while(|h| h.at_ms <= until_ms)
            .take(limit)
            .cloned()
            .collect())
    }
}
