//! The one error type of this crate.
//!
//! Every variant is fatal for the operation that returned it; none of them is
//! retryable as is, except [`MerkleError::MissingNode`] (fetch the node, retry).
//! A peer that sends bytes producing `Corrupt`, `HashMismatch`, `TooLarge` or
//! `BadFetch` is misbehaving (or its data is damaged): drop what it sent.

use crate::hash::Hash;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The bytes are not a canonical v1 node, or a tree breaks a structural
    /// rule (levels, boundaries, subtree totals).
    #[error("corrupt node: {0}")]
    Corrupt(&'static str),
    /// The node carries a version this code does not know.
    #[error("unsupported node version {0}")]
    UnsupportedVersion(u8),
    /// Bytes presented as node `expected` hash to something else.
    #[error("node hash mismatch: expected {expected}, got {actual}")]
    HashMismatch { expected: Hash, actual: Hash },
    /// A node the operation needs is not in the store.
    #[error("missing node {0}")]
    MissingNode(Hash),
    /// A size bound was exceeded (node bytes, fanout, depth, path length).
    #[error("{what} too large: {size} > {max}")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    /// A path is not a clean relative UTF-8 path (see `path_tree`).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A `PathValue` breaks a rule (e.g. a directory with a non-zero root).
    #[error("invalid path value: {0}")]
    InvalidValue(&'static str),
    /// Input that must be strictly sorted by key is not.
    #[error("keys not strictly increasing at {0:?}")]
    Unsorted(String),
    /// A fetch answered with the wrong number of nodes.
    #[error("fetch returned {got} nodes for {asked} hashes")]
    BadFetch { asked: usize, got: usize },
}
