//! The data directory lock: one daemon per data directory.
//!
//! An exclusive, non-blocking `flock` on `<data>/lock`, held for the life of
//! the process (the kernel drops it when the process dies, so a crash never
//! leaves a stale lock). A second daemon on the same data directory fails
//! with [`LockError::Locked`] before touching anything else.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data directory locked: another filesyncd uses {0}")]
    Locked(PathBuf),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Creates `data` if needed and takes the lock.
    pub fn acquire(data: &Path) -> Result<DataLock, LockError> {
        let io = |source| LockError::Io {
            path: data.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(data).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data.join(LOCK_FILE))
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                private(data).map_err(io)?;
                Ok(DataLock { _file: file })
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                Err(LockError::Locked(data.to_path_buf()))
            }
            Err(e) => Err(io(e.into())),
        }
    }
}

/// Closes the data directory to other local users (mode 0700): it holds
/// the API secret, the Raft state (token hashes, the cluster key's seed)
/// and a copy of every synced file's content, whatever the umask was.
fn private(data: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(mode & 0o700 | 0o700))?;
        tracing::info!(data = %data.display(), was = format!("{:o}", mode & 0o7777), "data directory closed to other users (mode 0700)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_released() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        let first = DataLock::acquire(&d).unwrap();
        assert!(matches!(DataLock::acquire(&d), Err(LockError::Locked(_))));
        drop(first);
        DataLock::acquire(&d).unwrap();
    }

    #[test]
    fn the_data_dir_is_closed_to_other_users() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _l = DataLock::acquire(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }
}
