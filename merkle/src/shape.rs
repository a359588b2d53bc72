//! The boundary rule: where one tree node ends and the next begins.
//!
//! Both trees are Prolly trees: each level is a sequence of entries cut into
//! nodes by a left-to-right scan. After appending an entry to the open node,
//! the node is closed ("cut") when
//!
//! ```text
//! count == MAX_FANOUT  ||  (count >= MIN_FANOUT && bits & (TARGET_FANOUT - 1) == 0)
//! ```
//!
//! where `count` is the number of entries in the open node and `bits` is a
//! uniform 64-bit value derived from the entry:
//!
//! * file tree, level 0: `low_u64()` of the chunk hash;
//! * file tree, level >= 1: `low_u64()` of the child node's hash;
//! * path tree, every level: `low_u64()` of
//!   `blake3::derive_key("filesyncd 2026 merkle path boundary v1", [level] || key)`
//!   where `key` is the path (level 0) or the child's last path (level >= 1).
//!   Hence the path tree's shape depends only on the set of paths, never on
//!   the values: changing a file's content never moves a boundary.
//!
//! The last node of a level ends at the end of the level whatever its last
//! entry. The root is the first level that has exactly one node.
//!
//! Why each term:
//! * `TARGET_FANOUT = 64` gives nodes of ~2.3 KiB (file leaves) and a depth
//!   of 3 for 16k chunks (1 GiB at 64 KiB chunks).
//! * `MIN_FANOUT = 2` guarantees each level has at most half (rounded up) the
//!   nodes of the level below, so the height is at most log2(n)+1 even for
//!   adversarial input (e.g. a file whose every chunk is the same boundary
//!   chunk would otherwise give a chain of one-entry nodes).
//! * `MAX_FANOUT = 256` (4x the target) bounds a node's size (a file leaf is at
//!   most 9 KiB, a path leaf about 1 MiB with 4 KiB paths). The trade-off:
//!   about 1.8% of nodes ((63/64)^256) are cut by the cap rather than by
//!   content, and a cap cut depends on position, so an insert before a run of
//!   capped nodes re-cuts that run up to the next content-defined boundary
//!   (usually one extra node; still O(log n) per edit on average). A smaller
//!   cap would bound nodes tighter but make such runs more frequent.
//!
//! Because the scan only looks at the entries since the last cut, a cut
//! decision depends only on the entries before it: an edit can only change
//! nodes from the start of the node it falls in up to the first cut that the
//! old and new sequences share (re-synchronisation), and the same holds level
//! by level upward. That is what makes edits O(log n) nodes.

use blake3::hazmat::{hash_derive_key_context, ContextKey, HasherExt};
use std::sync::OnceLock;

/// Target (average) number of entries per node.
pub const TARGET_FANOUT: usize = 64;
/// No content-defined cut before this many entries.
pub const MIN_FANOUT: usize = 2;
/// Hard cap on entries per node (4x target).
pub const MAX_FANOUT: usize = 256;

/// blake3 `derive_key` context for path-tree boundary bits.
pub const PATH_BOUNDARY_CONTEXT: &str = "filesyncd 2026 merkle path boundary v1";

/// The boundary parameters. Production uses [`Shape::V1`] only (it is part of
/// the format: another shape gives other roots); tests use a small shape to
/// get deep trees from few entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub mask: u64,
    pub min: usize,
    pub max: usize,
}

impl Shape {
    pub const V1: Shape = Shape {
        mask: TARGET_FANOUT as u64 - 1,
        min: MIN_FANOUT,
        max: MAX_FANOUT,
    };

    /// Does the open node close after its `count`-th entry, whose boundary
    /// bits are `bits`?
    #[inline]
    pub fn is_cut(&self, count: usize, bits: u64) -> bool {
        count >= self.max || (count >= self.min && bits & self.mask == 0)
    }
}

/// Boundary bits of a path-tree entry keyed by `key` at `level`.
pub(crate) fn path_bits(level: u8, key: &str) -> u64 {
    static KEY: OnceLock<ContextKey> = OnceLock::new();
    let ctx = KEY.get_or_init(|| hash_derive_key_context(PATH_BOUNDARY_CONTEXT));
    let mut h = blake3::Hasher::new_from_context_key(ctx);
    h.update(&[level]);
    h.update(key.as_bytes());
    let out = h.finalize();
    let mut low = [0u8; 8];
    low.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(low)
}

#[cfg(test)]
pub(crate) const TEST_SHAPE: Shape = Shape {
    mask: 3,
    min: 2,
    max: 8,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_rule() {
        let s = Shape::V1;
        assert!(!s.is_cut(1, 0), "no content cut below MIN_FANOUT");
        assert!(s.is_cut(2, 0));
        assert!(s.is_cut(2, 64));
        assert!(!s.is_cut(2, 1));
        assert!(!s.is_cut(255, 1));
        assert!(s.is_cut(256, 1), "cap");
    }

    #[test]
    fn path_bits_depend_on_level_and_key() {
        assert_ne!(path_bits(0, "a"), path_bits(1, "a"));
        assert_ne!(path_bits(0, "a"), path_bits(0, "b"));
        assert_eq!(path_bits(3, "x/y"), path_bits(3, "x/y"));
        // The cached context key gives exactly blake3's derive_key.
        let full = blake3::derive_key(PATH_BOUNDARY_CONTEXT, b"\x02a/b");
        let want = u64::from_le_bytes(full[..8].try_into().unwrap());
        assert_eq!(path_bits(2, "a/b"), want);
    }
}
