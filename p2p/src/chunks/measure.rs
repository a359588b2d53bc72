//! A moving average weighted by bytes, for speeds and ratios measured on
//! chunks.
//!
//! Each sample is a value and a weight (seconds over bytes for a speed,
//! compressed bytes over chunk bytes for a ratio). Both sums decay by half
//! every `half_life` bytes of weight, so the average follows the last few
//! `half_life` bytes whatever the sample sizes: a 16 MiB chunk counts as
//! much as 256 chunks of 64 KiB, and a speed is total bytes over total
//! time (many fast tiny writes do not outweigh one long blocked one).

/// Byte-weighted exponentially decaying average of `value / weight`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    value: f64,
    weight: f64,
    /// Weight seen in all (not decayed), to tell a measurement from none.
    seen: f64,
    samples: u64,
}

impl Ewma {
    /// Adds a sample. `weight` > 0 (others are ignored).
    pub fn add(&mut self, value: f64, weight: f64, half_life: f64) {
        if !(weight > 0.0 && value >= 0.0 && value.is_finite() && weight.is_finite()) {
            return;
        }
        let keep = (-(weight / half_life)).exp2();
        self.value = self.value * keep + value;
        self.weight = self.weight * keep + weight;
        self.seen += weight;
        self.samples += 1;
    }

    /// `value / weight` on average; `None` before the first sample.
    pub fn mean(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.value / self.weight)
    }

    /// `weight / value` on average (a speed from seconds over bytes);
    /// infinite when no time was measured.
    pub fn inverse(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| {
            if self.value > 0.0 {
                self.weight / self.value
            } else {
                f64::INFINITY
            }
        })
    }

    /// Weight seen in all.
    pub fn seen(&self) -> f64 {
        self.seen
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = (1 << 20) as f64;

    #[test]
    fn a_speed_is_bytes_over_time() {
        let mut e = Ewma::default();
        assert_eq!(e.inverse(), None);
        // 1 MiB in 10 ms, then 1 MiB in 30 ms: 2 MiB in 40 ms.
        e.add(0.010, MIB, 1e12);
        e.add(0.030, MIB, 1e12);
        let speed = e.inverse().unwrap();
        let want = 2.0 * MIB / 0.040;
        assert!((speed - want).abs() < want * 1e-4, "{speed}");
        // Many tiny instant writes do not hide a slow link.
        for _ in 0..100 {
            e.add(0.0, 1024.0, 1e12);
        }
        assert!(e.inverse().unwrap() < 2.1 * 2.0 * MIB / 0.040);
        assert_eq!(e.samples(), 102);
    }

    #[test]
    fn old_samples_fade_by_bytes() {
        let mut e = Ewma::default();
        // A slow past, then 8 half-lives of fast samples.
        e.add(1.0, MIB, MIB);
        for _ in 0..64 {
            e.add(0.001, MIB / 8.0, MIB);
        }
        // 1 MiB/s before; 125 MiB/s since (the slow MiB keeps 1/256 of
        // its weight, and its second 1/256 of its time).
        let speed = e.inverse().unwrap();
        assert!(speed > 0.7 * 125.0 * MIB && speed < 125.0 * MIB, "{speed}");
        assert_eq!(e.seen(), 9.0 * MIB);
    }

    #[test]
    fn junk_samples_are_ignored() {
        let mut e = Ewma::default();
        e.add(1.0, 0.0, MIB);
        e.add(f64::NAN, 1.0, MIB);
        e.add(-1.0, 1.0, MIB);
        e.add(1.0, f64::INFINITY, MIB);
        assert_eq!(e, Ewma::default());
        e.add(0.0, 10.0, MIB);
        assert_eq!(e.inverse(), Some(f64::INFINITY));
        assert_eq!(e.mean(), Some(0.0));
    }
}
