//! The one task that owns the Swarm.
//!
//! It multiplexes: swarm events; client commands (each with a oneshot
//! reply; outbound requests wait in maps keyed by request id); replies the
//! app gives to inbound requests; finished join verifications; and a 1 s
//! tick that closes connections whose gating no longer holds. Nothing here
//! blocks: app work happens behind channels, verifications on spawned
//! tasks. Inbound requests are handed to the app with `try_send`: when the
//! app's event channel is full the request is dropped (the remote's request
//! fails and Raft retries) instead of stalling the swarm.

use crate::bulk::Bulk;
use crate::client::{Command, Proto};
use crate::config::Limits;
use crate::error::{P2pError, RequestError};
use crate::gate::Membership;
use crate::hooks::{JoinVerifier, P2pEvent, Reply};
use crate::join::{Action, JoinDone, JoinOutcome, JoinServer};
use crate::join_failures::{JoinFailures, MAX_TRACKED};
use crate::join_rate::{ip_of, JoinRate, MAX_TRACKED_IPS};
use crate::nat::{Nat, Reachability};
use crate::protocol::JoinResponse;
use crate::swarm::{Behaviour, BehaviourEvent};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{autonat, dcutr, identify, relay, upnp, Multiaddr, PeerId, Swarm};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type PendingReply = BoxFuture<'static, (Proto, ResponseChannel<Vec<u8>>, Option<Vec<u8>>)>;

/// Where the answer to an outbound raft or ctl request goes.
type BytesReply = oneshot::Sender<Result<Vec<u8>, RequestError>>;

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<P2pEvent>,
    membership: Membership,
    limits: Limits,
    join: JoinServer,
    join_done: mpsc::Receiver<JoinDone>,
    join_failures: JoinFailures,
    join_rate: JoinRate,
    /// Outbound raft and ctl requests by protocol and id: each
    /// request-response behaviour numbers its requests from 1, so an id
    /// alone names one request of each (a raft reply once went to the ctl
    /// request of the same id, and the other caller saw "stopped").
    pending: HashMap<(Proto, OutboundRequestId), BytesReply>,
    pending_join: HashMap<OutboundRequestId, oneshot::Sender<Result<JoinResponse, RequestError>>>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, P2pError>>>,
    replies: FuturesUnordered<PendingReply>,
    listen_addrs: Vec<Multiaddr>,
    nat: Nat,
    /// The bulk endpoint: told where members' bulk endpoints are (from
    /// identify), closed when this loop ends.
    bulk: Option<Bulk>,
}

impl EventLoop {
    pub fn new(
        swarm: Swarm<Behaviour>,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<P2pEvent>,
        membership: Membership,
        config: &crate::config::P2pConfig,
        verifier: Option<Arc<dyn JoinVerifier>>,
        listen_addrs: Vec<Multiaddr>,
    ) -> EventLoop {
        let limits = config.limits.clone();
        let (done_tx, done_rx) = mpsc::channel(64);
        let local = *swarm.local_peer_id();
        let join_failures = JoinFailures::new(MAX_TRACKED, limits.ban_duration);
        let join_rate = JoinRate::new(
            MAX_TRACKED_IPS,
            limits.join_burst,
            limits.join_requests_per_sec,
        );
        EventLoop {
            swarm,
            cmds,
            events,
            membership,
            limits,
            join: JoinServer::new(local, verifier, done_tx),
            join_done: done_rx,
            join_failures,
            join_rate,
            pending: HashMap::new(),
            pending_join: HashMap::new(),
            pending_dials: HashMap::new(),
            replies: FuturesUnordered::new(),
            listen_addrs,
            nat: Nat::new(config.nat.clone()),
            bulk: None,
        }
    }

    /// Hands the loop the bulk endpoint (see the `bulk` field).
    pub fn with_bulk(mut self, bulk: Option<Bulk>) -> EventLoop {
        self.bulk = bulk;
        self
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.on_command(cmd),
                },
                Some(done) = self.join_done.recv() => self.on_join_done(done),
                Some((proto, channel, resp)) = self.replies.next(), if !self.replies.is_empty() => {
                    if let Some(bytes) = resp {
                        let b = self.swarm.behaviour_mut();
                        let rr = match proto {
                            Proto::Raft => b.raft.inner_mut(),
                            Proto::Ctl => b.ctl.inner_mut(),
                        };
                        let _ = rr.send_response(channel, bytes);
                    }
                }
                _ = tick.tick() => self.sweep(),
            }
        }
        if let Some(bulk) = &self.bulk {
            bulk.shutdown();
        }
        tracing::debug!("p2p event loop stopped");
    }

    fn emit(&self, ev: P2pEvent) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(ev)) => {
                tracing::warn!("app event channel full: dropping {}", event_name(&ev));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let stale = self
            .swarm
            .behaviour()
            .gate
            .stale_connections(now, self.limits.stranger_window);
        for id in stale {
            self.swarm.close_connection(id);
        }
        self.maintain_relays(now);
    }

    /// Circuit reservations follow AutoNAT: made on member relays while
    /// this node is private, dropped once it is public or a relay is no
    /// longer a member.
    fn maintain_relays(&mut self, now: Instant) {
        let membership = self.membership.clone();
        for listener in self.nat.unwanted_relays(|p| membership.is_member(p)) {
            self.swarm.remove_listener(listener);
        }
        for (relay, addr) in self.nat.wanted_relays(now, |p| membership.is_member(p)) {
            match self.swarm.listen_on(addr.clone()) {
                Ok(listener) => {
                    tracing::info!(%relay, %addr, "not reachable directly: reserving a slot on a member relay");
                    self.nat.reserving(relay, listener);
                }
                Err(e) => tracing::warn!(%relay, %addr, "cannot listen on a relay circuit: {e}"),
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                proto,
                peer,
                bytes,
                reply,
            } => {
                if !self.membership.is_member(&peer) {
                    let _ = reply.send(Err(RequestError::NotMember(peer)));
                    return;
                }
                let max = match proto {
                    Proto::Raft => self.limits.max_raft_request,
                    Proto::Ctl => self.limits.max_ctl_message,
                };
                if bytes.len() > max {
                    let _ = reply.send(Err(RequestError::TooLarge {
                        len: bytes.len(),
                        max,
                    }));
                    return;
                }
                let b = self.swarm.behaviour_mut();
                let rr = match proto {
                    Proto::Raft => b.raft.inner_mut(),
                    Proto::Ctl => b.ctl.inner_mut(),
                };
                let id = rr.send_request(&peer, bytes);
                self.pending.insert((proto, id), reply);
            }
            Command::Join {
                peer,
                request,
                reply,
            } => {
                let id = self.swarm.behaviour_mut().join.send_request(&peer, request);
                self.pending_join.insert(id, reply);
            }
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(P2pError::Dial(e.to_string())));
                    }
                }
            }
            Command::AddAddresses { peer, addrs } => {
                self.swarm.behaviour_mut().gate.add_addresses(peer, addrs);
            }
            Command::SetMembers { members, reply } => {
                let local = *self.swarm.local_peer_id();
                let diff = self.membership.set(members, local);
                for peer in &diff.removed {
                    tracing::info!(%peer, "member removed: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(*peer);
                    self.swarm.behaviour_mut().gate.forget_addresses(peer);
                }
                for peer in &diff.added {
                    self.join_failures.remove(peer);
                }
                let _ = reply.send(());
            }
            Command::Unrefuse { peer } => self.membership.unrefuse(&peer),
            Command::Reconnect { peer } => {
                // The remote served our connections before it knew us as a
                // member (a joiner's): new ones get every member protocol.
                let _ = self.swarm.disconnect_peer_id(peer);
                let opts = DialOpts::peer_id(peer)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, "reconnect: {e}");
                }
            }
            Command::SetRevoked { peers, reply } => {
                for peer in self.membership.set_revoked(peers) {
                    if self.swarm.is_connected(&peer) {
                        tracing::info!(%peer, "revoked peer: disconnecting");
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                    self.swarm.behaviour_mut().gate.forget_addresses(&peer);
                }
                let _ = reply.send(());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::PeerPaths { reply } => {
                let _ = reply.send(self.nat.paths());
            }
            Command::NatView { reply } => {
                let _ = reply.send(self.nat.view(Instant::now()));
            }
            Command::Shutdown => {}
        }
    }

    fn on_join_done(&mut self, done: JoinDone) {
        match &done.outcome {
            JoinOutcome::Admitted { token_id, addrs } => {
                let gate = &mut self.swarm.behaviour_mut().gate;
                gate.add_addresses(done.peer, addrs.iter().cloned());
                self.join_failures.remove(&done.peer);
                self.emit(P2pEvent::Joined {
                    peer: done.peer,
                    token_id: token_id.clone(),
                });
            }
            JoinOutcome::BadProof => {
                let n = self.join_failures.hit(done.peer, Instant::now());
                if n >= self.limits.max_join_failures {
                    tracing::warn!(peer = %done.peer, "too many bad join proofs: banned");
                    self.membership
                        .ban(done.peer, Instant::now() + self.limits.ban_duration);
                    self.join_failures.remove(&done.peer);
                    // Answer first, the sweep closes the connection next tick.
                }
            }
            JoinOutcome::Refused => {}
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .join
            .send_response(done.channel, done.response);
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Raft(e)) => self.on_bytes_event(Proto::Raft, e),
            SwarmEvent::Behaviour(BehaviourEvent::Ctl(e)) => self.on_bytes_event(Proto::Ctl, e),
            SwarmEvent::Behaviour(BehaviourEvent::Join(e)) => self.on_join_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) if self.membership.is_member(&peer_id) => {
                self.learn_bulk(peer_id, connection_id, &info.agent_version);
                self.nat
                    .observed(peer_id, info.observed_addr.clone(), Instant::now());
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| {
                        !a.iter()
                            .any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
                    })
                    .take(8)
                    .collect();
                self.swarm
                    .behaviour_mut()
                    .gate
                    .add_addresses(peer_id, addrs.clone());
                self.emit(P2pEvent::Identified {
                    peer: peer_id,
                    listen_addrs: addrs,
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
                old,
                new,
            })) => {
                let r = match new {
                    autonat::NatStatus::Public(a) => Reachability::Public(a),
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                tracing::info!(?old, now = ?r, "reachability (AutoNAT, members as servers)");
                self.nat.set_reachability(r);
                self.maintain_relays(Instant::now());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(direct) => {
                    self.nat.punched(direct);
                    let relayed = self.nat.relayed_to(&remote_peer_id, direct);
                    tracing::info!(peer = %remote_peer_id, closing = relayed.len(), "hole punched: direct connection, closing the relayed one");
                    for id in relayed {
                        self.swarm.close_connection(id);
                    }
                }
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, "hole punching failed, staying relayed: {e}")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => match e {
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal: false,
                    ..
                } => tracing::info!(relay = %relay_peer_id, "relay reservation accepted"),
                other => tracing::debug!("relay client: {other:?}"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => {
                tracing::debug!("relay: {e:?}")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => match e {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "UPnP: the router maps the listen port")
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "UPnP: the port mapping expired")
                }
                upnp::Event::GatewayNotFound => {
                    tracing::debug!("UPnP: no gateway answered")
                }
                upnp::Event::NonRoutableGateway => {
                    tracing::info!("UPnP: the gateway is not routable (NAT behind NAT)")
                }
            },
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                self.nat.connected(connection_id, peer_id, &endpoint);
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    let member = self
                        .swarm
                        .behaviour()
                        .gate
                        .connection(&connection_id)
                        .is_some_and(|c| c.member);
                    self.emit(P2pEvent::PeerConnected {
                        peer: peer_id,
                        member,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.nat.closed(connection_id);
                if num_established == 0 {
                    self.nat.disconnected(&peer_id);
                    self.join.forget_peer(&peer_id);
                    self.emit(P2pEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(P2pError::Dial(error.to_string())));
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if self.nat.listen_addr(listener_id, &address) {
                    tracing::info!(%address, "listening through a member relay");
                } else if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                // The relay negotiated no hop protocol: it served this
                // connection before it knew us as a member.
                let refused = reason
                    .as_ref()
                    .err()
                    .is_some_and(|e| format!("{e:?}").contains("Unsupported"));
                if let Some(relay) = self
                    .nat
                    .listener_closed(listener_id, refused, Instant::now())
                {
                    tracing::info!(%relay, ?reason, "a relay reservation ended");
                    if refused {
                        let _ = self.swarm.disconnect_peer_id(relay);
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            _ => {}
        }
    }

    /// A member announced a bulk port: its bulk endpoint is that port on
    /// the IP this connection comes from (never an address it names, so a
    /// member can point us only at itself). Not through a relay.
    fn learn_bulk(&self, peer: PeerId, connection: ConnectionId, agent: &str) {
        let (Some(bulk), Some(port)) = (&self.bulk, crate::bulk::announced_port(agent)) else {
            return;
        };
        let Some(conn) = self.swarm.behaviour().gate.connection(&connection) else {
            return;
        };
        if conn
            .remote_addr
            .iter()
            .any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
        {
            return;
        }
        if let Some(ip) = ip_of(&conn.remote_addr) {
            bulk.learn(peer, SocketAddr::new(ip, port));
        }
    }

    fn on_bytes_event(&mut self, proto: Proto, e: request_response::Event<Vec<u8>, Vec<u8>>) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    // The gate did not offer the protocol to strangers; this
                    // catches a membership change since the connection began.
                    if !self.membership.is_member(&peer) {
                        tracing::debug!(%peer, "request from a non-member dropped");
                        return;
                    }
                    let max = match proto {
                        Proto::Raft => self.limits.max_raft_response,
                        Proto::Ctl => self.limits.max_ctl_message,
                    };
                    let (reply, rx) = Reply::new(max);
                    let ev = match proto {
                        Proto::Raft => P2pEvent::RaftRequest {
                            peer,
                            bytes: request,
                            reply,
                        },
                        Proto::Ctl => P2pEvent::CtlRequest {
                            peer,
                            bytes: request,
                            reply,
                        },
                    };
                    if self.emit(ev) {
                        // An app that neither replies nor drops the Reply
                        // must not pin this entry forever.
                        let wait = match proto {
                            Proto::Raft => self.limits.raft_timeout,
                            Proto::Ctl => self.limits.ctl_timeout,
                        };
                        self.replies.push(
                            async move {
                                let resp = tokio::time::timeout(wait, rx).await;
                                (proto, channel, resp.ok().and_then(|r| r.ok()))
                            }
                            .boxed(),
                        );
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&(proto, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                connection_id,
                request_id,
                error,
            } => {
                // The remote did not offer a member protocol on a connection
                // we use as a member connection: it was established before
                // the remote learned we are a member (just after a join), and
                // its handlers are fixed for its lifetime. Close it so the
                // next request dials a fresh one the remote admits.
                if matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                ) && self.membership.is_member(&peer)
                {
                    tracing::debug!(%peer, "member connection refused by the remote: reconnecting");
                    self.swarm.close_connection(connection_id);
                }
                if let Some(reply) = self.pending.remove(&(proto, request_id)) {
                    let _ = reply.send(Err(error.into()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, ?proto, "inbound request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_join_event(
        &mut self,
        e: request_response::Event<crate::protocol::JoinRequest, JoinResponse>,
    ) {
        match e {
            request_response::Event::Message {
                peer,
                connection_id,
                message,
            } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let observed = self
                        .swarm
                        .behaviour()
                        .gate
                        .connection(&connection_id)
                        .map(|c| c.remote_addr.clone());
                    let ip = observed.as_ref().and_then(ip_of);
                    if ip.is_some_and(|ip| !self.join_rate.allow(ip, Instant::now())) {
                        tracing::debug!(%peer, ?ip, "join request over the per-address rate");
                        let resp = JoinResponse::Rejected {
                            reason: crate::protocol::RejectReason::Unavailable,
                            hint: b"too many join attempts from this address: retry later".to_vec(),
                        };
                        let _ = self.swarm.behaviour_mut().join.send_response(channel, resp);
                        return;
                    }
                    if let Action::Respond(channel, resp) =
                        self.join.on_request(peer, request, channel, observed)
                    {
                        let _ = self.swarm.behaviour_mut().join.send_response(channel, resp);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_join.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending_join.remove(&request_id) {
                    let _ = reply.send(Err(error.into()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound join request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

fn event_name(ev: &P2pEvent) -> &'static str {
    match ev {
        P2pEvent::RaftRequest { .. } => "a raft request",
        P2pEvent::CtlRequest { .. } => "a ctl request",
        P2pEvent::PeerConnected { .. } => "a peer-connected event",
        P2pEvent::PeerDisconnected { .. } => "a peer-disconnected event",
        P2pEvent::Identified { .. } => "an identify event",
        P2pEvent::Joined { .. } => "a joined event",
        P2pEvent::PeerFault { .. } => "a peer-fault event",
    }
}
