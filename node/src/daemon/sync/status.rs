//! What the sync service shows the rest of the daemon (the control API),
//! and what it can be asked to do.
//!
//! The sync task is the single owner of the engine and of every effect on
//! the synced directory; it publishes a [`SyncStatus`] on a `watch`
//! channel after every step and takes [`SyncCommand`]s on a bounded
//! channel. Work outside the engine that writes the synced directory or the
//! chunk store (a restore) is sent to it as an [`Effect`]
//! ([`SyncHandle::run_effect`]) and runs between two steps. The chunk store
//! and the tree-node store are shared read-mostly (the store is internally
//! synchronised; the node store sits behind a std `Mutex` held only for
//! lookups and inserts, never across an `.await`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::{Hash, MemNodeStore};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

/// One file being fetched for materialization.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub path: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// When the transfer started, ms since the Unix epoch.
    pub started_ms: u64,
}

/// The sync state of this node, as of the last engine step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The engine has run at least one full step.
    pub started: bool,
    /// Log index the engine's committed view reflects.
    pub applied: u64,
    /// Files on disk equal the committed tree at `applied` (nothing pending
    /// either way, nothing withheld, no halt).
    pub in_sync: bool,
    /// Root of the path tree of what the engine holds locally (hex), the same
    /// construction as the cluster root: equal roots mean equal trees.
    pub local_root: Option<String>,
    /// Local changes not yet committed (waiting for a quorum, or retrying).
    pub pending_local: u64,
    /// Committed versions not yet materialized here.
    pub pending_remote: u64,
    /// Sync stopped: the marker is missing/foreign or the root looks empty.
    pub halted: Option<String>,
    /// Local changes withheld, until confirmed (`filesyncd confirm`): a
    /// mass delete, or a folder's mass replace/delete (the mass-change
    /// guard). Why, in words.
    pub paused: Option<String>,
    /// How many local changes (paths) are withheld.
    #[serde(default)]
    pub withheld: u64,
    /// Pulls in progress (filled in by the control API from [`Transfers`]).
    pub transfers: Vec<Transfer>,
    /// Counters since start.
    pub versions_proposed: u64,
    pub files_written: u64,
    pub files_deleted: u64,
    pub conflicts: u64,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    /// Chunks a write found locally instead of fetching.
    pub chunks_reused: u64,
    /// Sweeps of the version store, and the blob bytes they freed.
    pub sweeps: u64,
    pub blob_bytes_freed: u64,
    pub last_error: Option<String>,
    /// Files held back as larger than `--max-file-size` (at most
    /// `MAX_HELD_BACK` counted): on disk here and not synced, or committed
    /// and not fetched.
    #[serde(default)]
    pub held_back: u64,
    /// The first [`HELD_BACK_LISTED`] of them, by path.
    #[serde(default)]
    pub held_back_files: Vec<HeldBackFile>,
}

/// How many held-back files status lists by name.
pub const HELD_BACK_LISTED: usize = 16;

/// A file held back as larger than `--max-file-size`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBackFile {
    pub path: String,
    pub size: u64,
    /// On disk here (not proposed); else a committed version not fetched.
    pub local: bool,
}

/// Work on the synced directory or the chunk store that must not
/// interleave with a step (a restore): the sync task runs it between two
/// steps on its blocking pool (inside its runtime: `Handle::current()`
/// works) and waits for it.
pub struct Effect {
    /// What it is, for the logs.
    pub what: &'static str,
    /// Paths the effect changes at the user's request (a restore): the
    /// mass-change guard lets their changes out without a confirmation.
    exempt: Vec<String>,
    run: Box<dyn FnOnce() + Send>,
}

impl Effect {
    /// The paths the guard exempts (taken: asked once).
    pub fn take_exempt(&mut self) -> Vec<String> {
        std::mem::take(&mut self.exempt)
    }

    /// Runs it (blocking).
    pub fn run(self) {
        (self.run)()
    }
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effect")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// An [`Effect`] that did not run to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    #[error("the sync service is not running")]
    Stopped,
    #[error("the sync service did not finish it ({0} failed)")]
    Failed(&'static str),
}

/// Requests to the sync task.
#[derive(Debug)]
pub enum SyncCommand {
    /// Re-create the folder marker (holding the cluster id) on purpose and
    /// resume; also confirms withheld deletes.
    Adopt {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Let the withheld local changes go out (a mass delete, a mass
    /// change): answers how many were withheld before.
    Confirm {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Scan everything now.
    Rescan,
    /// Run this between two steps.
    Effect(Effect),
}

/// What a [`RemoteChunks`] call answers: `(hash, bytes)` pairs, unverified.
pub type RemoteAnswer<'a> = futures::future::BoxFuture<'a, Result<Vec<(Hash, Vec<u8>)>, String>>;

/// Chunk bytes and tree nodes from the peers that hold them. Answers are
/// UNVERIFIED: check chunks with blake3 and nodes against their hash.
pub trait RemoteChunks: Send + Sync + 'static {
    /// Chunk bytes for `hashes` from any of `holders` (those it got).
    fn chunks(&self, holders: Vec<u64>, hashes: Vec<Hash>) -> RemoteAnswer<'_>;
    /// Encoded Merkle tree nodes for `hashes` from any of `holders`.
    fn nodes(&self, holders: Vec<u64>, hashes: Vec<Hash>) -> RemoteAnswer<'_>;
}

/// The pulls running now, by label; the fetcher updates them while it
/// pulls (a std `Mutex`, never held across an `.await`), the control API
/// reads them on each `/status`.
#[derive(Clone, Default)]
pub struct Transfers(Arc<Mutex<std::collections::BTreeMap<String, Transfer>>>);

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Transfer>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records progress of the pull `label`; `finished` drops it.
    pub fn update(&self, label: &str, done: u64, total: u64, finished: bool, now_ms: u64) {
        let mut m = self.lock();
        if finished {
            m.remove(label);
            return;
        }
        let t = m.entry(label.to_string()).or_insert_with(|| Transfer {
            path: label.to_string(),
            started_ms: now_ms,
            ..Transfer::default()
        });
        t.bytes_done = done;
        t.bytes_total = total;
    }

    /// The pulls running now.
    pub fn snapshot(&self) -> Vec<Transfer> {
        self.lock().values().cloned().collect()
    }
}

/// The handle the control API holds.
#[derive(Clone)]
pub struct SyncHandle {
    pub status: watch::Receiver<SyncStatus>,
    pub commands: mpsc::Sender<SyncCommand>,
    /// The synced directory.
    pub root: PathBuf,
    /// Chunk bytes held here (live files' chunks and retained old versions).
    pub store: Arc<dyn ChunkStore>,
    /// Merkle tree nodes of the versions this node knows.
    pub nodes: Arc<Mutex<MemNodeStore>>,
    /// The network, for content this node does not hold.
    pub remote: Arc<dyn RemoteChunks>,
    /// Pulls in progress.
    pub transfers: Transfers,
}

impl SyncHandle {
    /// Runs `f` on the sync task between two steps ([`Effect`]) and returns
    /// what it returned.
    pub async fn run_effect<R: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, EffectError> {
        self.run_effect_exempt(what, Vec::new(), f).await
    }

    /// [`SyncHandle::run_effect`] for a change the user asked for (a
    /// restore): the mass-change guard does not hold what it changes at
    /// `exempt`.
    pub async fn run_effect_exempt<R: Send + 'static>(
        &self,
        what: &'static str,
        exempt: Vec<String>,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, EffectError> {
        let (tx, rx) = oneshot::channel();
        let effect = Effect {
            what,
            exempt,
            run: Box::new(move || {
                let _ = tx.send(f());
            }),
        };
        self.commands
            .send(SyncCommand::Effect(effect))
            .await
            .map_err(|_| EffectError::Stopped)?;
        rx.await.map_err(|_| EffectError::Failed(what))
    }

    /// The tree nodes below `root` as one chunk list, if every node is here.
    pub fn chunk_list(
        &self,
        root: Hash,
        size: u64,
    ) -> Result<Vec<filesyncd_merkle::ChunkEntry>, filesyncd_merkle::MerkleError> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        filesyncd_merkle::file_tree::FileTree { root, size }.chunks(&*nodes)
    }
}
