//! Tree walks over an adversarial node store. The input is a small program
//! that builds nodes bottom-up (children named by the index of an earlier
//! node, so hashes always match unless the program lies on purpose): file
//! leaves and interior nodes with honest or forged subtree totals, repeated
//! children (a few KB claiming exabytes), path leaves and interior nodes
//! with honest or forged keys, raw bytes, and nodes stored under another
//! node's name. Then, from a chosen root:
//!
//! * `chunks` (the file tree expansion): no panic; when it succeeds the list
//!   matches the root's claimed totals and stays under
//!   `MAX_EXPANDED_CHUNKS`;
//! * `diff` against a local store holding part of the tree, fetching from
//!   the full store: it must agree exactly with `chunks` (the same missing
//!   chunks at the same first offsets), and with a lying `fetch` it must
//!   fail rather than return anything;
//! * the path tree: `get`, `list`, `nodes`, and `update_many` of a few
//!   changes, whose result must equal a fresh build of the changed list.
//!
//! Memory and time are bounded by the harness's input (at most 48 nodes of
//! at most 256 entries) and by libFuzzer's `-rss_limit_mb` / `-timeout`.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use filesyncd_fuzz::Bytes;
use filesyncd_merkle::file_tree::MAX_EXPANDED_CHUNKS;
use filesyncd_merkle::{
    chunks, diff, diff_trusting, node_hash, ChunkEntry, EntryKind, FileChild, FileTree, Hash,
    MemNodeStore, MerkleError, Node, NodeSource, NodeStore, PathChild, PathTree, PathValue,
};

const MAX_NODES: usize = 48;

struct Built {
    hash: Hash,
    node: Option<Node>,
}

fn file_totals(node: &Option<Node>) -> Option<(u64, u64)> {
    match node {
        Some(Node::FileLeaf(e)) => Some((
            e.iter()
                .map(|c| u64::from(c.len))
                .fold(0u64, u64::saturating_add),
            e.len() as u64,
        )),
        Some(Node::FileInterior { children, .. }) => Some((
            children
                .iter()
                .map(|c| c.bytes)
                .fold(0u64, u64::saturating_add),
            children
                .iter()
                .map(|c| c.chunks)
                .fold(0u64, u64::saturating_add),
        )),
        _ => None,
    }
}

fn last_key(node: &Option<Node>) -> Option<String> {
    match node {
        Some(Node::PathLeaf(e)) => e.last().map(|(k, _)| k.clone()),
        Some(Node::PathInterior { children, .. }) => children.last().map(|c| c.last_key.clone()),
        _ => None,
    }
}

fn value(b: &mut Bytes) -> PathValue {
    let kind = match b.u8() % 3 {
        0 => EntryKind::File,
        1 => EntryKind::Dir,
        _ => EntryKind::Symlink,
    };
    let forged = b.u8();
    let mut v = PathValue {
        kind,
        root: Hash::ZERO,
        size: 0,
        mode: u32::from(b.u16()) & 0o7777,
    };
    if kind != EntryKind::Dir || forged & 1 == 1 {
        v.root = Hash([b.u8(); 32]);
        v.size = u64::from(b.u16());
    }
    if forged & 2 == 2 {
        v.mode = b.u32();
    }
    v
}

fn build_store(b: &mut Bytes) -> (MemNodeStore, Vec<Built>) {
    let mut store = MemNodeStore::new();
    let mut built: Vec<Built> = Vec::new();
    let pick = |b: &mut Bytes, built: &Vec<Built>| -> Option<usize> {
        (!built.is_empty()).then(|| usize::from(b.u8()) % built.len())
    };
    while !b.is_empty() && built.len() < MAX_NODES {
        let node = match b.u8() % 8 {
            // File leaf: chunk hashes from two input bytes (so chunks repeat;
            // the first byte decides boundaries), lengths from the input.
            0 => {
                let n = usize::from(b.u8()) % 9;
                let entries = (0..n)
                    .map(|_| {
                        let mut h = [0u8; 32];
                        h[0] = b.u8();
                        h[1] = b.u8();
                        let len = match b.u8() % 4 {
                            0 => 0,
                            1 => u32::MAX,
                            _ => u32::from(b.u16()),
                        };
                        ChunkEntry { hash: Hash(h), len }
                    })
                    .collect();
                Some(Node::FileLeaf(entries))
            }
            // File interior: children by index, totals honest or forged,
            // some repeated up to the fanout cap.
            1 | 2 => {
                let level = b.u8() % 6;
                let n = 1 + usize::from(b.u8()) % 8;
                let mut children = Vec::new();
                for _ in 0..n {
                    let Some(i) = pick(b, &built) else { break };
                    let mode = b.u8();
                    let (bytes, chunks) = if mode & 3 == 0 {
                        (b.u64(), b.u64())
                    } else {
                        file_totals(&built[i].node).unwrap_or((1, 1))
                    };
                    let repeat = if mode & 0x30 == 0x30 {
                        1 + usize::from(b.u8())
                    } else {
                        1
                    };
                    for _ in 0..repeat {
                        if children.len() < 256 {
                            children.push(FileChild {
                                hash: built[i].hash,
                                bytes,
                                chunks,
                            });
                        }
                    }
                }
                Some(Node::FileInterior { level, children })
            }
            // Path leaf: keys over a tiny alphabet, sorted or not.
            3 => {
                let n = usize::from(b.u8()) % 7;
                let sort = b.bool();
                let mut entries: Vec<(String, PathValue)> =
                    (0..n).map(|_| (b.key(), value(b))).collect();
                if sort {
                    entries.sort_by(|x, y| x.0.cmp(&y.0));
                    entries.dedup_by(|x, y| x.0 == y.0);
                }
                Some(Node::PathLeaf(entries))
            }
            // Path interior: children by index, last keys honest or forged.
            4 => {
                let level = b.u8() % 6;
                let n = 1 + usize::from(b.u8()) % 6;
                let mut children = Vec::new();
                for _ in 0..n {
                    let Some(i) = pick(b, &built) else { break };
                    let last_key = if b.bool() {
                        b.key()
                    } else {
                        last_key(&built[i].node).unwrap_or_default()
                    };
                    children.push(PathChild {
                        last_key,
                        hash: built[i].hash,
                    });
                }
                Some(Node::PathInterior { level, children })
            }
            // Raw bytes, or an earlier node's bytes with one byte changed,
            // stored under their own hash when they have one.
            5 => {
                let mut bytes = b.short(200).to_vec();
                if let (Some(i), true) = (pick(b, &built), b.bool()) {
                    if let Some(orig) = store.get_node(&built[i].hash) {
                        bytes = orig;
                        if !bytes.is_empty() {
                            let at = usize::from(b.u16()) % bytes.len();
                            bytes[at] ^= b.u8() | 1;
                        }
                    }
                }
                if let Ok(h) = node_hash(&bytes) {
                    store.put_node(h, bytes);
                    built.push(Built {
                        hash: h,
                        node: Node::decode(store.get_node(&h).as_deref().unwrap_or(&[])).ok(),
                    });
                }
                None
            }
            // A damaged store: node i's bytes under node j's name.
            6 => {
                if let (Some(i), Some(j)) = (pick(b, &built), pick(b, &built)) {
                    if let Some(bytes) = store.get_node(&built[i].hash) {
                        store.put_node(built[j].hash, bytes);
                    }
                }
                None
            }
            // A lost node.
            _ => {
                if let Some(i) = pick(b, &built) {
                    store.remove_node(&built[i].hash);
                }
                None
            }
        };
        if let Some(node) = node {
            let (h, bytes) = node.seal();
            store.put_node(h, bytes);
            built.push(Built {
                hash: h,
                node: Some(node),
            });
        }
    }
    (store, built)
}

/// The first offset of each chunk of `list` (in file order).
fn first_offsets(list: &[ChunkEntry]) -> HashMap<Hash, (u64, u32)> {
    let mut out = HashMap::new();
    let mut offset = 0u64;
    for c in list {
        out.entry(c.hash).or_insert((offset, c.len));
        offset = offset.saturating_add(u64::from(c.len));
    }
    out
}

fn check_file_walks(store: &MemNodeStore, built: &[Built], b: &mut Bytes) {
    let root = built[usize::from(b.u8()) % built.len()].hash;
    let expanded = chunks(store, root);
    if let Ok(list) = &expanded {
        assert!(list.len() as u64 <= MAX_EXPANDED_CHUNKS);
        let claimed = file_totals(&Node::decode(&store.get_node(&root).unwrap_or_default()).ok());
        let bytes = list.iter().map(|c| u64::from(c.len)).sum::<u64>();
        assert_eq!(
            claimed,
            Some((bytes, list.len() as u64)),
            "totals differ from the walk"
        );
        let tree = FileTree { root, size: bytes };
        assert_eq!(tree.chunks(store).as_ref(), Ok(list));
        let off = FileTree {
            root,
            size: bytes.wrapping_add(1),
        };
        assert!(off.chunks(store).is_err());
    }

    // The local side holds some of the nodes and some of the chunks.
    let node_mask = b.u8();
    let chunk_mask = b.u8();
    let mut local = MemNodeStore::new();
    for (i, n) in built.iter().enumerate() {
        if (node_mask >> (i % 8)) & 1 == 1 {
            if let Some(bytes) = store.get_node(&n.hash) {
                local.put_node(n.hash, bytes);
            }
        }
    }
    let has_chunk = |h: &Hash| (chunk_mask >> (h.0[1] % 8)) & 1 == 1;
    let fetch = |hashes: &[Hash]| -> Result<Vec<Vec<u8>>, ()> {
        Ok(hashes
            .iter()
            .map(|h| store.get_node(h).unwrap_or_default())
            .collect())
    };
    let diffed = diff(&local, has_chunk, root, fetch);
    match (&expanded, &diffed) {
        (Ok(list), Ok(d)) => {
            let want = first_offsets(list);
            let mut seen = HashMap::new();
            for m in &d.missing {
                assert!(!has_chunk(&m.hash));
                assert!(seen.insert(m.hash, ()).is_none(), "a chunk reported twice");
                assert_eq!(want.get(&m.hash), Some(&(m.offset, m.len)), "wrong offset");
            }
            let lacking = want.keys().filter(|h| !has_chunk(h)).count();
            assert_eq!(lacking, d.missing.len(), "diff and chunks disagree");
            assert_eq!(d.nodes_fetched, d.fetched.len());
            assert_eq!(d.chunks, list.len() as u64);
        }
        (Ok(_), Err(e)) => panic!("chunks succeeded, diff failed: {e:?}"),
        (Err(MerkleError::TooLarge { .. }), _) | (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => {
            // diff reads local nodes first: a damaged store entry that the
            // full walk trips on may be fetched again by diff and succeed
            // only if the local copy was the damaged one, which it is not
            // here (both read the same store), so the two must agree.
            panic!("diff succeeded where chunks failed: {e}");
        }
    }
    // A fetch that answers with other nodes' bytes never yields a result
    // that names chunks outside the tree.
    let liar = |hashes: &[Hash]| -> Result<Vec<Vec<u8>>, ()> {
        Ok(hashes
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let other = &built[(i + usize::from(node_mask)) % built.len()];
                store.get_node(&other.hash).unwrap_or_default()
            })
            .collect())
    };
    if let (Ok(list), Ok(d)) = (&expanded, diff(&MemNodeStore::new(), |_| false, root, liar)) {
        let want = first_offsets(list);
        assert!(d.missing.iter().all(|m| want.contains_key(&m.hash)));
    }
    let trusted = |h: &Hash| (node_mask & 0x80 != 0) && h.0[0] & 1 == 1;
    let _ = diff_trusting(&local, has_chunk, trusted, root, fetch);
}

fn check_path_walks(store: &MemNodeStore, built: &[Built], b: &mut Bytes) {
    let root = built[usize::from(b.u8()) % built.len()].hash;
    let probe = b.key();
    let got = PathTree::get(store, root, &probe);
    let listed = PathTree::list(store, root, "");
    let _ = PathTree::nodes(store, root);
    let prefix = b.key();
    let under = PathTree::list(store, root, &prefix);
    if let Ok(all) = &listed {
        for w in all.windows(2) {
            assert!(w[0].0 < w[1].0, "list out of order");
        }
        let map: BTreeMap<&str, &PathValue> = all.iter().map(|(k, v)| (k.as_str(), v)).collect();
        if let Ok(v) = &got {
            assert_eq!(
                v.as_ref(),
                map.get(probe.as_str()).copied(),
                "get and list disagree"
            );
        }
        if let Ok(under) = &under {
            let want: Vec<_> = all.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
            assert_eq!(under.iter().collect::<Vec<_>>(), want);
        }
    }

    // A few changes, strictly increasing.
    let mut changes: BTreeMap<String, Option<PathValue>> = BTreeMap::new();
    for _ in 0..usize::from(b.u8() % 4) {
        let k = b.key();
        let v = if b.bool() { Some(value(b)) } else { None };
        changes.insert(k, v);
    }
    let mut updated = store.clone();
    let res = PathTree::update_many(&mut updated, root, changes.clone());
    if let (Ok(new_root), Ok(all)) = (&res, &listed) {
        let mut want: BTreeMap<String, PathValue> = all.iter().cloned().collect();
        for (k, v) in &changes {
            match v {
                Some(v) => want.insert(k.clone(), *v),
                None => want.remove(k),
            };
        }
        let after = PathTree::list(&updated, *new_root, "").expect("the updated tree reads back");
        assert_eq!(after, want.clone().into_iter().collect::<Vec<_>>());
        let mut fresh = MemNodeStore::new();
        let rebuilt = PathTree::build(&mut fresh, want).expect("a build of a valid list");
        assert_eq!(
            *new_root, rebuilt,
            "incremental root differs from a fresh build"
        );
    }
}

/// Seeds: programs in the harness's format (see `build_store`) for an
/// honest two-level file tree, a chunk-count bomb and a path tree.
fn seeds() -> Vec<Vec<u8>> {
    let leaf = |entries: &[(u8, u8, u16)]| {
        let mut p = vec![0u8, entries.len() as u8];
        for (h0, h1, len) in entries {
            p.extend_from_slice(&[*h0, *h1, 2]);
            p.extend_from_slice(&len.to_le_bytes());
        }
        p
    };
    let key = |k: &str| {
        let mut p = vec![k.len() as u8];
        p.extend(
            k.bytes()
                .map(|c| b"ab/.-_".iter().position(|a| *a == c).unwrap_or(0) as u8),
        );
        p
    };
    let with_walk = |program: Vec<u8>, walk: &[u8]| {
        let mut s = (program.len() as u16).to_le_bytes().to_vec();
        s.extend_from_slice(&program);
        s.extend_from_slice(walk);
        s
    };
    let mut out = Vec::new();
    // Two leaves (the first ends at a boundary: 0x40 & 63 == 0) under an
    // honest interior node.
    let mut p = leaf(&[(0x11, 1, 100), (0x22, 2, 200), (0x40, 3, 300)]);
    p.extend(leaf(&[(0x13, 4, 5), (0x27, 1, 6)]));
    p.extend_from_slice(&[1, 1, 1, 0, 1, 1, 1]);
    out.push(with_walk(p.clone(), &[2, 0x05, 0x0f, 0]));
    // The same leaf repeated under two levels of 256-way interior nodes.
    let mut bomb = leaf(&[(0x11, 1, 100), (0x40, 3, 300)]);
    bomb.extend_from_slice(&[1, 1, 0, 0, 0x31, 255]);
    bomb.extend_from_slice(&[1, 2, 0, 1, 0x31, 255]);
    out.push(with_walk(bomb, &[2, 0, 0, 0]));
    // A path leaf of a directory, a file in it and a symlink, sorted.
    let mut path = vec![3u8, 3, 1];
    path.extend(key("a"));
    path.extend_from_slice(&[1, 0, 0xed, 0x01]);
    path.extend(key("a/b"));
    path.extend_from_slice(&[0, 0, 0xa4, 0x01, 7, 5, 0]);
    path.extend(key("b"));
    path.extend_from_slice(&[2, 0, 0xff, 0x01, 9, 3, 0]);
    let mut walk = vec![0u8, 0, 0, 0];
    walk.extend(key("a/b"));
    walk.extend(key("a/"));
    walk.push(2);
    walk.extend(key("a/a"));
    walk.extend_from_slice(&[1, 0, 0, 0xa4, 0x01, 3, 1, 0]);
    walk.extend(key("b"));
    walk.push(0);
    out.push(with_walk(path, &walk));
    out.push(p);
    out
}

libfuzzer_sys::fuzz_target!(init: filesyncd_fuzz::write_seeds_if_asked(seeds), |data: &[u8]| {
    let mut b = Bytes::new(data);
    let program_len = usize::from(b.u16());
    let mut program = Bytes::new(b.take(program_len));
    let (store, built) = build_store(&mut program);
    if built.is_empty() {
        return;
    }
    check_file_walks(&store, &built, &mut b);
    check_path_walks(&store, &built, &mut b);
});
