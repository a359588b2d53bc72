//! JSON bodies of the control API, shared by the server and the CLI.
//! Node ids are 16-digit lowercase hex strings (as in `<data>/node_id`):
//! JSON numbers cannot carry a u64 exactly in every client.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub peer_id: String,
    pub addr: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Connected to this node (itself: true); `None` when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// How this node's connection to the member goes: `direct`, or
    /// `relayed` through another member (behind NAT). Absent while not
    /// connected, and for this node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// This node's reachability (NAT traversal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatStatus {
    /// AutoNAT's answer with members as servers: `public`, `private` or
    /// `unknown`.
    pub reachability: String,
    /// Addresses members observe this node at, most observers first.
    #[serde(default)]
    pub observed: Vec<String>,
    /// Relay circuit addresses this node listens on (while private).
    #[serde(default)]
    pub relayed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub peer_id: String,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub cluster_id: Option<String>,
    /// The cluster key's fingerprint, what `--cluster-fingerprint` pins
    /// (`None` until the cluster has a key: its first `token create`).
    #[serde(default)]
    pub cluster_fingerprint: Option<String>,
    /// Root of the cluster Merkle tree, hex.
    pub cluster_root: String,
    pub members: Vec<Member>,
    /// The synced directory (`None`: sync not running).
    #[serde(default)]
    pub dir: Option<String>,
    /// Root of what this node holds (hex), built like the cluster root.
    #[serde(default)]
    pub local_root: Option<String>,
    /// The files on disk equal the committed tree at the applied index.
    #[serde(default)]
    pub in_sync: bool,
    /// The sync service's state (`None`: not running).
    #[serde(default)]
    pub sync: Option<crate::daemon::sync::SyncStatus>,
    /// Reachability behind NAT (`None`: no p2p client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatStatus>,
    /// The bulk chunk endpoint (`None`: no p2p client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkStatus>,
}

/// The bulk chunk endpoint: where it listens and how much went over it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkStatus {
    /// `IP:PORT` it is bound to; `None`: off (`--no-bulk`, or the bind
    /// failed), chunks travel over the swarm only.
    pub addr: Option<String>,
    /// The port members are told.
    pub advertised_port: Option<u16>,
    /// Members this node fetches from over bulk connections (peer ids).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Chunk requests this node sent over bulk streams, and over the swarm.
    pub requests_bulk: u64,
    pub requests_swarm: u64,
    /// Verified bytes received over bulk streams.
    pub bytes_bulk: u64,
    /// Requests this node's endpoint served, and connections it refused.
    pub served_requests: u64,
    pub refused: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub ttl_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    /// Expiry by the leader's clock, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The cluster key's fingerprint, for `--cluster-fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_fingerprint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
}

/// Formats a node id as the API shows it.
pub fn node_hex(id: u64) -> String {
    format!("{id:016x}")
}
