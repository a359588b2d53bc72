//! The acknowledgement contract as a port: a put of file content is
//! proposed only once a majority of the voters, the origin included, hold
//! that content durably.
//!
//! - [`Acks`]: offer content to the voters and wait until a quorum of them
//!   acknowledged it; without one by the port's deadline the offer fails
//!   [`PortError::Unavailable`]. The daemon implements it over the p2p ctl
//!   protocol (`daemon::sync::offer::P2pAcks`); [`MemAcks`] is its
//!   in-memory twin, with voters up or down, slow, holding what they are
//!   offered or not.
//! - [`Quorum`]: the counting rule every implementation uses. Only voters
//!   count; the origin counts only once its own copy is durable; a voter
//!   counts only when it acknowledged every offered item.
//! - [`OfferFirst`]: a [`Committed`] that offers the content of every put
//!   through an [`Acks`] and proposes only after a quorum acknowledged it
//!   (the acknowledging voters join the put's holders). When the offer
//!   fails nothing is proposed: the step fails, the change stays pending
//!   locally and a later step offers it again. On the minority side of a
//!   partition local changes wait.
//!
//! Directories, links, empty files and deletes carry no content and are
//! proposed without an offer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use filesyncd_merkle::Hash;

use super::ports::{
    Committed, CommittedSnapshot, PortError, PortResult, ProposeOp, ProposeOutcome,
};
use super::types::{Meta, NodeId};

/// One file version offered: its tree root and size (its identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Content {
    pub root: Hash,
    pub size: u64,
}

/// The voters, as the engine sees them.
pub trait Acks: Send + Sync {
    /// Offers `items` until a quorum of the voters hold all of them durably
    /// ([`Quorum`]); returns the other nodes that acknowledged. Fails
    /// [`PortError::Unavailable`] when no quorum is reached in time.
    fn offer_until_quorum(
        &self,
        items: Vec<Content>,
    ) -> impl Future<Output = PortResult<Vec<NodeId>>> + Send;
    /// `items` will be offered next: the voters may start fetching them
    /// now. A hint: no outcome, no error.
    fn announce(&self, _items: Vec<Content>) {}
}

/// Where an offer stands: how many other voters acknowledged, how many
/// are needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    pub got: usize,
    pub need: usize,
}

impl Quorum {
    /// A majority of `voters` is needed; `me` counts when it is a voter and
    /// its own copy is durable (`own_durable`); every other voter counts
    /// when it is in `acked` (it acknowledged every item). Non-voters
    /// (learners) never count.
    pub fn count(
        voters: &BTreeSet<NodeId>,
        me: NodeId,
        own_durable: bool,
        acked: &BTreeSet<NodeId>,
    ) -> Quorum {
        let majority = voters.len() / 2 + 1;
        let mine = usize::from(own_durable && voters.contains(&me));
        Quorum {
            got: acked
                .iter()
                .filter(|n| **n != me && voters.contains(n))
                .count(),
            need: majority.saturating_sub(mine),
        }
    }

    pub fn reached(&self) -> bool {
        self.got >= self.need
    }

    /// The error of an offer that ran out of time at this count.
    pub fn unavailable(&self, within: Duration) -> PortError {
        PortError::Unavailable(format!(
            "no quorum holds the new content: {} of {} other voters acknowledged within {}s",
            self.got,
            self.need,
            within.as_secs()
        ))
    }
}

/// The content among `ops` that must be durable on a quorum before they
/// are proposed: files with bytes.
pub fn offered(ops: &[ProposeOp]) -> Vec<Content> {
    ops.iter()
        .filter_map(|op| match op {
            ProposeOp::Put { meta, .. } if carries_content(meta) => Some(Content {
                root: meta.root,
                size: meta.size,
            }),
            _ => None,
        })
        .collect()
}

/// Whether a put of `meta` has bytes a quorum must hold: a non-empty file.
fn carries_content(meta: &Meta) -> bool {
    meta.is_file() && meta.size > 0
}

/// [`Committed`] `C` with every put's content offered through `A` first
/// (see the module doc).
#[derive(Clone)]
pub struct OfferFirst<C, A> {
    pub inner: C,
    pub acks: A,
}

impl<C: Committed, A: Acks> Committed for OfferFirst<C, A> {
    async fn propose(&self, mut ops: Vec<ProposeOp>) -> PortResult<Vec<ProposeOutcome>> {
        let items = offered(&ops);
        if !items.is_empty() {
            let acked = self.acks.offer_until_quorum(items).await?;
            for op in &mut ops {
                if let ProposeOp::Put { meta, holders, .. } = op {
                    if carries_content(meta) {
                        holders.extend(acked.iter().copied());
                        holders.sort_unstable();
                        holders.dedup();
                    }
                }
            }
        }
        self.inner.propose(ops).await
    }

    fn announce(&self, ops: &[ProposeOp]) {
        let items = offered(ops);
        if !items.is_empty() {
            self.acks.announce(items);
        }
        self.inner.announce(ops);
    }

    fn snapshot(&self) -> PortResult<CommittedSnapshot> {
        self.inner.snapshot()
    }

    fn changed_paths_since(&self, index: u64) -> PortResult<Vec<String>> {
        self.inner.changed_paths_since(index)
    }

    fn wait_applied(&self, index: u64) -> impl Future<Output = ()> + Send {
        self.inner.wait_applied(index)
    }
}

/// How one other voter behaves in [`MemAcks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemVoter {
    /// Reachable: a voter that is down never answers.
    pub up: bool,
    /// How long after the offer its answer comes.
    pub delay: Duration,
    /// It stores what it is offered (durably): one that does not answers
    /// "pending" forever and never counts.
    pub holds: bool,
}

impl MemVoter {
    /// Up, holding, answering at once.
    pub const GOOD: MemVoter = MemVoter {
        up: true,
        delay: Duration::ZERO,
        holds: true,
    };
    /// Unreachable.
    pub const DOWN: MemVoter = MemVoter {
        up: false,
        delay: Duration::ZERO,
        holds: true,
    };
}

struct MemAcksState {
    me: NodeId,
    voters: BTreeSet<NodeId>,
    peers: BTreeMap<NodeId, MemVoter>,
    own_durable: bool,
    deadline: Duration,
    offers: Vec<Vec<Content>>,
    announced: Vec<Vec<Content>>,
}

/// The in-memory twin of the p2p offer: the voters' answers come after
/// their delays, the quorum is checked
/// after each one, and without a quorum by the deadline the offer fails as
/// the real one does.
#[derive(Clone)]
pub struct MemAcks {
    state: Arc<Mutex<MemAcksState>>,
}

impl MemAcks {
    /// `me` among `voters` (`me` may be missing: a learner origin); every
    /// other voter [`MemVoter::GOOD`], this node's copy durable, a 20 s
    /// deadline (the real port's base).
    pub fn new(me: NodeId, voters: impl IntoIterator<Item = NodeId>) -> MemAcks {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let peers = voters
            .iter()
            .filter(|v| **v != me)
            .map(|v| (*v, MemVoter::GOOD))
            .collect();
        MemAcks {
            state: Arc::new(Mutex::new(MemAcksState {
                me,
                voters,
                peers,
                own_durable: true,
                deadline: Duration::from_secs(20),
                offers: Vec::new(),
                announced: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemAcksState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how voter `node` behaves.
    pub fn set(&self, node: NodeId, voter: MemVoter) {
        self.lock().peers.insert(node, voter);
    }

    /// Whether this node's own copy of offered content is durable yet.
    pub fn set_own_durable(&self, durable: bool) {
        self.lock().own_durable = durable;
    }

    /// How long an offer waits for a quorum.
    pub fn set_deadline(&self, deadline: Duration) {
        self.lock().deadline = deadline;
    }

    /// Every offer made so far, in order.
    pub fn offers(&self) -> Vec<Vec<Content>> {
        self.lock().offers.clone()
    }

    /// Every announcement made so far, in order.
    pub fn announced(&self) -> Vec<Vec<Content>> {
        self.lock().announced.clone()
    }
}

impl Acks for MemAcks {
    async fn offer_until_quorum(&self, items: Vec<Content>) -> PortResult<Vec<NodeId>> {
        let (me, voters, own_durable, deadline, mut answers) = {
            let mut s = self.lock();
            s.offers.push(items);
            let answers: Vec<(Duration, NodeId)> = s
                .voters
                .iter()
                .filter(|v| **v != s.me)
                .filter_map(|v| {
                    let b = s.peers.get(v).copied().unwrap_or(MemVoter::DOWN);
                    (b.up && b.holds).then_some((b.delay, *v))
                })
                .collect();
            (s.me, s.voters.clone(), s.own_durable, s.deadline, answers)
        };
        answers.sort_unstable();
        let start = tokio::time::Instant::now();
        let mut acked = BTreeSet::new();
        let reached =
            |acked: &BTreeSet<NodeId>| Quorum::count(&voters, me, own_durable, acked).reached();
        if reached(&acked) {
            return Ok(Vec::new());
        }
        for (at, v) in answers {
            if at > deadline {
                break;
            }
            tokio::time::sleep_until(start + at).await;
            acked.insert(v);
            if reached(&acked) {
                return Ok(acked.into_iter().collect());
            }
        }
        tokio::time::sleep_until(start + deadline).await;
        Err(Quorum::count(&voters, me, own_durable, &acked).unavailable(deadline))
    }

    fn announce(&self, items: Vec<Content>) {
        self.lock().announced.push(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn item(n: u8) -> Content {
        Content {
            root: Hash([n; 32]),
            size: 10,
        }
    }

    #[test]
    fn a_majority_of_voters_counts_the_origin_once_its_copy_is_durable() {
        let voters = set(&[1, 2, 3]);
        let q = |own, acked: &[NodeId]| Quorum::count(&voters, 1, own, &set(acked));
        assert!(q(true, &[2]).reached(), "origin + one of two others");
        assert!(!q(true, &[]).reached(), "the origin alone is a minority");
        assert!(
            !q(false, &[2]).reached(),
            "the origin's copy is not durable"
        );
        assert!(q(false, &[2, 3]).reached());
        assert!(!q(true, &[7, 8]).reached(), "non-voters never count");
        assert!(
            !q(true, &[1]).reached(),
            "the origin counts once, as itself"
        );
        // A learner origin needs a majority of the voters without itself.
        let learner = Quorum::count(&voters, 9, true, &set(&[2]));
        assert_eq!(learner, Quorum { got: 1, need: 2 });
        // One voter: the origin alone, once durable.
        assert!(Quorum::count(&set(&[1]), 1, true, &set(&[])).reached());
        assert!(!Quorum::count(&set(&[1]), 1, false, &set(&[])).reached());
    }

    #[test]
    fn only_content_is_announced_and_offered() {
        use crate::engine::ports::MemCommitted;
        use crate::engine::types::{Meta, VersionId};
        let put = |path: &str, meta: Meta| ProposeOp::Put {
            path: path.into(),
            meta,
            mtime_ns: 0,
            origin: 1,
            base: None,
            holders: vec![1],
        };
        let ops = vec![
            put("d", Meta::dir(0o755)),
            put("empty", Meta::file(Hash([0; 32]), 0, 0o644)),
            put("link", Meta::symlink("d")),
            put("f", Meta::file(Hash([7; 32]), 10, 0o644)),
            ProposeOp::Delete {
                path: "gone".into(),
                base: VersionId::new(1, 0),
            },
        ];
        assert_eq!(offered(&ops), vec![item(7)]);
        let acks = MemAcks::new(1, [1, 2, 3]);
        let c = OfferFirst {
            inner: MemCommitted::new(),
            acks: acks.clone(),
        };
        c.announce(&ops);
        c.announce(&ops[..3]);
        assert_eq!(
            acks.announced(),
            vec![vec![item(7)]],
            "nothing to hold: no announcement"
        );
    }

    #[tokio::test]
    async fn a_majority_answers_while_a_minority_is_down_or_slow() {
        let acks = MemAcks::new(1, [1, 2, 3, 4, 5]);
        acks.set(2, MemVoter::DOWN);
        acks.set(
            3,
            MemVoter {
                delay: Duration::from_secs(3600),
                ..MemVoter::GOOD
            },
        );
        acks.set(
            4,
            MemVoter {
                delay: Duration::from_millis(100),
                ..MemVoter::GOOD
            },
        );
        let start = tokio::time::Instant::now();
        let got = acks
            .offer_until_quorum(vec![item(1)])
            .await
            .expect("quorum");
        assert_eq!(got, vec![4, 5], "the two fastest others");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    #[tokio::test]
    async fn a_minority_waits_until_the_deadline_and_fails() {
        let acks = MemAcks::new(1, [1, 2, 3]);
        acks.set(2, MemVoter::DOWN);
        acks.set(3, MemVoter::DOWN);
        acks.set_deadline(Duration::from_millis(200));
        let start = tokio::time::Instant::now();
        let err = acks.offer_until_quorum(vec![item(1)]).await.unwrap_err();
        assert!(matches!(err, PortError::Unavailable(_)), "{err:?}");
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "waits out the deadline"
        );
        // A voter slower than the deadline is as good as down.
        acks.set(
            2,
            MemVoter {
                delay: Duration::from_secs(3600),
                ..MemVoter::GOOD
            },
        );
        assert!(acks.offer_until_quorum(vec![item(1)]).await.is_err());
    }

    #[tokio::test]
    async fn a_voter_that_does_not_hold_the_content_never_counts() {
        let acks = MemAcks::new(1, [1, 2, 3]);
        acks.set(
            2,
            MemVoter {
                holds: false,
                ..MemVoter::GOOD
            },
        );
        acks.set(3, MemVoter::DOWN);
        acks.set_deadline(Duration::from_millis(100));
        assert!(acks.offer_until_quorum(vec![item(1)]).await.is_err());
        acks.set(3, MemVoter::GOOD);
        assert_eq!(acks.offer_until_quorum(vec![item(1)]).await, Ok(vec![3]));
    }

    #[tokio::test]
    async fn the_origin_counts_only_after_its_own_copy_is_durable() {
        let acks = MemAcks::new(1, [1, 2, 3]);
        acks.set(3, MemVoter::DOWN);
        acks.set_deadline(Duration::from_millis(100));
        acks.set_own_durable(false);
        assert!(acks.offer_until_quorum(vec![item(1)]).await.is_err());
        acks.set_own_durable(true);
        assert_eq!(acks.offer_until_quorum(vec![item(1)]).await, Ok(vec![2]));
    }
}
