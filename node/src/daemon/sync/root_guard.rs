//! The root guard: the synced directory as the sync task opened it, its
//! watcher, and the check that the root's path still names that directory.
//!
//! Every [`ROOT_CHECK`] the loop asks [`RootGuard::check`]. When a mount
//! covers the path or another directory took its place, the guard reopens
//! the path and restarts the watcher; the loop then scans it in full, so the
//! plan's guards meet the new directory at once (no marker: halt, no
//! deletion). While the path cannot be opened at all, [`RootGuard::here`]
//! is false: no step runs and status reports `halted`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::parts::SyncError;
use crate::engine::fs_real::RootFs;
use crate::engine::watch::{watch as start_watch, DirtyRx, WatchConfig, Watcher};

/// How often the loop checks that the root's path still names the
/// directory it opened.
pub const ROOT_CHECK: Duration = Duration::from_secs(2);

/// The opened root and its watcher.
pub struct RootGuard {
    path: PathBuf,
    cfg: WatchConfig,
    /// The directory opened (the engine's file system).
    pub fs: Arc<RootFs>,
    /// Whether the root's path still names the directory opened (see
    /// [`RootFs::still_at_path`]); while it does not, no step runs.
    pub here: bool,
    /// Dropping it stops watching.
    _watcher: Watcher,
    /// The watcher's dirty batches.
    pub dirty: DirtyRx,
}

/// What a check found.
pub enum Checked {
    /// The path still names the directory opened.
    Same,
    /// Another directory took its place: it is open and watched now; the
    /// engine must use [`RootGuard::fs`] and scan everything.
    Reopened,
    /// Another directory took its place and it cannot be opened: why.
    Lost(String),
}

fn open_fs(root: &Path) -> Result<Arc<RootFs>, SyncError> {
    RootFs::open(root)
        .map(Arc::new)
        .map_err(|source| SyncError::Root {
            path: root.to_path_buf(),
            source,
        })
}

fn open_watch(root: &Path, cfg: &WatchConfig) -> Result<(Watcher, DirtyRx), SyncError> {
    start_watch(root, cfg).map_err(|e| SyncError::Runtime(std::io::Error::other(e.to_string())))
}

impl RootGuard {
    /// Opens `path` and starts watching it (within a tokio runtime).
    pub fn open(path: &Path, cfg: WatchConfig) -> Result<RootGuard, SyncError> {
        let fs = open_fs(path)?;
        let (watcher, dirty) = open_watch(path, &cfg)?;
        Ok(RootGuard {
            path: path.to_path_buf(),
            cfg,
            fs,
            here: true,
            _watcher: watcher,
            dirty,
        })
    }

    /// Checks that the path still names the directory opened; if not,
    /// reopens it (see the module doc).
    pub fn check(&mut self) -> Checked {
        let moved = match self.fs.still_at_path() {
            Ok(true) => return Checked::Same,
            Ok(false) => {
                "another directory is now at its path (mounted over, or replaced)".to_string()
            }
            Err(e) => format!("its path cannot be read: {e}"),
        };
        if self.here {
            tracing::error!(root = %self.path.display(), why = %moved, "the synced directory was replaced under the running node; sync stops until a directory with this cluster's marker is back");
            self.here = false;
        }
        match open_fs(&self.path).and_then(|fs| Ok((fs, open_watch(&self.path, &self.cfg)?))) {
            Ok((fs, (w, d))) => {
                tracing::warn!(root = %self.path.display(), "reopened the synced directory; a full scan checks its marker before anything syncs");
                self.fs = fs;
                self._watcher = w;
                self.dirty = d;
                self.here = true;
                Checked::Reopened
            }
            Err(e) => Checked::Lost(format!("the synced directory was replaced under the running node ({moved}) and cannot be reopened: {e}")),
        }
    }
}
