//! `DELETE /members/{node}`: remove a member (voter or learner) from the
//! cluster. `{node}` is a node id as `members` prints it (16 hex digits) or
//! a PeerId. The change goes through Raft (forwarded to the leader from any
//! member); once committed, every member's p2p allow-list drops the peer,
//! which disconnects it and refuses it from then on.
//!
//! Served by voters only (403 on a learner). Answers [`Removed`]; 404 for an unknown node, 409 when Raft refuses the
//! change (e.g. removing the last voter), 503 when no leader commits it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use filesyncd_raft::node::NodeError;
use filesyncd_raft::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

use super::types::{node_hex, Member};
use super::{member_list, ApiError, ApiState};
use crate::daemon::join::parse_node_id;

/// The answer of `DELETE /members/{node}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// 16 hex digits.
    pub id: String,
    pub peer_id: String,
    /// The members as this node sees them after the change committed.
    pub members: Vec<Member>,
}

/// The member `key` names: a node id (hex) or a PeerId.
pub fn resolve<'a>(
    key: &str,
    members: impl IntoIterator<Item = (NodeId, &'a NodeInfo)>,
) -> Option<(NodeId, NodeInfo)> {
    let by_id = parse_node_id(key);
    members
        .into_iter()
        .find(|(id, info)| by_id == Some(*id) || info.peer_id == key)
        .map(|(id, info)| (id, info.clone()))
}

pub(super) async fn remove(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    super::require_voter(&s)?;
    let found = {
        let m = s.node.metrics();
        resolve(
            &key,
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, info)| (*id, info)),
        )
    };
    let Some((id, info)) = found else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no member {key}: give a node id (16 hex digits, as `filesyncd members` prints) or a peer id"),
        ));
    };
    let log_id = s.node.remove(id).await.map_err(|e| match e {
        NodeError::Membership(m) => ApiError(StatusCode::CONFLICT, format!("cannot remove: {m}")),
        other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    })?;
    tracing::info!(node = %node_hex(id), peer = %info.peer_id, index = log_id.index, "member removed");
    // This node's view catches up with the committed change shortly.
    let mut metrics = s.node.metrics_watch();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        metrics.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= log_id.index)),
    )
    .await;
    Ok(Json(Removed {
        id: node_hex(id),
        peer_id: info.peer_id,
        members: member_list(&s.node),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_named_by_hex_id_or_peer_id() {
        let a = NodeInfo {
            peer_id: "12D3KooWA".into(),
            addr: "x".into(),
        };
        let b = NodeInfo {
            peer_id: "12D3KooWB".into(),
            addr: "y".into(),
        };
        let members = || vec![(0xabcu64, &a), (0x1234_5678_9abc_def0u64, &b)];
        assert_eq!(
            resolve("0000000000000abc", members()).map(|m| m.0),
            Some(0xabc)
        );
        assert_eq!(
            resolve("123456789abcdef0", members()).map(|m| m.0),
            Some(0x1234_5678_9abc_def0)
        );
        assert_eq!(
            resolve("12D3KooWB", members()).map(|m| m.0),
            Some(0x1234_5678_9abc_def0)
        );
        for missing in ["0000000000000abd", "12D3KooWC", "", "zz"] {
            assert_eq!(resolve(missing, members()), None, "{missing}");
        }
    }
}
