//! The serving side of the bulk endpoint.
//!
//! * Handshakes: at most `max_handshakes` at once (more are refused
//!   unanswered); the TLS verifier admits members only; once the
//!   handshake is done the PeerId is read from the certificate and its
//!   standing checked again; then a global and a per-peer connection
//!   permit (`max_connections`, `max_connections_per_peer`), else the
//!   connection is closed `BUSY`.
//! * A connection task accepts streams (at most
//!   `max_streams_per_connection` open, a QUIC limit the peer sees) and
//!   wakes on every membership change: a peer that is no longer a member
//!   has its connection closed (`NOT_MEMBER`), which resets its streams.
//! * A stream task serves one request after another. It waits for the
//!   first byte of a request without a deadline (the fetcher keeps idle
//!   streams for its next batches; the connection's keep-alive and idle
//!   timeout bound a dead peer), then reads the rest of the request within
//!   `chunk_io_timeout`, checks the peer's standing again, takes the same
//!   per-peer and global permits as libp2p-stream requests, and writes the
//!   frames ([`crate::chunks::serve::write_frames`]: zstd where it pays on
//!   this peer's link, from the compressor and frame cache both paths
//!   share). A malformed request resets the stream; a finished stream
//!   (FIN at a request boundary) ends it.

use super::{tls, Counters, CLOSE_BUSY, CLOSE_NOT_MEMBER, STREAM_PROTOCOL};
use crate::chunks::serve::{write_frames, FrameSink, ServeShared};
use crate::chunks::wire::{self, Frame};
use crate::chunks::PerPeer;
use crate::config::BulkConfig;
use crate::gate::Standing;
use bytes::Bytes;
use libp2p::PeerId;
use quinn::{Connection, RecvStream, SendStream};
use std::io;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct ServerShared {
    /// Server configurations per path profile (`super::endpoint::Transports`).
    pub network: Arc<quinn::ServerConfig>,
    pub loopback: Arc<quinn::ServerConfig>,
    /// Provider, limits, membership and the serving permits, shared with
    /// the libp2p-stream server.
    pub serve: Arc<ServeShared>,
    pub config: BulkConfig,
    pub connections: Arc<Semaphore>,
    pub per_peer: PerPeer,
    pub handshakes: Arc<Semaphore>,
    pub counters: Arc<Counters>,
}

impl ServerShared {
    fn is_member(&self, peer: &PeerId) -> bool {
        self.serve.membership.standing(peer, Instant::now()) == Standing::Member
    }
}

#[derive(Debug, thiserror::Error)]
enum AdmitError {
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("handshake timed out")]
    Timeout,
    #[error("no libp2p certificate")]
    NoPeerId,
    #[error("{0} is not a member")]
    NotMember(PeerId),
    #[error("{0} is over the bulk connection caps")]
    Busy(PeerId),
}

/// Accepts connections until the endpoint is closed.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<ServerShared>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(handshake) = shared.handshakes.clone().try_acquire_owned() else {
            Counters::bump(&shared.counters.refused, 1);
            tracing::debug!(remote = %incoming.remote_address(), "bulk: too many handshakes at once, refused");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match admit(&shared, incoming).await {
                Ok((conn, peer, permits)) => {
                    drop(handshake);
                    serve_connection(shared, conn, peer, permits).await;
                }
                Err(e) => {
                    Counters::bump(&shared.counters.refused, 1);
                    tracing::debug!(%remote, "bulk connection refused: {e}");
                }
            }
        });
    }
    tracing::debug!("bulk endpoint closed: accept loop stopped");
}

async fn admit(
    shared: &ServerShared,
    incoming: quinn::Incoming,
) -> Result<(Connection, PeerId, [OwnedSemaphorePermit; 2]), AdmitError> {
    let profile = if incoming.remote_address().ip().to_canonical().is_loopback() {
        shared.loopback.clone()
    } else {
        shared.network.clone()
    };
    let connecting = incoming.accept_with(profile)?;
    let conn = tokio::time::timeout(shared.config.connect_timeout, connecting)
        .await
        .map_err(|_| AdmitError::Timeout)??;
    let Some(peer) = tls::peer_of(&conn) else {
        conn.close(CLOSE_NOT_MEMBER, b"no certificate");
        return Err(AdmitError::NoPeerId);
    };
    if !shared.is_member(&peer) {
        conn.close(CLOSE_NOT_MEMBER, b"not a member");
        return Err(AdmitError::NotMember(peer));
    }
    let global = shared.connections.clone().try_acquire_owned();
    let local = shared.per_peer.get(peer).try_acquire_owned();
    match (global, local) {
        (Ok(g), Ok(l)) => Ok((conn, peer, [g, l])),
        _ => {
            conn.close(CLOSE_BUSY, b"too many bulk connections");
            Err(AdmitError::Busy(peer))
        }
    }
}

/// Accepts the connection's streams until it closes or its peer stops
/// being a member.
async fn serve_connection(
    shared: Arc<ServerShared>,
    conn: Connection,
    peer: PeerId,
    _permits: [OwnedSemaphorePermit; 2],
) {
    let mut changes = shared.serve.membership.subscribe();
    tracing::debug!(%peer, remote = %conn.remote_address(), "bulk connection admitted");
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() || !shared.is_member(&peer) {
                    cut_off(&shared, &conn, peer);
                    return;
                }
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let shared = shared.clone();
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_stream(&shared, &conn, peer, send, recv).await {
                            tracing::debug!(%peer, "bulk stream ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(%peer, "bulk connection closed: {e}");
                    return;
                }
            }
        }
    }
}

fn cut_off(shared: &ServerShared, conn: &Connection, peer: PeerId) {
    if conn.close_reason().is_none() {
        Counters::bump(&shared.counters.cut_off, 1);
        tracing::info!(%peer, "no longer a member: bulk connection closed");
        conn.close(CLOSE_NOT_MEMBER, b"not a member");
    }
}

impl FrameSink for SendStream {
    async fn write_frame(&mut self, frame: Frame) -> io::Result<()> {
        // The body is handed to quinn as it is (no copy).
        let mut chunks = [Bytes::copy_from_slice(&frame.header.encode()), frame.body];
        self.write_all_chunks(&mut chunks)
            .await
            .map_err(io::Error::from)
    }
}

fn read_error(e: quinn::ReadExactError) -> io::Error {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => io::ErrorKind::UnexpectedEof.into(),
        quinn::ReadExactError::ReadError(e) => e.into(),
    }
}

fn timed_out<T>(r: Result<T, tokio::time::error::Elapsed>) -> io::Result<T> {
    r.map_err(|_| io::Error::from(io::ErrorKind::TimedOut))
}

/// Serves request after request on one stream.
async fn serve_stream(
    shared: &ServerShared,
    conn: &Connection,
    peer: PeerId,
    mut send: SendStream,
    mut recv: RecvStream,
) -> io::Result<()> {
    let limits = &shared.serve.limits;
    let t = limits.chunk_io_timeout;
    loop {
        let mut head = [0u8; wire::REQUEST_HEAD_LEN];
        match recv.read(&mut head[..1]).await.map_err(io::Error::from)? {
            None => {
                // The fetcher is done with this stream.
                let _ = send.finish();
                return Ok(());
            }
            Some(0) => continue,
            Some(_) => {}
        }
        timed_out(tokio::time::timeout(t, recv.read_exact(&mut head[1..])).await)?
            .map_err(read_error)?;
        let (accept_zstd, count) =
            match wire::decode_request_head(head, limits.max_chunks_per_request) {
                Ok(v) => v,
                Err(e) => {
                    let _ = send.reset(STREAM_PROTOCOL);
                    let _ = recv.stop(STREAM_PROTOCOL);
                    return Err(e.into());
                }
            };
        let mut raw = vec![0u8; count * 32];
        timed_out(tokio::time::timeout(t, recv.read_exact(&mut raw)).await)?.map_err(read_error)?;
        if !shared.is_member(&peer) {
            cut_off(shared, conn, peer);
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "no longer a member",
            ));
        }
        let _permits = shared.serve.permits(peer).await?;
        Counters::bump(&shared.counters.served_requests, 1);
        write_frames(
            &shared.serve,
            peer,
            wire::decode_hashes(&raw),
            accept_zstd,
            &mut send,
        )
        .await?;
    }
}
