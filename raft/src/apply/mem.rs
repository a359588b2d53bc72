//! An in-memory index (ordered maps) implementing [`IndexView`]: the reference model for
//! tests and property tests of apply, without redb.

use std::collections::BTreeMap;
use std::convert::Infallible;

use filesyncd_merkle::Hash;

use super::overlay::{Changes, IndexView};
use crate::command::{ClusterSeed, Outcome, RequestId, Response, Version};
use crate::history::{ClusterState, Hint, PathRecord, RevokedRecord, TokenRecord};
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
    pub revoked: BTreeMap<NodeId, RevokedRecord>,
    pub cluster_key: Option<ClusterSeed>,
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
        for (h, t) in changes.tokens {
            match t {
                Some(t) => self.tokens.insert(h, t),
                None => self.tokens.remove(&h),
            };
        }
        for (id, h) in changes.token_ids {
            match h {
                Some(h) => self.token_ids.insert(id, h),
                None => self.token_ids.remove(&id),
            };
        }
        self.revoked.extend(changes.revoked);
        if changes.cluster_key.is_some() {
            self.cluster_key = changes.cluster_key;
        }
        for (k, v) in changes.dedup {
            match v {
                Some(o) => self.dedup.insert(k, o),
                None => self.dedup.remove(&k),
            };
        }
    }

    /// The newest retained record of `path`, tombstones included (`None`: the path has no
    /// retained record), as the state machine's view reads it.
    pub fn newest(&self, path: &str) -> Option<PathRecord> {
        if let Some(r) = self.live.get(path) {
            return Some(r.clone());
        }
        let lo = (path.to_string(), Version::new(0, 0));
        let hi = (path.to_string(), Version::new(u64::MAX, u32::MAX));
        self.history
            .range(lo..=hi)
            .next_back()
            .map(|(_, r)| r.clone())
    }

    /// Applies a batch at `index` and commits it; returns the response.
    /// No membership: holders are not counted (see [`super::Quorums`]).
    pub fn apply(&mut self, index: u64, batch: &crate::command::Batch) -> Response {
        self.apply_with(index, batch, &[])
    }

    /// [`MemIndex::apply`] under the voter sets `quorums`.
    pub fn apply_with(
        &mut self,
        index: u64,
        batch: &crate::command::Batch,
        quorums: &super::Quorums,
    ) -> Response {
        let (changes, resp) = match super::apply_batch(self, index, batch, quorums) {
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

    fn tokens(&self, limit: usize) -> Result<Vec<(Hash, TokenRecord)>, Infallible> {
        Ok(self
            .tokens
            .iter()
            .take(limit)
            .map(|(h, t)| (*h, t.clone()))
            .collect())
    }

    fn token_ids(&self, limit: usize) -> Result<Vec<(String, Hash)>, Infallible> {
        Ok(self
            .token_ids
            .iter()
            .take(limit)
            .map(|(id, h)| (id.clone(), *h))
            .collect())
    }

    fn cluster_key(&self) -> Result<Option<ClusterSeed>, Infallible> {
        Ok(self.cluster_key)
    }

    fn revoked(&self, node: NodeId) -> Result<Option<RevokedRecord>, Infallible> {
        Ok(self.revoked.get(&node).cloned())
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

#[cfg(test)]
mod tests {
    use filesyncd_merkle::Hash;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::MemIndex;
    use crate::command::{ChunkerParams, Op, PutKind, Request, RequestId, Retention, Version};
    use crate::state_machine::StateMachine;
    use crate::TypeConfig;

    fn put(path: &str, c: u8, base: Option<Version>) -> Op {
        Op::Put {
            path: path.into(),
            kind: PutKind::File,
            root: Hash([c; 32]),
            size: 1,
            mode: 0o644,
            mtime_ns: 0,
            origin: 2,
            base,
            holders: vec![2],
        }
    }

    /// `newest` reads what the redb state machine's view reads: the live
    /// record, else the newest tombstone, else nothing.
    #[test]
    fn newest_is_the_state_machines() {
        let v = Version::new;
        let batches = [
            vec![Op::InitCluster {
                cluster_id: "c".into(),
                chunker: ChunkerParams::default(),
                retention: Retention::default(),
            }],
            vec![put("a", 1, None), put("b", 1, None)],
            vec![put("a", 2, Some(v(2, 0)))],
            vec![Op::Delete {
                path: "b".into(),
                base: v(2, 1),
            }],
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = StateMachine::open(dir.path()).expect("open");
        let mut model = MemIndex::new();
        for (i, ops) in batches.into_iter().enumerate() {
            let index = i as u64 + 1;
            let req = Request::new(
                RequestId {
                    origin: 9,
                    seq: index,
                },
                1_000,
                ops,
            );
            let Request::V1(batch) = &req;
            model.apply(index, batch);
            let entry: Entry<TypeConfig> = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(req.clone()),
            };
            sm.apply_blocking(vec![entry]).expect("apply");
        }
        let view = sm.reader().view().expect("view");
        for (path, want) in [
            ("a", Some((v(3, 0), false))),
            ("b", Some((v(4, 0), true))),
            ("c", None),
        ] {
            let got = model.newest(path);
            assert_eq!(
                got.as_ref().map(|r| (r.version, r.is_tombstone())),
                want,
                "{path}"
            );
            assert_eq!(got, view.newest(path).expect("read"), "{path}");
        }
    }
}
