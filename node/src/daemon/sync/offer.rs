//! The acknowledgement contract: a file version is proposed only once its
//! chunks are durable (fsynced) on a majority of the voters.
//!
//! Origin side ([`Offerer::offer_until_quorum`]): the new versions (root +
//! size) are offered to every other voter over ctl, again every
//! [`OFFER_POLL`] until enough voters answer `Durable` for all of them
//! (with this node, if it votes: a majority); they become holders of the
//! proposed put. Without a quorum by the deadline the proposal fails as
//! `Unavailable` and the engine retries it on a later step: on the minority
//! side of a partition local changes wait.
//!
//! Peer side ([`Offers::on_offer`]): each offered version is pulled from the
//! origin in the background (tree nodes over ctl, chunks over the chunk
//! protocol, everything verified, chunks stored with an fsync) while the
//! origin's repeated offers are answered `Pending`; then `Durable`. Offers
//! are idempotent (keyed by root and size) and bounded: at most
//! [`MAX_PULLS`] pulls at once, at most [`MAX_TRACKED`] remembered.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::{Hash, MemNodeStore};
use filesyncd_p2p::{P2pClient, PeerId};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, Semaphore};

use super::ctl::{self, CtlRequest, CtlResponse, OfferItem, OfferState};
use super::ports::{members, P2pFetcher};
use super::servable::Servable;
use crate::daemon::Node;
use crate::engine::ports::{PortError, PortResult};
use crate::engine::sync::pull_many;
use crate::engine::types::NodeId;

/// How long a voter that answered at once with no progress waits before
/// it is asked again (a peer's answer is otherwise awaited, not polled).
pub const OFFER_POLL: Duration = Duration::from_millis(50);
/// How long a peer holds an offer whose items are all still pending before
/// it answers anyway (a long poll: the answer comes as soon as a pull ends).
pub const OFFER_WAIT: Duration = Duration::from_secs(1);
/// How often the origin re-reads the membership and its deadline while it
/// waits for answers.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long one poll round waits for one voter's answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Concurrent pulls of offered versions on the peer side.
pub const MAX_PULLS: usize = 4;
/// Offers remembered on the peer side (oldest finished ones are dropped).
pub const MAX_TRACKED: usize = 4096;

/// How long the origin waits for a quorum without progress: a base plus
/// time for the bytes at a slow 4 MiB/s (counted up to 4 GiB).
fn deadline_for(items: &[OfferItem]) -> Duration {
    let bytes: u64 = items.iter().map(|i| i.size).sum();
    let bytes = bytes.min(4 << 30);
    Duration::from_secs(20) + Duration::from_millis(bytes / (4 * 1024))
}

/// The origin side.
pub struct Offerer {
    pub client: P2pClient,
    pub node: Node,
    pub servable: Arc<Servable>,
}

impl Offerer {
    /// Offers `items` until a majority of voters (this node included if it
    /// votes) hold them durably; returns the other nodes that acked.
    ///
    /// Each voter is asked on its own: a new question goes out as soon as
    /// its answer is in (a peer holds a question up to [`OFFER_WAIT`] while
    /// its pulls run, so nothing sleeps on a poll timer), and the quorum is
    /// checked after every answer (a slow or dead voter never delays it).
    pub async fn offer_until_quorum(&self, items: Vec<OfferItem>) -> PortResult<Vec<NodeId>> {
        let mut seen = HashSet::new();
        let items: Vec<OfferItem> = items.into_iter().filter(|i| seen.insert(*i)).collect();
        for i in &items {
            self.servable.add_offered(i.root, i.size);
        }
        let me = self.node.id();
        let deadline = deadline_for(&items);
        let mut acked: BTreeSet<NodeId> = BTreeSet::new();
        // Per peer, the items it reported durable: they are never offered to
        // it again (a peer remembers a bounded number of offers, and a big
        // change must not be re-sent whole on every question). The deadline
        // runs from the last time any of these sets grew: big offers take as
        // long as they progress.
        let mut durable: HashMap<NodeId, HashSet<OfferItem>> = HashMap::new();
        // Voters whose last answer came back quickly with no progress (a
        // peer that cannot long-poll, or a failing pull): asked again only
        // after [`OFFER_POLL`].
        let mut pause: HashSet<NodeId> = HashSet::new();
        let mut asking: HashSet<NodeId> = HashSet::new();
        let mut inflight = FuturesUnordered::new();
        let mut last_progress = Instant::now();
        loop {
            let (peers, voters) = members(&self.node);
            let majority = voters.len() / 2 + 1;
            let mine = usize::from(voters.contains(&me));
            let need = majority.saturating_sub(mine);
            let got = acked.iter().filter(|n| voters.contains(n)).count();
            if got >= need {
                return Ok(acked.into_iter().collect());
            }
            if last_progress.elapsed() > deadline {
                return Err(PortError::Unavailable(format!(
                    "no quorum holds the new content: {got} of {need} other voters acknowledged \
                     within {}s",
                    deadline.as_secs()
                )));
            }
            for v in &voters {
                if *v == me || acked.contains(v) || asking.contains(v) {
                    continue;
                }
                let Some(peer) = peers.get(v).copied() else {
                    continue;
                };
                let done = durable.get(v);
                let rest: Vec<OfferItem> = items
                    .iter()
                    .filter(|i| done.is_none_or(|d| !d.contains(*i)))
                    .copied()
                    .collect();
                let wait = if pause.remove(v) {
                    OFFER_POLL
                } else {
                    Duration::ZERO
                };
                asking.insert(*v);
                let v = *v;
                // A dead or unreachable voter must not hold up the others:
                // its question waits for the transport's timeout alone.
                inflight.push(async move {
                    tokio::time::sleep(wait).await;
                    let asked_at = Instant::now();
                    let answer = tokio::time::timeout(ASK_TIMEOUT, self.ask(peer, &rest))
                        .await
                        .unwrap_or_else(|_| Err("no answer within the ask timeout".into()));
                    (v, rest, answer, asked_at.elapsed())
                });
            }
            let next = tokio::time::timeout(CHECK_EVERY, inflight.next()).await;
            let (v, asked, answer, took) = match next {
                Ok(Some(a)) => a,
                // Nobody to ask (no other voter known yet): look again soon.
                Ok(None) => {
                    tokio::time::sleep(OFFER_POLL).await;
                    continue;
                }
                // Membership and deadline are re-read.
                Err(_) => continue,
            };
            asking.remove(&v);
            let mut progressed = false;
            match answer {
                Ok(states) => {
                    let done = durable.entry(v).or_default();
                    let before = done.len();
                    for (item, state) in asked.iter().zip(&states) {
                        match state {
                            OfferState::Durable => {
                                done.insert(*item);
                            }
                            OfferState::Failed(e) => {
                                tracing::debug!(node = format!("{v:016x}"), error = %e, "offer pull failed; re-offering");
                            }
                            OfferState::Pending => {}
                        }
                    }
                    if done.len() > before {
                        last_progress = Instant::now();
                        progressed = true;
                    }
                    if done.len() == items.len() {
                        acked.insert(v);
                    }
                }
                Err(e) => {
                    tracing::debug!(node = format!("{v:016x}"), error = %e, "offer not answered")
                }
            }
            if !progressed && took < OFFER_POLL {
                pause.insert(v);
            }
        }
    }

    /// Offers `items` to every other voter once, without waiting for an
    /// answer: the peers start pulling them while an earlier batch is still
    /// being committed ([`crate::engine::ports::Committed::announce`]).
    pub fn announce(self: &Arc<Self>, items: Vec<OfferItem>) {
        if items.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for i in &items {
            self.servable.add_offered(i.root, i.size);
        }
        let me = self.clone();
        rt.spawn(async move {
            let (peers, voters) = members(&me.node);
            let mine = me.node.id();
            let asks = voters
                .iter()
                .filter(|v| **v != mine)
                .filter_map(|v| peers.get(v).copied())
                .map(|peer| {
                    let items = &items;
                    let me = &me;
                    async move {
                        let _ = tokio::time::timeout(ASK_TIMEOUT, me.ask(peer, items)).await;
                    }
                });
            futures::future::join_all(asks).await;
        });
    }

    /// Offers `items` to `peer` in requests of at most `MAX_HASHES` items,
    /// sent together; the states in item order.
    async fn ask(&self, peer: PeerId, items: &[OfferItem]) -> Result<Vec<OfferState>, String> {
        let parts = items.chunks(ctl::MAX_HASHES).map(|part| async move {
            let req = ctl::encode_request(&CtlRequest::Offer {
                items: part.to_vec(),
            });
            let bytes = self
                .client
                .ctl_request(peer, req)
                .await
                .map_err(|e| e.to_string())?;
            match ctl::decode_response(&bytes).map_err(|e| e.to_string())? {
                CtlResponse::Offer(s) if s.len() == part.len() => Ok(s),
                CtlResponse::Error(e) => Err(e),
                other => Err(format!("unexpected answer to Offer: {other:?}")),
            }
        });
        let mut out = Vec::with_capacity(items.len());
        for part in futures::future::join_all(parts).await {
            out.extend(part?);
        }
        Ok(out)
    }
}

#[derive(Clone, Debug)]
struct Tracked {
    state: OfferState,
    at: Instant,
}

/// The peer side. The map is behind a std `Mutex`: held for lookups and
/// inserts only, never across an `.await`.
pub struct Offers {
    tracked: Mutex<HashMap<OfferItem, Tracked>>,
    /// Woken whenever a pull ends (long-polled offers re-read their states).
    changed: Notify,
    pulls: Arc<Semaphore>,
    pub store: Arc<dyn ChunkStore>,
    pub nodes: Arc<Mutex<MemNodeStore>>,
    pub fetcher: P2pFetcher,
    pub servable: Arc<Servable>,
    /// Where pulls run (the sync runtime, off the network's threads).
    pub runtime: tokio::runtime::Handle,
}

impl Offers {
    pub fn new(
        store: Arc<dyn ChunkStore>,
        nodes: Arc<Mutex<MemNodeStore>>,
        fetcher: P2pFetcher,
        servable: Arc<Servable>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Offers> {
        Arc::new(Offers {
            tracked: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            pulls: Arc::new(Semaphore::new(MAX_PULLS)),
            store,
            nodes,
            fetcher,
            servable,
            runtime,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OfferItem, Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one offer from `origin`, starting pulls as needed.
    pub fn on_offer(self: &Arc<Self>, origin: NodeId, items: Vec<OfferItem>) -> Vec<OfferState> {
        let mut out = Vec::with_capacity(items.len());
        let mut start = Vec::new();
        {
            let mut map = self.lock();
            for item in items {
                let restart = match map.get(&item) {
                    Some(t) => matches!(t.state, OfferState::Failed(_)),
                    None => true,
                };
                if restart {
                    map.insert(
                        item,
                        Tracked {
                            state: OfferState::Pending,
                            at: Instant::now(),
                        },
                    );
                    start.push(item);
                    out.push(OfferState::Pending);
                } else {
                    out.push(map[&item].state.clone());
                }
            }
            if map.len() > MAX_TRACKED {
                let mut done: Vec<(Instant, OfferItem)> = map
                    .iter()
                    .filter(|(_, t)| t.state != OfferState::Pending)
                    .map(|(i, t)| (t.at, *i))
                    .collect();
                done.sort_by_key(|(t, _)| *t);
                for (_, i) in done.into_iter().take(map.len() - MAX_TRACKED) {
                    map.remove(&i);
                }
            }
        }
        if !start.is_empty() {
            let me = self.clone();
            self.runtime.spawn(async move {
                let states = me.pull_batch(origin, &start).await;
                {
                    let mut map = me.lock();
                    for (item, state) in start.into_iter().zip(states) {
                        map.insert(
                            item,
                            Tracked {
                                state,
                                at: Instant::now(),
                            },
                        );
                    }
                }
                me.changed.notify_waiters();
            });
        }
        out
    }

    /// [`Offers::on_offer`] as a long poll: while every answer is the same
    /// as the first one and some item is still pending, waits (up to `wait`)
    /// for a pull to end, then answers the current states.
    pub async fn on_offer_wait(
        self: &Arc<Self>,
        origin: NodeId,
        items: Vec<OfferItem>,
        wait: Duration,
    ) -> Vec<OfferState> {
        let deadline = tokio::time::Instant::now() + wait;
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let first = self.on_offer(origin, items.clone());
        loop {
            if !first.contains(&OfferState::Pending) {
                return first;
            }
            if tokio::time::timeout_at(deadline, notified.as_mut())
                .await
                .is_err()
            {
                return self.states(&items);
            }
            notified.set(self.changed.notified());
            notified.as_mut().enable();
            let now = self.states(&items);
            if now != first {
                return now;
            }
        }
    }

    /// The current state of each item, starting nothing (an item no longer
    /// tracked reads as pending: the next offer restarts it).
    fn states(&self, items: &[OfferItem]) -> Vec<OfferState> {
        let map = self.lock();
        items
            .iter()
            .map(|i| map.get(i).map_or(OfferState::Pending, |t| t.state.clone()))
            .collect()
    }

    /// Pulls the offered versions of one request together (one tree fetch,
    /// one chunk fetch), at most [`MAX_PULLS`] batches at once.
    async fn pull_batch(&self, origin: NodeId, items: &[OfferItem]) -> Vec<OfferState> {
        let Ok(_permit) = self.pulls.clone().acquire_owned().await else {
            return vec![OfferState::Failed("shutting down".into()); items.len()];
        };
        let trees: Vec<(Hash, u64)> = items.iter().map(|i| (i.root, i.size)).collect();
        let generation = self.servable.sweep_generation();
        match pull_many(
            self.store.as_ref(),
            &self.nodes,
            &self.fetcher,
            &trees,
            &[origin],
        )
        .await
        {
            Ok(done) => items
                .iter()
                .zip(done)
                .map(|(item, ok)| {
                    if !ok {
                        OfferState::Failed("chunks missing after the pull".into())
                    } else if self
                        .servable
                        .add_pulled_offer(item.root, item.size, generation)
                    {
                        OfferState::Durable
                    } else {
                        // A sweep of the version store ran meanwhile: pull
                        // again (only what is missing) at the next offer.
                        OfferState::Failed("version store swept during the pull".into())
                    }
                })
                .collect(),
            Err(e) => vec![OfferState::Failed(e); items.len()],
        }
    }
}

/// Answers `GetNodes` from the node store, up to the answer size cap.
pub fn get_nodes(nodes: &Mutex<MemNodeStore>, hashes: &[Hash]) -> Vec<(Hash, Vec<u8>)> {
    use filesyncd_merkle::NodeSource;
    let nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut seen = HashSet::new();
    for h in hashes {
        if !seen.insert(*h) {
            continue;
        }
        if let Some(b) = nodes.get_node(h) {
            bytes += b.len() + 40;
            if bytes > ctl::MAX_NODES_BYTES {
                break;
            }
            out.push((*h, b));
        }
    }
    out
}
