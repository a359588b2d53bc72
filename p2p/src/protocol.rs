//! The wire protocols of filesyncd, and their messages.
//!
//! # Goals
//! * One encrypted, authenticated transport between nodes: QUIC v1 with
//!   libp2p TLS 1.3; a node *is* its ed25519 `PeerId`.
//! * Only cluster members speak cluster protocols. A stranger can do one
//!   thing: prove, with a join token, that it was invited.
//! * Raft traffic (heartbeats) is never starved by bulk chunk transfers.
//! * Every message has an explicit size cap, checked before allocation,
//!   and every exchange has a timeout.
//! * Chunks are verified (blake3) before anyone sees them.
//!
//! # Non-goals
//! * Understanding Raft: Raft RPCs are opaque bytes here.
//! * NAT traversal, relays, discovery (addresses come from the app / Raft).
//! * Confidentiality from members: every member may fetch every chunk.
//! * Storing tokens or deciding expiry / single use: the app does that in
//!   Raft through [`crate::JoinVerifier`].
//!
//! # Protocols and who may call them
//! | protocol | kind | who may open it | cap |
//! |---|---|---|---|
//! | `/filesyncd/join/1` | request-response, postcard | anyone | 64 KiB |
//! | `/filesyncd/raft/1` | request-response, opaque bytes | members | 16 MiB req / 16 MiB resp (configurable) |
//! | `/filesyncd/ctl/1` | request-response, opaque bytes | members | 1 MiB (configurable) |
//! | `/filesyncd/chunks/1` | raw stream (libp2p-stream) | members | 1024 hashes / 16 MiB per chunk |
//! | `/ipfs/id/1.0.0` | identify | members | libp2p's |
//! | `/ipfs/ping/1.0.0` | ping | anyone | libp2p's |
//! | bulk endpoint, ALPN `filesyncd-bulk/1` | own QUIC endpoint (quinn), chunks/1 requests on long-lived streams | members (mutual TLS) | as chunks/1; 16 streams per connection, 4 connections per peer |
//!
//! Gating: on a connection whose remote is not a member *when the
//! connection is established*, the members-only protocols are not even
//! offered: multistream-select refuses them, the stream is reset before a
//! byte of payload is read, and the caller gets `UnsupportedProtocol`.
//! Membership changes: a removed member's connections are closed at once
//! and it is refused at connection establishment from then on (until
//! re-added). A stranger that becomes a member (a joiner) keeps its join
//! connection until the join window ends; members-only traffic dials a
//! fresh connection, which gets full handlers.
//!
//! # Framing of request-response messages
//! `u32 little-endian length ‖ body`. The receiver reads the length, refuses
//! it if above the cap (the stream is dropped: the sender's write fails,
//! other streams of the connection are untouched), then reads the body in
//! steps so memory follows the bytes actually received. Raft and ctl bodies
//! are opaque; join bodies are postcard-encoded [`JoinRequest`] /
//! [`JoinResponse`].
//!
//! # Join flow (`/filesyncd/join/1`)
//! ```text
//! joiner                                        member
//!   Hello{version, token_id, joiner_nonce} ──▶  remembers a fresh 32-byte nonce
//!                                         ◀──  Challenge{nonce}   (per peer, single use, 30 s)
//!   Proof{token_id, mac, listen_addrs, info} ─▶ hash = verifier.token_hash(token_id)
//!                                               check mac = joiner_mac(hash, id, joiner, nonce)
//!                                               verifier.admit(..) (expiry, single use, Raft)
//!                                         ◀──  Accepted{payload, member_mac}
//!                                                | Redirect{target, member_mac} | Rejected{reason, hint}
//! ```
//! The token's secret never crosses the wire; see [`crate::token`].
//! Unknown token ids and wrong proofs both answer `BadToken` (no oracle).
//! A member that cannot admit because it does not lead the cluster answers
//! `Redirect{target, member_mac}` with the leader's address and a proof that
//! it knows the token (as `Accepted` carries one); the joiner checks the
//! proof and starts over there with `Hello`. It follows no redirect without
//! a valid proof: a peer that answers at a spoofed address cannot send it
//! anywhere.
//!
//! # Chunk flow (`/filesyncd/chunks/1`)
//! See [`crate::chunks::wire`] for the byte layout: one request (a batch of
//! hashes) then, in request order, one frame per hash: a 41-byte header
//! (hash, kind = absent | raw | zstd, raw length, wire length) and the body.
//! The fetcher checks every header against its limits before allocating,
//! decompresses into a buffer bounded by the announced raw length, and
//! verifies blake3 before handing the chunk on.
//!
//! The same requests and frames also travel over the bulk endpoint
//! ([`crate::bulk`]): a QUIC endpoint of its own beside the swarm, where a
//! stream carries one request after another, so chunk bytes share neither
//! flow control nor congestion control with Raft.
//!
//! # Limits and starvation
//! See [`crate::Limits`] and [`crate::QuicTuning`]: chunk streams are bounded
//! per peer and globally, on both the fetching and the serving side, and the
//! QUIC stream window times the per-peer stream bound stays below the
//! connection window, so Raft streams always have flow-control credit.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

pub const RAFT_PROTOCOL: StreamProtocol = StreamProtocol::new("/filesyncd/raft/1");
pub const CTL_PROTOCOL: StreamProtocol = StreamProtocol::new("/filesyncd/ctl/1");
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/filesyncd/join/1");
pub const CHUNKS_PROTOCOL: StreamProtocol = StreamProtocol::new("/filesyncd/chunks/1");
/// identify's protocol version string: nodes of another protocol family
/// are told apart in logs.
pub const IDENTIFY_VERSION: &str = "/filesyncd/1";

/// Cap of one join message, either direction.
pub const MAX_JOIN_MESSAGE: usize = 64 * 1024;
/// Version carried in `Hello` (2: `Proof` carries `info`).
pub const JOIN_VERSION: u16 = 3;
/// Most listen addresses a joiner may announce.
pub const MAX_JOIN_ADDRS: usize = 16;
/// Largest `info` a joiner may present in `Proof`.
pub const MAX_JOIN_INFO: usize = 4096;

/// Joiner → member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinRequest {
    Hello {
        version: u16,
        token_id: String,
        /// The member proves itself over this.
        joiner_nonce: [u8; 32],
    },
    Proof {
        token_id: String,
        mac: [u8; 32],
        /// Multiaddrs (binary form) the joiner listens on.
        listen_addrs: Vec<Vec<u8>>,
        /// Opaque application data about the joiner (filesyncd: its Raft node id), at
        /// most [`MAX_JOIN_INFO`] bytes. Integrity comes from the connection (TLS bound to
        /// the joiner's PeerId); it is not secret.
        info: Vec<u8>,
    },
}

/// Member → joiner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinResponse {
    Challenge {
        nonce: [u8; 32],
    },
    Accepted {
        /// Opaque cluster information from the app.
        payload: Vec<u8>,
        member_mac: [u8; 32],
    },
    Rejected {
        reason: RejectReason,
        /// Opaque app detail (why it cannot decide now, ...).
        hint: Vec<u8>,
    },
    /// Not the leader: go to `target` (the leader's address), proven with
    /// [`crate::token::redirect_mac`], so that a peer that does not know the
    /// token (one that answers at a spoofed `--join` address) cannot send
    /// the joiner elsewhere. Since join version 3.
    Redirect {
        target: Vec<u8>,
        member_mac: [u8; 32],
    },
}

/// Why a join was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// Unknown token id, or a proof that does not match the token.
    BadToken,
    Expired,
    /// The token was single-use and is spent.
    Used,
    /// Ask the leader (see `hint`).
    NotLeader,
    /// The member cannot decide now (no verifier, no quorum...).
    Unavailable,
    /// Malformed or out-of-order messages (no Hello before Proof, version).
    Protocol,
    /// Too many failed attempts from this peer.
    TooManyAttempts,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            RejectReason::BadToken => "bad token",
            RejectReason::Expired => "token expired",
            RejectReason::Used => "token already used",
            RejectReason::NotLeader => "not the leader",
            RejectReason::Unavailable => "member cannot decide now",
            RejectReason::Protocol => "protocol error",
            RejectReason::TooManyAttempts => "too many failed attempts",
        };
        f.write_str(s)
    }
}
