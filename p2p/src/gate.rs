//! Membership gating.
//!
//! * [`Membership`]: the allow-list fed by the app (`set_members`), the set
//!   of removed members (refused outright until re-added), the revoked
//!   PeerIds the app reads from its replicated state (`set_revoked`: refused
//!   for good, member or not), and temporary bans (join abuse). Shared by
//!   the swarm, the chunk server and the bulk endpoint (which subscribes to
//!   its changes); written only by the event loop. The lock is never held
//!   across `.await`.
//! * [`Gate`]: a behaviour placed first in the swarm. It refuses connections
//!   of removed / banned peers and of strangers beyond
//!   `max_stranger_connections`; it remembers, per connection, whether the
//!   remote was a member when the connection was established; it serves
//!   member addresses to dials.
//! * [`crate::members_only::MembersOnly`]: wraps a behaviour so that its handler exists only on
//!   connections to members. On a stranger's connection the wrapped
//!   protocol is not offered at all (a `dummy` handler stands in), so a
//!   stranger's raft/ctl/chunk stream is refused at protocol negotiation
//!   before any payload is read. The wrapped behaviour never learns of such
//!   connections (their swarm events are filtered, connection counts
//!   adjusted).
//!
//! Invariant: for one connection every `MembersOnly` and the `Gate` decide
//! from the same `Membership` snapshot (the swarm calls them in one go,
//! and only the event loop writes membership). When membership changes, the
//! event loop closes connections whose decision no longer holds.

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::watch;

/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Default, Debug)]
struct MemberState {
    members: HashSet<PeerId>,
    removed: HashSet<PeerId>,
    revoked: HashSet<PeerId>,
    banned_until: HashMap<PeerId, Instant>,
}

/// How a peer is treated right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Member,
    Stranger,
    Refused,
}

/// The shared allow-list.
#[derive(Clone, Debug)]
pub struct Membership {
    state: Arc<RwLock<MemberState>>,
    /// A counter bumped after every change that can take rights away
    /// (members set, revocations, bans): holders of rights granted earlier
    /// (the bulk endpoint's connections, which the swarm's sweep does not
    /// see) wait on it and check their peer again.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            state: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// What changed in a `set_members` call.
#[derive(Debug, Default)]
pub struct MemberDiff {
    pub added: Vec<PeerId>,
    pub removed: Vec<PeerId>,
}

impl Membership {
    fn read<R>(&self, f: impl FnOnce(&MemberState) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// Writes, then tells subscribers (after the lock is released).
    fn write<R>(&self, f: impl FnOnce(&mut MemberState) -> R) -> R {
        let r = self.write_quiet(f);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        r
    }

    /// Writes without telling subscribers: for changes that take no
    /// rights away (expired bans).
    fn write_quiet<R>(&self, f: impl FnOnce(&mut MemberState) -> R) -> R {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Wakes after each change of the list (see the `changes` field); the
    /// receiver then reads [`Membership::standing`] again.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.read(|s| s.members.contains(peer))
    }

    pub fn members(&self) -> HashSet<PeerId> {
        self.read(|s| s.members.clone())
    }

    pub fn standing(&self, peer: &PeerId, now: Instant) -> Standing {
        self.read(|s| {
            if s.revoked.contains(peer)
                || s.removed.contains(peer)
                || s.banned_until.get(peer).is_some_and(|t| *t > now)
            {
                Standing::Refused
            } else if s.members.contains(peer) {
                Standing::Member
            } else {
                Standing::Stranger
            }
        })
    }

    /// Replaces the allow-list. Peers dropped from it are refused from now
    /// on; peers (re-)added are no longer refused or banned.
    pub fn set(&self, new: HashSet<PeerId>, local: PeerId) -> MemberDiff {
        self.write(|s| {
            let mut diff = MemberDiff::default();
            for p in s.members.difference(&new) {
                if *p != local {
                    diff.removed.push(*p);
                }
            }
            for p in new.difference(&s.members) {
                diff.added.push(*p);
            }
            for p in &diff.removed {
                s.removed.insert(*p);
            }
            for p in &new {
                s.removed.remove(p);
                s.banned_until.remove(p);
            }
            s.members = new;
            diff
        })
    }

    /// Replaces the set of revoked peers (removed members, as recorded by the
    /// replicated state); returns those not revoked before.
    pub fn set_revoked(&self, revoked: HashSet<PeerId>) -> Vec<PeerId> {
        self.write(|s| {
            let new: Vec<PeerId> = revoked.difference(&s.revoked).copied().collect();
            s.revoked = revoked;
            new
        })
    }

    /// Refuses `peer` until `until` (unless it is a member).
    pub fn ban(&self, peer: PeerId, until: Instant) {
        self.write(|s| {
            if !s.members.contains(&peer) {
                s.banned_until.insert(peer, until);
            }
        })
    }

    /// Lets a removed peer connect again as a stranger (e.g. to rejoin).
    pub fn unrefuse(&self, peer: &PeerId) {
        self.write(|s| {
            s.removed.remove(peer);
            s.banned_until.remove(peer);
        })
    }

    fn sweep_bans(&self, now: Instant) {
        self.write_quiet(|s| s.banned_until.retain(|_, t| *t > now))
    }
}

/// One established connection, as the gate saw it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: PeerId,
    pub member: bool,
    pub remote_addr: Multiaddr,
    pub since: Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {0} is refused (removed from the cluster or temporarily banned)")]
struct Refused(PeerId);

#[derive(Debug, thiserror::Error)]
#[error("too many connections from non-members ({0})")]
struct TooManyStrangers(usize);

/// Connection-level gate and member address book.
pub struct Gate {
    membership: Membership,
    max_strangers: usize,
    conns: HashMap<ConnectionId, ConnInfo>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

impl Gate {
    pub fn new(membership: Membership, max_strangers: usize) -> Gate {
        Gate {
            membership,
            max_strangers,
            conns: HashMap::new(),
            addrs: HashMap::new(),
        }
    }

    fn admit(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        remote_addr: &Multiaddr,
    ) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        let now = Instant::now();
        let member = match self.membership.standing(&peer, now) {
            Standing::Refused => return Err(ConnectionDenied::new(Refused(peer))),
            Standing::Member => true,
            Standing::Stranger => {
                let strangers = self.conns.values().filter(|c| !c.member).count();
                if strangers >= self.max_strangers {
                    return Err(ConnectionDenied::new(TooManyStrangers(strangers)));
                }
                false
            }
        };
        self.conns.insert(
            id,
            ConnInfo {
                peer,
                member,
                remote_addr: remote_addr.clone(),
                since: now,
            },
        );
        Ok(dummy::ConnectionHandler)
    }

    pub fn connection(&self, id: &ConnectionId) -> Option<&ConnInfo> {
        self.conns.get(id)
    }

    /// Connections that must close now: the peer is refused, it was a
    /// member and no longer is, or the connection was established as a
    /// stranger's more than `stranger_window` ago.
    pub fn stale_connections(
        &self,
        now: Instant,
        stranger_window: std::time::Duration,
    ) -> Vec<ConnectionId> {
        self.membership.sweep_bans(now);
        self.conns
            .iter()
            .filter(|(_, c)| match self.membership.standing(&c.peer, now) {
                Standing::Refused => true,
                // A joiner that became a member keeps its join connection
                // until the window ends (its Accepted reply may still be in
                // flight); member protocols get a fresh connection meanwhile.
                Standing::Member => !c.member && now.duration_since(c.since) > stranger_window,
                Standing::Stranger => c.member || now.duration_since(c.since) > stranger_window,
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Remembers addresses to dial `peer` at (newest first, bounded).
    pub fn add_addresses(&mut self, peer: PeerId, new: impl IntoIterator<Item = Multiaddr>) {
        let list = self.addrs.entry(peer).or_default();
        for a in new {
            list.retain(|x| *x != a);
            list.insert(0, a);
        }
        list.truncate(MAX_ADDRS_PER_PEER);
    }

    pub fn forget_addresses(&mut self, peer: &PeerId) {
        self.addrs.remove(peer);
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, peer, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = maybe_peer else {
            return Ok(Vec::new());
        };
        if self.membership.standing(&peer, Instant::now()) == Standing::Refused {
            return Err(ConnectionDenied::new(Refused(peer)));
        }
        Ok(self.addrs.get(&peer).cloned().unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, peer, addr)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(c) = event {
            self.conns.remove(&c.connection_id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_refuses_until_readded() {
        let m = Membership::default();
        let local = PeerId::random();
        let a = PeerId::random();
        let now = Instant::now();
        assert_eq!(m.standing(&a, now), Standing::Stranger);
        let d = m.set([local, a].into_iter().collect(), local);
        assert_eq!(d.added.len(), 2);
        assert_eq!(m.standing(&a, now), Standing::Member);
        let d = m.set([local].into_iter().collect(), local);
        assert_eq!(d.removed, vec![a]);
        assert_eq!(m.standing(&a, now), Standing::Refused);
        m.set([local, a].into_iter().collect(), local);
        assert_eq!(m.standing(&a, now), Standing::Member);
    }

    #[test]
    fn subscribers_hear_of_changes_but_not_of_expired_bans() {
        let m = Membership::default();
        let mut rx = m.subscribe();
        assert!(!rx.has_changed().unwrap());
        m.set([PeerId::random()].into_iter().collect(), PeerId::random());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        m.sweep_bans(Instant::now());
        assert!(!rx.has_changed().unwrap());
        m.set_revoked([PeerId::random()].into_iter().collect());
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn bans_expire_and_never_hit_members() {
        let m = Membership::default();
        let local = PeerId::random();
        let a = PeerId::random();
        let now = Instant::now();
        m.ban(a, now + std::time::Duration::from_secs(10));
        assert_eq!(m.standing(&a, now), Standing::Refused);
        assert_eq!(
            m.standing(&a, now + std::time::Duration::from_secs(11)),
            Standing::Stranger
        );
        m.set([local, a].into_iter().collect(), local);
        m.ban(a, now + std::time::Duration::from_secs(10));
        assert_eq!(m.standing(&a, now), Standing::Member);
    }

    #[test]
    fn revoked_peers_are_refused_for_good_even_unrefused() {
        let m = Membership::default();
        let local = PeerId::random();
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        assert_eq!(m.set_revoked([a].into_iter().collect()), vec![a]);
        assert_eq!(m.standing(&a, now), Standing::Refused);
        m.unrefuse(&a);
        assert_eq!(m.standing(&a, now), Standing::Refused);
        m.set([local, a].into_iter().collect(), local);
        assert_eq!(m.standing(&a, now), Standing::Refused, "revocation wins");
        // Only newly revoked peers are reported.
        assert_eq!(m.set_revoked([a, b].into_iter().collect()), vec![b]);
        assert_eq!(m.standing(&b, now), Standing::Refused);
    }
}
