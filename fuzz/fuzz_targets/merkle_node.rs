//! Merkle node bytes as a peer sends them (ctl `Nodes` answers, inline
//! offers): `Node::decode`, `node_hash`, `decode_verified` and a read
//! through a node store. Decoding must never panic, must accept only the
//! one canonical encoding of a node (re-encoding gives the same bytes) and
//! must refuse bytes presented under any other hash.
#![no_main]

use filesyncd_merkle::{
    decode_verified, node_hash, read_node, Hash, MemNodeStore, Node, NodeStore,
};

/// Seeds: every node of a 300-chunk file tree and of a 300-path tree.
fn seeds() -> Vec<Vec<u8>> {
    use filesyncd_merkle::{build, ChunkEntry, NodeSource, PathTree, PathValue};
    let entries: Vec<ChunkEntry> = (0..300u32)
        .map(|i| ChunkEntry {
            hash: Hash::of_chunk(&i.to_le_bytes()),
            len: 1000 + i,
        })
        .collect();
    let mut out: Vec<Vec<u8>> = build(&entries).nodes.into_iter().map(|(_, b)| b).collect();
    out.push(build(&entries[..3]).nodes[0].1.clone());
    let mut store = MemNodeStore::new();
    let mut paths: Vec<(String, PathValue)> = (0..300u32)
        .map(|i| {
            (
                format!("dir{}/file-{i}.txt", i % 7),
                PathValue::file(Hash([i as u8; 32]), u64::from(i), 0o644),
            )
        })
        .collect();
    paths.push(("dir0".into(), PathValue::dir(0o755)));
    paths.push(("link".into(), PathValue::symlink(b"dir0", 0o777)));
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    PathTree::build(&mut store, paths).expect("a valid path list");
    let hashes: Vec<Hash> = store.hashes().copied().collect();
    out.extend(hashes.iter().filter_map(|h| store.get_node(h)));
    out
}

libfuzzer_sys::fuzz_target!(init: filesyncd_fuzz::write_seeds_if_asked(seeds), |data: &[u8]| {
    let decoded = Node::decode(data);
    if let Ok(node) = &decoded {
        assert_eq!(node.encode(), data, "a non-canonical encoding was accepted");
        let (h, bytes) = node.seal();
        assert_eq!(bytes, data);
        assert_eq!(decode_verified(&h, data).as_ref(), Ok(node));
    }
    match node_hash(data) {
        Ok(h) => {
            // Verified decoding is plain decoding under the right name...
            assert_eq!(decode_verified(&h, data), decoded);
            let mut store = MemNodeStore::new();
            store.put_node(h, data.to_vec());
            assert_eq!(read_node(&store, &h), decoded);
            // ...and nothing under any other name.
            let mut wrong = h;
            wrong.0[31] ^= 0x80;
            assert!(decode_verified(&wrong, data).is_err());
            assert!(read_node(&store, &wrong).is_err());
        }
        Err(_) => {
            assert!(decoded.is_err(), "decoded bytes that have no node hash");
            assert!(decode_verified(&Hash::ZERO, data).is_err());
        }
    }
});
