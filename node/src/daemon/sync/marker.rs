//! The folder marker (`.filesyncd`, holding the cluster id) in the synced
//! root: written the first time a data directory syncs a root; afterwards a
//! missing or foreign marker halts the plan (the engine's guard), until the
//! operator adopts the folder on purpose.
//!
//! Every write is durable: temp file, fsync, rename, fsync of the root.

use std::io::Write;
use std::path::Path;

use super::local_db::LocalDb;
use super::parts::SyncError;
use crate::engine::names::{MARKER, TMP_PREFIX};

/// Creates the marker the first time this data directory syncs `root`
/// (`marker_for` is `None`); afterwards it does nothing, and a missing
/// marker halts sync (see the engine's plan).
pub fn ensure(
    root: &Path,
    db: &LocalDb,
    marker_for: &mut Option<String>,
    cluster_id: &str,
) -> Result<(), SyncError> {
    if marker_for.is_some() {
        return Ok(());
    }
    let marker = root.join(MARKER);
    if !marker.exists() {
        write(root, cluster_id).map_err(|source| SyncError::Io {
            path: marker,
            source,
        })?;
        tracing::info!(root = %root.display(), "folder marker created");
    }
    db.set_marker_for(cluster_id)?;
    *marker_for = Some(cluster_id.to_string());
    Ok(())
}

/// Re-creates the marker on purpose (`filesyncd adopt`).
pub fn adopt(root: &Path, db: &LocalDb, cluster_id: &str) -> Result<(), String> {
    write(root, cluster_id).map_err(|e| e.to_string())?;
    db.set_marker_for(cluster_id).map_err(|e| e.to_string())?;
    tracing::warn!(root = %root.display(), "folder adopted: marker re-created, deletes confirmed");
    Ok(())
}

/// Writes the marker durably: temp file, fsync, rename, fsync the root.
fn write(root: &Path, cluster_id: &str) -> std::io::Result<()> {
    let tmp = root.join(format!("{TMP_PREFIX}marker"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{cluster_id}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, root.join(MARKER))?;
    std::fs::File::open(root)?.sync_all()
}
