//! The store's typed error.

use crate::Hash;
use std::io;
use std::path::PathBuf;

/// Everything a [`super::ChunkStore`] can fail with.
///
/// A chunk that is absent, stale (its live file changed) or corrupt is *not*
/// an error: reads return `Ok(None)` for it. Errors are for the caller's
/// mistakes (bad path, wrong hash) and for the machine failing under us.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed (not "file not found" on a read, which
    /// only makes a location stale).
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The redb database failed (open, transaction, table, commit, storage).
    /// (Boxed: redb's error is large and this is the cold path.)
    #[error("index database error: {0}")]
    Db(#[source] Box<redb::Error>),
    /// The index holds bytes we cannot decode, or a format version we do not
    /// know. The store refuses to guess.
    #[error("corrupt index: {0}")]
    CorruptIndex(String),
    /// The index was written by a newer build, in a format this build does
    /// not know. It is left untouched.
    #[error("index format {found} is newer than this build reads (format {supported})")]
    IndexFormatTooNew { found: u64, supported: u64 },
    /// A [`super::StoreOptions`] value is out of its range.
    #[error("invalid store option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    /// A path given to `index_file`/`forget_file` is not a canonical relative
    /// path inside the synced root.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// `put` was given bytes whose blake3 is not the hash it was given.
    #[error("hash mismatch on put: expected {expected}, bytes hash to {actual}")]
    HashMismatch { expected: Hash, actual: Hash },
    /// A chunk table given to `index_file` does not fit the file it describes
    /// (a chunk ends past the file's size).
    #[error("invalid chunk table for {path:?}: {reason}")]
    InvalidChunkTable { path: String, reason: String },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                let e = redb::Error::from(e);
                crate::poison::note("chunk index", &e);
                StoreError::Db(Box::new(e))
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
    redb::CommitError,
    redb::CompactionError,
    redb::UpgradeError
);

/// Shorthand for the store's results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
