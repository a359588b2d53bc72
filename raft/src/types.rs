//! The openraft type configuration shared by every part of this crate.

use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};

/// A member as Raft knows it: enough to reach it. `raft` never interprets
/// these strings (it knows nothing of libp2p); `node` fills them in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The libp2p PeerId, as text.
    pub peer_id: String,
    /// Where the peer listens (a multiaddr or host:port), as text.
    pub addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.peer_id, self.addr)
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// filesyncd's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
