//! The control messages the sync service exchanges over the p2p `ctl`
//! protocol (request-response, members only, 1 MiB cap each way).
//!
//! | request | who sends it | answer |
//! |---|---|---|
//! | `GetNodes { hashes }` (≤ [`MAX_HASHES`]) | a node pulling a file tree | the encoded tree nodes held, up to [`MAX_NODES_BYTES`]; the asker verifies each against its hash |
//! | `Offer { items }` (≤ [`MAX_HASHES`]) | the origin of a local change, before proposing it | per item: `Pending` (pulling), `Durable` (every chunk fsynced here), `Failed` |
//! | `OfferInline { items }` (≤ [`MAX_HASHES`], content ≤ [`INLINE_MAX`] each, ≤ [`INLINE_REQUEST_BYTES`] in all) | the origin, for small files: the version's one tree node and its bytes travel with the offer | per item, once the peer verified and stored it: `Durable` or `Failed` (never `Pending`) |
//!
//! Messages are postcard, inside a version enum: an unknown version or a
//! malformed message is answered with `Error` and changes nothing.

use filesyncd_merkle::Hash;
use serde::{Deserialize, Serialize};

/// Most hashes or items in one request.
pub const MAX_HASHES: usize = 256;
/// Most node bytes in one `Nodes` answer (under the 1 MiB message cap).
pub const MAX_NODES_BYTES: usize = 900 * 1024;

/// Largest file whose content travels inside the offer ([`InlineItem`]):
/// below it a peer stores the version in the same round trip as the offer
/// (no tree-node fetch, no chunk stream).
pub const INLINE_MAX: u64 = 64 * 1024;
/// Most content bytes in one `OfferInline` (under the 1 MiB message cap,
/// with room for the nodes and the framing).
pub const INLINE_REQUEST_BYTES: usize = 640 * 1024;

/// A small file's version offered with its content: `node` is the encoded
/// leaf of its file tree (its hash is `root`), `content` the file's bytes.
/// The peer checks both against `root` before storing anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineItem {
    pub root: Hash,
    pub size: u64,
    pub node: Vec<u8>,
    pub content: Vec<u8>,
}

impl InlineItem {
    pub fn item(&self) -> OfferItem {
        OfferItem {
            root: self.root,
            size: self.size,
        }
    }
}

/// One version of a file offered to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OfferItem {
    pub root: Hash,
    pub size: u64,
}

/// Where a peer is with an offered version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferState {
    Pending,
    /// Every chunk is durable on the peer.
    Durable,
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlRequest {
    GetNodes { hashes: Vec<Hash> },
    Offer { items: Vec<OfferItem> },
    OfferInline { items: Vec<InlineItem> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlResponse {
    Nodes(Vec<(Hash, Vec<u8>)>),
    Offer(Vec<OfferState>),
    Error(String),
}

#[derive(Serialize, Deserialize)]
enum Versioned<T> {
    V1(T),
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("malformed control message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("control message lists {0} items, more than {MAX_HASHES}")]
    TooMany(usize),
    #[error("inline offer carries {0} content bytes, more than allowed")]
    TooLarge(usize),
}

pub fn encode_request(r: &CtlRequest) -> Vec<u8> {
    postcard::to_allocvec(&Versioned::V1(r)).unwrap_or_default()
}

pub fn decode_request(b: &[u8]) -> Result<CtlRequest, CtlError> {
    let Versioned::V1(r): Versioned<CtlRequest> = postcard::from_bytes(b)?;
    let n = match &r {
        CtlRequest::GetNodes { hashes } => hashes.len(),
        CtlRequest::Offer { items } => items.len(),
        CtlRequest::OfferInline { items } => items.len(),
    };
    if n > MAX_HASHES {
        return Err(CtlError::TooMany(n));
    }
    if let CtlRequest::OfferInline { items } = &r {
        let total: usize = items.iter().map(|i| i.content.len()).sum();
        let big = items
            .iter()
            .map(|i| i.content.len())
            .find(|n| *n as u64 > INLINE_MAX);
        if let Some(n) = big {
            return Err(CtlError::TooLarge(n));
        }
        if total > INLINE_REQUEST_BYTES {
            return Err(CtlError::TooLarge(total));
        }
    }
    Ok(r)
}

pub fn encode_response(r: &CtlResponse) -> Vec<u8> {
    postcard::to_allocvec(&Versioned::V1(r)).unwrap_or_default()
}

pub fn decode_response(b: &[u8]) -> Result<CtlResponse, CtlError> {
    let Versioned::V1(r): Versioned<CtlResponse> = postcard::from_bytes(b)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>().prop_map(Hash)
    }

    fn request() -> impl Strategy<Value = CtlRequest> {
        prop_oneof![
            prop::collection::vec(hash(), 0..20).prop_map(|hashes| CtlRequest::GetNodes { hashes }),
            prop::collection::vec(
                (hash(), any::<u64>()).prop_map(|(root, size)| OfferItem { root, size }),
                0..20
            )
            .prop_map(|items| CtlRequest::Offer { items }),
            prop::collection::vec(
                (
                    hash(),
                    any::<u64>(),
                    prop::collection::vec(any::<u8>(), 0..64),
                    prop::collection::vec(any::<u8>(), 0..256)
                )
                    .prop_map(|(root, size, node, content)| InlineItem {
                        root,
                        size,
                        node,
                        content
                    }),
                0..8
            )
            .prop_map(|items| CtlRequest::OfferInline { items }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(r in request()) {
            prop_assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(b in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&b);
            let _ = decode_response(&b);
        }
    }

    #[test]
    fn oversized_requests_are_refused() {
        let r = CtlRequest::GetNodes {
            hashes: vec![Hash::ZERO; MAX_HASHES + 1],
        };
        assert!(matches!(
            decode_request(&encode_request(&r)),
            Err(CtlError::TooMany(_))
        ));
    }

    #[test]
    fn oversized_inline_offers_are_refused() {
        let item = |n: usize| InlineItem {
            root: Hash::ZERO,
            size: n as u64,
            node: Vec::new(),
            content: vec![7; n],
        };
        let one = CtlRequest::OfferInline {
            items: vec![item(INLINE_MAX as usize + 1)],
        };
        assert!(matches!(
            decode_request(&encode_request(&one)),
            Err(CtlError::TooLarge(_))
        ));
        let many = CtlRequest::OfferInline {
            items: vec![item(INLINE_MAX as usize); INLINE_REQUEST_BYTES / INLINE_MAX as usize + 1],
        };
        assert!(matches!(
            decode_request(&encode_request(&many)),
            Err(CtlError::TooLarge(_))
        ));
        let fits = CtlRequest::OfferInline {
            items: vec![item(INLINE_MAX as usize); INLINE_REQUEST_BYTES / INLINE_MAX as usize],
        };
        assert_eq!(decode_request(&encode_request(&fits)).unwrap(), fits);
    }

    #[test]
    fn responses_round_trip() {
        let r = CtlResponse::Offer(vec![
            OfferState::Pending,
            OfferState::Durable,
            OfferState::Failed("x".into()),
        ]);
        assert_eq!(decode_response(&encode_response(&r)).unwrap(), r);
    }
}
