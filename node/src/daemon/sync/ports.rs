//! The engine's ports, implemented with Raft and the p2p network.
//!
//! - [`RaftCommitted`] ([`Committed`]): proposals go through
//!   `RaftNode::propose_split` (entries of bounded bytes, forwarded to the
//!   leader). Reads come from the state machine (`SmReader::changed_since`).
//!   The sync task wraps it in [`crate::engine::acks::OfferFirst`] with
//!   `offer::P2pAcks`: a put of file content is proposed only once
//!   a majority of the voters (this node included) hold it durably.
//! - [`P2pFetcher`] ([`ChunkFetcher`], [`RemoteChunks`]): chunks over the
//!   p2p chunk protocol (hashed once, there: `fetch_stream` hands on its
//!   [`Verified`] chunks as they are; `fetch` and [`RemoteChunks`] answer
//!   `(hash, bytes)` pairs, which their callers check again), tree nodes
//!   over the ctl protocol (`GetNodes`, verified by the caller).
//!
//! Node ids map to peer ids through the Raft membership.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use filesyncd_merkle::{Hash, Verified};
use filesyncd_p2p::{FetchPlan, P2pClient, PeerId};
use filesyncd_raft::command::Op;
use filesyncd_raft::state_machine::{SmError, SmView};
use futures::FutureExt;

use super::ctl::{self, CtlRequest, CtlResponse, MAX_HASHES};
use super::status::{RemoteAnswer, RemoteChunks};
use crate::daemon::Node;
use crate::engine::ports::convert::{propose_outcome, raft_op};
use crate::engine::ports::{
    ChunkFetcher, Committed, CommittedSnapshot, CommittedView, PortError, PortResult, ProposeOp,
    ProposeOutcome,
};
use crate::engine::types::{NodeId, VersionRecord};

/// The engine's view of a state-machine record (the conversion the
/// in-memory twin shares).
pub use crate::engine::ports::convert::record_of;

/// [`CommittedView`] over one read snapshot of the state machine.
struct RaftView {
    view: SmView,
    /// The first read error (see [`CommittedView::failed`]).
    failed: std::sync::Mutex<Option<PortError>>,
}

impl RaftView {
    fn check<T>(&self, r: Result<T, SmError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "reading the committed state failed");
                let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert(PortError::Failed(format!(
                    "reading the committed state: {e}"
                )));
                None
            }
        }
    }
}

impl CommittedView for RaftView {
    fn get(&self, path: &str) -> Option<VersionRecord> {
        let r = self.check(self.view.newest(path))??;
        Some(record_of(path.to_owned(), &r))
    }

    fn paths_under(&self, root: &str, out: &mut Vec<String>) {
        self.check(self.view.paths_under(root, out));
    }

    fn for_each(&self, f: &mut dyn FnMut(VersionRecord)) {
        self.check(self.view.for_each_newest(|p, r| {
            f(record_of(p.to_owned(), &r));
            Ok(())
        }));
    }

    fn changed_since(&self, index: u64, f: &mut dyn FnMut(VersionRecord)) {
        self.check(self.view.changed_since(index, |p, r| {
            f(record_of(p.to_owned(), &r));
            Ok(())
        }));
    }

    fn failed(&self) -> Option<PortError> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The membership as node id → peer id, and the voters.
pub fn members(node: &Node) -> (HashMap<NodeId, PeerId>, BTreeSet<NodeId>) {
    let m = node.metrics();
    let mem = m.membership_config.membership();
    let peers = mem
        .nodes()
        .filter_map(|(id, info)| Some((*id, info.peer_id.parse().ok()?)))
        .collect();
    (peers, mem.voter_ids().collect())
}

/// The voter sets of `node`'s membership: one, or two during a joint
/// change (a quorum of holders needs a majority of each).
pub fn voter_sets(node: &Node) -> Vec<BTreeSet<NodeId>> {
    node.metrics()
        .membership_config
        .membership()
        .get_joint_config()
        .clone()
}

/// [`Committed`] over Raft (the offer before a put is
/// [`crate::engine::acks::OfferFirst`]'s).
#[derive(Clone)]
pub struct RaftCommitted {
    pub node: Node,
}

impl Committed for RaftCommitted {
    async fn propose(&self, ops: Vec<ProposeOp>) -> PortResult<Vec<ProposeOutcome>> {
        let raft_ops: Vec<Op> = ops.into_iter().map(raft_op).collect();
        // Entries of bounded bytes, committed back to back. If one fails
        // after others committed, the next step finds those (a committed
        // version of this node's own origin is the base of its next put:
        // ARCHITECTURE invariant 8).
        let outcomes = self
            .node
            .propose_split(raft_ops)
            .await
            .map_err(|e| PortError::Unavailable(e.to_string()))?;
        Ok(outcomes.iter().map(propose_outcome).collect())
    }

    fn snapshot(&self) -> PortResult<CommittedSnapshot> {
        let view = self
            .node
            .reader()
            .view()
            .map_err(|e| PortError::Failed(e.to_string()))?;
        Ok(CommittedSnapshot {
            applied: view.applied().map_or(0, |l| l.index),
            view: Box::new(RaftView {
                view,
                failed: std::sync::Mutex::new(None),
            }),
        })
    }

    fn changed_paths_since(&self, index: u64) -> PortResult<Vec<String>> {
        self.node
            .reader()
            .changed_paths_since(index)
            .map_err(|e| PortError::Failed(e.to_string()))
    }

    async fn wait_applied(&self, index: u64) {
        let mut w = self.node.metrics_watch();
        let _ = w
            .wait_for(|m| m.last_applied.is_some_and(|l| l.index > index))
            .await;
    }
}

/// [`ChunkFetcher`] over p2p.
#[derive(Clone)]
pub struct P2pFetcher {
    pub client: P2pClient,
    pub node: Node,
    /// Chunk bytes received from peers (verified), since start.
    pub bytes_fetched: Arc<std::sync::atomic::AtomicU64>,
    /// Pulls in progress, for `status`.
    pub transfers: super::status::Transfers,
}

impl P2pFetcher {
    /// [`Self::peers`], those this node is connected to first (in the same
    /// order otherwise): a holder that must be dialed may be one that is
    /// not reachable yet (behind NAT before its relay circuit is recorded),
    /// and each try of it waits out a dial.
    async fn peers_connected_first(&self, holders: &[NodeId]) -> Vec<PeerId> {
        let mut peers = self.peers(holders);
        if let Ok(up) = self.client.connected_peers().await {
            peers.sort_by_key(|p| !up.contains(p));
        }
        peers
    }

    /// Peers to ask: the holders first, then every other member (a member
    /// that materialized the version holds it too); never this node.
    fn peers(&self, holders: &[NodeId]) -> Vec<PeerId> {
        let (peers, _) = members(&self.node);
        let me = self.node.id();
        let mut out: Vec<PeerId> = holders
            .iter()
            .filter(|h| **h != me)
            .filter_map(|h| peers.get(h).copied())
            .collect();
        for (id, p) in &peers {
            if *id != me && !out.contains(p) {
                out.push(*p);
            }
        }
        out
    }

    async fn get_nodes(
        &self,
        peer: PeerId,
        hashes: &[Hash],
    ) -> Result<Vec<(Hash, Vec<u8>)>, String> {
        let req = ctl::encode_request(&CtlRequest::GetNodes {
            hashes: hashes.to_vec(),
        });
        let bytes = self
            .client
            .ctl_request(peer, req)
            .await
            .map_err(|e| e.to_string())?;
        match ctl::decode_response(&bytes).map_err(|e| e.to_string())? {
            CtlResponse::Nodes(n) => Ok(n),
            CtlResponse::Error(e) => Err(e),
            other => Err(format!("unexpected answer to GetNodes: {other:?}")),
        }
    }

    async fn fetch_nodes_from(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> Result<Vec<(Hash, Vec<u8>)>, String> {
        let mut want: BTreeSet<Hash> = hashes.iter().copied().collect();
        let mut got = Vec::new();
        let mut last_err = None;
        for peer in self.peers_connected_first(holders).await {
            if want.is_empty() {
                break;
            }
            let list: Vec<Hash> = want.iter().copied().collect();
            for part in list.chunks(MAX_HASHES) {
                match self.get_nodes(peer, part).await {
                    Ok(nodes) => {
                        for (h, b) in nodes {
                            if want.remove(&h) {
                                got.push((h, b));
                            }
                        }
                    }
                    Err(e) => {
                        last_err = Some(e);
                        break;
                    }
                }
            }
        }
        if got.is_empty() && !hashes.is_empty() {
            return Err(last_err.unwrap_or_else(|| "no peer holds these tree nodes".into()));
        }
        Ok(got)
    }

    async fn fetch_chunks_from(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> Result<Vec<(Hash, Vec<u8>)>, String> {
        let peers = self.peers_connected_first(holders).await;
        if peers.is_empty() {
            return Err("no other member to fetch from".into());
        }
        let (got, failed) = self
            .client
            .fetch_chunks(FetchPlan::from_all(&peers, hashes.iter().copied()))
            .collect_all()
            .await;
        if !failed.is_empty() {
            tracing::debug!(failed = failed.len(), "chunks not fetched");
        }
        let bytes: usize = got.iter().map(Verified::len).sum();
        self.bytes_fetched
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        // The ports answer owned pairs (`ChunkFetcher::fetch`,
        // `RemoteChunks::chunks`): no copy.
        Ok(got.into_iter().map(Verified::into_parts).collect())
    }
}

impl ChunkFetcher for P2pFetcher {
    async fn fetch(&self, holders: &[NodeId], hashes: &[Hash]) -> PortResult<Vec<(Hash, Vec<u8>)>> {
        self.fetch_chunks_from(holders, hashes)
            .await
            .map_err(PortError::Unavailable)
    }

    async fn fetch_nodes(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> PortResult<Vec<(Hash, Vec<u8>)>> {
        self.fetch_nodes_from(holders, hashes)
            .await
            .map_err(PortError::Unavailable)
    }

    fn fetch_stream<'a>(
        &'a self,
        holders: &'a [NodeId],
        hashes: &'a [Hash],
    ) -> futures::stream::BoxStream<'a, Verified> {
        use futures::StreamExt;
        futures::stream::once(async move {
            // The holders only (connected ones first); every other member
            // only if no holder is a member any more.
            let mut peers = self.peers_connected_first(holders).await;
            let (members, _) = members(&self.node);
            let holding: Vec<PeerId> = holders
                .iter()
                .filter_map(|h| members.get(h).copied())
                .collect();
            if peers.iter().any(|p| holding.contains(p)) {
                peers.retain(|p| holding.contains(p));
            }
            let bytes = self.bytes_fetched.clone();
            self.client
                .fetch_chunks(FetchPlan::from_all(&peers, hashes.iter().copied()))
                .filter_map(move |item| {
                    let got = match item {
                        // Verified by the p2p fetch: not hashed again.
                        Ok(chunk) => {
                            bytes.fetch_add(
                                chunk.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            Some(chunk)
                        }
                        Err((h, e)) => {
                            tracing::debug!(chunk = %h, error = %e, "chunk not fetched");
                            None
                        }
                    };
                    futures::future::ready(got)
                })
        })
        .flatten()
        .boxed()
    }

    fn progress(&self, label: &str, done: u64, total: u64, finished: bool) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.transfers.update(label, done, total, finished, now_ms);
    }
}

impl RemoteChunks for P2pFetcher {
    fn chunks(&self, holders: Vec<u64>, hashes: Vec<Hash>) -> RemoteAnswer<'_> {
        async move { self.fetch_chunks_from(&holders, &hashes).await }.boxed()
    }

    fn nodes(&self, holders: Vec<u64>, hashes: Vec<Hash>) -> RemoteAnswer<'_> {
        async move { self.fetch_nodes_from(&holders, &hashes).await }.boxed()
    }
}
