//! Inline values: small chunks stored *in* the index database.
//!
//! A chunk of at most [`StoreOptions::inline_max`](super::StoreOptions)
//! bytes ([`INLINE_MAX`] by default) is not written as a blob file: its bytes
//! are the value of its hash in the `inline` table, inserted in the same
//! write transaction that records its [`Loc::Inline`] location. A
//! `put_many` of small chunks is therefore one redb commit and no file at
//! all; a read is one more B-tree lookup in the read transaction that found
//! the location, no `open`.
//!
//! # Rules
//!
//! - An inline value exists iff its chunk's entry has an inline location:
//!   both are written and removed in one transaction, so no crash can split
//!   them (unlike a blob file, nothing needs recovering at open).
//! - A chunk has at most one own copy: a blob *or* an inline value.
//! - Bounded: no value over [`INLINE_LIMIT`] is written, and a value read
//!   back is copied only if its length is the indexed one (itself at most
//!   [`INLINE_LIMIT`], checked when the location is decoded). Anything else
//!   is a corrupt copy: dropped with a warning, like a corrupt blob.
//! - Verified like every byte returned: `get` hashes the value.

use super::error::Result;
use super::redb_store::RedbChunkStore;
use crate::Hash;
use redb::{ReadableTable, TableDefinition};

/// Default largest chunk stored inline, in bytes (the threshold of
/// [`StoreOptions::inline_max`](super::StoreOptions)); larger chunks are
/// blob files. Chosen by `benches/store_inline.rs`, see the module doc of
/// `store`.
pub const INLINE_MAX: usize = 16 << 10;

/// Largest inline value any store writes or reads back (format 2): the
/// bound of `StoreOptions::inline_max`, and of every inline length decoded
/// from the index. A build that lowers [`INLINE_MAX`] still reads values up
/// to this limit.
pub const INLINE_LIMIT: usize = 64 << 10;

/// `hash → bytes` of the chunks stored inline.
pub(super) const INLINE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("inline");

/// What the `inline` table holds for a chunk whose location says
/// `Inline { len: indexed }`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InlineValue {
    /// No row (the location is stale).
    Missing,
    /// A row of another length than indexed (not copied: corrupt).
    WrongLen(u64),
    /// A row of the indexed length; `bytes` if a copy was asked for
    /// (unverified).
    Present { bytes: Option<Vec<u8>> },
}

/// Reads the inline row of `hash`, copying at most `indexed` bytes and only
/// if `copy`.
pub(super) fn read_inline(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    hash: &Hash,
    indexed: u32,
    copy: bool,
) -> Result<InlineValue> {
    let Some(guard) = table.get(hash.as_bytes())? else {
        return Ok(InlineValue::Missing);
    };
    let value = guard.value();
    if value.len() as u64 != u64::from(indexed) {
        return Ok(InlineValue::WrongLen(value.len() as u64));
    }
    Ok(InlineValue::Present {
        bytes: copy.then(|| value.to_vec()),
    })
}

impl InlineValue {
    /// Whether this row is a good copy of `hash` (right length and, when
    /// copied, the right bytes).
    pub(super) fn verifies(&self, hash: &Hash) -> bool {
        match self {
            InlineValue::Present { bytes: Some(b) } => Hash::of_chunk(b) == *hash,
            InlineValue::Present { bytes: None } => true,
            InlineValue::Missing | InlineValue::WrongLen(_) => false,
        }
    }
}

impl RedbChunkStore {
    /// Flips one byte of the chunk's inline value (tests: simulated bit
    /// rot). `Ok(false)` if the chunk has no non-empty inline value.
    #[cfg(test)]
    pub(crate) fn corrupt_inline(&self, hash: &Hash) -> Result<bool> {
        use super::locs::{decode_locs, own_loc, Loc};
        use super::redb_store::CHUNKS;
        let txn = self.write_txn()?;
        let done = {
            let chunks = txn.open_table(CHUNKS)?;
            let mut inline = txn.open_table(INLINE)?;
            let indexed = match chunks.get(hash.as_bytes())? {
                Some(g) => matches!(own_loc(&decode_locs(g.value())?), Some(Loc::Inline { .. })),
                None => false,
            };
            let bytes = match inline.get(hash.as_bytes())? {
                Some(g) if indexed => g.value().to_vec(),
                _ => Vec::new(),
            };
            if bytes.is_empty() {
                false
            } else {
                // Bit rot does not heal: an already corrupt value stays so.
                if Hash::of_chunk(&bytes) == *hash {
                    let mut rotten = bytes;
                    rotten[0] ^= 0x55;
                    inline.insert(hash.as_bytes(), rotten.as_slice())?;
                }
                true
            }
        };
        txn.commit()?;
        Ok(done)
    }
}
