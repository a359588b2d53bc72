//! Join requests rate-limited per source IP, in bounded memory.
//!
//! [`crate::join_failures`] counts bad proofs per PeerId, which an attacker
//! renews for the price of a key pair. This limit is keyed by the IP address
//! the request came from: a token bucket of `burst` requests refilled at
//! `per_sec`. A request over the limit is answered `Unavailable` ("too many
//! join attempts from this address"), which an honest joiner retries after its
//! backoff, and costs the member no token lookup and no Raft read. At
//! capacity, buckets that are full again (idle sources) are dropped first,
//! then the stalest: eviction can only give one address a fresh burst.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Addresses tracked at once (about 64 bytes each).
pub(crate) const MAX_TRACKED_IPS: usize = 4096;

pub(crate) struct JoinRate {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    cap: usize,
    burst: f64,
    per_sec: f64,
}

impl JoinRate {
    pub(crate) fn new(cap: usize, burst: u32, per_sec: f64) -> JoinRate {
        JoinRate {
            buckets: HashMap::new(),
            cap: cap.max(1),
            burst: f64::from(burst.max(1)),
            per_sec: per_sec.max(0.0),
        }
    }

    /// Takes one request of `ip` at `now`: false when over the limit.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (burst, per_sec) = (self.burst, self.per_sec);
        let refill = |tokens: f64, last: Instant| {
            let secs = now.saturating_duration_since(last).as_secs_f64();
            (tokens + secs * per_sec).min(burst)
        };
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.cap {
            self.buckets
                .retain(|_, (t, last)| refill(*t, *last) < burst);
            if self.buckets.len() >= self.cap {
                let stalest = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(ip, _)| *ip);
                if let Some(s) = stalest {
                    self.buckets.remove(&s);
                }
            }
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        let available = refill(*tokens, *last);
        *last = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The IP address of a `/ip4|ip6/A/...` multiaddr.
pub(crate) fn ip_of(addr: &libp2p::Multiaddr) -> Option<IpAddr> {
    use libp2p::multiaddr::Protocol;
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_burst_then_the_refill_rate_per_address() {
        let mut r = JoinRate::new(8, 3, 0.5);
        let t = Instant::now();
        assert!((0..3).all(|_| r.allow(ip(1), t)));
        assert!(!r.allow(ip(1), t), "burst spent");
        assert!(r.allow(ip(2), t), "another address has its own bucket");
        assert!(!r.allow(ip(1), t + Duration::from_millis(1900)));
        // 0.95 earned by 1.9 s, 1.5 by 3 s: one more request, not two.
        assert!(r.allow(ip(1), t + Duration::from_secs(3)), "refilled");
        assert!(!r.allow(ip(1), t + Duration::from_secs(3)));
        // Never more than the burst, however long idle.
        let later = t + Duration::from_secs(3600);
        assert!((0..3).all(|_| r.allow(ip(1), later)));
        assert!(!r.allow(ip(1), later));
    }

    #[test]
    fn memory_is_bounded_and_idle_addresses_go_first() {
        let mut r = JoinRate::new(4, 2, 1.0);
        let t = Instant::now();
        for n in 0..4 {
            assert!(r.allow(ip(n), t));
        }
        // Address 0 spends its burst; the others refill within 1 s.
        assert!(r.allow(ip(0), t));
        let t1 = t + Duration::from_millis(1500);
        for n in 10..200 {
            r.allow(ip(n), t1);
            assert!(r.len() <= 4);
        }
        let mut hot = JoinRate::new(2, 1, 0.0);
        assert!(hot.allow(ip(1), t));
        assert!(hot.allow(ip(2), t + Duration::from_secs(1)));
        // Full of spent buckets: the stalest (1) makes room.
        assert!(hot.allow(ip(3), t + Duration::from_secs(2)));
        assert_eq!(hot.len(), 2);
        assert!(!hot.allow(ip(2), t + Duration::from_secs(3)));
    }

    #[test]
    fn addresses_come_from_multiaddrs() {
        let a: libp2p::Multiaddr = "/ip4/192.0.2.7/udp/7400/quic-v1".parse().unwrap();
        assert_eq!(ip_of(&a), Some(IpAddr::from([192, 0, 2, 7])));
        let b: libp2p::Multiaddr = "/ip6/::1/udp/1/quic-v1".parse().unwrap();
        assert_eq!(ip_of(&b), Some("::1".parse().unwrap()));
        let c: libp2p::Multiaddr = "/dns/example.com/udp/1".parse().unwrap();
        assert_eq!(ip_of(&c), None);
    }
}
