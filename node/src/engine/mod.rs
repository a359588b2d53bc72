//! The sync engine: keeps the synced directory equal to the committed index,
//! and turns local changes into proposals.
//!
//! # Data path
//! ```text
//! watch (dirty paths | rescan) ─▶ scan (DiskView, chunk locations, trees)
//!   committed snapshot (what changed; records per path) ─▶ plan (pure)
//!   ─▶ actions, in order:
//!   conflict copies → one batch of proposals → fetch chunks → write/mkdir/
//!   symlink (temp, fsync, re-check, rename, fsync dir) → deletes → local index
//! ```
//! [`sync::Engine::step`] runs one round; the daemon calls it on every
//! [`watch::Dirty`] batch and whenever the applied index moves.
//!
//! # Invariants
//! 1. **Never unseen data.** Nothing on disk is replaced or deleted unless it
//!    is exactly (same stat) what the engine recorded or scanned; otherwise
//!    it is moved to a conflict copy first, or kept and proposed.
//! 2. **No echo.** What the engine writes is recorded with the stat it left,
//!    so the next scan finds it unchanged and proposes nothing.
//! 3. **Nothing outside the root.** Every access goes through [`fs::Fs`],
//!    which resolves paths beneath the root without following symlinks.
//! 4. **Crash-safe.** A write is temp + fsync + rename + fsync(dir); a crash
//!    leaves old or new content whole; stale temps go at start-up.
//! 5. **No mass deletion from an empty or foreign root.** The marker and
//!    empty-root checks halt the plan; a mass vanish pauses local deletes.
//! 6. **Decisions see no Raft or network types**: only [`ports`].
//!
//! # Map
//! | file | role |
//! |---|---|
//! | `types.rs` | `Meta`, `Stat`, `VersionRecord`, `LocalEntry`, `DiskEntry` |
//! | `names.rs` | syncable paths, daemon namespace, conflict names |
//! | `plan.rs`, `plan_types.rs` | the pure decision step and its data |
//! | `scan.rs`, `ignore.rs` | the walk, hashing and indexing, `.filesyncignore` |
//! | `materialize.rs` | writes, dirs, links, deletes, conflict copies, temp cleanup |
//! | `stage.rs` | large pulled versions written once into staged files the writes take |
//! | `fs.rs`, `fs_real.rs`, `fs_fake*.rs` | the file-system seam, real and fake |
//! | `watch.rs` | notify + debouncer → dirty batches |
//! | `ports.rs` | `Committed`, `ChunkFetcher`, in-memory twins |
//! | `acks.rs` | `Acks` (offer, quorum of acknowledgements), `OfferFirst`, `MemAcks` |
//! | `sync.rs` | one scan → plan → execute step |

pub mod acks;
pub mod fs;
pub mod fs_fake;
mod fs_fake_state;
pub mod fs_real;
pub mod ignore;
pub mod materialize;
pub mod names;
pub mod plan;
mod plan_types;
pub mod ports;
pub mod scan;
pub mod stage;
pub mod sync;
pub mod types;
pub mod watch;

/// A crash point ([`filesyncd_chunkstore::failpoint`]) passed only when the
/// step did something there, so that a point's pass count counts real
/// batches.
pub(crate) fn crash_point(name: &'static str, did_something: bool) {
    if did_something {
        filesyncd_chunkstore::failpoint::hit(name);
    }
}

#[cfg(test)]
mod materialize_tests;
#[cfg(test)]
mod plan_guard_tests;
#[cfg(test)]
mod plan_incr_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod stage_tests;
