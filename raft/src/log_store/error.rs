//! Typed errors of the Raft log store.

use std::path::PathBuf;

/// Why a stored record was refused.
#[derive(Debug, thiserror::Error)]
pub enum CorruptReason {
    /// Shorter than the record header.
    #[error("record of {len} bytes is shorter than its header")]
    TooShort { len: usize },
    /// A record format version this code does not know.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The checksum does not match the key and payload (flipped bits, cut record, wrong slot).
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// The checksum matched but postcard could not decode the payload (a writer bug or an
    /// incompatible build).
    #[error("payload does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// The payload decoded but bytes were left over.
    #[error("{len} trailing bytes after the payload")]
    TrailingBytes { len: usize },
    /// A log entry stored under index `key` says it is entry `found`.
    #[error("entry stored at index {key} carries index {found}")]
    IndexMismatch { key: u64, found: u64 },
}

/// Errors of [`RedbLogStore::open`](super::RedbLogStore::open) and of the store's own
/// operations (converted to `openraft::StorageError` at the trait boundary).
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// redb failed (I/O, a file redb itself finds corrupt, a database already open, ...).
    #[error("redb: {0}")]
    Redb(#[from] Box<redb::Error>),
    /// Filesystem error outside redb (e.g. creating the parent directory).
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored record fails verification. Never repaired automatically: every record that
    /// redb shows was committed durably and may have been acknowledged to the leader.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        what: String,
        #[source]
        reason: CorruptReason,
    },
    /// The records verify one by one but do not form a valid log (a hole, an entry at or below
    /// the purged id).
    #[error("inconsistent log: {0}")]
    Inconsistent(String),
    /// The database was written by a newer (or unknown) log-store format.
    #[error("unsupported log-store format {found} (this build reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// The database belongs to another node id: the data directory's identity changed under
    /// it (e.g. the `node_id` file was deleted and regenerated).
    #[error("log store belongs to node {stored}, but was opened as node {requested}")]
    NodeIdMismatch { stored: u64, requested: u64 },
    /// A value could not be encoded (should not happen for well-formed types).
    #[error("encode: {0}")]
    Encode(#[source] postcard::Error),
    /// The request would leave a hole in the log or overwrite an existing entry.
    #[error("non-contiguous append: {0}")]
    NonContiguous(String),
    /// A previous write failed; the store refuses further writes (its in-memory view may be
    /// ahead of disk). Restart the node.
    #[error("log store is poisoned by an earlier write failure: {0}")]
    Poisoned(String),
    /// The background writer thread is gone.
    #[error("log store writer thread stopped")]
    WriterGone,
}

impl LogStoreError {
    pub(crate) fn corrupt(what: impl std::fmt::Display, reason: CorruptReason) -> Self {
        LogStoreError::Corrupt {
            what: what.to_string(),
            reason,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for LogStoreError {
            fn from(e: $t) -> Self {
                LogStoreError::Redb(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
