//! Content-defined Merkle trees for filesyncd: one tree per file version, one
//! tree for the whole synced directory, and the diff that tells a node which
//! chunks it must fetch.
//!
//! # Goals
//! 1. Never trust a node that was not hashed: every node read from a store
//!    or received from a peer is hashed, decoded strictly and checked against
//!    the tree's structural rules before use.
//! 2. Canonical: a chunk list has exactly one file tree; a path map exactly
//!    one path tree, however it was reached (full build or any sequence of
//!    incremental updates). Every node of the cluster computes the same roots.
//! 3. Small edits touch O(log n) nodes (Prolly trees: content-defined node
//!    boundaries), so diffs fetch few nodes in few round trips.
//! 4. No I/O here: stores are a trait ([`NodeSource`], [`NodeStore`]); the
//!    network is a `fetch` callback.
//!
//! # Spec
//! * Hashes: chunks are `blake3(bytes)` ([`Hash::of_chunk`]); nodes are
//!   blake3 `derive_key` with the context `"filesyncd 2026 merkle leaf v1"`
//!   (leaf nodes) or `"filesyncd 2026 merkle interior v1"` (interior nodes)
//!   over their encoding. Three domains, no confusion possible.
//! * Node encoding v1 (versioned, canonical, bounded): [`node`].
//! * Boundary rule (where nodes end; fanout target 64, min 2, cap 256): [`shape`].
//! * File tree (per file version, identity `(root, size)`): [`file_tree`].
//! * Diff (remote version against local nodes and chunks; the safe rule for
//!   "the local side holds a node"): [`diff`](mod@diff).
//! * Path tree (path -> [`PathValue`], one root for a directory tree;
//!   incremental, canonical updates): [`path_tree`]; keys and values:
//!   [`path_value`].
//! * Errors: [`MerkleError`].
//!
//! Constants that are part of the format (changing any changes roots, so it
//! needs a new node version): the three blake3 contexts, the node layout,
//! `TARGET_FANOUT = 64`, `MIN_FANOUT = 2`, `MAX_FANOUT = 256`, the path
//! boundary context `"filesyncd 2026 merkle path boundary v1"`, and the path
//! and value rules (4096-byte paths, permission-only modes).

mod error;
mod hash;
mod path_update;

pub mod diff;
pub mod file_tree;
pub mod node;
pub mod path_tree;
pub mod path_value;
pub mod shape;
pub mod store;
pub mod verified;

pub use diff::{diff, diff_trusting, DiffError, DiffResult, MissingChunk, MAX_FETCH_BATCH};
pub use error::MerkleError;
pub use file_tree::{build, chunks, BuiltTree, FileTree, FileTreeBuilder};
pub use hash::{ChunkEntry, Hash, HashParseError};
pub use node::{
    decode_verified, node_hash, FileChild, Node, NodeKind, PathChild, MAX_NODE_BYTES, NODE_VERSION,
};
pub use path_tree::PathTree;
pub use path_value::{validate_path, EntryKind, PathValue, MAX_MODE, MAX_PATH_BYTES};
pub use store::{read_node, MemNodeStore, NodeSource, NodeStore};
pub use verified::Verified;
