//! Reachability behind NAT: what members observe, what AutoNAT concluded,
//! which member relays this node holds a reservation on, and how each
//! member connection goes (direct or through a relay).
//!
//! [`Nat`] is state of the event loop (its one owner); the loop feeds it
//! swarm events and acts on what it answers (listen on a relay circuit,
//! close a relayed connection once a direct one exists). The app reads a
//! [`NatView`] and each peer's [`PeerPath`] through the client.
//!
//! Policy:
//! * AutoNAT (members as servers) says whether members can dial this node
//!   at what they observe. While it says `Private`, the node reserves a slot
//!   on up to `max_relays` members it reaches directly and dialed itself
//!   (their address works from here), and listens on the circuit address;
//!   the app records that address as the member address, so the others
//!   dial this node through the relay.
//! * A relayed member connection tries DCUtR hole punching; once a direct
//!   connection exists the relayed ones to that peer are closed, so all
//!   traffic (Raft, chunks) takes the direct path.
//! * Everything is bounded: observations by at most [`MAX_OBSERVERS`]
//!   peers, reservations by `max_relays`, connections by the swarm.

use crate::config::NatConfig;
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most peers whose observation of our address is kept.
pub const MAX_OBSERVERS: usize = 256;
/// An observation older than this is dropped.
const OBSERVATION_TTL: Duration = Duration::from_secs(30 * 60);
/// Wait before trying a relay again after its reservation failed or ended.
const RELAY_RETRY: Duration = Duration::from_secs(15);
/// Wait after a relay refused the hop protocol on a connection made before
/// it knew this node as a member: the connection is closed, and the next
/// attempt dials a fresh one, which it serves in full.
const RELAY_RETRY_FRESH: Duration = Duration::from_secs(2);

/// What AutoNAT concluded about this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// No probe answered yet (or AutoNAT is off).
    Unknown,
    /// Members dialed this node back at this address.
    Public(Multiaddr),
    /// Members could not dial this node back at any address it has.
    Private,
}

/// How this node's connection to a peer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerPath {
    /// At least one connection without a relay.
    Direct,
    /// Only through a relay circuit.
    Relayed,
}

impl PeerPath {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerPath::Direct => "direct",
            PeerPath::Relayed => "relayed",
        }
    }
}

/// This node's reachability, for the app (`status`, the member record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatView {
    pub reachability: Reachability,
    /// Addresses members currently observe this node at, most observers
    /// first, each once.
    pub observed: Vec<(Multiaddr, usize)>,
    /// Circuit addresses this node listens on (`.../p2p/RELAY/p2p-circuit`),
    /// one per accepted reservation.
    pub relayed: Vec<Multiaddr>,
}

struct Conn {
    peer: PeerId,
    relayed: bool,
    /// The address we dialed (we are the dialer of a direct connection).
    dialed: Option<Multiaddr>,
}

struct Reservation {
    listener: ListenerId,
    /// The circuit address, once the relay accepted.
    addr: Option<Multiaddr>,
}

pub(crate) struct Nat {
    config: NatConfig,
    reachability: Reachability,
    observed: HashMap<PeerId, (Multiaddr, Instant)>,
    conns: HashMap<ConnectionId, Conn>,
    relays: HashMap<PeerId, Reservation>,
    retry_after: HashMap<PeerId, Instant>,
    /// Addresses of peers this node reached on a direct connection it
    /// dialed itself (not a hole punch): relay candidates, kept after the
    /// connection closes so a relay can be dialed again. At most
    /// [`MAX_OBSERVERS`].
    dialable: HashMap<PeerId, Multiaddr>,
}

impl Nat {
    pub fn new(config: NatConfig) -> Nat {
        Nat {
            config,
            reachability: Reachability::Unknown,
            observed: HashMap::new(),
            conns: HashMap::new(),
            relays: HashMap::new(),
            retry_after: HashMap::new(),
            dialable: HashMap::new(),
        }
    }

    pub fn connected(&mut self, id: ConnectionId, peer: PeerId, endpoint: &ConnectedPoint) {
        let relayed = endpoint.is_relayed();
        let dialed = match endpoint {
            ConnectedPoint::Dialer {
                address,
                role_override: libp2p::core::Endpoint::Dialer,
                ..
            } if !relayed => Some(without_p2p(address)),
            _ => None,
        };
        if let Some(a) = &dialed {
            if self.dialable.len() >= MAX_OBSERVERS && !self.dialable.contains_key(&peer) {
                let any = self.dialable.keys().next().copied();
                if let Some(p) = any {
                    self.dialable.remove(&p);
                }
            }
            self.dialable.insert(peer, a.clone());
        }
        self.conns.insert(
            id,
            Conn {
                peer,
                relayed,
                dialed,
            },
        );
    }

    pub fn closed(&mut self, id: ConnectionId) {
        self.conns.remove(&id);
    }

    /// The last connection to `peer` closed: what it observed is stale.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.observed.remove(peer);
    }

    /// A hole punch made connection `id`: its address works from this node
    /// only, so the peer is no relay candidate for others.
    pub fn punched(&mut self, id: ConnectionId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.dialed = None;
            let peer = c.peer;
            if !self
                .conns
                .values()
                .any(|c| c.peer == peer && c.dialed.is_some())
            {
                self.dialable.remove(&peer);
            }
        }
    }

    /// A member told us (identify) where it sees us.
    pub fn observed(&mut self, peer: PeerId, addr: Multiaddr, now: Instant) {
        if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            return;
        }
        if self.observed.len() >= MAX_OBSERVERS && !self.observed.contains_key(&peer) {
            if let Some(oldest) = self
                .observed
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(p, _)| *p)
            {
                self.observed.remove(&oldest);
            }
        }
        self.observed.insert(peer, (without_p2p(&addr), now));
    }

    pub fn set_reachability(&mut self, r: Reachability) {
        self.reachability = r;
    }

    /// How the connection to each connected peer goes.
    pub fn paths(&self) -> HashMap<PeerId, PeerPath> {
        let mut out = HashMap::new();
        for c in self.conns.values() {
            let path = if c.relayed {
                PeerPath::Relayed
            } else {
                PeerPath::Direct
            };
            out.entry(c.peer)
                .and_modify(|p| {
                    if path == PeerPath::Direct {
                        *p = PeerPath::Direct
                    }
                })
                .or_insert(path);
        }
        out
    }

    /// Relayed connections to `peer` other than `keep`: to close once a
    /// direct one exists.
    pub fn relayed_to(&self, peer: &PeerId, keep: ConnectionId) -> Vec<ConnectionId> {
        let has_direct = self
            .conns
            .iter()
            .any(|(_, c)| c.peer == *peer && !c.relayed);
        if !has_direct {
            return Vec::new();
        }
        self.conns
            .iter()
            .filter(|(id, c)| c.peer == *peer && c.relayed && **id != keep)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn view(&self, now: Instant) -> NatView {
        let mut counts: Vec<(Multiaddr, usize)> = Vec::new();
        for (addr, t) in self.observed.values() {
            if now.saturating_duration_since(*t) > OBSERVATION_TTL {
                continue;
            }
            match counts.iter_mut().find(|(a, _)| a == addr) {
                Some((_, n)) => *n += 1,
                None => counts.push((addr.clone(), 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut relayed: Vec<Multiaddr> = self
            .relays
            .values()
            .filter_map(|r| r.addr.clone())
            .collect();
        relayed.sort();
        NatView {
            reachability: self.reachability.clone(),
            observed: counts,
            relayed,
        }
    }

    /// Reservations to make now: `(relay, circuit listen address)`, while
    /// AutoNAT says private and fewer than `max_relays` are held. A relay
    /// is a member this node reaches on a direct connection it dialed.
    pub fn wanted_relays(
        &self,
        now: Instant,
        is_member: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Multiaddr)> {
        if !self.config.relay || self.reachability != Reachability::Private {
            return Vec::new();
        }
        let room = self.config.max_relays.saturating_sub(self.relays.len());
        let mut picked: Vec<(PeerId, Multiaddr)> = Vec::new();
        let mut candidates: Vec<(&PeerId, &Multiaddr)> = self
            .dialable
            .iter()
            .filter(|(_, a)| !a.iter().any(|p| p == Protocol::P2pCircuit))
            .collect();
        candidates.sort();
        for (peer, addr) in candidates {
            if picked.len() >= room {
                break;
            }
            if self.relays.contains_key(peer)
                || picked.iter().any(|(p, _)| p == peer)
                || self.retry_after.get(peer).is_some_and(|t| *t > now)
                || !is_member(peer)
            {
                continue;
            }
            let circuit = addr
                .clone()
                .with(Protocol::P2p(*peer))
                .with(Protocol::P2pCircuit);
            picked.push((*peer, circuit));
        }
        picked
    }

    pub fn reserving(&mut self, relay: PeerId, listener: ListenerId) {
        self.relays.insert(
            relay,
            Reservation {
                listener,
                addr: None,
            },
        );
    }

    /// A listen address was reported: true when it is one of our circuits.
    pub fn listen_addr(&mut self, listener: ListenerId, addr: &Multiaddr) -> bool {
        match self.relays.values_mut().find(|r| r.listener == listener) {
            Some(r) => {
                r.addr = Some(addr.clone());
                true
            }
            None => false,
        }
    }

    /// A listener closed: the relay (rested before the next try) when it
    /// was a circuit. `refused`: the relay did not offer the hop protocol on
    /// that connection (made before it knew this node as a member); the
    /// caller closes it and the relay is tried again soon on a fresh one.
    pub fn listener_closed(
        &mut self,
        listener: ListenerId,
        refused: bool,
        now: Instant,
    ) -> Option<PeerId> {
        let relay = self
            .relays
            .iter()
            .find(|(_, r)| r.listener == listener)
            .map(|(p, _)| *p);
        let p = relay?;
        self.relays.remove(&p);
        let rest = if refused {
            RELAY_RETRY_FRESH
        } else {
            RELAY_RETRY
        };
        self.retry_after.retain(|_, t| *t > now);
        self.retry_after.insert(p, now + rest);
        Some(p)
    }

    /// Circuit listeners to remove: all of them once this node is public,
    /// and those on relays that are no longer members.
    pub fn unwanted_relays(&self, is_member: impl Fn(&PeerId) -> bool) -> Vec<ListenerId> {
        let public = matches!(self.reachability, Reachability::Public(_));
        self.relays
            .iter()
            .filter(|(p, _)| public || !is_member(p))
            .map(|(_, r)| r.listener)
            .collect()
    }
}

/// `addr` without a trailing `/p2p/PEER`.
fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::transport::PortUse;
    use libp2p::core::Endpoint;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn dialer(a: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: ma(a),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn listener(local: &str) -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: ma(local),
            send_back_addr: ma("/ip4/198.51.100.9/udp/9/quic-v1"),
        }
    }

    #[test]
    fn a_private_node_reserves_on_members_it_dialed_up_to_the_bound() {
        let mut nat = Nat::new(NatConfig {
            max_relays: 2,
            ..NatConfig::default()
        });
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let now = Instant::now();
        for (i, p) in peers.iter().enumerate() {
            nat.connected(
                ConnectionId::new_unchecked(i),
                *p,
                &dialer(&format!(
                    "/ip4/198.51.100.{}/udp/7400/quic-v1/p2p/{p}",
                    i + 1
                )),
            );
        }
        // An inbound connection gives no address that is known to work.
        nat.connected(
            ConnectionId::new_unchecked(9),
            PeerId::random(),
            &listener("/ip4/10.0.0.2/udp/7400/quic-v1"),
        );
        assert!(nat.wanted_relays(now, |_| true).is_empty(), "unknown: none");
        nat.set_reachability(Reachability::Private);
        let not_member = peers[0];
        let want = nat.wanted_relays(now, |p| *p != not_member);
        assert_eq!(want.len(), 2);
        for (p, a) in &want {
            assert_ne!(*p, not_member);
            assert!(
                a.to_string().ends_with(&format!("/p2p/{p}/p2p-circuit")),
                "{a}"
            );
            assert_eq!(
                a.iter().filter(|x| matches!(x, Protocol::P2p(_))).count(),
                1
            );
        }
        let l1 = ListenerId::next();
        nat.reserving(want[0].0, l1);
        assert_eq!(nat.wanted_relays(now, |p| *p != not_member).len(), 1);
        let circuit = want[0].1.clone();
        assert!(nat.listen_addr(l1, &circuit));
        assert!(!nat.listen_addr(ListenerId::next(), &circuit));
        assert_eq!(nat.view(now).relayed, vec![circuit]);
        // A closed reservation rests its relay before it is tried again.
        assert_eq!(nat.listener_closed(l1, false, now), Some(want[0].0));
        assert_eq!(nat.listener_closed(l1, false, now), None);
        let again = nat.wanted_relays(now, |p| *p != not_member);
        assert!(again.iter().all(|(p, _)| *p != want[0].0));
        let later = nat.wanted_relays(now + RELAY_RETRY * 2, |p| *p != not_member);
        assert!(later.iter().any(|(p, _)| *p == want[0].0));
        // Public: every circuit listener goes.
        let l2 = ListenerId::next();
        nat.reserving(want[1].0, l2);
        assert!(nat.unwanted_relays(|_| true).is_empty());
        nat.set_reachability(Reachability::Public(ma("/ip4/198.51.100.7/udp/1/quic-v1")));
        assert_eq!(nat.unwanted_relays(|_| true), vec![l2]);
        assert!(nat.wanted_relays(now, |_| true).is_empty());
    }

    #[test]
    fn a_peer_with_a_direct_connection_is_direct_and_its_relayed_ones_close() {
        let mut nat = Nat::new(NatConfig::default());
        let b = PeerId::random();
        let relayed = ConnectionId::new_unchecked(1);
        nat.connected(
            relayed,
            b,
            &dialer("/ip4/198.51.100.10/udp/7400/quic-v1/p2p/12D3KooWRBhwfeP2Y7TCx1Q4ZfCDiJbHqmgmuN9Fz6xZ1SemPbTR/p2p-circuit"),
        );
        assert_eq!(nat.paths()[&b], PeerPath::Relayed);
        assert!(nat
            .relayed_to(&b, ConnectionId::new_unchecked(2))
            .is_empty());
        let direct = ConnectionId::new_unchecked(2);
        nat.connected(direct, b, &listener("/ip4/10.2.0.2/udp/7400/quic-v1"));
        assert_eq!(nat.paths()[&b], PeerPath::Direct);
        assert_eq!(nat.relayed_to(&b, direct), vec![relayed]);
        nat.closed(relayed);
        assert!(nat.relayed_to(&b, direct).is_empty());
        nat.closed(direct);
        assert!(!nat.paths().contains_key(&b));
    }

    #[test]
    fn a_punched_peer_is_no_relay_and_a_refusing_relay_is_retried_soon() {
        let mut nat = Nat::new(NatConfig::default());
        nat.set_reachability(Reachability::Private);
        let now = Instant::now();
        let (r, b) = (PeerId::random(), PeerId::random());
        let to_r = ConnectionId::new_unchecked(1);
        nat.connected(to_r, r, &dialer("/ip4/198.51.100.10/udp/7400/quic-v1"));
        let punched = ConnectionId::new_unchecked(2);
        nat.connected(punched, b, &dialer("/ip4/198.51.100.2/udp/7400/quic-v1"));
        nat.punched(punched);
        let want = nat.wanted_relays(now, |_| true);
        assert_eq!(want.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![r]);
        // The relay stays a candidate after its connection closed (it is
        // dialed again through the circuit address).
        nat.closed(to_r);
        let l = ListenerId::next();
        nat.reserving(r, l);
        assert_eq!(nat.listener_closed(l, true, now), Some(r));
        assert!(nat.wanted_relays(now, |_| true).is_empty());
        let soon = now + RELAY_RETRY_FRESH + Duration::from_millis(1);
        assert_eq!(nat.wanted_relays(soon, |_| true).len(), 1);
        // A disconnected peer's observation goes.
        nat.observed(
            b,
            "/ip4/198.51.100.1/udp/7400/quic-v1".parse().unwrap(),
            now,
        );
        nat.disconnected(&b);
        assert!(nat.view(now).observed.is_empty());
    }

    #[test]
    fn observations_are_counted_bounded_and_expire() {
        let mut nat = Nat::new(NatConfig::default());
        let now = Instant::now();
        let a = ma("/ip4/198.51.100.1/udp/7400/quic-v1");
        let b = ma("/ip4/10.1.0.2/udp/7400/quic-v1");
        for _ in 0..3 {
            nat.observed(PeerId::random(), a.clone(), now);
        }
        let p = PeerId::random();
        nat.observed(p, b.clone(), now);
        let v = nat.view(now);
        assert_eq!(v.observed, vec![(a.clone(), 3), (b.clone(), 1)]);
        // The same peer's newer observation replaces its old one.
        nat.observed(p, a.clone(), now);
        assert_eq!(nat.view(now).observed, vec![(a.clone(), 4)]);
        assert!(nat.view(now + OBSERVATION_TTL * 2).observed.is_empty());
        for i in 0..(MAX_OBSERVERS + 10) {
            nat.observed(
                PeerId::random(),
                a.clone(),
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(nat.observed.len(), MAX_OBSERVERS);
    }
}
