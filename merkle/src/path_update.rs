//! Incremental path tree updates (the algorithm behind `PathTree::update_many`).
//!
//! Level by level, from the leaves up:
//! 1. For the first pending edit, seek the old node of this level whose key
//!    range holds its key (the last node if the key is past every key).
//! 2. Re-scan from that node's start (a cut in the old tree, so the scan
//!    state is fresh there, as in a full build) merging the old entries with
//!    the edits, cutting new nodes by the boundary rule. After each old node
//!    is consumed: if the scan just cut too, old and new agree from here on
//!    (until the next edit), so stop; else continue into the next old node.
//!    The last node of a level always ends the region.
//! 3. Repeat for the remaining edits. Every old node consumed is dropped, every
//!    node cut is new. For the level above, each dropped node deletes its
//!    parent entry (its last key) and each new node upserts one; pairs that
//!    cancel (same key, same hash) are no edit at all.
//! 4. At the old root's level the region is the whole level. Its new nodes
//!    are then built upward as in a full build (the tree grows), or, if one
//!    node remains, the root sheds interior nodes of one child (shrinks); no
//!    node at all means the empty tree.
//!
//! Nodes are read (verified, structure-checked) and cached during the pass;
//! the store is written only at the end: new nodes put, dropped ones removed.

use crate::error::MerkleError;
use crate::hash::Hash;
use crate::node::{check_bits, decode_format, decode_with, verify_hash, Node, PathChild};
use crate::path_tree::{check_change, check_path_node, key_at, PathBuilder, PathExpect};
use crate::path_value::PathValue;
use crate::shape::{path_bits, Shape};
use crate::store::{read_with, NodeSource, NodeStore};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

/// An entry of any level: a value (level 0) or a child (level >= 1).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Payload {
    Value(PathValue),
    Child(Hash),
}

type Edit = (String, Option<Payload>);

pub(crate) fn update_many<S: NodeStore>(
    store: &mut S,
    root: Hash,
    changes: impl IntoIterator<Item = (String, Option<PathValue>)>,
    shape: Shape,
) -> Result<Hash, MerkleError> {
    let mut edits: Vec<Edit> = Vec::new();
    for (k, v) in changes {
        check_change(edits.last().map(|e| e.0.as_str()), &k, v.as_ref())?;
        edits.push((k, v.map(Payload::Value)));
    }
    let mut pass = Pass {
        store: &*store,
        shape,
        cache: HashMap::new(),
        bits: HashMap::new(),
        root,
        removed: HashSet::new(),
        added: HashMap::new(),
    };
    let root_node = pass.load(root, &PathExpect::root())?;
    let height = root_node.level();
    let new_root = pass.run(edits, height)?;
    let Pass { removed, added, .. } = pass;
    for h in removed.iter().filter(|h| !added.contains_key(h)) {
        store.remove_node(h);
    }
    for (h, bytes) in added {
        store.put_node(h, bytes);
    }
    Ok(new_root)
}

struct Pass<'s, S: ?Sized> {
    store: &'s S,
    shape: Shape,
    cache: HashMap<Hash, Rc<Node>>,
    /// Boundary bits of the entries of each cached node.
    bits: HashMap<Hash, Rc<Vec<u64>>>,
    root: Hash,
    /// Old nodes consumed.
    removed: HashSet<Hash>,
    /// New nodes cut.
    added: HashMap<Hash, Vec<u8>>,
}

/// One node on the way down: the node, the child taken, and what the node
/// was expected to be (to derive its children's expectations).
struct Frame {
    node: Rc<Node>,
    idx: usize,
    exp: PathExpect,
}

/// Position on an old node of one level.
struct Cursor {
    frames: Vec<Frame>,
    node: Rc<Node>,
    hash: Hash,
}

impl Cursor {
    fn is_last(&self) -> bool {
        self.frames.iter().all(|f| f.idx + 1 == f.node.len())
    }
}

fn children(node: &Node) -> Result<&[PathChild], MerkleError> {
    match node {
        Node::PathInterior { children, .. } => Ok(children),
        _ => Err(MerkleError::Corrupt("expected a path interior node")),
    }
}

fn items(node: &Node) -> Vec<(String, Payload)> {
    match node {
        Node::PathLeaf(e) => e
            .iter()
            .map(|(k, v)| (k.clone(), Payload::Value(*v)))
            .collect(),
        Node::PathInterior { children, .. } => children
            .iter()
            .map(|c| (c.last_key.clone(), Payload::Child(c.hash)))
            .collect(),
        _ => Vec::new(),
    }
}

fn make_node(level: u8, items: Vec<(String, Payload)>) -> Result<Node, MerkleError> {
    let wrong = MerkleError::Corrupt("mixed entry kinds in one level");
    if level == 0 {
        let mut v = Vec::with_capacity(items.len());
        for (k, p) in items {
            match p {
                Payload::Value(val) => v.push((k, val)),
                Payload::Child(_) => return Err(wrong),
            }
        }
        Ok(Node::PathLeaf(v))
    } else {
        let mut v = Vec::with_capacity(items.len());
        for (k, p) in items {
            match p {
                Payload::Child(hash) => v.push(PathChild { last_key: k, hash }),
                Payload::Value(_) => return Err(wrong),
            }
        }
        Ok(Node::PathInterior { level, children: v })
    }
}

impl<S: NodeSource + ?Sized> Pass<'_, S> {
    /// Reads, verifies and checks node `h`, caching it with its entries'
    /// boundary bits (computed once: the shape check and the re-cut both
    /// need them).
    fn load(&mut self, h: Hash, exp: &PathExpect) -> Result<Rc<Node>, MerkleError> {
        if let Some(n) = self.cache.get(&h) {
            return Ok(n.clone());
        }
        let bytes = self.store.get_node(&h).ok_or(MerkleError::MissingNode(h))?;
        verify_hash(&h, &bytes)?;
        let node = decode_format(&bytes)?;
        let bits: Vec<u64> = (0..node.len()).map(|i| node.bits(i)).collect();
        check_bits(&bits, self.shape)?;
        check_path_node(&node, exp, self.shape)?;
        let node = Rc::new(node);
        self.cache.insert(h, node.clone());
        self.bits.insert(h, Rc::new(bits));
        Ok(node)
    }

    /// Descends from the frame stack's last frame along `idx` to `level`.
    fn descend(
        &mut self,
        mut frames: Vec<Frame>,
        level: u8,
        leftmost: bool,
        key: &str,
    ) -> Result<Cursor, MerkleError> {
        loop {
            let top = frames.last().ok_or(MerkleError::Corrupt("empty cursor"))?;
            let kids = children(&top.node)?;
            let h = kids[top.idx].hash;
            let exp = top.exp.child(top.node.level(), kids, top.idx);
            let node = self.load(h, &exp)?;
            if node.level() == level {
                return Ok(Cursor {
                    frames,
                    node,
                    hash: h,
                });
            }
            let idx = if leftmost {
                0
            } else {
                seek_idx(children(&node)?, key)
            };
            frames.push(Frame { node, idx, exp });
        }
    }

    /// The old node of `level` whose range holds `key`.
    fn seek(&mut self, level: u8, key: &str) -> Result<Cursor, MerkleError> {
        let root = self.load(self.root, &PathExpect::root())?;
        if root.level() == level {
            return Ok(Cursor {
                frames: Vec::new(),
                node: root,
                hash: self.root,
            });
        }
        let idx = seek_idx(children(&root)?, key);
        let frames = vec![Frame {
            node: root,
            idx,
            exp: PathExpect::root(),
        }];
        self.descend(frames, level, false, key)
    }

    /// The next old node of the cursor's level, if any.
    fn next(&mut self, cur: Cursor) -> Result<Option<Cursor>, MerkleError> {
        let level = cur.node.level();
        let mut frames = cur.frames;
        while let Some(top) = frames.last_mut() {
            if top.idx + 1 < top.node.len() {
                top.idx += 1;
                return self.descend(frames, level, true, "").map(Some);
            }
            frames.pop();
        }
        Ok(None)
    }

    fn emit(
        &mut self,
        level: u8,
        open: &mut Vec<(String, Payload)>,
        out: &mut Vec<(String, Hash)>,
    ) -> Result<(), MerkleError> {
        let node = make_node(level, std::mem::take(open))?;
        let last = key_at(&node, node.len().wrapping_sub(1))
            .ok_or(MerkleError::Corrupt("emitting an empty node"))?
            .to_owned();
        let (h, bytes) = node.seal();
        self.added.insert(h, bytes);
        out.push((last, h));
        Ok(())
    }

    /// Re-cuts the regions of `level` touched by `edits`. Returns the old
    /// nodes dropped and the new nodes cut, as (last key, hash), in order.
    #[allow(clippy::type_complexity)]
    fn level_pass(
        &mut self,
        level: u8,
        edits: Vec<Edit>,
    ) -> Result<(Vec<(Option<String>, Hash)>, Vec<(String, Hash)>), MerkleError> {
        let mut dropped = Vec::new();
        let mut cut = Vec::new();
        let mut edits = edits.into_iter().peekable();
        while let Some((first_key, _)) = edits.peek() {
            let mut cur = self.seek(level, &first_key.clone())?;
            let mut open: Vec<(String, Payload)> = Vec::new();
            loop {
                let last = cur.is_last();
                let bound = if last {
                    None
                } else {
                    key_at(&cur.node, cur.node.len().wrapping_sub(1)).map(str::to_owned)
                };
                dropped.push((
                    key_at(&cur.node, cur.node.len().wrapping_sub(1)).map(str::to_owned),
                    cur.hash,
                ));
                self.removed.insert(cur.hash);
                let old_bits = match self.bits.get(&cur.hash) {
                    Some(b) => b.clone(),
                    None => Rc::new((0..cur.node.len()).map(|i| cur.node.bits(i)).collect()),
                };
                let mut old = items(&cur.node)
                    .into_iter()
                    .zip(old_bits.iter().copied())
                    .peekable();
                loop {
                    let in_range = |k: &str| {
                        bound
                            .as_deref()
                            .is_none_or(|b| k.as_bytes() <= b.as_bytes())
                    };
                    let take_edit = match (old.peek(), edits.peek()) {
                        (_, Some((ek, _))) if !in_range(ek) => false,
                        (None, None) => break,
                        (None, Some(_)) => true,
                        (Some(_), None) => false,
                        (Some(((ok, _), _)), Some((ek, _))) => ek.as_bytes() <= ok.as_bytes(),
                    };
                    let (item, bits) = if take_edit {
                        let Some((ek, ev)) = edits.next() else { break };
                        if old.peek().is_some_and(|((ok, _), _)| *ok == ek) {
                            old.next(); // replaced or deleted
                        }
                        match ev {
                            Some(p) => {
                                let bits = path_bits(level, &ek);
                                ((ek, p), bits)
                            }
                            None => continue,
                        }
                    } else {
                        match old.next() {
                            Some(it) => it,
                            None => break,
                        }
                    };
                    open.push(item);
                    if self.shape.is_cut(open.len(), bits) {
                        self.emit(level, &mut open, &mut cut)?;
                    }
                }
                if last {
                    if !open.is_empty() {
                        self.emit(level, &mut open, &mut cut)?;
                    }
                    break;
                }
                if open.is_empty() {
                    break; // the new scan cut where the old one did: in sync again
                }
                cur = self
                    .next(cur)?
                    .ok_or(MerkleError::Corrupt("cursor ran past the level"))?;
            }
        }
        Ok((dropped, cut))
    }

    /// Runs the pass over all levels; returns the new root.
    fn run(&mut self, mut edits: Vec<Edit>, height: u8) -> Result<Hash, MerkleError> {
        let mut level = 0u8;
        loop {
            if edits.is_empty() {
                return Ok(self.root); // nothing changed from here up
            }
            let (dropped, cut) = self.level_pass(level, edits)?;
            if level == height {
                return self.finish_top(level, cut);
            }
            // Edits for the level above; (old hash, new hash) per key.
            let mut up: BTreeMap<String, (Option<Hash>, Option<Hash>)> = BTreeMap::new();
            for (k, h) in dropped {
                let k = k.ok_or(MerkleError::Corrupt("empty node below the root"))?;
                up.entry(k).or_default().0 = Some(h);
            }
            for (k, h) in cut {
                up.entry(k).or_default().1 = Some(h);
            }
            edits = up
                .into_iter()
                .filter(|(_, (old, new))| old != new)
                .map(|(k, (_, new))| (k, new.map(Payload::Child)))
                .collect();
            level += 1;
        }
    }

    /// `cut` is the whole new content of the old root's level.
    fn finish_top(&mut self, level: u8, cut: Vec<(String, Hash)>) -> Result<Hash, MerkleError> {
        match cut.len() {
            0 => {
                let (h, bytes) = Node::PathLeaf(Vec::new()).seal();
                self.added.insert(h, bytes);
                Ok(h)
            }
            1 => self.shed(cut[0].1),
            _ => {
                let mut b = PathBuilder::new(self.shape);
                for (k, h) in cut {
                    b.push_node(usize::from(level), h, k);
                }
                let (root, nodes) = b.finish(usize::from(level));
                self.added.extend(nodes);
                Ok(root)
            }
        }
    }

    /// While the root is an interior node with one child, the child is the root.
    fn shed(&mut self, mut root: Hash) -> Result<Hash, MerkleError> {
        loop {
            // A new node (just cut) or an old one below the old root (its
            // checks as a child already passed, or it was never touched:
            // verify its hash and encoding only).
            let node = match (self.added.get(&root), self.cache.get(&root)) {
                (Some(bytes), _) => Rc::new(decode_with(bytes, self.shape)?),
                (None, Some(n)) => n.clone(),
                (None, None) => Rc::new(read_with(self.store, &root, self.shape)?),
            };
            match &*node {
                Node::PathInterior { children, .. } if children.len() == 1 => {
                    if self.added.remove(&root).is_none() {
                        self.removed.insert(root);
                    }
                    root = children[0].hash;
                }
                _ => return Ok(root),
            }
        }
    }
}

fn seek_idx(kids: &[PathChild], key: &str) -> usize {
    kids.partition_point(|c| c.last_key.as_bytes() < key.as_bytes())
        .min(kids.len().saturating_sub(1))
}
