//! Content-defined Merkle trees for filesyncd.

mod error;
mod hash;
pub mod node;
pub mod path_tree;
mod path_update;
pub mod path_value;
pub mod shape;

pub use error::MerkleError;
pub use hash::{ChunkEntry, Hash, HashParseError};
pub use node::{decode_verified, node_hash, FileChild, Node, NodeKind, PathChild};
pub use path_value::{validate_path, EntryKind, PathValue};
pub mod file_tree;
pub mod store;
pub use file_tree::{build, chunks, BuiltTree, FileTree, FileTreeBuilder};
pub use store::{read_node, MemNodeStore, NodeSource, NodeStore};
pub mod diff;
pub use diff::{diff, diff_trusting, DiffError, DiffResult, MissingChunk};
pub use path_tree::PathTree;
