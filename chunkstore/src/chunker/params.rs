//! The cluster-wide chunking setting and its validation.
//!
//! `ChunkerParams` is stored in Raft as a fixed, cluster-wide value: every
//! node must cut every file at exactly the same places, so these numbers (and
//! the algorithm in `rabin.rs`) are a wire format. Raw params become a
//! [`Chunker`] only through [`ChunkerParams::validate`], so a `Chunker` can
//! never hold an invalid setting.

use serde::{Deserialize, Serialize};

use super::poly;
use super::rabin::Chunker;

/// Degree-53 irreducible polynomial over GF(2) used by default.
///
/// Derivation (for the record; only irreducibility matters): the low 53 bits
/// of the first 8 bytes (little-endian) of SHA-256("filesyncd rabin
/// polynomial"), with bits 53 and 0 set, then incremented by 2 until
/// irreducible (18 steps). Checked by Ben-Or's test in `validate` and in the
/// unit tests.
pub const DEFAULT_POLYNOMIAL: u64 = 0x003f_028b_e27d_40fd;

/// Allowed polynomial degrees.
pub const POLYNOMIAL_DEGREES: std::ops::RangeInclusive<u32> = 53..=63;
/// Allowed sliding-window sizes, in bytes.
pub const WINDOW_SIZES: std::ops::RangeInclusive<u32> = 16..=256;
/// Smallest allowed `avg_size`: below this the index outweighs the data.
pub const MIN_AVG_SIZE: u32 = 256;
/// Largest allowed `max_size` (16 MiB).
pub const MAX_MAX_SIZE: u32 = 16 << 20;
/// Largest allowed normalization level.
pub const MAX_NORMALIZATION: u8 = 4;

/// Raw chunking parameters, as stored in the cluster configuration.
///
/// Serialized field by field in declaration order (postcard is not
/// self-describing): never reorder or remove fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Irreducible polynomial over GF(2), bit i = coefficient of x^i,
    /// degree in [`POLYNOMIAL_DEGREES`].
    pub polynomial: u64,
    /// Bytes in the sliding window the fingerprint covers.
    pub window: u32,
    /// No chunk is shorter, except the last chunk of a file.
    pub min_size: u32,
    /// Power of two; the cut mask has `log2(avg_size)` bits (see
    /// `normalization`). The mean chunk length is somewhat above it.
    pub avg_size: u32,
    /// No chunk is longer: a chunk that reaches it is cut there.
    pub max_size: u32,
    /// FastCDC-style normalized chunking: below `avg_size` the mask has
    /// `log2(avg_size) + normalization` bits (cuts are rarer), from
    /// `avg_size` on it has `log2(avg_size) - normalization` bits (cuts are
    /// likelier), which concentrates lengths around `avg_size` and makes a
    /// forced cut at `max_size` rare. 0 disables it.
    pub normalization: u8,
}

impl Default for ChunkerParams {
    /// The defaults, chosen by measurement (see the module doc of `chunker`
    /// and `benches/chunker.rs`): window 64 B, min 24 KiB, avg 32 KiB,
    /// max 64 KiB, normalization 2.
    fn default() -> Self {
        ChunkerParams {
            polynomial: DEFAULT_POLYNOMIAL,
            window: 64,
            min_size: 24 << 10,
            avg_size: 32 << 10,
            max_size: 64 << 10,
            normalization: 2,
        }
    }
}

/// Why a [`ChunkerParams`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkerError {
    #[error("polynomial {polynomial:#x} has degree {degree:?}, expected 53..=63")]
    PolynomialDegree {
        polynomial: u64,
        degree: Option<u32>,
    },
    #[error("polynomial {0:#x} is reducible over GF(2)")]
    PolynomialReducible(u64),
    #[error("window {0} bytes is outside 16..=256")]
    Window(u32),
    #[error("min_size {min_size} is smaller than the window ({window})")]
    MinBelowWindow { min_size: u32, window: u32 },
    #[error("sizes must satisfy min < avg < max, got {min_size} / {avg_size} / {max_size}")]
    SizeOrder {
        min_size: u32,
        avg_size: u32,
        max_size: u32,
    },
    #[error("avg_size {0} is not a power of two")]
    AvgNotPowerOfTwo(u32),
    #[error("avg_size {0} is below the lower bound {MIN_AVG_SIZE}")]
    AvgTooSmall(u32),
    #[error("max_size {0} is above the upper bound {MAX_MAX_SIZE}")]
    MaxTooLarge(u32),
    #[error("normalization level {level} is invalid for avg_size {avg_size} (at most {MAX_NORMALIZATION}, and below log2(avg_size))")]
    Normalization { level: u8, avg_size: u32 },
}

impl ChunkerParams {
    /// Checks every constraint and builds the table-driven [`Chunker`].
    pub fn validate(&self) -> Result<Chunker, ChunkerError> {
        let degree = poly::degree(self.polynomial);
        if !degree.is_some_and(|d| POLYNOMIAL_DEGREES.contains(&d)) {
            return Err(ChunkerError::PolynomialDegree {
                polynomial: self.polynomial,
                degree,
            });
        }
        if !poly::is_irreducible(self.polynomial) {
            return Err(ChunkerError::PolynomialReducible(self.polynomial));
        }
        if !WINDOW_SIZES.contains(&self.window) {
            return Err(ChunkerError::Window(self.window));
        }
        if self.min_size < self.window {
            return Err(ChunkerError::MinBelowWindow {
                min_size: self.min_size,
                window: self.window,
            });
        }
        if !(self.min_size < self.avg_size && self.avg_size < self.max_size) {
            return Err(ChunkerError::SizeOrder {
                min_size: self.min_size,
                avg_size: self.avg_size,
                max_size: self.max_size,
            });
        }
        if !self.avg_size.is_power_of_two() {
            return Err(ChunkerError::AvgNotPowerOfTwo(self.avg_size));
        }
        if self.avg_size < MIN_AVG_SIZE {
            return Err(ChunkerError::AvgTooSmall(self.avg_size));
        }
        if self.max_size > MAX_MAX_SIZE {
            return Err(ChunkerError::MaxTooLarge(self.max_size));
        }
        let bits = self.avg_size.trailing_zeros();
        if self.normalization > MAX_NORMALIZATION || u32::from(self.normalization) >= bits {
            return Err(ChunkerError::Normalization {
                level: self.normalization,
                avg_size: self.avg_size,
            });
        }
        Ok(Chunker::from_valid(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_polynomial_irreducible_of_documented_degree() {
        let p = ChunkerParams::default();
        assert_eq!(poly::degree(p.polynomial), Some(53));
        assert!(poly::is_irreducible(p.polynomial));
        // Its neighbour (the last candidate before it) is not: the search
        // really stopped at the first irreducible one.
        assert!(!poly::is_irreducible(p.polynomial - 2));
        let c = p.validate().expect("defaults are valid");
        assert_eq!(c.params(), &p);
    }

    #[test]
    fn rejects_bad_values() {
        let ok = ChunkerParams::default();
        let check = |p: ChunkerParams, want: ChunkerError| {
            assert_eq!(p.validate().err(), Some(want), "{p:?}");
        };
        let p = ChunkerParams {
            polynomial: (1 << 52) | 0b11,
            ..ok
        };
        check(
            p,
            ChunkerError::PolynomialDegree {
                polynomial: p.polynomial,
                degree: Some(52),
            },
        );
        let p = ChunkerParams {
            polynomial: 0,
            ..ok
        };
        check(
            p,
            ChunkerError::PolynomialDegree {
                polynomial: 0,
                degree: None,
            },
        );
        // x^63 + x^62 = x^62 (x + 1): right degree, reducible.
        let p = ChunkerParams {
            polynomial: (1 << 63) | (1 << 62),
            ..ok
        };
        check(p, ChunkerError::PolynomialReducible(p.polynomial));
        check(ChunkerParams { window: 15, ..ok }, ChunkerError::Window(15));
        check(
            ChunkerParams { window: 257, ..ok },
            ChunkerError::Window(257),
        );
        check(
            ChunkerParams {
                window: 64,
                min_size: 63,
                avg_size: 256,
                max_size: 1024,
                ..ok
            },
            ChunkerError::MinBelowWindow {
                min_size: 63,
                window: 64,
            },
        );
        for (min_size, avg_size, max_size) in [
            (32768, 32768, 65536),
            (1024, 65536, 65536),
            (4096, 2048, 8192),
        ] {
            check(
                ChunkerParams {
                    min_size,
                    avg_size,
                    max_size,
                    ..ok
                },
                ChunkerError::SizeOrder {
                    min_size,
                    avg_size,
                    max_size,
                },
            );
        }
        check(
            ChunkerParams {
                avg_size: 40000,
                ..ok
            },
            ChunkerError::AvgNotPowerOfTwo(40000),
        );
        check(
            ChunkerParams {
                min_size: 64,
                avg_size: 128,
                max_size: 1024,
                ..ok
            },
            ChunkerError::AvgTooSmall(128),
        );
        check(
            ChunkerParams {
                max_size: (16 << 20) + 1,
                ..ok
            },
            ChunkerError::MaxTooLarge((16 << 20) + 1),
        );
        check(
            ChunkerParams {
                normalization: 5,
                ..ok
            },
            ChunkerError::Normalization {
                level: 5,
                avg_size: ok.avg_size,
            },
        );
        // The largest valid values pass.
        let big = ChunkerParams {
            polynomial: (1 << 63) | 0b11,
            window: 256,
            min_size: 1 << 20,
            avg_size: 8 << 20,
            max_size: 16 << 20,
            normalization: 4,
        };
        assert!(big.validate().is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let p = ChunkerParams::default();
        let bytes = postcard::to_allocvec(&p).expect("serialize");
        let back: ChunkerParams = postcard::from_bytes(&bytes).expect("deserialize");
        assert_eq!(back, p);
    }
}
