use super::*;
use crate::node::FileChild;
use crate::shape::TEST_SHAPE;
use crate::store::MemNodeStore;
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashSet;

pub(crate) fn entries(seed: u64, n: usize) -> Vec<ChunkEntry> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| ChunkEntry {
            hash: Hash(rng.gen()),
            len: rng.gen_range(1..200_000),
        })
        .collect()
}

fn stored(b: &BuiltTree) -> MemNodeStore {
    let mut s = MemNodeStore::new();
    b.store_into(&mut s);
    s
}

fn depth(b: &BuiltTree) -> usize {
    let s = stored(b);
    usize::from(read_with(&s, &b.root, Shape::V1).unwrap().level()) + 1
}

#[test]
fn empty_file() {
    let b = build(&[]);
    assert_eq!(b.tree(), FileTree::empty());
    assert_eq!(b.nodes.len(), 1);
    assert_eq!(b.nodes[0].1, vec![1, 0, 0, 0, 0]);
    let s = stored(&b);
    assert_eq!(chunks(&s, b.root).unwrap(), vec![]);
    // Zero-length entries do not count.
    let zero = ChunkEntry {
        hash: Hash::of_chunk(b""),
        len: 0,
    };
    assert_eq!(build(&[zero]).tree(), FileTree::empty());
}

#[test]
fn roundtrip_sizes() {
    for (seed, n) in [(1, 1), (2, 63), (3, 64), (4, 1000), (5, 20_000)] {
        let e = entries(seed, n);
        let b = build(&e);
        let s = stored(&b);
        assert_eq!(b.tree().chunks(&s).unwrap(), e);
        assert_eq!(b.size, e.iter().map(|c| u64::from(c.len)).sum::<u64>());
        let distinct: HashSet<_> = b.nodes.iter().map(|n| n.0).collect();
        assert_eq!(distinct.len(), b.nodes.len(), "each node once");
    }
    // 16k chunks: depth 3 with fanout ~64.
    assert!(depth(&build(&entries(6, 16_384))) <= 4);
}

#[test]
fn repeated_chunks_stay_shallow() {
    // Every chunk the same boundary hash: MIN_FANOUT keeps the height log2.
    let e = vec![
        ChunkEntry {
            hash: Hash::ZERO,
            len: 10
        };
        10_000
    ];
    let b = build(&e);
    assert!(depth(&b) <= 15, "depth {}", depth(&b));
    assert_eq!(chunks(&stored(&b), b.root).unwrap(), e);
    let nonb = vec![
        ChunkEntry {
            hash: Hash([1; 32]),
            len: 10
        };
        100_000
    ];
    let b = build(&nonb);
    assert!(b.nodes.len() < 10, "identical capped leaves are one node");
    assert_eq!(chunks(&stored(&b), b.root).unwrap(), nonb);
}

/// New node hashes after an edit, against the old tree's.
fn changed(old: &BuiltTree, new: &BuiltTree) -> (usize, usize) {
    let old_set: HashSet<_> = old.nodes.iter().map(|n| n.0).collect();
    let fresh: Vec<_> = new
        .nodes
        .iter()
        .filter(|n| !old_set.contains(&n.0))
        .collect();
    (fresh.len(), fresh.iter().map(|n| n.1.len()).sum())
}

#[test]
fn one_chunk_edit_changes_log_n_nodes() {
    let e = entries(7, 16_384);
    let old = build(&e);
    let bound = 2 * depth(&old) + 2;
    let mut rng = StdRng::seed_from_u64(8);
    for _ in 0..20 {
        let at = rng.gen_range(0..e.len());
        let mut ins = e.clone();
        ins.insert(at, entries(rng.gen(), 1)[0]);
        let mut del = e.clone();
        del.remove(at);
        let mut rep = e.clone();
        rep[at].len += 1;
        for edited in [ins, del, rep] {
            let new = build(&edited);
            assert_ne!(new.root, old.root);
            let (n, _) = changed(&old, &new);
            assert!(n <= bound, "{n} new nodes > {bound}");
        }
    }
}

#[test]
fn deep_trees_with_small_shape() {
    for n in [0, 1, 2, 7, 8, 9, 100, 3000] {
        let e = entries(n as u64, n);
        let b = build_with(&e, TEST_SHAPE);
        let mut s = MemNodeStore::new();
        b.store_into(&mut s);
        assert_eq!(chunks_with(&s, b.root, TEST_SHAPE).unwrap(), e);
    }
}

/// Builds a node, stores it, returns its child entry.
fn put(s: &mut MemNodeStore, node: Node) -> FileChild {
    let (bytes, chunks) = node.file_totals().unwrap();
    let (hash, enc) = node.seal();
    s.put_node(hash, enc);
    FileChild {
        hash,
        bytes,
        chunks,
    }
}

#[test]
fn rejects_non_canonical_trees() {
    let odd = |i: u8| ChunkEntry {
        hash: Hash([i | 1; 32]), // never a boundary
        len: 5,
    };
    let mut s = MemNodeStore::new();
    let a = put(&mut s, Node::FileLeaf(vec![odd(1), odd(3)]));
    let b = put(&mut s, Node::FileLeaf(vec![odd(5)]));
    let interior = |children| Node::FileInterior { level: 1, children };
    // Leaf `a` does not end at a boundary, yet is not the last leaf.
    let split = put(&mut s, interior(vec![a, b]));
    assert!(chunks(&s, split.hash).is_err());
    // One child under an interior root.
    let lone = put(&mut s, interior(vec![a]));
    assert!(chunks(&s, lone.hash).is_err());
    // Wrong totals claimed for a child.
    let mut lie = b;
    lie.bytes += 1;
    let lying = put(&mut s, interior(vec![b, lie]));
    assert!(chunks(&s, lying.hash).is_err());
    // A level-2 node over leaves.
    let skip = put(
        &mut s,
        Node::FileInterior {
            level: 2,
            children: vec![b, b],
        },
    );
    assert!(chunks(&s, skip.hash).is_err());
    // A path node inside a file tree.
    let path = Node::PathLeaf(vec![]);
    let (ph, pb) = path.seal();
    s.put_node(ph, pb);
    assert!(chunks(&s, ph).is_err());
    // Missing child.
    let mut t = MemNodeStore::new();
    let root = put(&mut t, interior(vec![b, b]));
    assert_eq!(chunks(&t, root.hash), Err(MerkleError::MissingNode(b.hash)));
    // The canonical version of the same chunks is accepted.
    let good = build(&[odd(1), odd(3), odd(5)]);
    assert_eq!(chunks(&stored(&good), good.root).unwrap().len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Root changes iff the chunk list changes.
    #[test]
    fn root_changes_iff_content_changes(seed in any::<u64>(), n in 0usize..400, op in 0u8..4, at in any::<usize>()) {
        let e = entries(seed, n);
        let base = build_with(&e, TEST_SHAPE);
        prop_assert_eq!(build_with(&e.clone(), TEST_SHAPE).root, base.root);
        let mut f = e.clone();
        match op {
            0 => f.insert(at % (n + 1), entries(seed ^ 1, 1)[0]),
            1 if n > 0 => { f.remove(at % n); }
            2 if n > 0 => f[at % n].len += 1,
            3 if n > 0 => f[at % n].hash.0[31] ^= 1,
            _ => f.push(entries(seed ^ 2, 1)[0]),
        }
        let other = build_with(&f, TEST_SHAPE);
        prop_assert_ne!(other.root, base.root);
        let mut s = MemNodeStore::new();
        other.store_into(&mut s);
        prop_assert_eq!(chunks_with(&s, other.root, TEST_SHAPE)?, f);
    }
}

#[test]
fn expansion_is_bounded_by_the_roots_claim() {
    // A few KB of repeated subtrees claiming 2 * 256^3 chunks (32 Mi,
    // 160 MiB of 5-byte chunks here; exabytes with large lengths): refused
    // at the root, before any child is read.
    let same = ChunkEntry {
        hash: Hash([1; 32]), // never a boundary: nodes cut at 256 entries
        len: 5,
    };
    let mut s = MemNodeStore::new();
    let over =
        |s: &mut MemNodeStore, level, children| put(s, Node::FileInterior { level, children });
    let mut child = put(&mut s, Node::FileLeaf(vec![same; 256]));
    for level in 1..=2u8 {
        child = over(&mut s, level, vec![child; 256]);
    }
    let bomb = over(&mut s, 3, vec![child, child]);
    assert_eq!(bomb.chunks, 2 << 24);
    assert!(s.len() <= 4, "four distinct nodes");
    assert_eq!(
        chunks(&s, bomb.hash),
        Err(MerkleError::TooLarge {
            what: "file tree (chunks)",
            size: 2 << 24,
            max: MAX_EXPANDED_CHUNKS,
        })
    );
    let tree = FileTree {
        root: bomb.hash,
        size: bomb.bytes,
    };
    assert!(matches!(tree.chunks(&s), Err(MerkleError::TooLarge { .. })));
    // The same shape one level lower (65,536 + 512 chunks) is a legal
    // repeated file and expands.
    let leaf = put(&mut s, Node::FileLeaf(vec![same; 256]));
    let full = over(&mut s, 1, vec![leaf; 256]);
    let last = over(&mut s, 1, vec![leaf; 2]);
    let legal = over(&mut s, 2, vec![full, last]);
    assert_eq!(chunks(&s, legal.hash).unwrap().len(), 256 * 258);
    // The bound is the claim, exactly.
    let b = build(&entries(9, 1000));
    let st = stored(&b);
    assert_eq!(
        chunks_bounded(&st, b.root, Shape::V1, 1000).unwrap().len(),
        1000
    );
    assert!(matches!(
        chunks_bounded(&st, b.root, Shape::V1, 999),
        Err(MerkleError::TooLarge {
            size: 1000,
            max: 999,
            ..
        })
    ));
}
