//! The member side: [`Admission`], filesyncd's `p2p::JoinVerifier`.
//!
//! `token_hash` reads this member's applied state; `admit` runs only on the
//! leader: it spends the token through Raft, adds the joiner as a learner
//! and answers the [`super::JoinPayload`]. The decisions that need no I/O
//! are functions ([`check_membership`], [`consume_verdict`]) tested below.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use filesyncd_merkle::Hash;
use filesyncd_p2p::{
    ClusterKey, JoinApplication, JoinVerifier, PeerId, RejectReason, Rejection, TokenHash,
};
use filesyncd_raft::command::{Op, Outcome, RejectReason as OpReject};
use filesyncd_raft::{NodeId, NodeInfo};

use super::{
    advertised_member_addr, parse_node_id, pick_addr, rejection, JoinInfo, JoinPayload,
    PayloadMember,
};
use crate::daemon::Node;

type Verdict<'a, T> = Pin<Box<dyn Future<Output = Result<T, Rejection>> + Send + 'a>>;

/// filesyncd's join verifier. Create it before the p2p swarm (which needs
/// it), [`Admission::attach`] the Raft node once it is open.
pub struct Admission {
    /// A std RwLock: written once, read for a clone; never held across `.await`.
    node: RwLock<Option<Node>>,
}

impl Admission {
    pub fn new() -> Arc<Admission> {
        Arc::new(Admission {
            node: RwLock::new(None),
        })
    }

    /// Starts answering joins with `node`, and starts the learner promoter
    /// ([`super::promote_learners`]) with `max_voters`; it ends when Raft stops.
    pub fn attach(&self, node: Node, max_voters: usize) {
        *self.node.write().unwrap_or_else(|e| e.into_inner()) = Some(node.clone());
        tokio::spawn(super::promote_learners(node, max_voters));
    }

    fn node(&self) -> Result<Node, Rejection> {
        self.node
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| rejection(RejectReason::Unavailable, "the member is starting"))
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Rejection {
    rejection(RejectReason::Unavailable, format!("{what}: {e}"))
}

/// How long after spending a token its spender may be admitted with it
/// again (a retry after a lost `Accepted`); past this, a spent token
/// admits nobody.
pub const SPENT_RETRY_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Who spent a token, and when (ms since the epoch, the entry clock).
type Spender = (NodeId, u64);

/// The token registered under `id` on this member: (hash, spender).
async fn lookup(node: &Node, id: &str) -> Result<Option<(Hash, Option<Spender>)>, Rejection> {
    let reader = node.reader().clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || reader.token_by_id(&id))
        .await
        .map_err(|e| unavailable("state read failed", e))?
        .map(|found| found.map(|(h, rec)| (h, rec.consumed.map(|u| (u.node, u.at_ms)))))
        .map_err(|e| unavailable("state read failed", e))
}

/// Whether `(id, peer)` may join given the current members: `Ok(())` when
/// neither is a member or both name the same member (an admitted joiner
/// asking again); a refusal when either already belongs to another member.
pub fn check_membership<'a>(
    members: impl IntoIterator<Item = (NodeId, &'a NodeInfo)>,
    id: NodeId,
    peer: &str,
) -> Result<(), Rejection> {
    for (mid, info) in members {
        let same_id = mid == id;
        let same_peer = info.peer_id == peer;
        if same_id != same_peer {
            let why = if same_id {
                format!("node id {id:016x} already belongs to peer {}", info.peer_id)
            } else {
                format!("peer {peer} is already member {mid:016x}: remove it first")
            };
            return Err(rejection(RejectReason::Protocol, why));
        }
    }
    Ok(())
}

/// What a `ConsumeToken` outcome means for the joiner `node` at `now_ms`.
/// `spender` is who spent the token and when, read after a `TokenReused`:
/// the same node within [`SPENT_RETRY_WINDOW_MS`] is admitted again.
pub fn consume_verdict(
    outcome: Option<&Outcome>,
    spender: Option<Spender>,
    node: NodeId,
    now_ms: u64,
) -> Result<(), Rejection> {
    match outcome {
        Some(Outcome::Applied { .. }) => Ok(()),
        Some(Outcome::Rejected { reason }) => match reason {
            OpReject::TokenReused
                if spender.is_some_and(|(who, at)| {
                    who == node && now_ms.saturating_sub(at) <= SPENT_RETRY_WINDOW_MS
                }) =>
            {
                Ok(())
            }
            OpReject::TokenReused => Err(rejection(
                RejectReason::Used,
                "the token was already used (tokens are single-use)",
            )),
            OpReject::TokenExpired => Err(rejection(RejectReason::Expired, "the token expired")),
            OpReject::TokenRevoked => Err(rejection(
                RejectReason::Expired,
                "the token was revoked: a member was removed after it was created",
            )),
            OpReject::UnknownToken => Err(rejection(RejectReason::BadToken, "unknown token")),
            OpReject::NotInitialized => Err(rejection(
                RejectReason::Unavailable,
                "the cluster is not initialized yet",
            )),
            other => Err(rejection(
                RejectReason::Unavailable,
                format!("token refused: {other:?}"),
            )),
        },
        other => Err(rejection(
            RejectReason::Unavailable,
            format!("unexpected answer to ConsumeToken: {other:?}"),
        )),
    }
}

/// Where a non-leader sends the joiner.
fn not_leader(node: &Node) -> Rejection {
    match node.leader() {
        Some((id, info)) if id != node.id() && !info.addr.is_empty() => Rejection {
            reason: RejectReason::NotLeader,
            hint: info.addr.into_bytes(),
        },
        _ => rejection(RejectReason::Unavailable, "no leader elected yet"),
    }
}

impl Admission {
    async fn admit_inner(&self, joiner: JoinApplication) -> Result<Vec<u8>, Rejection> {
        let node = self.node()?;
        let info: JoinInfo = serde_json::from_slice(&joiner.info).map_err(|_| {
            rejection(
                RejectReason::Protocol,
                "join info must be {\"node_id\": \"<16 hex>\"}",
            )
        })?;
        let id = parse_node_id(&info.node_id)
            .ok_or_else(|| rejection(RejectReason::Protocol, "join info: bad node id"))?;
        if !node.is_leader() {
            return Err(not_leader(&node));
        }
        let peer = joiner.peer.to_string();
        check_revoked(&node, id, &peer).await?;
        {
            let m = node.metrics();
            check_membership(
                m.membership_config
                    .membership()
                    .nodes()
                    .map(|(i, n)| (*i, n)),
                id,
                &peer,
            )?;
        }
        let addr = match &info.advertise {
            Some(a) => advertised_member_addr(a).ok_or_else(|| {
                rejection(
                    RejectReason::Protocol,
                    "the advertised address is not a dialable QUIC address",
                )
            })?,
            None => {
                pick_addr(&joiner.listen_addrs, joiner.observed_addr.as_ref()).ok_or_else(|| {
                    rejection(
                        RejectReason::Protocol,
                        "no dialable listen address announced",
                    )
                })?
            }
        };

        let (hash, _) = lookup(&node, &joiner.token_id)
            .await?
            .ok_or_else(|| rejection(RejectReason::BadToken, "unknown token"))?;
        let proposed = node
            .propose(vec![Op::ConsumeToken {
                token_hash: hash,
                node: id,
            }])
            .await
            .map_err(|e| unavailable("cannot record the token use", e))?;
        let outcome = proposed.response.outcomes().first();
        let spender = match outcome {
            Some(Outcome::Rejected {
                reason: OpReject::TokenReused,
            }) => lookup(&node, &joiner.token_id).await?.and_then(|(_, s)| s),
            _ => None,
        };
        consume_verdict(outcome, spender, id, crate::now_ms())?;

        let learner = NodeInfo {
            peer_id: peer.clone(),
            addr: addr.to_string(),
        };
        let log_id = node
            .add_learner(id, learner, false)
            .await
            .map_err(|e| unavailable("cannot add the learner", e))?;
        tracing::info!(node = format!("{id:016x}"), %peer, %addr, index = log_id.index, "joiner admitted as learner");
        let payload = payload(&node, log_id.index, &joiner.peer).await?;
        serde_json::to_vec(&payload).map_err(|e| unavailable("cannot encode the answer", e))
    }
}

/// Refuses a joiner whose node id or PeerId was removed from the cluster:
/// removal is for good (a machine comes back with a wiped data directory,
/// that is a new id and PeerId).
async fn check_revoked(node: &Node, id: NodeId, peer: &str) -> Result<(), Rejection> {
    let reader = node.reader().clone();
    let p = peer.to_owned();
    let (by_id, by_peer) = tokio::task::spawn_blocking(move || {
        Ok::<_, filesyncd_raft::state_machine::SmError>((
            reader.revoked(id)?.is_some(),
            reader.revoked_peer(&p)?,
        ))
    })
    .await
    .map_err(|e| unavailable("state read failed", e))?
    .map_err(|e| unavailable("state read failed", e))?;
    revoked_verdict(id, peer, by_id, by_peer)
}

/// The refusal of [`check_revoked`], from what the state says.
pub fn revoked_verdict(
    id: NodeId,
    peer: &str,
    id_revoked: bool,
    peer_revoked_as: Option<NodeId>,
) -> Result<(), Rejection> {
    let why = match (id_revoked, peer_revoked_as) {
        (true, _) => format!("node id {id:016x} was removed from this cluster"),
        (false, Some(old)) => {
            format!("peer {peer} was member {old:016x}, removed from this cluster")
        }
        (false, None) => return Ok(()),
    };
    Err(rejection(
        RejectReason::Protocol,
        format!("{why}; a removed node joins again only as a new node: stop it, wipe its data directory, and join with a new token"),
    ))
}

async fn payload(node: &Node, index: u64, joiner: &PeerId) -> Result<JoinPayload, Rejection> {
    let reader = node.reader().clone();
    let (settings, seed) = tokio::task::spawn_blocking(move || {
        Ok::<_, filesyncd_raft::state_machine::SmError>((reader.settings()?, reader.cluster_key()?))
    })
    .await
    .map_err(|e| unavailable("state read failed", e))?
    .map_err(|e| unavailable("state read failed", e))?;
    let settings = settings
        .ok_or_else(|| rejection(RejectReason::Unavailable, "the cluster is not initialized"))?;
    let m = node.metrics();
    let me: Option<PeerId> = m
        .membership_config
        .membership()
        .get_node(&node.id())
        .and_then(|info| info.peer_id.parse().ok());
    let (cluster_key, cluster_proof) = match (seed, me) {
        (Some(seed), Some(me)) => {
            let key = ClusterKey::from_seed(seed.0);
            let proof = key.prove(&settings.cluster_id, joiner, &me);
            (Some(hex::encode(key.public())), Some(hex::encode(proof)))
        }
        _ => (None, None),
    };
    let members = m
        .membership_config
        .membership()
        .nodes()
        .take(super::MAX_PAYLOAD_MEMBERS)
        .map(|(id, info)| PayloadMember {
            id: format!("{id:016x}"),
            peer_id: info.peer_id.clone(),
            addr: info.addr.clone(),
        })
        .collect();
    Ok(JoinPayload {
        cluster_id: settings.cluster_id,
        leader: format!("{:016x}", node.id()),
        members,
        index,
        cluster_key,
        cluster_proof,
    })
}

impl JoinVerifier for Admission {
    fn token_hash(&self, token_id: &str) -> Verdict<'_, TokenHash> {
        let token_id = token_id.to_owned();
        Box::pin(async move {
            let node = self.node()?;
            match lookup(&node, &token_id).await? {
                Some((hash, _)) => Ok(TokenHash(hash.0)),
                None => Err(Rejection::new(RejectReason::BadToken)),
            }
        })
    }

    fn admit(&self, joiner: JoinApplication) -> Verdict<'_, Vec<u8>> {
        Box::pin(async move {
            let peer = joiner.peer;
            let result = self.admit_inner(joiner).await;
            if let Err(r) = &result {
                tracing::info!(%peer, reason = %r.reason, detail = %String::from_utf8_lossy(&r.hint), "join refused");
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesyncd_raft::command::Version;

    fn info(peer: &str) -> NodeInfo {
        NodeInfo {
            peer_id: peer.into(),
            addr: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
        }
    }

    #[test]
    fn membership_conflicts_are_refused_and_rejoins_allowed() {
        let (a, b) = (info("pa"), info("pb"));
        let members = || vec![(1u64, &a), (2u64, &b)];
        assert!(check_membership(members(), 3, "pc").is_ok());
        assert!(
            check_membership(members(), 2, "pb").is_ok(),
            "same member again"
        );
        for (id, peer) in [(2, "pc"), (3, "pb"), (1, "pb")] {
            let r = check_membership(members(), id, peer).unwrap_err();
            assert_eq!(r.reason, RejectReason::Protocol, "{id} {peer}");
            assert!(!r.hint.is_empty());
        }
    }

    #[test]
    fn removed_ids_and_peers_are_refused() {
        assert!(revoked_verdict(7, "p", false, None).is_ok());
        for (by_id, by_peer) in [(true, None), (false, Some(9)), (true, Some(7))] {
            let r = revoked_verdict(7, "p", by_id, by_peer).unwrap_err();
            assert_eq!(r.reason, RejectReason::Protocol);
            let hint = String::from_utf8(r.hint).unwrap();
            assert!(hint.contains("removed") && hint.contains("wipe"), "{hint}");
        }
    }

    #[test]
    fn consume_outcomes_map_to_join_answers() {
        let applied = Outcome::Applied {
            version: Version::new(5, 0),
        };
        let rej = |reason| Outcome::Rejected { reason };
        const NOW: u64 = 1_000_000_000;
        assert!(consume_verdict(Some(&applied), None, 7, NOW).is_ok());
        // Spent by this same joiner (a retry after a lost answer): admitted
        // again, within the window only.
        let spent = |at| Some((7, at));
        assert!(
            consume_verdict(Some(&rej(OpReject::TokenReused)), spent(NOW - 1000), 7, NOW).is_ok()
        );
        let late = consume_verdict(
            Some(&rej(OpReject::TokenReused)),
            spent(NOW - SPENT_RETRY_WINDOW_MS - 1),
            7,
            NOW,
        );
        assert_eq!(late.unwrap_err().reason, RejectReason::Used);
        let reason = |o: Outcome, spender| {
            consume_verdict(Some(&o), spender, 7, NOW)
                .unwrap_err()
                .reason
        };
        assert_eq!(
            reason(rej(OpReject::TokenReused), Some((8, NOW))),
            RejectReason::Used
        );
        assert_eq!(reason(rej(OpReject::TokenReused), None), RejectReason::Used);
        assert_eq!(
            reason(rej(OpReject::TokenExpired), None),
            RejectReason::Expired
        );
        assert_eq!(
            reason(rej(OpReject::TokenRevoked), Some((7, NOW))),
            RejectReason::Expired,
            "a revoked token admits nobody, its spender included"
        );
        assert_eq!(
            reason(rej(OpReject::UnknownToken), None),
            RejectReason::BadToken
        );
        assert_eq!(
            reason(rej(OpReject::NotInitialized), None),
            RejectReason::Unavailable
        );
        assert_eq!(
            consume_verdict(None, None, 7, NOW).unwrap_err().reason,
            RejectReason::Unavailable
        );
    }
}
