//! Synchronous redb layer of the log store: tables, open-time verification, range reads and
//! the write-transaction steps the writer thread composes.
//!
//! Tables:
//! - `raft_log`  : `u64 index -> framed postcard(Entry)`
//! - `raft_meta` : `&str name -> framed postcard(value)` with names [`META_FORMAT`] (`u32`),
//!   [`META_NODE_ID`] (`u64`), [`META_VOTE`] (`Vote`), [`META_COMMITTED`] (`Option<LogId>`),
//!   [`META_PURGED`] (`LogId`).

use std::ops::Bound;
use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;

use super::error::{CorruptReason, LogStoreError};
use super::record::{self, RecordKey};
use super::{Entry, LogId, Vote};
use crate::NodeId;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_NODE_ID: &str = "node_id";
pub(crate) const META_VOTE: &str = "vote";
pub(crate) const META_COMMITTED: &str = "committed";
pub(crate) const META_PURGED: &str = "last_purged";

/// Version of the table layout; bumped on any incompatible change.
pub const LOG_STORE_FORMAT: u32 = 1;

/// redb page cache per log store. The log is read mostly near its tail (replication); a small
/// cache keeps three in-process nodes cheap.
const CACHE_BYTES: usize = 32 << 20;

/// What [`open`] found on disk, all verified.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
    /// Last present entry, or `last_purged` when the log is empty.
    pub last_log_id: Option<LogId>,
    pub entries: u64,
}

/// Decodes a log record and checks it is the entry for `index`.
pub(crate) fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, LogStoreError> {
    let key = RecordKey::Log(index);
    let entry: Entry = record::decode(key, bytes).map_err(|r| LogStoreError::corrupt(key, r))?;
    let found = entry.log_id.index;
    if found != index {
        return Err(LogStoreError::corrupt(
            key,
            CorruptReason::IndexMismatch { key: index, found },
        ));
    }
    Ok(entry)
}

fn decode_meta<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<T>, LogStoreError> {
    match table.get(name)? {
        None => Ok(None),
        Some(v) => {
            let key = RecordKey::Meta(name);
            record::decode(key, v.value())
                .map(Some)
                .map_err(|r| LogStoreError::corrupt(key, r))
        }
    }
}

pub(crate) fn put_meta<T: serde::Serialize + ?Sized>(
    txn: &WriteTransaction,
    name: &str,
    value: &T,
) -> Result<(), LogStoreError> {
    let rec = record::encode(RecordKey::Meta(name), value).map_err(LogStoreError::Encode)?;
    txn.open_table(META)?.insert(name, rec.as_slice())?;
    Ok(())
}

/// Opens (creating if absent) the database at `path` for node `node_id` and verifies every
/// record. See the module doc of [`super`] for the policy on corruption.
pub(crate) fn open(path: &Path, node_id: NodeId) -> Result<(Database, Recovered), LogStoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| LogStoreError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)?;
    initialize(&db, node_id)?;
    let recovered = verify(&db, node_id)?;
    Ok((db, recovered))
}

/// Writes the format marker and node id into a fresh database; checks them otherwise.
fn initialize(db: &Database, node_id: NodeId) -> Result<(), LogStoreError> {
    let txn = db.begin_write()?;
    let format: Option<u32> = {
        let meta = txn.open_table(META)?;
        decode_meta(&meta, META_FORMAT)?
    };
    match format {
        Some(LOG_STORE_FORMAT) => {
            txn.abort()?;
            Ok(())
        }
        Some(found) => Err(LogStoreError::UnsupportedFormat {
            found,
            supported: LOG_STORE_FORMAT,
        }),
        None => {
            let log_len = txn.open_table(LOG)?.len()?;
            let meta_len = txn.open_table(META)?.len()?;
            if log_len != 0 || meta_len != 0 {
                return Err(LogStoreError::Inconsistent(format!(
                    "no format marker but {log_len} log records and {meta_len} meta records"
                )));
            }
            put_meta(&txn, META_FORMAT, &LOG_STORE_FORMAT)?;
            put_meta(&txn, META_NODE_ID, &node_id)?;
            let mut txn = txn;
            txn.set_durability(redb::Durability::Immediate);
            txn.commit()?;
            Ok(())
        }
    }
}

/// Reads and checks everything: meta records decode, every log record's checksum holds, the
/// indexes are contiguous and above the purged id, the last entry decodes.
fn verify(db: &Database, node_id: NodeId) -> Result<Recovered, LogStoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let stored: Option<NodeId> = decode_meta(&meta, META_NODE_ID)?;
    match stored {
        Some(stored) if stored != node_id => {
            return Err(LogStoreError::NodeIdMismatch {
                stored,
                requested: node_id,
            })
        }
        Some(_) => {}
        None => {
            return Err(LogStoreError::Inconsistent(
                "format marker present but node id missing".into(),
            ))
        }
    }
    let vote: Option<Vote> = decode_meta(&meta, META_VOTE)?;
    let committed: Option<Option<LogId>> = decode_meta(&meta, META_COMMITTED)?;
    let last_purged: Option<LogId> = decode_meta(&meta, META_PURGED)?;

    let log = txn.open_table(LOG)?;
    let mut prev: Option<u64> = None;
    let mut entries = 0u64;
    for item in log.iter()? {
        let (k, v) = item?;
        let index = k.value();
        record::unframe(RecordKey::Log(index), v.value())
            .map_err(|r| LogStoreError::corrupt(RecordKey::Log(index), r))?;
        match prev {
            None => {
                if let Some(p) = &last_purged {
                    if index <= p.index {
                        return Err(LogStoreError::Inconsistent(format!(
                            "entry {index} present at or below the purged id {p}"
                        )));
                    }
                }
            }
            Some(p) if index != p + 1 => {
                return Err(LogStoreError::Inconsistent(format!(
                    "hole in the log between {p} and {index}"
                )));
            }
            Some(_) => {}
        }
        prev = Some(index);
        entries += 1;
    }
    let last_entry = match log.last()? {
        Some((k, v)) => Some(decode_entry(k.value(), v.value())?.log_id),
        None => None,
    };
    let last_log_id = last_entry.or(last_purged);
    Ok(Recovered {
        vote,
        committed: committed.flatten(),
        last_purged,
        last_log_id,
        entries,
    })
}

/// Reads entries in `range` from disk; stops once `max_bytes` of records were read (at least
/// one entry is returned when any is present). The flag tells whether it stopped early.
pub(crate) fn read_entries(
    db: &Database,
    range: (Bound<u64>, Bound<u64>),
    max_bytes: usize,
) -> Result<(Vec<Entry>, bool), LogStoreError> {
    let txn = db.begin_read()?;
    let log = txn.open_table(LOG)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in log.range(range)? {
        let (k, v) = item?;
        bytes += v.value().len();
        out.push(decode_entry(k.value(), v.value())?);
        if bytes >= max_bytes {
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

/// In `txn`: deletes entries with index >= `since`; returns the new last log id (last
/// remaining entry, else `last_purged`).
pub(crate) fn truncate_in(
    txn: &WriteTransaction,
    since: u64,
    last_purged: Option<LogId>,
) -> Result<Option<LogId>, LogStoreError> {
    let mut log = txn.open_table(LOG)?;
    log.retain_in(since.., |_, _| false)?;
    let last = match log.last()? {
        Some((k, v)) => Some(decode_entry(k.value(), v.value())?.log_id),
        None => None,
    };
    Ok(last.or(last_purged))
}

/// In `txn`: deletes entries with index <= `upto.index` and records `upto` as purged.
pub(crate) fn purge_in(txn: &WriteTransaction, upto: &LogId) -> Result<(), LogStoreError> {
    txn.open_table(LOG)?
        .retain_in(..=upto.index, |_, _| false)?;
    put_meta(txn, META_PURGED, upto)
}

/// In `txn`: inserts one already framed log record.
pub(crate) fn insert_record(
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    index: u64,
    rec: &[u8],
) -> Result<(), LogStoreError> {
    log.insert(index, rec)?;
    Ok(())
}
