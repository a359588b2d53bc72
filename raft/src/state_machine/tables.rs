//! The redb tables of the state machine, their encodings, the [`IndexView`] over a write
//! transaction, and writing [`Changes`].
//!
//! | table     | key                          | value (postcard)                 |
//! |-----------|------------------------------|----------------------------------|
//! | `live`    | path                         | `PathRecord` (never a tombstone) |
//! | `history` | (path, log index, pos)       | `PathRecord`                     |
//! | `hints`   | (at_ms, path, log index, pos)| `()`                             |
//! | `tokens`  | token hash                   | `TokenRecord`                    |
//! | `token_ids` | token id                   | token hash (32 bytes)            |
//! | `dedup`   | (origin, seq)                | `Vec<Outcome>`                   |
//! | `state`   | `"cluster"`                  | `ClusterState`                   |
//! | `meta`    | `"applied"`, `"membership"`, `"root"` | `Option<LogId>`, `StoredMembership`, `Hash` |
//!
//! Everything but `meta` is replicated state (identical on every node at the same applied
//! index); `meta` is written in the same transaction as the data it describes.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use filesyncd_merkle::Hash;

use super::error::SmError;
use crate::apply::{Changes, IndexView};
use crate::command::{Outcome, RequestId, Version};
use crate::history::{ClusterState, Hint, PathRecord, TokenRecord};
use crate::NodeId;

pub type HistKey = (&'static str, u64, u32);
pub type HintKey = (u64, &'static str, u64, u32);

pub const LIVE: TableDefinition<&str, &[u8]> = TableDefinition::new("live");
pub const HISTORY: TableDefinition<HistKey, &[u8]> = TableDefinition::new("history");
pub const HINTS: TableDefinition<HintKey, ()> = TableDefinition::new("hints");
pub const TOKENS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("tokens");
pub const TOKEN_IDS: TableDefinition<&str, [u8; 32]> = TableDefinition::new("token_ids");
pub const DEDUP: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("dedup");
pub const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const STATE_KEY: &str = "cluster";
pub const META_APPLIED: &str = "applied";
pub const META_MEMBERSHIP: &str = "membership";
pub const META_ROOT: &str = "root";

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
    txn.open_table(HINTS)?;
    txn.open_table(TOKENS)?;
    txn.open_table(TOKEN_IDS)?;
    txn.open_table(DEDUP)?;
    txn.open_table(STATE)?;
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

pub fn read_token(
    t: &impl ReadableTable<[u8; 32], &'static [u8]>,
    hash: &Hash,
) -> Result<Option<TokenRecord>, SmError> {
    t.get(hash.0)?.map(|v| dec(v.value())).transpose()
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
    pub hints: redb::Table<'txn, HintKey, ()>,
    pub tokens: redb::Table<'txn, [u8; 32], &'static [u8]>,
    pub token_ids: redb::Table<'txn, &'static str, [u8; 32]>,
    pub dedup: redb::Table<'txn, (u64, u64), &'static [u8]>,
    pub state: redb::Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> WriteTables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, SmError> {
        Ok(WriteTables {
            live: txn.open_table(LIVE)?,
            history: txn.open_table(HISTORY)?,
            hints: txn.open_table(HINTS)?,
            tokens: txn.open_table(TOKENS)?,
            token_ids: txn.open_table(TOKEN_IDS)?,
            dedup: txn.open_table(DEDUP)?,
            state: txn.open_table(STATE)?,
        })
    }

    /// Writes one entry's changes.
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
        for ((path, v), rec) in &c.history {
            let key = (path.as_str(), v.index, v.pos);
            match rec {
                Some(r) => self.history.insert(key, enc(r)?.as_slice())?,
                None => self.history.remove(key)?,
            };
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
            self.tokens.insert(hash.0, enc(t)?.as_slice())?;
        }
        for (id, hash) in &c.token_ids {
            self.token_ids.insert(id.as_str(), hash.0)?;
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
