use super::*;
use crate::path_update::update_many;
use crate::shape::TEST_SHAPE;
use crate::store::MemNodeStore;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

type Map = BTreeMap<String, PathValue>;

fn key(i: u32) -> String {
    // Nested names so that prefixes and '/' ordering matter.
    format!("d{}/s{}/f{}", i % 7, (i / 7) % 5, i)
}

fn val(i: u32, gen: u64) -> PathValue {
    match i % 5 {
        0 => PathValue::dir(0o755),
        1 => PathValue::symlink(format!("t{gen}").as_bytes(), 0o777),
        _ => PathValue::file(Hash::of_chunk(&gen.to_le_bytes()), gen, 0o644),
    }
}

fn store_set(s: &MemNodeStore) -> HashSet<Hash> {
    s.hashes().copied().collect()
}

/// The canonical property: same root as a fresh build, store holds exactly
/// the final tree, reads agree with the map.
fn check(store: &MemNodeStore, root: Hash, map: &Map, shape: Shape) -> Result<(), TestCaseError> {
    let mut fresh = MemNodeStore::new();
    let built = build_with(&mut fresh, map.clone(), shape).unwrap();
    prop_assert_eq!(root, built, "incremental root differs from a fresh build");
    prop_assert_eq!(
        store_set(store),
        store_set(&fresh),
        "store leaks or lacks nodes"
    );
    let nodes: HashSet<Hash> = nodes_with(store, root, shape)
        .unwrap()
        .into_iter()
        .collect();
    prop_assert_eq!(&nodes, &store_set(store));
    for (k, v) in map {
        prop_assert_eq!(get_with(store, root, k, shape).unwrap(), Some(*v));
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Set(u32, u64),
    Del(u32),
    Batch(Vec<(u32, Option<u64>)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..150, any::<u64>()).prop_map(|(k, g)| Op::Set(k, g)),
        3 => (0u32..150).prop_map(Op::Del),
        1 => proptest::collection::vec((0u32..150, proptest::option::of(any::<u64>())), 0..60).prop_map(Op::Batch),
    ]
}

fn run_ops(init: &[u32], ops: &[Op], shape: Shape) -> Result<(), TestCaseError> {
    let mut store = MemNodeStore::new();
    let mut map: Map = init.iter().map(|&i| (key(i), val(i, 0))).collect();
    let mut root = build_with(&mut store, map.clone(), shape).unwrap();
    check(&store, root, &map, shape)?;
    for op in ops {
        let changes: BTreeMap<String, Option<PathValue>> = match op {
            Op::Set(k, g) => [(key(*k), Some(val(*k, *g)))].into(),
            Op::Del(k) => [(key(*k), None)].into(),
            Op::Batch(b) => b
                .iter()
                .map(|(k, g)| (key(*k), g.map(|g| val(*k, g))))
                .collect(),
        };
        for (k, v) in &changes {
            match v {
                Some(v) => map.insert(k.clone(), *v),
                None => map.remove(k),
            };
        }
        root = update_many(&mut store, root, changes, shape).unwrap();
        check(&store, root, &map, shape)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_equals_rebuild_small_shape(
        init in proptest::collection::vec(0u32..150, 0..120),
        ops in proptest::collection::vec(op(), 1..25),
    ) {
        run_ops(&init, &ops, TEST_SHAPE)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn incremental_equals_rebuild_v1(
        n in 0u32..3000,
        ops in proptest::collection::vec((0u32..4000, proptest::option::of(any::<u64>())), 1..30),
        batch in proptest::collection::vec((0u32..4000, proptest::option::of(any::<u64>())), 0..400),
    ) {
        let mut store = MemNodeStore::new();
        let mut map: Map = (0..n).map(|i| (format!("p{i:05}"), val(i, 1))).collect();
        let mut root = PathTree::build(&mut store, map.clone()).unwrap();
        for (k, g) in &ops {
            let (name, v) = (format!("p{k:05}"), g.map(|g| val(*k, g)));
            match v { Some(v) => map.insert(name.clone(), v), None => map.remove(&name) };
            root = PathTree::update(&mut store, root, &name, v).unwrap();
        }
        let changes: BTreeMap<String, Option<PathValue>> =
            batch.iter().map(|(k, g)| (format!("p{k:05}"), g.map(|g| val(*k, g)))).collect();
        for (k, v) in &changes {
            match v { Some(v) => map.insert(k.clone(), *v), None => map.remove(k) };
        }
        root = PathTree::update_many(&mut store, root, changes).unwrap();
        check(&store, root, &map, Shape::V1)?;
    }
}

#[test]
fn grow_from_empty_and_shrink_to_empty() {
    for shape in [TEST_SHAPE, Shape::V1] {
        let mut store = MemNodeStore::new();
        let mut root = PathTree::empty_root(&mut store);
        assert_eq!(root, PathTree::empty_hash());
        let mut map = Map::new();
        for i in 0..600 {
            root = update_many(&mut store, root, [(key(i), Some(val(i, 2)))], shape).unwrap();
            map.insert(key(i), val(i, 2));
        }
        check(&store, root, &map, shape).unwrap();
        for i in (0..600).rev() {
            root = update_many(&mut store, root, [(key(i), None)], shape).unwrap();
        }
        assert_eq!(root, PathTree::empty_hash());
        assert_eq!(store.len(), 1, "only the empty leaf remains");
    }
}

#[test]
fn values_do_not_move_boundaries() {
    let mut a = MemNodeStore::new();
    let mut b = MemNodeStore::new();
    let ma: Map = (0..2000).map(|i| (key(i), val(i, 3))).collect();
    let mb: Map = (0..2000).map(|i| (key(i), val(i, 4))).collect();
    let ra = build_with(&mut a, ma, TEST_SHAPE).unwrap();
    let rb = build_with(&mut b, mb, TEST_SHAPE).unwrap();
    assert_ne!(ra, rb);
    let keys_of = |s: &MemNodeStore, r| {
        let mut v: Vec<Vec<String>> = nodes_with(s, r, TEST_SHAPE)
            .unwrap()
            .iter()
            .map(|h| {
                let n = crate::store::read_with(s, h, TEST_SHAPE).unwrap();
                (0..n.len())
                    .map(|i| key_at(&n, i).unwrap().to_owned())
                    .collect()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(keys_of(&a, ra), keys_of(&b, rb));
}

#[test]
fn single_update_touches_few_nodes() {
    let mut store = MemNodeStore::new();
    let map: Map = (0..100_000)
        .map(|i| (format!("dir{}/file{i}", i % 100), val(i, 5)))
        .collect();
    let root = PathTree::build(&mut store, map).unwrap();
    let before = store_set(&store);
    let r2 = PathTree::update(&mut store, root, "dir5/new", Some(val(7, 6))).unwrap();
    let after = store_set(&store);
    let depth = usize::from(crate::store::read_node(&store, &r2).unwrap().level()) + 1;
    assert!(after.difference(&before).count() <= 2 * depth + 2);
    assert!(before.difference(&after).count() <= 2 * depth + 2);
    // Same value again: nothing changes.
    let r3 = PathTree::update(&mut store, r2, "dir5/new", Some(val(7, 6))).unwrap();
    assert_eq!(r3, r2);
    assert_eq!(store_set(&store), after);
    // Deleting an absent path: nothing changes.
    assert_eq!(PathTree::update(&mut store, r2, "nope", None).unwrap(), r2);
}

#[test]
fn get_and_list() {
    let mut store = MemNodeStore::new();
    let map: Map = (0..500).map(|i| (key(i), val(i, 7))).collect();
    let root = build_with(&mut store, map.clone(), TEST_SHAPE).unwrap();
    assert_eq!(
        PathTree::get(&store, PathTree::empty_hash(), "a").err(),
        Some(MerkleError::MissingNode(PathTree::empty_hash()))
    );
    assert_eq!(get_with(&store, root, "zzz", TEST_SHAPE).unwrap(), None);
    assert_eq!(get_with(&store, root, "d0", TEST_SHAPE).unwrap(), None);
    let list = |p: &str| {
        let mut out = Vec::new();
        visit(
            &store,
            root,
            &PathExpect::root(),
            p,
            TEST_SHAPE,
            &mut |k: &str, v: &PathValue| out.push((k.to_owned(), *v)),
            &mut |_| {},
        )
        .unwrap();
        out
    };
    let all: Vec<_> = map.clone().into_iter().collect();
    assert_eq!(list(""), all);
    for p in ["d3/", "d3/s2/", "d3/s2/f1", "d9", "d", "e"] {
        let want: Vec<_> = map
            .iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(list(p), want, "prefix {p}");
    }
}

#[test]
fn bad_input_leaves_store_unchanged() {
    let mut store = MemNodeStore::new();
    let map: Map = (0..300).map(|i| (key(i), val(i, 8))).collect();
    let root = build_with(&mut store, map, TEST_SHAPE).unwrap();
    let before = store_set(&store);
    let v = Some(val(2, 1));
    assert!(update_many(&mut store, root, [("../x".to_owned(), v)], TEST_SHAPE).is_err());
    assert!(update_many(
        &mut store,
        root,
        [("b".to_owned(), v), ("a".to_owned(), v)],
        TEST_SHAPE
    )
    .is_err());
    let bad_mode = Some(PathValue::file(Hash::ZERO, 0, 0o100644));
    assert!(update_many(&mut store, root, [("a".to_owned(), bad_mode)], TEST_SHAPE).is_err());
    assert!(PathTree::build(
        &mut MemNodeStore::new(),
        [("b".to_owned(), val(2, 1)), ("a".to_owned(), val(2, 1))]
    )
    .is_err());
    // A missing node fails the update before anything is written.
    let victim = *before.iter().find(|h| **h != root).unwrap();
    let mut damaged = store.clone();
    damaged.remove_node(&victim);
    let all: BTreeMap<String, Option<PathValue>> = (0..300).map(|i| (key(i), None)).collect();
    let res = update_many(&mut damaged, root, all, TEST_SHAPE);
    assert_eq!(res, Err(MerkleError::MissingNode(victim)));
    assert_eq!(store_set(&damaged).len(), before.len() - 1);
    assert_eq!(store_set(&store), before);
}

#[test]
fn rejects_non_canonical_path_trees() {
    let mut s = MemNodeStore::new();
    let leaf = |keys: &[&str]| {
        Node::PathLeaf(
            keys.iter()
                .map(|k| (k.to_string(), PathValue::dir(0)))
                .collect(),
        )
    };
    let mut put = |n: Node| {
        let (h, b) = n.seal();
        s.put_node(h, b);
        h
    };
    let a = put(leaf(&["a", "c"]));
    let b = put(leaf(&["b"]));
    let child = |k: &str, h| PathChild {
        last_key: k.into(),
        hash: h,
    };
    // Keys out of order across children.
    let r = put(Node::PathInterior {
        level: 1,
        children: vec![child("c", a), child("d", b)],
    });
    // Parent key differs from the child's last key.
    let r2 = put(Node::PathInterior {
        level: 1,
        children: vec![child("b", a)],
    });
    let r3 = put(Node::FileLeaf(vec![]));
    for root in [r, r2, r3] {
        assert!(PathTree::list(&s, root, "").is_err());
    }
}
