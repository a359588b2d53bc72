//! The fetching side of `/filesyncd/chunks/1`, over bulk streams where a
//! bulk connection is up and libp2p-stream otherwise
//! ([`super::stream::ChunkStream`]).
//!
//! A [`FetchPlan`] lists the wanted hashes and, for each, the peers that
//! hold it. A coordinator task cuts the wants into batches of at most
//! `fetch_batch` hashes, each sent to the least-loaded usable holder, with
//! at most `fetch_streams_per_peer` streams per peer and
//! `fetch_streams_global` in total (semaphores shared by every fetch of
//! this node). Every chunk is verified (blake3, by [`wire::open_body`])
//! before it is yielded, and yielded as a [`Verified`]: that is the one
//! hash of a fetched chunk on this node, callers need not hash it again.
//!
//! Per hash and holder, the outcome decides what happens next:
//! * verified → yielded to the caller;
//! * absent → that holder is not asked again for it;
//! * fault (bad frame, wrong hash, bad zstd, oversized) → the holder is
//!   charged a fault (banned after `fault_threshold`), not asked again for
//!   it, the stream is dropped (reset) and the rest of its batch re-queued;
//! * I/O error or timeout → retried once on that holder, then excluded.
//!
//! A hash with no usable holder left is yielded as
//! `Err((hash, FetchError::NoHolder))`. Usable = a current member, not
//! banned, not excluded for that hash.

use super::faults::Faults;
use super::stream::ChunkStream;
use super::wire::{self, FrameHeader, Kind, HEADER_LEN};
use super::PerPeer;
use crate::bulk::dialer::DialerHandle;
use crate::bulk::Counters;
use crate::config::Limits;
use crate::error::FetchError;
use crate::gate::Membership;
use crate::hooks::P2pEvent;
use filesyncd_merkle::{Hash, Verified};
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, Stream, StreamExt};
use libp2p::PeerId;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Chunks above this are verified on a blocking thread.
const INLINE_VERIFY_MAX: u32 = 256 * 1024;
/// Pause when other fetches hold every permit we could use.
const CONTENDED_WAIT: Duration = Duration::from_millis(10);
/// Tries per (hash, holder) after I/O failures.
const IO_TRIES: u8 = 2;

/// One fetched chunk (verified: [`Verified::hash`] is the hash asked
/// for), or why a hash could not be fetched.
pub type Fetched = Result<Verified, (Hash, FetchError)>;

/// What to fetch and from whom.
#[derive(Clone, Debug, Default)]
pub struct FetchPlan {
    wants: Vec<(Hash, Vec<PeerId>)>,
}

impl FetchPlan {
    pub fn new() -> FetchPlan {
        FetchPlan::default()
    }

    /// Every hash may be fetched from any of `peers`.
    pub fn from_all(peers: &[PeerId], hashes: impl IntoIterator<Item = Hash>) -> FetchPlan {
        FetchPlan {
            wants: hashes.into_iter().map(|h| (h, peers.to_vec())).collect(),
        }
    }

    /// Adds a wanted hash and its holders (merged if listed twice).
    pub fn want(&mut self, hash: Hash, holders: impl IntoIterator<Item = PeerId>) -> &mut Self {
        self.wants.push((hash, holders.into_iter().collect()));
        self
    }

    pub fn len(&self) -> usize {
        self.wants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wants.is_empty()
    }
}

/// State shared by every fetch of one node.
pub(crate) struct FetchShared {
    pub limits: Limits,
    pub membership: Membership,
    pub control: libp2p_stream::Control,
    /// The bulk endpoint's dialer (`None`: disabled); batches go over it
    /// when a bulk connection to the holder is up ([`ChunkStream::open`]).
    pub bulk: Option<DialerHandle>,
    pub counters: Arc<Counters>,
    pub global: Arc<Semaphore>,
    pub per_peer: PerPeer,
    pub faults: Mutex<Faults>,
    pub events: mpsc::Sender<P2pEvent>,
}

impl FetchShared {
    fn usable(&self, peer: &PeerId, now: Instant) -> bool {
        self.membership.is_member(peer)
            && !self
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_banned(peer, now)
    }

    fn charge_fault(&self, peer: PeerId, why: &dyn std::fmt::Display) {
        let banned = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(peer, Instant::now());
        tracing::warn!(%peer, banned, "chunk fault: {why}");
        let _ = self.events.try_send(P2pEvent::PeerFault { peer, banned });
    }

    pub(crate) fn faults_of(&self, peer: &PeerId) -> (u32, bool) {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        (f.count(peer), f.is_banned(peer, Instant::now()))
    }
}

/// A running fetch: a stream of [`Fetched`]. Dropping it cancels the fetch.
pub struct ChunkFetch {
    rx: mpsc::Receiver<Fetched>,
    task: JoinHandle<()>,
}

impl Stream for ChunkFetch {
    type Item = Fetched;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Fetched>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ChunkFetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChunkFetch {
    /// Drains the fetch: (verified chunks, failed hashes).
    pub async fn collect_all(mut self) -> (Vec<Verified>, Vec<(Hash, FetchError)>) {
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        while let Some(item) = self.next().await {
            match item {
                Ok(c) => ok.push(c),
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    }
}

pub(crate) fn start(shared: Arc<FetchShared>, plan: FetchPlan) -> ChunkFetch {
    let (tx, rx) = mpsc::channel(shared.limits.fetch_batch.max(16));
    let task = tokio::spawn(coordinate(shared, plan, tx));
    ChunkFetch { rx, task }
}

struct Want {
    hash: Hash,
    holders: Vec<PeerId>,
    excluded: HashSet<PeerId>,
    io_failures: HashMap<PeerId, u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Absent,
    Fault,
    Io,
    NotAttempted,
}

struct BatchReport {
    task: tokio::task::Id,
    peer: PeerId,
    wants: Vec<Want>,
    outcomes: Vec<Outcome>,
}

/// Aborts spawned batch tasks when the coordinator ends or is aborted.
struct AbortOnDrop(FuturesUnordered<JoinHandle<BatchReport>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in self.0.iter() {
            h.abort();
        }
    }
}

async fn coordinate(shared: Arc<FetchShared>, plan: FetchPlan, out: mpsc::Sender<Fetched>) {
    let mut index: HashMap<Hash, usize> = HashMap::new();
    let mut pending: Vec<Want> = Vec::new();
    for (hash, holders) in plan.wants {
        match index.get(&hash) {
            Some(&i) => {
                for h in holders {
                    if !pending[i].holders.contains(&h) {
                        pending[i].holders.push(h);
                    }
                }
            }
            None => {
                index.insert(hash, pending.len());
                pending.push(Want {
                    hash,
                    holders,
                    excluded: HashSet::new(),
                    io_failures: HashMap::new(),
                });
            }
        }
    }
    let mut inflight = AbortOnDrop(FuturesUnordered::new());
    let mut batches: HashMap<tokio::task::Id, Vec<Hash>> = HashMap::new();
    let mut load: HashMap<PeerId, usize> = HashMap::new();
    loop {
        let now = Instant::now();
        // Peers usable now (membership and bans checked once per round).
        // A fetch names few holders and this runs for every pending hash
        // of every round: a short list searched in place costs less than
        // hashing a PeerId per lookup.
        let mut usable_cache: Vec<(PeerId, bool)> = Vec::new();
        let mut usable = |p: &PeerId| match usable_cache.iter().find(|(q, _)| q == p) {
            Some((_, u)) => *u,
            None => {
                let u = shared.usable(p, now);
                usable_cache.push((*p, u));
                u
            }
        };
        let mut dead = Vec::new();
        // Every holder some pending hash may still be asked from.
        let mut live: Vec<PeerId> = Vec::new();
        pending.retain_mut(|w| {
            let mut any = false;
            for p in &w.holders {
                if !w.excluded.contains(p) && usable(p) {
                    any = true;
                    if !live.contains(p) {
                        live.push(*p);
                    }
                }
            }
            if !any {
                dead.push(w.hash);
            }
            any
        });
        for hash in dead {
            if out.send(Err((hash, FetchError::NoHolder))).await.is_err() {
                return;
            }
        }
        dispatch(
            &shared,
            &mut pending,
            &mut load,
            &mut inflight.0,
            &mut batches,
            &out,
            &live,
        );
        if pending.is_empty() && inflight.0.is_empty() {
            return;
        }
        if inflight.0.is_empty() {
            // Other fetches hold the permits we need.
            tokio::time::sleep(CONTENDED_WAIT).await;
            continue;
        }
        let report = tokio::select! {
            r = inflight.0.next() => r,
            _ = tokio::time::sleep(CONTENDED_WAIT), if !pending.is_empty() => continue,
        };
        let Some(report) = report else { continue };
        let report = match report {
            Ok(r) => {
                batches.remove(&r.task);
                r
            }
            Err(e) => {
                // A batch task panicked: its hashes are reported, not lost.
                tracing::error!("chunk batch task failed: {e}");
                for hash in batches.remove(&e.id()).unwrap_or_default() {
                    if out.send(Err((hash, FetchError::Cancelled))).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        if let Some(n) = load.get_mut(&report.peer) {
            *n = n.saturating_sub(1);
        }
        for (mut want, outcome) in report.wants.into_iter().zip(report.outcomes) {
            match outcome {
                Outcome::Delivered => continue,
                Outcome::Absent | Outcome::Fault => {
                    want.excluded.insert(report.peer);
                }
                Outcome::Io => {
                    let n = want.io_failures.entry(report.peer).or_insert(0);
                    *n += 1;
                    if *n >= IO_TRIES {
                        want.excluded.insert(report.peer);
                    }
                }
                Outcome::NotAttempted => {}
            }
            pending.push(want);
        }
        if out.is_closed() {
            return;
        }
    }
}

fn dispatch(
    shared: &Arc<FetchShared>,
    pending: &mut Vec<Want>,
    load: &mut HashMap<PeerId, usize>,
    inflight: &mut FuturesUnordered<JoinHandle<BatchReport>>,
    batches: &mut HashMap<tokio::task::Id, Vec<Hash>>,
    out: &mpsc::Sender<Fetched>,
    live: &[PeerId],
) {
    let limits = &shared.limits;
    loop {
        if pending.is_empty() {
            return;
        }
        // Candidate peers: usable holders of some pending hash (`live`:
        // members, not banned), under the per-peer bound, least loaded
        // first. The scan stops once it found every live holder (at once
        // with one holder, the common case).
        let mut candidates: Vec<PeerId> = Vec::new();
        'scan: for w in pending.iter() {
            for p in &w.holders {
                if !candidates.contains(p) && live.contains(p) && !w.excluded.contains(p) {
                    candidates.push(*p);
                    if candidates.len() >= live.len() {
                        break 'scan;
                    }
                }
            }
        }
        candidates.retain(|p| load.get(p).copied().unwrap_or(0) < limits.fetch_streams_per_peer);
        candidates.sort_by_key(|p| load.get(p).copied().unwrap_or(0));
        let mut started = false;
        for peer in candidates {
            let Ok(global) = shared.global.clone().try_acquire_owned() else {
                return;
            };
            let Ok(local) = shared.per_peer.get(peer).try_acquire_owned() else {
                continue;
            };
            let mut batch = Vec::new();
            let mut i = 0;
            while i < pending.len() && batch.len() < limits.fetch_batch {
                let w = &pending[i];
                if w.holders.contains(&peer) && !w.excluded.contains(&peer) {
                    batch.push(pending.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if batch.is_empty() {
                continue;
            }
            *load.entry(peer).or_insert(0) += 1;
            let hashes = batch.iter().map(|w| w.hash).collect();
            let task = tokio::spawn(run_batch(
                shared.clone(),
                peer,
                batch,
                out.clone(),
                [global, local],
            ));
            batches.insert(task.id(), hashes);
            inflight.push(task);
            started = true;
            break;
        }
        if !started {
            return;
        }
    }
}

async fn run_batch(
    shared: Arc<FetchShared>,
    peer: PeerId,
    wants: Vec<Want>,
    out: mpsc::Sender<Fetched>,
    _permits: [OwnedSemaphorePermit; 2],
) -> BatchReport {
    let hashes: Vec<Hash> = wants.iter().map(|w| w.hash).collect();
    let mut outcomes = vec![Outcome::NotAttempted; hashes.len()];
    fetch_from(&shared, peer, &hashes, &out, &mut outcomes).await;
    BatchReport {
        task: tokio::task::id(),
        peer,
        wants,
        outcomes,
    }
}

/// Runs one chunk stream. Fills `outcomes[i]` for each hash it got to.
async fn fetch_from(
    shared: &FetchShared,
    peer: PeerId,
    hashes: &[Hash],
    out: &mpsc::Sender<Fetched>,
    outcomes: &mut [Outcome],
) {
    let limits = &shared.limits;
    let t = limits.chunk_io_timeout;
    let mut stream = match ChunkStream::open(shared, peer).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, "cannot open a chunk stream: {e}");
            outcomes.fill(Outcome::Io);
            return;
        }
    };
    let request = wire::encode_request(hashes, true);
    let sent = tokio::time::timeout(t, stream.send_request(&request)).await;
    if !matches!(sent, Ok(Ok(()))) {
        outcomes.fill(Outcome::Io);
        return;
    }
    let bulk = stream.is_bulk();
    for (i, want) in hashes.iter().enumerate() {
        let (header, body) = match read_frame(&mut stream, want, limits.max_chunk_len, t).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                outcomes[i] = Outcome::Absent;
                continue;
            }
            Err(FrameError::Io) => {
                outcomes[i..].fill(Outcome::Io);
                return;
            }
            Err(FrameError::Fault(e)) => {
                shared.charge_fault(peer, &e);
                outcomes[i] = Outcome::Fault;
                return;
            }
        };
        let opened = if header.raw_len <= INLINE_VERIFY_MAX {
            wire::open_body(&header, body)
        } else {
            match tokio::task::spawn_blocking(move || wire::open_body(&header, body)).await {
                Ok(r) => r,
                Err(_) => {
                    outcomes[i..].fill(Outcome::Io);
                    return;
                }
            }
        };
        match opened {
            Ok(chunk) => {
                // `read_frame` checked the header answers `want`, and
                // `open_body` that the bytes hash to the header's hash.
                debug_assert_eq!(chunk.hash(), *want);
                if bulk {
                    Counters::bump(&shared.counters.chunks_bulk, 1);
                    Counters::bump(&shared.counters.bytes_bulk, chunk.len() as u64);
                }
                if out.send(Ok(chunk)).await.is_err() {
                    return; // the caller is gone
                }
                outcomes[i] = Outcome::Delivered;
            }
            Err(e) => {
                shared.charge_fault(peer, &e);
                outcomes[i] = Outcome::Fault;
                return;
            }
        }
    }
    // Every frame read: a bulk stream can carry the next request.
    stream.done();
}

/// Why [`read_frame`] read no frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The stream failed, ended or stalled for the timeout: not the
    /// sender's fault as such (retried).
    Io,
    /// The sender broke the protocol: a bad header, or a frame for another
    /// hash than the one asked for at this position (a fault).
    Fault(wire::WireError),
}

/// Reads the response frame for `want`, the next hash of the request, off
/// a chunk stream: the header, checked before anything is allocated (the
/// length rules of [`FrameHeader::decode`], then that it answers `want`),
/// then the body, at most `max_chunk_len` bytes. `Ok(None)`: the server
/// does not hold it (absent). The body is not opened here (decompressed,
/// verified): that is [`wire::open_body`], which the fetcher runs next.
/// Each read waits at most `t`.
pub async fn read_frame<R: futures::AsyncRead + Unpin>(
    stream: &mut R,
    want: &Hash,
    max_chunk_len: usize,
    t: Duration,
) -> Result<Option<(FrameHeader, Vec<u8>)>, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    if !matches!(
        tokio::time::timeout(t, stream.read_exact(&mut head)).await,
        Ok(Ok(()))
    ) {
        return Err(FrameError::Io);
    }
    let header = match FrameHeader::decode(&head, max_chunk_len) {
        Ok(h) if h.hash == *want => h,
        Ok(h) => {
            return Err(FrameError::Fault(wire::WireError::WrongHash {
                want: *want,
                got: h.hash,
            }))
        }
        Err(e) => return Err(FrameError::Fault(e)),
    };
    if header.kind == Kind::Absent {
        return Ok(None);
    }
    // Bounded by max_chunk_len: checked by FrameHeader::decode.
    let mut body = vec![0u8; header.wire_len as usize];
    if !matches!(
        tokio::time::timeout(t, stream.read_exact(&mut body)).await,
        Ok(Ok(()))
    ) {
        return Err(FrameError::Io);
    }
    Ok(Some((header, body)))
}

#[cfg(test)]
mod read_frame_tests {
    use super::*;
    use futures::io::Cursor;
    use wire::{Frame, WireError};

    const T: Duration = Duration::from_secs(5);

    fn stream(frames: Vec<Frame>) -> Cursor<Vec<u8>> {
        let mut bytes = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&f.header.encode());
            bytes.extend_from_slice(&f.body);
        }
        Cursor::new(bytes)
    }

    #[tokio::test]
    async fn frames_are_read_in_order_and_checked() {
        let data = b"some chunk ".repeat(100);
        let h = Hash::of_chunk(&data);
        let other = Hash::of_chunk(b"other");
        let mut io = stream(vec![
            Frame::encode(h, data.clone(), true),
            Frame::absent(other),
            Frame::encode(h, data.clone(), false),
        ]);
        let (header, body) = read_frame(&mut io, &h, 1 << 20, T).await.unwrap().unwrap();
        let chunk = wire::open_body(&header, body).unwrap();
        assert_eq!((chunk.hash(), chunk.bytes()), (h, &data[..]));
        assert_eq!(read_frame(&mut io, &other, 1 << 20, T).await, Ok(None));
        // A frame for another hash than the one asked at this position
        // (the fetcher drops the stream after it).
        assert!(matches!(
            read_frame(&mut io, &other, 1 << 20, T).await,
            Err(FrameError::Fault(WireError::WrongHash { .. }))
        ));
        // A stream that ends where a frame should start.
        let mut io = stream(vec![Frame::absent(other)]);
        assert_eq!(read_frame(&mut io, &other, 1 << 20, T).await, Ok(None));
        assert_eq!(
            read_frame(&mut io, &h, 1 << 20, T).await,
            Err(FrameError::Io)
        );
    }

    #[tokio::test]
    async fn over_cap_and_cut_frames_are_refused() {
        let data = vec![7u8; 2000];
        let h = Hash::of_chunk(&data);
        let mut io = stream(vec![Frame::encode(h, data.clone(), false)]);
        assert!(matches!(
            read_frame(&mut io, &h, 1000, T).await,
            Err(FrameError::Fault(WireError::Lengths { .. }))
        ));
        let mut cut = stream(vec![Frame::encode(h, data, false)]).into_inner();
        cut.truncate(cut.len() - 1);
        let mut io = Cursor::new(cut);
        assert_eq!(
            read_frame(&mut io, &h, 1 << 20, T).await,
            Err(FrameError::Io)
        );
    }
}
