//! The table-driven Rabin fingerprint and the cut-point search.
//!
//! Fingerprint: the bytes `b_1..b_w` of the window, read as the polynomial
//! `Σ b_i(x) · x^(8(w-i))` over GF(2), reduced modulo the irreducible `P` of
//! degree `k`. It depends only on the window's bytes.
//!
//! Rolling is table-driven. The fingerprint is kept left-aligned in a
//! `u64` (`fa = fp << (64 - k)`), so its top byte is simply `fa >> 56` and
//! the bits pushed out by a shift fall off the word. Rolling one byte (`in`
//! enters, `out` leaves) costs two lookups, shifts and xors:
//!
//! `fa' = (fa << 8) ^ (in << (64-k)) ^ pop[out] ^ push[fa >> 56]`
//!
//! - `push[t] = (t(x) · x^k mod P) << (64-k)`: the remainder of the top byte
//!   `t` that the shift dropped;
//! - `pop[b] = (b(x) · x^(8w) mod P) << (64-k)`: what the byte leaving the
//!   window contributes after the shift; xoring removes it.
//!
//! The scan rolls two bytes at a time on its critical path (the table
//! lookup's latency is what limits speed): with `push2[t] = (t(x) ·
//! x^(k+8) mod P) << (64-k)` and `pop2[b] = (b(x) · x^(8w+8) mod P) <<
//! (64-k)`, `fa'' = (fa << 16) ^ ((in1·2^8 + in2) << (64-k)) ^ pop2[out1] ^
//! pop[out2] ^ push2[fa >> 56] ^ push[(fa >> 48) & 0xff]`, while the
//! fingerprint in between is computed off that path with the one-byte rule.
//! Both equal the schoolbook definition (tested).
//!
//! Cut rule for a chunk starting at `s` (lengths relative to `s`):
//! - lengths below `min` are never cut; fingerprinting starts at
//!   `min - window` so the window is full at `min` (the first
//!   `min - window` bytes of a chunk are never fingerprinted);
//! - a chunk of length `len` in `min..avg` ends where
//!   `fp & mask_small == MAGIC & mask_small`, in `avg..max` where
//!   `fp & mask_large == MAGIC & mask_large` (`fp` = fingerprint of the
//!   `window` bytes ending at `s + len`);
//! - otherwise it is cut at `max`.
//!
//! `mask_small` has `log2(avg) + level` low bits, `mask_large`
//! `log2(avg) - level` (`level` = normalization). The small mask's bits
//! include the large mask's, so a position that cuts under the strict rule
//! also cuts under the loose one: lengthening a chunk never removes a cut
//! candidate, which is what lets boundaries re-synchronise after an edit.
//! `MAGIC` is non-zero in the low bits, so runs of zero bytes (fp = 0) never
//! cut before `max` (they dedup anyway, and make fewer index entries).
//!
//! `MAGIC` and this rule are part of the cluster's format, like the params:
//! changing either moves every boundary.

use super::params::ChunkerParams;
use super::poly;

/// Low bits a fingerprint must equal (under a mask) to cut. Format constant.
const MAGIC: u64 = 0x2c6f_1d3b_87a5_e94f;

/// A validated chunking setting with its precomputed tables. Built by
/// [`ChunkerParams::validate`]; cheap to clone (four 2 KiB tables).
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    push: [u64; 256],
    pop: [u64; 256],
    push2: [u64; 256],
    pop2: [u64; 256],
    /// `64 - degree`: where a left-aligned fingerprint's bit 0 sits.
    align: u32,
    window: usize,
    min: usize,
    avg: usize,
    max: usize,
    /// Masks and magics, left-aligned like the fingerprint.
    mask_small: u64,
    magic_small: u64,
    mask_large: u64,
    magic_large: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// Only called by `validate` with params it has checked.
    pub(super) fn from_valid(params: ChunkerParams) -> Chunker {
        let p = params.polynomial;
        let k = poly::degree(p).expect("validated polynomial");
        let align = 64 - k;
        let x_k = p ^ (1u64 << k); // x^k mod P
        let x_k8 = poly::mul_mod(x_k, 1 << 8, p); // x^(k+8) mod P
        let mut x_8w = 1u64; // x^(8w) mod P
        for _ in 0..8 * params.window {
            x_8w = poly::mul_mod(x_8w, 0b10, p);
        }
        let x_8w8 = poly::mul_mod(x_8w, 1 << 8, p); // x^(8w+8) mod P
        let table = |factor: u64| {
            let mut t = [0u64; 256];
            for (b, slot) in t.iter_mut().enumerate() {
                *slot = poly::mul_mod(b as u64, factor, p) << align;
            }
            t
        };
        let bits = params.avg_size.trailing_zeros();
        let level = u32::from(params.normalization);
        let mask_small = (1u64 << (bits + level)) - 1;
        let mask_large = (1u64 << (bits - level)) - 1;
        Chunker {
            params,
            push: table(x_k),
            pop: table(x_8w),
            push2: table(x_k8),
            pop2: table(x_8w8),
            align,
            window: params.window as usize,
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_small: mask_small << align,
            magic_small: (MAGIC & mask_small) << align,
            mask_large: mask_large << align,
            magic_large: (MAGIC & mask_large) << align,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// `max_size` as a `usize`.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Rolls the (left-aligned) fingerprint by one byte.
    #[inline(always)]
    fn roll(&self, fa: u64, byte_in: u8, byte_out: u8) -> u64 {
        (fa << 8)
            ^ (u64::from(byte_in) << self.align)
            ^ self.pop[usize::from(byte_out)]
            ^ self.push[(fa >> 56) as usize]
    }

    /// Rolls by two bytes at once (`in1`/`out1` first).
    #[inline(always)]
    fn roll2(&self, fa: u64, in1: u8, in2: u8, out1: u8, out2: u8) -> u64 {
        let incoming = (u64::from(in1) << 8 | u64::from(in2)) << self.align;
        (fa << 16)
            ^ incoming
            ^ self.pop2[usize::from(out1)]
            ^ self.pop[usize::from(out2)]
            ^ self.push2[(fa >> 56) as usize]
            ^ self.push[(fa >> 48) as usize & 0xff]
    }

    /// The fingerprint of `window` (any length), not aligned; for tests.
    #[cfg(test)]
    pub(super) fn fingerprint(&self, window: &[u8]) -> u64 {
        window.iter().fold(0, |fa, &b| self.roll(fa, b, 0)) >> self.align
    }

    /// Length of the first chunk of `data`, where `data` starts at a chunk
    /// boundary and holds every remaining byte of the stream **or** at
    /// least `max_size` bytes (then the answer cannot depend on what
    /// follows). Returns `data.len()` for a final chunk (which may be
    /// shorter than `min_size`); 0 only for empty `data`.
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let upto = n.min(self.max);
        let mut fa = 0u64;
        for &b in &data[self.min - self.window..self.min] {
            fa = self.roll(fa, b, 0);
        }
        let small_end = self.avg.min(upto);
        let fa = match self.scan(
            data,
            self.min,
            small_end,
            fa,
            self.mask_small,
            self.magic_small,
        ) {
            Ok(cut) => return cut,
            Err(fa) => fa,
        };
        if small_end < upto {
            if let Ok(cut) = self.scan(data, small_end, upto, fa, self.mask_large, self.magic_large)
            {
                return cut;
            }
        }
        upto
    }

    /// Tests lengths `from..to` (`fa` = fingerprint of the window ending at
    /// `from`). `Ok(len)` at the first match, else `Err(fa at to)`.
    #[inline(always)]
    fn scan(
        &self,
        data: &[u8],
        from: usize,
        to: usize,
        mut fa: u64,
        mask: u64,
        magic: u64,
    ) -> Result<usize, u64> {
        let w = self.window;
        let incoming = &data[from..to];
        let outgoing = &data[from - w..to - w];
        let mut pos = from;
        for (i, o) in incoming.chunks_exact(2).zip(outgoing.chunks_exact(2)) {
            if fa & mask == magic {
                return Ok(pos);
            }
            if self.roll(fa, i[0], o[0]) & mask == magic {
                return Ok(pos + 1);
            }
            fa = self.roll2(fa, i[0], i[1], o[0], o[1]);
            pos += 2;
        }
        if pos < to {
            if fa & mask == magic {
                return Ok(pos);
            }
            fa = self.roll(fa, data[pos], data[pos - w]);
        }
        Err(fa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Chunker {
        ChunkerParams {
            window: 16,
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
            normalization: 1,
            ..ChunkerParams::default()
        }
        .validate()
        .expect("valid")
    }

    /// Schoolbook reference: the window as a polynomial, reduced bit by bit.
    fn reference_fp(p: u64, window: &[u8]) -> u64 {
        let k = poly::degree(p).expect("non-zero");
        let mut fp = 0u64;
        for &b in window {
            for bit in (0..8).rev() {
                let carry = fp >> (k - 1) & 1;
                fp = ((fp << 1) | u64::from(b >> bit & 1)) & ((1u64 << k) - 1);
                if carry == 1 {
                    fp ^= p & ((1u64 << k) - 1);
                }
            }
        }
        fp
    }

    proptest! {
        #[test]
        fn table_fingerprint_matches_reference(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
            big_degree in any::<bool>(),
        ) {
            let params = ChunkerParams {
                polynomial: if big_degree { (1 << 63) | 0b11 } else { ChunkerParams::default().polynomial },
                ..ChunkerParams::default()
            };
            let c = params.validate().expect("valid");
            prop_assert_eq!(c.fingerprint(&bytes), reference_fp(params.polynomial, &bytes));
        }

        /// Rolling by one and by two bytes equals recomputing from scratch
        /// over the window.
        #[test]
        fn rolling_matches_fresh_window(
            bytes in proptest::collection::vec(any::<u8>(), 17..200),
            big_degree in any::<bool>(),
        ) {
            let mut params = *small().params();
            if big_degree {
                params.polynomial = (1 << 63) | 0b11;
            }
            let c = params.validate().expect("valid");
            let w = c.window;
            let aligned = |fp: u64| fp << c.align;
            let mut fa = aligned(c.fingerprint(&bytes[..w]));
            for i in w..bytes.len() {
                if i + 1 < bytes.len() {
                    let two = c.roll2(fa, bytes[i], bytes[i + 1], bytes[i - w], bytes[i + 1 - w]);
                    prop_assert_eq!(two, aligned(c.fingerprint(&bytes[i + 2 - w..=i + 1])));
                }
                fa = c.roll(fa, bytes[i], bytes[i - w]);
                prop_assert_eq!(fa, aligned(c.fingerprint(&bytes[i + 1 - w..=i])));
            }
        }
    }

    #[test]
    fn cut_respects_bounds() {
        let c = small();
        let data: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(c.cut(&[]), 0);
        assert_eq!(c.cut(&data[..1]), 1);
        assert_eq!(c.cut(&data[..64]), 64);
        let mut pos = 0;
        while pos < data.len() {
            let len = c.cut(&data[pos..]);
            assert!(len <= 1024);
            assert!(len >= 64 || pos + len == data.len());
            pos += len;
        }
    }

    #[test]
    fn zeros_cut_only_at_max() {
        let c = small();
        assert_eq!(c.cut(&[0u8; 5000]), 1024);
    }
}
