//! Status publish: the counters since start and the [`SyncStatus`] the
//! sync task sends on its `watch` channel after every step (what `status`
//! and `/metrics` show).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use filesyncd_merkle::Hash;
use tokio::sync::watch;

use std::collections::BTreeMap;

use super::status::{HeldBackFile, SyncStatus, HELD_BACK_LISTED};
use crate::engine::plan::Verdict;
use crate::engine::sync::{HeldBack, StepError, StepReport};

/// Where the engine stands after a step, next to the cluster.
pub struct Standing<'a> {
    /// Local changes not yet committed, committed versions not yet here.
    pub pending: (u64, u64),
    /// The log index the engine's committed view reflects.
    pub applied: u64,
    /// The path-tree root of the local index.
    pub local_root: Option<Hash>,
    /// The cluster's path-tree root and the index it reflects.
    pub cluster_root: Option<Hash>,
    pub raft_applied: u64,
    /// Files over the max file size (see `Engine::held_back`).
    pub held_back: &'a BTreeMap<String, HeldBack>,
}

/// The sending side of the status channel, with the counters.
pub struct Publisher {
    tx: watch::Sender<SyncStatus>,
    counters: SyncStatus,
    /// Chunk bytes received from peers, counted by the fetcher.
    bytes_fetched: Arc<AtomicU64>,
}

impl Publisher {
    pub fn new(tx: watch::Sender<SyncStatus>, bytes_fetched: Arc<AtomicU64>) -> Publisher {
        Publisher {
            tx,
            counters: SyncStatus::default(),
            bytes_fetched,
        }
    }

    /// The last step halted sync (marker missing or foreign, root empty).
    pub fn halted(&self) -> bool {
        self.counters.halted.is_some()
    }

    /// Local changes the last step withheld until confirmed.
    pub fn withheld(&self) -> u64 {
        self.counters.withheld
    }

    /// This node does not claim to be in sync (a step runs, or a failed
    /// scope waits for its retry).
    pub fn not_in_sync(&self) {
        self.tx
            .send_if_modified(|s| std::mem::replace(&mut s.in_sync, false));
    }

    /// Sync stopped: `why`.
    pub fn halt(&self, why: String) {
        self.tx.send_modify(|s| {
            s.in_sync = false;
            s.halted = Some(why);
        });
    }

    /// The sync task stopped on an error: `why`.
    pub fn stopped(&self, why: String) {
        self.tx.send_modify(|s| s.halted = Some(why));
    }

    /// A sweep of the version store freed `freed` blob bytes.
    pub fn swept(&mut self, freed: u64) {
        self.counters.sweeps += 1;
        self.counters.blob_bytes_freed += freed;
        let (n, freed) = (self.counters.sweeps, self.counters.blob_bytes_freed);
        self.tx.send_modify(|s| {
            s.sweeps = n;
            s.blob_bytes_freed = freed;
        });
    }

    /// Publishes the status after a step that ended with `res`.
    pub fn publish(&mut self, res: &Result<StepReport, StepError>, at: Standing<'_>) {
        // A step that left part of its scope for the next one (its hash
        // budget ran out) is not in sync, whatever the roots say.
        let deferred = res.as_ref().is_ok_and(|r| !r.deferred.is_empty());
        let c = &mut self.counters;
        c.started = true;
        c.halted = None;
        c.paused = None;
        c.withheld = 0;
        match res {
            Ok(rep) => {
                c.versions_proposed += rep.proposed as u64;
                c.files_written += rep.written as u64;
                c.files_deleted += rep.deleted as u64;
                c.conflicts += rep.conflicts as u64;
                c.chunks_fetched += rep.chunks_fetched as u64;
                c.last_error = rep.errors.last().cloned();
                match &rep.verdict {
                    // (As it always was: scripts match the variant name.)
                    Some(Verdict::Halt(r)) => c.halted = Some(format!("{r:?}")),
                    Some(Verdict::Pause(r)) => {
                        c.paused = Some(r.to_string());
                        c.withheld = rep.withheld as u64;
                    }
                    _ => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync step failed; retrying");
                c.last_error = Some(e.to_string());
            }
        }
        let (pending_local, pending_remote) = at.pending;
        c.applied = at.applied;
        c.bytes_fetched = self.bytes_fetched.load(Ordering::Relaxed);
        c.pending_local = pending_local;
        c.pending_remote = pending_remote;
        c.local_root = at.local_root.map(|h| h.to_hex());
        c.held_back = at.held_back.len() as u64;
        c.held_back_files = at
            .held_back
            .iter()
            .take(HELD_BACK_LISTED)
            .map(|(path, h)| HeldBackFile {
                path: path.clone(),
                size: h.size,
                local: h.local,
            })
            .collect();
        // Changes withheld until confirmed are local changes not synced.
        c.in_sync = c.halted.is_none()
            && c.paused.is_none()
            && !deferred
            && pending_local == 0
            && pending_remote == 0
            && at.applied >= at.raft_applied
            && at.local_root.is_some()
            && at.local_root == at.cluster_root;
        self.tx.send_replace(c.clone());
    }
}
