//! The path-tree root of what this node holds (the local index), kept up
//! to date step by step; `status` compares it with the cluster root.
//!
//! The tree's nodes live in the local index file (`root_nodes`, beside the
//! root itself in `meta`), written in the same transaction as the entries
//! they summarize: memory holds none of them, and a restart finds the root
//! of exactly the entries it loads, with no rebuild.

use std::collections::{BTreeMap, BTreeSet};

use filesyncd_merkle::{EntryKind, Hash, NodeSource, NodeStore, PathTree, PathValue};
use redb::{ReadableTable, Table};

use crate::engine::types::{Kind, LocalEntry};

/// The root of the entries of the local index (the same construction as
/// the cluster root), updated with the paths each step touched
/// ([`PathTree::update_many`]: O(changes × log n), not a rebuild).
#[derive(Default)]
pub struct LocalRoot {
    /// `None` until built, or after an update failed (rebuilt next time).
    pub root: Option<Hash>,
}

fn path_value(e: &LocalEntry) -> PathValue {
    PathValue {
        kind: match e.meta.kind {
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink { .. } => EntryKind::Symlink,
        },
        root: e.meta.root,
        size: e.meta.size,
        mode: e.meta.mode,
    }
}

/// The tree nodes as a table of the write transaction in progress.
pub(super) struct TableNodes<'a, 'txn> {
    pub table: &'a mut Table<'txn, [u8; 32], &'static [u8]>,
    /// The first write that failed.
    pub failed: Option<String>,
}

impl NodeSource for TableNodes<'_, '_> {
    fn get_node(&self, h: &Hash) -> Option<Vec<u8>> {
        // A read error is a missing node: the update fails and the tree
        // is rebuilt.
        self.table
            .get(h.0)
            .ok()
            .flatten()
            .map(|v| v.value().to_vec())
    }
}

impl NodeStore for TableNodes<'_, '_> {
    fn put_node(&mut self, h: Hash, bytes: Vec<u8>) {
        if let Err(e) = self.table.insert(h.0, bytes.as_slice()) {
            self.failed.get_or_insert(e.to_string());
        }
    }
    fn remove_node(&mut self, h: &Hash) {
        if let Err(e) = self.table.remove(h.0) {
            self.failed.get_or_insert(e.to_string());
        }
    }
}

impl LocalRoot {
    /// The root after applying the `touched` paths as they are now in
    /// `local`, starting from `self.root` (`None`: built from every entry
    /// into the emptied `nodes`). Nothing in `self` changes: the caller
    /// takes the new root once the transaction holding `nodes` committed.
    pub(super) fn next(
        &self,
        nodes: &mut TableNodes<'_, '_>,
        touched: &BTreeSet<String>,
        local: &BTreeMap<String, LocalEntry>,
    ) -> Result<Hash, String> {
        let root = match self.root {
            Some(root) if touched.is_empty() => return Ok(root),
            Some(root) => {
                let changes = touched
                    .iter()
                    .map(|p| (p.clone(), local.get(p).map(path_value)));
                PathTree::update_many(nodes, root, changes).map_err(|e| e.to_string())?
            }
            None => {
                let items = local.iter().map(|(p, e)| (p.clone(), path_value(e)));
                PathTree::build(nodes, items).map_err(|e| e.to_string())?
            }
        };
        match nodes.failed.take() {
            Some(e) => Err(e),
            None => Ok(root),
        }
    }
}

/// Removes every node of `table` (before a rebuild).
pub(super) fn clear(
    table: &mut Table<'_, [u8; 32], &'static [u8]>,
) -> Result<(), redb::StorageError> {
    table.retain(|_, _| false)
}

#[cfg(test)]
mod tests {
    use super::super::local_db::LocalDb;
    use super::*;
    use crate::engine::types::{FileKind, Meta, Stat, VersionId};

    fn entry(n: u64) -> LocalEntry {
        let stat = Stat {
            kind: FileKind::File,
            size: n,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: n,
            mode: 0o644,
        };
        LocalEntry::committed(
            Meta::file(Hash([n as u8; 32]), n, 0o644),
            stat,
            VersionId::new(n, 0),
        )
    }

    fn rebuilt(local: &BTreeMap<String, LocalEntry>) -> (Hash, usize) {
        let mut store = filesyncd_merkle::MemNodeStore::new();
        let items = local.iter().map(|(p, e)| (p.clone(), path_value(e)));
        let root = PathTree::build(&mut store, items).unwrap();
        (root, PathTree::nodes(&store, root).unwrap().len())
    }

    /// The root saved step by step always equals a rebuild of the index,
    /// across a reopen and after a lost root; the file holds the nodes of
    /// the current tree and no others (no garbage that grows with history).
    #[test]
    fn local_root_updates_equal_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.redb");
        let (mut db, loaded) = LocalDb::open(&path).unwrap();
        let mut nodes = std::sync::Mutex::new(loaded.nodes);
        let mut lr = loaded.local_root;
        assert!(lr.root.is_none(), "never saved");
        let mut local: BTreeMap<String, LocalEntry> = BTreeMap::new();
        let mut x: u64 = 12345;
        for round in 0..30u64 {
            let mut touched = BTreeSet::new();
            for _ in 0..(1 + round * 7 % 50) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let p = format!("d{}/f{}", x % 7, x % 300);
                if x.is_multiple_of(3) {
                    local.remove(&p);
                } else {
                    local.insert(p.clone(), entry(x % 1000));
                }
                touched.insert(p);
            }
            db.save(&touched, &local, &nodes, &mut lr).unwrap();
            let (want, count) = rebuilt(&local);
            assert_eq!(lr.root, Some(want), "round {round}");
            assert_eq!(db.root_node_count(), count, "round {round}: nodes stored");
            if round == 10 {
                // (The node store reads through the same file: closed too.)
                drop(db);
                drop(nodes);
                let (db2, loaded) = LocalDb::open(&path).unwrap();
                db = db2;
                nodes = std::sync::Mutex::new(loaded.nodes);
                assert_eq!(
                    loaded.local_root.root, lr.root,
                    "the root survives a reopen"
                );
            }
            if round == 20 {
                // Lost (a failed save): the next save rebuilds it.
                lr.root = None;
            }
        }
    }
}
