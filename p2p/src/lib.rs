//! filesyncd-p2p: libp2p over QUIC for filesyncd.
//!
//! Identity ([`identity`]), membership gating ([`gate`]), the join handshake
//! ([`join`], [`token`]), opaque Raft and control request-response, and
//! verified bulk chunk streams ([`chunks`]), over the swarm or over the
//! bulk endpoint beside it ([`bulk`]). This crate knows nothing of
//! Raft types: Raft RPCs are opaque bytes. The wire protocols are specified
//! in [`protocol`] (and `docs/PROTOCOL.md`).
//!
//! Usage: [`start`] with a keypair ([`load_or_create`]), a [`P2pConfig`] and
//! the app's [`Services`]; keep the returned [`P2pClient`] (cloneable) and
//! drain the [`P2pEvent`] receiver.

pub mod addr;
pub mod bulk;
pub mod chunks;
pub mod client;
pub mod cluster_key;
pub mod codec;
pub mod config;
pub mod error;
mod event_loop;
pub mod gate;
pub mod hooks;
pub mod identity;
pub mod join;
mod join_failures;
mod join_rate;
pub mod members_only;
pub mod nat;
mod portmap;
pub mod protocol;
mod swarm;
pub mod token;

pub use addr::{parse_addr, AddrError};
pub use bulk::{BulkConnection, BulkStats};
pub use chunks::compressor::CompressionStats;
pub use chunks::fetch::{ChunkFetch, FetchPlan, Fetched};
pub use client::{start, Joined, P2pClient, Services};
pub use cluster_key::{ClusterKey, ClusterProofError, Fingerprint, FingerprintParseError};
pub use config::{
    BulkConfig, CompressionConfig, ConfigError, Congestion, Limits, NatConfig, P2pConfig,
    QuicTuning,
};
pub use error::{BulkError, FetchError, JoinError, P2pError, RequestError};
pub use filesyncd_merkle::{Hash, Verified};
pub use hooks::{
    ChunkProvider, JoinApplication, JoinVerifier, P2pEvent, Rejection, Reply, ReplyError,
};
pub use identity::{load_or_create, Identity, IdentityError};
pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
pub use nat::{NatView, PeerPath, Reachability};
pub use protocol::RejectReason;
pub use token::{Token, TokenHash, TokenParseError};
