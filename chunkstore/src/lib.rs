//! Content-defined chunking (Rabin) and the content-addressed chunk store.
//!
//! Two halves that share only the `merkle::Hash` type:
//! - [`chunker`]: where a file splits, and the chunk+hash pipeline.
//! - [`store`]: where a chunk's bytes live (live files or own blobs), indexed in redb.

pub mod chunker;
pub mod failpoint;
pub mod poison;
pub mod store;

pub use filesyncd_merkle::{ChunkEntry, Hash};
