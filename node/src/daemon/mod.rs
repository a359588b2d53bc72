//! `filesyncd run`: the daemon.
//!
//! Start-up, in order (each step fails the whole start):
//! 1. Lock the data directory ([`lock`]): one daemon per data directory.
//! 2. Node id (`<data>/node_id`) and p2p identity (`<data>/node.key`).
//! 3. Start the p2p swarm on `--listen`; Raft rides its raft protocol
//!    ([`transport`]).
//! 4. Open Raft on `<data>/raft`. No Raft state and no `--join`: form a
//!    single-node cluster and commit `InitCluster` (random cluster id,
//!    default chunker, default retention). No Raft state and `--join`: join
//!    with the token before serving Raft, then wait until caught up
//!    ([`join`]). With state: resume (`--join` is ignored with a warning).
//!    Every member answers joins and promotes learners ([`join`]).
//! 5. Keep the p2p allow-list equal to the Raft membership.
//! 6. Start the sync service ([`sync`]), then the control API the caller
//!    passed in ([`run`]'s `serve_api`: the binary passes `api::serve_daemon`;
//!    this module never names the API, which sits above it).
//!
//! Shutdown on SIGTERM or SIGINT: the API stops accepting, Raft shuts down
//! (its stores are closed when the last handle drops), the swarm stops,
//! then the lock is released. Exit 0.

pub mod addr;
pub mod join;
pub mod lock;
pub mod sync;
pub mod transport;

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use filesyncd_p2p::{P2pClient, P2pConfig, PeerId, Services};
use filesyncd_raft::command::{ChunkerParams, Op, Outcome, RejectReason, Retention};
use filesyncd_raft::config::{RaftConfig, SnapshotPolicy};
use filesyncd_raft::node::{NodeError, RaftNode};
use filesyncd_raft::NodeInfo;
use tokio::sync::watch;

use crate::config::Config;
use lock::{DataLock, LockError};
use transport::P2pTransport;

/// The Raft settings of this node: the defaults, with `--snapshot-logs`
/// entries between snapshots and a tenth of them (at most 1,000) kept in
/// the log after one.
fn raft_config(config: &Config) -> RaftConfig {
    RaftConfig {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        max_in_snapshot_log_to_keep: (config.snapshot_logs / 10).min(1_000),
        ..RaftConfig::default()
    }
}

/// The Raft node type of the daemon.
pub type Node = RaftNode<P2pTransport>;

/// How long start-up waits for this node to lead its new single-node cluster.
const LEADER_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("node id: {0}")]
    NodeId(#[from] filesyncd_raft::node_id::NodeIdError),
    #[error("identity: {0}")]
    Identity(#[from] filesyncd_p2p::IdentityError),
    #[error("p2p: {0}")]
    P2p(#[from] filesyncd_p2p::P2pError),
    #[error("raft: {0}")]
    Raft(#[from] NodeError),
    #[error("state: {0}")]
    State(#[from] filesyncd_raft::state_machine::SmError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control API on {addr}: {source}")]
    Api {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sync: {0}")]
    Sync(#[from] sync::SyncError),
    #[error("cluster initialization failed: {0}")]
    Init(String),
    /// Raft stopped on its own (a storage error such as ENOSPC or EIO, or a
    /// panic in its task): the daemon shuts down and exits 1, so a
    /// supervisor (`Restart=on-failure`) starts it again instead of leaving
    /// a process that looks alive and replicates nothing.
    #[error("raft stopped: {0}")]
    RaftStopped(String),
    /// A database of the sync service (chunk index, local index) failed a
    /// write and refuses all work until reopened
    /// (`filesyncd_chunkstore::poison`): exit 1, and the restart reopens it.
    #[error("storage failed: {0}")]
    StorageFailed(String),
    #[error(transparent)]
    Join(#[from] join::JoinFailure),
    #[error("control API credential: {0}")]
    Credential(#[from] crate::credential::CredentialError),
}

impl DaemonError {
    /// 2 for problems the operator must fix in the invocation (locked data
    /// directory, a refused join token), 1 for runtime failures (including
    /// a join address not reachable within `--join-timeout`).
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Lock(LockError::Locked(_)) => 2,
            DaemonError::Join(f) => f.exit_code(),
            _ => 1,
        }
    }
}

/// What the control API is handed once the node runs.
pub struct ApiParts {
    /// Bound to `--api`.
    pub listener: tokio::net::TcpListener,
    pub node: Node,
    pub peer_id: String,
    /// The secret every route but `/healthz` requires: `--api-token`, or
    /// the one kept in the data directory ([`crate::credential`]).
    pub token: String,
    pub sync: sync::SyncHandle,
    pub p2p: P2pClient,
}

/// Resolves when the daemon shuts down.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the daemon until SIGTERM/SIGINT. Once the node runs, the control
/// API is served by `serve_api` with [`ApiParts`] until [`Shutdown`].
pub async fn run<A, S>(config: Config, serve_api: A) -> Result<(), DaemonError>
where
    A: FnOnce(ApiParts, Shutdown) -> S,
    S: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let _lock = DataLock::acquire(&config.data)?;
    let data = config.data.clone();
    // `None`: the secret is the node's own, published for the CLI.
    let (api_secret, generated) = match &config.api_token {
        Some(t) => (t.clone(), false),
        None => (crate::credential::load_or_create(&data)?, true),
    };
    let (node_id, _) = filesyncd_raft::node_id::load_or_create(&data)?;
    let identity = filesyncd_p2p::load_or_create(&data)?;
    let peer_id = identity.peer_id;
    let raft_dir = data.join("raft");
    std::fs::create_dir_all(&raft_dir).map_err(|source| DaemonError::Io {
        path: raft_dir.clone(),
        source,
    })?;

    let p2p_config = P2pConfig {
        listen: vec![config.listen.clone()],
        external: config
            .advertise
            .iter()
            .chain(Some(&config.listen).filter(|l| !listens_on_unspecified(l)))
            .cloned()
            .collect(),
        nat: filesyncd_p2p::NatConfig {
            relay: config.relay,
            hole_punch: config.hole_punch,
            // A node on loopback has no router to ask (and test clusters
            // send no SSDP search out of the machine).
            upnp: config.upnp && !listens_on_loopback(&config.listen),
            ..filesyncd_p2p::NatConfig::default()
        },
        bulk: filesyncd_p2p::BulkConfig {
            enabled: config.bulk,
            port: config.bulk_port,
            ..filesyncd_p2p::BulkConfig::default()
        },
        ..P2pConfig::default()
    };
    let sync_parts = sync::Parts::open(&config.dir, &data)?;
    let admission = join::Admission::new();
    let services = Services {
        chunks: Arc::new(sync_parts.provider()),
        join_verifier: Some(admission.clone()),
    };
    let (client, events) =
        filesyncd_p2p::client::start(identity.keypair, p2p_config, services).await?;
    let listen_addrs = client.listen_addrs().await?;
    let advertised = match &config.advertise {
        Some(a) => a.to_string(),
        None => addr::advertised_addr(&listen_addrs, &config.listen),
    };
    tracing::info!(node = format!("{node_id:016x}"), %peer_id, addr = %advertised, "p2p started");

    let transport = Arc::new(P2pTransport::new(client.clone()));
    let node: Node = RaftNode::open(&raft_dir, node_id, raft_config(&config), transport).await?;
    admission.attach(node.clone(), config.max_voters);
    // Joining runs before Raft serves a request: only the cluster that
    // admitted us can write this node's first state.
    let target = config.join.as_ref();
    let joined = match join::start(&node, &client, target, config.join_timeout).await {
        Ok(j) => j,
        Err(e) => {
            let _ = node.shutdown().await;
            client.shutdown().await;
            return Err(e.into());
        }
    };
    let ctl_slot: transport::CtlSlot = Arc::default();
    let senders = joined
        .as_ref()
        .map(transport::Senders::from_payload)
        .unwrap_or_default();
    let serve_task = tokio::spawn(transport::serve(
        node.clone(),
        events,
        ctl_slot.clone(),
        senders,
    ));
    let mut sync_running: Option<sync::Running> = None;

    let result = async {
        match &joined {
            Some(payload) => join::wait_caught_up(&node, payload).await?,
            None => bootstrap(&node, &peer_id, &advertised, config.retention).await?,
        }
        let wanted = config.retention;
        if wanted != Retention::default() {
            let reader = node.reader().clone();
            if let Ok(Ok(Some(s))) = tokio::task::spawn_blocking(move || reader.settings()).await {
                if s.retention != wanted {
                    tracing::warn!(cluster = ?s.retention, flags = ?wanted, "--keep-versions/--keep-days apply only when a node creates its cluster; this cluster keeps its own retention");
                }
            }
        }
        let running = sync::start(
            sync_parts,
            node.clone(),
            client.clone(),
            crate::engine::watch::WatchConfig::default(),
            sync::SyncOptions {
                gc_interval: config.gc_interval,
                max_file_size: config.max_file_size,
                safe_links: config.safe_links,
                guard: config.guard,
            },
        )?;
        let _ = ctl_slot.set(running.ctl.clone());
        let sync_handle = running.handle.clone();
        sync_running = Some(running);
        let (stop_tx, stop_rx) = watch::channel(false);
        let members_task = tokio::spawn(follow_membership(
            node.clone(),
            client.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(addr::keep_member_addr(
            node.clone(),
            client.clone(),
            peer_id.to_string(),
            config.advertise.as_ref().map(|a| a.to_string()),
            config.listen.clone(),
            stop_rx.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| DaemonError::Api {
                addr: config.api,
                source,
            })?;
        // Published before the first request is served: a CLI that saw
        // `/healthz` answer finds the secret (no 401 race at start).
        let mut warned = false;
        if generated {
            publish_once(config.api, api_secret.clone(), &mut warned).await;
        }
        tracing::info!(api = %config.api, "control API listening");
        let publisher = generated.then(|| {
            tokio::spawn(publish_credential(
                config.api,
                api_secret.clone(),
                stop_rx.clone(),
                warned,
            ))
        });
        let parts = ApiParts {
            listener,
            node: node.clone(),
            peer_id: peer_id.to_string(),
            token: api_secret.clone(),
            sync: sync_handle,
            p2p: client.clone(),
        };
        let mut api_stop = stop_rx.clone();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = api_stop.wait_for(|s| *s).await;
        });
        let serving = serve_api(parts, shutdown);
        let api_task = tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "control API failed");
            }
        });
        let failed = tokio::select! {
            _ = wait_for_signal() => None,
            why = raft_failed(node.metrics_watch()) => Some(DaemonError::RaftStopped(why)),
            why = storage_poisoned() => Some(DaemonError::StorageFailed(why.to_string())),
        };
        match &failed {
            None => tracing::info!("shutting down"),
            Some(why) => tracing::error!(
                reason = %why,
                "stopped by a storage failure: shutting down (exit 1, for the supervisor to restart)"
            ),
        }
        if failed.is_some() {
            exit_after(FAILED_EXIT_DEADLINE);
        }
        let _ = stop_tx.send(true);
        let _ = api_task.await;
        let _ = members_task.await;
        if let Some(p) = publisher {
            let _ = p.await;
        }
        match failed {
            None => Ok::<(), DaemonError>(()),
            Some(e) => Err(e),
        }
    }
    .await;

    if let Some(running) = sync_running.take() {
        let _ = tokio::task::spawn_blocking(move || running.stop()).await;
    }
    let shut = node.shutdown().await;
    client.shutdown().await;
    // The serve loop ends when the event channel closes, but the p2p client
    // inside the transport keeps a sender alive: stop it explicitly.
    serve_task.abort();
    let _ = serve_task.await;
    drop(node);
    result?;
    shut?;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the node's own API secret published for the CLI of its user
/// ([`crate::credential::publish`]) while the API serves: written at start,
/// written again if it goes (a `/tmp` cleaner, another daemon that used the
/// same address), removed at shutdown. A runtime directory that cannot be
/// used is logged once; the CLI then needs `--data` or `--api-token-file`.
/// One publication of the API secret (see [`publish_credential`]); a
/// failure is logged once (`warned`).
async fn publish_once(api: std::net::SocketAddr, secret: String, warned: &mut bool) {
    match tokio::task::spawn_blocking(move || crate::credential::publish(&api, &secret)).await {
        Ok(Ok(path)) if !*warned => {
            tracing::debug!(path = %path.display(), "control API credential published")
        }
        Ok(Err(e)) if !*warned => {
            *warned = true;
            tracing::warn!(error = %e, "control API credential not published: the CLI needs --data DIR or --api-token-file");
        }
        _ => {}
    }
}

async fn publish_credential(
    api: std::net::SocketAddr,
    secret: String,
    mut stop: watch::Receiver<bool>,
    mut warned: bool,
) {
    const EVERY: Duration = Duration::from_secs(30);
    // The first publication was done before the API served (`run`).
    loop {
        if tokio::time::timeout(EVERY, stop.wait_for(|s| *s))
            .await
            .is_ok()
        {
            break;
        }
        publish_once(api, secret.clone(), &mut warned).await;
    }
    let _ = tokio::task::spawn_blocking(move || crate::credential::unpublish(&api, &secret)).await;
}

/// Forms the single-node cluster on a pristine node and makes sure the
/// cluster settings are committed (also after a crash between the two).
async fn bootstrap(
    node: &Node,
    peer_id: &PeerId,
    addr: &str,
    retention: Retention,
) -> Result<(), DaemonError> {
    let info = NodeInfo {
        peer_id: peer_id.to_string(),
        addr: addr.to_string(),
    };
    // A resuming node skips `initialize` (openraft logs an ERROR for a
    // refused one, which is just noise on every restart).
    let resuming = node
        .raft()
        .is_initialized()
        .await
        .map_err(|e| DaemonError::Init(e.to_string()))?;
    if !resuming && node.initialize_single(info).await? {
        tracing::info!("formed a new single-node cluster");
    }
    let reader = node.reader().clone();
    let settings = tokio::task::spawn_blocking(move || reader.settings())
        .await
        .map_err(|e| DaemonError::Init(e.to_string()))??;
    if settings.is_some() {
        return Ok(());
    }
    // Metrics lag behind `initialize`: wait until some leader is known.
    let mut metrics = node.metrics_watch();
    let leader = tokio::time::timeout(
        LEADER_WAIT,
        metrics.wait_for(|m| m.current_leader.is_some()),
    )
    .await
    .map_err(|_| DaemonError::Init("no leader elected in time".into()))?
    .map_err(|_| DaemonError::Init("raft stopped".into()))?
    .current_leader;
    if leader != Some(node.id()) {
        // The leader of an existing cluster commits (or did commit) the settings.
        return Ok(());
    }
    let cluster_id = format!("{:032x}", rand::random::<u128>());
    let proposed = node
        .propose(vec![Op::InitCluster {
            cluster_id: cluster_id.clone(),
            chunker: ChunkerParams::default(),
            retention,
        }])
        .await?;
    match proposed.response.outcomes().first() {
        Some(Outcome::Applied { .. })
        | Some(Outcome::Rejected {
            reason: RejectReason::AlreadyInitialized,
        }) => {
            tracing::info!(%cluster_id, "cluster initialized");
            Ok(())
        }
        other => Err(DaemonError::Init(format!("InitCluster answered {other:?}"))),
    }
}

/// Whether `addr` is `/ip4/0.0.0.0/...` or `/ip6/::/...`.
fn listens_on_unspecified(addr: &filesyncd_p2p::Multiaddr) -> bool {
    use filesyncd_p2p::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => ip.is_unspecified(),
        _ => false,
    }
}

/// Whether `addr` is `/ip4/127.../...` or `/ip6/::1/...`.
fn listens_on_loopback(addr: &filesyncd_p2p::Multiaddr) -> bool {
    use filesyncd_p2p::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Most revoked PeerIds handed to the p2p gate (each removal adds one; a
/// cluster that removed more refuses the oldest ones at the Raft and join
/// checks only, which read the state itself).
const MAX_REVOKED_PEERS: usize = 65_536;

/// Keeps the p2p allow-list (and address book) equal to the Raft membership,
/// and the refused list equal to the revoked members of the replicated state.
async fn follow_membership(node: Node, client: P2pClient, mut stop: watch::Receiver<bool>) {
    let mut metrics = node.metrics_watch();
    let mut last: Option<HashSet<PeerId>> = None;
    let mut last_addrs: Option<Vec<(PeerId, String)>> = None;
    loop {
        let nodes: Vec<(PeerId, String)> = {
            let m = metrics.borrow_and_update();
            m.membership_config
                .membership()
                .nodes()
                .filter_map(|(_, info)| Some((info.peer_id.parse().ok()?, info.addr.clone())))
                .collect()
        };
        let set: HashSet<PeerId> = nodes.iter().map(|(p, _)| *p).collect();
        // A record whose address changed (a member that moved, or went
        // behind a relay) goes to the address book at once, first in line.
        if last_addrs.as_ref() != Some(&nodes) {
            for (peer, addr) in &nodes {
                let known = last_addrs
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|(p, a)| p == peer && a == addr));
                if known {
                    continue;
                }
                if let Ok(a) = filesyncd_p2p::parse_addr(addr) {
                    let _ = client.add_addresses(*peer, vec![a]).await;
                }
            }
            last_addrs = Some(nodes.clone());
        }
        if last.as_ref() != Some(&set) {
            // Removals are what add revocations: read them with the
            // membership they came with (and once at start, across restarts).
            let reader = node.reader().clone();
            match tokio::task::spawn_blocking(move || reader.revoked_peers(MAX_REVOKED_PEERS)).await
            {
                Ok(Ok(peers)) => {
                    let revoked: HashSet<PeerId> =
                        peers.iter().filter_map(|p| p.parse().ok()).collect();
                    if client.set_revoked(revoked).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the revoked members"),
                Err(e) => tracing::warn!(error = %e, "cannot read the revoked members"),
            }
            if client.set_members(set.clone()).await.is_err() {
                return;
            }
            tracing::debug!(members = set.len(), "p2p allow-list updated");
            last = Some(set);
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Resolves once Raft's metrics say it is no longer running (or its
/// metrics end), with the reason.
async fn raft_failed(mut metrics: watch::Receiver<filesyncd_raft::node::Metrics>) -> String {
    loop {
        let state = metrics.borrow_and_update().running_state.clone();
        if let Err(e) = state {
            return e.to_string();
        }
        if metrics.changed().await.is_err() {
            return "its metrics channel closed".into();
        }
    }
}

/// How long the shutdown after a failure may take before the process exits
/// 1 regardless.
const FAILED_EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// Exits the process with 1 after `deadline` unless it ended before. After
/// a storage failure the orderly shutdown can wait forever (a sync step
/// blocked on the failed disk, a peer's request held open), and a process
/// that lingers with its API gone is never restarted by its supervisor
/// (CHAOS finding 12). Every durable write is crash-safe: the exit loses
/// nothing.
fn exit_after(deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("filesyncd-exit".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(
                seconds = deadline.as_secs(),
                "shutdown after a failure did not finish in time: exiting 1 now"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "no exit watchdog: exiting 1 now");
        std::process::exit(1);
    }
}

/// How often [`storage_poisoned`] looks.
const POISON_POLL: Duration = Duration::from_millis(500);

/// Resolves once a database of this process must be reopened.
async fn storage_poisoned() -> &'static str {
    loop {
        if let Some(why) = filesyncd_chunkstore::poison::poisoned() {
            return why;
        }
        tokio::time::sleep(POISON_POLL).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; waiting for SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raft_failed_resolves_when_raft_stops_on_its_own() {
        use filesyncd_raft::node::Metrics;
        let (tx, rx) = watch::channel(Metrics::new_initial(1));
        let mut waiting = Box::pin(raft_failed(rx));
        // Running: still waiting, also after an update that keeps it running.
        let idle = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(idle.is_err(), "resolved while raft runs");
        tx.send_modify(|m| m.current_term = 2);
        let idle = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(idle.is_err(), "resolved while raft runs");
        tx.send_modify(|m| m.running_state = Err(openraft::error::Fatal::Panicked));
        let why = tokio::time::timeout(Duration::from_secs(5), &mut waiting)
            .await
            .expect("raft_failed did not see the stop");
        assert!(why.to_lowercase().contains("panic"), "{why}");
        // A closed metrics channel counts as stopped too.
        let (tx, rx) = watch::channel(Metrics::new_initial(1));
        drop(tx);
        assert!(raft_failed(rx).await.contains("closed"));
    }
}
