//! The path-tree root of what this node holds (the local index), kept up
//! to date step by step; `status` compares it with the cluster root.

use std::collections::{BTreeMap, BTreeSet};

use filesyncd_merkle::{EntryKind, Hash, MemNodeStore, PathTree, PathValue};

use crate::engine::types::{Kind, LocalEntry};

/// The path-tree root of the entries of the local index (the same
/// construction as the cluster root), kept up to date with the paths each
/// step touched ([`PathTree::update_many`]: O(changes × log n), not a
/// rebuild).
#[derive(Default)]
pub struct LocalRoot {
    store: MemNodeStore,
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

impl LocalRoot {
    /// Applies the `touched` paths as they are now in `local`.
    pub fn update(&mut self, touched: &BTreeSet<String>, local: &BTreeMap<String, LocalEntry>) {
        let Some(root) = self.root else {
            self.rebuild(local);
            return;
        };
        if touched.is_empty() {
            return;
        }
        let changes = touched
            .iter()
            .map(|p| (p.clone(), local.get(p).map(path_value)));
        match PathTree::update_many(&mut self.store, root, changes) {
            Ok(r) => self.root = Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "local root update failed; rebuilding it");
                self.rebuild(local);
            }
        }
    }

    fn rebuild(&mut self, local: &BTreeMap<String, LocalEntry>) {
        self.store = MemNodeStore::new();
        let items = local.iter().map(|(p, e)| (p.clone(), path_value(e)));
        self.root = PathTree::build(&mut self.store, items).ok();
    }
}

#[cfg(test)]
mod tests {
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

    /// The incremental local root always equals a rebuild of the index.
    #[test]
    fn local_root_updates_equal_a_rebuild() {
        let mut local: BTreeMap<String, LocalEntry> = BTreeMap::new();
        let mut lr = LocalRoot::default();
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
            lr.update(&touched, &local);
            let mut fresh = LocalRoot::default();
            fresh.rebuild(&local);
            assert_eq!(lr.root, fresh.root, "round {round}");
            assert!(lr.root.is_some());
        }
    }
}
