//! The serving side's compression: which chunk goes to which peer as zstd,
//! decided from measured numbers ([`super::decide`]), and the frames kept
//! so a chunk served to several peers is compressed once
//! ([`super::frame_cache`]).
//!
//! One [`Compressor`] per node, made by [`crate::start`] and shared by
//! both serving paths (libp2p-stream and the bulk endpoint). For each
//! chunk a fetcher accepting zstd asks for:
//!
//! 1. under 512 bytes, or sampled entropy above 7.2 bits/byte: raw;
//! 2. a cached verdict "does not compress": raw; a cached frame: sent if
//!    it pays on this peer's link with no compression cost, else raw;
//! 3. another serving thread compressing the same chunk: wait for it
//!    (at most [`PENDING_WAIT`]), then as 2;
//! 4. otherwise compressed if it is expected to pay (the ratio predicted
//!    from past compressions and the chunk's entropy), or as a probe
//!    (below); the frame or the verdict is cached, and the frame is sent
//!    if it pays now that it is made.
//!
//! Measured here, byte-weighted ([`super::measure::Ewma`]): each peer's
//! link ([`super::links`], from the serving writes), zstd's compression
//! speed and ratio (every compression), its decompression speed (one
//! compression in 16 is decompressed again, as the fetcher's stand-in).
//! Before measurements exist, priors stand in: a link of 100 MB/s,
//! compression 200 MB/s, decompression 800 MB/s, ratio 1/2. Probes: of the
//! candidates (step 4) the rule turned down, one in 8 is compressed
//! anyway while fewer than 4 compressions were measured, then one in 256,
//! so the speeds are measured and kept current; never on a link faster
//! than decompression ([`super::decide::could_pay`]).
//!
//! State: one std `Mutex` over the cache, the in-flight set, the link
//! rates and the measurements. It is held for map operations only, never
//! during compression and never across an `.await` (the serving writers
//! take it for a moment after each frame); threads waiting for an
//! in-flight compression wait on a `Condvar` (they run on blocking
//! threads). Bounds: the cache by bytes (`cache_bytes`), the link rates
//! by peers (`max_peers`), the in-flight set by the serving threads (one
//! chunk each, at most `serve_streams_global`).

use super::decide::{self, Speeds};
use super::frame_cache::{Cached, FrameCache};
use super::links::Links;
use super::measure::Ewma;
use super::wire::{self, Frame};
use crate::config::CompressionConfig;
use bytes::Bytes;
use filesyncd_merkle::Hash;
use libp2p::PeerId;
use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Stand-ins until measured (bytes per second; ratio).
const PRIOR_LINK: f64 = 100e6;
const PRIOR_COMPRESS: f64 = 200e6;
const PRIOR_DECOMPRESS: f64 = 800e6;
const PRIOR_RATIO: f64 = 0.5;
/// Samples before a measured speed or ratio replaces its prior.
const MEASURED_AFTER: u64 = 4;
/// Bytes after which a zstd speed or ratio sample weighs half.
const ZSTD_HALF_LIFE: f64 = (64u64 << 20) as f64;
/// One turned-down candidate in this many is compressed to measure.
const PROBE_EVERY_COLD: u64 = 8;
const PROBE_EVERY: u64 = 256;
/// One compression in this many is decompressed to measure.
const DECOMPRESS_EVERY: u64 = 16;
/// Longest wait for another thread compressing the same chunk.
pub const PENDING_WAIT: Duration = Duration::from_secs(2);

/// What the compressor did so far ([`crate::P2pClient::compression_stats`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompressionStats {
    /// zstd runs (each on a chunk the cache knew nothing of), and their
    /// bytes in and out.
    pub compressions: u64,
    pub compressed_in: u64,
    pub compressed_out: u64,
    /// Of the compressions, those made only to measure.
    pub probes: u64,
    /// Frames sent as zstd, and of those the ones taken from the cache.
    pub frames_zstd: u64,
    pub frames_zstd_cached: u64,
    /// Chunks of 512 bytes or more sent raw to a fetcher that accepts zstd.
    pub frames_raw: u64,
    /// Chunks the cache had a frame or a verdict for.
    pub cache_hits: u64,
    /// Times a serving thread waited for another one compressing the
    /// same chunk.
    pub waits: u64,
    /// The cache: bytes accounted (≤ `cache_bytes`), entries, evictions.
    pub cache_bytes: usize,
    pub cache_entries: usize,
    pub cache_evictions: u64,
    /// Peers whose link rate is kept.
    pub peers: usize,
    /// zstd level 1 as measured here (bytes of chunk per second; frame
    /// bytes over chunk bytes); `None` until measured.
    pub compress_rate: Option<f64>,
    pub decompress_rate: Option<f64>,
    pub ratio: Option<f64>,
}

struct State {
    cache: FrameCache,
    /// Chunks being compressed now.
    pending: HashSet<Hash>,
    links: Links,
    /// Seconds over chunk bytes.
    compress: Ewma,
    decompress: Ewma,
    /// Frame bytes over chunk bytes.
    ratio: Ewma,
    /// Turned-down candidates so far (the probe clock).
    turned_down: u64,
    stats: CompressionStats,
}

/// See the module doc.
pub struct Compressor {
    assume_link: Option<f64>,
    state: Mutex<State>,
    /// Told when an in-flight compression ends.
    done: Condvar,
}

fn measured(e: &Ewma) -> Option<f64> {
    (e.samples() >= MEASURED_AFTER)
        .then(|| e.inverse())
        .flatten()
}

impl Compressor {
    pub fn new(config: &CompressionConfig) -> Compressor {
        Compressor {
            assume_link: config.assume_link_rate.map(|r| r as f64),
            state: Mutex::new(State {
                cache: FrameCache::new(config.cache_bytes),
                pending: HashSet::new(),
                links: Links::new(config.max_peers),
                compress: Ewma::default(),
                decompress: Ewma::default(),
                ratio: Ewma::default(),
                turned_down: 0,
                stats: CompressionStats::default(),
            }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn speeds(&self, st: &State, peer: &PeerId) -> Speeds {
        Speeds {
            link: self
                .assume_link
                .or_else(|| st.links.rate(peer))
                .unwrap_or(PRIOR_LINK),
            compress: measured(&st.compress).unwrap_or(PRIOR_COMPRESS),
            decompress: measured(&st.decompress).unwrap_or(PRIOR_DECOMPRESS),
        }
    }

    /// The frame of `data` (the chunk `hash`, at most `u32::MAX` bytes)
    /// for `peer`, as the module doc decides. Blocks (compression, a wait
    /// for another thread's): call it on a blocking thread.
    pub fn frame(&self, peer: PeerId, hash: Hash, data: Vec<u8>, accept_zstd: bool) -> Frame {
        let len = data.len();
        if !accept_zstd || len < wire::MIN_COMPRESS {
            return Frame::raw(hash, data);
        }
        // No cache entry is ever made for these: no lock needed.
        let entropy = wire::sample_entropy(&data);
        if entropy >= wire::ENTROPY_LIMIT_BITS {
            self.lock().stats.frames_raw += 1;
            return Frame::raw(hash, data);
        }
        let mut st = self.lock();
        let deadline = Instant::now() + PENDING_WAIT;
        let mut waited = false;
        loop {
            let speeds = self.speeds(&st, &peer);
            match st.cache.get(&hash) {
                Some(Cached::Incompressible) => {
                    st.stats.cache_hits += 1;
                    st.stats.frames_raw += 1;
                    return Frame::raw(hash, data);
                }
                Some(Cached::Zstd(z)) => {
                    st.stats.cache_hits += 1;
                    return if decide::pays(len, z.len() as f64, true, &speeds) {
                        st.stats.frames_zstd += 1;
                        st.stats.frames_zstd_cached += 1;
                        Frame::zstd(hash, len as u32, z)
                    } else {
                        st.stats.frames_raw += 1;
                        Frame::raw(hash, data)
                    };
                }
                None => {}
            }
            let now = Instant::now();
            if !st.pending.contains(&hash) || now >= deadline {
                // Past the deadline: compressed here too (the last
                // result replaces the other in the cache).
                break;
            }
            if !waited {
                waited = true;
                st.stats.waits += 1;
            }
            st = self
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let speeds = self.speeds(&st, &peer);
        let ratio = decide::predicted_ratio(
            (st.ratio.samples() >= MEASURED_AFTER)
                .then(|| st.ratio.mean())
                .flatten()
                .unwrap_or(PRIOR_RATIO),
            entropy,
        );
        let expected = decide::pays(len, ratio * len as f64, false, &speeds);
        let probe = !expected && decide::could_pay(&speeds) && {
            let every = if st.compress.samples() < MEASURED_AFTER {
                PROBE_EVERY_COLD
            } else {
                PROBE_EVERY
            };
            st.turned_down += 1;
            (st.turned_down - 1).is_multiple_of(every)
        };
        if !expected && !probe {
            st.stats.frames_raw += 1;
            return Frame::raw(hash, data);
        }
        let time_decompress = st.decompress.samples() < MEASURED_AFTER
            || st.stats.compressions.is_multiple_of(DECOMPRESS_EVERY);
        st.pending.insert(hash);
        drop(st);
        let mut pending = Pending {
            compressor: self,
            hash,
        };
        let made = compress(&data, time_decompress);
        let mut st = pending.finish();
        let verdict = match made {
            Some(m) => {
                st.stats.compressions += 1;
                st.stats.probes += u64::from(probe);
                st.stats.compressed_in += len as u64;
                st.stats.compressed_out += m.frame.len() as u64;
                st.compress.add(m.compress_secs, len as f64, ZSTD_HALF_LIFE);
                st.ratio
                    .add(m.frame.len() as f64, len as f64, ZSTD_HALF_LIFE);
                if let Some(secs) = m.decompress_secs {
                    st.decompress.add(secs, len as f64, ZSTD_HALF_LIFE);
                }
                if decide::saves_enough(len, m.frame.len()) {
                    Cached::Zstd(Bytes::from(m.frame))
                } else {
                    Cached::Incompressible
                }
            }
            None => {
                st.stats.frames_raw += 1;
                return Frame::raw(hash, data);
            }
        };
        st.cache.insert(hash, verdict.clone());
        let speeds = self.speeds(&st, &peer);
        let frame = match verdict {
            Cached::Zstd(z) if decide::pays(len, z.len() as f64, true, &speeds) => {
                st.stats.frames_zstd += 1;
                Frame::zstd(hash, len as u32, z)
            }
            _ => {
                st.stats.frames_raw += 1;
                Frame::raw(hash, data)
            }
        };
        drop(st);
        drop(pending);
        frame
    }

    /// A frame of `bytes` took `elapsed` to write to `peer`.
    pub fn record_write(&self, peer: PeerId, bytes: usize, elapsed: Duration) {
        self.lock().links.record(peer, bytes, elapsed.as_secs_f64());
    }

    /// The link rate to `peer` the choice uses: assumed, or measured
    /// (bytes/s); `None` while unknown (the prior stands in).
    pub fn link_rate(&self, peer: &PeerId) -> Option<f64> {
        self.assume_link.or_else(|| self.lock().links.rate(peer))
    }

    pub fn stats(&self) -> CompressionStats {
        let st = self.lock();
        CompressionStats {
            cache_bytes: st.cache.bytes(),
            cache_entries: st.cache.len(),
            cache_evictions: st.cache.evictions(),
            peers: st.links.len(),
            compress_rate: st.compress.inverse(),
            decompress_rate: st.decompress.inverse(),
            ratio: st.ratio.mean(),
            ..st.stats.clone()
        }
    }
}

/// A chunk in the in-flight set: taken out (and the waiters told) when
/// the compression is done, or when this is dropped (a panic).
struct Pending<'a> {
    compressor: &'a Compressor,
    hash: Hash,
}

impl<'a> Pending<'a> {
    /// The lock, with the chunk out of the in-flight set; the waiters are
    /// told when the pending guard is dropped, after the cache was filled
    /// under this same lock.
    fn finish(&mut self) -> MutexGuard<'a, State> {
        let mut st = self.compressor.lock();
        st.pending.remove(&self.hash);
        st
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.compressor.lock().pending.remove(&self.hash);
        self.compressor.done.notify_all();
    }
}

struct Made {
    frame: Vec<u8>,
    compress_secs: f64,
    decompress_secs: Option<f64>,
}

/// zstd level 1, timed; decompressed again and timed if asked.
fn compress(data: &[u8], time_decompress: bool) -> Option<Made> {
    let t0 = Instant::now();
    let frame = match zstd::bulk::compress(data, wire::ZSTD_LEVEL) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("zstd failed on a {} byte chunk: {e}", data.len());
            return None;
        }
    };
    let compress_secs = t0.elapsed().as_secs_f64();
    let decompress_secs = time_decompress
        .then(|| {
            let t0 = Instant::now();
            let back = zstd::bulk::decompress(&frame, data.len()).ok()?;
            let secs = t0.elapsed().as_secs_f64();
            (back.len() == data.len()).then_some(secs)
        })
        .flatten();
    Some(Made {
        frame,
        compress_secs,
        decompress_secs,
    })
}

#[cfg(test)]
#[path = "compressor_tests.rs"]
mod tests;
