//! openraft's network over any [`RaftTransport`], and the wire format of Raft RPCs.
//!
//! # Wire format (version 1)
//! Every payload, request or response, is one version byte ([`WIRE_VERSION`])
//! followed by a postcard encoding:
//! - requests: `AppendEntriesRequest`, `VoteRequest`, `InstallSnapshotRequest`
//!   (one chunk), for [`RpcKind::ClientWrite`] a [`crate::command::Request`],
//!   for [`RpcKind::Admin`] a `node::AdminRequest`;
//! - responses: a [`Reply`]: `Ok(response)`, `Raft(error)` (the remote Raft
//!   node's typed error, e.g. `ForwardToLeader`) or `Failed(RemoteFailure)`
//!   (the node could not run the RPC: shutting down, undecodable request).
//!
//! A receiver refuses any other version byte (`RemoteFailure::BadRequest`), so
//! a future format bump is detected, never misread.
//!
//! # Snapshots
//! openraft 0.9 is used WITHOUT `generic-snapshot-data`: `SnapshotData` is a
//! `tokio::fs::File`, and openraft's chunked sender reads it in chunks of
//! `RaftConfig::snapshot_chunk_bytes` and calls [`RaftNetwork::install_snapshot`]
//! once per chunk; the receiver feeds each chunk to `Raft::install_snapshot`,
//! which writes it into a file from the state machine's
//! `begin_receiving_snapshot`. No snapshot is ever held whole in memory.
//!
//! # Errors → openraft retry behaviour
//! - transport `Unreachable` or remote `Unavailable` → `RPCError::Unreachable`:
//!   openraft backs off ([`RaftNetwork::backoff`], `RaftConfig::unreachable_backoff`);
//! - transport `Timeout`, or no reply within the RPC's hard TTL → `RPCError::Timeout`;
//! - transport `Network`, undecodable reply, remote `BadRequest` → `RPCError::Network`;
//! - a request above `max_rpc_bytes` → `RPCError::PayloadTooLarge` with a hint of
//!   how many entries would fit, so openraft splits the batch;
//! - a remote Raft error → `RPCError::RemoteError`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, Raft, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::transport::{RaftTransport, RpcKind, TransportError};
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// The format version carried as the first byte of every payload.
pub const WIRE_VERSION: u8 = 1;

/// A payload that could not be encoded or decoded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("empty payload")]
    Empty,
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("postcard: {0}")]
    Codec(String),
}

/// Encode `value` as one payload: version byte, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![WIRE_VERSION];
    postcard::to_io(value, &mut out).map_err(|e| WireError::Codec(e.to_string()))?;
    Ok(out)
}

/// Decode one payload written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    match bytes.split_first() {
        None => Err(WireError::Empty),
        Some((&WIRE_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| WireError::Codec(e.to_string()))
        }
        Some((&v, _)) => Err(WireError::Version(v)),
    }
}

/// The node an openraft request claims to come from: the node its vote
/// names (AppendEntries and InstallSnapshot: the leader; Vote: the
/// candidate). A transport binds it to the peer the request came from
/// (a member that claims another member's id is lying). Read from the vote
/// alone, which leads each of those requests on the wire, so the entries
/// are not decoded twice (`tests` checks that prefix for each kind). `None`
/// for the other kinds and for a payload that does not start with a vote.
pub fn claimed_sender(kind: RpcKind, payload: &[u8]) -> Option<NodeId> {
    match kind {
        RpcKind::AppendEntries | RpcKind::Vote | RpcKind::InstallSnapshot | RpcKind::PreVote => {}
        RpcKind::ClientWrite | RpcKind::Admin => return None,
    }
    match payload.split_first() {
        Some((&WIRE_VERSION, body)) => {
            let (vote, _) = postcard::take_from_bytes::<openraft::Vote<NodeId>>(body).ok()?;
            vote.leader_id().voted_for()
        }
        _ => None,
    }
}

/// Why a node could not run an RPC at all.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// Not running (starting, shutting down or stopped): try later.
    #[error("node unavailable: {0}")]
    Unavailable(String),
    /// The request could not be decoded or is not allowed.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// The response envelope of every RPC kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<T, E> {
    Ok(T),
    Raft(E),
    Failed(RemoteFailure),
}

/// Encode a reply; if that fails (it cannot for our types), encode the
/// failure instead, and as a last resort return an empty payload (which the
/// caller reads as a network error).
pub fn encode_reply<T: Serialize, E: Serialize>(reply: &Reply<T, E>) -> Vec<u8> {
    encode(reply).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode an RPC reply");
        let fallback: Reply<(), ()> = Reply::Failed(RemoteFailure::BadRequest(e.to_string()));
        encode(&fallback).unwrap_or_default()
    })
}

/// Encode a [`RemoteFailure`] reply (valid for every RPC kind).
pub fn failure_reply(failure: RemoteFailure) -> Vec<u8> {
    encode_reply::<(), ()>(&Reply::Failed(failure))
}

async fn reply_of<T, F>(payload: &[u8], run: impl FnOnce(T) -> F) -> Vec<u8>
where
    T: DeserializeOwned,
    F: std::future::Future<Output = Vec<u8>>,
{
    match decode::<T>(payload) {
        Ok(req) => run(req).await,
        Err(e) => failure_reply(RemoteFailure::BadRequest(e.to_string())),
    }
}

fn raft_reply<T: Serialize, E: Serialize>(res: Result<T, E>) -> Vec<u8> {
    match res {
        Ok(v) => encode_reply::<T, E>(&Reply::Ok(v)),
        Err(e) => encode_reply::<T, E>(&Reply::Raft(e)),
    }
}

/// Serve one incoming openraft RPC (AppendEntries, Vote, InstallSnapshot) on
/// `raft`. Returns `None` for [`RpcKind::ClientWrite`] and [`RpcKind::Admin`],
/// which the node serves.
pub async fn serve_raft_rpc(
    raft: &Raft<TypeConfig>,
    kind: RpcKind,
    payload: &[u8],
    leader_contact: &(dyn Fn() + Sync),
) -> Option<Vec<u8>> {
    let out =
        match kind {
            RpcKind::AppendEntries => reply_of(
                payload,
                |req: AppendEntriesRequest<TypeConfig>| async move {
                    let res = raft.append_entries(req).await;
                    if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                        leader_contact();
                    }
                    raft_reply(res)
                },
            )
            .await,
            RpcKind::Vote => {
                reply_of(payload, |req: VoteRequest<NodeId>| async move {
                    raft_reply(raft.vote(req).await)
                })
                .await
            }
            RpcKind::InstallSnapshot => {
                reply_of(
                    payload,
                    |req: InstallSnapshotRequest<TypeConfig>| async move {
                        let sent = req.vote;
                        let res = raft.install_snapshot(req).await;
                        if matches!(&res, Ok(r) if r.vote <= sent) {
                            leader_contact();
                        }
                        raft_reply(res)
                    },
                )
                .await
            }
            RpcKind::ClientWrite | RpcKind::Admin | RpcKind::PreVote => return None,
        };
    Some(out)
}

/// Call `kind` on `target` through `transport`: encode, cap, send with a
/// deadline, decode the [`Reply`]. Shared by openraft's network and the
/// node's write forwarding.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn call_rpc<Tr, Req, Resp, E>(
    transport: &Tr,
    from: NodeId,
    target: NodeId,
    info: &NodeInfo,
    kind: RpcKind,
    req: &Req,
    max_rpc_bytes: usize,
    deadline: Duration,
) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
where
    Tr: RaftTransport,
    Req: Serialize,
    Resp: DeserializeOwned,
    E: Error + DeserializeOwned,
{
    let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    if payload.len() > max_rpc_bytes {
        // openraft only exposes an entries hint; `append_entries` re-hints
        // with a real count, other kinds treat this as a network error.
        return Err(RPCError::PayloadTooLarge(
            PayloadTooLarge::new_entries_hint(1),
        ));
    }
    let sent = tokio::time::timeout(deadline, transport.call(target, info, kind, payload)).await;
    let bytes = match sent {
        Err(_elapsed) => return Err(rpc_timeout(kind, from, target, deadline)),
        Ok(Err(e)) => return Err(map_transport_error(e, kind, from, target, deadline)),
        Ok(Ok(bytes)) => bytes,
    };
    if bytes.len() > max_rpc_bytes {
        let e = TransportError::PayloadTooLarge {
            size: bytes.len(),
            max: max_rpc_bytes,
        };
        return Err(RPCError::Network(NetworkError::new(&e)));
    }
    match decode::<Reply<Resp, E>>(&bytes) {
        Ok(Reply::Ok(resp)) => Ok(resp),
        Ok(Reply::Raft(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
            target,
            info.clone(),
            e,
        ))),
        Ok(Reply::Failed(f @ RemoteFailure::Unavailable(_))) => {
            Err(RPCError::Unreachable(Unreachable::new(&f)))
        }
        Ok(Reply::Failed(f @ RemoteFailure::BadRequest(_))) => {
            Err(RPCError::Network(NetworkError::new(&f)))
        }
        Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
    }
}

fn rpc_types(kind: RpcKind) -> RPCTypes {
    match kind {
        RpcKind::AppendEntries | RpcKind::ClientWrite | RpcKind::Admin => RPCTypes::AppendEntries,
        RpcKind::Vote | RpcKind::PreVote => RPCTypes::Vote,
        RpcKind::InstallSnapshot => RPCTypes::InstallSnapshot,
    }
}

fn rpc_timeout<E: Error>(
    kind: RpcKind,
    from: NodeId,
    target: NodeId,
    after: Duration,
) -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Timeout(Timeout {
        action: rpc_types(kind),
        id: from,
        target,
        timeout: after,
    })
}

/// How a transport failure maps onto openraft's retry classes (module doc).
pub fn map_transport_error<E: Error>(
    err: TransportError,
    kind: RpcKind,
    from: NodeId,
    target: NodeId,
    deadline: Duration,
) -> RPCError<NodeId, NodeInfo, E> {
    match err {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&err)),
        TransportError::Timeout { .. } => rpc_timeout(kind, from, target, deadline),
        TransportError::PayloadTooLarge { .. } => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1))
        }
        TransportError::Network { .. } => RPCError::Network(NetworkError::new(&err)),
    }
}

/// Builds one [`Connection`] per target for openraft.
pub struct NetworkFactory<T> {
    id: NodeId,
    transport: Arc<T>,
    max_rpc_bytes: usize,
    backoff: Duration,
}

impl<T: RaftTransport> NetworkFactory<T> {
    /// The network of node `id`, refusing requests above `max_rpc_bytes` and
    /// waiting `backoff` between retries to an unreachable peer.
    pub fn new(id: NodeId, transport: Arc<T>, max_rpc_bytes: usize, backoff: Duration) -> Self {
        NetworkFactory {
            id,
            transport,
            max_rpc_bytes,
            backoff,
        }
    }
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection<T> {
        Connection {
            id: self.id,
            target,
            info: node.clone(),
            transport: Arc::clone(&self.transport),
            max_rpc_bytes: self.max_rpc_bytes,
            backoff: self.backoff,
        }
    }
}

/// openraft's client for one target node.
pub struct Connection<T> {
    id: NodeId,
    target: NodeId,
    info: NodeInfo,
    transport: Arc<T>,
    max_rpc_bytes: usize,
    backoff: Duration,
}

impl<T: RaftTransport> Connection<T> {
    async fn rpc<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        call_rpc(
            &*self.transport,
            self.id,
            self.target,
            &self.info,
            kind,
            req,
            self.max_rpc_bytes,
            option.hard_ttl(),
        )
        .await
    }
}

/// How many entries of a batch of `entries` that encoded to `size` bytes fit
/// in `max` bytes (at least 1; openraft gives up on a single entry).
fn entries_hint(entries: usize, size: usize, max: usize) -> u64 {
    let fit = (entries as u128 * max as u128 / size.max(1) as u128) as u64;
    fit.clamp(1, (entries as u64).saturating_sub(1).max(1))
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for Connection<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let res = self.rpc(RpcKind::AppendEntries, &rpc, &option).await;
        if let Err(RPCError::PayloadTooLarge(_)) = &res {
            // Re-hint in entries: openraft splits AppendEntries by count.
            let size = encode(&rpc).map(|b| b.len()).unwrap_or(usize::MAX);
            let hint = entries_hint(rpc.entries.len(), size, self.max_rpc_bytes);
            tracing::debug!(target = self.target, size, hint, "append_entries too large");
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RpcKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(RpcKind::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}

#[cfg(test)]
mod tests;
