//! What the application plugs in, and what it receives.
//!
//! * [`ChunkProvider`]: serves chunk bytes. The app answers only for chunks
//!   referenced by committed versions; anything else is `None`, which goes on
//!   the wire as "absent", indistinguishable from "not held" (no existence
//!   oracle). It is called on a blocking thread: it may read the disk.
//! * [`JoinVerifier`]: looks up stored token hashes and admits joiners
//!   (expiry and single use are the app's, decided through Raft).
//! * [`P2pEvent`]: inbound requests and peer news, on a bounded channel.
//!   Each request carries a [`Reply`]; dropping it fails the remote's request.

use crate::protocol::RejectReason;
use crate::token::TokenHash;
use filesyncd_merkle::Hash;
use futures::future::BoxFuture;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

/// Source of chunk bytes for the serving side.
pub trait ChunkProvider: Send + Sync + 'static {
    /// The bytes of `hash`, or `None` if absent or not to be served.
    fn get(&self, hash: &Hash) -> Option<Vec<u8>>;
}

/// A refusal from the app's verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// Opaque detail for the joiner (e.g. the leader's address).
    pub hint: Vec<u8>,
}

impl Rejection {
    pub fn new(reason: RejectReason) -> Rejection {
        Rejection {
            reason,
            hint: Vec::new(),
        }
    }
}

/// A joiner whose proof checked out, for the app to admit.
#[derive(Clone, Debug)]
pub struct JoinApplication {
    pub peer: PeerId,
    pub token_id: String,
    /// What the joiner says it listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// The address its connection came from.
    pub observed_addr: Option<Multiaddr>,
    /// Opaque data the joiner presented with its proof (see
    /// [`crate::P2pClient::join_with`]); at most
    /// [`crate::protocol::MAX_JOIN_INFO`] bytes, untrusted.
    pub info: Vec<u8>,
}

/// The member side of the join handshake, supplied by the app.
pub trait JoinVerifier: Send + Sync + 'static {
    /// The stored hash of token `token_id`. Unknown ids must answer
    /// `Err(Rejection::new(RejectReason::BadToken))` (the joiner cannot tell
    /// them from a wrong secret).
    fn token_hash(&self, token_id: &str) -> BoxFuture<'_, Result<TokenHash, Rejection>>;

    /// Called only after the proof matched: check expiry / single use, record
    /// the member (through Raft), and return the opaque accept payload.
    fn admit(&self, joiner: JoinApplication) -> BoxFuture<'_, Result<Vec<u8>, Rejection>>;
}

/// The answer channel of an inbound request.
#[derive(Debug)]
pub struct Reply {
    tx: oneshot::Sender<Vec<u8>>,
    max: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("response of {len} bytes exceeds the cap of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the request is gone (timed out or connection closed)")]
    Gone,
}

impl Reply {
    pub(crate) fn new(max: usize) -> (Reply, oneshot::Receiver<Vec<u8>>) {
        let (tx, rx) = oneshot::channel();
        (Reply { tx, max }, rx)
    }

    /// Largest response accepted.
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// Sends the response. On `TooLarge` the request fails for the remote.
    pub fn send(self, bytes: Vec<u8>) -> Result<(), ReplyError> {
        if bytes.len() > self.max {
            return Err(ReplyError::TooLarge {
                len: bytes.len(),
                max: self.max,
            });
        }
        self.tx.send(bytes).map_err(|_| ReplyError::Gone)
    }
}

/// What the network tells the app.
#[derive(Debug)]
pub enum P2pEvent {
    /// A member sent a Raft RPC (opaque bytes).
    RaftRequest {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: Reply,
    },
    /// A member sent a control message (opaque bytes).
    CtlRequest {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: Reply,
    },
    /// First connection to `peer` is up (`member`: as the gate saw it).
    PeerConnected { peer: PeerId, member: bool },
    /// Last connection to `peer` closed.
    PeerDisconnected { peer: PeerId },
    /// A member told us where it listens (identify).
    Identified {
        peer: PeerId,
        listen_addrs: Vec<Multiaddr>,
    },
    /// A joiner was admitted by the verifier on this node.
    Joined { peer: PeerId, token_id: String },
    /// A peer sent a bad chunk or frame and was charged a fault.
    PeerFault { peer: PeerId, banned: bool },
}
