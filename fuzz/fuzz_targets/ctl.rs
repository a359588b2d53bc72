//! `/filesyncd/ctl/1` messages between members (`node::daemon::sync::ctl`):
//! `decode_request` with its bounds (items, inline content per item and in
//! all) and `decode_response`, then what the receiver does first with what
//! it decoded: `GetNodes` answered from a node store (`offer::get_nodes`,
//! bounded by `MAX_NODES_BYTES`), the tree nodes of a `Nodes` answer and of
//! `OfferInline` items verified against the hash they are named by.
//!
//! No panic; a decoded message is within its bounds and re-encodes to a
//! message that decodes to it.
#![no_main]

use std::sync::Mutex;

use filesyncd::daemon::sync::ctl::{
    decode_request, decode_response, encode_request, encode_response, CtlRequest, CtlResponse,
    INLINE_MAX, INLINE_REQUEST_BYTES, MAX_HASHES, MAX_NODES_BYTES,
};
use filesyncd::daemon::sync::offer::get_nodes;
use filesyncd_merkle::{build, decode_verified, ChunkEntry, Hash, MemNodeStore, Node};

/// A node store holding a few trees, so `GetNodes` finds something.
fn store() -> Mutex<MemNodeStore> {
    let mut s = MemNodeStore::new();
    for n in [1usize, 70, 300] {
        let entries: Vec<ChunkEntry> = (0..n)
            .map(|i| ChunkEntry {
                hash: Hash::of_chunk(&i.to_le_bytes()),
                len: 1 + i as u32,
            })
            .collect();
        build(&entries).store_into(&mut s);
    }
    Mutex::new(s)
}

/// Seeds: every ctl request and answer, with real tree nodes and a real
/// inline item.
fn seeds() -> Vec<Vec<u8>> {
    use filesyncd::daemon::sync::ctl::{InlineItem, OfferItem, OfferState};
    use filesyncd_merkle::NodeSource;
    let store = store();
    let store = store.lock().unwrap();
    let hashes: Vec<Hash> = store.hashes().copied().collect();
    let nodes: Vec<(Hash, Vec<u8>)> = hashes
        .iter()
        .filter_map(|h| Some((*h, store.get_node(h)?)))
        .collect();
    let content = b"a small file, sent inline with its offer\n".repeat(3);
    let tree = build(&[ChunkEntry {
        hash: Hash::of_chunk(&content),
        len: content.len() as u32,
    }]);
    let inline = InlineItem {
        root: tree.root,
        size: tree.size,
        node: tree.nodes[0].1.clone(),
        content,
    };
    vec![
        encode_request(&CtlRequest::GetNodes {
            hashes: hashes.clone(),
        }),
        encode_request(&CtlRequest::Offer {
            items: vec![
                OfferItem {
                    root: tree.root,
                    size: tree.size,
                },
                inline.item(),
            ],
        }),
        encode_request(&CtlRequest::OfferInline {
            items: vec![inline.clone(), inline],
        }),
        encode_response(&CtlResponse::Nodes(nodes)),
        encode_response(&CtlResponse::Offer(vec![
            OfferState::Pending,
            OfferState::Durable,
            OfferState::Failed("no space".into()),
        ])),
        encode_response(&CtlResponse::Error(
            "offer from a peer outside the membership".into(),
        )),
    ]
}

libfuzzer_sys::fuzz_target!(init: filesyncd_fuzz::write_seeds_if_asked(seeds), |data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        assert_eq!(decode_request(&encode_request(&req)).ok().as_ref(), Some(&req));
        match &req {
            CtlRequest::GetNodes { hashes } => {
                assert!(hashes.len() <= MAX_HASHES);
                let store = store();
                let answer = get_nodes(&store, hashes);
                let bytes: usize = answer.iter().map(|(_, b)| b.len() + 40).sum();
                assert!(bytes <= MAX_NODES_BYTES);
                for (h, b) in &answer {
                    assert!(hashes.contains(h));
                    assert!(decode_verified(h, b).is_ok());
                }
            }
            CtlRequest::Offer { items } => assert!(items.len() <= MAX_HASHES),
            CtlRequest::OfferInline { items } => {
                assert!(items.len() <= MAX_HASHES);
                let total: usize = items.iter().map(|i| i.content.len()).sum();
                assert!(total <= INLINE_REQUEST_BYTES);
                for item in items {
                    assert!(item.content.len() as u64 <= INLINE_MAX);
                    if let Ok(Node::FileLeaf(entries)) = decode_verified(&item.root, &item.node) {
                        let sum: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
                        let _ = sum == item.size;
                    }
                }
            }
        }
    }
    if let Ok(res) = decode_response(data) {
        assert_eq!(decode_response(&encode_response(&res)).ok().as_ref(), Some(&res));
        if let CtlResponse::Nodes(nodes) = &res {
            for (h, b) in nodes {
                let _ = decode_verified(h, b);
            }
        }
    }
});
