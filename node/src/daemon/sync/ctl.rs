//! The control messages the sync service exchanges over the p2p `ctl`
//! protocol (request-response, members only, 1 MiB cap each way).
//!
//! | request | who sends it | answer |
//! |---|---|---|
//! | `GetNodes { hashes }` (≤ [`MAX_HASHES`]) | a node pulling a file tree | the encoded tree nodes held, up to [`MAX_NODES_BYTES`]; the asker verifies each against its hash |
//! | `Offer { items }` (≤ [`MAX_HASHES`]) | the origin of a local change, before proposing it | per item: `Pending` (pulling), `Durable` (every chunk fsynced here), `Failed` |
//!
//! Messages are postcard, inside a version enum: an unknown version or a
//! malformed message is answered with `Error` and changes nothing.

use filesyncd_merkle::Hash;
use serde::{Deserialize, Serialize};

/// Most hashes or items in one request.
pub const MAX_HASHES: usize = 256;
/// Most node bytes in one `Nodes` answer (under the 1 MiB message cap).
pub const MAX_NODES_BYTES: usize = 900 * 1024;

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
}

pub fn encode_request(r: &CtlRequest) -> Vec<u8> {
    postcard::to_allocvec(&Versioned::V1(r)).unwrap_or_default()
}

pub fn decode_request(b: &[u8]) -> Result<CtlRequest, CtlError> {
    let Versioned::V1(r): Versioned<CtlRequest> = postcard::from_bytes(b)?;
    let n = match &r {
        CtlRequest::GetNodes { hashes } => hashes.len(),
        CtlRequest::Offer { items } => items.len(),
    };
    if n > MAX_HASHES {
        return Err(CtlError::TooMany(n));
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
    fn responses_round_trip() {
        let r = CtlResponse::Offer(vec![
            OfferState::Pending,
            OfferState::Durable,
            OfferState::Failed("x".into()),
        ]);
        assert_eq!(decode_response(&encode_response(&r)).unwrap(), r);
    }
}
