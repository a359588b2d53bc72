//! Content-defined Merkle trees for filesyncd.

mod hash;

pub use hash::{ChunkEntry, Hash, HashParseError};
