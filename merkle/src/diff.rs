//! Which chunks of a remote file version does the local side lack?
//!
//! [`diff`] walks the remote tree top-down, one level at a time. At each level
//! it collects the nodes it needs, reads those the local node store holds, and
//! asks the remote side for all the others in one `fetch` call per level (cut
//! into batches of at most [`MAX_FETCH_BATCH`] hashes), so a diff costs at
//! most `depth` round trips and fetches only nodes the local side does not
//! hold. Every fetched node must hash to the name it was asked by, decode
//! strictly and pass the structural checks of `file_tree` (levels, totals,
//! boundaries), so a peer can only answer with the one tree its root names.
//!
//! The safe rule (correctness first): holding a node does NOT prove holding
//! its chunks (nodes are stored when fetched, before their chunks arrive; a
//! crash in between leaves nodes without chunks). So a locally held node is
//! not fetched, but its subtree is still walked (locally, no round trip) and
//! every chunk is checked with `has_chunk`. A chunk is reported present only
//! if `has_chunk` says so. Callers that know more can pass a `complete`
//! predicate to [`diff_trusting`]: a subtree whose root hash it accepts is
//! skipped entirely, and the caller vouches that every chunk under it is local
//! (e.g. the node belongs to a file version fully present on disk).
//!
//! The result lists each missing chunk once (its first occurrence), in file
//! order with its byte offset, plus the nodes fetched so the caller can store
//! them.

use crate::error::MerkleError;
use crate::file_tree::{check_file_node, Expect};
use crate::hash::Hash;
use crate::node::{verify_with, Node};
use crate::shape::Shape;
use crate::store::{read_with, NodeSource};
use std::collections::{HashMap, HashSet};

/// Most hashes asked in one `fetch` call.
pub const MAX_FETCH_BATCH: usize = 1024;

/// A chunk the local side lacks, at its first offset in the remote file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MissingChunk {
    pub hash: Hash,
    pub len: u32,
    pub offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffResult {
    /// Chunks to fetch: each hash once, in file order.
    pub missing: Vec<MissingChunk>,
    /// Verified remote nodes the local store did not hold (store them).
    pub fetched: Vec<(Hash, Vec<u8>)>,
    /// `fetched.len()`.
    pub nodes_fetched: usize,
    /// Number of `fetch` calls made.
    pub round_trips: usize,
    /// Nodes read from the local store.
    pub nodes_local: usize,
    /// Size of the remote file version in bytes (from its root; 0 if
    /// `complete` vouched for the root itself, so it was never read).
    pub size: u64,
    /// Chunks in the remote file version (with repeats; same caveat).
    pub chunks: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError<E> {
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// The `fetch` callback failed (transport error); retryable.
    #[error("fetching nodes failed: {0}")]
    Fetch(E),
}

/// Diffs the remote version `remote_root` against the local side: `local`
/// holds nodes, `has_chunk` says whether a chunk is local, and `fetch(hashes)`
/// returns the remote encoded nodes for `hashes`, in the same order.
pub fn diff<L, F, E>(
    local: &L,
    has_chunk: impl Fn(&Hash) -> bool,
    remote_root: Hash,
    fetch: F,
) -> Result<DiffResult, DiffError<E>>
where
    L: NodeSource + ?Sized,
    F: FnMut(&[Hash]) -> Result<Vec<Vec<u8>>, E>,
{
    diff_with(local, has_chunk, |_| false, remote_root, fetch, Shape::V1)
}

/// [`diff`], but skipping every subtree whose root `complete` accepts: the
/// caller vouches all its chunks are local (see module doc).
pub fn diff_trusting<L, F, E>(
    local: &L,
    has_chunk: impl Fn(&Hash) -> bool,
    complete: impl Fn(&Hash) -> bool,
    remote_root: Hash,
    fetch: F,
) -> Result<DiffResult, DiffError<E>>
where
    L: NodeSource + ?Sized,
    F: FnMut(&[Hash]) -> Result<Vec<Vec<u8>>, E>,
{
    diff_with(local, has_chunk, complete, remote_root, fetch, Shape::V1)
}

struct Item {
    hash: Hash,
    exp: Expect,
    offset: u64,
}

pub(crate) fn diff_with<L, F, E>(
    local: &L,
    has_chunk: impl Fn(&Hash) -> bool,
    complete: impl Fn(&Hash) -> bool,
    remote_root: Hash,
    mut fetch: F,
    shape: Shape,
) -> Result<DiffResult, DiffError<E>>
where
    L: NodeSource + ?Sized,
    F: FnMut(&[Hash]) -> Result<Vec<Vec<u8>>, E>,
{
    let mut res = DiffResult::default();
    let mut walked: HashSet<Hash> = HashSet::new();
    let mut reported: HashSet<Hash> = HashSet::new();
    let mut frontier = vec![Item {
        hash: remote_root,
        exp: Expect::ROOT,
        offset: 0,
    }];
    let mut first = true;
    while !frontier.is_empty() {
        // Gather this level's nodes: local first, the rest in batched fetches.
        let mut level: HashMap<Hash, Node> = HashMap::new();
        let mut wanted: Vec<Hash> = Vec::new();
        let mut asked: HashSet<Hash> = HashSet::new();
        for item in &frontier {
            let h = item.hash;
            if level.contains_key(&h) || asked.contains(&h) || complete(&h) {
                continue;
            }
            if local.has_node(&h) {
                // A damaged local node is fetched again rather than trusted.
                if let Ok(node) = read_with(local, &h, shape) {
                    res.nodes_local += 1;
                    level.insert(h, node);
                    continue;
                }
            }
            asked.insert(h);
            wanted.push(h);
        }
        for batch in wanted.chunks(MAX_FETCH_BATCH) {
            res.round_trips += 1;
            let got = fetch(batch).map_err(DiffError::Fetch)?;
            if got.len() != batch.len() {
                return Err(MerkleError::BadFetch {
                    asked: batch.len(),
                    got: got.len(),
                }
                .into());
            }
            for (h, bytes) in batch.iter().zip(got) {
                let node = verify_with(h, &bytes, shape)?;
                level.insert(*h, node);
                res.fetched.push((*h, bytes));
            }
        }
        // Walk the level in file order.
        let mut next = Vec::new();
        for item in frontier {
            let Some(node) = level.get(&item.hash) else {
                continue; // complete (trusted) or a repeat of a walked subtree
            };
            check_file_node(node, &item.exp, shape)?;
            if first {
                let (size, chunks) = node.file_totals()?;
                res.size = size;
                res.chunks = chunks;
                first = false;
            }
            if !walked.insert(item.hash) {
                continue; // an earlier identical subtree covered these chunks
            }
            match node {
                Node::FileLeaf(entries) => {
                    let mut offset = item.offset;
                    for e in entries {
                        if !has_chunk(&e.hash) && reported.insert(e.hash) {
                            res.missing.push(MissingChunk {
                                hash: e.hash,
                                len: e.len,
                                offset,
                            });
                        }
                        offset = offset.saturating_add(u64::from(e.len));
                    }
                }
                Node::FileInterior { level, children } => {
                    let mut offset = item.offset;
                    let n = children.len();
                    for (i, c) in children.iter().enumerate() {
                        next.push(Item {
                            hash: c.hash,
                            exp: item.exp.child(*level, c, i, n),
                            offset,
                        });
                        offset = offset.saturating_add(c.bytes);
                    }
                }
                _ => return Err(MerkleError::Corrupt("not a file tree node").into()),
            }
        }
        frontier = next;
    }
    res.nodes_fetched = res.fetched.len();
    Ok(res)
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
