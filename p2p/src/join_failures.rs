//! Bad join proofs counted per peer, in bounded memory.
//!
//! A PeerId costs an attacker one key pair, so a map keyed by it grows with
//! every fresh identity that sends a bad proof. [`JoinFailures`] forgets a
//! count once its last failure is older than the window (the ban duration:
//! failures further apart than a ban are not an attack worth one), and at
//! its capacity it drops the stalest count to make room. Evicting a count
//! can only let one identity try `max_join_failures` more times; it never
//! admits anyone (admission needs a valid token proof).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Peers whose failures are counted at once (about 100 bytes each).
pub(crate) const MAX_TRACKED: usize = 4096;

pub(crate) struct JoinFailures {
    counts: HashMap<PeerId, (u32, Instant)>,
    cap: usize,
    window: Duration,
}

impl JoinFailures {
    pub(crate) fn new(cap: usize, window: Duration) -> JoinFailures {
        JoinFailures {
            counts: HashMap::new(),
            cap: cap.max(1),
            window,
        }
    }

    /// Counts one more bad proof of `peer` at `now`; returns its count.
    pub(crate) fn hit(&mut self, peer: PeerId, now: Instant) -> u32 {
        if let Some((n, last)) = self.counts.get_mut(&peer) {
            if now.saturating_duration_since(*last) > self.window {
                *n = 0;
            }
            *n += 1;
            *last = now;
            return *n;
        }
        if self.counts.len() >= self.cap {
            let window = self.window;
            self.counts
                .retain(|_, (_, last)| now.saturating_duration_since(*last) <= window);
        }
        if self.counts.len() >= self.cap {
            let stalest = self
                .counts
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(p, _)| *p);
            if let Some(p) = stalest {
                self.counts.remove(&p);
            }
        }
        self.counts.insert(peer, (1, now));
        1
    }

    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.counts.remove(peer);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_peer_and_resets_after_the_window() {
        let mut f = JoinFailures::new(8, Duration::from_secs(10));
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        assert_eq!(f.hit(a, t), 1);
        assert_eq!(f.hit(a, t + Duration::from_secs(1)), 2);
        assert_eq!(f.hit(b, t + Duration::from_secs(1)), 1);
        assert_eq!(f.hit(a, t + Duration::from_secs(5)), 3);
        // More than a window after its last failure: counted from 1 again.
        assert_eq!(f.hit(a, t + Duration::from_secs(16)), 1);
        f.remove(&a);
        assert_eq!(f.hit(a, t + Duration::from_secs(17)), 1);
    }

    #[test]
    fn fresh_identities_never_grow_it_past_its_capacity() {
        let cap = 64;
        let mut f = JoinFailures::new(cap, Duration::from_secs(300));
        let t = Instant::now();
        let steady = PeerId::random();
        for i in 0..10_000u64 {
            let now = t + Duration::from_millis(i);
            f.hit(PeerId::random(), now);
            if i % 10 == 0 {
                // A peer failing steadily is among the freshest: never evicted.
                let n = f.hit(steady, now);
                assert_eq!(n as u64, i / 10 + 1);
            }
            assert!(f.len() <= cap, "{} entries", f.len());
        }
        // Expired counts make room first.
        let mut g = JoinFailures::new(2, Duration::from_secs(1));
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        g.hit(a, t);
        g.hit(b, t + Duration::from_secs(5));
        g.hit(b, t + Duration::from_secs(5));
        g.hit(c, t + Duration::from_secs(5));
        assert_eq!(g.len(), 2);
        assert_eq!(g.hit(b, t + Duration::from_secs(5)), 3, "b kept its count");
    }
}
