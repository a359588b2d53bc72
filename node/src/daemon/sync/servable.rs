//! Which chunks this node serves to peers: those of versions committed in
//! the cluster and those of versions offered to it or by it (which a quorum
//! must hold before they can commit). Anything else — content of ignored
//! files, chunks of versions never offered, arbitrary hashes — is answered
//! "absent", exactly as if it were not held: no existence oracle.
//!
//! The set is behind a std `Mutex` (short inserts and lookups, never held
//! across an `.await`). It costs about 40-70 bytes per distinct chunk in memory (a hash set
//! entry); tree nodes are read from the node store, not copied.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::file_tree::FileTree;
use filesyncd_merkle::{Hash, MemNodeStore};

pub struct Servable {
    chunks: Mutex<HashSet<Hash>>,
    nodes: Arc<Mutex<MemNodeStore>>,
    /// Versions offered (root → size, last offered), for the sweep; and
    /// the sweep's generation (see [`Servable::begin_sweep`]).
    offers: Mutex<Offered>,
}

#[derive(Default)]
struct Offered {
    roots: HashMap<Hash, (u64, Instant)>,
    generation: u64,
    sweeping: bool,
}

impl Servable {
    pub fn new(nodes: Arc<Mutex<MemNodeStore>>) -> Arc<Servable> {
        Arc::new(Servable {
            chunks: Mutex::new(HashSet::new()),
            nodes,
            offers: Mutex::new(Offered::default()),
        })
    }

    /// Adds the chunks of the file tree `root` if its nodes are local;
    /// `false` if they are not (yet). (No set of the trees added: it cost
    /// a hash per file version to skip re-reading a tree added before,
    /// which only a second version of the same content does.)
    fn add_tree(&self, root: Hash, size: u64) -> bool {
        let list = {
            let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            match (FileTree { root, size }).chunks(&*nodes) {
                Ok(l) => l,
                Err(_) => return false,
            }
        };
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.extend(list.iter().map(|c| c.hash));
        true
    }

    /// A version this node offers or was offered.
    pub fn add_offered(&self, root: Hash, size: u64) -> bool {
        self.offers().roots.insert(root, (size, Instant::now()));
        self.add_tree(root, size)
    }

    fn offers(&self) -> std::sync::MutexGuard<'_, Offered> {
        self.offers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sweep generation: read it before pulling an offered version, and
    /// pass it to [`Servable::add_pulled_offer`] once the pull is done.
    pub fn sweep_generation(&self) -> u64 {
        self.offers().generation
    }

    /// Records a pulled offered version, unless a sweep ran or runs since
    /// `generation` (it may have removed chunks the pull had stored before
    /// they were recorded): then `false`, and the pull must not be acked.
    pub fn add_pulled_offer(&self, root: Hash, size: u64, generation: u64) -> bool {
        let mut o = self.offers();
        if o.sweeping || o.generation != generation {
            return false;
        }
        o.roots.insert(root, (size, Instant::now()));
        drop(o);
        self.add_tree(root, size);
        true
    }

    /// Starts a sweep: forgets offers older than `window` and returns the
    /// others, whose chunks the sweep keeps (a pending offer may still
    /// commit). Until [`Servable::end_sweep`], pulls finishing are not acked.
    pub fn begin_sweep(&self, window: Duration) -> Vec<(Hash, u64)> {
        let mut o = self.offers();
        o.sweeping = true;
        o.generation += 1;
        let now = Instant::now();
        o.roots
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= window);
        o.roots.iter().map(|(r, (s, _))| (*r, *s)).collect()
    }

    pub fn end_sweep(&self) {
        let mut o = self.offers();
        o.sweeping = false;
        o.generation += 1;
    }

    /// A committed version (from now on retention decides how long its
    /// chunks are kept, not the offer).
    pub fn add_committed(&self, root: Hash, size: u64) -> bool {
        self.offers().roots.remove(&root);
        self.add_tree(root, size)
    }

    pub fn contains(&self, h: &Hash) -> bool {
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(h)
    }

    pub fn len(&self) -> usize {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The [`filesyncd_p2p::ChunkProvider`] of the daemon.
pub struct Provider {
    pub store: Arc<dyn ChunkStore>,
    pub servable: Arc<Servable>,
}

impl filesyncd_p2p::ChunkProvider for Provider {
    fn get(&self, hash: &Hash) -> Option<Vec<u8>> {
        if !self.servable.contains(hash) {
            return None;
        }
        match self.store.get_to_serve(hash) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(chunk = %hash, error = %e, "cannot serve a chunk");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesyncd_chunkstore::store::MemChunkStore;
    use filesyncd_merkle::ChunkEntry;
    use filesyncd_p2p::ChunkProvider;

    #[test]
    fn serves_only_chunks_of_known_versions() {
        let nodes = Arc::new(Mutex::new(MemNodeStore::new()));
        let store: Arc<dyn ChunkStore> = Arc::new(MemChunkStore::new(std::env::temp_dir()));
        let a = b"committed chunk".to_vec();
        let b = b"private chunk".to_vec();
        let (ha, hb) = (Hash::of_chunk(&a), Hash::of_chunk(&b));
        store.put(ha, &a).unwrap();
        store.put(hb, &b).unwrap();
        let tree = filesyncd_merkle::build(&[ChunkEntry {
            hash: ha,
            len: a.len() as u32,
        }]);
        let servable = Servable::new(nodes.clone());
        assert!(
            !servable.add_committed(tree.root, tree.size),
            "tree unknown yet"
        );
        nodes.lock().unwrap().extend(tree.nodes.clone());
        assert!(servable.add_committed(tree.root, tree.size));
        let p = Provider {
            store,
            servable: servable.clone(),
        };
        assert_eq!(p.get(&ha), Some(a));
        assert_eq!(p.get(&hb), None, "held but never offered or committed");
        assert_eq!(p.get(&Hash([9; 32])), None);
    }
}
