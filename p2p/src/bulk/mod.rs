//! The bulk endpoint: chunk transfer on a QUIC endpoint of its own, beside
//! the libp2p swarm.
//!
//! # Goals
//! * Move chunks at close to what the machine can copy: AES-GCM, large
//!   datagrams where the path carries them (MTU discovery up to ~64 KB),
//!   large windows and socket buffers, and long-lived streams that carry
//!   one request after another with no negotiation.
//! * Keep Raft off the bulk path: Raft stays on the swarm's connection, so
//!   chunk bytes share neither its flow control nor its congestion window.
//! * The same rules as `/filesyncd/chunks/1` on libp2p: members only,
//!   the same wire format, bounds and fault accounting, every chunk
//!   verified before it is handed on.
//!
//! # Non-goals
//! * NAT traversal: a peer whose bulk port cannot be reached (NAT, relay,
//!   firewall, an older version) is served over libp2p-stream, which has
//!   relays and hole punching.
//! * Anything but chunks: no Raft, no control messages, no joins.
//!
//! # Flow
//! ```text
//! node A (fetcher)                                  node B (holder)
//!  identify from B: agent "… bulk-quic/7401"
//!  dial <IP of B's libp2p connection>:7401  ──TLS 1.3, ALPN filesyncd-bulk/1──▶
//!    checks B's certificate names B                 checks A's certificate names a member
//!  open bidi stream (kept for later batches)
//!  request (chunks/1 wire format)            ──▶    member again? permits (shared with libp2p)
//!                                            ◀──    count frames, in request order
//!  next request on the same stream           ──▶    …
//! ```
//! * Discovery ([`announce`], [`announced_port`]): the port rides in the
//!   identify agent version (members only); the IP is the one the swarm's
//!   connection to that member comes from, so a member can point us only
//!   at its own address. Relayed connections get no bulk dial.
//! * Admission ([`tls`], [`server`]): mutual TLS with the libp2p
//!   certificates; the server's verifier admits members only, the accept
//!   loop checks again, each request checks again, and a connection whose
//!   peer stops being a member is closed at once (the shared
//!   [`crate::gate::Membership`] tells subscribers of every change).
//! * Fetching ([`dialer`], `crate::chunks::stream`): one task owns the
//!   connections and idle streams; a batch borrows a stream (or opens one
//!   on the connection), and gives it back only if it read the whole
//!   response. With no connection up, the batch goes over libp2p-stream
//!   at once and a connection is made in the background (failures back
//!   off from `retry_min` to `retry_max`).

pub(crate) mod dialer;
pub(crate) mod endpoint;
pub(crate) mod server;
pub(crate) mod tls;

pub use tls::ALPN;

use crate::chunks::serve::ServeShared;
use crate::chunks::PerPeer;
use crate::config::P2pConfig;
use crate::error::BulkError;
use crate::gate::Membership;
use libp2p::identity::Keypair;
use libp2p::PeerId;
use quinn::VarInt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Token of the identify agent version that announces the bulk port.
const AGENT_TOKEN: &str = "bulk-quic/";

/// Application close codes of bulk connections.
pub(crate) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
pub(crate) const CLOSE_NOT_MEMBER: VarInt = VarInt::from_u32(1);
pub(crate) const CLOSE_BUSY: VarInt = VarInt::from_u32(2);
/// Stream reset / stop codes.
pub(crate) const STREAM_CANCEL: VarInt = VarInt::from_u32(1);
pub(crate) const STREAM_PROTOCOL: VarInt = VarInt::from_u32(2);

/// `agent` with the bulk port announced.
pub(crate) fn announce(agent: &str, port: u16) -> String {
    format!("{agent} {AGENT_TOKEN}{port}")
}

/// The bulk port a member announced in its identify agent version.
pub fn announced_port(agent: &str) -> Option<u16> {
    agent
        .split_whitespace()
        .find_map(|t| t.strip_prefix(AGENT_TOKEN)?.parse::<u16>().ok())
        .filter(|p| *p != 0)
}

/// Counters of both chunk paths, shared by the fetcher and the server.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests_bulk: AtomicU64,
    pub requests_libp2p: AtomicU64,
    pub chunks_bulk: AtomicU64,
    pub bytes_bulk: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub served_requests: AtomicU64,
    pub refused: AtomicU64,
    pub cut_off: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the bulk endpoint did so far ([`crate::P2pClient::bulk_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkStats {
    /// Where the endpoint is bound (`None`: disabled).
    pub local_addr: Option<SocketAddr>,
    /// The port members are told.
    pub advertised_port: Option<u16>,
    /// SO_RCVBUF / SO_SNDBUF as the kernel reports them (Linux: twice
    /// what it granted).
    pub recv_buffer: usize,
    pub send_buffer: usize,
    /// Chunk requests this node sent over bulk streams.
    pub requests_bulk: u64,
    /// Chunk requests this node sent over libp2p-stream.
    pub requests_libp2p: u64,
    /// Verified chunks, and their bytes, received over bulk streams.
    pub chunks_bulk: u64,
    pub bytes_bulk: u64,
    /// Bulk connections this node made, and attempts that failed.
    pub connects: u64,
    pub connect_failures: u64,
    /// Requests served on this node's bulk endpoint.
    pub served_requests: u64,
    /// Inbound bulk connections refused (non-member, over a cap, failed
    /// handshake).
    pub refused: u64,
    /// Bulk connections closed because their peer stopped being a member.
    pub cut_off: u64,
}

/// One bulk connection this node dialed ([`crate::P2pClient::bulk_connections`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkConnection {
    pub peer: PeerId,
    pub remote: SocketAddr,
    /// Smoothed round-trip time.
    pub rtt: std::time::Duration,
    /// UDP payload size in use (what MTU discovery found so far).
    pub mtu: u16,
    /// Congestion window, bytes.
    pub cwnd: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    pub sent_packets: u64,
}

impl BulkConnection {
    pub(crate) fn of(peer: PeerId, conn: &quinn::Connection) -> BulkConnection {
        let path = conn.stats().path;
        BulkConnection {
            peer,
            remote: conn.remote_address(),
            rtt: path.rtt,
            mtu: path.current_mtu,
            cwnd: path.cwnd,
            lost_packets: path.lost_packets,
            congestion_events: path.congestion_events,
            sent_packets: path.sent_packets,
        }
    }
}

/// The running endpoint: a handle for the client and the event loop.
#[derive(Clone)]
pub(crate) struct Bulk {
    endpoint: quinn::Endpoint,
    pub dialer: dialer::DialerHandle,
    local: SocketAddr,
    advertised_port: u16,
    recv_buffer: usize,
    send_buffer: usize,
}

impl Bulk {
    /// Binds the endpoint, starts its accept loop and its dialer. `None`
    /// when disabled, or when no listen address gives it an IP.
    pub(crate) fn start(
        keypair: &Keypair,
        config: &P2pConfig,
        membership: &Membership,
        serve: Arc<ServeShared>,
        counters: Arc<Counters>,
    ) -> Result<Option<Bulk>, BulkError> {
        let bulk = &config.bulk;
        if !bulk.enabled {
            return Ok(None);
        }
        let plan = match endpoint::bind_plan(&config.listen, bulk) {
            Ok(plan) => plan,
            Err(BulkError::NoListenIp) if bulk.port.is_none() => {
                tracing::warn!("no IP listen address: bulk endpoint off, chunks go over libp2p");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let identity = Arc::new(tls::TlsIdentity::new(keypair, bulk)?);
        let socket = endpoint::open(plan, bulk)?;
        let transports = endpoint::Transports::new(bulk, socket.recv_buffer)?;
        let crypto = Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(
                identity.server_config(membership.clone())?,
            )
            .map_err(|e| BulkError::Quic(e.to_string()))?,
        );
        // One server configuration per path profile (the accept loop picks
        // by the remote's IP); the endpoint's default is the network one.
        let server_config = |remote: std::net::IpAddr| {
            let mut c = quinn::ServerConfig::with_crypto(crypto.clone());
            c.transport_config(transports.to(remote))
                .migration(false)
                .max_incoming(bulk.max_handshakes);
            c
        };
        let network = server_config(std::net::Ipv4Addr::UNSPECIFIED.into());
        let loopback = Arc::new(server_config(std::net::Ipv4Addr::LOCALHOST.into()));
        let (local, recv_buffer, send_buffer) =
            (socket.local, socket.recv_buffer, socket.send_buffer);
        let endpoint = endpoint::endpoint(socket, bulk, network.clone())?;
        tokio::spawn(server::accept_loop(
            endpoint.clone(),
            Arc::new(server::ServerShared {
                network: Arc::new(network),
                loopback,
                serve,
                config: bulk.clone(),
                connections: Arc::new(Semaphore::new(bulk.max_connections)),
                per_peer: PerPeer::new(bulk.max_connections_per_peer),
                handshakes: Arc::new(Semaphore::new(bulk.max_handshakes)),
                counters: counters.clone(),
            }),
        ));
        let dialer = dialer::spawn(dialer::Dialer::new(
            endpoint.clone(),
            identity,
            transports,
            membership.clone(),
            bulk.clone(),
            config.limits.fetch_streams_per_peer,
            counters,
        ));
        Ok(Some(Bulk {
            endpoint,
            dialer,
            local,
            advertised_port: bulk.advertise_port.unwrap_or(local.port()),
            recv_buffer,
            send_buffer,
        }))
    }

    pub(crate) fn advertised_port(&self) -> u16 {
        self.advertised_port
    }

    /// A member announced `port` and its swarm connection comes from `ip`.
    pub(crate) fn learn(&self, peer: PeerId, addr: SocketAddr) {
        self.dialer.learn(peer, addr);
    }

    /// Closes every bulk connection and the endpoint; stops the dialer.
    pub(crate) fn shutdown(&self) {
        self.dialer.shutdown();
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
    }

    pub(crate) fn fill(&self, stats: &mut BulkStats) {
        stats.local_addr = Some(self.local);
        stats.advertised_port = Some(self.advertised_port);
        stats.recv_buffer = self.recv_buffer;
        stats.send_buffer = self.send_buffer;
    }
}

/// The counters as a [`BulkStats`] (addresses filled by [`Bulk::fill`]).
pub(crate) fn stats(counters: &Counters, bulk: Option<&Bulk>) -> BulkStats {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut s = BulkStats {
        requests_bulk: get(&counters.requests_bulk),
        requests_libp2p: get(&counters.requests_libp2p),
        chunks_bulk: get(&counters.chunks_bulk),
        bytes_bulk: get(&counters.bytes_bulk),
        connects: get(&counters.connects),
        connect_failures: get(&counters.connect_failures),
        served_requests: get(&counters.served_requests),
        refused: get(&counters.refused),
        cut_off: get(&counters.cut_off),
        ..BulkStats::default()
    };
    if let Some(b) = bulk {
        b.fill(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_rides_in_the_agent_version() {
        let agent = announce("filesyncd/0.1.0", 7401);
        assert_eq!(agent, "filesyncd/0.1.0 bulk-quic/7401");
        assert_eq!(announced_port(&agent), Some(7401));
        assert_eq!(announced_port("filesyncd/0.1.0"), None);
        assert_eq!(announced_port("filesyncd/0.1.0 bulk-quic/0"), None);
        assert_eq!(announced_port("filesyncd/0.1.0 bulk-quic/99999"), None);
        assert_eq!(announced_port("x bulk-quic/12 bulk-quic/13"), Some(12));
    }
}
