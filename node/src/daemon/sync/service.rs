//! The sync task: owns the [`Engine`] and runs its steps on a runtime of
//! its own (two threads named `filesyncd-sync`), so that hashing and file
//! writes never hold up Raft heartbeats or the swarm.
//!
//! A step runs when
//! - the watcher reports dirty paths (scope: those paths) or asks for a
//!   rescan (scope: everything; also the periodic backstop),
//! - the applied index moves (scope: the paths changed since the engine's
//!   view),
//! - a retry is due: a step that failed or left errors is retried with the
//!   same scope after a backoff (250 ms doubling to 2 s; watcher events
//!   meanwhile join the retry instead of stepping at once),
//! - a command arrives (`Adopt`, `Rescan`).
//!
//! (The bookkeeping of scopes and retries is [`super::schedule`].)
//!
//! Every 2 s the loop checks that the root's path still names the
//! directory it opened ([`RootFs::still_at_path`]). When a mount covers it
//! or another directory took its place, the loop reopens the path, restarts
//! the watcher and scans it in full, so the plan's guards meet the new
//! directory at once (no marker: halt, no deletion). While the path cannot
//! be opened at all, no step runs and status reports `halted`.
//!
//! After each step the local index and new tree nodes are saved durably
//! ([`LocalDb`]), the chunks of newly committed versions become servable,
//! and a fresh [`SyncStatus`] is published.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use filesyncd_chunkstore::store::{ChunkStore, RedbChunkStore};
use filesyncd_merkle::{EntryKind, Hash, MemNodeStore, PathTree, PathValue};
use filesyncd_p2p::P2pClient;
use tokio::sync::{mpsc, watch};

use super::local_db::{LocalDb, LocalDbError};
use super::offer::{Offerer, Offers};
use super::ports::{P2pFetcher, RaftCommitted};
use super::schedule::{Outcome, Schedule};
use super::servable::{Provider, Servable};
use super::status::{SyncCommand, SyncHandle, SyncStatus};
use super::CtlService;
use crate::daemon::Node;
use crate::engine::fs_real::RootFs;
use crate::engine::names::MARKER;
use crate::engine::plan::{PlanConfig, Scope, Verdict};
use crate::engine::ports::Committed;
use crate::engine::sync::{Engine, StepReport};
use crate::engine::types::{Kind, LocalEntry};
use crate::engine::watch::{watch as start_watch, Dirty, WatchConfig};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot open the synced directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk store in {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: filesyncd_chunkstore::store::StoreError,
    },
    #[error(transparent)]
    LocalDb(#[from] LocalDbError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sync runtime: {0}")]
    Runtime(std::io::Error),
}

/// What the sync service opens before the network starts (the chunk
/// provider must exist when the swarm does).
pub struct Parts {
    pub root: PathBuf,
    pub store: Arc<dyn ChunkStore>,
    pub nodes: Arc<Mutex<MemNodeStore>>,
    pub servable: Arc<Servable>,
    db: LocalDb,
    local: BTreeMap<String, LocalEntry>,
    marker_for: Option<String>,
}

impl Parts {
    /// Opens `<data>/sync/` (chunk store, local index) for the synced `root`.
    pub fn open(root: &Path, data: &Path) -> Result<Parts, SyncError> {
        let root = root.canonicalize().map_err(|source| SyncError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let dir = data.join("sync");
        std::fs::create_dir_all(&dir).map_err(|source| SyncError::Io {
            path: dir.clone(),
            source,
        })?;
        let store_dir = dir.join("chunks");
        let store = RedbChunkStore::open(&store_dir, &root).map_err(|source| SyncError::Store {
            path: store_dir,
            source,
        })?;
        let (db, loaded) = LocalDb::open(&dir.join("local.redb"))?;
        let nodes = Arc::new(Mutex::new(loaded.nodes));
        Ok(Parts {
            root,
            store: Arc::new(store),
            servable: Servable::new(nodes.clone()),
            nodes,
            db,
            local: loaded.local,
            marker_for: loaded.marker_for,
        })
    }

    pub fn provider(&self) -> Provider {
        Provider {
            store: self.store.clone(),
            servable: self.servable.clone(),
        }
    }
}

/// A running sync service.
pub struct Running {
    pub handle: SyncHandle,
    pub ctl: Arc<CtlService>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the loop after its current step and waits for it (blocking).
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the sync service.
pub fn start(
    parts: Parts,
    node: Node,
    client: P2pClient,
    watch_cfg: WatchConfig,
    gc_interval: Duration,
) -> Result<Running, SyncError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("filesyncd-sync")
        .enable_all()
        .build()
        .map_err(SyncError::Runtime)?;
    let fetcher = P2pFetcher {
        client: client.clone(),
        node: node.clone(),
        bytes_fetched: Arc::default(),
        transfers: Default::default(),
    };
    let offers = Offers::new(
        parts.store.clone(),
        parts.nodes.clone(),
        fetcher.clone(),
        parts.servable.clone(),
        rt.handle().clone(),
    );
    let ctl = Arc::new(CtlService {
        offers,
        nodes: parts.nodes.clone(),
        node: node.clone(),
    });
    let (status_tx, status_rx) = watch::channel(SyncStatus::default());
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = SyncHandle {
        status: status_rx,
        commands: cmd_tx,
        root: parts.root.clone(),
        store: parts.store.clone(),
        nodes: parts.nodes.clone(),
        remote: Arc::new(fetcher.clone()),
        transfers: fetcher.transfers.clone(),
    };
    let committed = RaftCommitted {
        node: node.clone(),
        offerer: Arc::new(Offerer {
            client,
            node: node.clone(),
            servable: parts.servable.clone(),
            store: parts.store.clone(),
            nodes: parts.nodes.clone(),
            announced: Default::default(),
            announcing: Default::default(),
        }),
    };
    let thread = std::thread::Builder::new()
        .name("filesyncd-sync".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut l = Loop {
                    parts,
                    node,
                    status: status_tx,
                    commands: cmd_rx,
                    stop: stop_rx,
                    counters: SyncStatus::default(),
                    bytes_fetched: fetcher.bytes_fetched.clone(),
                    gc_interval,
                    local_root: LocalRoot::default(),
                };
                if let Err(e) = l.run(committed, fetcher, watch_cfg).await {
                    tracing::error!(error = %e, "sync stopped");
                    l.status.send_modify(|s| s.halted = Some(e.to_string()));
                }
            });
            rt.shutdown_timeout(Duration::from_secs(5));
        })
        .map_err(SyncError::Runtime)?;
    Ok(Running {
        handle,
        ctl,
        stop: stop_tx,
        thread: Some(thread),
    })
}

struct Loop {
    parts: Parts,
    node: Node,
    status: watch::Sender<SyncStatus>,
    commands: mpsc::Receiver<SyncCommand>,
    stop: watch::Receiver<bool>,
    counters: SyncStatus,
    bytes_fetched: Arc<std::sync::atomic::AtomicU64>,
    gc_interval: Duration,
    local_root: LocalRoot,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Event {
    Dirty(Dirty),
    Applied,
    Retry,
    RootCheck,
    Sweep,
    Command(SyncCommand),
}

/// How often the loop checks that the root's path still names the
/// directory it opened.
const ROOT_CHECK: Duration = Duration::from_secs(2);

impl Loop {
    async fn run(
        &mut self,
        committed: RaftCommitted,
        fetcher: P2pFetcher,
        watch_cfg: WatchConfig,
    ) -> Result<(), SyncError> {
        // The cluster settings arrive with the log (a joiner catches up first).
        let settings = loop {
            let reader = self.node.reader().clone();
            if let Ok(Some(s)) = reader.settings() {
                break s;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.stop.wait_for(|s| *s) => return Ok(()),
            }
        };
        let chunker = settings
            .chunker
            .validate()
            .map_err(|e| SyncError::Runtime(std::io::Error::other(e.to_string())))?;
        let cluster_id = settings.cluster_id.clone();
        self.ensure_marker(&cluster_id)?;
        let open_root = |root: &Path| {
            RootFs::open(root)
                .map(Arc::new)
                .map_err(|source| SyncError::Root {
                    path: root.to_path_buf(),
                    source,
                })
        };
        let mut root_fs = open_root(&self.parts.root)?;
        let mut engine = Engine::new(
            root_fs.clone(),
            self.parts.store.clone(),
            chunker,
            committed,
            fetcher,
            PlanConfig::new(cluster_id.clone(), self.node.id()),
        );
        engine.nodes = self.parts.nodes.clone();
        engine.local = std::mem::take(&mut self.parts.local);
        match engine.startup() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed temp files of interrupted writes"),
            Err(e) => tracing::warn!(error = %e, "cannot clean temp files"),
        }
        let watch_root = |root: &Path| {
            start_watch(root, &watch_cfg)
                .map_err(|e| SyncError::Runtime(std::io::Error::other(e.to_string())))
        };
        let (mut _watcher, mut dirty) = watch_root(&self.parts.root)?;
        // Whether the root's path still names the directory opened (see
        // `RootFs::still_at_path`); while it does not, no step runs.
        let mut root_here = true;
        let mut root_check = tokio::time::interval(ROOT_CHECK);
        root_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.gc_interval,
            self.gc_interval,
        );
        sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut applied_rx = self.node.metrics_watch();
        let mut sched = Schedule::default();
        loop {
            if let Some(scope) = root_here.then(|| sched.take_next()).flatten() {
                let outcome = self.step(&mut engine, scope.clone()).await;
                sched.after_step(&scope, outcome, tokio::time::Instant::now());
                if sched.pending() {
                    // A failed scope waits for its retry: not in sync.
                    self.status
                        .send_if_modified(|s| std::mem::replace(&mut s.in_sync, false));
                }
                continue;
            }
            let applied_behind = applied_rx
                .borrow()
                .last_applied
                .is_some_and(|l| l.index > engine.applied());
            if applied_behind && root_here {
                let changed = engine
                    .committed
                    .changed_paths_since(engine.applied())
                    .unwrap_or_default();
                sched.add_next(Scope::Paths(crate::engine::watch::top_most(changed)));
                continue;
            }
            let retry_at = sched.retry_at();
            let retry_sleep = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                d = dirty.recv() => match d {
                    Some(d) => Event::Dirty(d),
                    None => return Ok(()),
                },
                changed = applied_rx.changed() => {
                    if changed.is_err() { return Ok(()) }
                    Event::Applied
                }
                _ = retry_sleep => Event::Retry,
                _ = root_check.tick() => Event::RootCheck,
                _ = sweep_tick.tick() => Event::Sweep,
                cmd = self.commands.recv() => match cmd {
                    Some(c) => Event::Command(c),
                    None => Event::Applied,
                },
                _ = self.stop.wait_for(|s| *s) => return Ok(()),
            };
            match event {
                Event::Dirty(d) => {
                    let as_scope = |d: Dirty| match d {
                        Dirty::Rescan => Scope::Full,
                        Dirty::Paths(p) => Scope::Paths(p),
                    };
                    // (`recv` took everything pending at once.)
                    sched.dirty(as_scope(d));
                }
                Event::Applied => {}
                Event::Retry => sched.retry_due(),
                Event::Sweep if !root_here || self.counters.halted.is_some() => {
                    tracing::info!("version store sweep skipped: sync is halted");
                }
                Event::Sweep => self.sweep(),
                Event::RootCheck => {
                    let moved = match root_fs.still_at_path() {
                        Ok(true) => continue,
                        Ok(false) => {
                            "another directory is now at its path (mounted over, or replaced)"
                                .to_string()
                        }
                        Err(e) => format!("its path cannot be read: {e}"),
                    };
                    if root_here {
                        tracing::error!(root = %self.parts.root.display(), why = %moved, "the synced directory was replaced under the running node; sync stops until a directory with this cluster's marker is back");
                        root_here = false;
                    }
                    match open_root(&self.parts.root)
                        .and_then(|fs| Ok((fs, watch_root(&self.parts.root)?)))
                    {
                        Ok((fs, (w, d))) => {
                            tracing::warn!(root = %self.parts.root.display(), "reopened the synced directory; a full scan checks its marker before anything syncs");
                            root_fs = fs;
                            engine.fs = root_fs.clone();
                            engine.plan_all_next();
                            _watcher = w;
                            dirty = d;
                            root_here = true;
                            sched.add_next(Scope::Full);
                        }
                        Err(e) => {
                            let why = format!("the synced directory was replaced under the running node ({moved}) and cannot be reopened: {e}");
                            self.status.send_modify(|s| {
                                s.in_sync = false;
                                s.halted = Some(why);
                            });
                        }
                    }
                }
                Event::Command(SyncCommand::Adopt { reply }) => {
                    let res = if root_here {
                        self.adopt(&cluster_id)
                    } else {
                        Err(format!(
                            "{} cannot be opened (see status)",
                            self.parts.root.display()
                        ))
                    };
                    let ok = res.is_ok();
                    let _ = reply.send(res);
                    if ok {
                        engine.cfg.deletes_confirmed = true;
                        let outcome = self.step(&mut engine, Scope::Full).await;
                        sched.after_step(&Scope::Full, outcome, tokio::time::Instant::now());
                        engine.cfg.deletes_confirmed = false;
                    }
                }
                Event::Command(SyncCommand::Rescan) => sched.add_next(Scope::Full),
            }
        }
    }

    /// One engine step plus bookkeeping; how it ended decides what runs next
    /// ([`Schedule::after_step`]).
    async fn step(
        &mut self,
        engine: &mut Engine<RaftCommitted, P2pFetcher>,
        scope: Scope,
    ) -> Outcome {
        // A step may take long (an offer waits for a quorum, a pull for its
        // bytes): meanwhile this node does not claim to be in sync.
        self.status
            .send_if_modified(|s| std::mem::replace(&mut s.in_sync, false));
        let started = std::time::Instant::now();
        let what = match &scope {
            Scope::Full => "full".to_string(),
            Scope::Paths(p) => format!("{} paths", p.len()),
        };
        let scope_ran = scope.clone();
        let res = engine.step(scope, now_ms()).await;
        tracing::debug!(
            scope = %what,
            ms = started.elapsed().as_millis() as u64,
            applied = engine.applied(),
            ok = res.as_ref().is_ok_and(|r| r.errors.is_empty()),
            dirty = res.as_ref().map_or(0, |r| r.dirty.len()),
            "sync step"
        );
        // What the step changed, and only that: persisted, re-hashed into
        // the local root, served.
        let touched = engine.take_touched();
        if let Err(e) = self
            .parts
            .db
            .save(&touched, &engine.local, &self.parts.nodes)
        {
            tracing::error!(error = %e, "cannot save the local index");
        }
        self.local_root.update(&touched, &engine.local);
        for (root, size) in engine.take_committed_files() {
            self.parts.servable.add_committed(root, size);
        }
        let outcome = match &res {
            Ok(rep) if !rep.errors.is_empty() => Outcome::Retry,
            // Paths the step itself changed (a conflict copy it moved aside):
            // they are scanned and proposed by the next step, right away.
            // Dirty paths the step already covered are retried after a
            // backoff instead (no spinning on a path that keeps changing).
            // What the scan left for later (its hash budget ran out) is
            // stepped over next, right away.
            Ok(rep) if !rep.dirty.is_empty() || !rep.deferred.is_empty() => {
                // (With deferred paths there is a next step anyway: every
                // dirty path joins it.)
                let mut next: Vec<String> = rep
                    .dirty
                    .iter()
                    .filter(|d| !rep.deferred.is_empty() || !scope_ran.covers(d))
                    .cloned()
                    .collect();
                let retry = next.is_empty() && rep.deferred.is_empty();
                next.extend(rep.deferred.iter().cloned());
                if retry {
                    Outcome::Retry
                } else {
                    Outcome::Again(Scope::Paths(crate::engine::watch::top_most(next)))
                }
            }
            Ok(_) => Outcome::Done,
            Err(_) => Outcome::Retry,
        };
        self.publish(engine, res);
        outcome
    }

    fn publish(
        &mut self,
        engine: &Engine<RaftCommitted, P2pFetcher>,
        res: Result<StepReport, crate::engine::sync::StepError>,
    ) {
        // A step that left part of its scope for the next one (its hash
        // budget ran out) is not in sync, whatever the roots say.
        let deferred = res.as_ref().is_ok_and(|r| !r.deferred.is_empty());
        let c = &mut self.counters;
        c.started = true;
        c.halted = None;
        c.paused = None;
        match &res {
            Ok(rep) => {
                c.versions_proposed += rep.proposed as u64;
                c.files_written += rep.written as u64;
                c.files_deleted += rep.deleted as u64;
                c.conflicts += rep.conflicts as u64;
                c.chunks_fetched += rep.chunks_fetched as u64;
                c.last_error = rep.errors.last().cloned();
                match &rep.verdict {
                    Some(Verdict::Halt(r)) => c.halted = Some(format!("{r:?}")),
                    Some(Verdict::Pause(r)) => c.paused = Some(format!("{r:?}")),
                    _ => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync step failed; retrying");
                c.last_error = Some(e.to_string());
            }
        }
        // Kept by the engine for the paths each step changed (a pass over
        // the view and the index per step cost the size of the tree).
        let (pending_local, pending_remote) = engine.pending();
        let local_root = self.local_root.root;
        let (cluster_root, raft_applied) = self
            .node
            .reader()
            .cluster_root()
            .map(|(r, a)| (Some(r), a.map_or(0, |l| l.index)))
            .unwrap_or((None, 0));
        c.applied = engine.applied();
        c.bytes_fetched = self
            .bytes_fetched
            .load(std::sync::atomic::Ordering::Relaxed);
        c.pending_local = pending_local;
        c.pending_remote = pending_remote;
        c.local_root = local_root.map(|h| h.to_hex());
        c.in_sync = c.halted.is_none()
            && !deferred
            && pending_local == 0
            && pending_remote == 0
            && engine.applied() >= raft_applied
            && local_root.is_some()
            && local_root == cluster_root;
        self.status.send_replace(c.clone());
    }

    /// Sweeps the version store (see [`super::gc`]); runs inside the loop,
    /// so no step runs meanwhile.
    fn sweep(&mut self) {
        let mut retained = Vec::new();
        let listed = self.node.reader().for_each_retained(|_, r| {
            if let Some(m) = &r.state {
                if matches!(m.kind, filesyncd_raft::command::PutKind::File) && m.size > 0 {
                    retained.push((m.root, m.size));
                }
            }
        });
        if let Err(e) = listed {
            tracing::warn!(error = %e, "version store sweep skipped: cannot read the history");
            return;
        }
        let p = &self.parts;
        match super::gc::sweep(p.store.as_ref(), &p.nodes, &p.servable, retained) {
            Ok(r) => {
                self.counters.sweeps += 1;
                self.counters.blob_bytes_freed += r.store.blob_bytes_freed;
                let (n, freed) = (self.counters.sweeps, self.counters.blob_bytes_freed);
                self.status.send_modify(|s| {
                    s.sweeps = n;
                    s.blob_bytes_freed = freed;
                });
                tracing::info!(
                    versions = r.versions,
                    unknown_trees = r.unknown_trees,
                    chunks_kept = r.chunks_kept,
                    blobs_removed = r.store.blobs_removed,
                    bytes_freed = r.store.blob_bytes_freed,
                    ms = r.millis,
                    "version store swept"
                );
            }
            Err(e) => tracing::warn!(error = %e, "version store sweep failed"),
        }
    }

    /// Creates the marker the first time this data directory syncs this
    /// root; afterwards a missing marker halts sync (see the engine's plan).
    fn ensure_marker(&mut self, cluster_id: &str) -> Result<(), SyncError> {
        if self.parts.marker_for.is_some() {
            return Ok(());
        }
        let marker = self.parts.root.join(MARKER);
        if !marker.exists() {
            write_marker(&self.parts.root, cluster_id).map_err(|source| SyncError::Io {
                path: marker,
                source,
            })?;
            tracing::info!(root = %self.parts.root.display(), "folder marker created");
        }
        self.parts.db.set_marker_for(cluster_id)?;
        self.parts.marker_for = Some(cluster_id.to_string());
        Ok(())
    }

    fn adopt(&mut self, cluster_id: &str) -> Result<(), String> {
        write_marker(&self.parts.root, cluster_id).map_err(|e| e.to_string())?;
        self.parts
            .db
            .set_marker_for(cluster_id)
            .map_err(|e| e.to_string())?;
        tracing::warn!(root = %self.parts.root.display(), "folder adopted: marker re-created, deletes confirmed");
        Ok(())
    }
}

/// Writes the marker durably: temp file, fsync, rename, fsync the root.
fn write_marker(root: &Path, cluster_id: &str) -> std::io::Result<()> {
    let tmp = root.join(format!("{}marker", crate::engine::names::TMP_PREFIX));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{cluster_id}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, root.join(MARKER))?;
    std::fs::File::open(root)?.sync_all()
}

/// The path-tree root of the entries of the local index (the same
/// construction as the cluster root), kept up to date with the paths each
/// step touched ([`PathTree::update_many`]: O(changes × log n), not a
/// rebuild).
#[derive(Default)]
pub(super) struct LocalRoot {
    store: MemNodeStore,
    /// `None` until built, or after an update failed (rebuilt next time).
    pub root: Option<Hash>,
}

fn path_value(e: &LocalEntry) -> PathValue {
    PathValue {
        kind: match e.meta.kind {
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink { .. } => EntryKind::Symlink,
        },
        root: e.meta.root,
        size: e.meta.size,
        mode: e.meta.mode,
    }
}

impl LocalRoot {
    /// Applies the `touched` paths as they are now in `local`.
    fn update(&mut self, touched: &BTreeSet<String>, local: &BTreeMap<String, LocalEntry>) {
        let Some(root) = self.root else {
            self.rebuild(local);
            return;
        };
        if touched.is_empty() {
            return;
        }
        let changes = touched
            .iter()
            .map(|p| (p.clone(), local.get(p).map(path_value)));
        match PathTree::update_many(&mut self.store, root, changes) {
            Ok(r) => self.root = Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "local root update failed; rebuilding it");
                self.rebuild(local);
            }
        }
    }

    fn rebuild(&mut self, local: &BTreeMap<String, LocalEntry>) {
        self.store = MemNodeStore::new();
        let items = local.iter().map(|(p, e)| (p.clone(), path_value(e)));
        self.root = PathTree::build(&mut self.store, items).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::{FileKind, Meta, Stat, VersionId};

    fn entry(n: u64) -> LocalEntry {
        let stat = Stat {
            kind: FileKind::File,
            size: n,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: n,
            mode: 0o644,
        };
        LocalEntry::committed(
            Meta::file(Hash([n as u8; 32]), n, 0o644),
            stat,
            VersionId::new(n, 0),
        )
    }

    /// The incremental local root always equals a rebuild of the index.
    #[test]
    fn local_root_updates_equal_a_rebuild() {
        let mut local: BTreeMap<String, LocalEntry> = BTreeMap::new();
        let mut lr = LocalRoot::default();
        let mut x: u64 = 12345;
        for round in 0..30u64 {
            let mut touched = BTreeSet::new();
            for _ in 0..(1 + round * 7 % 50) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let p = format!("d{}/f{}", x % 7, x % 300);
                if x.is_multiple_of(3) {
                    local.remove(&p);
                } else {
                    local.insert(p.clone(), entry(x % 1000));
                }
                touched.insert(p);
            }
            lr.update(&touched, &local);
            let mut fresh = LocalRoot::default();
            fresh.rebuild(&local);
            assert_eq!(lr.root, fresh.root, "round {round}");
            assert!(lr.root.is_some());
        }
    }
}
