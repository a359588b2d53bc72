//! Whether a database of this process is unusable until it is reopened.
//!
//! After a write fails under it (ENOSPC, EIO), redb refuses every later
//! operation on that database with `PreviousIo` ("close and re-open the
//! database"). The chunk store and the local index are opened once at
//! start, so the daemon's way to reopen them is to exit and be restarted
//! by its supervisor, as it does when Raft stops on a storage error. Every
//! redb error this process converts passes through [`note`], and the daemon
//! watches [`poisoned`]; the sync service runs no step once it is set (a
//! step would act on a state whose last batch is half recorded: placed in
//! the synced directory, not in the indexes).

use std::sync::OnceLock;

static POISONED: OnceLock<String> = OnceLock::new();

/// Records `e` if it leaves the database `db` unusable until reopened: an
/// I/O error under redb (after one in a write, redb answers `PreviousIo`
/// to everything) or `PreviousIo` itself. The first such error is kept.
pub fn note(db: &str, e: &redb::Error) {
    let why = match e {
        redb::Error::PreviousIo => {
            format!("the {db} database failed an earlier write and must be reopened")
        }
        redb::Error::Io(io) => {
            format!("the {db} database failed on I/O ({io}) and must be reopened")
        }
        _ => return,
    };
    let _ = POISONED.set(why);
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
        note("chunk index", &redb::Error::TableDoesNotExist("t".into()));
        assert_eq!(poisoned(), None);
        note("chunk index", &redb::Error::PreviousIo);
        let enospc = std::io::Error::from_raw_os_error(28);
        note("local index", &redb::Error::Io(enospc));
        assert_eq!(
            poisoned(),
            Some("the chunk index database failed an earlier write and must be reopened")
        );
    }
}
