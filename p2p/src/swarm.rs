//! The composed behaviour and the swarm it runs in.
//!
//! Order matters: `gate` comes first so a refused connection is refused
//! before any other behaviour creates a handler for it.

use crate::codec::{BytesCodec, JoinCodec};
use crate::config::P2pConfig;
use crate::error::P2pError;
use crate::gate::{Gate, Membership};
use crate::members_only::MembersOnly;
use crate::protocol::{CTL_PROTOCOL, IDENTIFY_VERSION, JOIN_PROTOCOL, RAFT_PROTOCOL};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, ping, Swarm, SwarmBuilder};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub gate: Gate,
    pub join: request_response::Behaviour<JoinCodec>,
    pub ping: ping::Behaviour,
    pub identify: MembersOnly<identify::Behaviour>,
    pub raft: MembersOnly<request_response::Behaviour<BytesCodec>>,
    pub ctl: MembersOnly<request_response::Behaviour<BytesCodec>>,
    pub chunks: MembersOnly<libp2p_stream::Behaviour>,
}

pub(crate) fn build(
    keypair: Keypair,
    config: &P2pConfig,
    membership: &Membership,
) -> Result<Swarm<Behaviour>, P2pError> {
    let limits = &config.limits;
    let quic = config.quic.clone();
    let behaviour = |key: &Keypair| {
        let m = membership.clone();
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
            chunks: MembersOnly::new(libp2p_stream::Behaviour::new(), m),
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
        .with_behaviour(behaviour)
        .map_err(|e| P2pError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build();
    Ok(swarm)
}
