//! The version store's sweep: removes the stored chunks that no retained
//! version needs any more.
//!
//! Replacing or deleting a file moves the chunks of the old content into the
//! chunk store as blobs (see `engine/materialize.rs`), so `restore` can bring
//! it back. Raft prunes history by the cluster's retention
//! (`--keep-versions`, `--keep-days`, fixed when the cluster is created); this
//! sweep, run by the sync task every `--gc-interval`, makes the disk follow:
//!
//! - **kept**: every chunk of every retained version (current or not, on any
//!   path) whose tree is known here, plus the chunks of versions offered in
//!   the last [`OFFER_WINDOW`] and not committed yet (an offer acked here
//!   may still commit: the acknowledgement contract says this node holds
//!   them durably; once committed, retention decides);
//! - **removed**: every other blob, and blobs a verified live file also
//!   holds (the chunk store's `gc`; live files are never touched).
//!
//! Races: the sweep runs inside the sync task, so no step (and no pull of a
//! committed version) runs meanwhile. A pull of an offered version that
//! overlaps a sweep is not acked ([`Servable::add_pulled_offer`]); the origin
//! re-offers and the next pull fetches what is missing. A version retained
//! whose tree this node never fetched has no chunks here to keep.
//!
//! Not swept: tree nodes (kept in the local index, a few hundred bytes per
//! file version) and the set of servable chunks (in memory).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use filesyncd_chunkstore::store::{ChunkStore, GcStats, StoreError};
use filesyncd_merkle::file_tree::FileTree;
use filesyncd_merkle::{Hash, MemNodeStore};

use super::servable::Servable;
use crate::engine::fs::Fs;
use crate::engine::stage;

/// How long the chunks of an offered version are kept even if it never
/// commits (far beyond any offer's deadline).
pub const OFFER_WINDOW: Duration = Duration::from_secs(3600);

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// Distinct file versions (root, size) kept: retained plus offered.
    pub versions: u64,
    /// Of those, versions whose tree is not known here (nothing to keep).
    pub unknown_trees: u64,
    /// Distinct chunks kept.
    pub chunks_kept: u64,
    pub store: GcStats,
    /// Staged versions removed (`engine::stage::sweep`).
    pub staged_removed: u64,
    pub millis: u64,
}

/// Sweeps `store`: keeps the chunks of `retained` file versions `(root,
/// size)` and of recent offers (see the module doc).
pub fn sweep(
    store: &dyn ChunkStore,
    nodes: &Mutex<MemNodeStore>,
    servable: &Servable,
    retained: impl IntoIterator<Item = (Hash, u64)>,
    fs: Option<&dyn Fs>,
) -> Result<SweepReport, StoreError> {
    let started = Instant::now();
    let offered = servable.begin_sweep(OFFER_WINDOW);
    // Ends the sweep however `sweep_inner` returns (a panic included):
    // otherwise every later pull of an offer would be refused its ack.
    struct End<'a>(&'a Servable);
    impl Drop for End<'_> {
        fn drop(&mut self) {
            self.0.end_sweep();
        }
    }
    let end = End(servable);
    let res = sweep_inner(store, nodes, fs, retained.into_iter().chain(offered));
    drop(end);
    let mut rep = res?;
    rep.millis = started.elapsed().as_millis() as u64;
    Ok(rep)
}

fn sweep_inner(
    store: &dyn ChunkStore,
    nodes: &Mutex<MemNodeStore>,
    fs: Option<&dyn Fs>,
    versions: impl Iterator<Item = (Hash, u64)>,
) -> Result<SweepReport, StoreError> {
    let mut rep = SweepReport::default();
    let versions: HashSet<(Hash, u64)> = versions.filter(|(_, size)| *size > 0).collect();
    if let Some(fs) = fs {
        // Staged versions neither retained nor offered (never committed, or
        // dropped by retention before they were placed) go first.
        match stage::sweep(fs, store, &|root, size| versions.contains(&(*root, size))) {
            Ok(n) => rep.staged_removed = n,
            Err(e) => tracing::warn!(error = %e, "staged versions not swept"),
        }
    }
    let mut keep: HashSet<Hash> = HashSet::new();
    for (root, size) in &versions {
        rep.versions += 1;
        // One tree at a time: the node store's lock is never held long.
        let list = {
            let nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
            FileTree {
                root: *root,
                size: *size,
            }
            .chunks(&*nodes)
        };
        match list {
            Ok(list) => keep.extend(list.iter().map(|c| c.hash)),
            Err(_) => rep.unknown_trees += 1,
        }
    }
    rep.chunks_kept = keep.len() as u64;
    rep.store = store.gc(&|h| keep.contains(h))?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use filesyncd_chunkstore::store::MemChunkStore;
    use filesyncd_merkle::ChunkEntry;

    use super::*;

    /// A file version of `parts` (one chunk each): chunks put as blobs, tree
    /// nodes into `nodes`. Returns (root, size, chunk hashes).
    fn version(
        store: &dyn ChunkStore,
        nodes: &Mutex<MemNodeStore>,
        parts: &[&[u8]],
    ) -> (Hash, u64, Vec<Hash>) {
        let entries: Vec<ChunkEntry> = parts
            .iter()
            .map(|p| {
                let h = Hash::of_chunk(p);
                store.put(h, p).unwrap();
                ChunkEntry {
                    hash: h,
                    len: p.len() as u32,
                }
            })
            .collect();
        let tree = filesyncd_merkle::build(&entries);
        nodes.lock().unwrap().extend(tree.nodes.clone());
        (
            tree.root,
            tree.size,
            entries.iter().map(|e| e.hash).collect(),
        )
    }

    #[test]
    fn keeps_retained_and_offered_versions_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemChunkStore::new(dir.path());
        let nodes = Mutex::new(MemNodeStore::new());
        let servable = Servable::new(Arc::new(Mutex::new(MemNodeStore::new())));
        // v1 and v2 share a chunk; v1 is pruned from history, v2 retained.
        let (r1, s1, c1) = version(&store, &nodes, &[b"shared", b"only in v1"]);
        let (r2, s2, c2) = version(&store, &nodes, &[b"shared", b"only in v2"]);
        // An offered version, not (yet) committed.
        let (r3, s3, c3) = version(&store, &nodes, &[b"offered"]);
        servable.add_offered(r3, s3);
        // v1 was offered too, but it committed (and was pruned since).
        servable.add_offered(r1, s1);
        servable.add_committed(r1, s1);
        // A retained version whose tree is unknown here.
        let unknown = (Hash([7; 32]), 10);

        let rep = sweep(&store, &nodes, &servable, [(r2, s2), unknown], None).unwrap();
        assert_eq!(rep.versions, 3, "{rep:?}");
        assert_eq!(rep.unknown_trees, 1, "{rep:?}");
        assert_eq!(rep.chunks_kept, 3, "{rep:?}");
        assert_eq!(rep.store.blobs_removed, 1, "{rep:?}");
        assert!(
            !store.has(&c1[1]).unwrap(),
            "the pruned version's own chunk"
        );
        for h in c2.iter().chain(&c3) {
            assert!(store.has(h).unwrap());
        }
        assert_eq!(store.get(&c1[0]).unwrap().as_deref(), Some(&b"shared"[..]));
    }

    #[test]
    fn a_pull_overlapping_a_sweep_is_not_acked() {
        let servable = Servable::new(Arc::new(Mutex::new(MemNodeStore::new())));
        let g = servable.sweep_generation();
        assert!(servable.add_pulled_offer(Hash([1; 32]), 5, g));
        // A pull that started before a sweep and ends during it, or after it.
        let g = servable.sweep_generation();
        servable.begin_sweep(OFFER_WINDOW);
        assert!(!servable.add_pulled_offer(Hash([2; 32]), 5, g));
        let during = servable.sweep_generation();
        assert!(!servable.add_pulled_offer(Hash([2; 32]), 5, during));
        servable.end_sweep();
        assert!(!servable.add_pulled_offer(Hash([2; 32]), 5, g));
        let after = servable.sweep_generation();
        assert!(servable.add_pulled_offer(Hash([2; 32]), 5, after));
        // Offers within the window are handed to the next sweep.
        let kept = servable.begin_sweep(OFFER_WINDOW);
        servable.end_sweep();
        assert_eq!(kept.len(), 2);
    }
}
