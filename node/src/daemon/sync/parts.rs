//! What the sync service opens before the network starts: the synced
//! root (canonical), the chunk store, the persisted local index and tree
//! nodes ([`LocalDb`]), and the servable set (the chunk provider must exist
//! when the swarm does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use filesyncd_chunkstore::store::{ChunkStore, RedbChunkStore};
use filesyncd_merkle::MemNodeStore;

use super::local_db::{LocalDb, LocalDbError};
use super::local_root::LocalRoot;
use super::servable::{Provider, Servable};
use crate::engine::types::LocalEntry;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot open the synced directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk store in {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: filesyncd_chunkstore::store::StoreError,
    },
    #[error(transparent)]
    LocalDb(#[from] LocalDbError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sync runtime: {0}")]
    Runtime(std::io::Error),
}

/// What the sync service opens before the network starts (the chunk
/// provider must exist when the swarm does).
pub struct Parts {
    pub root: PathBuf,
    pub store: Arc<dyn ChunkStore>,
    pub nodes: Arc<Mutex<MemNodeStore>>,
    pub servable: Arc<Servable>,
    pub(super) db: LocalDb,
    pub(super) local: BTreeMap<String, LocalEntry>,
    /// The local root as last saved (moved into the sync loop).
    pub(super) local_root: LocalRoot,
    /// The cluster whose marker this data directory wrote in the root.
    pub(super) marker_for: Option<String>,
}

impl Parts {
    /// Opens `<data>/sync/` (chunk store, local index) for the synced `root`.
    pub fn open(root: &Path, data: &Path) -> Result<Parts, SyncError> {
        let root = root.canonicalize().map_err(|source| SyncError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let dir = data.join("sync");
        std::fs::create_dir_all(&dir).map_err(|source| SyncError::Io {
            path: dir.clone(),
            source,
        })?;
        let store_dir = dir.join("chunks");
        let store = RedbChunkStore::open(&store_dir, &root).map_err(|source| SyncError::Store {
            path: store_dir,
            source,
        })?;
        let (db, loaded) = LocalDb::open(&dir.join("local.redb"))?;
        let nodes = Arc::new(Mutex::new(loaded.nodes));
        Ok(Parts {
            root,
            store: Arc::new(store),
            servable: Servable::new(nodes.clone()),
            nodes,
            db,
            local: loaded.local,
            local_root: loaded.local_root,
            marker_for: loaded.marker_for,
        })
    }

    pub fn provider(&self) -> Provider {
        Provider {
            store: self.store.clone(),
            servable: self.servable.clone(),
        }
    }
}
