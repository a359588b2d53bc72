//! [`MembersOnly`]: offers a wrapped behaviour only on member connections.
//!
//! On a connection whose remote was not a member when it was established,
//! the wrapped behaviour gets no handler: a `dummy` handler stands in, so
//! its protocols are not offered and a stranger's stream is refused at
//! protocol negotiation. The wrapped behaviour never learns of such
//! connections: their swarm events are filtered and connection counts
//! adjusted, handler notifications are pinned to member connections, and
//! its dials go through even while a stranger-era connection is up (see
//! [`crate::gate`] for the membership rules).

use crate::gate::{Membership, Standing};
use either::Either;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour,
    NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;
use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};
use std::time::Instant;

/// Offers the wrapped behaviour only on connections to members.
pub struct MembersOnly<B> {
    inner: B,
    membership: Membership,
    gated: HashSet<ConnectionId>,
    open: HashMap<PeerId, Vec<ConnectionId>>,
    /// Member connections through a relay circuit: `NotifyHandler::Any`
    /// goes to a direct connection when the peer has one.
    relayed: HashSet<ConnectionId>,
    /// Re-issue the wrapped behaviour's dials (see `poll`); off for
    /// behaviours whose dials carry addresses or conditions that matter.
    rewrite_dials: bool,
}

impl<B> MembersOnly<B> {
    pub fn new(inner: B, membership: Membership) -> Self {
        MembersOnly {
            inner,
            membership,
            gated: HashSet::new(),
            open: HashMap::new(),
            relayed: HashSet::new(),
            rewrite_dials: true,
        }
    }

    /// Passes the wrapped behaviour's dials to the swarm as they are: a
    /// relay client's dial to its relay, DCUtR's simultaneous dial (role
    /// override, given addresses), AutoNAT's dial-back on a new port. These
    /// behaviours track their dials by connection id, which a re-issued
    /// dial would not keep.
    pub fn passing_dials(mut self) -> Self {
        self.rewrite_dials = false;
        self
    }

    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn is_member_now(&self, peer: &PeerId) -> bool {
        self.membership.standing(peer, Instant::now()) == Standing::Member
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for MembersOnly<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.is_member_now(&peer) {
            self.inner
                .handle_established_inbound_connection(id, peer, local, remote)
                .map(Either::Left)
        } else {
            self.gated.insert(id);
            Ok(Either::Right(dummy::ConnectionHandler))
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, maybe_peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.is_member_now(&peer) {
            self.inner
                .handle_established_outbound_connection(id, peer, addr, role, port_use)
                .map(Either::Left)
        } else {
            self.gated.insert(id);
            Ok(Either::Right(dummy::ConnectionHandler))
        }
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if self.gated.contains(&e.connection_id) {
                    return;
                }
                if e.endpoint.is_relayed() {
                    self.relayed.insert(e.connection_id);
                }
                let list = self.open.entry(e.peer_id).or_default();
                list.push(e.connection_id);
                let other_established = list.len() - 1;
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    libp2p::swarm::behaviour::ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                if self.gated.remove(&e.connection_id) {
                    return;
                }
                self.relayed.remove(&e.connection_id);
                let remaining_established = match self.open.get_mut(&e.peer_id) {
                    Some(list) => {
                        list.retain(|c| *c != e.connection_id);
                        let n = list.len();
                        if n == 0 {
                            self.open.remove(&e.peer_id);
                        }
                        n
                    }
                    None => 0,
                };
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            FromSwarm::AddressChange(e) if self.gated.contains(&e.connection_id) => {}
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(e) => self.inner.on_connection_handler_event(peer, id, e),
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            let ev = match self.inner.poll(cx) {
                Poll::Ready(ev) => ev,
                Poll::Pending => return Poll::Pending,
            };
            // The wrapped behaviour dials a peer it believes disconnected;
            // the usual condition (`DisconnectedAndNotDialing`) would be
            // false while a stranger-era connection is up, and the dial
            // silently dropped. Dial anyway (unless a dial is under way):
            // the new connection gets full handlers.
            if let (true, ToSwarm::Dial { opts }) = (self.rewrite_dials, &ev) {
                if let Some(peer) = opts.get_peer_id() {
                    if !self.open.contains_key(&peer) {
                        return Poll::Ready(ToSwarm::Dial {
                            opts: DialOpts::peer_id(peer)
                                .condition(PeerCondition::NotDialing)
                                .build(),
                        });
                    }
                }
            }
            // `Any` could land on a gated connection: pin it to a full one.
            if let ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::Any,
                event,
            } = ev
            {
                let pick = self.open.get(&peer_id).and_then(|l| {
                    l.iter()
                        .find(|c| !self.relayed.contains(c))
                        .or_else(|| l.first())
                });
                match pick {
                    Some(id) => {
                        return Poll::Ready(ToSwarm::NotifyHandler {
                            peer_id,
                            handler: NotifyHandler::One(*id),
                            event: Either::Left(event),
                        })
                    }
                    None => {
                        tracing::debug!(%peer_id, "dropping a handler event: no member connection");
                        continue;
                    }
                }
            }
            return Poll::Ready(ev.map_in(Either::Left));
        }
    }
}
