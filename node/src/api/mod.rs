//! The HTTP/JSON control API (axum), served on `--api` (loopback by default).
//!
//! | route          | answer                                                    |
//! |----------------|-----------------------------------------------------------|
//! | `GET /healthz` | `ok` once Raft runs                                       |
//! | `GET /status`  | [`types::Status`]                                         |
//! | `GET /members` | `[`[`types::Member`]`]`                                   |
//! | `GET /metrics` | Prometheus text                                           |
//! | `POST /token`  | body [`types::TokenRequest`] → [`types::TokenCreated`]    |
//! | `DELETE /members/{node}` | remove a member: [`members::Removed`]           |
//! | `/ls`, `/history`, `/restore`, `/verify`, `/adopt` | see [`files`]        |
//!
//! The daemon's API requires `Authorization: Bearer <secret>` on every route
//! but `/healthz` (401 otherwise): `--api-token`, or the node's own secret
//! that the CLI of the same user finds by itself ([`crate::credential`]).
//! On a loopback address it also refuses a `Host` header that is not an IP
//! address or `localhost` (403): a web page that rebinds its own DNS name
//! to 127.0.0.1 reaches the port, but its requests carry that name.
//! Admin calls (`POST /token`, `DELETE /members/..`) are served only by a
//! voter (403 on a learner). Errors are JSON
//! [`types::ApiErrorBody`] with a 4xx/5xx status. State reads run on the
//! blocking pool (redb reads touch the disk).

pub mod client;
pub mod files;
pub mod members;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use filesyncd_merkle::Hash;
use filesyncd_p2p::Token;
use filesyncd_raft::command::Outcome;
use filesyncd_raft::NodeId;

use crate::daemon::Node;
use crate::now_ms;
use types::{node_hex, ApiErrorBody, Member, Status, TokenCreated, TokenRequest};

/// Longest join token lifetime accepted (30 days).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    node: Node,
    peer_id: String,
    token: Option<Arc<str>>,
    /// Refuse `Host` names other than IP addresses and `localhost`.
    host_check: bool,
    /// The sync service: file routes and sync status (`None`: not running).
    sync: Option<crate::daemon::sync::SyncHandle>,
    /// The p2p client: which members are connected.
    p2p: Option<filesyncd_p2p::P2pClient>,
    /// One `verify` at a time.
    verifying: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    pub fn new(node: Node, peer_id: String, token: Option<String>) -> Self {
        ApiState {
            node,
            peer_id,
            token: token.map(Arc::from),
            host_check: false,
            sync: None,
            p2p: None,
            verifying: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Enables the file routes and the sync fields of `/status` and `/metrics`.
    pub fn with_sync(mut self, sync: crate::daemon::sync::SyncHandle) -> Self {
        self.sync = Some(sync);
        self
    }

    /// Refuses requests whose `Host` is a name other than `localhost` (for
    /// an API on a loopback address).
    pub fn with_host_check(mut self, on: bool) -> Self {
        self.host_check = on;
        self
    }

    /// Lets `/status` tell which members are reachable (connected).
    pub fn with_p2p(mut self, client: filesyncd_p2p::P2pClient) -> Self {
        self.p2p = Some(client);
        self
    }
}

#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiErrorBody { error: self.1 })).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The router (without the listener), for tests.
pub fn router(state: ApiState) -> Router {
    let guarded = Router::new()
        .route("/status", get(status))
        .route("/members", get(members))
        .route("/metrics", get(metrics))
        .route("/token", post(create_token))
        .route("/members/{node}", axum::routing::delete(members::remove))
        .merge(files::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .layer(middleware::from_fn_with_state(state.clone(), host_guard))
        .with_state(state)
}

/// Serves the daemon's API: what the binary passes to
/// [`crate::daemon::run`].
pub async fn serve_daemon(
    parts: crate::daemon::ApiParts,
    shutdown: crate::daemon::Shutdown,
) -> std::io::Result<()> {
    let loopback = parts
        .listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(true);
    let state = ApiState::new(parts.node, parts.peer_id, Some(parts.token))
        .with_host_check(loopback)
        .with_sync(parts.sync)
        .with_p2p(parts.p2p);
    serve(parts.listener, state, shutdown).await
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn auth(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(want) = &s.token {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = got.is_some_and(|g| ct_eq(g.as_bytes(), want.as_bytes()));
        if !ok {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token: run the CLI as the daemon's user, or pass \
                 --data DIR (the node's data directory), --api-token-file FILE or --api-token"
                    .into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn host_guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if s.host_check {
        let host = req
            .headers()
            .get(header::HOST)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        if let Some(h) = host.filter(|h| !host_is_local(h)) {
            return ApiError(
                StatusCode::FORBIDDEN,
                format!("Host {h:?} refused: this API answers to IP addresses and localhost only"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// A `Host` value naming an IP address or `localhost`, with or without a
/// port: what a local client sends. A DNS name (which a rebinding attacker
/// controls) is not.
fn host_is_local(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
                    && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port));
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.parse::<u16>().is_ok()
}

/// Admin calls change who can reach the data: only a voter serves them.
fn require_voter(s: &ApiState) -> Result<(), ApiError> {
    let m = s.node.metrics();
    if m.membership_config
        .membership()
        .voter_ids()
        .any(|v| v == s.node.id())
    {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "this node is not a voter: admin calls (token create, remove) go to a voter's API"
                .into(),
        ))
    }
}

/// Equality whose time does not depend on where the inputs first differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(s): State<ApiState>) -> Response {
    if s.node.metrics().running_state.is_ok() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "raft stopped\n").into_response()
    }
}

fn member_list(node: &Node) -> Vec<Member> {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let voters: std::collections::HashSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, info)| Member {
            id: node_hex(*id),
            peer_id: info.peer_id.clone(),
            addr: info.addr.clone(),
            role: if voters.contains(id) {
                "voter"
            } else {
                "learner"
            }
            .to_string(),
            reachable: None,
            path: None,
        })
        .collect()
}

async fn read_state(node: &Node) -> Result<(Hash, Option<String>, u64), ApiError> {
    let reader = node.reader().clone();
    tokio::task::spawn_blocking(move || {
        let (root, _) = reader.cluster_root()?;
        let cluster = reader.settings()?.map(|s| s.cluster_id);
        let live = reader.live_count()?;
        Ok::<_, filesyncd_raft::state_machine::SmError>((root, cluster, live))
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

/// The leader as this node knows it. openraft keeps naming a node that was
/// removed while leading as the leader of its last vote (it runs on as a
/// learner): only a node in the `Leader` state names itself. (The callers
/// also drop a leader this node no longer hears: `RaftNode::leader_is_live`.)
fn known_leader(leader: Option<NodeId>, leading: bool, me: NodeId) -> Option<NodeId> {
    match leader {
        Some(l) if l == me && !leading => None,
        other => other,
    }
}

async fn status(State(s): State<ApiState>) -> Result<Json<Status>, ApiError> {
    let (root, cluster_id, _) = read_state(&s.node).await?;
    let reader = s.node.reader().clone();
    let cluster_fingerprint = tokio::task::spawn_blocking(move || reader.cluster_key())
        .await
        .map_err(internal)?
        .map_err(internal)?
        .map(|seed| {
            filesyncd_p2p::ClusterKey::from_seed(seed.0)
                .fingerprint()
                .to_string()
        });
    let m = s.node.metrics();
    let cluster_root = root.to_hex();
    let leader = known_leader(m.current_leader, m.state.is_leader(), s.node.id())
        .filter(|_| s.node.leader_is_live());
    let sv = files::status::sync_view(&s, &cluster_root, leader.is_some());
    let mut members = member_list(&s.node);
    files::status::mark_reachable(&s, &mut members).await;
    let nat = files::status::nat_status(&s).await;
    let bulk = bulk_status(&s).await;
    Ok(Json(Status {
        node_id: node_hex(s.node.id()),
        peer_id: s.peer_id.clone(),
        state: format!("{:?}", m.state),
        leader: leader.map(node_hex),
        term: m.current_term,
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        cluster_id,
        cluster_fingerprint,
        cluster_root,
        members,
        dir: sv.dir,
        local_root: sv.local_root,
        in_sync: sv.in_sync,
        sync: sv.sync,
        nat,
        bulk,
    }))
}

async fn bulk_status(s: &ApiState) -> Option<types::BulkStatus> {
    let p2p = s.p2p.as_ref()?;
    let st = p2p.bulk_stats();
    let peers = p2p.bulk_peers().await;
    Some(types::BulkStatus {
        addr: st.local_addr.map(|a| a.to_string()),
        advertised_port: st.advertised_port,
        peers: peers.iter().map(ToString::to_string).collect(),
        requests_bulk: st.requests_bulk,
        requests_swarm: st.requests_libp2p,
        bytes_bulk: st.bytes_bulk,
        served_requests: st.served_requests,
        refused: st.refused,
    })
}

async fn members(State(s): State<ApiState>) -> Json<Vec<Member>> {
    Json(member_list(&s.node))
}

async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let (root, _, live) = read_state(&s.node).await?;
    let m = s.node.metrics();
    let me = s.node.id();
    let leader =
        known_leader(m.current_leader, m.state.is_leader(), me).filter(|_| s.node.leader_is_live());
    let is_leader = u8::from(leader == Some(me));
    let voters = m.membership_config.membership().voter_ids().count();
    let body = format!(
        "# HELP filesyncd_raft_term Current Raft term.\n# TYPE filesyncd_raft_term gauge\nfilesyncd_raft_term {}\n\
         # HELP filesyncd_raft_is_leader 1 if this node is the Raft leader.\n# TYPE filesyncd_raft_is_leader gauge\nfilesyncd_raft_is_leader {is_leader}\n\
         # HELP filesyncd_raft_last_log_index Index of the last log entry.\n# TYPE filesyncd_raft_last_log_index gauge\nfilesyncd_raft_last_log_index {}\n\
         # HELP filesyncd_raft_applied_index Index of the last applied entry (committed and applied).\n# TYPE filesyncd_raft_applied_index gauge\nfilesyncd_raft_applied_index {}\n\
         # HELP filesyncd_raft_voters Voters in the membership.\n# TYPE filesyncd_raft_voters gauge\nfilesyncd_raft_voters {voters}\n\
         # HELP filesyncd_live_paths Live paths in the committed index.\n# TYPE filesyncd_live_paths gauge\nfilesyncd_live_paths {live}\n",
        m.current_term,
        m.last_log_index.unwrap_or(0),
        m.last_applied.map(|l| l.index).unwrap_or(0),
    );
    let sv = files::status::sync_view(&s, &root.to_hex(), leader.is_some());
    let body = body + &files::status::metrics_text(sv.sync.as_ref(), sv.in_sync);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

async fn create_token(
    State(s): State<ApiState>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<TokenCreated>, ApiError> {
    require_voter(&s)?;
    let ttl = Duration::from_secs(req.ttl_secs);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("ttl must be between 1 s and {} s", MAX_TOKEN_TTL.as_secs()),
        ));
    }
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let fingerprint = ensure_cluster_key(&s.node).await?;
    // A fresh id collides with a recorded one about once in 2^31 tokens:
    // then draw again.
    let mut outcome = None;
    for _ in 0..3 {
        let token = Token::generate();
        let expires_ms = now_ms().saturating_add(ttl_ms);
        let proposed = s
            .node
            .propose(vec![filesyncd_raft::command::Op::AddNamedToken {
                token_id: token.id().to_string(),
                token_hash: Hash(token.hash().0),
                expires_ms,
            }])
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        outcome = proposed.response.outcomes().first().cloned();
        match &outcome {
            Some(Outcome::Applied { .. }) => {
                return Ok(Json(TokenCreated {
                    token: token.expose_secret(),
                    expires_ms,
                    cluster_fingerprint: Some(fingerprint.to_string()),
                }))
            }
            Some(Outcome::Rejected {
                reason: filesyncd_raft::command::RejectReason::TokenExists,
            }) => continue,
            _ => break,
        }
    }
    Err(ApiError(
        StatusCode::CONFLICT,
        format!("token not recorded: {outcome:?}"),
    ))
}

/// The cluster key's fingerprint, after setting the key if the cluster has
/// none yet (a cluster made before keys existed gets it at its first
/// `token create`; two racing creators agree, as only the first
/// `SetClusterKey` applies).
async fn ensure_cluster_key(node: &Node) -> Result<filesyncd_p2p::Fingerprint, ApiError> {
    let unavailable = |e: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, e);
    let read = |node: &Node| {
        let reader = node.reader().clone();
        async move {
            tokio::task::spawn_blocking(move || reader.cluster_key())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    };
    if let Some(seed) = read(node).await.map_err(unavailable)? {
        return Ok(filesyncd_p2p::ClusterKey::from_seed(seed.0).fingerprint());
    }
    let seed = filesyncd_raft::command::ClusterSeed(rand::random());
    let proposed = node
        .propose(vec![filesyncd_raft::command::Op::SetClusterKey { seed }])
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    // Another creator's key may have won: read what applied here.
    let mut metrics = node.metrics_watch();
    let index = proposed.log_id.index;
    tokio::time::timeout(
        Duration::from_secs(10),
        metrics.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index)),
    )
    .await
    .map_err(|_| unavailable("the cluster key did not apply here in time".into()))?
    .map_err(|_| unavailable("raft stopped".into()))?;
    match read(node).await.map_err(unavailable)? {
        Some(seed) => Ok(filesyncd_p2p::ClusterKey::from_seed(seed.0).fingerprint()),
        None => Err(unavailable(format!(
            "the cluster key was not recorded: {:?}",
            proposed.response
        ))),
    }
}

#[cfg(test)]
mod leader_tests {
    use super::*;

    #[test]
    fn only_ip_and_localhost_hosts_are_local() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:7401",
            "localhost",
            "LOCALHOST:80",
            "[::1]",
            "[::1]:7401",
            "10.0.0.5:1",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7401",
            "localhost.evil.example",
            "127.0.0.1.nip.io:7401",
            "[::1",
            "[zz]:1",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }

    #[test]
    fn a_node_names_itself_leader_only_while_it_leads() {
        assert_eq!(known_leader(Some(1), true, 1), Some(1));
        // Removed while leading: openraft keeps its own id as the leader.
        assert_eq!(known_leader(Some(1), false, 1), None);
        // Another node's leadership is reported as openraft sees it.
        assert_eq!(known_leader(Some(2), false, 1), Some(2));
        assert_eq!(known_leader(None, false, 1), None);
    }
}
