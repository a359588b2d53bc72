//! The path tree: one root hash for a whole directory tree.
//!
//! A Prolly tree keyed by path (clean relative UTF-8 paths, sorted by bytes;
//! see `path_value`) over [`PathValue`]s. Level 0 nodes (path leaves) hold
//! `(path, value)`; level L >= 1 nodes hold `(last path under child, child
//! hash)`. Boundaries follow `shape`: the bits of an entry are
//! `derive_key("filesyncd 2026 merkle path boundary v1", [level] || key)`, a
//! function of the key only, so the shape of the tree (which keys share a
//! node, at every level) depends only on the set of paths; values only change
//! hashes. The empty tree is the empty path leaf.
//!
//! Canonical: the tree of a map is unique, however it was reached. [`PathTree::update_many`]
//! re-cuts, level by level, only the nodes holding changed keys up to the
//! next boundary shared with the old tree (the rule of `shape` looks only
//! backwards to the last cut, so the old cuts after that point are the new
//! ones), so it gives the very root [`PathTree::build`] gives for the final map, touching
//! O(changes x depth) nodes. It removes from the store the old nodes the new
//! tree no longer references: a store given to `update` holds exactly one
//! tree version (no two nodes of one tree are equal, since keys are unique
//! and a node's level is in its bytes). Updates read every node they need
//! before writing anything, so an error leaves the store unchanged.
//!
//! Reads check structure as well as hashes: levels step down by one, a
//! child's keys lie between its left neighbour's last key (exclusive) and its
//! own entry's key (inclusive, equal for its last key), nodes other than the
//! last of a level end at a boundary, and an interior root has two children.

use crate::error::MerkleError;
use crate::hash::Hash;
use crate::node::{Node, PathChild};
use crate::path_update;
use crate::path_value::{validate_path, PathValue};
use crate::shape::{path_bits, Shape};
use crate::store::{read_with, NodeSource, NodeStore};

/// Namespace of path tree operations (the tree lives in a `NodeStore`).
pub struct PathTree;

impl PathTree {
    /// The root of the empty tree (no store needed).
    pub fn empty_hash() -> Hash {
        Node::PathLeaf(Vec::new()).hash()
    }

    /// Stores the empty tree and returns its root.
    pub fn empty_root(store: &mut impl NodeStore) -> Hash {
        let (h, b) = Node::PathLeaf(Vec::new()).seal();
        store.put_node(h, b);
        h
    }

    /// Builds the tree of `sorted` (strictly increasing paths) into `store`.
    pub fn build(
        store: &mut impl NodeStore,
        sorted: impl IntoIterator<Item = (String, PathValue)>,
    ) -> Result<Hash, MerkleError> {
        build_with(store, sorted, Shape::V1)
    }

    /// Inserts, replaces (`Some`) or deletes (`None`) one path.
    pub fn update(
        store: &mut impl NodeStore,
        root: Hash,
        path: &str,
        value: Option<PathValue>,
    ) -> Result<Hash, MerkleError> {
        path_update::update_many(store, root, [(path.to_owned(), value)], Shape::V1)
    }

    /// Applies `changes` (strictly increasing paths) in one pass.
    pub fn update_many(
        store: &mut impl NodeStore,
        root: Hash,
        changes: impl IntoIterator<Item = (String, Option<PathValue>)>,
    ) -> Result<Hash, MerkleError> {
        path_update::update_many(store, root, changes, Shape::V1)
    }

    /// The value of `path`, if present.
    pub fn get(
        store: &impl NodeSource,
        root: Hash,
        path: &str,
    ) -> Result<Option<PathValue>, MerkleError> {
        get_with(store, root, path, Shape::V1)
    }

    /// Every `(path, value)` whose path starts with `prefix` (as bytes), in
    /// order. `prefix = ""` lists the whole tree; `"dir/"` lists under `dir`.
    pub fn list(
        store: &impl NodeSource,
        root: Hash,
        prefix: &str,
    ) -> Result<Vec<(String, PathValue)>, MerkleError> {
        let mut out = Vec::new();
        Self::for_each(store, root, prefix, |k, v| out.push((k.to_owned(), *v)))?;
        Ok(out)
    }

    /// Calls `f` on every entry under `prefix`, in order, without collecting.
    pub fn for_each(
        store: &impl NodeSource,
        root: Hash,
        prefix: &str,
        mut f: impl FnMut(&str, &PathValue),
    ) -> Result<(), MerkleError> {
        visit(
            store,
            root,
            &PathExpect::root(),
            prefix,
            Shape::V1,
            &mut f,
            &mut |_| {},
        )
    }

    /// The hashes of every node of the tree (e.g. to send or check a tree).
    pub fn nodes(store: &impl NodeSource, root: Hash) -> Result<Vec<Hash>, MerkleError> {
        nodes_with(store, root, Shape::V1)
    }
}

pub(crate) fn nodes_with(
    store: &impl NodeSource,
    root: Hash,
    shape: Shape,
) -> Result<Vec<Hash>, MerkleError> {
    let mut out = Vec::new();
    visit(
        store,
        root,
        &PathExpect::root(),
        "",
        shape,
        &mut |_, _| {},
        &mut |h| out.push(h),
    )?;
    Ok(out)
}

pub(crate) fn build_with(
    store: &mut impl NodeStore,
    sorted: impl IntoIterator<Item = (String, PathValue)>,
    shape: Shape,
) -> Result<Hash, MerkleError> {
    let mut b = PathBuilder::new(shape);
    let mut prev: Option<String> = None;
    for (k, v) in sorted {
        check_change(prev.as_deref(), &k, Some(&v))?;
        b.push_leaf(k.clone(), v);
        prev = Some(k);
    }
    let (root, nodes) = b.finish(0);
    for (h, bytes) in nodes {
        store.put_node(h, bytes);
    }
    Ok(root)
}

/// Validates one input pair: path clean and after `prev`, value valid.
pub(crate) fn check_change(
    prev: Option<&str>,
    key: &str,
    value: Option<&PathValue>,
) -> Result<(), MerkleError> {
    validate_path(key)?;
    if prev.is_some_and(|p| p.as_bytes() >= key.as_bytes()) {
        return Err(MerkleError::Unsorted(key.chars().take(256).collect()));
    }
    if let Some(v) = value {
        v.validate()?;
    }
    Ok(())
}

/// Streaming bottom-up builder: leaf entries, or finished nodes of a level.
pub(crate) struct PathBuilder {
    shape: Shape,
    leaf: Vec<(String, PathValue)>,
    /// `pending[l]`: the open node of level `l + 1`.
    pending: Vec<Vec<PathChild>>,
    emitted: Vec<u64>,
    nodes: Vec<(Hash, Vec<u8>)>,
}

impl PathBuilder {
    pub fn new(shape: Shape) -> Self {
        PathBuilder {
            shape,
            leaf: Vec::new(),
            pending: Vec::new(),
            emitted: Vec::new(),
            nodes: Vec::new(),
        }
    }

    pub fn push_leaf(&mut self, key: String, value: PathValue) {
        let bits = path_bits(0, &key);
        self.leaf.push((key, value));
        if self.shape.is_cut(self.leaf.len(), bits) {
            let node = Node::PathLeaf(std::mem::take(&mut self.leaf));
            self.emit(0, node);
        }
    }

    fn emit(&mut self, level: usize, node: Node) {
        let last_key = match &node {
            Node::PathLeaf(e) => e.last().map(|(k, _)| k.clone()),
            Node::PathInterior { children, .. } => children.last().map(|c| c.last_key.clone()),
            _ => None,
        };
        let (hash, bytes) = node.seal();
        self.nodes.push((hash, bytes));
        // Only the empty leaf has no last key, and it is only ever a root.
        self.push_node(level, hash, last_key.unwrap_or_default());
    }

    /// Registers a finished node of `level` (already stored by the caller).
    pub fn push_node(&mut self, level: usize, hash: Hash, last_key: String) {
        if self.emitted.len() <= level {
            self.emitted.resize(level + 1, 0);
            self.pending.resize(level + 1, Vec::new());
        }
        self.emitted[level] += 1;
        let bits = path_bits((level + 1) as u8, &last_key);
        let open = &mut self.pending[level];
        open.push(PathChild { last_key, hash });
        if self.shape.is_cut(open.len(), bits) {
            let children = std::mem::take(open);
            let node = Node::PathInterior {
                level: (level + 1) as u8,
                children,
            };
            self.emit(level + 1, node);
        }
    }

    /// Closes every open node from `base` up; returns the root and the nodes
    /// this builder made. With `base = 0` and nothing pushed, the root is the
    /// empty leaf. With `base > 0`, at least one node of `base` was pushed.
    pub fn finish(mut self, base: usize) -> (Hash, Vec<(Hash, Vec<u8>)>) {
        if base == 0 && (!self.leaf.is_empty() || self.emitted.is_empty()) {
            let node = Node::PathLeaf(std::mem::take(&mut self.leaf));
            self.emit(0, node);
        }
        let mut level = base;
        loop {
            if self.emitted[level] == 1 {
                return (self.pending[level][0].hash, self.nodes);
            }
            if !self.pending[level].is_empty() {
                let children = std::mem::take(&mut self.pending[level]);
                let node = Node::PathInterior {
                    level: (level + 1) as u8,
                    children,
                };
                self.emit(level + 1, node);
            }
            level += 1;
        }
    }
}

/// What a parent (or being the root) says a path node must be.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathExpect {
    /// `None` for the root.
    pub level: Option<u8>,
    pub rightmost: bool,
    /// The parent's key for this child: the node's last key.
    pub last_key: Option<String>,
    /// Every key is greater than this (the left neighbour's last key).
    pub lower: Option<String>,
}

impl PathExpect {
    pub fn root() -> Self {
        PathExpect {
            rightmost: true,
            ..Default::default()
        }
    }

    /// What child `i` of `children` (of a node at `level` expected as `self`) must be.
    pub fn child(&self, level: u8, children: &[PathChild], i: usize) -> PathExpect {
        PathExpect {
            level: Some(level - 1),
            rightmost: self.rightmost && i + 1 == children.len(),
            last_key: Some(children[i].last_key.clone()),
            lower: if i == 0 {
                self.lower.clone()
            } else {
                Some(children[i - 1].last_key.clone())
            },
        }
    }
}

/// Key of entry `i` of a path node.
pub(crate) fn key_at(node: &Node, i: usize) -> Option<&str> {
    match node {
        Node::PathLeaf(e) => e.get(i).map(|(k, _)| k.as_str()),
        Node::PathInterior { children, .. } => children.get(i).map(|c| c.last_key.as_str()),
        _ => None,
    }
}

/// Checks the structural rules of the module doc for one path node.
pub(crate) fn check_path_node(
    node: &Node,
    exp: &PathExpect,
    shape: Shape,
) -> Result<(), MerkleError> {
    let bad = |m| Err(MerkleError::Corrupt(m));
    if !matches!(node, Node::PathLeaf(_) | Node::PathInterior { .. }) {
        return bad("not a path tree node");
    }
    match exp.level {
        Some(l) if node.level() != l => return bad("child level is not parent level - 1"),
        Some(_) if node.is_empty() => return bad("empty non-root node"),
        None if node.level() > 0 && node.len() < 2 => return bad("interior root with one child"),
        _ => {}
    }
    if !exp.rightmost && !node.ends_at_cut(shape) {
        return bad("node does not end at a boundary");
    }
    if let Some(want) = &exp.last_key {
        if key_at(node, node.len().wrapping_sub(1)) != Some(want.as_str()) {
            return bad("last key differs from the parent's");
        }
    }
    if let (Some(lower), Some(first)) = (&exp.lower, key_at(node, 0)) {
        if first.as_bytes() <= lower.as_bytes() {
            return bad("key not above the left neighbour's");
        }
    }
    Ok(())
}

pub(crate) fn load_checked(
    store: &(impl NodeSource + ?Sized),
    h: &Hash,
    exp: &PathExpect,
    shape: Shape,
) -> Result<Node, MerkleError> {
    let node = read_with(store, h, shape)?;
    check_path_node(&node, exp, shape)?;
    Ok(node)
}

pub(crate) fn get_with(
    store: &impl NodeSource,
    root: Hash,
    path: &str,
    shape: Shape,
) -> Result<Option<PathValue>, MerkleError> {
    let mut exp = PathExpect::root();
    let mut node = load_checked(store, &root, &exp, shape)?;
    loop {
        match node {
            Node::PathLeaf(entries) => {
                let found = entries.binary_search_by(|(k, _)| k.as_bytes().cmp(path.as_bytes()));
                return Ok(found.ok().map(|i| entries[i].1));
            }
            Node::PathInterior { level, children } => {
                let i = children.partition_point(|c| c.last_key.as_bytes() < path.as_bytes());
                if i == children.len() {
                    return Ok(None);
                }
                exp = exp.child(level, &children, i);
                node = load_checked(store, &children[i].hash, &exp, shape)?;
            }
            _ => return Err(MerkleError::Corrupt("not a path tree node")),
        }
    }
}

/// In-order walk of the entries under `prefix`; `on_node` sees every node
/// visited (all of them when `prefix` is empty).
fn visit(
    store: &impl NodeSource,
    h: Hash,
    exp: &PathExpect,
    prefix: &str,
    shape: Shape,
    f: &mut impl FnMut(&str, &PathValue),
    on_node: &mut impl FnMut(Hash),
) -> Result<(), MerkleError> {
    let node = load_checked(store, &h, exp, shape)?;
    on_node(h);
    let p = prefix.as_bytes();
    match &node {
        Node::PathLeaf(entries) => {
            for (k, v) in entries {
                if k.as_bytes().starts_with(p) {
                    f(k, v);
                } else if k.as_bytes() > p {
                    break;
                }
            }
        }
        Node::PathInterior { level, children } => {
            for (i, c) in children.iter().enumerate() {
                let last = c.last_key.as_bytes();
                if last < p {
                    continue; // everything under this child sorts before the prefix
                }
                visit(
                    store,
                    c.hash,
                    &exp.child(*level, children, i),
                    prefix,
                    shape,
                    f,
                    on_node,
                )?;
                if !last.starts_with(p) {
                    break; // this child already reached past the prefix range
                }
            }
        }
        _ => return Err(MerkleError::Corrupt("not a path tree node")),
    }
    Ok(())
}

#[cfg(test)]
#[path = "path_tree_tests.rs"]
mod tests;
