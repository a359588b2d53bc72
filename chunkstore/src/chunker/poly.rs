//! Polynomials over GF(2) packed in a `u64` (bit i = coefficient of x^i).
//!
//! Only what the chunker needs: degree, reduction, multiplication modulo a
//! polynomial, gcd, and Ben-Or's irreducibility test. Degrees up to 63 fit;
//! every operation here keeps intermediate values below 2^64 by reducing
//! after each shift, so no 128-bit arithmetic is needed.

/// Degree of `p`, or `None` for the zero polynomial.
pub(crate) fn degree(p: u64) -> Option<u32> {
    (p != 0).then(|| 63 - p.leading_zeros())
}

/// `a mod m` (m non-zero).
pub(crate) fn reduce(mut a: u64, m: u64) -> u64 {
    let dm = degree(m).expect("modulus is non-zero");
    while let Some(da) = degree(a) {
        if da < dm {
            break;
        }
        a ^= m << (da - dm);
    }
    a
}

/// `a * b mod m`, for `m` of degree 1..=63 (so `a * x` of a reduced `a`
/// still fits in 64 bits).
pub(crate) fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    let dm = degree(m).expect("modulus is non-zero");
    debug_assert!((1..=63).contains(&dm));
    let top = 1u64 << dm;
    let mut a = reduce(a, m);
    let mut b = b;
    let mut acc = 0u64;
    while b != 0 {
        if b & 1 == 1 {
            acc ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & top != 0 {
            a ^= m;
        }
    }
    acc
}

/// Greatest common divisor (monic by construction over GF(2)).
pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let r = reduce(a, b);
        a = b;
        b = r;
    }
    a
}

/// Ben-Or's test: `f` of degree `k` is irreducible iff
/// `gcd(f, x^(2^i) - x mod f) = 1` for every `1 <= i <= k/2`.
/// (Over GF(2), `-x = x`, so the difference is an xor.) Costs at most 31
/// squarings and gcds of 64-bit polynomials: microseconds.
pub(crate) fn is_irreducible(f: u64) -> bool {
    let Some(k) = degree(f) else {
        return false;
    };
    if !(1..=63).contains(&k) {
        return false;
    }
    let x = reduce(0b10, f);
    let mut x_pow = x; // x^(2^i) mod f, starting at i = 0
    for _ in 1..=k / 2 {
        x_pow = mul_mod(x_pow, x_pow, f);
        if gcd(f, x_pow ^ x) != 1 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent oracle: trial division by every polynomial of degree
    /// 1..=deg/2.
    fn irreducible_by_trial_division(f: u64) -> bool {
        let Some(k) = degree(f) else { return false };
        if k == 0 {
            return false;
        }
        (2u64..(1u64 << (k / 2 + 1))).all(|d| reduce(f, d) != 0)
    }

    #[test]
    fn ben_or_agrees_with_trial_division_up_to_degree_12() {
        let mut irreducible = 0;
        for f in 2u64..(1 << 13) {
            let expected = irreducible_by_trial_division(f);
            assert_eq!(is_irreducible(f), expected, "f = {f:#b}");
            irreducible += usize::from(expected);
        }
        // Number of irreducible polynomials over GF(2) of degree 1..=12
        // (OEIS A001037): 2+1+2+3+6+9+18+30+56+99+186+335.
        assert_eq!(irreducible, 747);
    }

    #[test]
    fn known_polynomials() {
        assert!(is_irreducible(0b111)); // x^2+x+1
        assert!(!is_irreducible(0b101)); // x^2+1 = (x+1)^2
        assert!(is_irreducible(0b10011)); // x^4+x+1
        assert!(!is_irreducible(0b10101)); // x^4+x^2+1 = (x^2+x+1)^2
                                           // x^63 + x + 1 is irreducible (a known primitive trinomial).
        assert!(is_irreducible((1 << 63) | 0b11));
        // A product of two irreducibles of degree 31 and 32 is not.
        let p31 = (1u64 << 31) | (1 << 3) | 1; // x^31+x^3+1, irreducible
        assert!(is_irreducible(p31));
        let p32 = (1u64 << 32) | (1 << 7) | (1 << 3) | (1 << 2) | 1; // x^32+x^7+x^3+x^2+1
        assert!(is_irreducible(p32));
        let mut product = 0u64;
        for i in 0..=31 {
            if p31 >> i & 1 == 1 {
                product ^= p32 << i;
            }
        }
        assert_eq!(degree(product), Some(63));
        assert!(!is_irreducible(product));
        assert!(!is_irreducible(0));
        assert!(!is_irreducible(1));
    }

    #[test]
    fn mul_mod_matches_schoolbook() {
        let m = 0b1_0001_1011u64; // x^8+x^4+x^3+x+1 (AES)
        for a in 0u64..256 {
            for b in 0u64..256 {
                let mut full = 0u64;
                for i in 0..8 {
                    if b >> i & 1 == 1 {
                        full ^= a << i;
                    }
                }
                assert_eq!(mul_mod(a, b, m), reduce(full, m));
            }
        }
        // AES inverse pair: 0x53 * 0xCA = 1.
        assert_eq!(mul_mod(0x53, 0xCA, m), 1);
    }
}
