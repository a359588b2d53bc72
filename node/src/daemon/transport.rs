//! Raft over the p2p raft protocol.
//!
//! Outbound: [`P2pTransport`] implements [`RaftTransport`]: the request is
//! framed as one kind byte ([`RpcKind::as_u8`]) followed by the opaque raft
//! payload and sent with [`P2pClient::raft_request`] to the target's PeerId
//! (from its [`NodeInfo`]); the response bytes are raft's, untouched.
//! Inbound: [`serve`] drains the p2p event channel and answers each raft
//! request with [`RaftNode::handle_rpc`] on its own task, after binding the
//! node the request claims to come from to the peer it came from
//! ([`Senders`]): a member that sends a vote or entries in another known
//! member's name is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use filesyncd_p2p::{parse_addr, P2pClient, P2pEvent, PeerId, RequestError};
use filesyncd_raft::node::RaftNode;
use filesyncd_raft::transport::{RaftTransport, RpcKind, TransportError};
use filesyncd_raft::{NodeId, NodeInfo};
use tokio::sync::mpsc;

/// The raft transport of the daemon.
pub struct P2pTransport {
    client: P2pClient,
    /// Peers whose address was already handed to the swarm. A std Mutex:
    /// held for one set lookup, never across an `.await`.
    known: Mutex<HashSet<PeerId>>,
}

impl P2pTransport {
    pub fn new(client: P2pClient) -> Self {
        P2pTransport {
            client,
            known: Mutex::new(HashSet::new()),
        }
    }
}

/// Frames a raft request for the wire: kind byte, then payload.
pub fn frame(kind: RpcKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(kind.as_u8());
    out.extend_from_slice(payload);
    out
}

/// Splits a framed request; `None` if empty or of an unknown kind.
pub fn unframe(mut bytes: Vec<u8>) -> Option<(RpcKind, Vec<u8>)> {
    let first = *bytes.first()?;
    let kind = RpcKind::from_u8(first)?;
    bytes.remove(0);
    Some((kind, bytes))
}

fn map_error(target: NodeId, e: RequestError) -> TransportError {
    match e {
        RequestError::Timeout => TransportError::Timeout { target },
        RequestError::TooLarge { len, max } => TransportError::PayloadTooLarge { size: len, max },
        RequestError::ConnectionClosed | RequestError::Io(_) => TransportError::Network {
            target,
            reason: e.to_string(),
        },
        other => TransportError::Unreachable {
            target,
            reason: other.to_string(),
        },
    }
}

impl RaftTransport for P2pTransport {
    async fn call(
        &self,
        target: NodeId,
        target_info: &NodeInfo,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let peer: PeerId =
            target_info
                .peer_id
                .parse()
                .map_err(|_| TransportError::Unreachable {
                    target,
                    reason: format!("bad peer id {:?}", target_info.peer_id),
                })?;
        let fresh = self
            .known
            .lock()
            .map(|mut k| k.insert(peer))
            .unwrap_or(false);
        if fresh {
            if let Ok(addr) = parse_addr(&target_info.addr) {
                let _ = self.client.add_addresses(peer, vec![addr]).await;
            }
        }
        self.client
            .raft_request(peer, frame(kind, &payload))
            .await
            .map_err(|e| map_error(target, e))
    }
}

/// Where the sync service's ctl handler is put once it runs; ctl requests
/// before that are refused (the remote retries).
pub type CtlSlot = Arc<OnceLock<Arc<crate::daemon::sync::CtlService>>>;

/// Who may speak for which node id in raft requests.
///
/// The membership this node knows names each member's PeerId: a request
/// claiming a member's id ([`filesyncd_raft::network::claimed_sender`])
/// must come from that PeerId. Before this node knows any membership (a
/// joiner catching up), only the members its join payload named may speak,
/// each for its own id: a peer that answered an earlier join attempt is not
/// one of them. A claimed id the membership does not know is left to the p2p
/// gate (only members reach the raft protocol), so a node that lags behind a
/// membership change still hears the new leader.
#[derive(Clone, Debug, Default)]
pub struct Senders {
    /// From the join payload: node id → PeerId (text).
    seeds: std::collections::HashMap<NodeId, String>,
}

impl Senders {
    /// Seeds from the members a join payload named.
    pub fn from_payload(payload: &crate::daemon::join::JoinPayload) -> Senders {
        let seeds = payload
            .members
            .iter()
            .filter_map(|m| {
                Some((
                    crate::daemon::join::parse_node_id(&m.id)?,
                    m.peer_id.clone(),
                ))
            })
            .collect();
        Senders { seeds }
    }

    /// Whether `peer` may send a request that claims `claimed`, given the
    /// member ids and PeerIds of the membership this node knows.
    pub fn allows<'a>(
        &self,
        claimed: NodeId,
        peer: &str,
        members: impl IntoIterator<Item = (NodeId, &'a str)>,
    ) -> bool {
        let mut known_any = false;
        for (id, p) in members {
            if id == claimed {
                return p == peer;
            }
            known_any = true;
        }
        match self.seeds.get(&claimed) {
            Some(p) => p == peer,
            None => known_any,
        }
    }
}

/// Answers inbound raft and ctl requests until the event channel closes.
pub async fn serve(
    node: RaftNode<P2pTransport>,
    mut events: mpsc::Receiver<P2pEvent>,
    ctl: CtlSlot,
    senders: Senders,
) {
    while let Some(event) = events.recv().await {
        match event {
            P2pEvent::RaftRequest { peer, bytes, reply } => {
                let Some((kind, payload)) = unframe(bytes) else {
                    tracing::debug!(%peer, "undecodable raft request dropped");
                    continue;
                };
                if let Some(claimed) = filesyncd_raft::network::claimed_sender(kind, &payload) {
                    let peer_s = peer.to_string();
                    // Read in place (no clone of the metrics per request);
                    // the watch's read guard ends with this block, before
                    // any await.
                    let watch = node.metrics_watch();
                    let m = watch.borrow();
                    let ok = senders.allows(
                        claimed,
                        &peer_s,
                        m.membership_config
                            .membership()
                            .nodes()
                            .map(|(id, info)| (*id, info.peer_id.as_str())),
                    );
                    drop(m);
                    if !ok {
                        tracing::warn!(%peer, claimed = format!("{claimed:016x}"), ?kind, "raft request in another node's name dropped");
                        continue;
                    }
                }
                let node = node.clone();
                tokio::spawn(async move {
                    let out = node.handle_rpc(kind, payload).await;
                    if let Err(e) = reply.send(out) {
                        tracing::debug!(%peer, error = %e, "raft reply not sent");
                    }
                });
            }
            P2pEvent::CtlRequest { peer, bytes, reply } => {
                let Some(handler) = ctl.get().cloned() else {
                    tracing::debug!(%peer, "ctl request before the sync service runs");
                    continue;
                };
                tokio::spawn(async move {
                    let out = handler.handle(peer, &bytes).await;
                    if let Err(e) = reply.send(out) {
                        tracing::debug!(%peer, error = %e, "ctl reply not sent");
                    }
                });
            }
            P2pEvent::PeerFault { peer, banned } => {
                tracing::warn!(%peer, banned, "peer fault");
            }
            other => tracing::trace!(?other, "p2p event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_speaks_only_for_its_own_member() {
        let members = [(1, "peer-a"), (2, "peer-b")];
        let none = Senders::default();
        assert!(none.allows(1, "peer-a", members));
        assert!(!none.allows(1, "peer-b", members), "b in a's name");
        // An id the membership does not know: left to the gate.
        assert!(none.allows(9, "peer-x", members));
        // A joiner with no membership yet: only the payload's members, each
        // for itself.
        let seeded = Senders {
            seeds: [(1, "peer-a".to_string())].into_iter().collect(),
        };
        assert!(seeded.allows(1, "peer-a", []));
        assert!(!seeded.allows(1, "peer-spoof", []));
        assert!(!seeded.allows(7, "peer-spoof", []));
        assert!(!none.allows(7, "peer-spoof", []));
        // Once the membership is known, it decides over the seeds.
        assert!(seeded.allows(1, "peer-a", members));
        assert!(!seeded.allows(2, "peer-a", members));
    }

    #[test]
    fn framing_round_trips() {
        for k in RpcKind::ALL {
            assert_eq!(unframe(frame(k, b"abc")), Some((k, b"abc".to_vec())));
        }
        assert_eq!(unframe(vec![]), None);
        assert_eq!(unframe(vec![0, 1]), None);
    }
}
