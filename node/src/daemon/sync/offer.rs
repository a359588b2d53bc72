//! The acknowledgement contract: a file version is proposed only once its
//! chunks are durable (fsynced) on a majority of the voters.
//!
//! Origin side ([`Offerer::offer_until_quorum`], the engine's [`Acks`]
//! port as [`P2pAcks`]): the new versions (root + size) are offered to
//! every other voter over ctl, again every [`OFFER_POLL`] until enough
//! voters answer `Durable` for all of them (with this node, if it votes: a
//! majority; the count is [`Quorum`]'s); they become holders of the
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
use filesyncd_merkle::{Hash, MemNodeStore, NodeStore};
use filesyncd_p2p::{P2pClient, PeerId};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, Semaphore};

use super::ctl::{self, CtlRequest, CtlResponse, InlineItem, OfferItem, OfferState};
use super::ports::{members, voter_sets, P2pFetcher};
use super::servable::Servable;
use crate::daemon::Node;
use crate::engine::acks::{Acks, Content, Quorum};
use crate::engine::fs::Fs;
use crate::engine::fs_real::RootFs;
use crate::engine::ports::PortResult;
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

/// Items a voter reported durable in answer to an announcement, kept for
/// the offer that follows (at most this many per voter).
const MAX_ANNOUNCED: usize = 16 * 1024;

/// How long an announced `Durable` answer stands for the offer that
/// follows: an older one is asked again (the peer keeps an offered item's
/// content only while the offer is pending, and a sweep may have dropped it
/// since).
const ANNOUNCED_TTL: Duration = Duration::from_secs(60);

/// The origin side.
pub struct Offerer {
    pub client: P2pClient,
    pub node: Node,
    pub servable: Arc<Servable>,
    /// Where the content of small files is read from (they travel inline).
    pub store: Arc<dyn ChunkStore>,
    pub nodes: Arc<Mutex<MemNodeStore>>,
    /// Per voter, the announced items it already answered `Durable`: the
    /// offer of the same group does not send them (or their bytes) again.
    /// Each answer is kept with its time and used for [`ANNOUNCED_TTL`].
    pub announced: Mutex<HashMap<NodeId, HashMap<OfferItem, Instant>>>,
    /// Announcements still asking, by [`group_key`] of their items: the
    /// offer of the same items waits for its answers instead of sending the
    /// same items (and the bytes of small ones) a second time.
    pub announcing: Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>,
}

/// Announcements kept asking at once (older ones are still awaited by
/// nobody once this many are newer).
const MAX_ANNOUNCING: usize = 8;

/// Requests of one question to one voter in flight at once: what a peer
/// buffers for it stays at a few [`ctl::INLINE_REQUEST_BYTES`].
const PARTS_IN_FLIGHT: usize = 4;

/// The identity of a group of offered items (the same list is announced,
/// then offered).
fn group_key(items: &[OfferItem]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    items.hash(&mut h);
    h.finish()
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
        let announcing = self
            .announcing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group_key(&items));
        if let Some(task) = announcing {
            // Bounded: each of its questions has a timeout.
            let _ = tokio::time::timeout(ASK_TIMEOUT + Duration::from_secs(1), task).await;
        }
        #[cfg(feature = "failpoints")]
        super::rogue::offer_bombs(self).await;
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
        let mut durable = self.take_announced(&items);
        // Voters whose last answer came back quickly with no progress (a
        // peer that cannot long-poll, or a failing pull): asked again only
        // after [`OFFER_POLL`].
        let mut pause: HashSet<NodeId> = HashSet::new();
        let mut asking: HashSet<NodeId> = HashSet::new();
        let mut inflight = FuturesUnordered::new();
        let mut last_progress = Instant::now();
        loop {
            let (peers, voters) = members(&self.node);
            // This node's copy is durable: its scan stored the content in
            // the chunk store before the engine proposes it. During a joint
            // membership change a majority of each voter set is needed, as
            // the apply counts the holders (`filesyncd_raft::apply`).
            let quorum = voter_sets(&self.node)
                .iter()
                .map(|set| Quorum::count(set, me, true, &acked))
                .min_by_key(|q| q.got as isize - q.need as isize)
                .unwrap_or_else(|| Quorum::count(&voters, me, true, &acked));
            if quorum.reached() {
                return Ok(acked.into_iter().collect());
            }
            if last_progress.elapsed() > deadline {
                return Err(quorum.unavailable(deadline));
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
        let key = group_key(&items);
        let me = self.clone();
        let task = rt.spawn(async move {
            let (peers, voters) = members(&me.node);
            let mine = me.node.id();
            let asks = voters
                .iter()
                .filter(|v| **v != mine)
                .filter_map(|v| Some((*v, peers.get(v).copied()?)))
                .map(|(v, peer)| {
                    let items = &items;
                    let me = &me;
                    async move {
                        let answer = tokio::time::timeout(ASK_TIMEOUT, me.ask(peer, items)).await;
                        if let Ok(Ok(states)) = answer {
                            me.remember_announced(v, items, &states);
                        }
                    }
                });
            futures::future::join_all(asks).await;
        });
        let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        if announcing.len() >= MAX_ANNOUNCING {
            announcing.retain(|_, t| !t.is_finished());
        }
        if announcing.len() < MAX_ANNOUNCING {
            announcing.insert(key, task);
        }
    }

    /// Records the items `v` answered `Durable` to an announcement.
    fn remember_announced(&self, v: NodeId, items: &[OfferItem], states: &[OfferState]) {
        let mut map = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let set = map.entry(v).or_default();
        let now = Instant::now();
        for (item, state) in items.iter().zip(states) {
            if *state == OfferState::Durable {
                if set.len() >= MAX_ANNOUNCED {
                    // Bounded: the stale go first; an offer that finds
                    // nothing here asks again.
                    set.retain(|_, at| now.duration_since(*at) < ANNOUNCED_TTL);
                    if set.len() >= MAX_ANNOUNCED {
                        set.clear();
                    }
                }
                set.insert(*item, now);
            }
        }
    }

    /// Takes, per voter, the `items` it answered `Durable` when announced.
    fn take_announced(&self, items: &[OfferItem]) -> HashMap<NodeId, HashSet<OfferItem>> {
        let mut map = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        map.iter_mut()
            .map(|(v, set)| {
                let got: HashSet<OfferItem> = items
                    .iter()
                    .filter(|i| {
                        set.remove(*i)
                            .is_some_and(|at| at.elapsed() < ANNOUNCED_TTL)
                    })
                    .copied()
                    .collect();
                (*v, got)
            })
            .filter(|(_, got)| !got.is_empty())
            .collect()
    }

    /// Offers `items` to `peer`: small files with their content (see
    /// [`Offerer::inline_items`]) in requests of at most
    /// [`ctl::INLINE_REQUEST_BYTES`], the others in requests of at most
    /// `MAX_HASHES` items; all sent together. The states in item order.
    pub(super) async fn ask(
        &self,
        peer: PeerId,
        items: &[OfferItem],
    ) -> Result<Vec<OfferState>, String> {
        let (inline, plain) = self.inline_items(items).await;
        let mut parts: Vec<(Vec<usize>, CtlRequest)> = Vec::new();
        for part in plain.chunks(ctl::MAX_HASHES) {
            parts.push((
                part.to_vec(),
                CtlRequest::Offer {
                    items: part.iter().map(|i| items[*i]).collect(),
                },
            ));
        }
        let mut at: Vec<usize> = Vec::new();
        let mut batch: Vec<InlineItem> = Vec::new();
        let mut bytes = 0usize;
        for (i, it) in inline {
            if !batch.is_empty()
                && (batch.len() == ctl::MAX_HASHES
                    || bytes + it.content.len() > ctl::INLINE_REQUEST_BYTES)
            {
                parts.push((
                    std::mem::take(&mut at),
                    CtlRequest::OfferInline {
                        items: std::mem::take(&mut batch),
                    },
                ));
                bytes = 0;
            }
            bytes += it.content.len();
            at.push(i);
            batch.push(it);
        }
        if !batch.is_empty() {
            parts.push((at, CtlRequest::OfferInline { items: batch }));
        }
        let asks = parts.into_iter().map(|(at, req)| async move {
            match self.send(peer, &req, at.len()).await {
                // A peer that does not know inline offers (an older
                // version) answers `Error`: it is offered the same items
                // plainly and pulls them.
                Err(e) if matches!(req, CtlRequest::OfferInline { .. }) => {
                    tracing::debug!(%peer, error = %e, "inline offer refused, offering plainly");
                    let plain = CtlRequest::Offer {
                        items: at.iter().map(|i| items[*i]).collect(),
                    };
                    self.send(peer, &plain, at.len()).await
                }
                got => got,
            }
            .map(|s| (at, s))
        });
        let mut out = vec![OfferState::Pending; items.len()];
        let answers: Vec<_> = futures::stream::iter(asks)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .collect()
            .await;
        for part in answers {
            let (at, states) = part?;
            for (i, s) in at.into_iter().zip(states) {
                out[i] = s;
            }
        }
        Ok(out)
    }

    /// Sends one offer request; the `n` states of its answer.
    async fn send(
        &self,
        peer: PeerId,
        req: &CtlRequest,
        n: usize,
    ) -> Result<Vec<OfferState>, String> {
        let bytes = self
            .client
            .ctl_request(peer, ctl::encode_request(req))
            .await
            .map_err(|e| e.to_string())?;
        match ctl::decode_response(&bytes).map_err(|e| e.to_string())? {
            CtlResponse::Offer(s) if s.len() == n => Ok(s),
            CtlResponse::Error(e) => Err(e),
            other => Err(format!("unexpected answer to Offer: {other:?}")),
        }
    }

    /// Splits `items` (by index) into the small files whose content can be
    /// sent inline, read and checked here, and the others: a version above
    /// [`ctl::INLINE_MAX`], whose tree is more than one leaf, or whose bytes
    /// this node cannot read back whole (changed since) is offered plainly.
    async fn inline_items(&self, items: &[OfferItem]) -> (Vec<(usize, InlineItem)>, Vec<usize>) {
        let small: Vec<(usize, OfferItem)> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.size <= ctl::INLINE_MAX)
            .map(|(n, i)| (n, *i))
            .collect();
        let store = self.store.clone();
        let nodes = self.nodes.clone();
        let read = tokio::task::spawn_blocking(move || {
            small
                .into_iter()
                .filter_map(|(n, i)| Some((n, read_inline(store.as_ref(), &nodes, i)?)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut is_inline = vec![false; items.len()];
        for (n, _) in &read {
            is_inline[*n] = true;
        }
        let plain = (0..items.len()).filter(|n| !is_inline[*n]).collect();
        (read, plain)
    }
}

/// The engine's [`Acks`] port over p2p: [`Offerer`].
#[derive(Clone)]
pub struct P2pAcks(pub Arc<Offerer>);

fn item_of(c: Content) -> OfferItem {
    OfferItem {
        root: c.root,
        size: c.size,
    }
}

impl Acks for P2pAcks {
    async fn offer_until_quorum(&self, items: Vec<Content>) -> PortResult<Vec<NodeId>> {
        self.0
            .offer_until_quorum(items.into_iter().map(item_of).collect())
            .await
    }

    fn announce(&self, items: Vec<Content>) {
        self.0.announce(items.into_iter().map(item_of).collect());
    }
}

/// The inline form of `item`: its tree's one leaf and its bytes, read from
/// the chunk store (each chunk verified there); `None` when any is missing.
fn read_inline(
    store: &dyn ChunkStore,
    nodes: &Mutex<MemNodeStore>,
    item: OfferItem,
) -> Option<InlineItem> {
    use filesyncd_merkle::{decode_verified, Node, NodeSource};
    let node = nodes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_node(&item.root)?;
    let Ok(Node::FileLeaf(entries)) = decode_verified(&item.root, &node) else {
        return None;
    };
    let hashes: Vec<Hash> = entries.iter().map(|e| e.hash).collect();
    let got = store.get_many(&hashes).ok()?;
    let mut content = Vec::with_capacity(item.size as usize);
    for (e, data) in entries.iter().zip(got) {
        let data = data?;
        if data.len() != e.len as usize {
            return None;
        }
        content.extend_from_slice(&data);
    }
    (content.len() as u64 == item.size).then_some(InlineItem {
        root: item.root,
        size: item.size,
        node,
        content,
    })
}

#[derive(Clone, Debug)]
struct Tracked {
    state: OfferState,
    at: Instant,
}

/// The peer side. The map is behind a std `Mutex`: held for lookups and
/// inserts only, never across an `.await`.
///
/// Its pulls store verified chunks and tree nodes outside the sync task,
/// on purpose (the one such writer; ARCHITECTURE invariant 7): this node's
/// sync task may itself be waiting in an offer for a quorum, and two origins
/// offering to each other through their sync tasks would each wait for the
/// other until the deadline. The puts are content-addressed (a chunk is the
/// same bytes whoever stores it) and a pull that overlaps a sweep of the
/// version store is not acked ([`Servable::add_pulled_offer`]).
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
    /// `--max-file-size`: a larger offered version is refused, not pulled.
    pub max_file_size: u64,
    /// The synced directory (its staging area holds large pulled versions).
    pub root: std::path::PathBuf,
}

impl Offers {
    pub fn new(
        store: Arc<dyn ChunkStore>,
        nodes: Arc<Mutex<MemNodeStore>>,
        fetcher: P2pFetcher,
        servable: Arc<Servable>,
        runtime: tokio::runtime::Handle,
        max_file_size: u64,
        root: std::path::PathBuf,
    ) -> Arc<Offers> {
        Arc::new(Offers {
            max_file_size,
            root,
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

    /// Drops the oldest finished offers beyond [`MAX_TRACKED`].
    fn evict(&self, map: &mut HashMap<OfferItem, Tracked>) {
        if map.len() > MAX_TRACKED {
            let mut done: Vec<(Instant, OfferItem)> = map
                .iter()
                .filter(|(_, t)| t.state != OfferState::Pending)
                .map(|(i, t)| (t.at, *i))
                .collect();
            done.sort_by_key(|(t, _)| *t);
            let over = map.len() - MAX_TRACKED;
            for (_, i) in done.into_iter().take(over) {
                map.remove(&i);
            }
        }
    }

    /// Answers one offer from `origin`, starting pulls as needed.
    pub fn on_offer(self: &Arc<Self>, origin: NodeId, items: Vec<OfferItem>) -> Vec<OfferState> {
        let mut out = Vec::with_capacity(items.len());
        let mut start = Vec::new();
        {
            let mut map = self.lock();
            for item in items {
                if let Some(refused) = self.too_large(item.size) {
                    out.push(refused);
                    continue;
                }
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
            self.evict(&mut map);
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

    /// The answer to an offered version larger than this node's max file
    /// size: refused at once (nothing fetched, nothing tracked).
    fn too_large(&self, size: u64) -> Option<OfferState> {
        (size > self.max_file_size).then(|| {
            OfferState::Failed(format!(
                "a file of {size} bytes is larger than this node's --max-file-size ({} bytes)",
                self.max_file_size
            ))
        })
    }

    /// Answers an offer whose content came with it: each item is checked
    /// (its node hashes to its root and is one file leaf whose chunks, cut
    /// from the content by their lengths, hash to their entries and add up
    /// to its size), the chunks of all good items are stored durably in one
    /// batch, and only then are they `Durable`. Nothing is pulled and
    /// nothing is left pending: a bad item is `Failed` (the origin offers
    /// it again, plainly if it must).
    pub async fn on_offer_inline(&self, items: Vec<InlineItem>) -> Vec<OfferState> {
        let keys: Vec<OfferItem> = items.iter().map(InlineItem::item).collect();
        // Refused items are neither stored (passed as held) nor tracked.
        let refused: Vec<Option<OfferState>> =
            keys.iter().map(|k| self.too_large(k.size)).collect();
        let held: Vec<bool> = {
            let map = self.lock();
            keys.iter()
                .zip(&refused)
                .map(|(k, r)| {
                    r.is_some() || map.get(k).is_some_and(|t| t.state == OfferState::Durable)
                })
                .collect()
        };
        let generation = self.servable.sweep_generation();
        let store = self.store.clone();
        let nodes = self.nodes.clone();
        let accepted = tokio::task::spawn_blocking(move || {
            accept_inline(store.as_ref(), &nodes, &items, &held)
        })
        .await
        .unwrap_or_else(|e| vec![Some(Err(format!("inline offer: {e}"))); keys.len()]);
        crate::engine::crash_point(
            "offer::stored_before_ack",
            accepted.iter().any(|a| matches!(a, Some(Ok(())))),
        );
        let out: Vec<OfferState> = keys
            .iter()
            .zip(accepted)
            .map(|(item, got)| match got {
                None => OfferState::Durable,
                Some(Ok(()))
                    if self
                        .servable
                        .add_pulled_offer(item.root, item.size, generation) =>
                {
                    OfferState::Durable
                }
                Some(Ok(())) => OfferState::Failed("version store swept meanwhile".into()),
                Some(Err(e)) => OfferState::Failed(e),
            })
            .collect();
        let out: Vec<OfferState> = out
            .into_iter()
            .zip(&refused)
            .map(|(state, refused)| refused.clone().unwrap_or(state))
            .collect();
        {
            let mut map = self.lock();
            for ((item, state), refused) in keys.iter().zip(&out).zip(&refused) {
                if refused.is_some() {
                    continue;
                }
                map.insert(
                    *item,
                    Tracked {
                        state: state.clone(),
                        at: Instant::now(),
                    },
                );
            }
            self.evict(&mut map);
        }
        self.changed.notify_waiters();
        out
    }

    /// The current state of each item, starting nothing (an item no longer
    /// tracked reads as pending: the next offer restarts it).
    fn states(&self, items: &[OfferItem]) -> Vec<OfferState> {
        let map = self.lock();
        items
            .iter()
            .map(|i| match map.get(i) {
                Some(t) => t.state.clone(),
                // Refused items are not tracked: refused again.
                None => self.too_large(i.size).unwrap_or(OfferState::Pending),
            })
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
        // Large versions are staged in the synced directory's staging area
        // (`engine::stage`), opened by path per pull as the chunk store
        // resolves its live files; without it they go to the chunk store.
        let fs = match RootFs::open(&self.root) {
            Ok(fs) => Some(fs),
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "synced directory not open; offered versions go to the chunk store");
                None
            }
        };
        match pull_many(
            self.store.as_ref(),
            &self.nodes,
            &self.fetcher,
            &trees,
            &[origin],
            fs.as_ref().map(|f| f as &dyn Fs),
        )
        .await
        {
            Ok(done) => {
                crate::engine::crash_point(
                    "offer::stored_before_ack",
                    done.iter().any(Result::is_ok),
                );
                items
                    .iter()
                    .zip(done)
                    .map(|(item, ok)| {
                        if let Err(why) = ok {
                            OfferState::Failed(why)
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
                    .collect()
            }
            Err(e) => vec![OfferState::Failed(e); items.len()],
        }
    }
}

/// The blocking half of an inline offer: checks each item not `held`
/// already ([`verify_inline`]), stores the chunks of all good items in one
/// durable batch (all-zero chunks are holes, never stored), then their tree
/// nodes. Per item: `None` when held, else whether it is now stored.
fn accept_inline(
    store: &dyn ChunkStore,
    nodes: &Mutex<MemNodeStore>,
    items: &[InlineItem],
    held: &[bool],
) -> Vec<Option<Result<(), String>>> {
    let zeros = crate::engine::sync::ZeroChunks::default();
    let mut out: Vec<Option<Result<(), String>>> = Vec::with_capacity(items.len());
    let mut chunks: Vec<(Hash, &[u8])> = Vec::new();
    let mut good: Vec<usize> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        if held.get(n).copied().unwrap_or(false) {
            out.push(None);
            continue;
        }
        match verify_inline(item) {
            Ok(entries) => {
                let mut at = 0usize;
                for e in &entries {
                    let end = at + e.len as usize;
                    if !zeros.is_zero(e) {
                        chunks.push((e.hash, &item.content[at..end]));
                    }
                    at = end;
                }
                good.push(n);
                out.push(Some(Ok(())));
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    if good.is_empty() {
        return out;
    }
    chunks.sort_unstable_by_key(|c| c.0);
    chunks.dedup_by_key(|c| c.0);
    if let Err(e) = store.put_many(&chunks) {
        let e = format!("storing the inline content: {e}");
        for n in good {
            out[n] = Some(Err(e.clone()));
        }
        return out;
    }
    let mut nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
    for n in good {
        nodes.put_node(items[n].root, items[n].node.clone());
    }
    out
}

/// Checks an inline item against its root: the node hashes to it and is a
/// file leaf; its chunk lengths add up to the size and to the content's
/// length; each chunk cut from the content hashes to its entry. Returns the
/// entries.
fn verify_inline(item: &InlineItem) -> Result<Vec<filesyncd_merkle::ChunkEntry>, String> {
    use filesyncd_merkle::{decode_verified, Node};
    let entries = match decode_verified(&item.root, &item.node) {
        Ok(Node::FileLeaf(e)) => e,
        Ok(_) => return Err("inline offer: the node is not a file leaf".into()),
        Err(e) => return Err(format!("inline offer: bad node: {e}")),
    };
    let total: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
    if total != item.size || item.content.len() as u64 != item.size {
        return Err(format!(
            "inline offer: {} content bytes, {total} in the tree, size {}",
            item.content.len(),
            item.size
        ));
    }
    let mut at = 0usize;
    for e in &entries {
        let end = at + e.len as usize;
        if Hash::of_chunk(&item.content[at..end]) != e.hash {
            return Err(format!(
                "inline offer: chunk at {at} does not match its hash"
            ));
        }
        at = end;
    }
    Ok(entries)
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

#[cfg(test)]
mod tests {
    use super::*;
    use filesyncd_chunkstore::store::MemChunkStore;
    use filesyncd_merkle::{ChunkEntry, NodeSource};

    /// A file cut at `cuts` into chunks, offered inline.
    fn inline(content: &[u8], cuts: &[usize]) -> InlineItem {
        let mut entries = Vec::new();
        let mut at = 0;
        for end in cuts.iter().copied().chain([content.len()]) {
            entries.push(ChunkEntry {
                hash: Hash::of_chunk(&content[at..end]),
                len: (end - at) as u32,
            });
            at = end;
        }
        let built = filesyncd_merkle::build(&entries);
        assert_eq!(built.nodes.len(), 1, "one leaf");
        InlineItem {
            root: built.root,
            size: content.len() as u64,
            node: built.nodes[0].1.clone(),
            content: content.to_vec(),
        }
    }

    fn content(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn fresh() -> (MemChunkStore, Mutex<MemNodeStore>) {
        (
            MemChunkStore::new(std::env::temp_dir()),
            Mutex::new(MemNodeStore::default()),
        )
    }

    #[test]
    fn a_good_inline_item_is_stored_and_reads_back_whole() {
        let (store, nodes) = fresh();
        let mut bytes = content(9000, 7);
        bytes[3000..7000].fill(0); // one all-zero chunk: a hole, never stored
        let item = inline(&bytes, &[3000, 7000]);
        let got = accept_inline(&store, &nodes, std::slice::from_ref(&item), &[false]);
        assert_eq!(got, vec![Some(Ok(()))]);
        let entries = verify_inline(&item).unwrap();
        assert!(store.has(&entries[0].hash).unwrap());
        assert!(!store.has(&entries[1].hash).unwrap(), "zero chunk stored");
        assert!(store.has(&entries[2].hash).unwrap());
        assert!(nodes.lock().unwrap().get_node(&item.root).is_some());

        // The origin side reads the same item back (the zero chunk is
        // stored there: an origin holds what it scanned).
        store
            .put_many(&[(entries[1].hash, &bytes[3000..7000])])
            .unwrap();
        assert_eq!(read_inline(&store, &nodes, item.item()), Some(item));
    }

    #[test]
    fn a_tampered_inline_item_stores_nothing() {
        let good = inline(&content(5000, 1), &[2000]);
        let mut flipped = good.clone();
        flipped.content[10] ^= 1;
        let mut short = good.clone();
        short.content.pop();
        let mut wrong_size = good.clone();
        wrong_size.size += 1;
        let mut other_node = good.clone();
        other_node.node = inline(&content(5000, 2), &[2000]).node;
        for bad in [flipped, short, wrong_size, other_node] {
            let (store, nodes) = fresh();
            let got = accept_inline(&store, &nodes, std::slice::from_ref(&bad), &[false]);
            assert!(matches!(&got[..], [Some(Err(_))]), "{got:?}");
            let entries = verify_inline(&good).unwrap();
            for e in entries {
                assert!(!store.has(&e.hash).unwrap());
            }
            assert!(nodes.lock().unwrap().get_node(&bad.root).is_none());
        }
    }

    /// A store whose disk is full: every write fails with ENOSPC.
    struct FullStore(MemChunkStore);

    impl FullStore {
        fn full<T>() -> filesyncd_chunkstore::store::Result<T> {
            Err(filesyncd_chunkstore::store::StoreError::Io {
                path: "chunks".into(),
                source: std::io::Error::from_raw_os_error(28),
            })
        }
    }

    impl ChunkStore for FullStore {
        fn put(&self, _: Hash, _: &[u8]) -> filesyncd_chunkstore::store::Result<()> {
            Self::full()
        }
        fn put_many(&self, _: &[(Hash, &[u8])]) -> filesyncd_chunkstore::store::Result<()> {
            Self::full()
        }
        fn has(&self, h: &Hash) -> filesyncd_chunkstore::store::Result<bool> {
            self.0.has(h)
        }
        fn get(&self, h: &Hash) -> filesyncd_chunkstore::store::Result<Option<Vec<u8>>> {
            self.0.get(h)
        }
        fn file_stamp(
            &self,
            _: &str,
        ) -> filesyncd_chunkstore::store::Result<Option<filesyncd_chunkstore::store::FileStamp>>
        {
            Ok(None)
        }
        fn locate(
            &self,
            h: &Hash,
        ) -> filesyncd_chunkstore::store::Result<Option<filesyncd_chunkstore::store::Location>>
        {
            self.0.locate(h)
        }
        fn index_file(
            &self,
            _: &str,
            _: filesyncd_chunkstore::store::FileStamp,
            _: &[(u64, ChunkEntry)],
        ) -> filesyncd_chunkstore::store::Result<()> {
            Self::full()
        }
        fn forget_file(&self, p: &str) -> filesyncd_chunkstore::store::Result<()> {
            self.0.forget_file(p)
        }
        fn gc(
            &self,
            keep: &dyn Fn(&Hash) -> bool,
        ) -> filesyncd_chunkstore::store::Result<filesyncd_chunkstore::store::GcStats> {
            self.0.gc(keep)
        }
    }

    #[test]
    fn a_peer_whose_store_is_full_acknowledges_nothing() {
        let store = FullStore(fresh().0);
        let nodes = Mutex::new(MemNodeStore::default());
        let items = [
            inline(&content(3000, 7), &[]),
            inline(&content(5000, 8), &[2000]),
        ];
        let got = accept_inline(&store, &nodes, &items, &[false, false]);
        assert!(
            got.iter()
                .all(|g| matches!(g, Some(Err(e)) if e.contains("storing the inline content"))),
            "{got:?}"
        );
        for item in &items {
            assert!(nodes.lock().unwrap().get_node(&item.root).is_none());
        }
    }

    #[test]
    fn a_bad_item_does_not_spoil_its_batch_and_held_items_are_skipped() {
        let (store, nodes) = fresh();
        let a = inline(&content(3000, 3), &[]);
        let mut b = inline(&content(3000, 4), &[]);
        b.content[0] ^= 0xff;
        let c = inline(&content(3000, 5), &[1000]);
        let got = accept_inline(
            &store,
            &nodes,
            &[a.clone(), b, c.clone()],
            &[false, false, true],
        );
        assert!(
            matches!(&got[..], [Some(Ok(())), Some(Err(_)), None]),
            "{got:?}"
        );
        assert_eq!(read_inline(&store, &nodes, a.item()), Some(a));
        assert_eq!(
            read_inline(&store, &nodes, c.item()),
            None,
            "held: untouched"
        );
    }

    #[test]
    fn a_file_of_more_than_one_leaf_or_missing_chunks_is_not_inlined() {
        let (store, nodes) = fresh();
        let item = inline(&content(4000, 9), &[1000]);
        nodes.lock().unwrap().put_node(item.root, item.node.clone());
        // Only one of its two chunks is held: offered plainly.
        store
            .put_many(&[(Hash::of_chunk(&item.content[..1000]), &item.content[..1000])])
            .unwrap();
        assert_eq!(read_inline(&store, &nodes, item.item()), None);
        // A size that disagrees with the tree.
        let mut wrong = item.item();
        wrong.size -= 1;
        assert_eq!(read_inline(&store, &nodes, wrong), None);
    }
}
