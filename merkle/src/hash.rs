//! The 32-byte blake3 digest that names every chunk and every tree node.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A blake3 digest. Chunks are named by `blake3(bytes)`; tree nodes by a
/// domain-separated keyed hash (see `node.rs`), so a chunk can never be
/// confused with a node that happens to have the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// The hash of a chunk's bytes: plain blake3.
    pub fn of_chunk(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Hash, HashParseError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| HashParseError)?;
        Ok(Hash(out))
    }

    /// The first 8 bytes as a little-endian integer: used to pick
    /// content-defined boundaries (digests are uniform, so low bits are too).
    pub fn low_u64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("32 >= 8"))
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a hash is 64 hexadecimal digits")]
pub struct HashParseError;

/// One chunk of a file, in file order: its hash and its length in bytes.
/// The leaves of a file's Merkle tree are these, so a tree knows sizes and
/// offsets without the chunk bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub hash: Hash,
    pub len: u32,
}
