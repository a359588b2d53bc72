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
    #[error("bulk endpoint: {0}")]
    Bulk(&'static str),
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
    /// The bulk chunk endpoint beside the swarm (`crate::bulk`).
    pub bulk: BulkConfig,
    /// When served chunks are compressed (`crate::chunks::compressor`).
    pub compression: CompressionConfig,
}

/// The serving side's zstd choice (docs/PROTOCOL.md, `/filesyncd/chunks/1`,
/// "Compression"): per peer, from the link's measured rate and zstd's
/// measured speed and ratio; frames kept for reuse across peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Bytes of zstd frames (and "does not compress" verdicts, 128 bytes
    /// each) kept by chunk hash, so a chunk served to several peers is
    /// compressed once. 0: none kept.
    pub cache_bytes: usize,
    /// Peers whose link rate is kept; beyond it the one served least
    /// recently is forgotten.
    pub max_peers: usize,
    /// Take every link as draining this many bytes per second instead of
    /// measuring it: for tests and measurements (`None` in production).
    pub assume_link_rate: Option<u64>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            cache_bytes: 32 * MIB,
            max_peers: 1024,
            assume_link_rate: None,
        }
    }
}

impl CompressionConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.max_peers == 0 {
            return Err(ConfigError::Zero("compression max_peers"));
        }
        if self.assume_link_rate == Some(0) {
            return Err(ConfigError::Zero("compression assume_link_rate"));
        }
        Ok(())
    }
}

/// Congestion controller of the bulk endpoint's QUIC connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Congestion {
    Cubic,
    NewReno,
    /// quinn's BBR (marked experimental by quinn).
    Bbr,
}

/// The bulk chunk endpoint: a quinn QUIC endpoint of its own, beside the
/// libp2p swarm, that carries `/filesyncd/chunks/1` requests on long-lived
/// streams (docs/PROTOCOL.md, "Bulk endpoint"; `crate::bulk`). Raft stays
/// on the swarm's connection, so bulk data no longer shares its flow
/// control or congestion window.
#[derive(Clone, Debug)]
pub struct BulkConfig {
    /// Off: no bulk endpoint; chunks go over libp2p-stream only (the node's
    /// `--no-bulk`).
    pub enabled: bool,
    /// UDP port to bind, on the IP of the first listen address. `None`:
    /// the swarm's port + 1 when that port is fixed (an ephemeral one if
    /// it is taken), else an ephemeral port. `Some(0)`: ephemeral.
    /// `Some(p)`: exactly `p` (a bind failure stops `start`).
    pub port: Option<u16>,
    /// Port announced to members (a router forwarding another external
    /// port). `None`: the bound port.
    pub advertise_port: Option<u16>,
    /// SO_RCVBUF and SO_SNDBUF asked for the UDP socket. The kernel caps
    /// them at `net.core.rmem_max` / `wmem_max` (a warning says so); this
    /// crate never changes sysctls.
    pub socket_buffer: usize,
    /// QUIC receive window of one stream.
    pub stream_window: u32,
    /// QUIC receive window of one connection.
    pub connection_window: u32,
    /// Bytes one connection may have sent and not yet acknowledged.
    pub send_window: u64,
    /// First UDP payload size tried before MTU discovery (≥ 1200).
    pub initial_mtu: u16,
    /// Upper bound of MTU discovery (UDP payload) on a network path:
    /// discovery settles on what the path carries (1452 on Ethernet, more
    /// with jumbo frames). Up to 6,550 segmentation offload (GSO) stays on;
    /// above it, it is off (see `bulk::endpoint::gso_fits`).
    pub mtu_upper_bound: u16,
    /// The same on a loopback path (peers on one machine), ≤ 65527: one
    /// ~64 KB datagram per send costs less than GSO batches of small ones
    /// (measured on loopback: 65,000 without GSO ~0.97 GB/s, 6,500 with
    /// GSO ~0.71 GB/s, 1,452 with GSO ~0.45 GB/s).
    pub loopback_mtu_upper_bound: u16,
    pub congestion: Congestion,
    /// TLS cipher preference: AES-GCM first (AES-NI/VAES make it the
    /// cheapest), ChaCha20-Poly1305 last. `true` puts ChaCha20 first, as
    /// libp2p-tls does (for measurements).
    pub prefer_chacha: bool,
    /// Bidirectional streams one member may have open per connection.
    pub max_streams_per_connection: u32,
    /// Bulk connections accepted at once, all peers together.
    pub max_connections: usize,
    /// Bulk connections accepted at once from one peer.
    pub max_connections_per_peer: usize,
    /// TLS handshakes in progress at once (more are refused unanswered).
    pub max_handshakes: usize,
    /// Idle timeout of a bulk connection.
    pub idle_timeout: Duration,
    /// Keep-alive interval (below `idle_timeout`).
    pub keep_alive: Duration,
    /// Longest wait for a bulk connection to come up.
    pub connect_timeout: Duration,
    /// First wait before a peer whose bulk endpoint could not be reached
    /// is tried again (doubles per failure, up to `retry_max`); its
    /// chunks go over libp2p-stream meanwhile.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            enabled: true,
            port: None,
            advertise_port: None,
            socket_buffer: 8 * MIB,
            stream_window: 8 * MIB as u32,
            connection_window: 48 * MIB as u32,
            send_window: 48 * MIB as u64,
            initial_mtu: 1200,
            mtu_upper_bound: 6_500,
            loopback_mtu_upper_bound: 65_000,
            congestion: Congestion::Cubic,
            prefer_chacha: false,
            max_streams_per_connection: 16,
            max_connections: 128,
            max_connections_per_peer: 4,
            max_handshakes: 32,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl BulkConfig {
    /// Checks the bounds; `limits` for the stream count a fetcher uses.
    pub fn check(&self, limits: &Limits) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let lowest = self.mtu_upper_bound.min(self.loopback_mtu_upper_bound);
        if self.initial_mtu < 1200 || lowest < self.initial_mtu {
            return Err(ConfigError::Bulk(
                "MTU: 1200 <= initial_mtu <= both MTU upper bounds required",
            ));
        }
        if self.mtu_upper_bound.max(self.loopback_mtu_upper_bound) > 65_527 {
            return Err(ConfigError::Bulk("an MTU upper bound above 65527"));
        }
        if self.stream_window == 0 || self.connection_window < self.stream_window {
            return Err(ConfigError::Bulk(
                "windows: 0 < stream_window <= connection_window required",
            ));
        }
        if (self.max_streams_per_connection as usize) < limits.fetch_streams_per_peer {
            return Err(ConfigError::Bulk(
                "max_streams_per_connection below fetch_streams_per_peer",
            ));
        }
        for (v, name) in [
            (self.max_connections, "bulk max_connections"),
            (
                self.max_connections_per_peer,
                "bulk max_connections_per_peer",
            ),
            (self.max_handshakes, "bulk max_handshakes"),
            (self.socket_buffer, "bulk socket_buffer"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.keep_alive >= self.idle_timeout || self.keep_alive.is_zero() {
            return Err(ConfigError::Bulk("0 < keep_alive < idle_timeout required"));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(ConfigError::Bulk("0 < retry_min <= retry_max required"));
        }
        Ok(())
    }
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
            bulk: BulkConfig::default(),
            compression: CompressionConfig::default(),
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
        BulkConfig::default().check(&l).unwrap();
        CompressionConfig::default().check().unwrap();
    }

    #[test]
    fn compression_bounds_are_checked() {
        let zero_peers = CompressionConfig {
            max_peers: 0,
            ..CompressionConfig::default()
        };
        assert!(zero_peers.check().is_err());
        let no_link = CompressionConfig {
            assume_link_rate: Some(0),
            ..CompressionConfig::default()
        };
        assert!(no_link.check().is_err());
        let no_cache = CompressionConfig {
            cache_bytes: 0,
            ..CompressionConfig::default()
        };
        no_cache.check().unwrap();
    }

    #[test]
    fn bulk_bounds_are_checked() {
        let l = Limits::default();
        let bad = BulkConfig {
            max_streams_per_connection: 2,
            ..BulkConfig::default()
        };
        assert!(matches!(bad.check(&l), Err(ConfigError::Bulk(_))));
        let bad = BulkConfig {
            mtu_upper_bound: 1000,
            ..BulkConfig::default()
        };
        assert!(matches!(bad.check(&l), Err(ConfigError::Bulk(_))));
        let off = BulkConfig {
            enabled: false,
            max_streams_per_connection: 0,
            ..BulkConfig::default()
        };
        off.check(&l).unwrap();
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
