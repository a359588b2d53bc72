//! The engine's state that must survive a restart, in a redb file
//! (`<data>/sync/local.redb`):
//!
//! | table   | key        | value (postcard)                          |
//! |---------|------------|-------------------------------------------|
//! | `local` | path       | `LocalEntry` (what is on disk and which committed version it is) |
//! | `nodes` | node hash  | encoded Merkle tree node (read through: memory holds only those not yet written) |
//! | `meta`  | `"marker"` | the cluster id the marker was created for |
//!
//! Without the local index a restarted node could not tell a file deleted
//! elsewhere while it was down from a file created here, nor a stale local
//! copy from a local edit. Writes are one redb transaction per engine step,
//! committed durably (fsync) before the step's outcome is acted on further.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use filesyncd_merkle::{Hash, MemNodeStore};
use redb::{Database, ReadableTable, TableDefinition};

use super::local_root::{self, LocalRoot, TableNodes};
use crate::engine::types::LocalEntry;

/// redb's page cache for this file (its default, 1 GiB, let a peer's
/// memory grow with every file it placed: issue 12 saw 330 MiB at 20,000).
const CACHE_BYTES: usize = 16 << 20;

const LOCAL: TableDefinition<&str, &[u8]> = TableDefinition::new("local");
const NODES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_MARKER: &str = "marker";
/// The tree nodes of the local root ([`LocalRoot`]).
const ROOT_NODES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("root_nodes");
/// The local root: the path-tree root of the entries of `local`.
const META_LOCAL_ROOT: &str = "local_root";

#[derive(Debug, thiserror::Error)]
pub enum LocalDbError {
    #[error("local index database: {0}")]
    Db(String),
    #[error("local index record for {path:?} is corrupt: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: postcard::Error,
    },
}

fn db_err(e: impl Into<redb::Error>) -> LocalDbError {
    let e = e.into();
    filesyncd_chunkstore::poison::note("local index", &e);
    LocalDbError::Db(e.to_string())
}

pub struct LocalDb {
    db: Arc<Database>,
}

/// The tree nodes written to the local index: the backing store of the
/// daemon's [`MemNodeStore`] (which keeps in memory only the nodes not yet
/// written). A node whose bytes do not hash to its key is answered absent
/// (it is refetched or rebuilt when needed), never returned.
struct DbNodes {
    db: Arc<Database>,
}

impl DbNodes {
    fn read(&self, h: &Hash) -> Result<Option<Vec<u8>>, LocalDbError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(NODES).map_err(db_err)?;
        Ok(t.get(h.0).map_err(db_err)?.map(|v| v.value().to_vec()))
    }
}

impl filesyncd_merkle::NodeSource for DbNodes {
    fn get_node(&self, h: &Hash) -> Option<Vec<u8>> {
        match self.read(h) {
            Ok(Some(b)) if filesyncd_merkle::node_hash(&b).ok() == Some(*h) => Some(b),
            Ok(Some(_)) => {
                tracing::warn!(node = %h, "a corrupt tree node in the local index; ignored");
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(node = %h, error = %e, "cannot read a tree node from the local index");
                None
            }
        }
    }
}

/// What was loaded at start.
pub struct Loaded {
    pub local: BTreeMap<String, LocalEntry>,
    pub nodes: MemNodeStore,
    pub marker_for: Option<String>,
    /// The root of `local` as last saved (`None`: never saved, or its last
    /// update failed: rebuilt by the next save).
    pub local_root: LocalRoot,
}

impl LocalDb {
    pub fn open(path: &Path) -> Result<(LocalDb, Loaded), LocalDbError> {
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(db_err)?,
        );
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(LOCAL).map_err(db_err)?;
            txn.open_table(NODES).map_err(db_err)?;
            txn.open_table(ROOT_NODES).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        // Read in key order into a vector, then built in bulk: a map built
        // by inserting ascending keys one by one leaves its nodes about
        // half full (a million path keys with 160-byte values, measured by
        // RSS: 391 bytes per entry inserted one by one, 234 built in bulk).
        let mut entries: Vec<(String, LocalEntry)> = Vec::new();
        // Tree nodes stay on disk: read through, never loaded whole.
        let nodes = MemNodeStore::with_backing(Arc::new(DbNodes {
            db: Arc::clone(&db),
        }));
        let marker_for;
        let local_root;
        {
            let r = db.begin_read().map_err(db_err)?;
            for item in r
                .open_table(LOCAL)
                .map_err(db_err)?
                .iter()
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                let e: LocalEntry =
                    postcard::from_bytes(v.value()).map_err(|source| LocalDbError::Corrupt {
                        path: k.value().to_string(),
                        source,
                    })?;
                entries.push((k.value().to_string(), e));
            }
            let meta = r.open_table(META).map_err(db_err)?;
            marker_for = meta
                .get(META_MARKER)
                .map_err(db_err)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            local_root = meta
                .get(META_LOCAL_ROOT)
                .map_err(db_err)?
                .and_then(|v| <[u8; 32]>::try_from(v.value()).ok())
                .map(Hash);
        }
        let local: BTreeMap<String, LocalEntry> = entries.into_iter().collect();
        Ok((
            LocalDb { db },
            Loaded {
                local,
                nodes,
                marker_for,
                local_root: LocalRoot { root: local_root },
            },
        ))
    }

    /// Writes the entries of `touched` paths as they are in `local` (absent:
    /// removed) and the tree nodes not yet written, in one durable
    /// transaction. Costs what changed, not the size of the index.
    ///
    /// The local root is updated in the same transaction (its tree nodes
    /// in `root_nodes`); `root` takes the new value once it committed. If
    /// the save fails, `root` is cleared: the next save rebuilds it from
    /// every entry of `local`, so it never misses the paths of a lost save.
    pub fn save(
        &mut self,
        touched: &BTreeSet<String>,
        local: &BTreeMap<String, LocalEntry>,
        nodes: &Mutex<MemNodeStore>,
        root: &mut LocalRoot,
    ) -> Result<(), LocalDbError> {
        use filesyncd_merkle::NodeSource;
        // The nodes added since the last save, copied out under the lock and
        // written without it (ctl answers `GetNodes` from the same store
        // meanwhile); put back on the fresh list if the write fails.
        let new_nodes: Vec<(Hash, Vec<u8>)> = {
            let mut nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = nodes.take_fresh();
            fresh
                .into_iter()
                .filter_map(|h| Some((h, nodes.get_node(&h)?)))
                .collect()
        };
        let res = self.write(touched, local, &new_nodes, root);
        if res.is_err() {
            root.root = None;
        }
        let hashes: Vec<Hash> = new_nodes.into_iter().map(|(h, _)| h).collect();
        let mut nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
        if res.is_ok() {
            // Durable in the backing store: read from there from now on.
            nodes.evict(&hashes);
        } else {
            nodes.keep_fresh(hashes);
        }
        res
    }

    fn write(
        &mut self,
        touched: &BTreeSet<String>,
        local: &BTreeMap<String, LocalEntry>,
        new_nodes: &[(Hash, Vec<u8>)],
        root: &mut LocalRoot,
    ) -> Result<(), LocalDbError> {
        if touched.is_empty() && new_nodes.is_empty() && root.root.is_some() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(LOCAL).map_err(db_err)?;
            for p in touched {
                match local.get(p) {
                    Some(e) => {
                        let bytes = postcard::to_allocvec(e)
                            .map_err(|e| LocalDbError::Db(format!("encoding a record: {e}")))?;
                        table.insert(p.as_str(), bytes.as_slice()).map_err(db_err)?;
                    }
                    None => {
                        table.remove(p.as_str()).map_err(db_err)?;
                    }
                }
            }
            let mut t = txn.open_table(NODES).map_err(db_err)?;
            for (h, b) in new_nodes {
                t.insert(h.0, b.as_slice()).map_err(db_err)?;
            }
        }
        let next = {
            let mut t = txn.open_table(ROOT_NODES).map_err(db_err)?;
            if root.root.is_none() {
                local_root::clear(&mut t).map_err(db_err)?;
            }
            root.next(
                &mut TableNodes {
                    table: &mut t,
                    failed: None,
                },
                touched,
                local,
            )
        };
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            match &next {
                Ok(h) => {
                    meta.insert(META_LOCAL_ROOT, h.0.as_slice())
                        .map_err(db_err)?;
                }
                Err(e) => {
                    // The entries are saved; the root is rebuilt next time.
                    tracing::warn!(error = %e, "local root update failed; rebuilding it next step");
                    meta.remove(META_LOCAL_ROOT).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        filesyncd_chunkstore::failpoint::hit("local_index::committed");
        root.root = next.ok();
        Ok(())
    }

    /// How many local-root tree nodes the file holds.
    #[cfg(test)]
    pub(super) fn root_node_count(&self) -> usize {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().unwrap();
        txn.open_table(ROOT_NODES).unwrap().len().unwrap() as usize
    }

    /// Records that the marker was created for `cluster_id`.
    pub fn set_marker_for(&self, cluster_id: &str) -> Result<(), LocalDbError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META)
            .map_err(db_err)?
            .insert(META_MARKER, cluster_id.as_bytes())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::{FileKind, Meta, Stat, VersionId};
    use filesyncd_merkle::ChunkEntry;

    fn entry(n: u8) -> LocalEntry {
        LocalEntry::committed(
            Meta::file(Hash([n; 32]), 5, 0o644),
            Stat {
                kind: FileKind::File,
                size: 5,
                mtime_ns: 1,
                ctime_ns: 2,
                ino: u64::from(n),
                mode: 0o644,
            },
            VersionId::new(u64::from(n), 0),
        )
    }

    #[test]
    fn saves_changes_and_reloads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.redb");
        let tree = filesyncd_merkle::build(&[ChunkEntry {
            hash: Hash([7; 32]),
            len: 9,
        }]);
        let a = BTreeMap::from([("a".to_string(), entry(1)), ("b".to_string(), entry(2))]);
        let b = BTreeMap::from([("a".to_string(), entry(3)), ("c".to_string(), entry(4))]);
        let paths = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>();
        {
            let (mut db, loaded) = LocalDb::open(&path).unwrap();
            assert!(loaded.local.is_empty() && loaded.marker_for.is_none());
            let nodes = Mutex::new(loaded.nodes);
            nodes.lock().unwrap().extend(tree.nodes.clone());
            let mut root = loaded.local_root;
            db.save(&paths(&["a", "b"]), &a, &nodes, &mut root).unwrap();
            // Saved nodes left memory; they are read from the file.
            assert!(nodes.lock().unwrap().is_empty());
            // Only touched paths are written: "d" is in the map, not saved.
            let mut b2 = b.clone();
            b2.insert("d".to_string(), entry(5));
            db.save(&paths(&["a", "b", "c"]), &b2, &nodes, &mut root)
                .unwrap();
            db.set_marker_for("c1").unwrap();
        }
        let (_, loaded) = LocalDb::open(&path).unwrap();
        assert_eq!(loaded.local, b);
        assert!(loaded.nodes.is_empty(), "nodes are not loaded into memory");
        for (h, bytes) in &tree.nodes {
            use filesyncd_merkle::NodeSource;
            assert_eq!(loaded.nodes.get_node(h).as_ref(), Some(bytes));
        }
        assert_eq!(loaded.marker_for.as_deref(), Some("c1"));
    }
}
