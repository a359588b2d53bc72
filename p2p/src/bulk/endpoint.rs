//! The bulk endpoint's UDP socket and QUIC configuration.
//!
//! * Address: the IP of the swarm's first listen address; the port from
//!   [`BulkConfig::port`] (default: the swarm's port + 1 when that port is
//!   fixed, an ephemeral one when it is taken or the swarm's is ephemeral).
//! * Socket: SO_RCVBUF / SO_SNDBUF asked for through socket2; the kernel
//!   caps them at `net.core.rmem_max` / `wmem_max` and what it granted is
//!   logged and reported ([`super::BulkStats`]).
//! * QUIC: windows, MTU discovery up to [`BulkConfig::mtu_upper_bound`]
//!   on a network path and [`BulkConfig::loopback_mtu_upper_bound`] on a
//!   loopback one (the larger is advertised as `max_udp_payload_size`, so
//!   the peer may probe that high), segmentation offload where a batch fits
//!   one send, the congestion controller, stream counts and timeouts, all
//!   from [`BulkConfig`]; no unidirectional streams, no datagrams, no
//!   migration. Each side picks the profile by the remote's IP.

use crate::config::{BulkConfig, Congestion};
use crate::error::BulkError;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn::{EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use socket2::{Domain, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Where to bind: the first listen address's IP, and the port to try
/// first with whether another may be taken when it is in use.
pub(crate) fn bind_plan(
    listen: &[Multiaddr],
    config: &BulkConfig,
) -> Result<(SocketAddr, bool), BulkError> {
    let (ip, swarm_port) = listen
        .iter()
        .find_map(|a| {
            let mut it = a.iter();
            let ip = match it.next()? {
                Protocol::Ip4(ip) => IpAddr::V4(ip),
                Protocol::Ip6(ip) => IpAddr::V6(ip),
                _ => return None,
            };
            match it.next()? {
                Protocol::Udp(port) => Some((ip, port)),
                _ => None,
            }
        })
        .ok_or(BulkError::NoListenIp)?;
    Ok(match config.port {
        Some(p) => (SocketAddr::new(ip, p), false),
        None if swarm_port != 0 => (SocketAddr::new(ip, swarm_port.wrapping_add(1)), true),
        None => (SocketAddr::new(ip, 0), false),
    })
}

fn socket(addr: SocketAddr, buffer: usize) -> io::Result<(std::net::UdpSocket, usize, usize)> {
    let s = socket2::Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // Dual stack where the system allows it; v6-only is fine too.
        let _ = s.set_only_v6(false);
    }
    // Asked before bind so the first packets find the room.
    if let Err(e) = s.set_recv_buffer_size(buffer) {
        tracing::warn!(buffer, "bulk socket: SO_RCVBUF refused: {e}");
    }
    if let Err(e) = s.set_send_buffer_size(buffer) {
        tracing::warn!(buffer, "bulk socket: SO_SNDBUF refused: {e}");
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    let recv = s.recv_buffer_size()?;
    let send = s.send_buffer_size()?;
    Ok((s.into(), recv, send))
}

/// The transport parameters of bulk connections, per kind of path.
#[derive(Clone)]
pub(crate) struct Transports {
    network: Arc<TransportConfig>,
    loopback: Arc<TransportConfig>,
}

impl Transports {
    /// `recv_buffer`: the receive buffer the kernel reports for the socket.
    pub(crate) fn new(config: &BulkConfig, recv_buffer: usize) -> Result<Transports, BulkError> {
        // On loopback every byte in flight sits in the receiver's socket
        // buffer (there is no wire): a window above it overflows the buffer
        // whenever the receiver is slow to drain, and the losses collapse
        // the congestion window (measured: ~900 -> ~200 MiB/s with 32 MiB
        // in flight and an 8 MiB buffer; no drops with the window at 6 MiB
        // and no loss of speed). 3/4 leaves room for per-datagram overhead.
        let loopback_window = u32::try_from(recv_buffer / 4 * 3)
            .unwrap_or(u32::MAX)
            .clamp(MIN_WINDOW, config.connection_window.max(MIN_WINDOW));
        Ok(Transports {
            network: Arc::new(transport(
                config,
                config.mtu_upper_bound,
                config.connection_window,
            )?),
            loopback: Arc::new(transport(
                config,
                config.loopback_mtu_upper_bound,
                loopback_window,
            )?),
        })
    }

    /// For a connection with `remote`.
    pub(crate) fn to(&self, remote: IpAddr) -> Arc<TransportConfig> {
        if remote.to_canonical().is_loopback() {
            self.loopback.clone()
        } else {
            self.network.clone()
        }
    }
}

/// Smallest connection window: two of the largest datagrams.
const MIN_WINDOW: u32 = 128 * 1024;

/// The transport parameters of a bulk connection (both sides), with MTU
/// discovery up to `mtu` and a connection receive window of `window`.
pub(crate) fn transport(
    config: &BulkConfig,
    mtu: u16,
    window: u32,
) -> Result<TransportConfig, BulkError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_window.min(window)))
        .receive_window(VarInt::from_u32(window))
        .send_window(config.send_window)
        .max_idle_timeout(Some(
            IdleTimeout::try_from(config.idle_timeout)
                .map_err(|e| BulkError::Quic(e.to_string()))?,
        ))
        .keep_alive_interval(Some(config.keep_alive))
        .initial_mtu(config.initial_mtu)
        .datagram_receive_buffer_size(None);
    let upper = mtu;
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(upper);
    t.mtu_discovery_config(Some(mtu));
    t.enable_segmentation_offload(gso_fits(upper));
    match config.congestion {
        Congestion::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
        Congestion::NewReno => t.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
        Congestion::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    Ok(t)
}

/// Datagrams quinn 0.11 puts in one GSO send at most.
const GSO_SEGMENTS: u32 = 10;
/// Largest UDP payload of one send (one IP packet before segmentation).
const MAX_UDP_SEND: u32 = 65_507;

/// Whether segmentation offload (GSO) can be used with datagrams up to
/// `mtu`: quinn batches up to 10 of them in one send, and the kernel
/// refuses a batch over 64 KB with EMSGSIZE, which quinn takes for a sent
/// packet: it is lost, the congestion window collapses and MTU black-hole
/// detection drops the path to 1200 bytes (measured: 1 GiB at 12,000-byte
/// sends instead of 65,000-byte datagrams). With larger datagrams each
/// send is one datagram anyway.
pub(crate) fn gso_fits(mtu: u16) -> bool {
    u32::from(mtu) * GSO_SEGMENTS <= MAX_UDP_SEND
}

/// A bound UDP socket, not yet an endpoint.
pub(crate) struct Opened {
    udp: std::net::UdpSocket,
    pub local: SocketAddr,
    /// SO_RCVBUF / SO_SNDBUF as the kernel reports them.
    pub recv_buffer: usize,
    pub send_buffer: usize,
}

/// Binds the UDP socket with the buffers asked for.
pub(crate) fn open(plan: (SocketAddr, bool), config: &BulkConfig) -> Result<Opened, BulkError> {
    let (addr, may_move) = plan;
    let (udp, recv_buffer, send_buffer) = match socket(addr, config.socket_buffer) {
        Ok(s) => s,
        Err(e) if may_move && e.kind() == io::ErrorKind::AddrInUse => {
            tracing::info!(%addr, "bulk port taken: binding an ephemeral one (members learn it through identify)");
            let any = SocketAddr::new(addr.ip(), 0);
            socket(any, config.socket_buffer)
                .map_err(|source| BulkError::Bind { addr: any, source })?
        }
        Err(source) => return Err(BulkError::Bind { addr, source }),
    };
    // Linux grants at most net.core.rmem_max / wmem_max and reports twice
    // what it granted (its bookkeeping included).
    let full = config.socket_buffer.saturating_mul(2);
    if recv_buffer < full || send_buffer < full {
        tracing::warn!(
            asked = config.socket_buffer,
            recv_buffer,
            send_buffer,
            "bulk socket buffers capped by the kernel (net.core.rmem_max / wmem_max)"
        );
    }
    let local = udp
        .local_addr()
        .map_err(|source| BulkError::Bind { addr, source })?;
    Ok(Opened {
        udp,
        local,
        recv_buffer,
        send_buffer,
    })
}

/// Makes the endpoint (serving with `server`, dialing too).
pub(crate) fn endpoint(
    socket: Opened,
    config: &BulkConfig,
    server: quinn::ServerConfig,
) -> Result<quinn::Endpoint, BulkError> {
    // Advertised to peers (transport parameter): the larger bound, so a
    // loopback peer may probe up to it.
    let mut endpoint_config = EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(config.mtu_upper_bound.max(config.loopback_mtu_upper_bound))
        .map_err(|e| BulkError::Quic(e.to_string()))?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket.udp,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| BulkError::Bind {
        addr: socket.local,
        source,
    })?;
    tracing::info!(
        local = %socket.local,
        recv_buffer = socket.recv_buffer,
        send_buffer = socket.send_buffer,
        "bulk endpoint bound"
    );
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(s: &str) -> Vec<Multiaddr> {
        vec![s.parse().unwrap()]
    }

    #[test]
    fn port_follows_the_swarm() {
        let c = BulkConfig::default();
        assert_eq!(
            bind_plan(&listen("/ip4/10.0.0.1/udp/7400/quic-v1"), &c).unwrap(),
            ("10.0.0.1:7401".parse().unwrap(), true)
        );
        assert_eq!(
            bind_plan(&listen("/ip4/127.0.0.1/udp/0/quic-v1"), &c).unwrap(),
            ("127.0.0.1:0".parse().unwrap(), false)
        );
        let fixed = BulkConfig {
            port: Some(9000),
            ..BulkConfig::default()
        };
        assert_eq!(
            bind_plan(&listen("/ip6/::/udp/7400/quic-v1"), &fixed).unwrap(),
            ("[::]:9000".parse().unwrap(), false)
        );
        assert!(matches!(
            bind_plan(&listen("/dns4/example.com/udp/1/quic-v1"), &c),
            Err(BulkError::NoListenIp)
        ));
    }

    #[test]
    fn gso_only_where_a_batch_fits_in_one_send() {
        assert!(gso_fits(1452));
        assert!(gso_fits(6500));
        assert!(!gso_fits(9000));
        assert!(!gso_fits(65_000));
    }

    #[test]
    fn transport_config_is_accepted() {
        for congestion in [Congestion::Cubic, Congestion::NewReno, Congestion::Bbr] {
            let c = BulkConfig {
                congestion,
                ..BulkConfig::default()
            };
            transport(&c, c.mtu_upper_bound, c.connection_window).unwrap();
        }
        let t = Transports::new(&BulkConfig::default(), 8 << 20).unwrap();
        assert!(Arc::ptr_eq(
            &t.to("127.0.0.1".parse().unwrap()),
            &t.loopback
        ));
        assert!(Arc::ptr_eq(&t.to("::1".parse().unwrap()), &t.loopback));
        assert!(Arc::ptr_eq(
            &t.to("::ffff:127.0.0.1".parse().unwrap()),
            &t.loopback
        ));
        assert!(Arc::ptr_eq(&t.to("10.0.0.1".parse().unwrap()), &t.network));
    }
}
