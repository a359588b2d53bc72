//! The fetching side's bulk connections: one task owns them.
//!
//! The [`Dialer`] task owns, per member: the bulk address learnt from
//! identify, the connection (at most one, dialed by this node), the idle
//! streams kept for later batches (at most `fetch_streams_per_peer`), and
//! the backoff after failed attempts. Everything else talks to it through
//! a [`DialerHandle`] (commands on a bounded channel, oneshot replies):
//!
//! * `learn`: a member's bulk address; a connection is made at once, so
//!   the first fetch finds it up.
//! * `lease`: a stream for one request: an idle one, else a new one on the
//!   connection, else `None` (the batch then goes over libp2p-stream) and a
//!   connection attempt starts in the background unless one is under way
//!   or the peer is backing off.
//! * A [`Lease`] goes back to the pool with [`Lease::release`] once its
//!   whole response was read; dropped otherwise, it resets the stream (a
//!   fault, an I/O error, a cancelled fetch).
//!
//! The server's PeerId is checked by the TLS verifier (and once more here).
//! Connections to peers that stop being members are closed at once.

use super::endpoint::Transports;
use super::{tls, BulkConnection, Counters, CLOSE_NOT_MEMBER, CLOSE_SHUTDOWN, STREAM_CANCEL};
use crate::config::BulkConfig;
use crate::error::BulkError;
use crate::gate::Membership;
use libp2p::PeerId;
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Capacity of the dialer's command channel.
const COMMANDS: usize = 256;

type Streams = (SendStream, RecvStream);

pub(crate) enum Cmd {
    Learn {
        peer: PeerId,
        addr: SocketAddr,
    },
    Checkout {
        peer: PeerId,
        reply: oneshot::Sender<Checkout>,
    },
    Return {
        peer: PeerId,
        conn: usize,
        streams: Streams,
    },
    Connected {
        peer: PeerId,
        addr: SocketAddr,
        result: Result<Connection, ConnectError>,
    },
    Closed {
        peer: PeerId,
        conn: usize,
        reason: ConnectionError,
    },
    Connections {
        reply: oneshot::Sender<Vec<BulkConnection>>,
    },
    Shutdown,
}

pub(crate) enum Checkout {
    Idle(Lease),
    Open(Connection),
    Unavailable,
}

/// Why a bulk connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0}")]
    Config(#[from] BulkError),
    #[error("{0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("{0}")]
    Connection(#[from] ConnectionError),
    #[error("no answer within the connect timeout")]
    Timeout,
    #[error("the endpoint answered as another peer")]
    WrongPeer,
}

/// A stream borrowed for one request.
pub(crate) struct Lease {
    peer: PeerId,
    conn: usize,
    streams: Option<Streams>,
    home: mpsc::Sender<Cmd>,
}

impl Lease {
    fn new(peer: PeerId, conn: usize, streams: Streams, home: mpsc::Sender<Cmd>) -> Lease {
        Lease {
            peer,
            conn,
            streams: Some(streams),
            home,
        }
    }

    pub(crate) fn send(&mut self) -> Option<&mut SendStream> {
        self.streams.as_mut().map(|s| &mut s.0)
    }

    pub(crate) fn recv(&mut self) -> Option<&mut RecvStream> {
        self.streams.as_mut().map(|s| &mut s.1)
    }

    /// The whole response was read: the stream can carry the next request.
    pub(crate) fn release(mut self) {
        if let Some(streams) = self.streams.take() {
            // A full channel drops the streams: quinn finishes them, the
            // server's stream task ends at the request boundary.
            let _ = self.home.try_send(Cmd::Return {
                peer: self.peer,
                conn: self.conn,
                streams,
            });
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((mut send, mut recv)) = self.streams.take() {
            let _ = send.reset(STREAM_CANCEL);
            let _ = recv.stop(STREAM_CANCEL);
        }
    }
}

/// The cloneable side of the dialer.
#[derive(Clone)]
pub(crate) struct DialerHandle {
    cmds: mpsc::Sender<Cmd>,
    open_timeout: Duration,
}

impl DialerHandle {
    /// A stream to `peer` for one request, or `None` (no bulk connection
    /// up now: use libp2p-stream).
    pub(crate) async fn lease(&self, peer: PeerId) -> Option<Lease> {
        let (reply, rx) = oneshot::channel();
        self.cmds.send(Cmd::Checkout { peer, reply }).await.ok()?;
        match rx.await.ok()? {
            Checkout::Idle(lease) => Some(lease),
            Checkout::Open(conn) => {
                match tokio::time::timeout(self.open_timeout, conn.open_bi()).await {
                    Ok(Ok(streams)) => Some(Lease::new(
                        peer,
                        conn.stable_id(),
                        streams,
                        self.cmds.clone(),
                    )),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "cannot open a bulk stream: {e}");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no bulk stream credit in time");
                        None
                    }
                }
            }
            Checkout::Unavailable => None,
        }
    }

    /// `peer`'s bulk endpoint is at `addr` (from the event loop: never waits).
    pub(crate) fn learn(&self, peer: PeerId, addr: SocketAddr) {
        if self.cmds.try_send(Cmd::Learn { peer, addr }).is_err() {
            tracing::warn!(%peer, "bulk dialer busy: address dropped (learnt again at the next identify)");
        }
    }

    /// The bulk connections up.
    pub(crate) async fn connections(&self) -> Vec<BulkConnection> {
        let (reply, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Connections { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.cmds.try_send(Cmd::Shutdown);
    }
}

#[derive(Default)]
struct Peer {
    addr: Option<SocketAddr>,
    conn: Option<Connection>,
    idle: Vec<Streams>,
    connecting: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The task's state (see the module doc).
pub(crate) struct Dialer {
    endpoint: quinn::Endpoint,
    identity: Arc<tls::TlsIdentity>,
    transports: Transports,
    membership: Membership,
    config: BulkConfig,
    pool: usize,
    counters: Arc<Counters>,
    peers: HashMap<PeerId, Peer>,
    tx: mpsc::Sender<Cmd>,
    rx: mpsc::Receiver<Cmd>,
}

impl Dialer {
    pub(crate) fn new(
        endpoint: quinn::Endpoint,
        identity: Arc<tls::TlsIdentity>,
        transports: Transports,
        membership: Membership,
        config: BulkConfig,
        pool: usize,
        counters: Arc<Counters>,
    ) -> Dialer {
        let (tx, rx) = mpsc::channel(COMMANDS);
        Dialer {
            endpoint,
            identity,
            transports,
            membership,
            config,
            pool,
            counters,
            peers: HashMap::new(),
            tx,
            rx,
        }
    }
}

/// Spawns the dialer task.
pub(crate) fn spawn(dialer: Dialer) -> DialerHandle {
    let handle = DialerHandle {
        cmds: dialer.tx.clone(),
        open_timeout: dialer.config.connect_timeout,
    };
    tokio::spawn(dialer.run());
    handle
}

impl Dialer {
    async fn run(mut self) {
        let mut changes = self.membership.subscribe();
        let mut watching = true;
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None | Some(Cmd::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd),
                },
                changed = changes.changed(), if watching => match changed {
                    Ok(()) => self.prune(),
                    Err(_) => watching = false,
                },
            }
        }
        for p in self.peers.values() {
            if let Some(conn) = &p.conn {
                conn.close(CLOSE_SHUTDOWN, b"shutdown");
            }
        }
        tracing::debug!("bulk dialer stopped");
    }

    fn on_command(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Learn { peer, addr } => {
                if !self.membership.is_member(&peer) {
                    return;
                }
                let p = self.peers.entry(peer).or_default();
                if p.addr != Some(addr) {
                    tracing::debug!(%peer, %addr, "bulk endpoint announced");
                    p.addr = Some(addr);
                    p.failures = 0;
                    p.retry_at = None;
                }
                self.maybe_connect(peer, now);
            }
            Cmd::Checkout { peer, reply } => {
                let answer = match self.peers.get_mut(&peer) {
                    Some(p) => {
                        // Closed, and its watcher's news not here yet: no
                        // batch is sent to a dead connection.
                        if p.conn.as_ref().is_some_and(|c| c.close_reason().is_some()) {
                            p.conn = None;
                            p.idle.clear();
                        }
                        match (&p.conn, p.idle.pop()) {
                            (Some(conn), Some(streams)) => Checkout::Idle(Lease::new(
                                peer,
                                conn.stable_id(),
                                streams,
                                self.tx.clone(),
                            )),
                            (Some(conn), None) => Checkout::Open(conn.clone()),
                            (None, _) => Checkout::Unavailable,
                        }
                    }
                    None => Checkout::Unavailable,
                };
                if matches!(answer, Checkout::Unavailable) {
                    self.maybe_connect(peer, now);
                }
                let _ = reply.send(answer);
            }
            Cmd::Return {
                peer,
                conn,
                streams,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    let current = p.conn.as_ref().is_some_and(|c| c.stable_id() == conn);
                    if current && p.idle.len() < self.pool {
                        p.idle.push(streams);
                    }
                }
            }
            Cmd::Connected { peer, addr, result } => self.on_connected(peer, addr, result, now),
            Cmd::Closed { peer, conn, reason } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.conn.as_ref().is_none_or(|c| c.stable_id() != conn) {
                    return;
                }
                p.conn = None;
                p.idle.clear();
                if matches!(reason, ConnectionError::LocallyClosed) {
                    return;
                }
                tracing::debug!(%peer, "bulk connection closed: {reason}");
                // Not at once: a peer that closes on us (restart, not a
                // member in its view) is not dialed in a loop.
                p.failures += 1;
                p.retry_at = Some(now + backoff(&self.config, p.failures));
            }
            Cmd::Connections { reply } => {
                let _ = reply.send(
                    self.peers
                        .iter()
                        .filter_map(|(peer, p)| Some(BulkConnection::of(*peer, p.conn.as_ref()?)))
                        .collect(),
                );
            }
            Cmd::Shutdown => {}
        }
    }

    fn maybe_connect(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(addr) = p.addr else { return };
        if p.conn.is_some() || p.connecting || p.retry_at.is_some_and(|t| t > now) {
            return;
        }
        if !self.membership.is_member(&peer) {
            return;
        }
        p.connecting = true;
        let tx = self.tx.clone();
        let connecting = self.dial(peer, addr);
        let timeout = self.config.connect_timeout;
        tokio::spawn(async move {
            let result = match connecting {
                Ok(c) => match tokio::time::timeout(timeout, confirmed(c)).await {
                    Ok(r) => r,
                    Err(_) => Err(ConnectError::Timeout),
                },
                Err(e) => Err(e),
            };
            let _ = tx.send(Cmd::Connected { peer, addr, result }).await;
        });
    }

    fn dial(&self, peer: PeerId, addr: SocketAddr) -> Result<quinn::Connecting, ConnectError> {
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(self.identity.client_config(peer)?)
                .map_err(|e| BulkError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.transports.to(addr.ip()));
        Ok(self.endpoint.connect_with(config, addr, tls::SERVER_NAME)?)
    }

    fn on_connected(
        &mut self,
        peer: PeerId,
        addr: SocketAddr,
        result: Result<Connection, ConnectError>,
        now: Instant,
    ) {
        let member = self.membership.is_member(&peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            if let Ok(conn) = result {
                conn.close(CLOSE_NOT_MEMBER, b"not a member");
            }
            return;
        };
        p.connecting = false;
        let result = result.and_then(|conn| {
            if tls::peer_of(&conn) == Some(peer) {
                Ok(conn)
            } else {
                conn.close(CLOSE_NOT_MEMBER, b"wrong peer");
                Err(ConnectError::WrongPeer)
            }
        });
        match result {
            Ok(conn) if member => {
                Counters::bump(&self.counters.connects, 1);
                tracing::info!(%peer, %addr, rtt_us = conn.rtt().as_micros() as u64, "bulk connection up");
                p.failures = 0;
                p.retry_at = None;
                let id = conn.stable_id();
                let tx = self.tx.clone();
                let watched = conn.clone();
                tokio::spawn(async move {
                    let reason = watched.closed().await;
                    let _ = tx
                        .send(Cmd::Closed {
                            peer,
                            conn: id,
                            reason,
                        })
                        .await;
                });
                p.conn = Some(conn);
            }
            Ok(conn) => conn.close(CLOSE_NOT_MEMBER, b"not a member"),
            Err(e) => {
                Counters::bump(&self.counters.connect_failures, 1);
                p.failures += 1;
                let wait = backoff(&self.config, p.failures);
                p.retry_at = Some(now + wait);
                tracing::info!(%peer, %addr, retry_in_s = wait.as_secs(), "bulk endpoint unreachable, chunks go over libp2p: {e}");
            }
        }
    }

    /// Closes and forgets connections to peers that are no longer members.
    fn prune(&mut self) {
        let membership = &self.membership;
        self.peers.retain(|peer, p| {
            if membership.is_member(peer) {
                return true;
            }
            if let Some(conn) = &p.conn {
                tracing::info!(%peer, "no longer a member: bulk connection closed");
                conn.close(CLOSE_NOT_MEMBER, b"not a member");
            }
            false
        });
    }
}

/// The connection once the server confirmed the handshake. In TLS 1.3 the
/// client is done with its handshake before the server has checked the
/// client's certificate; the server's QUIC HANDSHAKE_DONE frame says it
/// accepted it (a refusal closes the connection instead).
async fn confirmed(connecting: quinn::Connecting) -> Result<Connection, ConnectError> {
    let conn = connecting.await?;
    while conn.stats().frame_rx.handshake_done == 0 {
        tokio::select! {
            reason = conn.closed() => return Err(reason.into()),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    Ok(conn)
}

/// `retry_min` doubled per failure after the first, at most `retry_max`.
fn backoff(config: &BulkConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    config
        .retry_min
        .saturating_mul(1u32 << doublings)
        .min(config.retry_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = BulkConfig {
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(60),
            ..BulkConfig::default()
        };
        let secs: Vec<u64> = (1..=6).map(|n| backoff(&c, n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(&c, u32::MAX).as_secs(), 60);
    }
}
