use super::*;
use crate::file_tree::{build, build_with, BuiltTree};
use crate::hash::ChunkEntry;
use crate::shape::TEST_SHAPE;
use crate::store::{MemNodeStore, NodeStore};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::cell::Cell;
use std::convert::Infallible;

fn entries(seed: u64, n: usize) -> Vec<ChunkEntry> {
    crate::file_tree::tests::entries(seed, n)
}

fn store_of(b: &BuiltTree) -> MemNodeStore {
    let mut s = MemNodeStore::new();
    b.store_into(&mut s);
    s
}

/// A remote side answering from a store, counting calls.
fn remote(s: &MemNodeStore) -> impl FnMut(&[Hash]) -> Result<Vec<Vec<u8>>, Infallible> + '_ {
    move |hs: &[Hash]| {
        Ok(hs
            .iter()
            .map(|h| s.get_node(h).expect("remote has it"))
            .collect())
    }
}

/// The chunks of `b` that `has` lacks, first occurrences, file order.
fn oracle(b: &[ChunkEntry], has: &HashSet<Hash>) -> Vec<MissingChunk> {
    let mut seen = HashSet::new();
    let mut off = 0;
    let mut out = Vec::new();
    for e in b {
        if !has.contains(&e.hash) && seen.insert(e.hash) {
            out.push(MissingChunk {
                hash: e.hash,
                len: e.len,
                offset: off,
            });
        }
        off += u64::from(e.len);
    }
    out
}

fn set(e: &[ChunkEntry]) -> HashSet<Hash> {
    e.iter().map(|c| c.hash).collect()
}

#[test]
fn diff_with_itself_is_empty_without_fetch() {
    let e = entries(1, 5000);
    let b = build(&e);
    let s = store_of(&b);
    let has = set(&e);
    let r = diff(
        &s,
        |h| has.contains(h),
        b.root,
        |_: &[Hash]| -> Result<_, ()> { panic!("no fetch expected") },
    )
    .unwrap();
    assert!(r.missing.is_empty());
    assert_eq!((r.nodes_fetched, r.round_trips), (0, 0));
    assert_eq!(r.size, b.size);
    assert_eq!(r.chunks, 5000);
}

#[test]
fn empty_local_fetches_every_node_by_level() {
    let e = entries(2, 16_384);
    let b = build(&e);
    let rs = store_of(&b);
    let r = diff(&MemNodeStore::new(), |_| false, b.root, remote(&rs)).unwrap();
    assert_eq!(r.missing, oracle(&e, &HashSet::new()));
    assert_eq!(r.nodes_fetched, b.nodes.len());
    let depth = usize::from(read_node(&rs, &b.root).unwrap().level()) + 1;
    assert_eq!(r.round_trips, depth, "one round trip per level");
}

fn read_node(s: &MemNodeStore, h: &Hash) -> Result<Node, MerkleError> {
    crate::store::read_node(s, h)
}

#[test]
fn one_insert_in_16k_fetches_few_nodes() {
    let a = entries(3, 16_384);
    let mut b = a.clone();
    let new_chunk = entries(4, 1)[0];
    b.insert(8000, new_chunk);
    let (ta, tb) = (build(&a), build(&b));
    let (ls, rs) = (store_of(&ta), store_of(&tb));
    let has = set(&a);
    let r = diff(&ls, |h| has.contains(h), tb.root, remote(&rs)).unwrap();
    let offset: u64 = a[..8000].iter().map(|c| u64::from(c.len)).sum();
    assert_eq!(
        r.missing,
        vec![MissingChunk {
            hash: new_chunk.hash,
            len: new_chunk.len,
            offset
        }]
    );
    let depth = usize::from(read_node(&rs, &tb.root).unwrap().level()) + 1;
    assert!(r.nodes_fetched <= 2 * depth + 2, "{}", r.nodes_fetched);
    assert!(r.round_trips <= depth);
    for (h, _) in &r.fetched {
        assert!(!ls.has_node(h), "fetched a node held locally");
    }
    // After storing the fetched nodes and the chunk, nothing is missing.
    let mut ls = ls;
    ls.extend(r.fetched);
    let mut has = has;
    has.insert(new_chunk.hash);
    let again = diff(&ls, |h| has.contains(h), tb.root, remote(&rs)).unwrap();
    assert!(again.missing.is_empty());
    assert_eq!(again.nodes_fetched, 0);
}

#[test]
fn nodes_without_chunks_are_not_trusted() {
    let e = entries(5, 3000);
    let b = build(&e);
    let s = store_of(&b);
    let mut has = set(&e);
    let gone = e[1234].hash;
    has.remove(&gone);
    let r = diff(&s, |h| has.contains(h), b.root, remote(&s)).unwrap();
    assert_eq!(r.missing.len(), 1);
    assert_eq!(r.missing[0].hash, gone);
    assert_eq!(r.nodes_fetched, 0);
    // With a trusted `complete`, the caller takes responsibility.
    let r = diff_trusting(&s, |h| has.contains(h), |_| true, b.root, remote(&s)).unwrap();
    assert!(r.missing.is_empty());
    assert_eq!(r.nodes_local, 0);
}

#[test]
fn damaged_local_node_is_fetched_again() {
    let e = entries(6, 2000);
    let b = build(&e);
    let rs = store_of(&b);
    let mut ls = store_of(&b);
    let victim = b.nodes.iter().find(|n| n.0 != b.root).unwrap().0;
    ls.put_node(victim, vec![1, 0, 0, 0, 0]);
    let has = set(&e);
    let r = diff(&ls, |h| has.contains(h), b.root, remote(&rs)).unwrap();
    assert!(r.missing.is_empty());
    assert_eq!(r.nodes_fetched, 1);
    assert_eq!(r.fetched[0].0, victim);
}

#[test]
fn lying_remote_is_rejected() {
    let e = entries(7, 500);
    let b = build(&e);
    let other = build(&entries(8, 500));
    let os = store_of(&other);
    let local = MemNodeStore::new();
    // Answers with the wrong node.
    let err = diff(
        &local,
        |_| false,
        b.root,
        |hs: &[Hash]| {
            Ok::<_, Infallible>(
                hs.iter()
                    .map(|_| os.get_node(&other.root).unwrap())
                    .collect(),
            )
        },
    )
    .unwrap_err();
    assert!(matches!(
        err,
        DiffError::Merkle(MerkleError::HashMismatch { .. })
    ));
    // Answers with too few nodes.
    let err = diff(
        &local,
        |_| false,
        b.root,
        |_: &[Hash]| Ok::<_, Infallible>(vec![]),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        DiffError::Merkle(MerkleError::BadFetch { .. })
    ));
    // Transport error.
    let err = diff(&local, |_| false, b.root, |_: &[Hash]| Err("down")).unwrap_err();
    assert!(matches!(err, DiffError::Fetch("down")));
}

#[test]
fn non_canonical_remote_tree_is_rejected() {
    // Two leaves split where the boundary rule does not cut: hashes match
    // (the root names this tree) but the structure is not canonical.
    let odd = |i: u8| ChunkEntry {
        hash: Hash([i | 1; 32]),
        len: 5,
    };
    let mut rs = MemNodeStore::new();
    let mut put = |n: Node| {
        let (bytes, chunks) = n.file_totals().unwrap();
        let (h, b) = n.seal();
        rs.put_node(h, b);
        crate::node::FileChild {
            hash: h,
            bytes,
            chunks,
        }
    };
    let a = put(Node::FileLeaf(vec![odd(1)]));
    let b = put(Node::FileLeaf(vec![odd(3)]));
    let root = put(Node::FileInterior {
        level: 1,
        children: vec![a, b],
    });
    let err = diff(&MemNodeStore::new(), |_| false, root.hash, remote(&rs)).unwrap_err();
    assert!(matches!(err, DiffError::Merkle(MerkleError::Corrupt(_))));
}

#[test]
fn repeated_chunks_reported_once() {
    let one = entries(9, 3);
    let mut e = Vec::new();
    for _ in 0..2000 {
        e.extend_from_slice(&one);
    }
    let b = build(&e);
    let rs = store_of(&b);
    let calls = Cell::new(0);
    let r = diff(
        &MemNodeStore::new(),
        |_| false,
        b.root,
        |hs: &[Hash]| {
            calls.set(calls.get() + 1);
            remote(&rs)(hs)
        },
    )
    .unwrap();
    assert_eq!(r.missing, oracle(&e, &HashSet::new()));
    assert_eq!(r.missing.len(), 3);
    assert!(r.nodes_fetched <= b.nodes.len());
    assert_eq!(calls.get(), r.round_trips);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// diff(a -> b) is exactly the set difference, whatever the edits and
    /// whichever chunks of `a` are actually present.
    #[test]
    fn diff_matches_set_difference(seed in any::<u64>(), n in 0usize..600, edits in 0usize..6, drop_pct in 0u32..30) {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = entries(seed, n);
        let mut b = a.clone();
        for _ in 0..edits {
            let at = rng.gen_range(0..=b.len());
            match rng.gen_range(0..4) {
                0 if !b.is_empty() => { b.remove(at.min(b.len() - 1)); }
                1 if !a.is_empty() => b.insert(at, a[rng.gen_range(0..a.len())]),
                _ => b.insert(at, entries(rng.gen(), 1)[0]),
            }
        }
        let (ta, tb) = (build_with(&a, TEST_SHAPE), build_with(&b, TEST_SHAPE));
        let (ls, rs) = (store_of(&ta), store_of(&tb));
        let has: HashSet<Hash> = a.iter().filter(|_| rng.gen_range(0..100) >= drop_pct).map(|c| c.hash).collect();
        let r = diff_with(&ls, |h| has.contains(h), |_| false, tb.root, remote(&rs), TEST_SHAPE).unwrap();
        prop_assert_eq!(r.missing, oracle(&b, &has));
        for (h, _) in &r.fetched {
            prop_assert!(!ls.has_node(h));
        }
        let fetched: HashSet<_> = r.fetched.iter().map(|f| f.0).collect();
        prop_assert_eq!(fetched.len(), r.fetched.len(), "each node fetched once");
        prop_assert_eq!(r.size, tb.size);
    }
}
