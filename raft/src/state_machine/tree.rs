//! The cluster root: a merkle `PathTree` over every live path, kept in memory.
//!
//! The tree nodes are NOT persisted: [`ClusterTree::build`] rebuilds them from the `live`
//! table on open and after a snapshot install (one sorted scan, O(n)); apply then updates
//! the tree incrementally (O(log n) per changed path). The root is persisted in `meta`
//! beside the applied log id, and open checks that the rebuilt root matches it.

use filesyncd_merkle::{Hash, MemNodeStore, PathTree, PathValue};

use super::error::SmError;
use crate::apply::{tree_value, Changes};

pub struct ClusterTree {
    store: MemNodeStore,
    root: Hash,
}

fn tree_err(e: impl std::fmt::Display) -> SmError {
    SmError::Tree(e.to_string())
}

impl ClusterTree {
    /// The tree of no path.
    pub fn empty() -> Self {
        let mut store = MemNodeStore::new();
        let root = PathTree::empty_root(&mut store);
        ClusterTree { store, root }
    }

    /// Builds from `(path, value)` pairs sorted by path bytes. Stops at the first error of
    /// the source.
    pub fn build(
        items: impl Iterator<Item = Result<(String, PathValue), SmError>>,
    ) -> Result<Self, SmError> {
        let mut store = MemNodeStore::new();
        let mut failed: Option<SmError> = None;
        let shunt = items.map_while(|r| match r {
            Ok(v) => Some(v),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let root = PathTree::build(&mut store, shunt).map_err(tree_err);
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(ClusterTree { store, root: root? })
    }

    pub fn root(&self) -> Hash {
        self.root
    }

    /// Applies the live-table part of one entry's changes (one pass: `changes.live` is
    /// sorted by path).
    pub fn apply(&mut self, changes: &Changes) -> Result<(), SmError> {
        if changes.live.is_empty() {
            return Ok(());
        }
        let items = changes.live.iter().map(|(path, rec)| {
            let value = rec.as_ref().and_then(|r| r.state.as_ref()).map(tree_value);
            (path.clone(), value)
        });
        self.root = PathTree::update_many(&mut self.store, self.root, items).map_err(tree_err)?;
        Ok(())
    }

    /// (nodes, bytes) held in memory.
    pub fn memory(&self) -> (usize, usize) {
        (self.store.len(), self.store.bytes())
    }
}
