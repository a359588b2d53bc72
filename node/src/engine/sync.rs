//! One engine step: scan → plan → execute, through the ports.
//!
//! [`Engine::step`] takes one read snapshot of what is committed
//! ([`Committed::snapshot`]: what changed since its last step, and the
//! records of the paths it decides, read per path: no copy of the committed
//! tree is kept), scans the given scope, plans, and runs the actions in
//! plan order:
//! - conflict copies are moved first ([`Materializer::conflict_copy`]);
//! - proposals go out as ONE batch; each outcome updates the local index
//!   (`Applied`/`Unchanged`: the content is that version; `Conflict`: the
//!   content was committed at the conflict path, so the local file is moved
//!   there; a delete's outcome forgets the path). A rejected op is not
//!   proposed again until the path's stat changes;
//! - fetches get unknown tree nodes (one round trip per tree level, each
//!   node checked against its hash) and then the missing chunks (each
//!   checked with blake3; all-zero chunks are never fetched) from the
//!   holders, and put them into the node store / chunk store;
//! - writes, directories, links and deletes go through the [`Materializer`],
//!   and record the stat they leave behind (no echo).
//!
//! A failed action is reported and retried by a later step; the step goes
//! on with the next action. The file-system work is synchronous: the daemon
//! should run steps on a blocking-friendly task.
//!
//! State kept between steps (in memory here; the daemon persists it): the
//! local index, the applied index of the last snapshot read, and the
//! tree-node store.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use filesyncd_chunkstore::chunker::Chunker;
use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::file_tree::FileTree;
use filesyncd_merkle::{ChunkEntry, Hash, MemNodeStore, MerkleError};

use super::fs::Fs;
use super::materialize::{Deleted, Materializer, WriteJob};
use super::plan::{
    plan, Action, ChunkView, Expect, GuardMemory, PlanConfig, PlanInput, Proposal, Scope,
    SkipReason, Verdict,
};
use super::ports::{ChunkFetcher, Committed, CommittedView, PortError, ProposeOp, ProposeOutcome};
use super::scan::{load_ignore, RacySet, ScanError, Scanner};
use super::types::{LocalEntry, Meta, NodeId, Stat, VersionId, VersionRecord};

pub(crate) mod fetch;
pub use fetch::{fetch_tree, pull, pull_many, ZeroChunks};

/// Why a step stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("committed state: {0}")]
    Port(#[from] PortError),
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    pub verdict: Option<Verdict>,
    pub proposed: usize,
    pub written: usize,
    pub deleted: usize,
    pub conflicts: usize,
    pub chunks_fetched: usize,
    /// Actions that failed (retried by a later step).
    pub errors: Vec<String>,
    /// Paths to scan again soon (e.g. a conflict copy just made).
    pub dirty: Vec<String>,
    /// Paths of the scope this step left for the next one, to step over at
    /// once: the scan's hash budget ran out ([`super::scan::HASH_BUDGET`]).
    pub deferred: Vec<String>,
    /// Local changes the plan withheld ([`Verdict::Pause`]) until confirmed.
    pub withheld: usize,
}

/// Writes of one step go out in batches of at most this many files
/// ([`Materializer::write_files`]: one flush, one fsync per directory, one
/// index commit per batch). The temps of a batch wait, written but not yet
/// renamed, until its flush: this bounds what a crash leaves to clean up.
pub const WRITE_BATCH: usize = 1024;
/// ... or of at most this many bytes (what one flush waits for).
pub const WRITE_BATCH_BYTES: u64 = 256 << 20;

/// Proposals of one step go out in groups of at most this many ops: each
/// group is offered to the voters and committed on its own (the offer state
/// a peer tracks, and what one failure sets back, stay bounded), and the
/// port splits a group into log entries of bounded bytes.
pub const PROPOSE_GROUP: usize = 1024;

/// Files held back as larger than the max file size that status lists at
/// most (one more is not listed, nor counted: the count reads "at least").
pub const MAX_HELD_BACK: usize = 1024;

/// A file held back as larger than the max file size
/// ([`SkipReason::TooLarge`](super::plan::SkipReason::TooLarge)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBack {
    pub size: u64,
    /// On disk here (not proposed), else a committed version (not fetched).
    pub local: bool,
}

/// A write whose chunk list is known, waiting for its batch.
struct PendingWrite {
    path: String,
    record: VersionRecord,
    expect: Expect,
    chunks: Vec<ChunkEntry>,
}

#[derive(Default)]
struct WriteBatch {
    items: Vec<PendingWrite>,
    bytes: u64,
}

impl WriteBatch {
    fn push(&mut self, w: PendingWrite) {
        self.bytes += w.record.meta.size;
        self.items.push(w);
    }
    fn full(&self) -> bool {
        self.items.len() >= WRITE_BATCH || self.bytes >= WRITE_BATCH_BYTES
    }
    fn take(&mut self) -> Vec<PendingWrite> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

/// The sync engine of one node.
pub struct Engine<C, F> {
    pub fs: Arc<dyn Fs>,
    pub store: Arc<dyn ChunkStore>,
    pub nodes: Arc<Mutex<MemNodeStore>>,
    pub chunker: Chunker,
    pub committed: C,
    pub fetcher: F,
    pub cfg: PlanConfig,
    pub local: BTreeMap<String, LocalEntry>,
    /// The applied index of the committed view the last step read (the
    /// view itself is read from `committed` per step, never copied here).
    applied: u64,
    rejected: HashMap<String, Stat>,
    /// Paths whose local-index entry changed since [`Engine::take_touched`].
    touched: BTreeSet<String>,
    /// File contents newly committed into the view since
    /// [`Engine::take_committed_files`].
    committed_files: Vec<(Hash, u64)>,
    /// Paths the next plan decides besides what its scan covers: those its
    /// last plan acted on (a failed or skipped action is decided again),
    /// those whose record or local entry changed since. Every other path
    /// is settled, so a step costs its scope and what changed, not the
    /// size of the tree ([`PlanInput::only`]).
    unsettled: BTreeSet<String>,
    /// The next plan decides every path (at start, after a plan that did
    /// not proceed, when the ignore rules changed).
    plan_all: bool,
    /// The local deletes a plan withheld ([`Verdict::Pause`]), as their
    /// top-most paths: every later step scans them too, so the withheld
    /// deletes are seen again (and stay withheld, and reported) until they
    /// are confirmed or the files come back, whatever the later steps' own
    /// scopes. A deleted folder is one path here, not a path per file, and
    /// scanning a path that is gone costs one stat.
    paused_scope: Option<Scope>,
    /// The mass-change guard's memory: recent changes, held folders.
    guard: GuardMemory,
    /// The ignore rules the last plan used.
    last_ignore: Option<super::ignore::Ignore>,
    /// What status reports, kept per path as entries and records change
    /// (see [`Engine::pending`]).
    pending: Pending,
    /// Files over the max file size, by path (at most [`MAX_HELD_BACK`]):
    /// added by the plan's `Skip(TooLarge)`, dropped after any step once
    /// the path no longer is one (see [`Engine::held_back`]).
    held_back: BTreeMap<String, HeldBack>,
    /// Files whose recorded content may be racily clean (hashed within a
    /// timestamp tick of their mtime, [`Fs::timestamp_tick_ns`]): the scan re-reads
    /// them even when their stat is unchanged, until a read finds them
    /// settled (bounded: [`RacySet`]).
    racy: RacySet,
}

/// Paths not in sync, maintained for the paths a step changed.
#[derive(Default)]
struct Pending {
    /// Local entries not yet committed.
    local: BTreeSet<String>,
    /// Paths whose committed state is not what this node holds.
    remote: BTreeSet<String>,
    /// Paths changed since the last refresh.
    changed: BTreeSet<String>,
    /// Refresh every path (at start: the caller may have loaded the index).
    all: bool,
}

impl Pending {
    fn refresh(&mut self, view: &dyn CommittedView, local: &BTreeMap<String, LocalEntry>) {
        if std::mem::take(&mut self.all) {
            self.changed.clear();
            self.local.clear();
            self.remote.clear();
            // Every path of the view and of the local index, in order: the
            // view streamed, the index walked beside it.
            let mut locals = local.iter().peekable();
            view.for_each(&mut |r| {
                while let Some((p, e)) = locals.next_if(|(p, _)| p.as_str() < r.path.as_str()) {
                    self.set(p, None, Some(e));
                }
                let l = locals.next_if(|(p, _)| **p == r.path).map(|(_, e)| e);
                self.set(&r.path, Some(&r), l);
            });
            for (p, e) in locals {
                self.set(p, None, Some(e));
            }
            return;
        }
        for p in std::mem::take(&mut self.changed) {
            self.set(&p, view.get(&p).as_ref(), local.get(&p));
        }
    }

    fn set(&mut self, p: &str, r: Option<&VersionRecord>, l: Option<&LocalEntry>) {
        let local = l.is_some_and(|e| e.version.is_none());
        let remote = match (r, l) {
            (Some(r), l) if !r.deleted => l.map(|e| &e.meta) != Some(&r.meta),
            (_, Some(e)) => e.version.is_some(),
            (_, None) => false,
        };
        for (set, on) in [(&mut self.local, local), (&mut self.remote, remote)] {
            if on {
                if !set.contains(p) {
                    set.insert(p.to_owned());
                }
            } else {
                set.remove(p);
            }
        }
    }
}

struct Chunks<'a> {
    /// For staged versions ([`super::stage::staged`]).
    fs: &'a dyn Fs,
    store: &'a dyn ChunkStore,
    /// Locked per lookup (servers read the same store meanwhile; a copy of
    /// the whole store per step cost the size of the tree).
    nodes: &'a Mutex<MemNodeStore>,
    zeros: ZeroChunks,
    /// Zero chunks met in the lists handed out.
    zero_seen: RefCell<HashSet<Hash>>,
}

impl ChunkView for Chunks<'_> {
    fn has_chunk(&self, h: &Hash) -> bool {
        self.zero_seen.borrow().contains(h) || self.store.has(h).unwrap_or(false)
    }
    fn is_staged(&self, root: &Hash, size: u64) -> bool {
        size >= super::stage::STAGE_MIN
            && super::stage::staged(self.fs, self.store, root, size).is_some()
    }
    fn chunk_list(&self, root: &Hash, size: u64) -> Option<Vec<ChunkEntry>> {
        let list = {
            let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            FileTree { root: *root, size }.chunks(&*nodes).ok()?
        };
        for c in &list {
            if self.zeros.is_zero(c) {
                self.zero_seen.borrow_mut().insert(c.hash);
            }
        }
        Some(list)
    }
}

impl<C: Committed, F: ChunkFetcher> Engine<C, F> {
    pub fn new(
        fs: Arc<dyn Fs>,
        store: Arc<dyn ChunkStore>,
        chunker: Chunker,
        committed: C,
        fetcher: F,
        cfg: PlanConfig,
    ) -> Self {
        Engine {
            fs,
            store,
            nodes: Arc::new(Mutex::new(MemNodeStore::new())),
            chunker,
            committed,
            fetcher,
            cfg,
            local: BTreeMap::new(),
            applied: 0,
            rejected: HashMap::new(),
            touched: BTreeSet::new(),
            committed_files: Vec::new(),
            unsettled: BTreeSet::new(),
            paused_scope: None,
            guard: GuardMemory::default(),
            plan_all: true,
            last_ignore: None,
            pending: Pending {
                all: true,
                ..Pending::default()
            },
            held_back: BTreeMap::new(),
            racy: RacySet::default(),
        }
    }

    /// The next plan decides every path, not only the scope and what
    /// changed (after the caller changed the engine's state or config
    /// outside a step).
    pub fn plan_all_next(&mut self) {
        self.plan_all = true;
        self.pending.all = true;
    }

    /// How many paths hold local changes not yet committed, and how many
    /// differ from what is committed (either way), as of the last step.
    pub fn pending(&self) -> (u64, u64) {
        (
            self.pending.local.len() as u64,
            self.pending.remote.len() as u64,
        )
    }

    /// The files held back as larger than the max file size (at most
    /// [`MAX_HELD_BACK`]), by path: a file on disk here that is not
    /// proposed, or a committed version that is not fetched. Kept from step
    /// to step while the path still is one.
    pub fn held_back(&self) -> &BTreeMap<String, HeldBack> {
        &self.held_back
    }

    fn hold_back(&mut self, path: String, held: HeldBack) {
        if self.held_back.get(&path) == Some(&held) {
            return;
        }
        let max = self.cfg.max_file_size;
        if held.local {
            tracing::warn!(
                path,
                size = held.size,
                max,
                "held back: the file is larger than --max-file-size (not synced; nothing deleted)"
            );
        } else {
            tracing::warn!(
                path,
                size = held.size,
                max,
                "not fetched: the committed version is larger than --max-file-size"
            );
        }
        if self.held_back.len() < MAX_HELD_BACK || self.held_back.contains_key(&path) {
            self.held_back.insert(path, held);
        }
    }

    /// Drops the held-back paths that no longer are over the max file size
    /// (changed on disk, a new version committed, the file removed): a
    /// `lstat` or a record lookup per held path, at most [`MAX_HELD_BACK`].
    fn recheck_held_back(&mut self, view: &dyn CommittedView) {
        let max = self.cfg.max_file_size;
        let (fs, local) = (&self.fs, &self.local);
        self.held_back.retain(|path, h| {
            if h.local {
                matches!(fs.lstat(path), Ok(Some(st))
                    if st.kind == super::types::FileKind::File
                        && st.size > max
                        && !local.get(path).is_some_and(|l| l.stat.unchanged(&st)))
            } else {
                view.get(path).is_some_and(|r| {
                    !r.deleted
                        && r.meta.is_file()
                        && r.meta.size > max
                        && local.get(path).map(|l| &l.meta) != Some(&r.meta)
                })
            }
        });
    }

    /// Start-up work before the first step: removes the temp files of
    /// writes a crash interrupted. Returns how many were removed.
    pub fn startup(&self) -> std::io::Result<u64> {
        let removed = super::materialize::remove_stale_temps(self.fs.as_ref())?;
        // Staged versions: a `.part` goes, one whose stamp a crash left
        // stale is re-verified (`stage::recover`).
        let r = super::stage::recover(self.fs.as_ref(), self.store.as_ref(), &self.chunker)?;
        if r != super::stage::Recovered::default() {
            tracing::info!(
                kept = r.kept,
                reindexed = r.reindexed,
                removed = r.removed,
                "staged versions checked"
            );
        }
        Ok(removed)
    }

    /// The applied index the committed view reflects.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    fn node(&self) -> NodeId {
        self.cfg.node
    }

    /// The paths whose local-index entry changed (set or removed) since the
    /// last call: what the daemon persists and re-hashes after a step, so
    /// that a step costs what changed, not the size of the index.
    pub fn take_touched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.touched)
    }

    /// Puts back paths a failed save did not persist: the next
    /// [`Engine::take_touched`] returns them again.
    pub fn retouch(&mut self, paths: BTreeSet<String>) {
        self.touched.extend(paths);
    }

    /// File contents (root, size) that entered the committed view since the
    /// last call (the daemon serves their chunks).
    pub fn take_committed_files(&mut self) -> Vec<(Hash, u64)> {
        std::mem::take(&mut self.committed_files)
    }

    fn set_local(&mut self, path: String, entry: LocalEntry) {
        self.touched.insert(path.clone());
        self.unsettled.insert(path.clone());
        self.pending.changed.insert(path.clone());
        self.local.insert(path, entry);
    }

    fn unset_local(&mut self, path: &str) {
        if self.local.remove(path).is_some() {
            self.touched.insert(path.to_owned());
            self.unsettled.insert(path.to_owned());
            self.pending.changed.insert(path.to_owned());
        }
    }

    /// The user asked for the changes at `paths` (a restore): the
    /// mass-change guard lets them out without a confirmation.
    pub fn exempt_from_guard(&mut self, now_ms: u64, paths: Vec<String>) {
        if !paths.is_empty() {
            self.guard.exempt(now_ms, paths);
        }
    }

    /// Scans `scope`, plans and executes (see the module doc).
    pub async fn step(&mut self, scope: Scope, now_ms: u64) -> Result<StepReport, StepError> {
        let res = self.step_inner(scope, now_ms).await;
        // Status reads the committed state as it is now (a later snapshot
        // than the step's is fine: the paths it changed are refreshed
        // again after the next step).
        match self.committed.snapshot() {
            Ok(snap) => {
                self.pending.refresh(snap.view.as_ref(), &self.local);
                if !self.held_back.is_empty() {
                    self.recheck_held_back(snap.view.as_ref());
                }
                if snap.view.failed().is_some() {
                    self.pending.all = true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "status not refreshed: committed state unreadable")
            }
        }
        res
    }

    async fn step_inner(&mut self, scope: Scope, now_ms: u64) -> Result<StepReport, StepError> {
        let scope = match &self.paused_scope {
            Some(paused) => paused.clone().union(scope),
            None => scope,
        };
        // One read snapshot for what changed and for the plan, so both see
        // the same applied index; dropped before any action runs.
        let snap = self.committed.snapshot()?;
        {
            let (plan_all, pending_all) = (self.plan_all, self.pending.all);
            let (unsettled, changed) = (&mut self.unsettled, &mut self.pending.changed);
            let files = &mut self.committed_files;
            snap.view.changed_since(self.applied, &mut |r| {
                if !r.deleted && r.meta.kind == super::types::Kind::File {
                    files.push((r.meta.root, r.meta.size));
                }
                // (A plan of every path, or a refresh of every path, is
                // next anyway: no copy of the path for it; at start that is
                // every path of the tree.)
                if !plan_all {
                    unsettled.insert(r.path.clone());
                }
                if !pending_all {
                    changed.insert(r.path);
                }
            });
        }
        if let Some(e) = snap.view.failed() {
            return Err(e.into());
        }
        self.applied = self.applied.max(snap.applied);
        let ignore = load_ignore(self.fs.as_ref());
        if self.last_ignore.as_ref() != Some(&ignore) {
            self.plan_all = true;
            self.last_ignore = Some(ignore.clone());
        }
        let scanner = Scanner {
            fs: self.fs.as_ref(),
            store: self.store.as_ref(),
            chunker: &self.chunker,
            ignore: &ignore,
            max_file_size: self.cfg.max_file_size,
            racy: &self.racy,
            racy_after_ns: i64::try_from(now_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000)
                .saturating_sub(self.fs.timestamp_tick_ns()),
        };
        let mut out = scanner.scan(scope, &self.local)?;
        let deferred = std::mem::take(&mut out.deferred);
        for p in std::mem::take(&mut out.settled) {
            self.racy.remove(&p);
        }
        self.racy.expire(now_ms);
        for p in std::mem::take(&mut out.racy) {
            self.racy.insert(p, now_ms);
        }
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            for t in &out.trees {
                t.store_into(&mut *nodes);
            }
        }
        self.guard.expire(now_ms);
        let mut p = {
            let chunks = Chunks {
                fs: self.fs.as_ref(),
                store: self.store.as_ref(),
                nodes: &self.nodes,
                zeros: ZeroChunks::default(),
                zero_seen: RefCell::new(HashSet::new()),
            };
            let ignored = |path: &str, dir: bool| ignore.is_ignored(path, dir);
            let all = self.plan_all || self.cfg.deletes_confirmed;
            plan(
                &self.cfg,
                &PlanInput {
                    disk: &out.view,
                    committed: snap.view.as_ref(),
                    local: &self.local,
                    chunks: &chunks,
                    ignored: &ignored,
                    now_ms,
                    applied: self.applied,
                    only: (!all).then_some(&self.unsettled),
                    guard: &self.guard,
                },
            )
        };
        // A plan made from a view that failed to read is not acted on.
        if let Some(e) = snap.view.failed() {
            self.plan_all = true;
            return Err(e.into());
        }
        drop(snap);
        // What the next plan decides besides its scope: the paths acted on
        // now (and, from here on, those whose entry or record changes). A
        // halted plan decided nothing for sure: the next one decides every
        // path. A paused one decided every path but the withheld ones,
        // which `paused_scope` brings back into every later step's scan.
        self.plan_all = matches!(p.verdict, Verdict::Halt(_));
        self.unsettled = p.acted_on();
        let withheld = p.withheld.len();
        if !matches!(p.verdict, Verdict::Halt(_)) {
            if self.cfg.deletes_confirmed {
                self.guard.clear();
            } else {
                self.guard.held = std::mem::take(&mut p.held);
                for (folder, since) in std::mem::take(&mut p.settling) {
                    self.guard.settling.insert(folder, since);
                }
                for path in std::mem::take(&mut p.passed) {
                    self.guard.record(now_ms, path);
                }
            }
        }
        match p.verdict {
            Verdict::Pause(_) => {
                let roots = crate::engine::watch::top_most(std::mem::take(&mut p.withheld));
                self.paused_scope = Some(Scope::Paths(roots));
            }
            Verdict::Proceed => self.paused_scope = None,
            Verdict::Halt(_) => {}
        }
        let mut rep = StepReport {
            verdict: Some(p.verdict.clone()),
            deferred,
            withheld,
            // Waiting for the rest of their burst: stepped over again soon
            // (the service retries a scope whose paths stay dirty).
            dirty: std::mem::take(&mut p.settling_paths),
            ..StepReport::default()
        };
        if let Verdict::Halt(reason) = &p.verdict {
            tracing::error!(%reason, "sync halted");
            return Ok(rep);
        }
        let mut batch: Vec<Proposal> = Vec::new();
        let mut moved: HashMap<String, Stat> = HashMap::new();
        let mut writes = WriteBatch::default();
        for a in p.actions {
            if !matches!(a, Action::Propose(_)) && !batch.is_empty() {
                self.propose(std::mem::take(&mut batch), &moved, now_ms, &mut rep)
                    .await?;
            }
            if let Action::Write {
                path,
                record,
                expect,
            } = a
            {
                match self.prepare_write(path, record, expect, now_ms) {
                    Ok(w) => writes.push(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "action failed; retrying later");
                        rep.errors.push(e);
                    }
                }
                if writes.full() {
                    self.flush_writes(&mut writes, now_ms, &mut rep);
                }
                continue;
            }
            // Writes go out before any action that could depend on them
            // (bookkeeping of other paths does not).
            if !matches!(
                a,
                Action::Record { .. } | Action::Forget { .. } | Action::Skip { .. }
            ) {
                self.flush_writes(&mut writes, now_ms, &mut rep);
            }
            self.execute(a, &mut batch, &mut moved, now_ms, &mut rep)
                .await;
        }
        self.flush_writes(&mut writes, now_ms, &mut rep);
        if !batch.is_empty() {
            self.propose(batch, &moved, now_ms, &mut rep).await?;
        }
        Ok(rep)
    }

    /// The chunk list of a version to write, after retiring the chunks of
    /// the content it replaces that it does not reuse (version store).
    fn prepare_write(
        &self,
        path: String,
        record: VersionRecord,
        expect: Expect,
        now_ms: u64,
    ) -> Result<PendingWrite, String> {
        let mut expect = expect;
        tracing::debug!(path, version = ?record.version, "sync action: write");
        let chunks = self
            .tree_chunks(record.meta.root, record.meta.size)
            .map_err(|e| format!("{path}: {e}"))?;
        if let Expect::Entry(stat) = &expect {
            if let Some((old_meta, old_list, old)) = self.replaced_only(&path, stat, &chunks) {
                // Mostly replaced large content keeps its inode: a second
                // name in the staging area, no byte copied. Otherwise (or if
                // that fails) the chunks the new version drops are stored.
                let dropped: u64 = old_list
                    .iter()
                    .filter(|c| old.binary_search(&c.hash).is_ok())
                    .map(|c| u64::from(c.len))
                    .sum();
                let linked = if old_meta.size >= super::stage::STAGE_MIN
                    && dropped.saturating_mul(2) >= old_meta.size
                {
                    super::stage::retire_by_link(
                        self.fs.as_ref(),
                        self.store.as_ref(),
                        &path,
                        stat,
                        old_meta.root,
                        old_meta.size,
                        &old_list,
                    )
                    .inspect_err(|e| tracing::debug!(path, error = %e, "old content not kept by link; its chunks are stored"))
                    .unwrap_or(None)
                } else {
                    None
                };
                if let Some(now) = linked {
                    // The link moved the target's ctime only.
                    expect = Expect::Entry(now);
                } else {
                    self.materializer(now_ms)
                        .retire_replaced(&path, stat, &old)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(PendingWrite {
            path,
            record,
            expect,
            chunks,
        })
    }

    /// Writes the queued versions as one batch
    /// ([`Materializer::write_files`]) and records what was placed.
    fn flush_writes(&mut self, writes: &mut WriteBatch, now_ms: u64, rep: &mut StepReport) {
        if writes.items.is_empty() {
            return;
        }
        let items = writes.take();
        let jobs: Vec<WriteJob<'_>> = items
            .iter()
            .map(|w| WriteJob {
                record: &w.record,
                chunks: &w.chunks,
                expect: w.expect,
            })
            .collect();
        let results = self.materializer(now_ms).write_files(&jobs);
        drop(jobs);
        for (w, res) in items.into_iter().zip(results) {
            match res {
                Ok(placed) => {
                    rep.written += 1;
                    if let Some(c) = placed.conflict {
                        rep.conflicts += 1;
                        rep.dirty.push(c);
                    }
                    self.set_local(
                        w.path,
                        LocalEntry::committed(w.record.meta, placed.stat, w.record.version),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "action failed; retrying later");
                    rep.errors.push(e.to_string());
                }
            }
        }
    }

    fn materializer(&self, now_ms: u64) -> Materializer<'_> {
        Materializer {
            fs: self.fs.as_ref(),
            store: self.store.as_ref(),
            chunker: &self.chunker,
            node: self.node(),
            now_ms,
        }
    }

    async fn execute(
        &mut self,
        a: Action,
        batch: &mut Vec<Proposal>,
        moved: &mut HashMap<String, Stat>,
        now_ms: u64,
        rep: &mut StepReport,
    ) {
        let m = self.materializer(now_ms);
        tracing::debug!(action = ?a, "sync action");
        let res: Result<(), String> = match a {
            Action::MakeConflictCopy {
                path,
                conflict_path,
                expect,
            } => match m.conflict_copy(&path, &conflict_path, &expect) {
                Ok(Some(stat)) => {
                    rep.conflicts += 1;
                    moved.insert(conflict_path, stat);
                    Ok(())
                }
                Ok(None) => {
                    rep.dirty.push(path);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            Action::Propose(p) => {
                let skip = match &p {
                    Proposal::Put { path, stat, .. } => self.rejected.get(path) == Some(stat),
                    Proposal::Delete { .. } => false,
                };
                if !skip {
                    batch.push(p);
                }
                Ok(())
            }
            Action::Fetch {
                path,
                root,
                size,
                holders,
                missing,
            } => self.fetch(&path, root, size, &holders, missing, rep).await,
            Action::Write { path, .. } => {
                // Batched by the step (`flush_writes`); never reaches here.
                Err(format!("{path}: write outside a batch"))
            }
            Action::Mkdir {
                path,
                record,
                expect,
            }
            | Action::Symlink {
                path,
                record,
                expect,
            } => {
                let res = if record.meta.is_dir() {
                    m.mkdir(&record, expect)
                } else {
                    m.symlink(&record, expect)
                };
                match res {
                    Ok(placed) => {
                        rep.written += 1;
                        if let Some(c) = placed.conflict {
                            rep.conflicts += 1;
                            rep.dirty.push(c);
                        }
                        self.set_local(
                            path,
                            LocalEntry::committed(record.meta, placed.stat, record.version),
                        );
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Action::Delete { path, expect, .. } => {
                let done = match self.keep_deleted(&path, &expect) {
                    Some(now) => m.delete_kept(&path, &now),
                    None => m.delete(&path, &expect),
                };
                match done {
                    Ok(Deleted::Removed | Deleted::AlreadyAbsent) => {
                        rep.deleted += 1;
                        self.unset_local(&path);
                        Ok(())
                    }
                    Ok(Deleted::Changed | Deleted::NotEmpty) => {
                        rep.dirty.push(path);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Action::Record { path, entry } => {
                self.set_local(path, entry);
                Ok(())
            }
            Action::Forget { path } => {
                self.unset_local(&path);
                Ok(())
            }
            Action::Skip {
                path,
                reason: SkipReason::TooLarge { size, local },
            } => {
                self.hold_back(path, HeldBack { size, local });
                Ok(())
            }
            Action::Skip {
                path,
                reason: SkipReason::UnsafeLink,
            } => {
                tracing::warn!(path, "symlink not synced: its target can lead outside the synced directory (--safe-links)");
                Ok(())
            }
            Action::Skip { path, reason } => {
                tracing::debug!(path, ?reason, "skipped");
                Ok(())
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "action failed; retrying later");
            rep.errors.push(e);
        }
    }

    /// The chunks of the committed content recorded at `path` (if the file
    /// there is still that content, `stat`) that `new` does not reuse: what
    /// a write of `new` must retire into the version store first.
    fn replaced_only(
        &self,
        path: &str,
        stat: &Stat,
        new: &[ChunkEntry],
    ) -> Option<(Meta, Vec<ChunkEntry>, Vec<Hash>)> {
        let l = self.local.get(path)?;
        if !l.meta.is_file() || l.version.is_none() || !l.stat.unchanged(stat) {
            return None;
        }
        let old = self.tree_chunks(l.meta.root, l.meta.size).ok()?;
        let keep: HashSet<Hash> = new.iter().map(|c| c.hash).collect();
        // Zero chunks are never stored (a write makes them from nothing).
        let zeros = ZeroChunks::default();
        let mut only: Vec<Hash> = old
            .iter()
            .filter(|c| !keep.contains(&c.hash) && !zeros.is_zero(c))
            .map(|c| c.hash)
            .collect();
        only.sort_unstable();
        only.dedup();
        Some((l.meta.clone(), old, only))
    }

    /// Before a delete of a large committed file: keeps its content as a
    /// staged version by a second name for its inode (no byte copied, where
    /// storing its chunks would write it all again). Returns the stat the
    /// delete must now expect (the link moved its ctime), or `None` to
    /// delete the usual way (small, not what was committed, or the link
    /// failed).
    fn keep_deleted(&self, path: &str, expect: &Stat) -> Option<Stat> {
        let l = self.local.get(path)?;
        if !l.meta.is_file()
            || l.version.is_none()
            || l.meta.size < super::stage::STAGE_MIN
            || !l.stat.unchanged(expect)
        {
            return None;
        }
        let list = self.tree_chunks(l.meta.root, l.meta.size).ok()?;
        super::stage::retire_by_link(
            self.fs.as_ref(),
            self.store.as_ref(),
            path,
            expect,
            l.meta.root,
            l.meta.size,
            &list,
        )
        .inspect_err(|e| tracing::debug!(path, error = %e, "deleted content not kept by link; its chunks are stored"))
        .unwrap_or(None)
    }

    /// The chunk list of a version whose tree nodes are local.
    fn tree_chunks(&self, root: Hash, size: u64) -> Result<Vec<ChunkEntry>, MerkleError> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        FileTree { root, size }.chunks(&*nodes)
    }

    /// Sends the proposals in groups of at most [`PROPOSE_GROUP`] (each
    /// group offered, acknowledged and committed on its own; the next group
    /// announced while one is in flight) and applies the outcomes locally.
    /// A group that fails stops the step: the groups before it are recorded.
    async fn propose(
        &mut self,
        batch: Vec<Proposal>,
        moved: &HashMap<String, Stat>,
        now_ms: u64,
        rep: &mut StepReport,
    ) -> Result<(), StepError> {
        let mut groups = Vec::with_capacity(batch.len().div_ceil(PROPOSE_GROUP));
        let mut all = batch.into_iter();
        loop {
            let g: Vec<Proposal> = all.by_ref().take(PROPOSE_GROUP).collect();
            if g.is_empty() {
                break;
            }
            groups.push(g);
        }
        let mut groups = groups.into_iter().peekable();
        while let Some(group) = groups.next() {
            let ops = self.ops_of(&group);
            if let Some(next) = groups.peek() {
                self.committed.announce(&self.ops_of(next));
            }
            self.propose_group(group, ops, moved, now_ms, rep).await?;
        }
        Ok(())
    }

    fn ops_of(&self, batch: &[Proposal]) -> Vec<ProposeOp> {
        let node = self.node();
        batch
            .iter()
            .map(|p| match p {
                Proposal::Put {
                    path,
                    meta,
                    mtime_ns,
                    base,
                    ..
                } => ProposeOp::Put {
                    path: path.clone(),
                    meta: meta.clone(),
                    mtime_ns: *mtime_ns,
                    origin: node,
                    base: *base,
                    holders: super::plan::local_holders(node, meta),
                },
                Proposal::Delete { path, base } => ProposeOp::Delete {
                    path: path.clone(),
                    base: *base,
                },
            })
            .collect()
    }

    /// Sends one group of proposals and applies the outcomes locally.
    async fn propose_group(
        &mut self,
        batch: Vec<Proposal>,
        ops: Vec<ProposeOp>,
        moved: &HashMap<String, Stat>,
        now_ms: u64,
        rep: &mut StepReport,
    ) -> Result<(), StepError> {
        let outcomes = self.committed.propose(ops).await?;
        for (p, o) in batch.iter().zip(&outcomes) {
            tracing::debug!(path = p.path(), outcome = ?o, "proposal outcome");
        }
        rep.proposed += batch.len();
        // Puts found to hold a committed version (`Unchanged`): when that is
        // not the live one, the live one is placed by the next step.
        let mut unchanged: Vec<(String, VersionId)> = Vec::new();
        for (p, o) in batch.into_iter().zip(outcomes) {
            match (p, o) {
                (
                    Proposal::Put {
                        path, meta, stat, ..
                    },
                    o @ (ProposeOutcome::Applied(v) | ProposeOutcome::Unchanged(v)),
                ) => {
                    if matches!(o, ProposeOutcome::Unchanged(_)) {
                        unchanged.push((path.clone(), v));
                    }
                    let stat = moved.get(&path).copied().unwrap_or(stat);
                    self.rejected.remove(&path);
                    self.set_local(path, LocalEntry::committed(meta, stat, v));
                }
                (
                    Proposal::Put {
                        path, meta, stat, ..
                    },
                    ProposeOutcome::Conflict {
                        path: cpath,
                        version,
                    },
                ) => {
                    let stat = moved.get(&path).copied().unwrap_or(stat);
                    match self
                        .materializer(now_ms)
                        .conflict_copy(&path, &cpath, &stat)
                    {
                        Ok(Some(st)) => {
                            rep.conflicts += 1;
                            self.set_local(cpath, LocalEntry::committed(meta, st, version));
                        }
                        Ok(None) => rep.dirty.push(path),
                        Err(e) => rep.errors.push(e.to_string()),
                    }
                }
                (Proposal::Put { path, .. }, ProposeOutcome::Retry(why)) => {
                    tracing::info!(path, why, "proposal not committed: offered again");
                    rep.dirty.push(path);
                }
                (Proposal::Put { path, stat, .. }, ProposeOutcome::Rejected(why)) => {
                    tracing::warn!(path, why, "proposal rejected");
                    rep.errors.push(format!("{path}: rejected: {why}"));
                    self.rejected.insert(path, stat);
                }
                (Proposal::Delete { path, .. }, _) => {
                    self.unset_local(&path);
                }
                (p, o) => rep
                    .errors
                    .push(format!("{}: unexpected outcome {o:?}", p.path())),
            }
        }
        if !unchanged.is_empty() {
            let snap = self.committed.snapshot()?;
            for (path, v) in unchanged {
                if snap.view.get(&path).is_none_or(|r| r.version != v) {
                    rep.deferred.push(path);
                }
            }
        }
        Ok(())
    }
}
