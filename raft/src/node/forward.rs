//! Proposals: the leader-finding retry loop shared by writes and membership
//! changes, write forwarding (`RpcKind::ClientWrite`), and its server side.
//!
//! Retry rules (see the `node` module doc): an attempt goes to the leader in
//! this node's metrics (or the hint of the last `ForwardToLeader`); a
//! retryable failure (no leader, unreachable, timeout, leader changed) waits a
//! jittered backoff doubling from `retry_backoff_min` to `retry_backoff_max`,
//! except right after a hint naming a new leader (up to 3 times in a row);
//! the whole loop gives up after its total deadline with `NodeError::Timeout`.

use std::future::Future;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RPCError, RaftError};
use openraft::LogId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{now_ms, NodeError, RaftNode};
use crate::command::{Op, Request, RequestId, Response};
use crate::network::{call_rpc, decode, encode, encode_reply, failure_reply, RemoteFailure, Reply};
use crate::transport::{RaftTransport, RpcKind};
use crate::types::{NodeId, NodeInfo};

/// A committed proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// The id the batch was proposed under.
    pub id: RequestId,
    /// The log entry that carried it (for a duplicate: the later copy).
    pub log_id: LogId<NodeId>,
    /// What applying it answered (`Applied` or `Duplicate`).
    pub response: Response,
}

/// The wire answer to a forwarded write.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WriteOk {
    log_id: LogId<NodeId>,
    response: Response,
}

pub(crate) type WriteError = RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>;

/// Decodes the reply to a forwarded write as the forwarding node does, and
/// drops it: the fuzz targets (`fuzz/`) reach this decoder of peer bytes
/// through it, since the reply types are private.
#[doc(hidden)]
pub fn decode_write_reply(payload: &[u8]) -> Result<(), crate::network::WireError> {
    decode::<Reply<WriteOk, WriteError>>(payload).map(drop)
}

/// [`decode_write_reply`] for the reply to a forwarded membership change.
#[doc(hidden)]
pub fn decode_admin_reply(payload: &[u8]) -> Result<(), crate::network::WireError> {
    decode::<Reply<LogId<NodeId>, WriteError>>(payload).map(drop)
}

/// Why one attempt did not succeed.
pub(crate) enum Attempt {
    /// Try again (at `hint` if given, else at whoever leads then).
    Retry {
        hint: Option<(NodeId, Option<NodeInfo>)>,
        reason: String,
    },
    /// Give up with this error.
    Fail(NodeError),
}

/// One operation that must run on the leader.
pub(crate) trait LeaderCall<T: RaftTransport>: Sync {
    type Output: Send;

    /// Run on this node, which believes it leads.
    fn local(
        &self,
        node: &RaftNode<T>,
        deadline: Duration,
    ) -> impl Future<Output = Result<Self::Output, Attempt>> + Send;

    /// Run on `target` over the transport.
    fn remote(
        &self,
        node: &RaftNode<T>,
        target: NodeId,
        info: &NodeInfo,
        deadline: Duration,
    ) -> impl Future<Output = Result<Self::Output, Attempt>> + Send;
}

/// Map a leader-side Raft error to an attempt result. `remote` marks errors
/// that came from another node (a stopped remote is retried elsewhere).
pub(crate) fn attempt_of_raft_error(e: WriteError, remote: bool) -> Attempt {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Attempt::Retry {
            hint: f.leader_id.map(|id| (id, f.leader_node)),
            reason: "not the leader".to_string(),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(p),
        )) => Attempt::Retry {
            hint: None,
            reason: p.to_string(),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(m)) => {
            Attempt::Fail(NodeError::Membership(m.to_string()))
        }
        RaftError::Fatal(f) if remote => Attempt::Retry {
            hint: None,
            reason: format!("leader stopped: {f}"),
        },
        RaftError::Fatal(f) => Attempt::Fail(NodeError::from_fatal(f)),
    }
}

/// Map the failure of a forwarded call.
pub(crate) fn attempt_of_rpc_error(
    e: RPCError<NodeId, NodeInfo, WriteError>,
    size: usize,
    max: usize,
) -> Attempt {
    match e {
        RPCError::RemoteError(r) => attempt_of_raft_error(r.source, true),
        RPCError::PayloadTooLarge(_) => Attempt::Fail(NodeError::TooLarge { size, max }),
        other => Attempt::Retry {
            hint: None,
            reason: other.to_string(),
        },
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(ms.div_ceil(2)..=ms))
}

impl<T: RaftTransport> RaftNode<T> {
    /// The address of `id` in this node's membership view.
    fn node_info(&self, id: NodeId) -> NodeInfo {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Run `call` on the leader, retrying until `total` has passed. Each
    /// attempt gets at most `per_attempt` (and never more than what is left).
    pub(crate) async fn with_leader<C: LeaderCall<T>>(
        &self,
        call: &C,
        total: Duration,
        per_attempt: Duration,
        id: Option<RequestId>,
    ) -> Result<C::Output, NodeError> {
        let cfg = &self.inner.config;
        let start = Instant::now();
        let mut backoff = cfg.retry_backoff_min;
        let mut hint: Option<(NodeId, Option<NodeInfo>)> = None;
        let mut last_error = String::from("no leader known");
        let mut quick_retries = 0u32;
        let mut metrics = self.metrics_watch();
        loop {
            if !self.running() {
                return Err(NodeError::ShuttingDown);
            }
            let target = match hint.take() {
                Some((lid, Some(info))) => Some((lid, info)),
                Some((lid, None)) => Some((lid, self.node_info(lid))),
                None => self.leader(),
            };
            let mut new_leader_hint = false;
            if let Some((lid, info)) = &target {
                let left = total.saturating_sub(start.elapsed());
                let deadline = per_attempt.min(left).max(Duration::from_millis(1));
                let res = if *lid == self.inner.id {
                    call.local(self, deadline).await
                } else {
                    call.remote(self, *lid, info, deadline).await
                };
                match res {
                    Ok(v) => return Ok(v),
                    Err(Attempt::Fail(e)) => return Err(e),
                    Err(Attempt::Retry { hint: h, reason }) => {
                        tracing::debug!(node = self.inner.id, leader = lid, %reason, "retrying on leader");
                        last_error = format!("via node {lid}: {reason}");
                        if let Some((hid, hinfo)) = h {
                            new_leader_hint = hid != *lid;
                            hint = Some((hid, hinfo));
                        }
                    }
                }
            }
            let elapsed = start.elapsed();
            if elapsed >= total {
                return Err(NodeError::Timeout {
                    id,
                    elapsed,
                    last_error,
                });
            }
            if new_leader_hint && quick_retries < 3 {
                quick_retries += 1;
                continue;
            }
            quick_retries = 0;
            let wait = jitter(backoff).min(total - elapsed);
            if target.is_none() {
                // No leader known: wake early when the metrics change.
                let _ = tokio::time::timeout(wait, metrics.changed()).await;
            } else {
                tokio::time::sleep(wait).await;
            }
            backoff = (backoff * 2).min(cfg.retry_backoff_max);
        }
    }

    /// Commit `ops` as one log entry under a fresh request id, through the
    /// leader wherever it is. At most `MAX_IN_FLIGHT` proposals of this node
    /// run at once; others wait here.
    pub async fn propose(&self, ops: Vec<Op>) -> Result<Proposed, NodeError> {
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        let id = self.next_request_id();
        self.propose_inner(id, ops).await
    }

    /// Like [`RaftNode::propose`] with a caller-chosen id: re-proposing the
    /// id of a request that timed out answers its outcome exactly once
    /// (`Duplicate` if it had been applied).
    pub async fn propose_with_id(
        &self,
        id: RequestId,
        ops: Vec<Op>,
    ) -> Result<Proposed, NodeError> {
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        self.propose_inner(id, ops).await
    }

    async fn propose_inner(&self, id: RequestId, ops: Vec<Op>) -> Result<Proposed, NodeError> {
        // time_ms is stamped by whichever leader commits it.
        let req = Request::new(id, 0, ops);
        let max = self.inner.config.max_rpc_bytes;
        let size = encode(&req)
            .map_err(|e| NodeError::Fatal(format!("cannot encode request: {e}")))?
            .len();
        if size > max {
            return Err(NodeError::TooLarge { size, max });
        }
        let call = WriteCall { req, size };
        let cfg = &self.inner.config;
        let ok = self
            .with_leader(&call, cfg.propose_timeout, cfg.forward_timeout, Some(id))
            .await?;
        if ok.response == Response::TooOld {
            return Err(NodeError::OutcomeUnknown { id });
        }
        Ok(Proposed {
            id,
            log_id: ok.log_id,
            response: ok.response,
        })
    }

    /// `client_write` on this node, stamping `time_ms` from this node's
    /// clock. `Err(None)` = not confirmed within `deadline` (it may still
    /// commit later).
    async fn write_as_leader(
        &self,
        mut req: Request,
        deadline: Duration,
    ) -> Result<WriteOk, Option<WriteError>> {
        match &mut req {
            Request::V1(batch) => batch.time_ms = now_ms(),
        }
        match tokio::time::timeout(deadline, self.inner.raft.client_write(req)).await {
            Err(_elapsed) => Err(None),
            Ok(Err(e)) => Err(Some(e)),
            Ok(Ok(resp)) => Ok(WriteOk {
                log_id: resp.log_id,
                response: resp.data,
            }),
        }
    }
}

struct WriteCall {
    req: Request,
    size: usize,
}

impl<T: RaftTransport> LeaderCall<T> for WriteCall {
    type Output = WriteOk;

    async fn local(&self, node: &RaftNode<T>, deadline: Duration) -> Result<WriteOk, Attempt> {
        node.write_as_leader(self.req.clone(), deadline)
            .await
            .map_err(|e| match e {
                Some(e) => attempt_of_raft_error(e, false),
                None => Attempt::Retry {
                    hint: None,
                    reason: "commit not confirmed in time".to_string(),
                },
            })
    }

    async fn remote(
        &self,
        node: &RaftNode<T>,
        target: NodeId,
        info: &NodeInfo,
        deadline: Duration,
    ) -> Result<WriteOk, Attempt> {
        let max = node.inner.config.max_rpc_bytes;
        call_rpc::<_, Request, WriteOk, WriteError>(
            &*node.inner.transport,
            node.inner.id,
            target,
            info,
            RpcKind::ClientWrite,
            &self.req,
            max,
            deadline,
        )
        .await
        .map_err(|e| attempt_of_rpc_error(e, self.size, max))
    }
}

/// Leader side of [`RpcKind::ClientWrite`].
pub(crate) async fn serve<T: RaftTransport>(node: &RaftNode<T>, payload: &[u8]) -> Vec<u8> {
    let req: Request = match decode(payload) {
        Ok(r) => r,
        Err(e) => return failure_reply(RemoteFailure::BadRequest(e.to_string())),
    };
    // Answer before the forwarding node gives up on this attempt.
    let deadline = node.inner.config.forward_timeout * 3 / 4;
    match node.write_as_leader(req, deadline).await {
        Ok(ok) => encode_reply::<WriteOk, WriteError>(&Reply::Ok(ok)),
        Err(Some(e)) => encode_reply::<WriteOk, WriteError>(&Reply::Raft(e)),
        Err(None) => failure_reply(RemoteFailure::Unavailable(
            "commit not confirmed in time".to_string(),
        )),
    }
}
