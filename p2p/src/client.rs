//! The handle the rest of the program holds: [`P2pClient`], and [`start`].
//!
//! One task (the event loop) owns the Swarm. A `P2pClient` is a cheap clone
//! that sends [`Command`]s with oneshot replies over a bounded channel;
//! inbound requests and peer news arrive on the bounded [`P2pEvent`]
//! channel returned by [`start`]. Chunk fetches do not go through the event
//! loop: they take a bulk stream from the bulk dialer (`crate::bulk`) or
//! open libp2p-stream streams directly (its `Control` is made for that),
//! bounded by semaphores shared by all clones.

use crate::addr::parse_addr;
use crate::bulk::{Bulk, BulkConnection, BulkStats, Counters};
use crate::chunks::compressor::{CompressionStats, Compressor};
use crate::chunks::faults::Faults;
use crate::chunks::fetch::{self, ChunkFetch, FetchPlan, FetchShared};
use crate::chunks::serve::{serve_loop, ServeShared};
use crate::chunks::PerPeer;
use crate::config::{Limits, P2pConfig};
use crate::error::{JoinError, P2pError, RequestError};
use crate::event_loop::EventLoop;
use crate::gate::Membership;
use crate::hooks::{ChunkProvider, JoinVerifier, P2pEvent};
use crate::join::run_joiner;
use crate::nat::{NatView, PeerPath};
use crate::protocol::{JoinRequest, JoinResponse, CHUNKS_PROTOCOL};
use crate::swarm;
use crate::token::Token;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Capacity of the command channel.
const COMMAND_BUFFER: usize = 256;
/// How long `start` waits for listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// What the app plugs in.
#[derive(Clone)]
pub struct Services {
    /// Serves chunk bytes to members.
    pub chunks: Arc<dyn ChunkProvider>,
    /// Checks join proofs. `None`: joins are answered `Unavailable`.
    pub join_verifier: Option<Arc<dyn JoinVerifier>>,
}

/// Which request-response protocol a command is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Raft,
    Ctl,
}

type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    Request {
        proto: Proto,
        peer: PeerId,
        bytes: Vec<u8>,
        reply: Reply<Result<Vec<u8>, RequestError>>,
    },
    Join {
        peer: PeerId,
        request: JoinRequest,
        reply: Reply<Result<JoinResponse, RequestError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<Result<PeerId, P2pError>>,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    SetMembers {
        members: HashSet<PeerId>,
        reply: Reply<()>,
    },
    Unrefuse {
        peer: PeerId,
    },
    Reconnect {
        peer: PeerId,
    },
    SetRevoked {
        peers: HashSet<PeerId>,
        reply: Reply<()>,
    },
    ListenAddrs {
        reply: Reply<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: Reply<Vec<PeerId>>,
    },
    PeerPaths {
        reply: Reply<HashMap<PeerId, PeerPath>>,
    },
    NatView {
        reply: Reply<NatView>,
    },
    Shutdown,
}

/// A successful join.
#[derive(Clone, Debug)]
pub struct Joined {
    /// The member that admitted us.
    pub member: PeerId,
    /// The app's opaque accept payload (cluster info).
    pub payload: Vec<u8>,
}

/// Cloneable handle to the p2p node.
#[derive(Clone)]
pub struct P2pClient {
    local: PeerId,
    cmds: mpsc::Sender<Command>,
    fetch: Arc<FetchShared>,
    bulk: Option<Bulk>,
    compressor: Arc<Compressor>,
}

/// Builds the swarm, starts listening, spawns the event loop and the chunk
/// server. Returns the client and the inbound event channel.
pub async fn start(
    keypair: Keypair,
    config: P2pConfig,
    services: Services,
) -> Result<(P2pClient, mpsc::Receiver<P2pEvent>), P2pError> {
    config.limits.check()?;
    config.quic.check(&config.limits)?;
    config.bulk.check(&config.limits)?;
    config.compression.check()?;
    let local = keypair.public().to_peer_id();
    let membership = Membership::default();
    let limits = config.limits.clone();
    // One set of serving permits, one compressor and frame cache, for both
    // paths (libp2p-stream and bulk).
    let compressor = Arc::new(Compressor::new(&config.compression));
    let serve = Arc::new(ServeShared {
        limits: limits.clone(),
        membership: membership.clone(),
        provider: services.chunks.clone(),
        global: Arc::new(Semaphore::new(limits.serve_streams_global)),
        per_peer: PerPeer::new(limits.serve_streams_per_peer),
        compressor: compressor.clone(),
    });
    let counters = Arc::new(Counters::default());
    // The bulk endpoint first: its port goes into identify's agent version.
    let bulk = Bulk::start(
        &keypair,
        &config,
        &membership,
        serve.clone(),
        counters.clone(),
    )?;
    // Closes the bulk endpoint if the rest of the start fails.
    let mut unwind = ShutdownOnDrop(bulk.clone());
    let mut config = config;
    if let Some(b) = &bulk {
        config.agent_version = crate::bulk::announce(&config.agent_version, b.advertised_port());
    }
    let mut swarm = swarm::build(keypair, &config, &membership)?;
    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }
    let mut listen_addrs = Vec::new();
    let wait = async {
        while !listeners.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    listeners.remove(&listener_id);
                    listen_addrs.push(address);
                }
                SwarmEvent::ListenerClosed {
                    reason: Err(e),
                    addresses,
                    ..
                } => {
                    return Err(P2pError::Listen {
                        addr: format!("{addresses:?}"),
                        reason: e.to_string(),
                    })
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(P2pError::Listen {
                        addr: String::new(),
                        reason: error.to_string(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(LISTEN_WAIT, wait)
        .await
        .map_err(|_| P2pError::Listen {
            addr: format!("{:?}", config.listen),
            reason: "no address reported in time".into(),
        })??;

    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    if config.nat.upnp {
        // UPnP IGD is the `upnp` behaviour; NAT-PMP and PCP run beside it.
        // The configured address: with 0.0.0.0 the first one reported may
        // be loopback.
        let ports = config.listen.iter().filter_map(|a| {
            let mut it = a.iter();
            match (it.next(), it.next()) {
                (Some(Protocol::Ip4(ip)), Some(Protocol::Udp(port))) if !ip.is_loopback() => {
                    Some(port)
                }
                _ => None,
            }
        });
        if let Some(port) = ports.into_iter().next() {
            tokio::spawn(crate::portmap::keep_mapping(port));
        }
    }
    let mut control = swarm.behaviour_mut().chunks.inner_mut().new_control();
    let incoming = control
        .accept(CHUNKS_PROTOCOL)
        .map_err(|e| P2pError::Transport(e.to_string()))?;
    tokio::spawn(serve_loop(incoming, serve));

    let (events_tx, events_rx) = mpsc::channel(config.event_buffer.max(1));
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_BUFFER);
    let fetch = Arc::new(FetchShared {
        limits: limits.clone(),
        membership: membership.clone(),
        control,
        global: Arc::new(Semaphore::new(limits.fetch_streams_global)),
        per_peer: PerPeer::new(limits.fetch_streams_per_peer),
        faults: Mutex::new(Faults::new(limits.fault_threshold, limits.ban_duration)),
        events: events_tx.clone(),
        bulk: bulk.as_ref().map(|b| b.dialer.clone()),
        counters,
    });
    let event_loop = EventLoop::new(
        swarm,
        cmd_rx,
        events_tx,
        membership,
        &config,
        services.join_verifier,
        listen_addrs,
    )
    .with_bulk(bulk.clone());
    tokio::spawn(event_loop.run());
    unwind.0 = None;
    Ok((
        P2pClient {
            local,
            cmds: cmd_tx,
            fetch,
            bulk,
            compressor,
        },
        events_rx,
    ))
}

/// Shuts the bulk endpoint down when dropped armed (a failed start).
struct ShutdownOnDrop(Option<Bulk>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.shutdown();
        }
    }
}

impl P2pClient {
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    pub fn limits(&self) -> &Limits {
        &self.fetch.limits
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| P2pError::Shutdown)?;
        rx.await.map_err(|_| P2pError::Shutdown)
    }

    /// Addresses we listen on (as reported by the transport).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, P2pError> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// How the connection to each connected peer goes (direct or relayed).
    pub async fn peer_paths(&self) -> Result<HashMap<PeerId, PeerPath>, P2pError> {
        self.call(|reply| Command::PeerPaths { reply }).await
    }

    /// This node's reachability: AutoNAT's answer, where members observe
    /// it, the relay circuits it listens on.
    pub async fn nat_view(&self) -> Result<NatView, P2pError> {
        self.call(|reply| Command::NatView { reply }).await
    }

    /// Dials a multiaddr or `host:port`; returns the remote's PeerId.
    pub async fn dial(&self, addr: &str) -> Result<PeerId, P2pError> {
        let addr = parse_addr(addr)?;
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Remembers where `peer` can be dialed (Raft and chunk requests dial
    /// members by PeerId).
    pub async fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), P2pError> {
        self.cmds
            .send(Command::AddAddresses { peer, addrs })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    /// Replaces the allow-list. Removed members are disconnected and refused
    /// until re-added (or [`P2pClient::unrefuse`]d).
    pub async fn set_members(&self, members: HashSet<PeerId>) -> Result<(), P2pError> {
        self.call(|reply| Command::SetMembers { members, reply })
            .await
    }

    /// Replaces the revoked PeerIds (removed members, from the replicated
    /// state): refused for good and disconnected now. Bounded by the caller.
    pub async fn set_revoked(&self, peers: HashSet<PeerId>) -> Result<(), P2pError> {
        self.call(|reply| Command::SetRevoked { peers, reply })
            .await
    }

    /// Closes the connections to `peer` and dials it again: after a join,
    /// the admitting member served our connection as a stranger's; a fresh
    /// one gets every member protocol (Raft, chunks, relay) at once.
    pub async fn reconnect(&self, peer: PeerId) -> Result<(), P2pError> {
        self.cmds
            .send(Command::Reconnect { peer })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    /// Lets a removed peer connect again as a stranger (to rejoin).
    pub async fn unrefuse(&self, peer: PeerId) -> Result<(), P2pError> {
        self.cmds
            .send(Command::Unrefuse { peer })
            .await
            .map_err(|_| P2pError::Shutdown)
    }

    async fn request(
        &self,
        proto: Proto,
        peer: PeerId,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Request {
                proto,
                peer,
                bytes,
                reply: tx,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        rx.await.map_err(|_| RequestError::Shutdown)?
    }

    /// Sends an opaque Raft RPC to a member and waits for its response.
    pub async fn raft_request(
        &self,
        peer: PeerId,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        self.request(Proto::Raft, peer, bytes).await
    }

    /// Sends an opaque control message to a member and waits for its response.
    pub async fn ctl_request(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        self.request(Proto::Ctl, peer, bytes).await
    }

    async fn join_request(
        &self,
        peer: PeerId,
        request: JoinRequest,
    ) -> Result<JoinResponse, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Join {
                peer,
                request,
                reply: tx,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        rx.await.map_err(|_| RequestError::Shutdown)?
    }

    /// Joins a cluster through the member at `addr` (multiaddr or
    /// `host:port`) with `token`. Returns the member's PeerId and the app's
    /// accept payload. The token's secret never goes on the wire.
    pub async fn join(&self, addr: &str, token: &Token) -> Result<Joined, JoinError> {
        self.join_with(addr, token, Vec::new()).await
    }

    /// [`P2pClient::join`], presenting `info` (opaque, at most
    /// [`crate::protocol::MAX_JOIN_INFO`] bytes) to the member's verifier
    /// ([`crate::JoinApplication::info`]).
    pub async fn join_with(
        &self,
        addr: &str,
        token: &Token,
        info: Vec<u8>,
    ) -> Result<Joined, JoinError> {
        if info.len() > crate::protocol::MAX_JOIN_INFO {
            return Err(JoinError::Protocol("join info too large"));
        }
        let addr = parse_addr(addr)?;
        let member = self
            .call(|reply| Command::Dial { addr, reply })
            .await
            .map_err(|_| JoinError::Shutdown)?
            .map_err(|e| JoinError::Dial(e.to_string()))?;
        let listen = self.listen_addrs().await.map_err(|_| JoinError::Shutdown)?;
        let payload = run_joiner(self.local, member, token, listen, info, |req| {
            self.join_request(member, req)
        })
        .await?;
        Ok(Joined { member, payload })
    }

    /// Fetches chunks from the peers that hold them; every chunk is yielded
    /// as a [`filesyncd_merkle::Verified`], hashed once on receipt (callers
    /// need not hash it again). See [`crate::chunks::fetch`].
    pub fn fetch_chunks(&self, plan: FetchPlan) -> ChunkFetch {
        fetch::start(self.fetch.clone(), plan)
    }

    /// (faults charged, currently banned) for a chunk server.
    pub fn peer_faults(&self, peer: &PeerId) -> (u32, bool) {
        self.fetch.faults_of(peer)
    }

    /// What the bulk endpoint did so far, and where it is bound.
    pub fn bulk_stats(&self) -> BulkStats {
        crate::bulk::stats(&self.fetch.counters, self.bulk.as_ref())
    }

    /// What the serving side's compression did so far: zstd runs, frames
    /// sent compressed (from the cache or not) and raw, the frame cache,
    /// zstd's measured speeds.
    pub fn compression_stats(&self) -> CompressionStats {
        self.compressor.stats()
    }

    /// What the link to `peer` drains as this node's chunk server measured
    /// it (bytes/s), or the configured `assume_link_rate`; `None` until
    /// known.
    pub fn link_rate(&self, peer: &PeerId) -> Option<f64> {
        self.compressor.link_rate(peer)
    }

    /// Tells the bulk dialer where `peer`'s bulk endpoint is, and dials it
    /// (members announce theirs through identify; this is for an address
    /// known otherwise). Ignored for non-members and with the endpoint off.
    /// The dial checks that the endpoint is `peer`'s.
    pub fn add_bulk_address(&self, peer: PeerId, addr: std::net::SocketAddr) {
        if let Some(b) = &self.bulk {
            b.learn(peer, addr);
        }
    }

    /// Members this node has a bulk connection to (its fetches from them
    /// go over bulk streams).
    pub async fn bulk_peers(&self) -> Vec<PeerId> {
        self.bulk_connections()
            .await
            .into_iter()
            .map(|c| c.peer)
            .collect()
    }

    /// This node's bulk connections (the ones it dialed to fetch), with
    /// what QUIC measured on each path.
    pub async fn bulk_connections(&self) -> Vec<BulkConnection> {
        match &self.bulk {
            Some(b) => b.dialer.connections().await,
            None => Vec::new(),
        }
    }

    /// Stops the event loop (the swarm closes all connections) and closes
    /// the bulk endpoint.
    pub async fn shutdown(&self) {
        if let Some(b) = &self.bulk {
            b.shutdown();
        }
        let _ = self.cmds.send(Command::Shutdown).await;
    }
}
