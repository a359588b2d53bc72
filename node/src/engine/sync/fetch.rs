//! Fetching what a write needs: unknown tree nodes (one round trip per tree
//! level, each node verified against its hash), then missing chunks (each
//! verified with blake3); all-zero chunks are never fetched.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use filesyncd_merkle::{node_hash, read_node, ChunkEntry, Hash, Node, NodeSource, NodeStore};

use super::super::plan::Missing;
use super::super::ports::{ChunkFetcher, Committed};
use super::super::types::NodeId;
use super::{Engine, StepReport};

/// Hashes of all-zero chunks by length: such chunks are never fetched (the
/// materializer writes them as holes).
#[derive(Default)]
pub(super) struct ZeroChunks(RefCell<HashMap<u32, Hash>>);

impl ZeroChunks {
    pub(super) fn is_zero(&self, c: &ChunkEntry) -> bool {
        let mut m = self.0.borrow_mut();
        *m.entry(c.len)
            .or_insert_with(|| Hash::of_chunk(&vec![0; c.len as usize]))
            == c.hash
    }
}

impl<C: Committed, F: ChunkFetcher> Engine<C, F> {
    /// Gets what a write needs: tree nodes first if unknown, then chunks.
    pub(super) async fn fetch(
        &mut self,
        root: Hash,
        size: u64,
        holders: &[NodeId],
        missing: Missing,
        rep: &mut StepReport,
    ) -> Result<(), String> {
        let hashes = match missing {
            Missing::Chunks(h) => h,
            Missing::Tree => {
                self.fetch_tree(root, holders).await?;
                let list = self.tree_chunks(root, size).map_err(|e| e.to_string())?;
                let zeros = ZeroChunks::default();
                let mut seen = HashSet::new();
                list.iter()
                    .filter(|c| !zeros.is_zero(c))
                    .map(|c| c.hash)
                    .filter(|h| seen.insert(*h) && !self.store.has(h).unwrap_or(false))
                    .collect()
            }
        };
        if hashes.is_empty() {
            return Ok(());
        }
        let got = self
            .fetcher
            .fetch(holders, &hashes)
            .await
            .map_err(|e| e.to_string())?;
        let verified: Vec<(Hash, &[u8])> = got
            .iter()
            .filter(|(h, d)| Hash::of_chunk(d) == *h)
            .map(|(h, d)| (*h, &d[..]))
            .collect();
        self.store.put_many(&verified).map_err(|e| e.to_string())?;
        rep.chunks_fetched += verified.len();
        if verified.len() < hashes.len() {
            return Err(format!(
                "{} of {} chunks could not be fetched",
                hashes.len() - verified.len(),
                hashes.len()
            ));
        }
        Ok(())
    }

    /// Gets the tree nodes of `root` the node store lacks, one round trip
    /// per tree level; every node is verified against its hash.
    async fn fetch_tree(&mut self, root: Hash, holders: &[NodeId]) -> Result<(), String> {
        let mut frontier = vec![root];
        while !frontier.is_empty() {
            let wanted: Vec<Hash> = {
                let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                frontier
                    .iter()
                    .copied()
                    .filter(|h| !nodes.has_node(h))
                    .collect()
            };
            if !wanted.is_empty() {
                let got = self
                    .fetcher
                    .fetch_nodes(holders, &wanted)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                for (h, bytes) in got {
                    if wanted.contains(&h) && node_hash(&bytes).ok() == Some(h) {
                        nodes.put_node(h, bytes);
                    }
                }
            }
            let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = Vec::new();
            for h in &frontier {
                match read_node(&*nodes, h).map_err(|e| e.to_string())? {
                    Node::FileInterior { children, .. } => {
                        next.extend(children.iter().map(|c| c.hash))
                    }
                    Node::FileLeaf(_) => {}
                    _ => return Err(format!("{h} is not a file tree node")),
                }
            }
            next.sort_unstable();
            next.dedup();
            frontier = next;
        }
        Ok(())
    }
}
