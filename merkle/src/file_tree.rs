//! The per-file tree: a Prolly tree over a file's ordered chunk list.
//!
//! * Level 0 nodes (file leaves) hold the file's [`ChunkEntry`]s in order.
//! * Level L >= 1 nodes (file interior) hold, per child node of level L-1,
//!   `(child hash, bytes under it, chunks under it)`.
//! * Nodes are cut by the boundary rule of `shape`: after an entry whose
//!   chunk hash (level 0) or child node hash (level >= 1) has its low 6 bits
//!   zero, once the node has >= 2 entries; and always at 256 entries.
//! * The root is the first level with one node. The empty file's root is the
//!   empty leaf node. A file of fewer than ~64 chunks is one leaf.
//!
//! A file version is identified by `(root, size)` ([`FileTree`]). Because
//! boundaries are content-defined, inserting or removing a chunk changes only
//! the nodes on the path to it plus, per level, the few nodes up to the next
//! shared boundary: O(log n) nodes.
//!
//! Zero-length entries carry no bytes and are dropped by the builder (and
//! refused by the decoder), so the root is a function of the chunk list.
//!
//! Reading a tree ([`chunks`]) checks the whole structure, not only hashes: a
//! child's level is its parent's minus one, totals claimed by a parent equal
//! the child's, every node but the last of its level ends at a boundary, and
//! an interior root has at least two children. So a tree that decodes is the
//! one canonical tree of its chunk list.

use crate::error::MerkleError;
use crate::hash::{ChunkEntry, Hash};
use crate::node::{FileChild, Node, MAX_LEVEL};
use crate::shape::Shape;
use crate::store::{read_with, NodeSource, NodeStore};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The identity of a file version: its tree root and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileTree {
    pub root: Hash,
    pub size: u64,
}

impl FileTree {
    /// The empty file.
    pub fn empty() -> FileTree {
        FileTree {
            root: Node::FileLeaf(Vec::new()).hash(),
            size: 0,
        }
    }

    /// The chunk list, checking the structure and that it sums to `size`.
    pub fn chunks(&self, store: &impl NodeSource) -> Result<Vec<ChunkEntry>, MerkleError> {
        let list = chunks(store, self.root)?;
        let total: u64 = list.iter().map(|c| u64::from(c.len)).sum();
        if total != self.size {
            return Err(MerkleError::Corrupt(
                "tree size differs from the expected size",
            ));
        }
        Ok(list)
    }
}

/// A freshly built tree: its identity and every node (each distinct node
/// once, in no particular order), ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltTree {
    pub root: Hash,
    pub size: u64,
    pub nodes: Vec<(Hash, Vec<u8>)>,
}

impl BuiltTree {
    pub fn tree(&self) -> FileTree {
        FileTree {
            root: self.root,
            size: self.size,
        }
    }

    /// Puts every node into `store`.
    pub fn store_into(&self, store: &mut impl NodeStore) {
        for (h, b) in &self.nodes {
            store.put_node(*h, b.clone());
        }
    }
}

/// Builds the tree of `entries` (in file order).
pub fn build(entries: &[ChunkEntry]) -> BuiltTree {
    build_with(entries, Shape::V1)
}

pub(crate) fn build_with(entries: &[ChunkEntry], shape: Shape) -> BuiltTree {
    let mut b = FileTreeBuilder::with_shape(shape);
    for e in entries {
        b.push(*e);
    }
    b.finish()
}

/// Streaming builder: push chunk entries in file order, then `finish`.
/// Holds at most one open node per level plus the finished nodes.
#[derive(Debug)]
pub struct FileTreeBuilder {
    shape: Shape,
    leaf: Vec<ChunkEntry>,
    /// `pending[l]`: the open node of level `l + 1`.
    pending: Vec<Vec<FileChild>>,
    /// Nodes finished per level.
    emitted: Vec<u64>,
    nodes: Vec<(Hash, Vec<u8>)>,
    seen: HashSet<Hash>,
    size: u64,
}

impl Default for FileTreeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FileTreeBuilder {
    pub fn new() -> Self {
        Self::with_shape(Shape::V1)
    }

    pub(crate) fn with_shape(shape: Shape) -> Self {
        FileTreeBuilder {
            shape,
            leaf: Vec::new(),
            pending: Vec::new(),
            emitted: Vec::new(),
            nodes: Vec::new(),
            seen: HashSet::new(),
            size: 0,
        }
    }

    /// Appends the next chunk (zero-length entries are dropped).
    pub fn push(&mut self, e: ChunkEntry) {
        if e.len == 0 {
            return;
        }
        self.size = self.size.saturating_add(u64::from(e.len));
        self.leaf.push(e);
        if self.shape.is_cut(self.leaf.len(), e.hash.low_u64()) {
            let node = Node::FileLeaf(std::mem::take(&mut self.leaf));
            self.emit(0, node);
        }
    }

    fn emit(&mut self, level: usize, node: Node) {
        // Totals of nodes we built from u32 lengths cannot overflow u64
        // before 2^32 chunks of 4 GiB; saturate rather than panic.
        let (bytes, chunks) = node.file_totals().unwrap_or((u64::MAX, u64::MAX));
        let (hash, encoded) = node.seal();
        if self.seen.insert(hash) {
            self.nodes.push((hash, encoded));
        }
        if self.emitted.len() <= level {
            self.emitted.resize(level + 1, 0);
            self.pending.resize(level + 1, Vec::new());
        }
        self.emitted[level] += 1;
        let open = &mut self.pending[level];
        open.push(FileChild {
            hash,
            bytes,
            chunks,
        });
        if self.shape.is_cut(open.len(), hash.low_u64()) {
            let children = std::mem::take(open);
            self.emit(
                level + 1,
                Node::FileInterior {
                    level: (level + 1) as u8,
                    children,
                },
            );
        }
    }

    pub fn finish(mut self) -> BuiltTree {
        if !self.leaf.is_empty() || self.emitted.is_empty() {
            let node = Node::FileLeaf(std::mem::take(&mut self.leaf));
            self.emit(0, node);
        }
        let mut level = 0;
        let root = loop {
            if self.emitted[level] == 1 {
                // The single node of this level is the root; its entry is the
                // only one in the open node above (no cut before 2 entries).
                break self.pending[level][0].hash;
            }
            if !self.pending[level].is_empty() {
                let children = std::mem::take(&mut self.pending[level]);
                self.emit(
                    level + 1,
                    Node::FileInterior {
                        level: (level + 1) as u8,
                        children,
                    },
                );
            }
            level += 1;
        };
        BuiltTree {
            root,
            size: self.size,
            nodes: self.nodes,
        }
    }
}

/// What a parent (or being the root) says a file node must be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect {
    /// `None` for the root.
    pub level: Option<u8>,
    /// Last node of its level (may end without a boundary).
    pub rightmost: bool,
    /// `(bytes, chunks)` claimed by the parent.
    pub totals: Option<(u64, u64)>,
}

impl Expect {
    pub const ROOT: Expect = Expect {
        level: None,
        rightmost: true,
        totals: None,
    };

    /// What child `i` of `n` children of a node at `level` must be.
    pub fn child(&self, level: u8, c: &FileChild, i: usize, n: usize) -> Expect {
        Expect {
            level: Some(level - 1),
            rightmost: self.rightmost && i + 1 == n,
            totals: Some((c.bytes, c.chunks)),
        }
    }
}

/// Checks the structural rules of the module doc for one file node.
pub(crate) fn check_file_node(node: &Node, exp: &Expect, shape: Shape) -> Result<(), MerkleError> {
    if !matches!(node, Node::FileLeaf(_) | Node::FileInterior { .. }) {
        return Err(MerkleError::Corrupt("not a file tree node"));
    }
    match exp.level {
        Some(l) if node.level() != l => {
            return Err(MerkleError::Corrupt("child level is not parent level - 1"))
        }
        None if node.level() > MAX_LEVEL => {
            return Err(MerkleError::Corrupt("tree too deep"));
        }
        Some(_) if node.is_empty() => return Err(MerkleError::Corrupt("empty non-root node")),
        None if node.level() > 0 && node.len() < 2 => {
            return Err(MerkleError::Corrupt("interior root with one child"))
        }
        _ => {}
    }
    if !exp.rightmost && !node.ends_at_cut(shape) {
        return Err(MerkleError::Corrupt("node does not end at a boundary"));
    }
    if let Some(t) = exp.totals {
        if node.file_totals()? != t {
            return Err(MerkleError::Corrupt(
                "subtree totals differ from the parent's",
            ));
        }
    }
    Ok(())
}

/// The chunk list of the tree rooted at `root`, every node verified and the
/// structure checked (see module doc).
pub fn chunks(store: &impl NodeSource, root: Hash) -> Result<Vec<ChunkEntry>, MerkleError> {
    chunks_with(store, root, Shape::V1)
}

/// Most chunk entries a tree is expanded to in memory by [`chunks`]: 8 Mi
/// entries, a list of about 300 MiB, a file of about 320 GiB at the
/// chunker's 40 KiB average (512 GiB at its 64 KiB maximum). The structural
/// checks make every node's totals equal its parent's claim, so the root's
/// claim is what a walk would produce: a tree claiming more is refused
/// before anything is read past the root. Without this bound a few KB of
/// repeated subtrees (legal: a file of repeated content has them) claiming
/// exabytes were expanded into a list until memory ran out.
pub const MAX_EXPANDED_CHUNKS: u64 = 1 << 23;

pub(crate) fn chunks_with(
    store: &impl NodeSource,
    root: Hash,
    shape: Shape,
) -> Result<Vec<ChunkEntry>, MerkleError> {
    chunks_bounded(store, root, shape, MAX_EXPANDED_CHUNKS)
}

pub(crate) fn chunks_bounded(
    store: &impl NodeSource,
    root: Hash,
    shape: Shape,
    max_chunks: u64,
) -> Result<Vec<ChunkEntry>, MerkleError> {
    let node = read_with(store, &root, shape)?;
    check_file_node(&node, &Expect::ROOT, shape)?;
    let (_, claimed) = node.file_totals()?;
    if claimed > max_chunks {
        return Err(MerkleError::TooLarge {
            what: "file tree (chunks)",
            size: claimed,
            max: max_chunks,
        });
    }
    let mut out = Vec::with_capacity(claimed as usize);
    expand(store, node, Expect::ROOT, shape, &mut out)?;
    Ok(out)
}

fn walk(
    store: &impl NodeSource,
    h: Hash,
    exp: Expect,
    shape: Shape,
    out: &mut Vec<ChunkEntry>,
) -> Result<(), MerkleError> {
    let node = read_with(store, &h, shape)?;
    check_file_node(&node, &exp, shape)?;
    expand(store, node, exp, shape, out)
}

/// Appends the chunks under `node` (read and checked against `exp`).
fn expand(
    store: &impl NodeSource,
    node: Node,
    exp: Expect,
    shape: Shape,
    out: &mut Vec<ChunkEntry>,
) -> Result<(), MerkleError> {
    match node {
        Node::FileLeaf(entries) => out.extend(entries),
        Node::FileInterior { level, children } => {
            let n = children.len();
            for (i, c) in children.iter().enumerate() {
                walk(store, c.hash, exp.child(level, c, i, n), shape, out)?;
            }
        }
        _ => return Err(MerkleError::Corrupt("not a file tree node")),
    }
    Ok(())
}

#[cfg(test)]
#[path = "file_tree_tests.rs"]
pub(crate) mod tests;
