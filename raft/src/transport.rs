//! The seam between Raft and the wire: opaque request bytes in, response bytes out.
//!
//! `raft` knows nothing of libp2p. A transport moves one request payload to a
//! node id and brings back that node's response payload; it never looks inside.
//! The encoding of both payloads (a version byte, then postcard) belongs to
//! [`crate::network`].
//!
//! Sending side: [`RaftTransport::call`]. A libp2p request-response client
//! implements it directly: frame `(kind.as_u8(), payload)` as the request, the
//! reply bytes are the response.
//!
//! Receiving side: the transport hands each incoming request to an
//! [`RpcHandler`] (in practice `RaftNode`, see [`crate::node`]), which always
//! answers with bytes: failures that the caller must see (node shutting down,
//! undecodable request, Raft errors) are encoded *inside* the response, so a
//! transport only ever reports its own failures.
//!
//! Size caps: a transport must refuse a request or response larger than its
//! configured cap (at most [`HARD_MAX_RPC_BYTES`]) with
//! [`TransportError::PayloadTooLarge`] rather than allocate it; the network
//! layer checks its own cap (`RaftConfig::max_rpc_bytes`) before sending so
//! that openraft can split the batch.
//!
//! Failure classes, which decide how openraft retries (see `network`):
//! - [`TransportError::Unreachable`]: no route, peer down or partitioned;
//!   openraft backs off before retrying.
//! - [`TransportError::Timeout`]: the request may or may not have been
//!   processed; the caller retries later (idempotency is the caller's job).
//! - [`TransportError::Network`]: a transient failure; retry at once.

pub mod mem;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{NodeId, NodeInfo};

/// Largest payload any transport may carry, whatever it is configured to.
pub const HARD_MAX_RPC_BYTES: usize = 64 * 1024 * 1024;

/// What a request payload is. Transports carry it beside the payload (e.g.
/// as a leading byte) and hand it back to [`RpcHandler::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RpcKind {
    /// openraft AppendEntries (also heartbeats).
    AppendEntries = 1,
    /// openraft RequestVote.
    Vote = 2,
    /// One chunk of an openraft InstallSnapshot stream.
    InstallSnapshot = 3,
    /// A client write forwarded by a follower to the leader.
    ClientWrite = 4,
    /// A membership change forwarded to the leader.
    Admin = 5,
    /// "Would you vote for me?", asked before an election
    /// (`node::prevote`); answered without changing any state.
    PreVote = 6,
}

impl RpcKind {
    /// Every kind, in wire order.
    pub const ALL: [RpcKind; 6] = [
        RpcKind::AppendEntries,
        RpcKind::Vote,
        RpcKind::InstallSnapshot,
        RpcKind::ClientWrite,
        RpcKind::Admin,
        RpcKind::PreVote,
    ];

    /// The kind's wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The kind for a wire byte, if any.
    pub fn from_u8(b: u8) -> Option<RpcKind> {
        RpcKind::ALL.into_iter().find(|k| k.as_u8() == b)
    }
}

impl std::fmt::Display for RpcKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            RpcKind::AppendEntries => "append_entries",
            RpcKind::Vote => "vote",
            RpcKind::InstallSnapshot => "install_snapshot",
            RpcKind::ClientWrite => "client_write",
            RpcKind::Admin => "admin",
            RpcKind::PreVote => "pre_vote",
        };
        f.write_str(s)
    }
}

/// A failure of the transport itself (never of the remote Raft node).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TransportError {
    /// The peer cannot be reached now (down, unknown, partitioned).
    #[error("node {target} unreachable: {reason}")]
    Unreachable { target: NodeId, reason: String },
    /// No response in time; the request may or may not have been processed.
    #[error("rpc to node {target} timed out")]
    Timeout { target: NodeId },
    /// A payload exceeded the transport's cap.
    #[error("payload of {size} bytes exceeds the cap of {max} bytes")]
    PayloadTooLarge { size: usize, max: usize },
    /// Any other transient failure (stream reset, ...); retrying at once is fine.
    #[error("network failure to node {target}: {reason}")]
    Network { target: NodeId, reason: String },
}

/// Sends opaque request bytes to a node and returns its response bytes.
///
/// Implementations must be cheap to share (`&self`), must not block, and must
/// enforce their payload cap in both directions.
pub trait RaftTransport: Send + Sync + 'static {
    /// Deliver `payload` (of kind `kind`) to `target`, reachable as
    /// `target_info`, and return the handler's response bytes.
    fn call(
        &self,
        target: NodeId,
        target_info: &NodeInfo,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

impl<T: RaftTransport> RaftTransport for Arc<T> {
    fn call(
        &self,
        target: NodeId,
        target_info: &NodeInfo,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        (**self).call(target, target_info, kind, payload)
    }
}

/// The receiving side: answers one incoming request with response bytes.
///
/// Implemented by `RaftNode`; a transport's server loop calls it for every
/// request it accepts (after checking the payload cap).
pub trait RpcHandler: Send + Sync + 'static {
    /// Answer a request. Never fails at this level: errors are encoded in the
    /// returned bytes.
    fn handle(&self, kind: RpcKind, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_bytes_round_trip() {
        for k in RpcKind::ALL {
            assert_eq!(RpcKind::from_u8(k.as_u8()), Some(k));
        }
        assert_eq!(RpcKind::from_u8(0), None);
        assert_eq!(RpcKind::from_u8(7), None);
        assert_eq!(RpcKind::ClientWrite.to_string(), "client_write");
    }
}
