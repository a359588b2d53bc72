//! Where nodes live: the `NodeSource` / `NodeStore` seam and its in-memory twin.
//!
//! A store maps a node hash to the node's encoded bytes. Stores are dumb: they
//! may lose, damage or never have held a node. So every node this crate reads
//! back goes through [`read_node`]: missing is [`MerkleError::MissingNode`], and
//! the bytes are hashed and strictly decoded before use (a damaged node is
//! [`MerkleError::HashMismatch`] or [`MerkleError::Corrupt`], never used).

use crate::error::MerkleError;
use crate::hash::Hash;
use crate::node::{verify_with, Node};
use crate::shape::Shape;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Read access to encoded nodes by hash.
pub trait NodeSource {
    /// The encoded bytes stored under `h`, unverified.
    fn get_node(&self, h: &Hash) -> Option<Vec<u8>>;

    /// Is a node stored under `h`? (Default: a `get_node`.)
    fn has_node(&self, h: &Hash) -> bool {
        self.get_node(h).is_some()
    }
}

/// A mutable node store.
pub trait NodeStore: NodeSource {
    /// Stores `bytes` under `h`. The caller guarantees `h` is their node hash
    /// (reads verify it anyway).
    fn put_node(&mut self, h: Hash, bytes: Vec<u8>);
    /// Forgets `h` (no-op if absent).
    fn remove_node(&mut self, h: &Hash);
}

impl<S: NodeSource + ?Sized> NodeSource for &S {
    fn get_node(&self, h: &Hash) -> Option<Vec<u8>> {
        (**self).get_node(h)
    }
    fn has_node(&self, h: &Hash) -> bool {
        (**self).has_node(h)
    }
}

impl<S: NodeSource + ?Sized> NodeSource for &mut S {
    fn get_node(&self, h: &Hash) -> Option<Vec<u8>> {
        (**self).get_node(h)
    }
    fn has_node(&self, h: &Hash) -> bool {
        (**self).has_node(h)
    }
}

impl<S: NodeStore + ?Sized> NodeStore for &mut S {
    fn put_node(&mut self, h: Hash, bytes: Vec<u8>) {
        (**self).put_node(h, bytes)
    }
    fn remove_node(&mut self, h: &Hash) {
        (**self).remove_node(h)
    }
}

/// Reads node `h` from `src`, verifying its hash and decoding it strictly.
pub fn read_node(src: &(impl NodeSource + ?Sized), h: &Hash) -> Result<Node, MerkleError> {
    read_with(src, h, Shape::V1)
}

pub(crate) fn read_with(
    src: &(impl NodeSource + ?Sized),
    h: &Hash,
    shape: Shape,
) -> Result<Node, MerkleError> {
    let bytes = src.get_node(h).ok_or(MerkleError::MissingNode(*h))?;
    verify_with(h, &bytes, shape)
}

/// An in-memory node store (a `HashMap`), the twin of the durable ones.
///
/// It also lists the nodes added since [`MemNodeStore::take_fresh`] was
/// last called, so that a caller that persists it writes what is new
/// without looking at what is not. With a backing store
/// ([`MemNodeStore::with_backing`]) it is a write buffer in front of it:
/// reads that miss memory go to the backing store, and the nodes the caller
/// has written there are dropped from memory ([`MemNodeStore::evict`]), so
/// memory holds only what is not yet written, whatever the number of nodes.
#[derive(Clone, Default)]
pub struct MemNodeStore {
    nodes: HashMap<Hash, Vec<u8>>,
    fresh: Vec<Hash>,
    backing: Option<Arc<dyn NodeSource + Send + Sync>>,
    /// The nodes evicted last, oldest first, at most [`RECENT_NODES`]: a
    /// version's nodes are read again soon after they were written (its
    /// commit, its write, its chunks served), and a read here costs no
    /// transaction of the backing store.
    recent: HashMap<Hash, Vec<u8>>,
    recent_order: VecDeque<Hash>,
}

/// How many evicted nodes [`MemNodeStore`] keeps for reads (about 100
/// bytes each for a small file's one-leaf tree: a few MiB).
pub const RECENT_NODES: usize = 32 * 1024;

impl std::fmt::Debug for MemNodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNodeStore")
            .field("in_memory", &self.nodes.len())
            .field("fresh", &self.fresh.len())
            .field("backed", &self.backing.is_some())
            .finish()
    }
}

impl MemNodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store in front of `backing` (see the type's doc).
    pub fn with_backing(backing: Arc<dyn NodeSource + Send + Sync>) -> Self {
        MemNodeStore {
            backing: Some(backing),
            ..Self::default()
        }
    }

    /// Drops `hashes` from memory: the caller has written them to the
    /// backing store, where reads find them from now on. Without a backing
    /// store this does nothing (memory is then the only copy).
    pub fn evict(&mut self, hashes: &[Hash]) {
        if self.backing.is_none() {
            return;
        }
        for h in hashes {
            if let Some(b) = self.nodes.remove(h) {
                if self.recent.insert(*h, b).is_none() {
                    self.recent_order.push_back(*h);
                }
            }
        }
        while self.recent_order.len() > RECENT_NODES {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Number of nodes held in memory and not yet evicted (the recently
    /// evicted ones kept for reads, at most [`RECENT_NODES`], not counted).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Total encoded bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.nodes.values().map(Vec::len).sum()
    }

    /// The hashes held in memory, in no particular order.
    pub fn hashes(&self) -> impl Iterator<Item = &Hash> {
        self.nodes.keys()
    }

    /// Stores every `(hash, bytes)` pair (e.g. `BuiltTree::nodes` or the
    /// nodes a `diff` fetched).
    pub fn extend(&mut self, nodes: impl IntoIterator<Item = (Hash, Vec<u8>)>) {
        for (h, b) in nodes {
            self.put_node(h, b);
        }
    }

    /// The hashes of the nodes added (not held before) since the last call,
    /// in the order they came; a node removed since is left out.
    pub fn take_fresh(&mut self) -> Vec<Hash> {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.retain(|h| self.nodes.contains_key(h));
        fresh
    }

    /// Puts `hashes` back on the fresh list (their write failed: the next
    /// [`MemNodeStore::take_fresh`] returns them again).
    pub fn keep_fresh(&mut self, hashes: impl IntoIterator<Item = Hash>) {
        self.fresh.extend(hashes);
    }
}

impl NodeSource for MemNodeStore {
    fn get_node(&self, h: &Hash) -> Option<Vec<u8>> {
        match self.nodes.get(h).or_else(|| self.recent.get(h)) {
            Some(b) => Some(b.clone()),
            None => self.backing.as_ref()?.get_node(h),
        }
    }
    fn has_node(&self, h: &Hash) -> bool {
        self.nodes.contains_key(h)
            || self.recent.contains_key(h)
            || self.backing.as_ref().is_some_and(|b| b.has_node(h))
    }
}

impl NodeStore for MemNodeStore {
    fn put_node(&mut self, h: Hash, bytes: Vec<u8>) {
        if self.nodes.insert(h, bytes).is_none() {
            self.fresh.push(h);
        }
    }
    fn remove_node(&mut self, h: &Hash) {
        self.nodes.remove(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::ChunkEntry;

    #[test]
    fn fresh_lists_each_new_node_once() {
        let mut s = MemNodeStore::new();
        s.put_node(Hash([1; 32]), vec![1]);
        s.put_node(Hash([2; 32]), vec![2]);
        s.put_node(Hash([1; 32]), vec![1]);
        s.remove_node(&Hash([2; 32]));
        assert_eq!(s.take_fresh(), vec![Hash([1; 32])]);
        assert!(s.take_fresh().is_empty());
        s.extend([(Hash([1; 32]), vec![1]), (Hash([3; 32]), vec![3])]);
        assert_eq!(s.take_fresh(), vec![Hash([3; 32])]);
        s.keep_fresh([Hash([3; 32])]);
        assert_eq!(s.take_fresh(), vec![Hash([3; 32])]);
    }

    #[test]
    fn reads_are_verified() {
        let node = Node::FileLeaf(vec![ChunkEntry {
            hash: Hash([7; 32]),
            len: 3,
        }]);
        let (h, bytes) = node.seal();
        let mut s = MemNodeStore::new();
        assert_eq!(read_node(&s, &h), Err(MerkleError::MissingNode(h)));
        s.put_node(h, bytes.clone());
        assert!(s.has_node(&h));
        assert_eq!(read_node(&s, &h).unwrap(), node);
        // Damaged bytes under the right name are refused.
        let mut damaged = bytes;
        damaged[6] ^= 1;
        s.put_node(h, damaged);
        assert!(matches!(
            read_node(&s, &h),
            Err(MerkleError::HashMismatch { .. })
        ));
        s.remove_node(&h);
        assert!(s.is_empty());
    }

    #[test]
    fn evicted_nodes_are_read_from_the_backing_store() {
        let (h, bytes) = Node::FileLeaf(vec![ChunkEntry {
            hash: Hash([7; 32]),
            len: 3,
        }])
        .seal();
        let mut backing = MemNodeStore::new();
        backing.put_node(h, bytes.clone());
        let mut s2 = MemNodeStore::with_backing(Arc::new(backing));
        s2.put_node(h, bytes.clone());
        s2.evict(&[h]);
        assert!(s2.is_empty(), "nothing left to write");
        assert!(s2.has_node(&h));
        assert_eq!(s2.get_node(&h), Some(bytes.clone()));
        // Without a backing store, evict keeps the only copy.
        // What is kept of evicted nodes is bounded: the oldest are read
        // from the backing store only (here an empty one: absent).
        let mut s3 = MemNodeStore::with_backing(Arc::new(MemNodeStore::new()));
        let many: Vec<Hash> = (0..RECENT_NODES as u32 + 10)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                Hash(b)
            })
            .collect();
        for h in &many {
            s3.put_node(*h, vec![1]);
        }
        s3.evict(&many);
        assert_eq!(s3.recent.len(), RECENT_NODES);
        assert!(!s3.has_node(&many[9]), "the oldest are gone from memory");
        assert!(s3.has_node(&many[10]) && s3.has_node(&many[many.len() - 1]));
        let mut plain = MemNodeStore::new();
        plain.put_node(h, bytes.clone());
        plain.evict(&[h]);
        assert_eq!(plain.get_node(&h), Some(bytes));
    }
}
