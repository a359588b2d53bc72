//! The engine's only view of Raft and of the network: two small traits, and
//! in-memory implementations for tests.
//!
//! - [`Committed`]: propose a batch of ops (compare-and-set on a base
//!   version, answered per op) and read what is committed (records changed
//!   after an applied index). The daemon adapts `RaftNode::propose` and the
//!   state machine's reader to it; [`MemCommitted`] is its in-memory twin,
//!   which applies the same commands by the state machine's own rules
//!   (`filesyncd_raft::apply` on a `MemIndex`; [`convert`] is the one
//!   translation both use).
//! - [`ChunkFetcher`]: get chunk bytes and tree nodes from the nodes holding
//!   them. The engine verifies every byte it is given (`blake3` for chunks,
//!   the node hash for tree nodes) and never trusts a peer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use filesyncd_chunkstore::chunker::ChunkerParams;
use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::{Hash, MemNodeStore, NodeSource, Verified};
use filesyncd_raft::apply::{apply_batch, MemIndex};
use filesyncd_raft::command::{Batch, Op, Outcome, RequestId, Retention};

use super::types::{Meta, NodeId, VersionId, VersionRecord};

pub mod convert;

/// A transient failure of Raft or the network: retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

pub type PortResult<T> = Result<T, PortError>;

/// One op of a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeOp {
    Put {
        path: String,
        meta: Meta,
        mtime_ns: i64,
        /// The node whose change this is (names conflict copies).
        origin: NodeId,
        /// `None`: the path is expected absent.
        base: Option<VersionId>,
        /// Nodes holding every chunk durably (this node, for a local change).
        holders: Vec<NodeId>,
    },
    Delete {
        path: String,
        base: VersionId,
    },
}

/// What committing one op did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeOutcome {
    Applied(VersionId),
    /// A stale put, committed at the conflict-copy path.
    Conflict {
        path: String,
        version: VersionId,
    },
    /// A stale put of the content that is live anyway.
    Unchanged(VersionId),
    /// A delete with a stale base: the newer content stays.
    DeleteLost {
        current: VersionId,
    },
    AlreadyAbsent,
    Rejected(String),
    /// Not committed for a reason that passes: the holders were no longer a
    /// quorum of the voters when it applied (the membership changed after
    /// the offer). Offered and proposed again by a later step.
    Retry(String),
}

/// The committed state at one applied index, as one step reads it: the
/// newest record of every path, tombstones included (a path whose history
/// was dropped entirely has none). The daemon reads it from one read
/// snapshot of the state machine's database, so the engine holds no copy
/// of the committed tree in memory; reads are synchronous.
///
/// A read that fails answers as if nothing were there and is remembered:
/// a caller checks [`CommittedView::failed`] before acting on what it read.
pub trait CommittedView {
    /// The newest record of `path`.
    fn get(&self, path: &str) -> Option<VersionRecord>;
    /// Appends the paths that are `root` or beneath it (`""`: every path),
    /// ascending, each once.
    fn paths_under(&self, root: &str, out: &mut Vec<String>);
    /// Calls `f` with every record, ascending by path.
    fn for_each(&self, f: &mut dyn FnMut(VersionRecord));
    /// Calls `f` with the newest record of every path whose newest record
    /// was written after log index `index`, ascending by path.
    fn changed_since(&self, index: u64, f: &mut dyn FnMut(VersionRecord));
    /// The first read that failed since the view was taken, if any: what
    /// the view answered since is incomplete.
    fn failed(&self) -> Option<PortError>;
}

/// The view of a plain map (tests, and [`MemCommitted`]'s snapshots).
impl CommittedView for BTreeMap<String, VersionRecord> {
    fn get(&self, path: &str) -> Option<VersionRecord> {
        BTreeMap::get(self, path).cloned()
    }
    fn paths_under(&self, root: &str, out: &mut Vec<String>) {
        if root.is_empty() {
            out.extend(self.keys().cloned());
            return;
        }
        if self.contains_key(root) {
            out.push(root.to_owned());
        }
        let prefix = format!("{root}/");
        out.extend(
            self.range(prefix.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&prefix))
                .cloned(),
        );
    }
    fn for_each(&self, f: &mut dyn FnMut(VersionRecord)) {
        self.values().cloned().for_each(f);
    }
    fn changed_since(&self, index: u64, f: &mut dyn FnMut(VersionRecord)) {
        self.values()
            .filter(|r| r.version.index > index)
            .cloned()
            .for_each(f);
    }
    fn failed(&self) -> Option<PortError> {
        None
    }
}

/// A [`CommittedView`] and the applied index it is at.
pub struct CommittedSnapshot {
    pub applied: u64,
    pub view: Box<dyn CommittedView + Send>,
}

impl CommittedSnapshot {
    /// The paths [`CommittedView::changed_since`] reports.
    pub fn changed_paths_since(&self, index: u64) -> PortResult<Vec<String>> {
        let mut out = Vec::new();
        self.view.changed_since(index, &mut |r| out.push(r.path));
        match self.view.failed() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Raft, as the engine sees it.
pub trait Committed: Send + Sync {
    /// Proposes `ops` as one batch; one outcome per op, in order.
    fn propose(
        &self,
        ops: Vec<ProposeOp>,
    ) -> impl Future<Output = PortResult<Vec<ProposeOutcome>>> + Send;
    /// `ops` will be proposed next (after the batch in flight): the port
    /// may start making their content durable on peers now, so that the
    /// transfer of one batch overlaps the commit of the one before. A hint:
    /// no outcome, no error.
    fn announce(&self, _ops: &[ProposeOp]) {}
    /// A read snapshot of the committed state (see [`CommittedView`]).
    fn snapshot(&self) -> PortResult<CommittedSnapshot>;
    /// The paths whose newest record was written after log index `index`,
    /// ascending, without their records (what a caller that only
    /// schedules a scan needs).
    fn changed_paths_since(&self, index: u64) -> PortResult<Vec<String>> {
        self.snapshot()?.changed_paths_since(index)
    }
    /// Resolves once the applied index is above `index`.
    fn wait_applied(&self, index: u64) -> impl Future<Output = ()> + Send;
}

/// The network, as the engine sees it.
pub trait ChunkFetcher: Send + Sync {
    /// Chunk bytes for `hashes` from any of `holders` (those it got; unverified).
    fn fetch(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> impl Future<Output = PortResult<Vec<(Hash, Vec<u8>)>>> + Send;
    /// Encoded tree nodes for `hashes` (those it got; unverified).
    fn fetch_nodes(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> impl Future<Output = PortResult<Vec<(Hash, Vec<u8>)>>> + Send;
    /// Progress of the pull labelled `label` (a path, or a batch of offered
    /// versions): `done` of `total` chunk bytes are local; `finished` once
    /// the pull ended (either way). Feeds `status`' transfers; no-op here.
    fn progress(&self, _label: &str, _done: u64, _total: u64, _finished: bool) {}

    /// The chunks `hashes` (each at most once, [`Verified`]: the caller
    /// does not hash them again) as they arrive,
    /// asked of `holders` first: one continuous fetch whose window the
    /// implementation bounds (a slow consumer slows the network down, it
    /// does not make it buffer). The stream ends when every hash was
    /// delivered or given up. This default fetches in rounds of
    /// [`STREAM_ROUND`], one at a time.
    fn fetch_stream<'a>(
        &'a self,
        holders: &'a [NodeId],
        hashes: &'a [Hash],
    ) -> futures::stream::BoxStream<'a, Verified>
    where
        Self: Sized,
    {
        use futures::StreamExt;
        futures::stream::iter(hashes.chunks(STREAM_ROUND))
            .then(move |round| self.fetch(holders, round))
            .flat_map(|got| {
                futures::stream::iter(
                    got.unwrap_or_default()
                        .into_iter()
                        .filter_map(|(h, d)| Verified::check(h, d).ok()),
                )
            })
            .boxed()
    }
}

/// Chunks per round of [`ChunkFetcher::fetch_stream`]'s default.
pub const STREAM_ROUND: usize = 256;

struct MemState {
    /// The state machine's index, in memory: every batch goes through the
    /// real apply (`filesyncd_raft::apply::apply_batch`).
    index: MemIndex,
    /// Log index of the last batch (the first is 1).
    applied: u64,
    /// The `time_ms` the next batch carries.
    now_ms: u64,
    /// The newest record of every path, as the engine reads it; shared with
    /// the snapshots taken (copied on the next write while one is alive).
    records: Arc<BTreeMap<String, VersionRecord>>,
}

/// A snapshot of [`MemCommitted`].
struct MemView(Arc<BTreeMap<String, VersionRecord>>);

impl CommittedView for MemView {
    fn get(&self, path: &str) -> Option<VersionRecord> {
        CommittedView::get(&*self.0, path)
    }
    fn paths_under(&self, root: &str, out: &mut Vec<String>) {
        self.0.paths_under(root, out)
    }
    fn for_each(&self, f: &mut dyn FnMut(VersionRecord)) {
        self.0.for_each(f)
    }
    fn changed_since(&self, index: u64, f: &mut dyn FnMut(VersionRecord)) {
        CommittedView::changed_since(&*self.0, index, f)
    }
    fn failed(&self) -> Option<PortError> {
        None
    }
}

/// The request-id origin of [`MemCommitted`]'s batches. The twin is shared
/// by every node of a test and does not know which one proposes; the
/// daemon uses its own node id. The state machine records it as the origin
/// of tombstones.
pub const MEM_PROPOSER: NodeId = 0;

/// The `time_ms` of [`MemCommitted`]'s batches until
/// [`MemCommitted::set_time_ms`]: 2024-12-31 23:59:59 UTC.
pub const MEM_START_MS: u64 = 1_735_689_599_000;

/// The cluster settings [`MemCommitted`] starts with (its `InitCluster`,
/// applied at log index 0): default chunker, every version kept.
pub fn mem_init_op() -> Op {
    Op::InitCluster {
        cluster_id: "mem".into(),
        chunker: ChunkerParams::default(),
        retention: Retention::default(),
    }
}

/// Raft in memory: each batch is converted as the daemon's port converts it
/// ([`convert`]) and applied by the state machine's own rules
/// (`filesyncd_raft::apply`, on a [`MemIndex`]) at the next log index, with
/// request id `(MEM_PROPOSER, log index)` and the `time_ms` set by
/// [`MemCommitted::set_time_ms`] (as a leader stamps its clock; the entry
/// clock never runs backwards). Unlike the daemon, a batch is always one
/// entry (the daemon splits very large ones), and there are no membership
/// entries between batches: log indices are 1, 2, 3...
#[derive(Clone)]
pub struct MemCommitted {
    state: Arc<Mutex<MemState>>,
    applied: tokio::sync::watch::Sender<u64>,
}

impl Default for MemCommitted {
    fn default() -> Self {
        Self::new()
    }
}

impl MemCommitted {
    /// An initialized cluster ([`mem_init_op`]) with no path.
    pub fn new() -> MemCommitted {
        let mut index = MemIndex::new();
        let init = Batch {
            id: RequestId {
                origin: MEM_PROPOSER,
                seq: 0,
            },
            time_ms: MEM_START_MS,
            ops: vec![mem_init_op()],
        };
        let resp = index.apply(0, &init);
        assert!(
            matches!(resp.outcomes(), [Outcome::Applied { .. }]),
            "InitCluster answered {resp:?}"
        );
        MemCommitted {
            state: Arc::new(Mutex::new(MemState {
                index,
                applied: 0,
                now_ms: MEM_START_MS,
                records: Arc::new(BTreeMap::new()),
            })),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the `time_ms` of the next batches (the entry clock, which names
    /// conflict copies, is the highest `time_ms` applied so far).
    pub fn set_time_ms(&self, ms: u64) {
        self.lock().now_ms = ms;
    }

    /// The current record of `path`.
    pub fn get(&self, path: &str) -> Option<VersionRecord> {
        self.lock().records.get(path).cloned()
    }

    /// Live paths, sorted.
    pub fn live_paths(&self) -> Vec<String> {
        let s = self.lock();
        s.records
            .values()
            .filter(|r| !r.deleted)
            .map(|r| r.path.clone())
            .collect()
    }

    /// Applies one batch (synchronously) at the next log index.
    pub fn apply(&self, ops: Vec<ProposeOp>) -> Vec<ProposeOutcome> {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.applied += 1;
        let index = s.applied;
        let batch = Batch {
            id: RequestId {
                origin: MEM_PROPOSER,
                seq: index,
            },
            time_ms: s.now_ms,
            ops: ops.into_iter().map(convert::raft_op).collect(),
        };
        // No membership here: the quorum of holders is the acks port's
        // (MemAcks) to reach, and Raft's apply counts it (raft/tests/sm_apply.rs).
        let (changes, resp) = match apply_batch(&s.index, index, &batch, &[]) {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let mut touched: BTreeSet<String> = changes.live.keys().cloned().collect();
        touched.extend(changes.history.keys().map(|(p, _)| p.clone()));
        s.index.commit(changes);
        let records = Arc::make_mut(&mut s.records);
        for path in touched {
            match s.index.newest(&path) {
                Some(r) => records.insert(path.clone(), convert::record_of(path, &r)),
                None => records.remove(&path),
            };
        }
        drop(guard);
        self.applied.send_replace(index);
        resp.outcomes()
            .iter()
            .map(convert::propose_outcome)
            .collect()
    }
}

impl Committed for MemCommitted {
    fn propose(
        &self,
        ops: Vec<ProposeOp>,
    ) -> impl Future<Output = PortResult<Vec<ProposeOutcome>>> + Send {
        let out = self.apply(ops);
        async move { Ok(out) }
    }

    fn snapshot(&self) -> PortResult<CommittedSnapshot> {
        let s = self.lock();
        Ok(CommittedSnapshot {
            applied: s.applied,
            view: Box::new(MemView(Arc::clone(&s.records))),
        })
    }

    fn wait_applied(&self, index: u64) -> impl Future<Output = ()> + Send {
        let mut rx = self.applied.subscribe();
        async move {
            let _ = rx.wait_for(|a| *a > index).await;
        }
    }
}

/// Serves chunks and tree nodes from other nodes' stores, in memory; counts
/// what it served.
#[derive(Clone, Default)]
pub struct MemFetcher {
    peers: Arc<Mutex<BTreeMap<NodeId, Peer>>>,
    served: Arc<Mutex<u64>>,
}

type Peer = (Arc<dyn ChunkStore>, Arc<Mutex<MemNodeStore>>);

impl MemFetcher {
    /// Makes `node`'s chunk store and tree-node store reachable.
    pub fn add(&self, node: NodeId, store: Arc<dyn ChunkStore>, nodes: Arc<Mutex<MemNodeStore>>) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, (store, nodes));
    }

    /// Chunks and nodes served so far.
    pub fn served(&self) -> u64 {
        *self.served.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serve(&self, holders: &[NodeId], hashes: &[Hash], chunks: bool) -> Vec<(Hash, Vec<u8>)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::new();
        for h in hashes {
            for node in holders {
                let Some((store, nodes)) = peers.get(node) else {
                    continue;
                };
                let got = if chunks {
                    store.get(h).ok().flatten()
                } else {
                    nodes.lock().unwrap_or_else(|p| p.into_inner()).get_node(h)
                };
                if let Some(d) = got {
                    out.push((*h, d));
                    break;
                }
            }
        }
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) += out.len() as u64;
        out
    }
}

impl ChunkFetcher for MemFetcher {
    fn fetch(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> impl Future<Output = PortResult<Vec<(Hash, Vec<u8>)>>> + Send {
        let out = self.serve(holders, hashes, true);
        async move { Ok(out) }
    }

    fn fetch_nodes(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> impl Future<Output = PortResult<Vec<(Hash, Vec<u8>)>>> + Send {
        let out = self.serve(holders, hashes, false);
        async move { Ok(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &str, root: u8, base: Option<VersionId>) -> ProposeOp {
        ProposeOp::Put {
            path: path.into(),
            meta: Meta::file(Hash([root; 32]), 1, 0o644),
            mtime_ns: 0,
            origin: 3,
            base,
            holders: vec![3],
        }
    }

    #[tokio::test]
    async fn mem_committed_applies_the_cas_rules() {
        let c = MemCommitted::new();
        let out = c.propose(vec![put("f", 1, None)]).await.expect("propose");
        let v1 = VersionId::new(1, 0);
        assert_eq!(out, vec![ProposeOutcome::Applied(v1)]);
        let out = c
            .propose(vec![
                put("f", 2, None),
                put("f", 1, None),
                put("f", 3, Some(v1)),
            ])
            .await
            .expect("propose");
        assert_eq!(
            out,
            vec![
                ProposeOutcome::Conflict {
                    path: "f.sync-conflict-20241231-235959-3".into(),
                    version: VersionId::new(2, 0)
                },
                ProposeOutcome::Unchanged(v1),
                ProposeOutcome::Applied(VersionId::new(2, 2)),
            ]
        );
        let out = c
            .propose(vec![
                ProposeOp::Delete {
                    path: "f".into(),
                    base: v1,
                },
                ProposeOp::Delete {
                    path: "nope".into(),
                    base: v1,
                },
                ProposeOp::Delete {
                    path: "f".into(),
                    base: VersionId::new(2, 2),
                },
            ])
            .await
            .expect("propose");
        assert_eq!(
            out,
            vec![
                ProposeOutcome::DeleteLost {
                    current: VersionId::new(2, 2)
                },
                ProposeOutcome::AlreadyAbsent,
                ProposeOutcome::Applied(VersionId::new(3, 2)),
            ]
        );
        let snap = c.snapshot().expect("snapshot");
        assert_eq!(snap.applied, 3);
        let mut since = Vec::new();
        snap.view.changed_since(2, &mut |r| since.push(r));
        assert_eq!(since.len(), 1);
        assert!(since[0].deleted);
        c.wait_applied(2).await;
    }
}
