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
//! Between two steps it also runs the [`super::status::Effect`]s it is sent
//! (a restore): nothing else writes the synced directory beside a step.
//! (The one other writer of the chunk store is the peer side of offers,
//! [`super::offer::Offers`]: content-addressed puts that must go on while
//! this loop itself waits for an offer's quorum.)
//!
//! Its parts: when to step and over what ([`super::schedule`]); the root
//! and its watcher, checked every [`ROOT_CHECK`] ([`super::root_guard`]);
//! the folder marker ([`super::marker`]); the status it publishes
//! ([`super::publish`]); the local root ([`super::local_root`]).
//!
//! After each step the local index and new tree nodes are saved durably
//! ([`super::local_db::LocalDb`]), the chunks of newly committed versions
//! become servable, and a fresh [`SyncStatus`] is published.

use std::sync::Arc;
use std::time::Duration;

use filesyncd_p2p::P2pClient;
use tokio::sync::{mpsc, watch};

use super::ctl_service::CtlService;
use super::local_root::LocalRoot;
use super::marker;
use super::offer::{Offerer, Offers, P2pAcks};
use super::parts::{Parts, SyncError};
use super::ports::{P2pFetcher, RaftCommitted};
use super::publish::{Publisher, Standing};
use super::root_guard::{Checked, RootGuard, ROOT_CHECK};
use super::schedule::{Outcome, Schedule};
use super::status::{SyncCommand, SyncHandle, SyncStatus};
use crate::daemon::Node;
use crate::engine::acks::OfferFirst;
use crate::engine::plan::{MassChangeGuard, PlanConfig, Scope};
use crate::engine::ports::Committed;
use crate::engine::sync::Engine;
use crate::engine::watch::{Dirty, WatchConfig};
use crate::now_ms;

/// Raft, with every put's content offered to the voters first.
type SyncCommitted = OfferFirst<RaftCommitted, P2pAcks>;
/// The engine as the daemon runs it.
type SyncEngine = Engine<SyncCommitted, P2pFetcher>;

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

/// Settings of the sync service (from the daemon's flags).
#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    /// How often the version store is swept (`--gc-interval`).
    pub gc_interval: Duration,
    /// `--max-file-size`.
    pub max_file_size: u64,
    /// `--safe-links`.
    pub safe_links: bool,
    /// The mass-change guard (`--guard-percent`, `--guard-min-files`;
    /// `None`: `--no-guard`).
    pub guard: Option<MassChangeGuard>,
}

/// Starts the sync service.
pub fn start(
    parts: Parts,
    node: Node,
    client: P2pClient,
    watch_cfg: WatchConfig,
    opts: SyncOptions,
) -> Result<Running, SyncError> {
    let SyncOptions {
        gc_interval,
        max_file_size,
        safe_links,
        guard,
    } = opts;
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
        max_file_size,
        parts.root.clone(),
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
    let committed = OfferFirst {
        inner: RaftCommitted { node: node.clone() },
        acks: P2pAcks(Arc::new(Offerer {
            client,
            node: node.clone(),
            servable: parts.servable.clone(),
            store: parts.store.clone(),
            nodes: parts.nodes.clone(),
            announced: Default::default(),
            announcing: Default::default(),
        })),
    };
    let thread = std::thread::Builder::new()
        .name("filesyncd-sync".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut parts = parts;
                let local_root = std::mem::take(&mut parts.local_root);
                let mut l = Loop {
                    parts,
                    node,
                    status: Publisher::new(status_tx, fetcher.bytes_fetched.clone()),
                    commands: cmd_rx,
                    stop: stop_rx,
                    gc_interval,
                    max_file_size,
                    safe_links,
                    guard,
                    local_root,
                };
                if let Err(e) = l.run(committed, fetcher, watch_cfg).await {
                    tracing::error!(error = %e, "sync stopped");
                    l.status.stopped(e.to_string());
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
    status: Publisher,
    commands: mpsc::Receiver<SyncCommand>,
    stop: watch::Receiver<bool>,
    gc_interval: Duration,
    /// `--max-file-size` (the plan's and the scan's bound).
    max_file_size: u64,
    /// `--safe-links`.
    safe_links: bool,
    guard: Option<MassChangeGuard>,
    local_root: LocalRoot,
}

enum Event {
    Dirty(Dirty),
    Applied,
    Retry,
    RootCheck,
    Sweep,
    Command(SyncCommand),
}

impl Loop {
    async fn run(
        &mut self,
        committed: SyncCommitted,
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
        let p = &mut self.parts;
        marker::ensure(&p.root, &p.db, &mut p.marker_for, &cluster_id)?;
        let mut root = RootGuard::open(&self.parts.root, watch_cfg)?;
        let mut engine = Engine::new(
            root.fs.clone(),
            self.parts.store.clone(),
            chunker,
            committed,
            fetcher,
            PlanConfig {
                max_file_size: self.max_file_size,
                safe_links: self.safe_links,
                guard: self.guard,
                ..PlanConfig::new(cluster_id.clone(), self.node.id())
            },
        );
        engine.nodes = self.parts.nodes.clone();
        engine.local = std::mem::take(&mut self.parts.local);
        match engine.startup() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed temp files of interrupted writes"),
            Err(e) => tracing::warn!(error = %e, "cannot clean temp files"),
        }
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
            if let Some(scope) = root.here.then(|| sched.take_next()).flatten() {
                let outcome = self.step(&mut engine, scope.clone()).await;
                sched.after_step(&scope, outcome, tokio::time::Instant::now());
                if sched.pending() {
                    // A failed scope waits for its retry: not in sync.
                    self.status.not_in_sync();
                }
                continue;
            }
            let applied_behind = applied_rx
                .borrow()
                .last_applied
                .is_some_and(|l| l.index > engine.applied());
            if applied_behind && root.here {
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
                d = root.dirty.recv() => match d {
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
                Event::Sweep if !root.here || self.status.halted() => {
                    tracing::info!("version store sweep skipped: sync is halted");
                }
                Event::Sweep => self.sweep(root.fs.as_ref()),
                Event::RootCheck => match root.check() {
                    Checked::Same => {}
                    Checked::Reopened => {
                        engine.fs = root.fs.clone();
                        engine.plan_all_next();
                        sched.add_next(Scope::Full);
                    }
                    Checked::Lost(why) => self.status.halt(why),
                },
                Event::Command(SyncCommand::Adopt { reply }) => {
                    let res = if root.here {
                        marker::adopt(&self.parts.root, &self.parts.db, &cluster_id)
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
                Event::Command(SyncCommand::Confirm { reply }) => {
                    let withheld = self.status.withheld();
                    let _ = reply.send(Ok(withheld));
                    tracing::warn!(withheld, "withheld changes confirmed");
                    // The step scans what was withheld (the engine adds it
                    // to any scope) and lets it out.
                    engine.cfg.deletes_confirmed = true;
                    let scope = Scope::Paths(Vec::new());
                    let outcome = self.step(&mut engine, scope.clone()).await;
                    sched.after_step(&scope, outcome, tokio::time::Instant::now());
                    engine.cfg.deletes_confirmed = false;
                }
                Event::Command(SyncCommand::Rescan) => sched.add_next(Scope::Full),
                Event::Command(SyncCommand::Effect(mut effect)) => {
                    let what = effect.what;
                    engine.exempt_from_guard(now_ms(), effect.take_exempt());
                    let started = std::time::Instant::now();
                    if let Err(e) = tokio::task::spawn_blocking(move || effect.run()).await {
                        tracing::error!(what, error = %e, "effect failed");
                    }
                    let ms = started.elapsed().as_millis() as u64;
                    tracing::debug!(what, ms, "effect ran between steps");
                }
            }
        }
    }

    /// One engine step plus bookkeeping; how it ended decides what runs next
    /// ([`Schedule::after_step`]).
    async fn step(&mut self, engine: &mut SyncEngine, scope: Scope) -> Outcome {
        if let Some(why) = filesyncd_chunkstore::poison::poisoned() {
            // The daemon exits for the restart that reopens the database. A
            // step now would act on a half-recorded batch (placed files the
            // indexes do not know), e.g. take them for local changes.
            tracing::debug!(why, "step skipped: storage must be reopened");
            return Outcome::Retry;
        }
        // A step may take long (an offer waits for a quorum, a pull for its
        // bytes): meanwhile this node does not claim to be in sync.
        self.status.not_in_sync();
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
        let saved = self.parts.db.save(
            &touched,
            &engine.local,
            &self.parts.nodes,
            &mut self.local_root,
        );
        if let Err(e) = &saved {
            // Kept for the next step, which saves them again (a database
            // that failed a write stops the daemon instead: see `poison`).
            tracing::error!(error = %e, paths = touched.len(), "cannot save the local index; retried");
            engine.retouch(touched);
        }
        for (root, size) in engine.take_committed_files() {
            self.parts.servable.add_committed(root, size);
        }
        let outcome = match &res {
            _ if saved.is_err() => Outcome::Retry,
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
        // Kept by the engine for the paths each step changed (a pass over
        // the view and the index per step cost the size of the tree).
        let (cluster_root, raft_applied) = self
            .node
            .reader()
            .cluster_root()
            .map(|(r, a)| (Some(r), a.map_or(0, |l| l.index)))
            .unwrap_or((None, 0));
        let standing = Standing {
            pending: engine.pending(),
            applied: engine.applied(),
            local_root: self.local_root.root,
            cluster_root,
            raft_applied,
            held_back: engine.held_back(),
        };
        self.status.publish(&res, standing);
        outcome
    }

    /// Sweeps the version store (see [`super::gc`]); runs inside the loop,
    /// so no step runs meanwhile.
    fn sweep(&mut self, fs: &dyn crate::engine::fs::Fs) {
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
        match super::gc::sweep(p.store.as_ref(), &p.nodes, &p.servable, retained, Some(fs)) {
            Ok(r) => {
                self.status.swept(r.store.blob_bytes_freed);
                tracing::info!(
                    versions = r.versions,
                    unknown_trees = r.unknown_trees,
                    chunks_kept = r.chunks_kept,
                    blobs_removed = r.store.blobs_removed,
                    bytes_freed = r.store.blob_bytes_freed,
                    staged_removed = r.staged_removed,
                    ms = r.millis,
                    "version store swept"
                );
            }
            Err(e) => tracing::warn!(error = %e, "version store sweep failed"),
        }
    }
}
