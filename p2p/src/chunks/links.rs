//! What the link to each peer drains, as the serving side sees it.
//!
//! Every frame written to a peer is a sample: its bytes, and the time the
//! write took (the sink blocks once the QUIC send buffer and the peer's
//! flow-control credit are used up, so on a link slower than the server
//! the writes take the link's time). Time spent waiting for the next frame
//! to be made (provider, compression) is not counted: the link was idle
//! then. While the server is the bottleneck, the writes return at once and
//! the link looks fast, which is right: compressing would only slow the
//! server down further. Samples are averaged per peer by bytes
//! ([`super::measure::Ewma`], half-life [`HALF_LIFE`]); a link is known
//! once [`KNOWN_AFTER`] bytes were measured.
//!
//! One stream's writes are measured: with several streams to a peer each
//! gets its share of the link, and the compression time it is weighed
//! against is measured the same way (wall time on a shared CPU).
//!
//! Bounded: at most `max_peers` peers; a new peer beyond it replaces the
//! one served least recently.

use super::measure::Ewma;
use libp2p::PeerId;
use std::collections::HashMap;

/// Bytes after which a sample weighs half.
pub const HALF_LIFE: f64 = (16u64 << 20) as f64;
/// Bytes measured before a link's rate is used (a prior before).
pub const KNOWN_AFTER: f64 = (4u64 << 20) as f64;

struct Link {
    rate: Ewma,
    last: u64,
}

/// Measured link rates (see the module doc).
pub struct Links {
    max: usize,
    tick: u64,
    map: HashMap<PeerId, Link>,
}

impl Links {
    pub fn new(max_peers: usize) -> Links {
        Links {
            max: max_peers.max(1),
            tick: 0,
            map: HashMap::new(),
        }
    }

    /// `bytes` written to `peer` in `secs`.
    pub fn record(&mut self, peer: PeerId, bytes: usize, secs: f64) {
        self.tick += 1;
        if !self.map.contains_key(&peer) && self.map.len() >= self.max {
            let stalest = self.map.iter().min_by_key(|(_, l)| l.last).map(|(p, _)| *p);
            if let Some(p) = stalest {
                self.map.remove(&p);
            }
        }
        let link = self.map.entry(peer).or_insert(Link {
            rate: Ewma::default(),
            last: 0,
        });
        link.last = self.tick;
        link.rate.add(secs, bytes as f64, HALF_LIFE);
    }

    /// Bytes per second, once known.
    pub fn rate(&self, peer: &PeerId) -> Option<f64> {
        let link = self.map.get(peer)?;
        if link.rate.seen() < KNOWN_AFTER {
            return None;
        }
        link.rate.inverse()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_link_is_known_after_enough_bytes() {
        let mut l = Links::new(8);
        let p = PeerId::random();
        for _ in 0..3 {
            l.record(p, MIB, 0.1);
        }
        assert_eq!(l.rate(&p), None);
        l.record(p, MIB, 0.1);
        let r = l.rate(&p).unwrap();
        assert!((r - MIB as f64 / 0.1).abs() < 1.0, "{r}");
        assert_eq!(l.rate(&PeerId::random()), None);
    }

    #[test]
    fn peers_are_bounded_and_the_stalest_goes() {
        let mut l = Links::new(2);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        l.record(a, 4 * MIB, 1.0);
        l.record(b, 4 * MIB, 1.0);
        l.record(a, 1, 0.0);
        l.record(c, 4 * MIB, 1.0);
        assert_eq!(l.len(), 2);
        assert!(l.rate(&a).is_some() && l.rate(&c).is_some());
        assert_eq!(l.rate(&b), None);
    }
}
