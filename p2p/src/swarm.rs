//! The composed behaviour and the swarm it runs in.
//!
//! Order matters: `gate` comes first so a refused connection is refused
//! before any other behaviour creates a handler for it.

use crate::codec::{BytesCodec, JoinCodec};
use crate::config::{NatConfig, P2pConfig};
use crate::error::P2pError;
use crate::gate::{Gate, Membership};
use crate::members_only::MembersOnly;
use crate::protocol::{CTL_PROTOCOL, IDENTIFY_VERSION, JOIN_PROTOCOL, RAFT_PROTOCOL};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{autonat, dcutr, identify, ping, relay, upnp, Swarm, SwarmBuilder};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub gate: Gate,
    pub join: request_response::Behaviour<JoinCodec>,
    pub ping: ping::Behaviour,
    pub identify: MembersOnly<identify::Behaviour>,
    pub raft: MembersOnly<request_response::Behaviour<BytesCodec>>,
    pub ctl: MembersOnly<request_response::Behaviour<BytesCodec>>,
    pub chunks: MembersOnly<libp2p_stream::Behaviour>,
    /// Circuit relay v2, hop side: a member relays for other members only
    /// (a stranger's connection never gets the hop protocol).
    pub relay: MembersOnly<Toggle<relay::Behaviour>>,
    /// Circuit relay v2, client side: reservations on member relays, and
    /// the stop protocol for circuits a member relay brings in.
    pub relay_client: MembersOnly<relay::client::Behaviour>,
    /// DCUtR: a relayed member connection tries a direct one.
    pub dcutr: MembersOnly<Toggle<dcutr::Behaviour>>,
    /// AutoNAT v1 with members as the probing servers: is this node
    /// reachable at what members observe?
    pub autonat: MembersOnly<Toggle<autonat::Behaviour>>,
    /// A port mapping on a UPnP IGD router, where one answers.
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

pub(crate) fn build(
    keypair: Keypair,
    config: &P2pConfig,
    membership: &Membership,
) -> Result<Swarm<Behaviour>, P2pError> {
    let limits = &config.limits;
    let quic = config.quic.clone();
    let nat = config.nat.clone();
    let behaviour = |key: &Keypair, relay_client: relay::client::Behaviour| {
        let m = membership.clone();
        let local = key.public().to_peer_id();
        // `streams`: inbound requests read at once per connection; with the
        // codec's size cap, what one peer can make this node buffer.
        let rr = |codec: BytesCodec, proto, timeout, streams| {
            request_response::Behaviour::with_codec(
                codec,
                [(proto, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(timeout)
                    .with_max_concurrent_streams(streams),
            )
        };
        Behaviour {
            gate: Gate::new(m.clone(), limits.max_stranger_connections),
            join: request_response::Behaviour::with_codec(
                JoinCodec,
                [(JOIN_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(limits.join_timeout)
                    .with_max_concurrent_streams(32),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            identify: MembersOnly::new(
                identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public())
                        .with_agent_version(config.agent_version.clone()),
                ),
                m.clone(),
            ),
            raft: MembersOnly::new(
                rr(
                    BytesCodec {
                        max_request: limits.max_raft_request,
                        max_response: limits.max_raft_response,
                    },
                    RAFT_PROTOCOL,
                    limits.raft_timeout,
                    256,
                ),
                m.clone(),
            ),
            ctl: MembersOnly::new(
                rr(
                    BytesCodec {
                        max_request: limits.max_ctl_message,
                        max_response: limits.max_ctl_message,
                    },
                    CTL_PROTOCOL,
                    limits.ctl_timeout,
                    // 64 requests of at most `max_ctl_message` (1 MiB): an
                    // origin that re-asks faster than this node answers
                    // (inline offers carry file bytes) is refused, not
                    // buffered without bound.
                    64,
                ),
                m.clone(),
            ),
            chunks: MembersOnly::new(libp2p_stream::Behaviour::new(), m.clone()),
            relay: MembersOnly::new(
                Toggle::from(
                    nat.relay
                        .then(|| relay::Behaviour::new(local, relay_server_config(&nat))),
                ),
                m.clone(),
            ),
            // Dials of these three carry addresses and conditions that
            // matter (a relay's address, a hole punch's simultaneous dial,
            // a dial-back on a new port): MembersOnly passes them as they are.
            relay_client: MembersOnly::new(relay_client, m.clone()).passing_dials(),
            dcutr: MembersOnly::new(
                Toggle::from((nat.relay && nat.hole_punch).then(|| dcutr::Behaviour::new(local))),
                m.clone(),
            )
            .passing_dials(),
            autonat: MembersOnly::new(
                Toggle::from(
                    nat.relay
                        .then(|| autonat::Behaviour::new(local, autonat_config(&nat))),
                ),
                m,
            )
            .passing_dials(),
            upnp: Toggle::from(nat.upnp.then(upnp::tokio::Behaviour::default)),
        }
    };
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut c| {
            c.max_stream_data = quic.stream_window;
            c.max_connection_data = quic.connection_window;
            c.max_idle_timeout = quic.max_idle_timeout_ms;
            c.keep_alive_interval = quic.keep_alive;
            c.max_concurrent_stream_limit = quic.max_concurrent_streams;
            c.mtu_upper_bound(quic.mtu_upper_bound)
        })
        .with_dns()
        .map_err(|e| P2pError::Transport(e.to_string()))?
        // Relayed connections are secured end to end (TLS with the same
        // ed25519 identities, so the gate sees the real PeerId) and
        // multiplexed with yamux inside the circuit.
        .with_relay_client(libp2p::tls::Config::new, libp2p::yamux::Config::default)
        .map_err(|e| P2pError::Transport(e.to_string()))?
        .with_behaviour(behaviour)
        .map_err(|e| P2pError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build();
    Ok(swarm)
}

/// The hop side's bounds. Only members reach it, so the public-relay
/// rate limits (one reservation per 2 minutes) would only slow a member
/// that restarts; circuits carry all of a member's traffic (Raft, chunks),
/// so they are not cut after 2 minutes or 128 KiB as on a public relay.
fn relay_server_config(nat: &NatConfig) -> relay::Config {
    relay::Config {
        max_reservations: nat.max_reservations,
        max_reservations_per_peer: 4,
        reservation_duration: std::time::Duration::from_secs(3600),
        reservation_rate_limiters: Vec::new(),
        max_circuits: nat.max_circuits,
        max_circuits_per_peer: 16,
        max_circuit_duration: std::time::Duration::from_secs(24 * 3600),
        max_circuit_bytes: 0,
        circuit_src_rate_limiters: Vec::new(),
    }
}

fn autonat_config(nat: &NatConfig) -> autonat::Config {
    autonat::Config {
        boot_delay: nat.autonat_boot_delay,
        retry_interval: nat.autonat_retry,
        refresh_interval: std::time::Duration::from_secs(15 * 60),
        throttle_server_period: nat.autonat_retry / 2,
        // Members are the servers, and members on one LAN see each other
        // at private addresses: those are real answers here.
        only_global_ips: false,
        ..autonat::Config::default()
    }
}
