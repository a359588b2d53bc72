//! The redb tables of the state machine, their encodings, the [`IndexView`] over a write
//! transaction, and writing [`Changes`].
//!
//! | table     | key                          | value (postcard)                 |
//! |-----------|------------------------------|----------------------------------|
//! | `live`    | path                         | `PathRecord` (never a tombstone) |
//! | `history` | (path, log index, pos)       | `PathRecord`                     |
//! | `changed` | (log index, pos)             | path                             |
//! | `hints`   | (at_ms, path, log index, pos)| `()`                             |
//! | `tokens`  | token hash                   | `TokenRecord`                    |
//! | `token_ids` | token id                   | token hash (32 bytes)            |
//! | `dedup`   | (origin, seq)                | `Vec<Outcome>`                   |
//! | `revoked` | node id                      | `RevokedRecord`                  |
//! | `revoked_peers` | PeerId (text)          | node id                          |
//! | `state`   | `"cluster"`, `"cluster_key"` | `ClusterState`, `ClusterSeed`    |
//! | `meta`    | `"applied"`, `"membership"`, `"root"` | `Option<LogId>`, `StoredMembership`, `Hash` |
//! |           | `"format"`, `"changed_at"`   | `u32`, `Option<LogId>`           |
//!
//! Everything but `meta` is replicated state (identical on every node at the same applied
//! index); `meta` is written in the same transaction as the data it describes.
//!
//! # The `changed` index
//! A secondary index of `history` for "what changed after log index X" (`changed_since`):
//! for every path with at least one retained record it holds exactly ONE key, the version of
//! the path's newest record, naming the path. Its size is the number of paths in the history
//! (live and tombstoned), never the number of versions. A version is written by one op for
//! one path, so no two paths share a key; a write that would make them share one, or remove
//! a key naming another path, is refused as corruption. It is derived state: apply maintains
//! it in the same transaction as `history` ([`WriteTables::write`]), snapshot install
//! rebuilds it from the records it writes, and open rebuilds it from `history`
//! ([`rebuild_changed`]) when the file predates it.
//!
//! # Format
//! `meta["format"]` is [`SM_FORMAT`]; a file without it was written by format 1 (no
//! `changed` table). `meta["changed_at"]` is the applied log id the `changed` index was last
//! maintained at: every apply and install writes it beside `"applied"`, so a file that a
//! format-1 binary applied to after a format-2 one (a downgrade) is caught on open by
//! `changed_at != applied` and its index rebuilt. Format 3 adds `revoked` and
//! `revoked_peers` (created empty on open) and the `"cluster_key"` state key.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use filesyncd_merkle::Hash;

use super::error::SmError;
use crate::apply::{Changes, IndexView};
use crate::command::{ClusterSeed, Outcome, RequestId, Version};
use crate::history::{ClusterState, Hint, PathRecord, RevokedRecord, TokenRecord};
use crate::NodeId;

pub type HistKey = (&'static str, u64, u32);
pub type HintKey = (u64, &'static str, u64, u32);
/// `(log index, pos)` of the newest retained record of a path (the value).
pub type ChangedKey = (u64, u32);

pub const LIVE: TableDefinition<&str, &[u8]> = TableDefinition::new("live");
pub const HISTORY: TableDefinition<HistKey, &[u8]> = TableDefinition::new("history");
pub const HINTS: TableDefinition<HintKey, ()> = TableDefinition::new("hints");
pub const CHANGED: TableDefinition<ChangedKey, &str> = TableDefinition::new("changed");
pub const TOKENS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("tokens");
pub const TOKEN_IDS: TableDefinition<&str, [u8; 32]> = TableDefinition::new("token_ids");
pub const DEDUP: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("dedup");
pub const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
pub const REVOKED: TableDefinition<u64, &[u8]> = TableDefinition::new("revoked");
pub const REVOKED_PEERS: TableDefinition<&str, u64> = TableDefinition::new("revoked_peers");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const STATE_KEY: &str = "cluster";
pub const CLUSTER_KEY: &str = "cluster_key";
pub const META_APPLIED: &str = "applied";
pub const META_MEMBERSHIP: &str = "membership";
pub const META_ROOT: &str = "root";
pub const META_FORMAT: &str = "format";
pub const META_CHANGED_AT: &str = "changed_at";
/// The last log id of the last snapshot installed from a leader (written in
/// the install's commit; see `snapshot::repair_current`).
pub const META_INSTALLED: &str = "installed";

/// Version of the state machine's table layout, in `meta["format"]`; bumped on any change of
/// the tables. 1 (implicit: no marker): without `changed`. 2: with `changed`. 3: with
/// `revoked`, `revoked_peers` and the cluster key.
pub const SM_FORMAT: u32 = 3;

pub fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, SmError> {
    Ok(postcard::to_allocvec(v)?)
}

pub fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, SmError> {
    Ok(postcard::from_bytes(b)?)
}

/// Creates every table (so that read transactions find them).
pub fn create_all(txn: &WriteTransaction) -> Result<(), SmError> {
    txn.open_table(LIVE)?;
    txn.open_table(HISTORY)?;
    txn.open_table(CHANGED)?;
    txn.open_table(HINTS)?;
    txn.open_table(TOKENS)?;
    txn.open_table(TOKEN_IDS)?;
    txn.open_table(DEDUP)?;
    txn.open_table(STATE)?;
    txn.open_table(REVOKED)?;
    txn.open_table(REVOKED_PEERS)?;
    txn.open_table(META)?;
    Ok(())
}

// ---- reads shared by the write view and the read handle ----

pub fn read_state(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<ClusterState, SmError> {
    match t.get(STATE_KEY)? {
        Some(v) => dec(v.value()),
        None => Ok(ClusterState::default()),
    }
}

pub fn read_live(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &str,
) -> Result<Option<PathRecord>, SmError> {
    t.get(path)?.map(|v| dec(v.value())).transpose()
}

pub fn read_versions(
    t: &impl ReadableTable<HistKey, &'static [u8]>,
    path: &str,
) -> Result<Vec<PathRecord>, SmError> {
    let mut out = Vec::new();
    for item in t.range((path, 0u64, 0u32)..=(path, u64::MAX, u32::MAX))? {
        let (_, v) = item?;
        out.push(dec(v.value())?);
    }
    Ok(out)
}

/// The version of the newest retained record of `path`.
pub fn newest_version(
    t: &impl ReadableTable<HistKey, &'static [u8]>,
    path: &str,
) -> Result<Option<Version>, SmError> {
    match t
        .range((path, 0u64, 0u32)..=(path, u64::MAX, u32::MAX))?
        .next_back()
    {
        Some(item) => {
            let (k, _) = item?;
            let (_, index, pos) = k.value();
            Ok(Some(Version::new(index, pos)))
        }
        None => Ok(None),
    }
}

/// Replaces the content of `changed` by the index of `history` (one key per path: its newest
/// record's), in `txn`. One streaming pass over `history`; returns the number of paths.
pub fn rebuild_changed(txn: &WriteTransaction) -> Result<u64, SmError> {
    txn.delete_table(CHANGED)?;
    let mut changed = txn.open_table(CHANGED)?;
    let history = txn.open_table(HISTORY)?;
    let mut paths = 0u64;
    // The newest key seen of the current path: (path, index, pos).
    let mut pending: Option<(String, u64, u32)> = None;
    for item in history.iter()? {
        let (k, _) = item?;
        let (path, index, pos) = k.value();
        match &mut pending {
            Some((p, i, ps)) if p.as_str() == path => {
                (*i, *ps) = (index, pos);
            }
            _ => {
                if let Some((p, i, ps)) = pending.take() {
                    changed_insert(&mut changed, Version::new(i, ps), &p)?;
                    paths += 1;
                }
                pending = Some((path.to_string(), index, pos));
            }
        }
    }
    if let Some((p, i, ps)) = pending {
        changed_insert(&mut changed, Version::new(i, ps), &p)?;
        paths += 1;
    }
    Ok(paths)
}

/// Adds the `changed` key of `path`'s newest record `v`.
pub fn changed_insert(
    t: &mut redb::Table<'_, ChangedKey, &'static str>,
    v: Version,
    path: &str,
) -> Result<(), SmError> {
    if let Some(old) = t.insert((v.index, v.pos), path)? {
        if old.value() != path {
            return Err(SmError::Corrupt(format!(
                "version {v} is the newest of both {:?} and {path:?}",
                old.value()
            )));
        }
    }
    Ok(())
}

/// Removes the `changed` key `v` of `path`.
fn changed_remove(
    t: &mut redb::Table<'_, ChangedKey, &'static str>,
    v: Version,
    path: &str,
) -> Result<(), SmError> {
    match t.remove((v.index, v.pos))? {
        Some(old) if old.value() == path => Ok(()),
        Some(old) => Err(SmError::Corrupt(format!(
            "the changed index names {:?} at {v}, the newest of {path:?}",
            old.value()
        ))),
        None => Err(SmError::Corrupt(format!(
            "the changed index lacks {v}, the newest of {path:?}"
        ))),
    }
}

pub fn read_token(
    t: &impl ReadableTable<[u8; 32], &'static [u8]>,
    hash: &Hash,
) -> Result<Option<TokenRecord>, SmError> {
    t.get(hash.0)?.map(|v| dec(v.value())).transpose()
}

pub fn read_cluster_key(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<ClusterSeed>, SmError> {
    t.get(CLUSTER_KEY)?.map(|v| dec(v.value())).transpose()
}

pub fn read_revoked(
    t: &impl ReadableTable<u64, &'static [u8]>,
    node: NodeId,
) -> Result<Option<RevokedRecord>, SmError> {
    t.get(node)?.map(|v| dec(v.value())).transpose()
}

pub fn read_token_id(
    t: &impl ReadableTable<&'static str, [u8; 32]>,
    id: &str,
) -> Result<Option<Hash>, SmError> {
    Ok(t.get(id)?.map(|v| Hash(v.value())))
}

/// The write transaction's tables, open for one `apply` call.
pub struct WriteTables<'txn> {
    pub live: redb::Table<'txn, &'static str, &'static [u8]>,
    pub history: redb::Table<'txn, HistKey, &'static [u8]>,
    pub changed: redb::Table<'txn, ChangedKey, &'static str>,
    pub hints: redb::Table<'txn, HintKey, ()>,
    pub tokens: redb::Table<'txn, [u8; 32], &'static [u8]>,
    pub token_ids: redb::Table<'txn, &'static str, [u8; 32]>,
    pub dedup: redb::Table<'txn, (u64, u64), &'static [u8]>,
    pub state: redb::Table<'txn, &'static str, &'static [u8]>,
    pub revoked: redb::Table<'txn, u64, &'static [u8]>,
    pub revoked_peers: redb::Table<'txn, &'static str, u64>,
}

impl<'txn> WriteTables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, SmError> {
        Ok(WriteTables {
            live: txn.open_table(LIVE)?,
            history: txn.open_table(HISTORY)?,
            changed: txn.open_table(CHANGED)?,
            hints: txn.open_table(HINTS)?,
            tokens: txn.open_table(TOKENS)?,
            token_ids: txn.open_table(TOKEN_IDS)?,
            dedup: txn.open_table(DEDUP)?,
            state: txn.open_table(STATE)?,
            revoked: txn.open_table(REVOKED)?,
            revoked_peers: txn.open_table(REVOKED_PEERS)?,
        })
    }

    /// Writes one entry's changes. The `changed` index follows `history`: for every path
    /// whose records change, its key moves from the newest version before the write
    /// (`Changes::newest_before`) to the newest after it (removed when no record is left);
    /// O(log n) per touched path.
    pub fn write(&mut self, c: &Changes) -> Result<(), SmError> {
        if let Some(s) = &c.state {
            self.state.insert(STATE_KEY, enc(s)?.as_slice())?;
        }
        for (path, rec) in &c.live {
            match rec {
                Some(r) => self.live.insert(path.as_str(), enc(r)?.as_slice())?,
                None => self.live.remove(path.as_str())?,
            };
        }
        // `c.history` is sorted by (path, version): one run per path.
        let mut runs = c.history.iter().peekable();
        while let Some(&((path, _), _)) = runs.peek() {
            // Apply says what the newest record was when it wrote or dropped one; a run
            // without (a record rewritten in place: holders) is looked up.
            let before = match c.newest_before.get(path) {
                Some(v) => *v,
                None => newest_version(&self.history, path)?,
            };
            let mut inserted: Option<Version> = None;
            let mut before_removed = false;
            while let Some(((_, v), rec)) = runs.next_if(|((p, _), _)| p == path) {
                let key = (path.as_str(), v.index, v.pos);
                match rec {
                    Some(r) => {
                        self.history.insert(key, enc(r)?.as_slice())?;
                        inserted = inserted.max(Some(*v));
                    }
                    None => {
                        self.history.remove(key)?;
                        before_removed |= before == Some(*v);
                    }
                };
            }
            let after = match (before, inserted) {
                // No record before: the newest is the newest written.
                (None, i) => i,
                // A record newer than every earlier one (a new version).
                (Some(b), Some(i)) if i > b => Some(i),
                (Some(b), _) if !before_removed => Some(b),
                // The newest was pruned: look again (once per path pruned away).
                (Some(_), _) => newest_version(&self.history, path)?,
            };
            if before != after {
                if let Some(v) = before {
                    changed_remove(&mut self.changed, v, path)?;
                }
                if let Some(v) = after {
                    changed_insert(&mut self.changed, v, path)?;
                }
            }
        }
        for (h, present) in &c.hints {
            let key = (h.at_ms, h.path.as_str(), h.version.index, h.version.pos);
            if *present {
                self.hints.insert(key, ())?;
            } else {
                self.hints.remove(key)?;
            }
        }
        for (hash, t) in &c.tokens {
            match t {
                Some(t) => self.tokens.insert(hash.0, enc(t)?.as_slice())?,
                None => self.tokens.remove(hash.0)?,
            };
        }
        for (id, hash) in &c.token_ids {
            match hash {
                Some(h) => self.token_ids.insert(id.as_str(), h.0)?,
                None => self.token_ids.remove(id.as_str())?,
            };
        }
        for (node, r) in &c.revoked {
            self.revoked.insert(*node, enc(r)?.as_slice())?;
            self.revoked_peers.insert(r.peer_id.as_str(), *node)?;
        }
        if let Some(k) = &c.cluster_key {
            self.state.insert(CLUSTER_KEY, enc(k)?.as_slice())?;
        }
        for ((origin, seq), o) in &c.dedup {
            match o {
                Some(o) => self.dedup.insert((*origin, *seq), enc(o)?.as_slice())?,
                None => self.dedup.remove((*origin, *seq))?,
            };
        }
        Ok(())
    }
}

impl IndexView for WriteTables<'_> {
    type Error = SmError;

    fn state(&self) -> Result<ClusterState, SmError> {
        read_state(&self.state)
    }

    fn live(&self, path: &str) -> Result<Option<PathRecord>, SmError> {
        read_live(&self.live, path)
    }

    fn versions(&self, path: &str) -> Result<Vec<PathRecord>, SmError> {
        read_versions(&self.history, path)
    }

    fn next_live_with_prefix(&self, prefix: &str, after: &str) -> Result<Option<String>, SmError> {
        use std::ops::Bound;
        let mut it = self
            .live
            .range::<&str>((Bound::Excluded(after), Bound::Unbounded))?;
        match it.next() {
            Some(item) => {
                let (k, _) = item?;
                let k = k.value();
                Ok(k.starts_with(prefix).then(|| k.to_string()))
            }
            None => Ok(None),
        }
    }

    fn token(&self, hash: &Hash) -> Result<Option<TokenRecord>, SmError> {
        read_token(&self.tokens, hash)
    }

    fn token_by_id(&self, id: &str) -> Result<Option<Hash>, SmError> {
        read_token_id(&self.token_ids, id)
    }

    fn tokens(&self, limit: usize) -> Result<Vec<(Hash, TokenRecord)>, SmError> {
        let mut out = Vec::new();
        for item in self.tokens.iter()?.take(limit) {
            let (k, v) = item?;
            out.push((Hash(k.value()), dec(v.value())?));
        }
        Ok(out)
    }

    fn token_ids(&self, limit: usize) -> Result<Vec<(String, Hash)>, SmError> {
        let mut out = Vec::new();
        for item in self.token_ids.iter()?.take(limit) {
            let (k, v) = item?;
            out.push((k.value().to_string(), Hash(v.value())));
        }
        Ok(out)
    }

    fn cluster_key(&self) -> Result<Option<ClusterSeed>, SmError> {
        read_cluster_key(&self.state)
    }

    fn revoked(&self, node: NodeId) -> Result<Option<RevokedRecord>, SmError> {
        read_revoked(&self.revoked, node)
    }

    fn dedup(&self, id: RequestId) -> Result<Option<Vec<Outcome>>, SmError> {
        self.dedup
            .get((id.origin, id.seq))?
            .map(|v| dec(v.value()))
            .transpose()
    }

    fn dedup_seqs(&self, origin: NodeId) -> Result<Vec<u64>, SmError> {
        let mut out = Vec::new();
        for item in self.dedup.range((origin, 0u64)..=(origin, u64::MAX))? {
            let (k, _) = item?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    fn hints_due(&self, until_ms: u64, limit: usize) -> Result<Vec<Hint>, SmError> {
        let mut out = Vec::new();
        let lo: HintKey = (0, "", 0, 0);
        for item in self.hints.range(lo..)? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            let (at_ms, path, index, pos) = k.value();
            if at_ms > until_ms {
                break;
            }
            out.push(Hint {
                at_ms,
                path: path.to_string(),
                version: Version::new(index, pos),
            });
        }
        Ok(out)
    }
}
