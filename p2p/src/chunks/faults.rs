//! Fault accounting for chunk servers.
//!
//! A fault is a frame that breaks the wire rules or a body that does not
//! hash to what it claims. Absent chunks and I/O failures are not faults.
//! `threshold` faults ban the peer from being asked for chunks for
//! `ban` (its count starts over when the ban ends). Bans are local to the
//! fetching side: the peer stays a member, Raft is unaffected.

use libp2p::PeerId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
struct PeerFaults {
    count: u32,
    banned_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Faults {
    threshold: u32,
    ban: Duration,
    peers: HashMap<PeerId, PeerFaults>,
}

impl Faults {
    pub fn new(threshold: u32, ban: Duration) -> Faults {
        Faults {
            threshold: threshold.max(1),
            ban,
            peers: HashMap::new(),
        }
    }

    /// Charges one fault; true if this fault started a ban.
    pub fn record(&mut self, peer: PeerId, now: Instant) -> bool {
        let threshold = self.threshold;
        let ban = self.ban;
        let f = self.peers.entry(peer).or_default();
        if f.banned_until.is_some_and(|t| t <= now) {
            *f = PeerFaults::default();
        }
        f.count += 1;
        if f.count >= threshold && f.banned_until.is_none() {
            f.banned_until = Some(now + ban);
            return true;
        }
        false
    }

    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|f| f.banned_until)
            .is_some_and(|t| t > now)
    }

    /// Faults charged since the last ban ended.
    pub fn count(&self, peer: &PeerId) -> u32 {
        self.peers.get(peer).map_or(0, |f| f.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_after_threshold_then_expire() {
        let mut f = Faults::new(3, Duration::from_secs(10));
        let p = PeerId::random();
        let t0 = Instant::now();
        assert!(!f.record(p, t0));
        assert!(!f.record(p, t0));
        assert!(!f.is_banned(&p, t0));
        assert!(f.record(p, t0));
        assert!(f.is_banned(&p, t0 + Duration::from_secs(5)));
        assert!(!f.is_banned(&p, t0 + Duration::from_secs(11)));
        assert!(!f.record(p, t0 + Duration::from_secs(11)));
        assert_eq!(f.count(&p), 1);
    }
}
