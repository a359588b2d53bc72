//! Answers the ctl protocol ([`super::ctl`]) for the sync service: tree
//! nodes (`GetNodes`) from the node store, offers (`Offer`, `OfferInline`)
//! through the peer side of the acknowledgement contract
//! ([`super::offer::Offers`]).

use std::sync::{Arc, Mutex};

use filesyncd_merkle::MemNodeStore;
use filesyncd_p2p::PeerId;

use super::ctl::{self, CtlRequest, CtlResponse};
use super::{offer, ports};
use crate::daemon::Node;

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
