//! Whether a chunk goes to a peer as zstd or raw: a pure function of
//! measured numbers ([`super::compressor`] measures them and does the I/O).
//!
//! # The rule
//! A chunk of `len` bytes whose zstd frame has (or is expected to have)
//! `zstd_len` bytes goes compressed to a peer only if
//!
//! ```text
//! zstd_len / link  +  len / compress  +  len / decompress   <   len / link
//! ```
//!
//! and the frame saves at least 1/32 of the chunk, where `link` is what the
//! link to that peer drains (bytes/s), `compress` and `decompress` the
//! speeds of zstd level 1 (bytes of chunk per second), and the `compress`
//! term is left out when the frame is already made (the cost is sunk: a
//! frame from the cache, or one just made). Compression, the link and
//! decompression are added, not overlapped: the serving side pipelines
//! two frames and the fetcher reads while it verifies, but on a machine
//! of two cores shared with Raft and other streams the CPU a zstd frame
//! costs is not free, so the rule only compresses where it pays even
//! without overlap.
//!
//! Consequences: an incompressible chunk (saves < 1/32) goes raw on any
//! link; a link at least as fast as decompression never gets zstd;
//! between, the better the ratio and the slower the link, the sooner
//! compression pays.

/// What a chunk costs on each side, in bytes per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Speeds {
    /// What the link to the peer drains (per stream, as measured).
    pub link: f64,
    /// zstd level 1 here: chunk bytes compressed per second.
    pub compress: f64,
    /// zstd decompression: chunk bytes produced per second (measured
    /// here, as the fetcher's stand-in).
    pub decompress: f64,
}

/// A zstd frame must save at least `len / SAVING_DIVISOR` bytes.
pub const SAVING_DIVISOR: usize = 32;

/// The frame is worth its bytes at all: non-empty, and at least 1/32
/// smaller than the chunk.
pub fn saves_enough(len: usize, zstd_len: usize) -> bool {
    zstd_len > 0 && zstd_len + len / SAVING_DIVISOR < len
}

/// The rule of the module doc. `zstd_len` may be a prediction (a ratio
/// times `len`); `made` says the frame exists already (no compress cost).
/// Non-positive or NaN speeds never pay.
pub fn pays(len: usize, zstd_len: f64, made: bool, s: &Speeds) -> bool {
    let len_f = len as f64;
    // Reject NaN as well as non-positive values.
    let positive = |v: f64| v > 0.0;
    if !(positive(s.link) && positive(s.compress) && positive(s.decompress)) {
        return false;
    }
    let saving = (len / SAVING_DIVISOR) as f64;
    if !(zstd_len > 0.0 && zstd_len + saving < len_f) {
        return false;
    }
    let raw = len_f / s.link;
    let mut zstd = zstd_len / s.link + len_f / s.decompress;
    if !made {
        zstd += len_f / s.compress;
    }
    zstd < raw
}

/// Whether compressing could pay on this link for any chunk, even one
/// zstd made nothing of: the link is slower than decompression. Probes
/// (compressions only to measure) are pointless above it.
pub fn could_pay(s: &Speeds) -> bool {
    s.link > 0.0 && s.link < s.decompress
}

/// The ratio expected of a chunk not compressed yet: the one zstd achieved
/// lately on this machine, and at most the order-0 bound of its sampled
/// byte entropy (`bits` per byte / 8), which a chunk of that entropy beats
/// with literals alone.
pub fn predicted_ratio(measured: f64, entropy_bits: f64) -> f64 {
    measured.min(entropy_bits / 8.0).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;
    const LEN: usize = 64 * 1024;

    fn speeds(link: f64) -> Speeds {
        Speeds {
            link,
            compress: 400.0 * MB,
            decompress: 1200.0 * MB,
        }
    }

    #[test]
    fn fast_link_goes_raw() {
        // Loopback and fast LANs: sending 64 KiB raw beats any frame.
        for link in [1000.0 * MB, 5000.0 * MB] {
            assert!(!pays(LEN, LEN as f64 * 0.3, false, &speeds(link)), "{link}");
            assert!(!pays(LEN, LEN as f64 * 0.3, true, &speeds(link)), "{link}");
        }
        assert!(!could_pay(&speeds(2000.0 * MB)));
        assert!(could_pay(&speeds(1000.0 * MB)));
    }

    #[test]
    fn slow_link_and_compressible_goes_zstd() {
        for link in [1.0 * MB, 10.0 * MB, 50.0 * MB] {
            assert!(pays(LEN, LEN as f64 * 0.3, false, &speeds(link)), "{link}");
        }
        // A middling ratio pays on a slow link only.
        assert!(pays(LEN, LEN as f64 * 0.9, false, &speeds(10.0 * MB)));
        assert!(!pays(LEN, LEN as f64 * 0.9, false, &speeds(100.0 * MB)));
    }

    #[test]
    fn incompressible_goes_raw_on_any_link() {
        let mut link = 1e3;
        while link < 1e12 {
            for made in [false, true] {
                // Saves less than 1/32, or nothing at all.
                assert!(!pays(LEN, LEN as f64 * 0.98, made, &speeds(link)));
                assert!(!pays(LEN, LEN as f64, made, &speeds(link)));
                assert!(!pays(LEN, LEN as f64 * 1.01, made, &speeds(link)));
            }
            link *= 3.0;
        }
        assert!(!saves_enough(LEN, LEN - LEN / 32));
        assert!(saves_enough(LEN, LEN - LEN / 32 - 1));
        assert!(!saves_enough(LEN, 0));
    }

    #[test]
    fn a_frame_already_made_pays_on_faster_links() {
        // At 250 MB/s a ratio of 0.3 does not pay the compression, but a
        // cached frame (compression paid for another peer) does.
        let s = speeds(250.0 * MB);
        assert!(!pays(LEN, LEN as f64 * 0.3, false, &s));
        assert!(pays(LEN, LEN as f64 * 0.3, true, &s));
    }

    #[test]
    fn nonsense_speeds_never_pay() {
        for bad in [0.0, -1.0, f64::NAN] {
            let mut s = speeds(MB);
            s.link = bad;
            assert!(!pays(LEN, 10.0, false, &s));
            let mut s = speeds(MB);
            s.compress = bad;
            assert!(!pays(LEN, 10.0, false, &s));
        }
        // An infinitely fast link: raw.
        assert!(!pays(LEN, 10.0, true, &speeds(f64::INFINITY)));
    }

    #[test]
    fn prediction_is_bounded_by_entropy() {
        assert_eq!(predicted_ratio(0.5, 2.0), 0.25);
        assert_eq!(predicted_ratio(0.2, 6.0), 0.2);
        assert_eq!(predicted_ratio(0.9, 9.0), 0.9);
    }
}
