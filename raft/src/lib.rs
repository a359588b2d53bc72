//! Raft-replicated file index for filesyncd (openraft 0.9, storage-v2, redb).

pub mod command;
pub mod config;
pub mod network;
pub mod transport;
pub mod types;

pub use types::{NodeId, NodeInfo, TypeConfig};
