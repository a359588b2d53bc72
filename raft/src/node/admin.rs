//! Membership changes from any node, forwarded to the leader (`RpcKind::Admin`).
//!
//! Each call runs on the leader with the same retry loop as writes; its
//! per-attempt deadline is the whole remaining `propose_timeout`, because a
//! blocking `add_learner` waits for the learner to catch up. Every request
//! is idempotent (re-adding a learner, re-promoting a voter or removing an
//! absent node changes nothing), so a retry after a lost reply is safe.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{ChangeMembers, LogId};
use serde::{Deserialize, Serialize};

use super::forward::{
    attempt_of_raft_error, attempt_of_rpc_error, Attempt, LeaderCall, WriteError,
};
use super::{NodeError, RaftNode};
use crate::network::{call_rpc, decode, encode, encode_reply, failure_reply, RemoteFailure, Reply};
use crate::transport::{RaftTransport, RpcKind};
use crate::types::{NodeId, NodeInfo};

/// A membership change, as forwarded to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Add (or re-add) a learner; `blocking` waits until it has caught up.
    AddLearner {
        id: NodeId,
        info: NodeInfo,
        blocking: bool,
    },
    /// Any openraft membership change; `retain` keeps removed voters as learners.
    Change {
        change: ChangeMembers<NodeId, NodeInfo>,
        retain: bool,
    },
    /// Remove a node entirely, whether voter or learner.
    Remove { id: NodeId },
}

impl<T: RaftTransport> RaftNode<T> {
    async fn admin(&self, req: AdminRequest) -> Result<LogId<NodeId>, NodeError> {
        let total = self.inner.config.propose_timeout;
        let size = encode(&req)
            .map_err(|e| NodeError::Fatal(format!("cannot encode request: {e}")))?
            .len();
        self.with_leader(&AdminCall { req, size }, total, total, None)
            .await
    }

    /// Add `id` (reachable as `info`) as a learner. With `blocking`, return
    /// once the leader sees it caught up (or the deadline passes).
    pub async fn add_learner(
        &self,
        id: NodeId,
        info: NodeInfo,
        blocking: bool,
    ) -> Result<LogId<NodeId>, NodeError> {
        self.admin(AdminRequest::AddLearner { id, info, blocking })
            .await
    }

    /// Make exactly `voters` the voters (each must already be a member);
    /// with `retain`, removed voters stay as learners.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain: bool,
    ) -> Result<LogId<NodeId>, NodeError> {
        let change = ChangeMembers::ReplaceAllVoters(voters);
        self.admin(AdminRequest::Change { change, retain }).await
    }

    /// Replace the recorded node info of member `id` (its address; a member
    /// that moved keeps its id and PeerId). Voters and learners stay as
    /// they are.
    pub async fn set_node_info(
        &self,
        id: NodeId,
        info: NodeInfo,
    ) -> Result<LogId<NodeId>, NodeError> {
        let change = ChangeMembers::SetNodes(BTreeMap::from([(id, info)]));
        self.admin(AdminRequest::Change {
            change,
            retain: true,
        })
        .await
    }

    /// Promote learner `id` to voter.
    pub async fn promote(&self, id: NodeId) -> Result<LogId<NodeId>, NodeError> {
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        self.admin(AdminRequest::Change {
            change,
            retain: false,
        })
        .await
    }

    /// Remove node `id` from the cluster (voter or learner).
    pub async fn remove(&self, id: NodeId) -> Result<LogId<NodeId>, NodeError> {
        self.admin(AdminRequest::Remove { id }).await
    }

    /// Run `req` on this node, which believes it leads.
    async fn admin_as_leader(&self, req: &AdminRequest) -> Result<LogId<NodeId>, WriteError> {
        let raft = &self.inner.raft;
        let resp = match req {
            AdminRequest::AddLearner { id, info, blocking } => {
                raft.add_learner(*id, info.clone(), *blocking).await?
            }
            AdminRequest::Change { change, retain } => {
                raft.change_membership(change.clone(), *retain).await?
            }
            AdminRequest::Remove { id } => {
                let (is_voter, is_member) = {
                    let rx = raft.metrics();
                    let m = rx.borrow();
                    let mem = m.membership_config.membership();
                    (
                        mem.voter_ids().any(|v| v == *id),
                        mem.get_node(id).is_some(),
                    )
                };
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([*id]))
                } else if is_member {
                    ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
                } else {
                    // Already gone: commit nothing, answer the current config.
                    ChangeMembers::AddNodes(BTreeMap::new())
                };
                raft.change_membership(change, false).await?
            }
        };
        Ok(resp.log_id)
    }
}

struct AdminCall {
    req: AdminRequest,
    size: usize,
}

impl<T: RaftTransport> LeaderCall<T> for AdminCall {
    type Output = LogId<NodeId>;

    async fn local(&self, node: &RaftNode<T>, deadline: Duration) -> Result<Self::Output, Attempt> {
        match tokio::time::timeout(deadline, node.admin_as_leader(&self.req)).await {
            Err(_) => Err(Attempt::Retry {
                hint: None,
                reason: "membership change not confirmed in time".to_string(),
            }),
            Ok(res) => res.map_err(|e| attempt_of_raft_error(e, false)),
        }
    }

    async fn remote(
        &self,
        node: &RaftNode<T>,
        target: NodeId,
        info: &NodeInfo,
        deadline: Duration,
    ) -> Result<Self::Output, Attempt> {
        let max = node.inner.config.max_rpc_bytes;
        call_rpc::<_, AdminRequest, LogId<NodeId>, WriteError>(
            &*node.inner.transport,
            node.inner.id,
            target,
            info,
            RpcKind::Admin,
            &self.req,
            max,
            deadline,
        )
        .await
        .map_err(|e| attempt_of_rpc_error(e, self.size, max))
    }
}

/// Leader side of [`RpcKind::Admin`].
pub(crate) async fn serve<T: RaftTransport>(node: &RaftNode<T>, payload: &[u8]) -> Vec<u8> {
    let req: AdminRequest = match decode(payload) {
        Ok(r) => r,
        Err(e) => return failure_reply(RemoteFailure::BadRequest(e.to_string())),
    };
    let deadline = node.inner.config.propose_timeout * 3 / 4;
    match tokio::time::timeout(deadline, node.admin_as_leader(&req)).await {
        Err(_) => failure_reply(RemoteFailure::Unavailable(
            "membership change not confirmed in time".to_string(),
        )),
        Ok(Ok(log_id)) => encode_reply::<LogId<NodeId>, WriteError>(&Reply::Ok(log_id)),
        Ok(Err(e)) => encode_reply::<LogId<NodeId>, WriteError>(&Reply::Raft(e)),
    }
}
