//! The sync service: runs the engine ([`crate::engine`]) against Raft and
//! the p2p network.
//!
//! | file | role |
//! |---|---|
//! | `service.rs` | the sync task (owner of the engine): start-up and the loop |
//! | `parts.rs` | what is opened before the network starts (store, local index) |
//! | `root_guard.rs` | the opened root, its watcher, the check that the path still names it |
//! | `marker.rs` | the folder marker: created once, re-created by `adopt` |
//! | `publish.rs` | the status sent after every step, and the counters |
//! | `local_root.rs` | the path-tree root of the local index, updated per step |
//! | `ports.rs` | the engine's ports over Raft (`Committed`) and p2p (`ChunkFetcher`) |
//! | `schedule.rs` | when the task steps and over what; failed scopes and their retries |
//! | `offer.rs` | the acknowledgement contract over p2p: `P2pAcks` (the engine's `Acks` port), the peer side (`Offers`: pull, ack) |
//! | `ctl_service.rs` | `CtlService`: answers ctl requests from peers (nodes, offers) |
//! | `ctl.rs` | the ctl protocol messages (`GetNodes`, `Offer`, `OfferInline`) |
//! | `gc.rs` | the version store's sweep: drops chunks no retained version needs |
//! | `servable.rs` | which chunks are served to peers (no existence oracle) |
//! | `local_db.rs` | the persisted local index and tree nodes |
//! | `status.rs` | what the control API sees and can ask |

pub mod ctl;
pub mod ctl_service;
pub mod gc;
pub mod local_db;
mod local_root;
mod marker;
pub mod offer;
pub mod parts;
pub mod ports;
mod publish;
#[cfg(feature = "failpoints")]
mod rogue;
mod root_guard;
pub mod schedule;
pub mod servable;
pub mod service;
pub mod status;

pub use ctl_service::CtlService;
pub use parts::{Parts, SyncError};
pub use service::{start, Running, SyncOptions};
pub use status::{
    Effect, EffectError, RemoteChunks, SyncCommand, SyncHandle, SyncStatus, Transfer, Transfers,
};
