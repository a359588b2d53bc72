//! Raft-replicated file index for filesyncd (openraft 0.9, storage-v2, redb).

pub mod apply;
pub mod command;
pub mod config;
pub mod history;
pub mod log_store;
pub mod network;
pub mod node;
pub mod node_id;
pub mod paths;
pub mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;

pub use types::{NodeId, NodeInfo, TypeConfig};
