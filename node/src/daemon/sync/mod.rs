//! The sync service: runs the engine ([`crate::engine`]) against Raft and
//! the p2p network.
//!
//! | file | role |
//! |---|---|
//! | `service.rs` | the sync task (owner of the engine): start-up and the loop |
//! | `parts.rs` | what is opened before the network starts (store, local index) |
//! | `root_guard.rs` | the opened root, its watcher, the check that the path still names it |
//! | `marker.rs` | the folder marker: created once, re-created by `adopt` |
//! | `publish.rs` | the status sent after every step, and the counters |
//! | `local_root.rs` | the path-tree root of the local index, updated per step |
//! | `ports.rs` | the engine's ports over Raft (`Committed`) and p2p (`ChunkFetcher`) |
//! | `schedule.rs` | when the task steps and over what; failed scopes and their retries |
//! | `offer.rs` | the acknowledgement contract over p2p: `P2pAcks` (the engine's `Acks` port), the peer side (`Offers`: pull, ack) |
//! | `ctl.rs` | the ctl protocol messages (`GetNodes`, `Offer`, `OfferInline`) |
//! | `gc.rs` | the version store's sweep: drops chunks no retained version needs |
//! | `servable.rs` | which chunks are served to peers (no existence oracle) |
//! | `local_db.rs` | the persisted local index and tree nodes |
//! | `status.rs` | what the control API sees and can ask |

pub mod ctl;
pub mod gc;
pub mod local_db;
mod local_root;
mod marker;
pub mod offer;
pub mod parts;
pub mod ports;
mod publish;
mod root_guard;
pub mod schedule;
pub mod servable;
pub mod service;
pub mod status;

use std::sync::{Arc, Mutex};

use filesyncd_merkle::MemNodeStore;
use filesyncd_p2p::PeerId;

pub use parts::{Parts, SyncError};
pub use service::{start, Running};
pub use status::{
    Effect, EffectError, RemoteChunks, SyncCommand, SyncHandle, SyncStatus, Transfer, Transfers,
};

use crate::daemon::Node;
use ctl::{CtlRequest, CtlResponse};

/// Answers the ctl protocol for the sync service.
pub struct CtlService {
    pub offers: Arc<offer::Offers>,
    pub nodes: Arc<Mutex<MemNodeStore>>,
    pub node: Node,
}

impl CtlService {
    /// Answers one ctl request from `peer` (a member: the swarm admits no
    /// one else to the ctl protocol).
    /// An offer whose items are all pending is held up to
    /// [`offer::OFFER_WAIT`] (a long poll: see [`offer::Offers::on_offer_wait`]).
    pub async fn handle(&self, peer: PeerId, bytes: &[u8]) -> Vec<u8> {
        let resp = match ctl::decode_request(bytes) {
            Err(e) => CtlResponse::Error(e.to_string()),
            Ok(CtlRequest::GetNodes { hashes }) => {
                CtlResponse::Nodes(offer::get_nodes(&self.nodes, &hashes))
            }
            Ok(CtlRequest::Offer { items }) => {
                let (peers, _) = ports::members(&self.node);
                match peers.iter().find(|(_, p)| **p == peer) {
                    Some((origin, _)) => CtlResponse::Offer(
                        self.offers
                            .on_offer_wait(*origin, items, offer::OFFER_WAIT)
                            .await,
                    ),
                    None => CtlResponse::Error("offer from a peer outside the membership".into()),
                }
            }
            Ok(CtlRequest::OfferInline { items }) => {
                let (peers, _) = ports::members(&self.node);
                if peers.values().any(|p| *p == peer) {
                    CtlResponse::Offer(self.offers.on_offer_inline(items).await)
                } else {
                    CtlResponse::Error("offer from a peer outside the membership".into())
                }
            }
        };
        ctl::encode_response(&resp)
    }
}
