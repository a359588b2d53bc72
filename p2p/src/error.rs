//! Typed errors of the client API.

use crate::addr::AddrError;
use crate::config::ConfigError;
use crate::protocol::RejectReason;
use libp2p::request_response::OutboundFailure;
use libp2p::PeerId;
use std::io;
use std::net::SocketAddr;

/// A Raft / ctl / join request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0} is not a member: members-only protocols are not spoken with it")]
    NotMember(PeerId),
    #[error("message of {len} bytes exceeds the cap of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("could not connect to the peer")]
    DialFailure,
    #[error("request timed out")]
    Timeout,
    #[error("connection closed before the response")]
    ConnectionClosed,
    #[error("the peer refused the protocol (we are not a member in its view)")]
    Refused,
    #[error("stream failed: {0}")]
    Io(String),
    #[error("the p2p event loop has stopped")]
    Shutdown,
}

impl From<OutboundFailure> for RequestError {
    fn from(f: OutboundFailure) -> Self {
        match f {
            OutboundFailure::DialFailure => RequestError::DialFailure,
            OutboundFailure::Timeout => RequestError::Timeout,
            OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
            OutboundFailure::UnsupportedProtocols => RequestError::Refused,
            OutboundFailure::Io(e) => RequestError::Io(e.to_string()),
        }
    }
}

/// Starting the node or a swarm-level command failed.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Address(#[from] AddrError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot build the transport: {0}")]
    Transport(String),
    #[error("dial failed: {0}")]
    Dial(String),
    #[error(transparent)]
    Bulk(#[from] BulkError),
    #[error("the p2p event loop has stopped")]
    Shutdown,
}

/// The bulk endpoint (`crate::bulk`) could not start.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("cannot bind the bulk endpoint on udp {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("no IP listen address to put the bulk endpoint on")]
    NoListenIp,
    #[error("bulk endpoint certificate: {0}")]
    Certificate(#[from] libp2p::tls::certificate::GenError),
    #[error("bulk endpoint TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("bulk endpoint QUIC configuration: {0}")]
    Quic(String),
}

/// The joiner side of the join handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Address(#[from] AddrError),
    #[error("cannot reach the member: {0}")]
    Dial(String),
    #[error("join refused: {reason}")]
    Rejected { reason: RejectReason, hint: Vec<u8> },
    #[error("the member could not prove it knows the token: not our cluster")]
    MemberProofInvalid,
    /// A leader redirect (proven) to this address.
    #[error("not the leader; the leader is at {0}")]
    Redirect(String),
    #[error("unexpected join message: {0}")]
    Protocol(&'static str),
    #[error("join exchange failed: {0}")]
    Request(#[from] RequestError),
    #[error("the p2p event loop has stopped")]
    Shutdown,
}

/// Why one chunk could not be fetched.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("no listed holder is usable (all absent, faulty, banned or unreachable)")]
    NoHolder,
    #[error("the fetch was cancelled")]
    Cancelled,
}
