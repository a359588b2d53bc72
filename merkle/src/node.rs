//! Node encoding, version 1: the bytes that are hashed, stored and sent.
//!
//! This layout is final: a change needs a new version byte (old versions keep
//! decoding). It is hand-written so that each node has exactly one encoding:
//! fixed-width little-endian integers, no optional fields, no padding.
//!
//! ```text
//! header (5 bytes)
//!   u8   version    = 1
//!   u8   kind       0 file leaf | 1 file interior | 2 path leaf | 3 path interior
//!   u8   level      0 for leaves; 1..=MAX_LEVEL for interior nodes
//!   u16  count      number of entries, <= MAX_FANOUT (256)
//! entries, `count` times, by kind:
//!   file leaf      (36 B)  chunk hash [32] | chunk len u32 (>= 1)
//!   file interior  (48 B)  child hash [32] | subtree bytes u64 | subtree chunks u64 (>= 1)
//!   path leaf              key len u16 | key UTF-8 | entry kind u8 | root [32] | size u64 | mode u32
//!   path interior          key len u16 | key UTF-8 (the child's last key) | child hash [32]
//! nothing after the last entry
//! ```
//!
//! Decoding is strict and never panics; it rejects: an unknown version or
//! kind; a level that does not match the kind; `count` above the fanout cap;
//! an interior node with no entry; truncated input or trailing bytes; input
//! above [`MAX_NODE_BYTES`]; a zero-length chunk; a child claiming zero chunks
//! or more bytes than `chunks * u32::MAX` (totals must not overflow u64);
//! keys that are not clean paths (see `path_value`) or not strictly increasing;
//! path values breaking their rules; and a boundary inside the node (an entry
//! other than the last that satisfies the cut rule of `shape`).
//!
//! Node hash (domain separation): the encoded bytes are hashed with blake3
//! `derive_key`, context [`LEAF_CONTEXT`] for kinds 0 and 2 and
//! [`INTERIOR_CONTEXT`] for kinds 1 and 3. Chunks are named by plain
//! `blake3(bytes)`, a different blake3 mode, so no chunk, leaf and interior
//! node can ever share a name, and a leaf can never be passed off as an
//! interior node (or the reverse) even if the bytes were ambiguous.

use crate::error::MerkleError;
use crate::hash::{ChunkEntry, Hash};
use crate::path_value::{validate_path, EntryKind, PathValue, MAX_PATH_BYTES};
use crate::shape::{path_bits, Shape, MAX_FANOUT};
use blake3::hazmat::{hash_derive_key_context, ContextKey, HasherExt};
use std::sync::OnceLock;

pub const NODE_VERSION: u8 = 1;
/// blake3 `derive_key` context of leaf nodes (file and path).
pub const LEAF_CONTEXT: &str = "filesyncd 2026 merkle leaf v1";
/// blake3 `derive_key` context of interior nodes (file and path).
pub const INTERIOR_CONTEXT: &str = "filesyncd 2026 merkle interior v1";
/// Highest level accepted. `MIN_FANOUT = 2` makes the height at most
/// log2(entries)+1, so 64 is never reached by an honest tree.
pub const MAX_LEVEL: u8 = 64;

const HEADER: usize = 5;
const FILE_LEAF_ENTRY: usize = 36;
const FILE_CHILD_ENTRY: usize = 48;
const PATH_LEAF_ENTRY_MAX: usize = 2 + MAX_PATH_BYTES + 1 + 32 + 8 + 4;
/// Largest encoded node (a full path leaf of maximal paths, ~1 MiB).
pub const MAX_NODE_BYTES: usize = HEADER + MAX_FANOUT * PATH_LEAF_ENTRY_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    FileLeaf = 0,
    FileInterior = 1,
    PathLeaf = 2,
    PathInterior = 3,
}

impl NodeKind {
    fn from_byte(b: u8) -> Result<Self, MerkleError> {
        Ok(match b {
            0 => NodeKind::FileLeaf,
            1 => NodeKind::FileInterior,
            2 => NodeKind::PathLeaf,
            3 => NodeKind::PathInterior,
            _ => return Err(MerkleError::Corrupt("unknown node kind")),
        })
    }

    pub fn is_leaf(self) -> bool {
        matches!(self, NodeKind::FileLeaf | NodeKind::PathLeaf)
    }
}

/// An entry of a file interior node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileChild {
    pub hash: Hash,
    /// Bytes of file content under the child.
    pub bytes: u64,
    /// Chunks under the child.
    pub chunks: u64,
}

/// An entry of a path interior node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathChild {
    /// The greatest key under the child.
    pub last_key: String,
    pub hash: Hash,
}

/// A decoded node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    FileLeaf(Vec<ChunkEntry>),
    FileInterior { level: u8, children: Vec<FileChild> },
    PathLeaf(Vec<(String, PathValue)>),
    PathInterior { level: u8, children: Vec<PathChild> },
}

impl Node {
    pub fn kind(&self) -> NodeKind {
        match self {
            Node::FileLeaf(_) => NodeKind::FileLeaf,
            Node::FileInterior { .. } => NodeKind::FileInterior,
            Node::PathLeaf(_) => NodeKind::PathLeaf,
            Node::PathInterior { .. } => NodeKind::PathInterior,
        }
    }

    pub fn level(&self) -> u8 {
        match self {
            Node::FileLeaf(_) | Node::PathLeaf(_) => 0,
            Node::FileInterior { level, .. } | Node::PathInterior { level, .. } => *level,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            Node::FileLeaf(e) => e.len(),
            Node::FileInterior { children, .. } => children.len(),
            Node::PathLeaf(e) => e.len(),
            Node::PathInterior { children, .. } => children.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The canonical bytes. The node must satisfy the decoding rules (the
    /// builders of this crate only make such nodes).
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.len() <= MAX_FANOUT);
        let mut out = Vec::with_capacity(HEADER + self.len() * FILE_CHILD_ENTRY);
        out.push(NODE_VERSION);
        out.push(self.kind() as u8);
        out.push(self.level());
        out.extend_from_slice(&(self.len() as u16).to_le_bytes());
        match self {
            Node::FileLeaf(entries) => {
                for e in entries {
                    out.extend_from_slice(&e.hash.0);
                    out.extend_from_slice(&e.len.to_le_bytes());
                }
            }
            Node::FileInterior { children, .. } => {
                for c in children {
                    out.extend_from_slice(&c.hash.0);
                    out.extend_from_slice(&c.bytes.to_le_bytes());
                    out.extend_from_slice(&c.chunks.to_le_bytes());
                }
            }
            Node::PathLeaf(entries) => {
                for (k, v) in entries {
                    put_key(&mut out, k);
                    out.push(v.kind.to_byte());
                    out.extend_from_slice(&v.root.0);
                    out.extend_from_slice(&v.size.to_le_bytes());
                    out.extend_from_slice(&v.mode.to_le_bytes());
                }
            }
            Node::PathInterior { children, .. } => {
                for c in children {
                    put_key(&mut out, &c.last_key);
                    out.extend_from_slice(&c.hash.0);
                }
            }
        }
        out
    }

    /// Encodes and hashes.
    pub fn seal(&self) -> (Hash, Vec<u8>) {
        let bytes = self.encode();
        (hash_with(self.kind(), &bytes), bytes)
    }

    pub fn hash(&self) -> Hash {
        self.seal().0
    }

    /// Strict decoding with the production boundary rule (see module doc).
    pub fn decode(bytes: &[u8]) -> Result<Node, MerkleError> {
        decode_with(bytes, Shape::V1)
    }

    /// Boundary bits of entry `i` (see `shape`). `i < self.len()`.
    pub(crate) fn bits(&self, i: usize) -> u64 {
        match self {
            Node::FileLeaf(e) => e[i].hash.low_u64(),
            Node::FileInterior { children, .. } => children[i].hash.low_u64(),
            Node::PathLeaf(e) => path_bits(0, &e[i].0),
            Node::PathInterior { level, children } => path_bits(*level, &children[i].last_key),
        }
    }

    /// Does the node end where the scan of `shape` would cut? (Every node but
    /// the last of its level must.)
    pub(crate) fn ends_at_cut(&self, shape: Shape) -> bool {
        let n = self.len();
        n > 0 && shape.is_cut(n, self.bits(n - 1))
    }

    /// Rejects a node with a cut before its last entry, or more entries than
    /// `shape` allows.
    pub(crate) fn check_shape(&self, shape: Shape) -> Result<(), MerkleError> {
        let bits: Vec<u64> = (0..self.len()).map(|i| self.bits(i)).collect();
        check_bits(&bits, shape)
    }

    /// (bytes, chunks) under a file node.
    pub(crate) fn file_totals(&self) -> Result<(u64, u64), MerkleError> {
        let overflow = MerkleError::Corrupt("subtree totals overflow");
        let mut bytes = 0u64;
        let mut chunks = 0u64;
        match self {
            Node::FileLeaf(e) => {
                for c in e {
                    bytes = bytes
                        .checked_add(u64::from(c.len))
                        .ok_or(overflow.clone())?;
                }
                chunks = e.len() as u64;
            }
            Node::FileInterior { children, .. } => {
                for c in children {
                    bytes = bytes.checked_add(c.bytes).ok_or(overflow.clone())?;
                    chunks = chunks.checked_add(c.chunks).ok_or(overflow.clone())?;
                }
            }
            _ => return Err(MerkleError::Corrupt("not a file node")),
        }
        Ok((bytes, chunks))
    }
}

/// [`Node::check_shape`] given every entry's boundary bits.
pub(crate) fn check_bits(bits: &[u64], shape: Shape) -> Result<(), MerkleError> {
    if bits.len() > shape.max {
        return Err(MerkleError::Corrupt("more entries than the fanout cap"));
    }
    for (i, b) in bits.iter().enumerate().take(bits.len().saturating_sub(1)) {
        if shape.is_cut(i + 1, *b) {
            return Err(MerkleError::Corrupt("boundary inside a node"));
        }
    }
    Ok(())
}

fn put_key(out: &mut Vec<u8>, k: &str) {
    out.extend_from_slice(&(k.len() as u16).to_le_bytes());
    out.extend_from_slice(k.as_bytes());
}

fn hash_with(kind: NodeKind, bytes: &[u8]) -> Hash {
    static LEAF: OnceLock<ContextKey> = OnceLock::new();
    static INTERIOR: OnceLock<ContextKey> = OnceLock::new();
    let ctx = if kind.is_leaf() {
        LEAF.get_or_init(|| hash_derive_key_context(LEAF_CONTEXT))
    } else {
        INTERIOR.get_or_init(|| hash_derive_key_context(INTERIOR_CONTEXT))
    };
    // Same as `blake3::Hasher::new_derive_key(context)`, without rehashing
    // the context string every time.
    let mut h = blake3::Hasher::new_from_context_key(ctx);
    h.update(bytes);
    h.finalize().into()
}

/// The hash of encoded node bytes (domain chosen by the kind byte). Only the
/// header is checked; use [`decode_verified`] before trusting the bytes.
pub fn node_hash(bytes: &[u8]) -> Result<Hash, MerkleError> {
    if bytes.len() > MAX_NODE_BYTES {
        return Err(too_large(bytes.len()));
    }
    if bytes.len() < HEADER {
        return Err(MerkleError::Corrupt("shorter than a header"));
    }
    Ok(hash_with(NodeKind::from_byte(bytes[1])?, bytes))
}

/// Checks that `bytes` hash to `expected`, then decodes them strictly.
pub fn decode_verified(expected: &Hash, bytes: &[u8]) -> Result<Node, MerkleError> {
    verify_with(expected, bytes, Shape::V1)
}

pub(crate) fn verify_with(
    expected: &Hash,
    bytes: &[u8],
    shape: Shape,
) -> Result<Node, MerkleError> {
    verify_hash(expected, bytes)?;
    decode_with(bytes, shape)
}

/// Checks that `bytes` hash to `expected` (nothing else).
pub(crate) fn verify_hash(expected: &Hash, bytes: &[u8]) -> Result<(), MerkleError> {
    let actual = node_hash(bytes)?;
    if actual != *expected {
        return Err(MerkleError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

fn too_large(n: usize) -> MerkleError {
    MerkleError::TooLarge {
        what: "node",
        size: n as u64,
        max: MAX_NODE_BYTES as u64,
    }
}

pub(crate) fn decode_with(bytes: &[u8], shape: Shape) -> Result<Node, MerkleError> {
    let node = decode_format(bytes)?;
    node.check_shape(shape)?;
    Ok(node)
}

/// Strict decoding of everything but the boundary rule (the caller checks
/// it, with `check_bits` or `check_shape`).
pub(crate) fn decode_format(bytes: &[u8]) -> Result<Node, MerkleError> {
    if bytes.len() > MAX_NODE_BYTES {
        return Err(too_large(bytes.len()));
    }
    let mut r = Reader { b: bytes, pos: 0 };
    let version = r.u8()?;
    if version != NODE_VERSION {
        return Err(MerkleError::UnsupportedVersion(version));
    }
    let kind = NodeKind::from_byte(r.u8()?)?;
    let level = r.u8()?;
    let count = usize::from(r.u16()?);
    if kind.is_leaf() != (level == 0) {
        return Err(MerkleError::Corrupt("level does not match kind"));
    }
    if level > MAX_LEVEL {
        return Err(MerkleError::TooLarge {
            what: "level",
            size: u64::from(level),
            max: u64::from(MAX_LEVEL),
        });
    }
    if count > MAX_FANOUT {
        return Err(MerkleError::TooLarge {
            what: "entry count",
            size: count as u64,
            max: MAX_FANOUT as u64,
        });
    }
    if !kind.is_leaf() && count == 0 {
        return Err(MerkleError::Corrupt("interior node without entries"));
    }
    let exact = |size: usize| {
        if bytes.len() != HEADER + count * size {
            Err(MerkleError::Corrupt("length does not match entry count"))
        } else {
            Ok(())
        }
    };
    let node = match kind {
        NodeKind::FileLeaf => {
            exact(FILE_LEAF_ENTRY)?;
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                let hash = r.hash()?;
                let len = r.u32()?;
                if len == 0 {
                    return Err(MerkleError::Corrupt("zero-length chunk"));
                }
                v.push(ChunkEntry { hash, len });
            }
            Node::FileLeaf(v)
        }
        NodeKind::FileInterior => {
            exact(FILE_CHILD_ENTRY)?;
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                let hash = r.hash()?;
                let bytes = r.u64()?;
                let chunks = r.u64()?;
                if chunks == 0 || bytes < chunks {
                    return Err(MerkleError::Corrupt("child with no chunk or empty chunks"));
                }
                if u128::from(bytes) > u128::from(chunks) * u128::from(u32::MAX) {
                    return Err(MerkleError::Corrupt("child bytes exceed its chunks"));
                }
                v.push(FileChild {
                    hash,
                    bytes,
                    chunks,
                });
            }
            let node = Node::FileInterior { level, children: v };
            node.file_totals()?;
            node
        }
        NodeKind::PathLeaf => {
            let mut v: Vec<(String, PathValue)> = Vec::with_capacity(count);
            for _ in 0..count {
                let key = r.key(v.last().map(|(k, _)| k.as_str()))?;
                let kind = EntryKind::from_byte(r.u8()?)?;
                let value = PathValue {
                    kind,
                    root: r.hash()?,
                    size: r.u64()?,
                    mode: r.u32()?,
                };
                value.validate()?;
                v.push((key, value));
            }
            Node::PathLeaf(v)
        }
        NodeKind::PathInterior => {
            let mut v: Vec<PathChild> = Vec::with_capacity(count);
            for _ in 0..count {
                let last_key = r.key(v.last().map(|c| c.last_key.as_str()))?;
                let hash = r.hash()?;
                v.push(PathChild { last_key, hash });
            }
            Node::PathInterior { level, children: v }
        }
    };
    if r.pos != bytes.len() {
        return Err(MerkleError::Corrupt("trailing bytes"));
    }
    Ok(node)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MerkleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(MerkleError::Corrupt("truncated"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MerkleError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, MerkleError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, MerkleError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, MerkleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, MerkleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn hash(&mut self) -> Result<Hash, MerkleError> {
        Ok(Hash(self.array()?))
    }

    /// A length-prefixed clean path, strictly greater than `prev`.
    fn key(&mut self, prev: Option<&str>) -> Result<String, MerkleError> {
        let len = usize::from(self.u16()?);
        if len > MAX_PATH_BYTES {
            return Err(MerkleError::TooLarge {
                what: "path",
                size: len as u64,
                max: MAX_PATH_BYTES as u64,
            });
        }
        let raw = self.take(len)?;
        let key = std::str::from_utf8(raw).map_err(|_| MerkleError::Corrupt("key not UTF-8"))?;
        validate_path(key)?;
        if prev.is_some_and(|p| p.as_bytes() >= key.as_bytes()) {
            return Err(MerkleError::Corrupt("keys not strictly increasing"));
        }
        Ok(key.to_owned())
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
