//! Errors of the state machine, its reader and its snapshots.

use thiserror::Error;

use crate::NodeId;

#[derive(Debug, Error)]
pub enum SmError {
    #[error("redb: {0}")]
    Db(Box<redb::Error>),
    #[error("decoding a stored record: {0}")]
    Codec(#[from] postcard::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("merkle tree: {0}")]
    Tree(String),
    #[error("stored state is inconsistent: {0}")]
    Corrupt(String),
    #[error("snapshot rejected: {0}")]
    BadSnapshot(String),
    #[error("as_of({at}) is outside retention (exact from index {horizon})")]
    OutsideRetention { at: u64, horizon: u64 },
    #[error("as_of({at}) is beyond the last applied index {applied}")]
    NotYetApplied { at: u64, applied: u64 },
    /// The file was written by a newer (or unknown) state-machine format.
    #[error("unsupported state-machine format {found} (this build reads up to {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("state machine unavailable: {0}")]
    Unavailable(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for SmError {
            fn from(e: $t) -> Self {
                SmError::Db(Box::new(e.into()))
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

impl SmError {
    /// As openraft wants it (a storage error stops the Raft node).
    pub fn into_storage(self, writing: bool) -> openraft::StorageError<NodeId> {
        let any = openraft::AnyError::new(&self);
        let io = if writing {
            openraft::StorageIOError::write_state_machine(any)
        } else {
            openraft::StorageIOError::read_state_machine(any)
        };
        openraft::StorageError::IO { source: io }
    }
}
