//! Pre-vote, at our seam (openraft 0.9 has no pre-vote of its own).
//!
//! # Why
//! A voter that loses the leader's heartbeats (it restarted and cannot dial
//! the leader yet, or it sits behind a broken link) starts elections: each
//! raises its term. openraft's followers refuse its votes while their
//! leader lease holds, but the higher term remains, and the first time the
//! leader replicates to that node it meets the higher term and steps down:
//! one follower's bad link unseats a healthy leader (issue 17: a restarted
//! compose node raised the term from 1 to 18 and took the leadership from
//! a healthy leader). Pre-vote (Raft thesis, 9.6; etcd's `PreVote`) asks
//! first, without changing any state, whether a quorum would vote at all.
//!
//! # How
//! - With [`RaftConfig::pre_vote`] on, openraft's own election timer is
//!   disabled (`runtime_config().elect(false)`) on every node that is not the
//!   only voter; the [`driver`] starts elections instead
//!   (`trigger().elect()`, which that switch does not affect).
//! - The node notes the time of every AppendEntries or InstallSnapshot
//!   request it accepted from a leader (a request refused for a higher vote
//!   does not count): its *leader contact*.
//! - A voter whose leader contact is older than the leader lease (openraft's:
//!   `election_timeout_max`) plus a randomized election timeout sends
//!   [`RpcKind::PreVote`] to every other voter: the vote it would ask for
//!   (term + 1, itself) and its last log id. It changes nothing.
//! - A voter grants it only if (a) its own leader contact is older than the
//!   lease, (b) it is not a leader that a quorum acknowledged within the
//!   lease, and (c) the candidate's last log id is at least its own (the log
//!   check of a real vote). Nothing is stored either way.
//! - With grants from a majority of every voter set (itself counted), the
//!   node starts a real election; otherwise its term stays as it is, and it
//!   asks again after another randomized timeout. A won round whose node
//!   meanwhile changed its vote (it granted another candidate's real vote)
//!   or heard a leader does not campaign: two survivors of a leader's
//!   restart that pre-vote at the same moment once cost three terms and
//!   two seconds without a leader (the second winner unseated the first).
//! - A peer that does not know the request (an older version) counts as not
//!   granting: a cluster in the middle of an upgrade elects through its old
//!   nodes, which still elect on their own timers.
//!
//! Safety does not depend on any of this (a real election still needs real
//! votes); it only keeps a node that cannot win from raising the term.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::error::Infallible;
use openraft::{LogId, Vote};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Inner, RaftNode};
use crate::config::RaftConfig;
use crate::network::{call_rpc, decode, encode_reply, failure_reply, RemoteFailure, Reply};
use crate::transport::{RaftTransport, RpcKind};
use crate::types::NodeId;

/// Reads this node's last log id (the log store's view, appended entries
/// included).
pub type LastLogFn = Arc<dyn Fn() -> Option<LogId<NodeId>> + Send + Sync>;

/// A log store that can tell the pre-vote its last log id.
pub trait LastLogSource {
    fn last_log_fn(&self) -> Option<LastLogFn>;
}

impl LastLogSource for crate::log_store::RedbLogStore {
    fn last_log_fn(&self) -> Option<LastLogFn> {
        let reader = self.reader();
        Some(Arc::new(move || reader.last_log_id()))
    }
}

/// "Would you vote for me?" (nothing is stored by asking or answering).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The vote a real election would ask for: the next term, the
    /// candidate. First on the wire, as in openraft's requests, so the
    /// transport binds the candidate to its sender
    /// ([`crate::network::claimed_sender`]).
    pub vote: Vote<NodeId>,
    pub last_log_id: Option<LogId<NodeId>>,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// The answering node's vote, for the logs.
    pub vote: Vote<NodeId>,
}

/// Milliseconds since the node's start (`Inner::epoch`).
fn since_epoch<T>(inner: &Inner<T>) -> u64 {
    u64::try_from(inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl<T: RaftTransport> Inner<T> {
    /// Notes an accepted request from a leader (see the module doc).
    pub(crate) fn leader_contact(&self) {
        self.contact_ms.store(since_epoch(self), Ordering::Relaxed);
    }

    /// How long since the last leader contact (since the start if none).
    pub(crate) fn silent_for(&self) -> Duration {
        let at = self.contact_ms.load(Ordering::Relaxed);
        Duration::from_millis(since_epoch(self).saturating_sub(at))
    }
}

/// The leader lease, as openraft computes it from our config.
fn lease(config: &RaftConfig) -> Duration {
    config.election_timeout_max
}

/// Answers a pre-vote request (see the module doc for the rule).
pub(crate) async fn serve<T: RaftTransport>(node: &RaftNode<T>, payload: &[u8]) -> Vec<u8> {
    let req: PreVoteRequest = match decode(payload) {
        Ok(r) => r,
        Err(e) => return failure_reply(RemoteFailure::BadRequest(e.to_string())),
    };
    let inner = &node.inner;
    let m = node.metrics();
    let lease = lease(&inner.config);
    let heard = inner.silent_for() < lease;
    let leading = m.state.is_leader()
        && m.millis_since_quorum_ack
            .is_some_and(|ms| Duration::from_millis(ms) < lease);
    let mine = inner.last_log.as_ref().and_then(|f| f());
    let log_ok = req.last_log_id >= mine;
    let granted = !heard && !leading && log_ok;
    tracing::info!(
        candidate = req.vote.leader_id().voted_for(),
        term = req.vote.leader_id().term,
        granted,
        heard_from_leader = heard,
        leading,
        log_ok,
        "pre-vote request"
    );
    encode_reply::<PreVoteResponse, Infallible>(&Reply::Ok(PreVoteResponse {
        granted,
        vote: m.vote,
    }))
}

/// Whether `granted` holds a majority of every voter set of `joint`.
fn quorum(joint: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !joint.is_empty()
        && joint
            .iter()
            .all(|set| set.intersection(granted).count() * 2 > set.len())
}

/// Runs a pre-vote round; returns whether a quorum granted it.
async fn round<T: RaftTransport>(node: &RaftNode<T>) -> bool {
    let inner = &node.inner;
    let me = inner.id;
    let m = node.metrics();
    let membership = m.membership_config.membership().clone();
    let joint: Vec<BTreeSet<NodeId>> = membership.get_joint_config().clone();
    let req = PreVoteRequest {
        vote: Vote::new(m.current_term + 1, me),
        last_log_id: inner.last_log.as_ref().and_then(|f| f()),
    };
    let deadline = inner.config.election_timeout_min;
    let mut asks = FuturesUnordered::new();
    for (id, info) in membership.nodes() {
        if *id == me || !joint.iter().any(|s| s.contains(id)) {
            continue;
        }
        let (id, info, req) = (*id, info.clone(), req.clone());
        let transport = Arc::clone(&inner.transport);
        let max = inner.config.max_rpc_bytes;
        asks.push(async move {
            let got = call_rpc::<_, PreVoteRequest, PreVoteResponse, Infallible>(
                transport.as_ref(),
                me,
                id,
                &info,
                RpcKind::PreVote,
                &req,
                max,
                deadline,
            )
            .await;
            (id, got)
        });
    }
    let mut granted = BTreeSet::from([me]);
    while let Some((id, got)) = asks.next().await {
        match got {
            Ok(r) if r.granted => {
                granted.insert(id);
                if quorum(&joint, &granted) {
                    break;
                }
            }
            Ok(r) => tracing::debug!(node = id, vote = %r.vote, "pre-vote refused"),
            Err(e) => tracing::debug!(node = id, error = %e, "pre-vote not answered"),
        }
    }
    let won = quorum(&joint, &granted);
    tracing::info!(
        term = req.vote.leader_id().term,
        granted = ?granted,
        won,
        "pre-vote round"
    );
    won
}

/// Starts elections for `node` (see the module doc) until it shuts down.
pub(crate) fn spawn<T: RaftTransport>(inner: Weak<Inner<T>>) {
    tokio::spawn(driver(inner));
}

async fn driver<T: RaftTransport>(weak: Weak<Inner<T>>) {
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut timeout = None::<Duration>;
    let mut last_round: Option<Instant> = None;
    let mut elect_on: Option<bool> = None;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if !inner.running.load(Ordering::Acquire) {
            return;
        }
        let node = RaftNode {
            inner: Arc::clone(&inner),
        };
        let tick = inner.config.heartbeat_interval;
        let (min, max) = (
            inner.config.election_timeout_min,
            inner.config.election_timeout_max,
        );
        let m = node.metrics();
        let me = inner.id;
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        // The only voter elects itself on openraft's own timer (a
        // pre-vote of one is a formality); every other node waits for us.
        let single = voters.len() == 1 && voters.contains(&me);
        if elect_on != Some(single) {
            inner.raft.runtime_config().elect(single);
            elect_on = Some(single);
        }
        let wait = *timeout.get_or_insert_with(|| rng.gen_range(min..max));
        let due = !single
            && voters.contains(&me)
            && !m.state.is_leader()
            && inner.silent_for() >= lease(&inner.config) + wait
            && last_round.is_none_or(|t| t.elapsed() >= wait);
        if due {
            last_round = Some(Instant::now());
            timeout = None;
            let vote_before = m.vote;
            if round(&node).await {
                // The round took a while: another node may have won an
                // election in the meantime (this node granted it its vote,
                // or heard its first AppendEntries). Campaigning now would
                // unseat that fresh leader with a higher term.
                let now = node.metrics();
                let quiet = inner.silent_for() >= lease(&inner.config);
                if now.vote == vote_before && quiet && !now.state.is_leader() {
                    if let Err(e) = inner.raft.trigger().elect().await {
                        tracing::warn!(error = %e, "cannot start an election");
                    }
                } else {
                    tracing::debug!(
                        before = %vote_before,
                        now = %now.vote,
                        "pre-vote won, but the vote changed or a leader spoke meanwhile: not campaigning"
                    );
                }
            }
        }
        drop(node);
        drop(inner);
        tokio::time::sleep(tick).await;
    }
}
