//! Errors of the chunking operations (parameter errors are in `params.rs`).

use std::path::PathBuf;

/// Reading the bytes to chunk failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read failed at stream offset {offset}: {source}")]
    Io { offset: u64, source: std::io::Error },
    #[error("the fingerprinting thread panicked")]
    WorkerPanicked,
}

/// The chunk+hash pipeline failed: either reading, or the caller's sink.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E> {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("chunk sink failed: {0}")]
    Sink(#[source] E),
}
