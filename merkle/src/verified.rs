//! [`Verified`]: chunk bytes this process hashed, as a type.
//!
//! The only way to make one is [`Verified::check`], which hashes the bytes
//! and compares. Code that receives a `Verified` (the p2p fetch hands them
//! out, the writers of a peer take them) knows the bytes are the chunk
//! without hashing them again: a chunk is hashed once on a node, where it
//! entered it.

use crate::Hash;

/// Chunk bytes known to hash to [`Verified::hash`].
#[derive(Clone, PartialEq, Eq)]
pub struct Verified {
    hash: Hash,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("hash", &self.hash)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Verified {
    /// `bytes` as the chunk `hash`, if they hash to it (else they come
    /// back).
    pub fn check(hash: Hash, bytes: Vec<u8>) -> Result<Verified, Vec<u8>> {
        if Hash::of_chunk(&bytes) == hash {
            Ok(Verified { hash, bytes })
        } else {
            Err(bytes)
        }
    }

    /// The chunk of `bytes`, named by their hash.
    pub fn of(bytes: Vec<u8>) -> Verified {
        Verified {
            hash: Hash::of_chunk(&bytes),
            bytes,
        }
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes, for a consumer that needs them owned (no copy).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The hash and the bytes, for a consumer that needs them owned (no
    /// copy). There is no way back without [`Verified::check`].
    pub fn into_parts(self) -> (Hash, Vec<u8>) {
        (self.hash, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_that_hash_to_the_name_are_verified() {
        let b = b"chunk".to_vec();
        let h = Hash::of_chunk(&b);
        let v = Verified::check(h, b.clone()).expect("matches");
        assert_eq!((v.hash(), v.bytes()), (h, &b[..]));
        assert_eq!(Verified::of(b.clone()), v);
        assert_eq!(v.clone().into_parts(), (h, b.clone()));
        assert_eq!(v.into_bytes(), b);
        assert_eq!(Verified::check(Hash([1; 32]), b.clone()), Err(b));
    }
}
