//! Whether a database of this process is unusable until it is reopened.
//!
//! After a write fails under it (ENOSPC, EIO), redb refuses every later
//! operation on that database with `PreviousIo` ("close and re-open the
//! database"). The chunk store and the local index are opened once at
//! start, so the daemon's way to reopen them is to exit and be restarted
//! by its supervisor, as it does when Raft stops on a storage error. Every
//! redb error this process converts passes through [`note`], and the daemon
//! watches [`poisoned`].

use std::sync::OnceLock;

static POISONED: OnceLock<String> = OnceLock::new();

/// Records `e` if it says the database `db` is poisoned (the first such
/// error is kept).
pub fn note(db: &str, e: &redb::Error) {
    if matches!(e, redb::Error::PreviousIo) {
        let _ = POISONED.set(format!(
            "the {db} database failed an earlier write and must be reopened"
        ));
    }
}

/// Why a database of this process must be reopened, once one must.
pub fn poisoned() -> Option<&'static str> {
    POISONED.get().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_previous_io_poisons() {
        note("chunk index", &redb::Error::DatabaseAlreadyOpen);
        assert_eq!(poisoned(), None);
        note("chunk index", &redb::Error::PreviousIo);
        note("local index", &redb::Error::PreviousIo);
        assert_eq!(
            poisoned(),
            Some("the chunk index database failed an earlier write and must be reopened")
        );
    }
}
