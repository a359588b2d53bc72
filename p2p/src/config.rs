//! Configuration: protocol limits, QUIC tuning, listen addresses.
//!
//! Every limit here is enforced on the receiving side before memory is
//! committed (a length prefix larger than its cap fails the stream before
//! any buffer is allocated) and on the sending side before bytes are queued
//! (a too-large message fails locally with a typed error).

use libp2p::Multiaddr;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// Protocol limits and concurrency bounds. See `docs/PROTOCOL.md`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest Raft request (AppendEntries with entries, snapshot pieces).
    pub max_raft_request: usize,
    /// Largest Raft response.
    pub max_raft_response: usize,
    /// Largest control message, either direction.
    pub max_ctl_message: usize,
    /// Largest chunk, decompressed. Bigger is refused before allocating.
    pub max_chunk_len: usize,
    /// Most chunk hashes in one chunk request.
    pub max_chunks_per_request: usize,
    /// Hashes the fetcher puts in one request (≤ `max_chunks_per_request`).
    pub fetch_batch: usize,
    /// Raft request timeout (send, remote handling, response).
    pub raft_timeout: Duration,
    /// Control request timeout.
    pub ctl_timeout: Duration,
    /// Timeout of one join round trip (the Proof one includes a Raft write).
    pub join_timeout: Duration,
    /// Longest wait for any progress on a chunk stream (open, one frame).
    pub chunk_io_timeout: Duration,
    /// Outbound chunk streams to one peer at a time.
    pub fetch_streams_per_peer: usize,
    /// Outbound chunk streams in total.
    pub fetch_streams_global: usize,
    /// Inbound chunk streams served to one peer at a time.
    pub serve_streams_per_peer: usize,
    /// Inbound chunk streams served in total.
    pub serve_streams_global: usize,
    /// Faults (bad chunk, bad frame) before a peer is banned from serving us.
    pub fault_threshold: u32,
    /// How long a faulty peer is not asked for chunks.
    pub ban_duration: Duration,
    /// Most simultaneous connections of non-members (joiners).
    pub max_stranger_connections: usize,
    /// A non-member connection is closed after this long (join window).
    pub stranger_window: Duration,
    /// Failed join proofs from one peer before it is refused for `ban_duration`.
    pub max_join_failures: u32,
    /// Join requests one IP address may send at once (each handshake is
    /// two requests), before `join_requests_per_sec` paces it.
    pub join_burst: u32,
    /// Join requests per second one IP address earns back.
    pub join_requests_per_sec: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_raft_request: 16 * MIB,
            max_raft_response: 16 * MIB,
            max_ctl_message: MIB,
            max_chunk_len: 16 * MIB,
            max_chunks_per_request: 1024,
            fetch_batch: 32,
            raft_timeout: Duration::from_secs(30),
            ctl_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(20),
            chunk_io_timeout: Duration::from_secs(20),
            fetch_streams_per_peer: 4,
            fetch_streams_global: 16,
            serve_streams_per_peer: 4,
            serve_streams_global: 16,
            fault_threshold: 3,
            ban_duration: Duration::from_secs(300),
            max_stranger_connections: 32,
            stranger_window: Duration::from_secs(60),
            max_join_failures: 5,
            join_burst: 64,
            join_requests_per_sec: 1.0,
        }
    }
}

/// QUIC transport tuning (quinn under libp2p-quic).
///
/// Starvation rule: `stream_window * fetch_streams_per_peer` stays below
/// `connection_window` so that bulk chunk streams a slow reader has not
/// drained can never fill the whole connection window: Raft and control
/// streams always keep `connection_window - stream_window * streams`
/// bytes of credit. [`QuicTuning::check`] enforces it.
#[derive(Clone, Debug)]
pub struct QuicTuning {
    /// Receive window of one stream (bytes in flight per stream).
    pub stream_window: u32,
    /// Receive window of the whole connection.
    pub connection_window: u32,
    /// Upper bound of path-MTU discovery (UDP payload). 1452 is safe on any
    /// Ethernet path. NOTE: libp2p-quic 0.14 leaves quinn's endpoint
    /// `max_udp_payload_size` at 1472, and a peer never probes above what the
    /// other side advertises, so values above 1472 have no effect with this
    /// libp2p version even on loopback.
    pub mtu_upper_bound: u16,
    /// QUIC idle timeout in milliseconds: how long a connection to a peer
    /// that died (kill -9, power cut) keeps taking requests. A restarted peer
    /// comes back on a new connection, but requests still go to the old one
    /// until it times out (30 s made a restarted leader's cluster wait up to
    /// 30 s to sync again; issue 13 item 4).
    pub max_idle_timeout_ms: u32,
    /// QUIC keep-alive interval (below both sides' idle timeout).
    pub keep_alive: Duration,
    /// Concurrent bidirectional streams the remote may open.
    pub max_concurrent_streams: u32,
}

impl Default for QuicTuning {
    fn default() -> Self {
        QuicTuning {
            stream_window: 8 * MIB as u32,
            connection_window: 48 * MIB as u32,
            mtu_upper_bound: 1452,
            max_idle_timeout_ms: 5_000,
            keep_alive: Duration::from_secs(1),
            max_concurrent_streams: 256,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "QUIC windows: stream_window {stream} x fetch_streams_per_peer {streams} must stay \
         below connection_window {conn} so Raft traffic keeps flow-control credit"
    )]
    WindowStarvation {
        stream: u32,
        streams: usize,
        conn: u32,
    },
    #[error("limit {0} must be at least 1")]
    Zero(&'static str),
    #[error("fetch_batch {batch} exceeds max_chunks_per_request {max}")]
    Batch { batch: usize, max: usize },
    #[error("max_chunk_len {0} exceeds the 4 GiB frame limit")]
    ChunkTooLarge(usize),
}

impl QuicTuning {
    /// Checks the starvation rule against the fetch concurrency.
    pub fn check(&self, limits: &Limits) -> Result<(), ConfigError> {
        let bulk = u64::from(self.stream_window) * limits.fetch_streams_per_peer as u64;
        if bulk >= u64::from(self.connection_window) {
            return Err(ConfigError::WindowStarvation {
                stream: self.stream_window,
                streams: limits.fetch_streams_per_peer,
                conn: self.connection_window,
            });
        }
        Ok(())
    }
}

impl Limits {
    pub fn check(&self) -> Result<(), ConfigError> {
        for (v, name) in [
            (self.max_chunks_per_request, "max_chunks_per_request"),
            (self.fetch_batch, "fetch_batch"),
            (self.fetch_streams_per_peer, "fetch_streams_per_peer"),
            (self.fetch_streams_global, "fetch_streams_global"),
            (self.serve_streams_per_peer, "serve_streams_per_peer"),
            (self.serve_streams_global, "serve_streams_global"),
            (self.max_chunk_len, "max_chunk_len"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.fetch_batch > self.max_chunks_per_request {
            return Err(ConfigError::Batch {
                batch: self.fetch_batch,
                max: self.max_chunks_per_request,
            });
        }
        if self.max_chunks_per_request > usize::from(u16::MAX) {
            return Err(ConfigError::Batch {
                batch: self.max_chunks_per_request,
                max: usize::from(u16::MAX),
            });
        }
        if u32::try_from(self.max_chunk_len).is_err() {
            return Err(ConfigError::ChunkTooLarge(self.max_chunk_len));
        }
        Ok(())
    }
}

/// Everything [`crate::start`] needs besides the identity and the app hooks.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/udp/7946/quic-v1`.
    pub listen: Vec<Multiaddr>,
    pub limits: Limits,
    pub quic: QuicTuning,
    /// Capacity of the inbound event channel. When the app falls this far
    /// behind, further inbound requests are refused (the remote sees an
    /// error and retries) rather than buffered without bound.
    pub event_buffer: usize,
    /// How long a connection with no open stream is kept.
    pub idle_connection_timeout: Duration,
    /// Sent in identify (members only).
    pub agent_version: String,
    /// NAT traversal: relay, hole punching, AutoNAT, UPnP.
    pub nat: NatConfig,
    /// Addresses the operator says this node is reachable at (an
    /// `--advertise`, a specific listen IP): confirmed external addresses
    /// from the start, so a member serves as relay at once instead of
    /// after AutoNAT confirms it (libp2p's relay offers the hop protocol
    /// only with a confirmed external address).
    pub external: Vec<Multiaddr>,
}

/// NAT traversal (docs/PROTOCOL.md, "Behind NAT"). Every piece works among
/// members only: a stranger's connection gets none of these protocols.
#[derive(Clone, Debug)]
pub struct NatConfig {
    /// Serve as a circuit relay for other members, probe this node's own
    /// reachability with AutoNAT (members as servers), and when members
    /// cannot dial it, reserve a slot on member relays and listen there.
    pub relay: bool,
    /// Try DCUtR hole punching on a relayed member connection, and move
    /// traffic to the direct connection it makes. Needs `relay`.
    pub hole_punch: bool,
    /// Ask the router for a mapping of the listen port: UPnP IGD
    /// (libp2p-upnp) and NAT-PMP/PCP (`crate::portmap`).
    pub upnp: bool,
    /// Most member relays this node reserves a slot on at once.
    pub max_relays: usize,
    /// Hop side: most reservations held for other members.
    pub max_reservations: usize,
    /// Hop side: most circuits relayed at once.
    pub max_circuits: usize,
    /// First AutoNAT probe after start.
    pub autonat_boot_delay: Duration,
    /// AutoNAT probe interval while the answer is unknown or not yet sure.
    pub autonat_retry: Duration,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            relay: true,
            hole_punch: true,
            upnp: true,
            max_relays: 2,
            max_reservations: 128,
            max_circuits: 256,
            autonat_boot_delay: Duration::from_secs(1),
            autonat_retry: Duration::from_secs(20),
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: Vec::new(),
            limits: Limits::default(),
            quic: QuicTuning::default(),
            event_buffer: 1024,
            idle_connection_timeout: Duration::from_secs(300),
            agent_version: concat!("filesyncd/", env!("CARGO_PKG_VERSION")).to_owned(),
            nat: NatConfig::default(),
            external: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        let l = Limits::default();
        l.check().unwrap();
        QuicTuning::default().check(&l).unwrap();
    }

    #[test]
    fn starving_windows_are_refused() {
        let l = Limits::default();
        let q = QuicTuning {
            stream_window: 16 << 20,
            connection_window: 32 << 20,
            ..QuicTuning::default()
        };
        assert!(matches!(
            q.check(&l),
            Err(ConfigError::WindowStarvation { .. })
        ));
    }
}
