//! Compressed frames kept by chunk hash, so a chunk served to several
//! peers is compressed once; and "does not compress" verdicts, so it is
//! not tried again.
//!
//! Bounded by bytes: each entry costs its frame's bytes plus
//! [`ENTRY_OVERHEAD`] (a verdict costs the overhead alone), and inserting
//! evicts until the total fits `capacity`. Eviction is CLOCK (second
//! chance): entries sit in a ring in insertion order with a "used" bit set
//! by every hit; the hand skips (and clears) used entries and evicts the
//! first unused one. A frame larger than the whole capacity is not kept.
//! A hit and the insertion of a new key are O(1) amortized (replacing a
//! key, rare, walks the ring), so the lock around the cache is held
//! briefly.

use bytes::Bytes;
use filesyncd_merkle::Hash;
use std::collections::{HashMap, VecDeque};

/// What an entry costs besides its frame: the key twice (map and ring),
/// the map slot and the `Bytes` handle, rounded up.
pub const ENTRY_OVERHEAD: usize = 128;

/// What the cache knows about a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Its zstd level-1 frame (which saves at least 1/32).
    Zstd(Bytes),
    /// zstd saved less than 1/32: always sent raw.
    Incompressible,
}

impl Cached {
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Cached::Zstd(b) => b.len(),
                Cached::Incompressible => 0,
            }
    }
}

struct Slot {
    value: Cached,
    used: bool,
}

/// The cache (see the module doc).
pub struct FrameCache {
    capacity: usize,
    bytes: usize,
    map: HashMap<Hash, Slot>,
    /// Keys in insertion order; the front is the CLOCK hand. Holds each
    /// key of `map` exactly once.
    ring: VecDeque<Hash>,
    evictions: u64,
}

impl FrameCache {
    pub fn new(capacity: usize) -> FrameCache {
        FrameCache {
            capacity,
            bytes: 0,
            map: HashMap::new(),
            ring: VecDeque::new(),
            evictions: 0,
        }
    }

    /// The entry of `hash`, marked used.
    pub fn get(&mut self, hash: &Hash) -> Option<Cached> {
        let slot = self.map.get_mut(hash)?;
        slot.used = true;
        Some(slot.value.clone())
    }

    /// Keeps `value` for `hash` (replacing an entry there), evicting
    /// others until it fits. Not kept if it alone exceeds the capacity.
    pub fn insert(&mut self, hash: Hash, value: Cached) {
        let cost = value.cost();
        if let Some(old) = self.map.remove(&hash) {
            self.bytes -= old.value.cost();
            self.ring.retain(|h| *h != hash);
        }
        if cost > self.capacity {
            return;
        }
        while self.bytes + cost > self.capacity {
            if !self.evict_one() {
                break;
            }
        }
        self.bytes += cost;
        self.map.insert(hash, Slot { value, used: false });
        self.ring.push_back(hash);
    }

    /// Advances the hand to the first unused entry and evicts it. Each
    /// used entry passed gets its bit cleared, so this ends within two
    /// turns of the ring.
    fn evict_one(&mut self) -> bool {
        while let Some(hash) = self.ring.pop_front() {
            let Some(slot) = self.map.get_mut(&hash) else {
                continue;
            };
            if slot.used {
                slot.used = false;
                self.ring.push_back(hash);
                continue;
            }
            if let Some(slot) = self.map.remove(&hash) {
                self.bytes -= slot.value.cost();
                self.evictions += 1;
            }
            return true;
        }
        false
    }

    /// Bytes accounted (frames plus overhead), ≤ the capacity.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> Hash {
        Hash::of_chunk(&i.to_le_bytes())
    }

    fn frame(len: usize) -> Cached {
        Cached::Zstd(Bytes::from(vec![7u8; len]))
    }

    #[test]
    fn bytes_stay_within_the_capacity() {
        let mut c = FrameCache::new(10_000);
        for i in 0..1000 {
            c.insert(h(i), frame(100 + (i as usize * 37) % 900));
            assert!(c.bytes() <= 10_000, "{}", c.bytes());
        }
        assert!(c.evictions() > 900);
        assert!(c.len() >= 10_000 / (1000 + ENTRY_OVERHEAD));
        let frames: usize = (980..1000u32)
            .filter_map(|i| match c.get(&h(i)) {
                Some(Cached::Zstd(b)) => Some(b.len() + ENTRY_OVERHEAD),
                _ => None,
            })
            .sum();
        assert!(frames <= c.bytes());
        // Verdicts cost their overhead only.
        let mut c = FrameCache::new(10 * ENTRY_OVERHEAD);
        for i in 0..10 {
            c.insert(h(i), Cached::Incompressible);
        }
        assert_eq!((c.len(), c.evictions()), (10, 0));
        c.insert(h(10), Cached::Incompressible);
        assert_eq!((c.len(), c.evictions()), (10, 1));
    }

    #[test]
    fn hits_give_the_same_frame_and_a_second_chance() {
        let mut c = FrameCache::new(3 * (1000 + ENTRY_OVERHEAD));
        c.insert(h(1), frame(1000));
        c.insert(h(2), frame(1000));
        c.insert(h(3), frame(1000));
        let Some(Cached::Zstd(first)) = c.get(&h(1)) else {
            panic!("kept")
        };
        let Some(Cached::Zstd(again)) = c.get(&h(1)) else {
            panic!("kept")
        };
        // The same bytes, shared, not copied.
        assert_eq!(first.as_ptr(), again.as_ptr());
        // 1 was used: 2 goes first, then 3.
        c.insert(h(4), frame(1000));
        assert!(c.get(&h(2)).is_none());
        assert!(c.get(&h(1)).is_some() && c.get(&h(3)).is_some());
        c.insert(h(5), frame(1000));
        c.insert(h(6), frame(1000));
        assert_eq!(c.len(), 3);
        assert!(c.bytes() <= 3 * (1000 + ENTRY_OVERHEAD));
    }

    #[test]
    fn too_large_is_not_kept_and_replacing_recounts() {
        let mut c = FrameCache::new(5000);
        c.insert(h(1), frame(6000));
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        c.insert(h(1), frame(1000));
        c.insert(h(1), Cached::Incompressible);
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), ENTRY_OVERHEAD);
        assert_eq!(c.get(&h(1)), Some(Cached::Incompressible));
        // A zero capacity keeps nothing.
        let mut c = FrameCache::new(0);
        c.insert(h(1), Cached::Incompressible);
        assert!(c.is_empty());
    }
}
