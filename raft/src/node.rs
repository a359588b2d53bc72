//! `RaftNode`: the one handle the daemon holds on the replicated file index.
//!
//! It owns an openraft [`Raft`] wired to a [`RaftTransport`] (through
//! [`crate::network`]) and adds what openraft leaves to the application:
//!
//! - **Write forwarding.** openraft only accepts writes on the leader and
//!   answers `ForwardToLeader` elsewhere. [`RaftNode::propose`] sends the batch
//!   itself: to the local `Raft` when this node leads, otherwise over the
//!   transport ([`RpcKind::ClientWrite`]) to the leader, which stamps
//!   `time_ms` from ITS clock and calls `client_write`. On a leader change,
//!   an unreachable leader or a lost reply it retries with exponential backoff
//!   (`retry_backoff_min..=retry_backoff_max`) until `propose_timeout`.
//! - **Exactly-once application of retries.** Every proposal carries a
//!   [`RequestId`] `(origin = this node, seq)`. `seq` starts at the wall clock
//!   in microseconds when the node starts (so it keeps growing across
//!   restarts) and then increases by one per proposal; a retry reuses the id,
//!   and the state machine answers a second copy with `Duplicate(original
//!   outcomes)`. The state machine keeps a window of the `DEDUP_WINDOW`
//!   highest seqs per origin, so at most `DEDUP_WINDOW / 2` proposals of one
//!   node are in flight at once (a semaphore): a retried id is then always
//!   inside the window.
//! - **Membership changes from any node** ([`RaftNode::add_learner`],
//!   [`RaftNode::change_membership`], [`RaftNode::promote`],
//!   [`RaftNode::remove`]) are forwarded the same way ([`RpcKind::Admin`]).
//! - **Serving RPCs.** [`RaftNode::handle_rpc`] (also [`RpcHandler`]) answers
//!   every incoming request with bytes; after [`RaftNode::shutdown`] it answers
//!   `Unavailable`, which callers treat as unreachable.
//!
//! No lock is held across an `.await`; all waits are bounded.

mod admin;
mod forward;
pub mod prevote;
mod split;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{Raft, RaftMetrics};

/// This cluster's Raft metrics (openraft's, with our node types).
pub type Metrics = RaftMetrics<NodeId, NodeInfo>;
use thiserror::Error;
use tokio::sync::{watch, Semaphore};

pub use admin::AdminRequest;
pub use forward::Proposed;
#[doc(hidden)]
pub use forward::{decode_admin_reply, decode_write_reply};
pub use split::{op_bytes, split_ops, SplitError, MAX_ENTRY_BYTES};

use crate::command::RequestId;
use crate::config::{ConfigError, RaftConfig};
use crate::log_store::{LogStoreError, RedbLogStore};
use crate::network::{failure_reply, serve_raft_rpc, NetworkFactory, RemoteFailure};
use crate::state_machine::{SmError, SmReader, StateMachine};
use crate::transport::{RaftTransport, RpcHandler, RpcKind};
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// Proposals of one node in flight at once (half the state machine's dedup window).
pub const MAX_IN_FLIGHT: usize = (crate::apply::DEDUP_WINDOW / 2) as usize;

/// What a [`RaftNode`] operation can fail with.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Opening the log store failed.
    #[error("log store: {0}")]
    LogStore(#[from] LogStoreError),
    /// Opening the state machine failed.
    #[error("state machine: {0}")]
    StateMachine(#[from] SmError),
    /// A blocking open task panicked or was cancelled.
    #[error("open task failed: {0}")]
    Join(String),
    /// openraft stopped on a storage error or panic; the node must be restarted.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// [`RaftNode::shutdown`] was called.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The cluster could not be initialized (e.g. this node already has a log).
    #[error("initialize refused: {0}")]
    Initialize(String),
    /// The leader refused a membership change (empty voter set, unknown learner).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// No leader committed the request within the deadline. If `id` is set,
    /// the write may still be applied later (exactly once): read before
    /// re-proposing.
    #[error("not committed within {elapsed:?} (request {id:?}): {last_error}")]
    Timeout {
        id: Option<RequestId>,
        elapsed: Duration,
        last_error: String,
    },
    /// The state machine no longer knows the outcome of this retried id (it
    /// fell out of the dedup window); nothing was applied by the retry.
    #[error("outcome of request {id:?} is no longer known")]
    OutcomeUnknown { id: RequestId },
    /// The request does not fit in one RPC (`max_rpc_bytes`): split the batch.
    #[error("request of {size} bytes exceeds the RPC cap of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

impl NodeError {
    pub(crate) fn from_fatal(f: Fatal<NodeId>) -> NodeError {
        match f {
            Fatal::Stopped => NodeError::ShuttingDown,
            other => NodeError::Fatal(other.to_string()),
        }
    }
}

pub(crate) struct Inner<T> {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) transport: Arc<T>,
    pub(crate) config: RaftConfig,
    reader: SmReader,
    next_seq: AtomicU64,
    pub(crate) in_flight: Semaphore,
    running: AtomicBool,
    /// When the node started (the pre-vote's clock).
    epoch: std::time::Instant,
    /// ms since `epoch` of the last request accepted from a leader
    /// ([`prevote`]).
    contact_ms: AtomicU64,
    /// This node's last log id, for the pre-vote's log check.
    last_log: Option<prevote::LastLogFn>,
}

/// A running Raft member. Cheap to clone (all clones are the same node).
pub struct RaftNode<T: RaftTransport> {
    pub(crate) inner: Arc<Inner<T>>,
}

impl<T: RaftTransport> Clone for RaftNode<T> {
    fn clone(&self) -> Self {
        RaftNode {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The log store's file inside a node's data directory (the state machine
/// uses `state.redb` and `snapshots/` beside it).
pub const LOG_FILE: &str = "raft-log.redb";

impl<T: RaftTransport> RaftNode<T> {
    /// Open (or create) the stores of node `id` under `data_dir` and start it.
    /// The stores refuse a directory that belongs to another node id.
    pub async fn open(
        data_dir: impl AsRef<Path>,
        id: NodeId,
        config: RaftConfig,
        transport: Arc<T>,
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let dir = data_dir.as_ref().to_path_buf();
        let (log, sm) = tokio::task::spawn_blocking(move || {
            let log = RedbLogStore::open(dir.join(LOG_FILE), id)?;
            let sm = StateMachine::open(&dir)?;
            Ok::<_, NodeError>((log, sm))
        })
        .await
        .map_err(|e| NodeError::Join(e.to_string()))??;
        let reader = sm.reader();
        Self::start(id, config, transport, log, sm, reader).await
    }

    /// Start node `id` on the given stores; `reader` reads `state_machine`'s
    /// database. The node serves RPCs as soon as the transport routes them to
    /// [`RaftNode::handle_rpc`].
    pub async fn start<LS, SM>(
        id: NodeId,
        config: RaftConfig,
        transport: Arc<T>,
        log_store: LS,
        state_machine: SM,
        reader: SmReader,
    ) -> Result<Self, NodeError>
    where
        LS: RaftLogStorage<TypeConfig> + prevote::LastLogSource,
        SM: RaftStateMachine<TypeConfig>,
    {
        let mut openraft_config = config.to_openraft()?;
        // With pre-vote, the driver starts elections (see `prevote`).
        openraft_config.enable_elect = !config.pre_vote;
        let raft_config = Arc::new(openraft_config);
        let last_log = log_store.last_log_fn();
        let network = NetworkFactory::new(
            id,
            Arc::clone(&transport),
            config.max_rpc_bytes,
            config.unreachable_backoff,
        );
        let raft = Raft::new(id, raft_config, network, log_store, state_machine)
            .await
            .map_err(NodeError::from_fatal)?;
        tracing::info!(node = id, pre_vote = config.pre_vote, "raft node started");
        let pre_vote = config.pre_vote;
        let inner = Arc::new(Inner {
            id,
            raft,
            transport,
            config,
            reader,
            next_seq: AtomicU64::new(now_us()),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            running: AtomicBool::new(true),
            epoch: std::time::Instant::now(),
            contact_ms: AtomicU64::new(0),
            last_log,
        });
        if pre_vote {
            prevote::spawn(Arc::downgrade(&inner));
        }
        Ok(RaftNode { inner })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The settings this node runs with.
    pub fn config(&self) -> &RaftConfig {
        &self.inner.config
    }

    /// Read access to the replicated file index (this node's applied state).
    pub fn reader(&self) -> &SmReader {
        &self.inner.reader
    }

    /// The underlying openraft handle (for waits and introspection).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// A snapshot of the current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<NodeId, NodeInfo> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// A watch on the Raft metrics.
    pub fn metrics_watch(&self) -> watch::Receiver<Metrics> {
        self.inner.raft.metrics()
    }

    /// The leader this node currently knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow();
        let id = m.current_leader?;
        let info = m
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .unwrap_or_default();
        Some((id, info))
    }

    /// Whether this node hears from a live leader: it leads and a quorum
    /// acknowledged it within twice the leader lease (alone: always), or it
    /// follows and accepted a leader's request within that time. (openraft
    /// keeps naming the last leader until the next election: with pre-vote a
    /// follower cut off from the cluster starts none, so its metrics would
    /// name a leader it no longer hears.)
    pub fn leader_is_live(&self) -> bool {
        let m = self.metrics();
        let lease = self.inner.config.election_timeout_max * 2;
        if m.state.is_leader() {
            let alone = m.membership_config.membership().voter_ids().count() <= 1;
            return alone
                || m.millis_since_quorum_ack
                    .is_some_and(|ms| Duration::from_millis(ms) < lease);
        }
        m.current_leader.is_some() && self.inner.silent_for() < lease
    }

    /// Whether this node believes it is the leader (from metrics; may be stale).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    /// A fresh request id for a proposal from this node.
    pub fn next_request_id(&self) -> RequestId {
        RequestId {
            origin: self.inner.id,
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Form a new cluster of `members` (this node must be one of them). Call
    /// on a pristine node only; returns `Ok(false)` without change if this
    /// node already has a log (the cluster exists).
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<bool, NodeError> {
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(e)) => Err(NodeError::Initialize(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(NodeError::from_fatal(f)),
        }
    }

    /// Form a single-node cluster of this node, reachable as `info`.
    pub async fn initialize_single(&self, info: NodeInfo) -> Result<bool, NodeError> {
        self.initialize(BTreeMap::from([(self.inner.id, info)]))
            .await
    }

    /// Answer one incoming RPC (see [`crate::transport`]). Never fails: errors
    /// are encoded in the returned bytes.
    pub async fn handle_rpc(&self, kind: RpcKind, payload: Vec<u8>) -> Vec<u8> {
        if !self.running() {
            return failure_reply(RemoteFailure::Unavailable("node is shutting down".into()));
        }
        let max = self.inner.config.max_rpc_bytes;
        if payload.len() > max {
            return failure_reply(RemoteFailure::BadRequest(format!(
                "payload of {} bytes exceeds {max}",
                payload.len()
            )));
        }
        match kind {
            RpcKind::ClientWrite => forward::serve(self, &payload).await,
            RpcKind::Admin => admin::serve(self, &payload).await,
            RpcKind::PreVote => prevote::serve(self, &payload).await,
            _ => serve_raft_rpc(&self.inner.raft, kind, &payload, &|| {
                self.inner.leader_contact()
            })
            .await
            .unwrap_or_else(|| {
                failure_reply(RemoteFailure::BadRequest(format!("unroutable kind {kind}")))
            }),
        }
    }

    /// Stop serving and stop Raft. Idempotent. The stores are closed once the
    /// Raft tasks have ended AND every clone of this node (which holds a
    /// reader) is dropped; only then can the data directory be reopened. Unregistering from the transport is the
    /// transport owner's job.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        if !self.inner.running.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.in_flight.close();
        tracing::info!(node = self.inner.id, "raft node shutting down");
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Fatal(format!("raft task failed: {e}")))
    }
}

impl<T: RaftTransport> RpcHandler for RaftNode<T> {
    fn handle(&self, kind: RpcKind, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let node = self.clone();
        Box::pin(async move { node.handle_rpc(kind, payload).await })
    }
}
