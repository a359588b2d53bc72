//! The table-driven Rabin fingerprint and the cut-point search.
//!
//! Fingerprint: the bytes `b_1..b_w` of the window, read as the polynomial
//! `Σ b_i(x) · x^(8(w-i))` over GF(2), reduced modulo the irreducible `P` of
//! degree `k`. It depends only on the window's bytes.
//!
//! Rolling one byte (`in` enters, `out` leaves) with two 256-entry tables:
//! - `push[t] = (t << k) ^ (t(x) · x^k mod P)`: shifting `fp` left by 8
//!   pushes its top byte `t = fp >> (k-8)` to bits `k..k+8`; xoring
//!   `push[t]` cancels those bits (wrapping at bit 64 on both sides, so this
//!   works for any `k <= 63`) and adds their remainder.
//! - `pop[b] = b(x) · x^(8w) mod P`: the contribution the byte leaving the
//!   window has after the shift; xoring removes it.
//!
//! So `fp' = ((fp << 8) | in) ^ pop[out] ^ push[fp >> (k-8)]`.
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
//! `MAGIC`, the table layout and this rule are part of the cluster's format,
//! like the params: changing any of them moves every boundary.

use super::params::ChunkerParams;
use super::poly;

/// Low bits a fingerprint must equal (under a mask) to cut. Format constant.
const MAGIC: u64 = 0x2c6f_1d3b_87a5_e94f;

/// A validated chunking setting with its precomputed tables. Built by
/// [`ChunkerParams::validate`]; cheap to clone (two 2 KiB tables).
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    push: [u64; 256],
    pop: [u64; 256],
    /// `degree - 8`: where the top byte of a fingerprint sits.
    shift: u32,
    window: usize,
    min: usize,
    avg: usize,
    max: usize,
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
        let x_k = p ^ (1u64 << k); // x^k mod P
        let mut x_8w = 1u64; // x^(8w) mod P
        for _ in 0..8 * params.window {
            x_8w = poly::mul_mod(x_8w, 0b10, p);
        }
        let mut push = [0u64; 256];
        let mut pop = [0u64; 256];
        for t in 0..256u64 {
            push[t as usize] = (t << k) ^ poly::mul_mod(t, x_k, p);
            pop[t as usize] = poly::mul_mod(t, x_8w, p);
        }
        let bits = params.avg_size.trailing_zeros();
        let level = u32::from(params.normalization);
        let mask_small = (1u64 << (bits + level)) - 1;
        let mask_large = (1u64 << (bits - level)) - 1;
        Chunker {
            params,
            push,
            pop,
            shift: k - 8,
            window: params.window as usize,
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_small,
            magic_small: MAGIC & mask_small,
            mask_large,
            magic_large: MAGIC & mask_large,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// `max_size` as a `usize`.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Rolls the fingerprint by one byte.
    #[inline(always)]
    fn roll(&self, fp: u64, byte_in: u8, byte_out: u8) -> u64 {
        let top = (fp >> self.shift) as usize & 0xff;
        ((fp << 8) | u64::from(byte_in)) ^ self.pop[usize::from(byte_out)] ^ self.push[top]
    }

    /// The fingerprint of `window` (any length; exposed for tests of the
    /// rolling identity).
    #[cfg(test)]
    pub(super) fn fingerprint(&self, window: &[u8]) -> u64 {
        window.iter().fold(0, |fp, &b| self.roll(fp, b, 0))
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
        let mut fp = 0u64;
        for &b in &data[self.min - self.window..self.min] {
            fp = self.roll(fp, b, 0);
        }
        let small_end = self.avg.min(upto);
        let fp = match self.scan(
            data,
            self.min,
            small_end,
            fp,
            self.mask_small,
            self.magic_small,
        ) {
            Ok(cut) => return cut,
            Err(fp) => fp,
        };
        if small_end < upto {
            if let Ok(cut) = self.scan(data, small_end, upto, fp, self.mask_large, self.magic_large)
            {
                return cut;
            }
        }
        upto
    }

    /// Tests lengths `from..to` (fp = fingerprint of the window ending at
    /// `from`). `Ok(len)` at the first match, else `Err(fp at to)`.
    #[inline(always)]
    fn scan(
        &self,
        data: &[u8],
        from: usize,
        to: usize,
        mut fp: u64,
        mask: u64,
        magic: u64,
    ) -> Result<usize, u64> {
        let incoming = &data[from..to];
        let outgoing = &data[from - self.window..to - self.window];
        for (j, (&b_in, &b_out)) in incoming.iter().zip(outgoing).enumerate() {
            if fp & mask == magic {
                return Ok(from + j);
            }
            fp = self.roll(fp, b_in, b_out);
        }
        Err(fp)
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

        /// Rolling equals recomputing from scratch over the window.
        #[test]
        fn rolling_matches_fresh_window(bytes in proptest::collection::vec(any::<u8>(), 17..200)) {
            let c = small();
            let w = c.window;
            let mut fp = c.fingerprint(&bytes[..w]);
            for i in w..bytes.len() {
                fp = c.roll(fp, bytes[i], bytes[i - w]);
                prop_assert_eq!(fp, c.fingerprint(&bytes[i + 1 - w..=i]));
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
