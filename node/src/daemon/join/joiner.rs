//! The joiner side: [`join`] (before this node serves Raft) and
//! [`wait_caught_up`] (after).
//!
//! Each attempt dials the address, puts the answering PeerId on the
//! allow-list for that handshake only (so the leader's first Raft messages
//! after admitting us find a member connection; a failed attempt takes it
//! off again), and runs the handshake. Once admitted, the allow-list is
//! exactly the members the (member-proven) payload names: no peer that
//! answered an earlier attempt stays on it. What happens next is
//! decided by [`next_step`] from the error alone: follow a `NotLeader`
//! hint, retry after a backoff (unreachable, undecided, timed out), or stop
//! with a [`JoinFailure`]. Everything is bounded by the join timeout.

use std::collections::HashSet;
use std::time::Duration;

use filesyncd_p2p::{Fingerprint, JoinError, P2pClient, PeerId, RejectReason};
use filesyncd_raft::NodeId;
use tokio::time::Instant;

use super::{JoinInfo, JoinPayload};
use crate::config::JoinTarget;
use crate::daemon::Node;

/// `NotLeader` hints followed before giving up.
pub const MAX_REDIRECTS: usize = 8;
/// First and largest pause between attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a newly admitted learner may take to catch up.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(300);

/// Why joining failed. [`JoinFailure::exit_code`]: 2 when the operator must
/// change the invocation (token, address, identity), 1 otherwise.
#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    #[error("join token refused by {addr}: the token is not valid for this cluster (unknown id or wrong secret)")]
    BadToken { addr: String },
    #[error("join token refused by {addr}: the token has expired (or was revoked by the removal of a member); create a new one with `filesyncd token create` on a member")]
    Expired { addr: String },
    #[error("join token refused by {addr}: the token was already used (tokens are single-use); create a new one with `filesyncd token create`")]
    Used { addr: String },
    #[error("{addr} refused the join: {detail}")]
    Refused { addr: String, detail: String },
    #[error("{addr} does not know this token: wrong --join address, or not the cluster that made the token")]
    NotOurCluster { addr: String },
    #[error("could not join through {addr} within {}s: {last}", .waited.as_secs())]
    Unreachable {
        addr: String,
        waited: Duration,
        last: String,
    },
    #[error("more than {MAX_REDIRECTS} leader redirects starting from {addr}")]
    Redirects { addr: String },
    #[error("{addr} admitted this node but did not prove it is the pinned cluster: {detail}")]
    WrongCluster { addr: String, detail: String },
    #[error("admitted, but the answer of {addr} is malformed: {detail}")]
    BadPayload { addr: String, detail: String },
    #[error("admitted, but did not catch up with the cluster within {}s (applied {applied:?} of {index})", .waited.as_secs())]
    CatchUp {
        waited: Duration,
        applied: Option<u64>,
        index: u64,
    },
    #[error("p2p stopped while joining")]
    Shutdown,
    #[error("raft stopped while joining: {0}")]
    RaftStopped(String),
}

impl JoinFailure {
    pub fn exit_code(&self) -> u8 {
        match self {
            JoinFailure::BadToken { .. }
            | JoinFailure::Expired { .. }
            | JoinFailure::Used { .. }
            | JoinFailure::Refused { .. }
            | JoinFailure::NotOurCluster { .. }
            | JoinFailure::WrongCluster { .. } => 2,
            _ => 1,
        }
    }
}

/// What to do after a failed attempt at `addr`.
#[derive(Debug)]
pub enum Step {
    /// Start over at this address (the leader).
    Redirect(String),
    /// Pause, then try the same address again; the text is the last error.
    Retry(String),
    Stop(JoinFailure),
}

/// The pure decision after a failed attempt.
pub fn next_step(addr: &str, err: JoinError) -> Step {
    let addr_s = addr.to_string();
    let hint_text = |hint: &[u8]| String::from_utf8_lossy(hint).trim().to_string();
    match err {
        JoinError::Rejected { reason, hint } => match reason {
            RejectReason::BadToken => Step::Stop(JoinFailure::BadToken { addr: addr_s }),
            RejectReason::Expired => Step::Stop(JoinFailure::Expired { addr: addr_s }),
            RejectReason::Used => Step::Stop(JoinFailure::Used { addr: addr_s }),
            // Only a proven redirect is followed (`JoinError::Redirect`).
            RejectReason::NotLeader => Step::Retry(format!(
                "{addr} is not the leader and named none with a proof"
            )),
            RejectReason::Unavailable => {
                let detail = hint_text(&hint);
                Step::Retry(if detail.is_empty() {
                    format!("{addr} cannot decide now")
                } else {
                    format!("{addr}: {detail}")
                })
            }
            RejectReason::Protocol | RejectReason::TooManyAttempts => {
                let detail = hint_text(&hint);
                Step::Stop(JoinFailure::Refused {
                    addr: addr_s,
                    detail: if detail.is_empty() {
                        reason.to_string()
                    } else {
                        format!("{reason}: {detail}")
                    },
                })
            }
        },
        JoinError::MemberProofInvalid => Step::Stop(JoinFailure::NotOurCluster { addr: addr_s }),
        JoinError::Redirect(to) => {
            if filesyncd_p2p::parse_addr(&to).is_ok() && to != addr {
                Step::Redirect(to)
            } else {
                Step::Retry(format!("{addr} is not the leader and named none"))
            }
        }
        JoinError::Address(e) => Step::Stop(JoinFailure::Refused {
            addr: addr_s,
            detail: e.to_string(),
        }),
        JoinError::Shutdown => Step::Stop(JoinFailure::Shutdown),
        JoinError::Dial(e) => Step::Retry(format!("cannot reach {addr}: {e}")),
        JoinError::Protocol(e) => Step::Retry(format!("{addr}: {e}")),
        JoinError::Request(e) => Step::Retry(format!("{addr}: {e}")),
    }
}

/// The start-up branch: `Some(payload)` when this node just joined through
/// `target`; `None` when there is nothing to join (no `--join`) or this
/// node already has Raft state (then `--join` is ignored with a warning:
/// it resumes). Call before the node serves Raft requests.
pub async fn start(
    node: &Node,
    client: &P2pClient,
    target: Option<&JoinTarget>,
    timeout: Duration,
) -> Result<Option<JoinPayload>, JoinFailure> {
    let Some(target) = target else {
        return Ok(None);
    };
    let has_state = node
        .raft()
        .is_initialized()
        .await
        .map_err(|e| JoinFailure::RaftStopped(e.to_string()))?;
    if has_state {
        tracing::warn!(join = %target.addr, "this node already has Raft state: --join ignored, resuming");
        return Ok(None);
    }
    tracing::info!(join = %target.addr, token = target.token.id(), "joining a cluster");
    join(client, target, node.id(), timeout).await.map(Some)
}

/// Joins through `target` (following leader hints), presenting `node_id`.
/// On success the allow-list holds every member the payload names.
pub async fn join(
    client: &P2pClient,
    target: &JoinTarget,
    node_id: NodeId,
    timeout: Duration,
) -> Result<JoinPayload, JoinFailure> {
    let start = Instant::now();
    let deadline = start + timeout;
    let info = serde_json::to_vec(&JoinInfo {
        node_id: format!("{node_id:016x}"),
        advertise: target.advertise.as_ref().map(ToString::to_string),
    })
    .map_err(|e| JoinFailure::BadPayload {
        addr: target.addr.clone(),
        detail: e.to_string(),
    })?;
    let mut addr = target.addr.clone();
    let mut redirects = 0;
    let mut backoff = BACKOFF_MIN;
    let mut last = String::from("no attempt finished");
    loop {
        let attempt =
            tokio::time::timeout_at(deadline, attempt(client, &addr, target, &info)).await;
        let err = match attempt {
            Err(_) => {
                let _ = client.set_members(HashSet::new()).await;
                return Err(JoinFailure::Unreachable {
                    addr,
                    waited: start.elapsed(),
                    last,
                });
            }
            Ok(Ok((member, payload))) => {
                let r = accepted(client, &addr, member, &payload, target.fingerprint).await;
                if r.is_err() {
                    let _ = client.set_members(HashSet::new()).await;
                }
                return r;
            }
            Ok(Err(e)) => {
                // Whoever answered is not a proven member: off the list.
                client
                    .set_members(HashSet::new())
                    .await
                    .map_err(|_| JoinFailure::Shutdown)?;
                e
            }
        };
        match next_step(&addr, err) {
            Step::Stop(f) => return Err(f),
            Step::Redirect(to) => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(JoinFailure::Redirects {
                        addr: target.addr.clone(),
                    });
                }
                tracing::info!(from = %addr, to = %to, "not the leader: trying the leader");
                addr = to;
                backoff = BACKOFF_MIN;
            }
            Step::Retry(why) => {
                tracing::warn!(%addr, reason = %why, "join attempt failed; retrying");
                last = why;
                if Instant::now() + backoff >= deadline {
                    return Err(JoinFailure::Unreachable {
                        addr,
                        waited: timeout,
                        last,
                    });
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One handshake at `addr`: the member's PeerId and the accept payload.
async fn attempt(
    client: &P2pClient,
    addr: &str,
    target: &JoinTarget,
    info: &[u8],
) -> Result<(PeerId, Vec<u8>), JoinError> {
    let member = client
        .dial(addr)
        .await
        .map_err(|e| JoinError::Dial(e.to_string()))?;
    client
        .set_members(HashSet::from([member]))
        .await
        .map_err(|_| JoinError::Shutdown)?;
    let joined = client.join_with(addr, &target.token, info.to_vec()).await?;
    Ok((joined.member, joined.payload))
}

/// How long after its `Accepted` a joiner reconnects to the member.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Checks the cluster key proof of `payload`, which `member` gave
/// `joiner` (see `filesyncd_p2p::cluster_key`): a proof that is there must
/// verify; with a pin it must be there and name the pinned key. Returns the
/// cluster's fingerprint, when it sent a proof.
pub fn check_cluster(
    payload: &JoinPayload,
    joiner: &PeerId,
    member: &PeerId,
    pinned: Option<Fingerprint>,
) -> Result<Option<Fingerprint>, String> {
    let unhex = |v: &Option<String>| -> Result<Option<Vec<u8>>, String> {
        v.as_deref()
            .map(|h| hex::decode(h).map_err(|_| "the cluster key proof is not hex".to_string()))
            .transpose()
    };
    let key = unhex(&payload.cluster_key)?;
    let proof = unhex(&payload.cluster_proof)?;
    filesyncd_p2p::cluster_key::check_proof(
        key.as_deref(),
        proof.as_deref(),
        &payload.cluster_id,
        joiner,
        member,
        pinned,
    )
    .map_err(|e| e.to_string())
}

/// Decodes the payload and makes the allow-list exactly the member that
/// admitted us and the members the payload names.
async fn accepted(
    client: &P2pClient,
    addr: &str,
    member: PeerId,
    payload: &[u8],
    pinned: Option<Fingerprint>,
) -> Result<JoinPayload, JoinFailure> {
    let mut allowed = HashSet::new();
    let bad = |detail: String| JoinFailure::BadPayload {
        addr: addr.to_string(),
        detail,
    };
    let payload: JoinPayload = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
    let fingerprint =
        check_cluster(&payload, &client.local_peer_id(), &member, pinned).map_err(|detail| {
            JoinFailure::WrongCluster {
                addr: addr.to_string(),
                detail,
            }
        })?;
    allowed.insert(member);
    for m in &payload.members {
        let peer: PeerId = m
            .peer_id
            .parse()
            .map_err(|_| bad(format!("bad peer id {:?}", m.peer_id)))?;
        if peer == client.local_peer_id() {
            continue;
        }
        if let Ok(a) = filesyncd_p2p::parse_addr(&m.addr) {
            let _ = client.add_addresses(peer, vec![a]).await;
        }
        allowed.insert(peer);
    }
    client
        .set_members(allowed.clone())
        .await
        .map_err(|_| JoinFailure::Shutdown)?;
    // The member served our join connection as a stranger's, and a node
    // behind NAT cannot be dialed back: once its allow-list holds us (it
    // committed us before answering; its p2p layer follows within
    // moments), come back on a fresh connection.
    let c = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RECONNECT_AFTER).await;
        let _ = c.reconnect(member).await;
    });
    tracing::info!(
        cluster = %payload.cluster_id,
        fingerprint = fingerprint.map(|f| f.to_string()).unwrap_or_else(|| "none (the cluster has no key yet)".into()),
        pinned = pinned.is_some(),
        leader = %payload.leader,
        members = payload.members.len(),
        index = payload.index,
        "admitted: catching up"
    );
    Ok(payload)
}

/// Waits until this node is in the membership and has applied the entry
/// that added it (and so the cluster settings before it).
pub async fn wait_caught_up(node: &Node, payload: &JoinPayload) -> Result<(), JoinFailure> {
    let me = node.id();
    let mut metrics = node.metrics_watch();
    let done = tokio::time::timeout(
        CATCH_UP_WAIT,
        metrics.wait_for(|m| {
            m.membership_config.membership().get_node(&me).is_some()
                && m.last_applied.is_some_and(|l| l.index >= payload.index)
        }),
    )
    .await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(JoinFailure::Shutdown),
        Err(_) => {
            return Err(JoinFailure::CatchUp {
                waited: CATCH_UP_WAIT,
                applied: node.metrics().last_applied.map(|l| l.index),
                index: payload.index,
            })
        }
    }
    tracing::info!(index = payload.index, "caught up with the cluster");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: RejectReason, hint: &str) -> JoinError {
        JoinError::Rejected {
            reason,
            hint: hint.as_bytes().to_vec(),
        }
    }

    #[test]
    fn token_problems_stop_with_exit_2_and_name_the_problem() {
        for (reason, word) in [
            (RejectReason::BadToken, "not valid"),
            (RejectReason::Expired, "expired"),
            (RejectReason::Used, "already used"),
        ] {
            let Step::Stop(f) = next_step("10.0.0.1:7400", rejected(reason, "")) else {
                panic!("{reason:?} must stop");
            };
            assert_eq!(f.exit_code(), 2);
            let text = f.to_string();
            assert!(
                text.contains(word) && text.contains("10.0.0.1:7400"),
                "{text}"
            );
        }
        let Step::Stop(f) = next_step("a:1", JoinError::MemberProofInvalid) else {
            panic!()
        };
        assert_eq!(f.exit_code(), 2);
        let Step::Stop(f) = next_step(
            "a:1",
            rejected(RejectReason::Protocol, "peer x is already member"),
        ) else {
            panic!()
        };
        assert!(f.to_string().contains("already member"), "{f}");
    }

    #[test]
    fn leader_hints_are_followed_and_transient_errors_retried() {
        let leader = "/ip4/127.0.0.2/udp/4000/quic-v1";
        assert!(matches!(
            next_step("127.0.0.3:1", JoinError::Redirect(leader.into())),
            Step::Redirect(a) if a == leader
        ));
        // An unproven hint is not followed.
        assert!(matches!(
            next_step("127.0.0.3:1", rejected(RejectReason::NotLeader, leader)),
            Step::Retry(_)
        ));
        // No usable target, or one back to the same address: retry there.
        for hint in ["", "not an address", "127.0.0.3:1"] {
            assert!(matches!(
                next_step("127.0.0.3:1", JoinError::Redirect(hint.into())),
                Step::Retry(_)
            ));
        }
        assert!(matches!(
            next_step("a:1", rejected(RejectReason::Unavailable, "no leader elected yet")),
            Step::Retry(w) if w.contains("no leader")
        ));
        assert!(matches!(
            next_step("a:1", JoinError::Dial("timed out".into())),
            Step::Retry(w) if w.contains("cannot reach a:1")
        ));
        let unreachable = JoinFailure::Unreachable {
            addr: "a:1".into(),
            waited: Duration::from_secs(30),
            last: "cannot reach a:1: timed out".into(),
        };
        assert_eq!(unreachable.exit_code(), 1);
        assert!(unreachable.to_string().contains("within 30s"));
    }
}
