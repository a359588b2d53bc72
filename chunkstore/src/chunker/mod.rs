//! Content-defined chunking: where a file splits, and the chunk+hash pipeline.
//!
//! (Spec being written.)

mod error;
mod params;
mod pipeline;
mod poly;
mod rabin;
mod reader;

pub use error::{PipelineError, ReadError};
pub use params::{ChunkerError, ChunkerParams, DEFAULT_POLYNOMIAL};
pub use pipeline::{
    chunk_and_hash, chunk_and_hash_with, chunk_file, chunk_file_with, chunk_files, FileChunks,
};
pub use rabin::Chunker;
pub use reader::{Chunk, ChunkReader};

#[cfg(test)]
mod tests;
