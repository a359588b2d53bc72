//! The workers' side of the parallel path: claim a unit with a buffer,
//! read it, cut its own chain, stitch it to the true chain in unit order,
//! hash its chunks; and the state they share with the caller.

use std::io::ErrorKind;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use crate::{ChunkEntry, Hash};

use super::super::error::ReadError;
use super::super::rabin::Chunker;
use super::{Msg, Plan, ReadAt, Unit};

/// State the workers and the caller share, under one lock (touched a few
/// times per unit of megabytes: no contention to speak of).
pub(super) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    free: Vec<Vec<u8>>,
    allocated: usize,
    /// Next unit to claim.
    next: usize,
    /// Units stitched so far; `entry` is where the true chain enters the
    /// next one.
    stitched: usize,
    entry: u64,
    /// Units from this one on are not wanted: the stream ended before, or
    /// one failed, or the run is over (0).
    wanted: usize,
}

impl Shared {
    pub(super) fn new(units: usize) -> Shared {
        Shared {
            state: Mutex::new(State {
                free: Vec::new(),
                allocated: 0,
                next: 0,
                stitched: 0,
                entry: 0,
                wanted: units,
            }),
            changed: Condvar::new(),
        }
    }

    /// The state is a few counters, consistent after any panic (which also
    /// stops the run, see [`PanicStops`]).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A buffer and the next unit, together: a claimed unit always has its
    /// buffer, and units are claimed in order, so the unit the caller waits
    /// for is always claimed or claimable (no deadlock with a full pool).
    fn claim(&self, plan: &Plan) -> Option<(usize, Vec<u8>)> {
        let mut st = self.lock();
        loop {
            if st.next >= st.wanted {
                return None;
            }
            if let Some(buf) = st.free.pop() {
                st.next += 1;
                return Some((st.next - 1, buf));
            }
            if st.allocated < plan.pool {
                st.allocated += 1;
                st.next += 1;
                let k = st.next - 1;
                drop(st);
                return Some((k, vec![0; plan.buffer_size()]));
            }
            st = self.wait(st);
        }
    }

    pub(super) fn give_back(&self, buf: Vec<u8>) {
        self.lock().free.push(buf);
        self.changed.notify_all();
    }

    /// Where the true chain enters unit `k`, once unit `k - 1` is stitched;
    /// `None` if unit `k` is no longer wanted.
    fn entry(&self, k: usize) -> Option<u64> {
        let mut st = self.lock();
        while k < st.wanted && st.stitched < k {
            st = self.wait(st);
        }
        (k < st.wanted).then_some(st.entry)
    }

    /// Unit `k` is stitched: the true chain enters unit `k + 1` at `exit`.
    fn stitched(&self, k: usize, exit: u64, ends_stream: bool) {
        let mut st = self.lock();
        debug_assert_eq!(st.stitched, k);
        st.stitched = k + 1;
        st.entry = exit;
        if ends_stream {
            st.wanted = st.wanted.min(k + 1);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Unit `k` failed: later units are not wanted, earlier ones are (the
    /// sink gets every chunk before the failure, as in the serial pipeline).
    fn failed(&self, k: usize) {
        let mut st = self.lock();
        st.wanted = st.wanted.min(k);
        drop(st);
        self.changed.notify_all();
    }

    pub(super) fn stop(&self) {
        self.failed(0);
    }
}

pub(super) struct StopOnDrop<'a>(pub(super) &'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A worker: claims, cuts, stitches and hashes units until none is left
/// or the run stops.
pub(super) fn work<S: ReadAt + ?Sized>(
    shared: &Shared,
    src: &S,
    chunker: &Chunker,
    plan: &Plan,
    tx: Sender<Msg>,
) {
    // A panicking worker must not leave the others waiting for its unit.
    let _stop_on_panic = PanicStops(shared);
    while let Some((k, buf)) = shared.claim(plan) {
        match unit(shared, src, chunker, plan, k, buf) {
            Ok(Some(unit)) => {
                if tx.send(Msg::Done(unit)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                shared.failed(k);
                let _ = tx.send(Msg::Failed(k, e));
                return;
            }
        }
    }
}

struct PanicStops<'a>(&'a Shared);

impl Drop for PanicStops<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.stop();
        }
    }
}

/// Reads, cuts, stitches and hashes unit `k`; `None` if it is no longer
/// wanted.
fn unit<S: ReadAt + ?Sized>(
    shared: &Shared,
    src: &S,
    chunker: &Chunker,
    plan: &Plan,
    k: usize,
    mut buf: Vec<u8>,
) -> Result<Option<Unit>, ReadError> {
    let start = plan.start(k);
    let own = (plan.end(k) - start) as usize;
    let want = own + plan.max;
    let got = read_full_at(src, &mut buf[..want], start)?;
    let data = &buf[..got];
    // Without `eof`, every position before `own` has `max_size` bytes after
    // it in `data`, so `cut` is decided there; with it, `data` runs to the
    // end of the stream.
    let ends_stream = got < want;
    let limit = if ends_stream { got } else { own };

    // The unit's own chain, as if a chunk started at `start`.
    let mut own_chain = Vec::with_capacity(own / chunker.params().avg_size as usize + 2);
    let mut p = 0;
    while p < limit {
        own_chain.push(p);
        p += chunker.cut(&data[p..]);
    }
    let own_exit = p;

    let Some(entry) = shared.entry(k) else {
        return Ok(None);
    };
    // entry >= start: it is at or after the end of unit k - 1.
    let from = (entry - start) as usize;
    let (chain, exit) = stitch(chunker, data, from, limit, &own_chain, own_exit);
    shared.stitched(k, start + exit as u64, ends_stream);

    let mut chunks = Vec::with_capacity(chain.len());
    for (i, &at) in chain.iter().enumerate() {
        let end = chain.get(i + 1).copied().unwrap_or(exit);
        let entry = ChunkEntry {
            hash: Hash::of_chunk(&data[at..end]),
            // <= max_size <= 16 MiB (validated).
            len: (end - at) as u32,
        };
        chunks.push((at, entry));
    }
    let exit = start + exit as u64;
    Ok(Some(Unit {
        index: k,
        start,
        buf,
        chunks,
        exit,
        ends_stream,
    }))
}

/// The true chain's positions in `[from, limit)` (the true chain is at
/// `from`), and the first one at or after `limit`: cut from `from` until a
/// position of `own_chain` (which ends at `own_exit`) is met, then follow
/// it. Positions are relative to `data[0]`.
pub(in crate::chunker) fn stitch(
    chunker: &Chunker,
    data: &[u8],
    from: usize,
    limit: usize,
    own_chain: &[usize],
    own_exit: usize,
) -> (Vec<usize>, usize) {
    let mut chain = Vec::new();
    let mut p = from;
    let mut j = 0;
    while p < limit {
        j += own_chain[j..].partition_point(|&q| q < p);
        if own_chain.get(j) == Some(&p) {
            chain.extend_from_slice(&own_chain[j..]);
            return (chain, own_exit);
        }
        chain.push(p);
        p += chunker.cut(&data[p..]);
    }
    (chain, p)
}

/// Reads until `buf` is full or end of file; the bytes read.
fn read_full_at<S: ReadAt + ?Sized>(
    src: &S,
    buf: &mut [u8],
    offset: u64,
) -> Result<usize, ReadError> {
    let mut len = 0;
    while len < buf.len() {
        let at = offset + len as u64;
        match src.read_at(&mut buf[len..], at) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => return Err(ReadError::Io { offset: at, source }),
        }
    }
    Ok(len)
}
