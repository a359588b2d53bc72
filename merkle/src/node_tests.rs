use super::*;
use crate::shape::TEST_SHAPE;
use proptest::prelude::*;

fn h(i: u8) -> Hash {
    // Hashes whose low byte is odd are never boundaries (mask 63 needs low bits 0).
    let mut b = [i; 32];
    b[0] = 1;
    Hash(b)
}

fn file_leaf(n: usize) -> Node {
    Node::FileLeaf(
        (0..n)
            .map(|i| ChunkEntry {
                hash: h(i as u8),
                len: 100 + i as u32,
            })
            .collect(),
    )
}

fn path_leaf() -> Node {
    Node::PathLeaf(vec![
        ("a".into(), PathValue::dir(0o755)),
        ("a/b".into(), PathValue::file(h(1), 10, 0o644)),
        ("c".into(), PathValue::symlink(b"a/b", 0o777)),
    ])
}

fn samples() -> Vec<Node> {
    vec![
        Node::FileLeaf(vec![]),
        file_leaf(3),
        Node::FileInterior {
            level: 2,
            children: vec![
                FileChild {
                    hash: h(1),
                    bytes: 10,
                    chunks: 2,
                },
                FileChild {
                    hash: h(2),
                    bytes: 7,
                    chunks: 7,
                },
            ],
        },
        Node::PathLeaf(vec![]),
        path_leaf(),
        Node::PathInterior {
            level: 1,
            children: vec![PathChild {
                last_key: "z".into(),
                hash: h(3),
            }],
        },
    ]
}

#[test]
fn roundtrip_and_layout() {
    for n in samples() {
        let bytes = n.encode();
        assert_eq!(bytes[0], NODE_VERSION);
        assert_eq!(bytes[1], n.kind() as u8);
        assert_eq!(bytes[2], n.level());
        assert_eq!(u16::from_le_bytes([bytes[3], bytes[4]]) as usize, n.len());
        assert_eq!(Node::decode(&bytes).unwrap(), n);
        let (hash, sealed) = n.seal();
        assert_eq!(sealed, bytes);
        assert_eq!(decode_verified(&hash, &bytes).unwrap(), n);
    }
    assert_eq!(file_leaf(3).encode().len(), 5 + 3 * 36);
}

#[test]
fn domain_separation() {
    let leaf = file_leaf(2).encode();
    let plain = Hash::of_chunk(&leaf);
    let as_leaf = node_hash(&leaf).unwrap();
    assert_ne!(
        as_leaf, plain,
        "node hash differs from chunk hash of same bytes"
    );
    let mut k = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    k.update(&leaf);
    assert_eq!(as_leaf, Hash::from(k.finalize()));
    let mut i = blake3::Hasher::new_derive_key(INTERIOR_CONTEXT);
    i.update(&leaf);
    assert_ne!(as_leaf, Hash::from(i.finalize()));
    // The empty file leaf and the empty path leaf are different nodes.
    assert_ne!(Node::FileLeaf(vec![]).hash(), Node::PathLeaf(vec![]).hash());
}

#[test]
fn rejects_malformed() {
    let good = file_leaf(2).encode();
    let mut bad_version = good.clone();
    bad_version[0] = 2;
    assert_eq!(
        Node::decode(&bad_version),
        Err(MerkleError::UnsupportedVersion(2))
    );
    let mut bad_kind = good.clone();
    bad_kind[1] = 9;
    assert!(Node::decode(&bad_kind).is_err());
    let mut bad_level = good.clone();
    bad_level[2] = 1;
    assert!(Node::decode(&bad_level).is_err());
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(Node::decode(&trailing).is_err());
    assert!(Node::decode(&good[..good.len() - 1]).is_err());
    assert!(Node::decode(&[]).is_err());
    let mut zero_len = good.clone();
    zero_len[5 + 32..5 + 36].copy_from_slice(&0u32.to_le_bytes());
    assert!(Node::decode(&zero_len).is_err());
    let mut huge = vec![1, 0, 0];
    huge.extend_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(
        Node::decode(&huge),
        Err(MerkleError::TooLarge { .. })
    ));
    assert!(matches!(
        Node::decode(&vec![0u8; MAX_NODE_BYTES + 1]),
        Err(MerkleError::TooLarge { .. })
    ));
    let empty_interior = [1, 1, 1, 0, 0];
    assert!(Node::decode(&empty_interior).is_err());
    // Hash mismatch.
    let other = file_leaf(1).hash();
    assert!(matches!(
        decode_verified(&other, &good),
        Err(MerkleError::HashMismatch { .. })
    ));
}

#[test]
fn rejects_bad_children_and_keys() {
    let child = |bytes, chunks| Node::FileInterior {
        level: 1,
        children: vec![FileChild {
            hash: h(1),
            bytes,
            chunks,
        }],
    };
    assert!(Node::decode(&child(5, 0).encode()).is_err());
    assert!(Node::decode(&child(1, 2).encode()).is_err());
    assert!(Node::decode(&child(u64::from(u32::MAX) + 1, 1).encode()).is_err());
    let overflow = Node::FileInterior {
        level: 1,
        children: vec![
            FileChild {
                hash: h(1),
                bytes: u64::MAX - 1,
                chunks: u64::MAX / 2,
            },
            FileChild {
                hash: h(2),
                bytes: u64::MAX - 1,
                chunks: u64::MAX / 2,
            },
        ],
    };
    assert!(Node::decode(&overflow.encode()).is_err());

    let leaf = |keys: &[&str]| {
        Node::PathLeaf(
            keys.iter()
                .map(|k| (k.to_string(), PathValue::dir(0o755)))
                .collect(),
        )
        .encode()
    };
    assert!(Node::decode(&leaf(&["a", "b"])).is_ok());
    assert!(Node::decode(&leaf(&["b", "a"])).is_err(), "unsorted");
    assert!(Node::decode(&leaf(&["a", "a"])).is_err(), "duplicate");
    assert!(Node::decode(&leaf(&["../etc"])).is_err(), "dot-dot");
    assert!(Node::decode(&leaf(&["/abs"])).is_err(), "absolute");
    let mut bad_utf8 = leaf(&["ab"]);
    bad_utf8[7] = 0xff;
    assert!(Node::decode(&bad_utf8).is_err());
    let mut bad_value = path_leaf();
    if let Node::PathLeaf(e) = &mut bad_value {
        e[0].1.size = 1; // a dir with a size
    }
    assert!(Node::decode(&bad_value.encode()).is_err());
}

#[test]
fn rejects_boundary_inside_node() {
    let boundary = Hash([0u8; 32]); // low bits zero: a content-defined cut
    let entry = |hash| ChunkEntry { hash, len: 1 };
    // A cut after the second entry is allowed only if it is the last entry.
    let ok = Node::FileLeaf(vec![entry(h(1)), entry(boundary)]);
    assert!(Node::decode(&ok.encode()).is_ok());
    let bad = Node::FileLeaf(vec![entry(h(1)), entry(boundary), entry(h(2))]);
    assert!(Node::decode(&bad.encode()).is_err());
    // Before MIN_FANOUT a boundary hash is not a cut.
    let first = Node::FileLeaf(vec![entry(boundary), entry(h(2))]);
    assert!(Node::decode(&first.encode()).is_ok());
    // More than the test shape's cap.
    assert!(decode_with(&file_leaf(9).encode(), TEST_SHAPE).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(node) = Node::decode(&bytes) {
            prop_assert_eq!(node.encode(), bytes);
        }
    }

    #[test]
    fn arbitrary_header_then_bytes(kind in 0u8..5, level in 0u8..3, count in 0u16..6,
                                   rest in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut bytes = vec![1, kind, level];
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&rest);
        if let Ok(node) = Node::decode(&bytes) {
            prop_assert_eq!(node.encode(), bytes);
        }
    }

    /// Any single-byte change to a valid node is rejected or yields another
    /// node whose encoding is exactly the changed bytes (one encoding per node).
    #[test]
    fn mutations_are_canonical_or_rejected(which in 0usize..6, pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = samples()[which].encode();
        let p = pos % bytes.len();
        bytes[p] = byte;
        if let Ok(node) = Node::decode(&bytes) {
            prop_assert_eq!(node.encode(), bytes);
        }
    }

    #[test]
    fn file_leaves_roundtrip(raw in proptest::collection::vec((any::<[u8; 32]>(), 1u32..), 0..300)) {
        let mut entries = Vec::new();
        for (hash, len) in raw {
            let e = ChunkEntry { hash: Hash(hash), len };
            entries.push(e);
            if Shape::V1.is_cut(entries.len(), e.hash.low_u64()) {
                break;
            }
        }
        let node = Node::FileLeaf(entries);
        let (hash, bytes) = node.seal();
        prop_assert_eq!(decode_verified(&hash, &bytes)?, node);
    }
}
