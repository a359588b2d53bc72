//! The data of a plan: its inputs' disk view and settings, its verdict and
//! its actions (the rules that produce them are in `plan.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use filesyncd_merkle::Hash;

use super::names;
use super::types::{DiskEntry, FileKind, LocalEntry, Meta, NodeId, Stat, VersionId, VersionRecord};

/// Settings of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanConfig {
    /// The cluster id the marker must hold.
    pub cluster_id: String,
    /// This node (names conflict copies).
    pub node: NodeId,
    /// Local deletes are withheld ([`Verdict::Pause`]) when more than this
    /// share of the known entries vanished in one scan ...
    pub max_vanished_share: f64,
    /// ... and at least this many did.
    pub min_vanished: usize,
    /// The user confirmed: an empty root, a mass delete or a mass change
    /// proceeds (`filesyncd adopt`, `filesyncd confirm`).
    pub deletes_confirmed: bool,
    /// The mass-change guard (`None`: off): see [`MassChangeGuard`].
    pub guard: Option<MassChangeGuard>,
    /// Largest file this node syncs (`--max-file-size`): a larger file on
    /// disk is held back (not hashed, never proposed, never taken as
    /// deleted), a larger committed version is not fetched
    /// ([`SkipReason::TooLarge`]).
    pub max_file_size: u64,
    /// `--safe-links`: a symlink whose target is absolute or climbs above
    /// the root ([`names::link_escapes_root`](super::names::link_escapes_root))
    /// is neither proposed from here nor made here
    /// ([`SkipReason::UnsafeLink`]).
    pub safe_links: bool,
}

/// Holds back a step that would replace or delete more than `share` of a
/// folder's committed files at once, in a folder (at any depth, the root
/// included) of at least `min_files` of them: its replacements and deletes
/// under that folder are withheld ([`Verdict::Pause`] with
/// [`PauseReason::MassChange`]) until confirmed; every other action,
/// inside the folder or not, goes on. New files are never held.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MassChangeGuard {
    /// In (0, 1].
    pub share: f64,
    /// At least 1.
    pub min_files: usize,
}

impl Default for MassChangeGuard {
    /// 30% of a folder of at least 100 files.
    fn default() -> MassChangeGuard {
        MassChangeGuard {
            share: 0.3,
            min_files: 100,
        }
    }
}

/// How long a file replaced or deleted here still counts toward the
/// mass-change guard after it went out: a rewrite spread over many steps
/// (the watcher delivers a burst in pieces; a script or ransomware works
/// file by file) trips the guard once the distinct files it touched
/// within this window exceed the share. A file edited again and again
/// counts once.
pub const GUARD_WINDOW_MS: u64 = 30_000;

/// How long the changes of a burst in a guarded folder wait for the rest
/// of the burst before they go out: the watcher delivers a burst in
/// pieces, and a piece below the trip count would otherwise go out before
/// the rest shows the mass change. Only a folder the guard watches (at
/// least `min_files` files) with at least a quarter of the trip count of
/// changes at once waits; an ordinary save of a few files never does.
pub const GUARD_SETTLE_MS: u64 = 1_500;

/// Most folders the guard tracks as settling (the rest go out at once).
pub const GUARD_SETTLING_MAX: usize = 4_096;

/// How long a path the user asked to change (a restore) stays exempt
/// from the guard: time for the engine to see and commit the change.
pub const GUARD_EXEMPT_MS: u64 = 600_000;

/// Most changes the guard remembers within [`GUARD_WINDOW_MS`] (the
/// oldest are forgotten first).
pub const GUARD_RECENT_MAX: usize = 65_536;

/// A folder the mass-change guard holds: its changes wait for a
/// confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldFolder {
    /// "" is the root.
    pub folder: String,
    /// Changes counted when it tripped (recent ones included).
    pub changed: usize,
    /// Committed files known under it then.
    pub known: usize,
}

/// What the mass-change guard remembers between plans (the engine keeps
/// it; the plan reads it): the distinct files replaced or deleted here
/// that went out within [`GUARD_WINDOW_MS`], counted per folder, and the
/// folders held.
#[derive(Clone, Debug, Default)]
pub struct GuardMemory {
    /// (time in ms, path), oldest first; an entry whose time is not the
    /// path's in `latest` is stale (the path went out again since). At
    /// most [`GUARD_RECENT_MAX`].
    recent: std::collections::VecDeque<(u64, String)>,
    /// Each remembered path's latest time.
    latest: HashMap<String, u64>,
    /// How many remembered paths lie under each folder ("" is the root).
    per_folder: HashMap<String, usize>,
    /// Held until confirmed, top-most, by folder.
    pub held: Vec<HeldFolder>,
    /// Paths whose changes the user asked for (a restore), with when:
    /// never counted nor held; forgotten after [`GUARD_EXEMPT_MS`]. At
    /// most [`GUARD_RECENT_MAX`].
    exempt: HashMap<String, u64>,
    /// Folders whose burst of changes was first seen at this time (ms):
    /// its changes wait until [`GUARD_SETTLE_MS`] after it; forgotten
    /// after [`GUARD_WINDOW_MS`]. At most [`GUARD_SETTLING_MAX`].
    pub settling: HashMap<String, u64>,
}

impl GuardMemory {
    /// Remembered files under `folder`.
    pub fn recent_under(&self, folder: &str) -> usize {
        self.per_folder.get(folder).copied().unwrap_or(0)
    }

    /// Remembered files in all.
    pub fn recent_len(&self) -> usize {
        self.latest.len()
    }

    /// The user asked for changes at `paths` (beyond the bound, the rest
    /// are not exempt: the guard may hold them, a confirmation lets them
    /// out).
    pub fn exempt(&mut self, now_ms: u64, paths: Vec<String>) {
        for p in paths {
            if self.exempt.len() >= GUARD_RECENT_MAX && !self.exempt.contains_key(&p) {
                break;
            }
            self.exempt.insert(p, now_ms);
        }
    }

    /// Whether the change at `path` was asked for.
    pub fn is_exempt(&self, path: &str) -> bool {
        self.exempt.contains_key(path)
    }

    /// Whether `path` is remembered (it counts already).
    pub fn remembers(&self, path: &str) -> bool {
        self.latest.contains_key(path)
    }

    /// `path` was replaced or deleted here and went out at `now_ms`.
    pub fn record(&mut self, now_ms: u64, path: String) {
        if self.recent.len() == GUARD_RECENT_MAX {
            self.forget_oldest();
        }
        if self.latest.insert(path.clone(), now_ms).is_none() {
            for f in folders_of(&path) {
                *self.per_folder.entry(f.to_owned()).or_default() += 1;
            }
        }
        self.recent.push_back((now_ms, path));
    }

    /// Forgets what went out before the window that ends at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| t.saturating_add(GUARD_WINDOW_MS) < now_ms)
        {
            self.forget_oldest();
        }
        if !self.exempt.is_empty() {
            self.exempt
                .retain(|_, t| t.saturating_add(GUARD_EXEMPT_MS) >= now_ms);
        }
        if !self.settling.is_empty() {
            self.settling
                .retain(|_, t| t.saturating_add(GUARD_WINDOW_MS) >= now_ms);
        }
    }

    /// Everything confirmed: nothing held, nothing counted.
    pub fn clear(&mut self) {
        *self = GuardMemory::default();
    }

    fn forget_oldest(&mut self) {
        let Some((t, path)) = self.recent.pop_front() else {
            return;
        };
        if self.latest.get(&path) != Some(&t) {
            return; // stale: a later entry of the path stays
        }
        self.latest.remove(&path);
        for f in folders_of(&path) {
            if let Some(n) = self.per_folder.get_mut(f) {
                *n -= 1;
                if *n == 0 {
                    self.per_folder.remove(f);
                }
            }
        }
    }
}

/// The folders `path` lies under, the root ("") first.
pub fn folders_of(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(path.match_indices('/').map(move |(i, _)| &path[..i]))
}

impl MassChangeGuard {
    /// The fewest changes in one folder that can trip the guard.
    pub fn min_changes(&self) -> usize {
        (self.share * self.min_files as f64).floor() as usize + 1
    }

    /// Whether `changed` of `known` files trips it.
    pub fn trips(&self, changed: usize, known: usize) -> bool {
        known >= self.min_files && changed as f64 > self.share * known as f64
    }
}

/// Default of `--max-file-size`: 64 GiB. A file's chunk list is held in
/// memory by a write or a pull (48 bytes a chunk: about 100 MiB for 64 GiB
/// at the chunker's ~40 KiB average).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

/// Largest `--max-file-size` allowed: a file of it has at most
/// [`MAX_EXPANDED_CHUNKS`](filesyncd_merkle::file_tree::MAX_EXPANDED_CHUNKS)
/// chunks even if every chunk is of the chunker's minimum 24 KiB (8 Mi
/// chunks of 24 KiB), so every file the setting admits can be expanded.
pub const MAX_MAX_FILE_SIZE: u64 = 192 << 30;

impl PlanConfig {
    /// Defaults: pause when more than half of the known entries, and at
    /// least 10, vanished at once; files up to [`DEFAULT_MAX_FILE_SIZE`].
    pub fn new(cluster_id: impl Into<String>, node: NodeId) -> PlanConfig {
        PlanConfig {
            cluster_id: cluster_id.into(),
            node,
            max_vanished_share: 0.5,
            min_vanished: 10,
            deletes_confirmed: false,
            guard: Some(MassChangeGuard::default()),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            safe_links: false,
        }
    }
}

/// What the marker file held when scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Its content, trimmed.
    Found(String),
    Missing,
    Unreadable(String),
}

/// Which paths a scan looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole tree.
    Full,
    /// These paths and everything under them.
    Paths(Vec<String>),
}

impl Scope {
    /// Whether the scan looked at `path`.
    pub fn covers(&self, path: &str) -> bool {
        match self {
            Scope::Full => true,
            Scope::Paths(ps) => ps.iter().any(|p| {
                path == p
                    || (path.len() > p.len()
                        && path.starts_with(p.as_str())
                        && path.as_bytes()[p.len()] == b'/')
            }),
        }
    }

    /// Whether a scan of `self` looked at everything `other` names.
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Full, _) => true,
            (Scope::Paths(_), Scope::Full) => false,
            (Scope::Paths(_), Scope::Paths(ps)) => ps.iter().all(|p| self.covers(p)),
        }
    }

    /// The scope that covers both.
    pub fn union(self, other: Scope) -> Scope {
        match (self, other) {
            (Scope::Full, _) | (_, Scope::Full) => Scope::Full,
            (Scope::Paths(mut x), Scope::Paths(y)) => {
                x.extend(y);
                Scope::Paths(crate::engine::watch::top_most(x))
            }
        }
    }
}

/// A scan's result, as the plan reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskView {
    /// Every syncable, non-ignored entry found within `scope`.
    pub entries: BTreeMap<String, DiskEntry>,
    pub scope: Scope,
    pub marker: Marker,
    /// The root holds nothing but the daemon's own names.
    pub root_empty: bool,
    /// Paths within `scope` that were not looked at, nor anything under
    /// them: directories that could not be read, and what the scan left for
    /// the next one (its hash budget ran out).
    pub unreadable: Vec<String>,
}

impl DiskView {
    /// Whether the scan looked at `path` (absence from `entries` then means
    /// it is not on disk).
    pub fn covers(&self, path: &str) -> bool {
        self.coverage().covers(path)
    }

    /// [`DiskView::covers`] for many paths: built once, each question costs
    /// the depth of the path (where `Scope::covers` costs the scope's size,
    /// which made a plan of n paths under a scope of n paths quadratic).
    pub fn coverage(&self) -> Coverage<'_> {
        Coverage {
            scope: match &self.scope {
                Scope::Full => None,
                Scope::Paths(ps) => Some(ps.iter().map(String::as_str).collect()),
            },
            unreadable: self.unreadable.iter().map(String::as_str).collect(),
        }
    }
}

/// What a scan looked at, indexed (see [`DiskView::coverage`]).
#[derive(Debug)]
pub struct Coverage<'a> {
    /// `None`: everything.
    scope: Option<HashSet<&'a str>>,
    unreadable: HashSet<&'a str>,
}

impl Coverage<'_> {
    pub fn covers(&self, path: &str) -> bool {
        let under = |set: &HashSet<&str>| {
            path.match_indices('/')
                .map(|(i, _)| &path[..i])
                .chain([path])
                .any(|a| set.contains(a))
        };
        self.scope.as_ref().is_none_or(under) && !under(&self.unreadable)
    }
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub verdict: Verdict,
    /// In execution order (see the module doc of `plan.rs`).
    pub actions: Vec<Action>,
    /// The paths whose local changes a [`Verdict::Pause`] withheld.
    pub withheld: Vec<String>,
    /// Replacements and deletes of committed files the plan lets out:
    /// the engine records them in its [`GuardMemory`].
    pub passed: Vec<String>,
    /// The folders the mass-change guard holds after this plan.
    pub held: Vec<HeldFolder>,
    /// Folders whose burst of changes is settling, first seen when (ms).
    pub settling: Vec<(String, u64)>,
    /// Changes that wait for their folder's burst to settle: the engine
    /// steps over them again soon ([`GUARD_SETTLE_MS`]).
    pub settling_paths: Vec<String>,
}

impl Plan {
    pub(super) fn halt(reason: HaltReason) -> Plan {
        Plan {
            verdict: Verdict::Halt(reason),
            actions: Vec::new(),
            withheld: Vec::new(),
            passed: Vec::new(),
            held: Vec::new(),
            settling: Vec::new(),
            settling_paths: Vec::new(),
        }
    }

    /// Every path an action of this plan names (a conflict copy's new name
    /// included): what the next incremental plan must decide again
    /// ([`PlanInput::only`](super::plan::PlanInput::only)).
    ///
    /// A path held back as too large (or an unsafe link) is not: it is
    /// settled until its file
    /// or its record changes (the watcher or the view reports it), so that
    /// a later plan that does not scan it never mistakes it for absent.
    pub fn acted_on(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for a in &self.actions {
            if let Action::Skip {
                reason: SkipReason::TooLarge { .. } | SkipReason::UnsafeLink,
                ..
            } = a
            {
                continue;
            }
            out.insert(a.path().to_owned());
            if let Action::MakeConflictCopy { conflict_path, .. } = a {
                out.insert(conflict_path.clone());
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Proceed,
    /// Nothing at all is done until the cause is fixed.
    Halt(HaltReason),
    /// Local delete proposals are withheld until confirmed.
    Pause(PauseReason),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HaltReason {
    #[error(
        "the marker file {} is missing: is the directory mounted?",
        names::MARKER
    )]
    MarkerMissing,
    #[error("the marker file cannot be read: {0}")]
    MarkerUnreadable(String),
    #[error("the marker holds cluster id {found:?}, expected {expected:?}")]
    WrongMarker { found: String, expected: String },
    #[error("the directory is empty but {known} entries are known: unmounted?")]
    RootEmpty { known: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PauseReason {
    #[error("{vanished} of {known} known entries vanished at once: confirm the deletes")]
    MassDelete { vanished: usize, known: usize },
    #[error(
        "{changed} of the {known} files under {} replaced or deleted at once{}: held until confirmed",
        if folder.is_empty() { "the root" } else { folder.as_str() },
        if *folders > 1 { format!(" (and {} more folders)", folders - 1) } else { String::new() }
    )]
    MassChange {
        /// The first folder held ("" is the root).
        folder: String,
        changed: usize,
        known: usize,
        /// How many folders (top-most) are held.
        folders: usize,
    },
}

/// What the materializer must find at a path before replacing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Absent,
    /// This entry, unchanged ([`Stat::same_entry`]).
    Entry(Stat),
}

impl Expect {
    /// Whether `current` (an `lstat`, `None` = absent) is what was expected.
    pub fn matches(&self, current: Option<&Stat>) -> bool {
        match (self, current) {
            (Expect::Absent, None) => true,
            (Expect::Entry(s), Some(c)) => s.same_entry(c),
            _ => false,
        }
    }
}

/// Chunks a write needs that the store lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// These chunks (each once).
    Chunks(Vec<Hash>),
    /// The file's tree is not known locally: diff it against the holders.
    Tree,
}

/// A change proposed to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    Put {
        path: String,
        meta: Meta,
        mtime_ns: i64,
        /// Compare-and-set base: the version the content derives from.
        base: Option<VersionId>,
        /// The stat the content was hashed at (recorded in the local index).
        stat: Stat,
    },
    Delete {
        path: String,
        base: VersionId,
    },
}

impl Proposal {
    pub fn path(&self) -> &str {
        match self {
            Proposal::Put { path, .. } | Proposal::Delete { path, .. } => path,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The file was still being written when scanned.
    RetryLater,
    /// The committed view is older than what the engine already recorded.
    Lagging,
    /// A committed path or symlink target this node cannot materialize.
    Invalid,
    /// A file larger than [`PlanConfig::max_file_size`]: on disk here
    /// (`local`: held back, not proposed) or a committed version (not
    /// fetched). Reported on status until the path changes.
    TooLarge { size: u64, local: bool },
    /// A symlink that can lead outside the root, with `--safe-links`: on
    /// disk here (not proposed) or committed (not made here).
    UnsafeLink,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Get the chunks of `root` that the store lacks from `holders`.
    Fetch {
        path: String,
        root: Hash,
        size: u64,
        holders: Vec<NodeId>,
        missing: Missing,
    },
    /// Materialize the file version `record` at `path`.
    Write {
        path: String,
        record: VersionRecord,
        expect: Expect,
    },
    /// Create the directory (or set its mode).
    Mkdir {
        path: String,
        record: VersionRecord,
        expect: Expect,
    },
    Symlink {
        path: String,
        record: VersionRecord,
        expect: Expect,
    },
    /// Remove the entry, which must still be `expect` (the last applied
    /// version): its chunks go to the store first. `version` is the
    /// tombstone (`None`: the path's history was dropped).
    Delete {
        path: String,
        version: Option<VersionId>,
        expect: Stat,
    },
    Propose(Proposal),
    /// Move the local entry (still `expect`) to `conflict_path`.
    MakeConflictCopy {
        path: String,
        conflict_path: String,
        expect: Stat,
    },
    /// Update the local index only.
    Record {
        path: String,
        entry: LocalEntry,
    },
    /// Drop the path from the local index.
    Forget {
        path: String,
    },
    Skip {
        path: String,
        reason: SkipReason,
    },
}

impl Action {
    pub fn path(&self) -> &str {
        match self {
            Action::Fetch { path, .. }
            | Action::Write { path, .. }
            | Action::Mkdir { path, .. }
            | Action::Symlink { path, .. }
            | Action::Delete { path, .. }
            | Action::MakeConflictCopy { path, .. }
            | Action::Record { path, .. }
            | Action::Forget { path }
            | Action::Skip { path, .. } => path,
            Action::Propose(p) => p.path(),
        }
    }

    /// Sort key implementing the execution order; ties keep plan order
    /// (the sort is stable).
    pub(super) fn order_key(&self) -> (u8, i64) {
        let depth = names::depth(self.path()) as i64;
        match self {
            Action::MakeConflictCopy { .. } => (0, 0),
            Action::Propose(Proposal::Delete { .. }) => (1, -depth),
            Action::Propose(Proposal::Put { .. }) => (2, depth),
            Action::Fetch { .. } => (3, depth),
            Action::Write { expect, .. }
            | Action::Mkdir { expect, .. }
            | Action::Symlink { expect, .. } => match expect {
                Expect::Entry(s) if s.kind == FileKind::Dir && !self.is_mkdir() => (6, depth),
                _ => (4, depth),
            },
            Action::Delete { .. } => (5, -depth),
            Action::Record { .. } | Action::Forget { .. } | Action::Skip { .. } => (7, 0),
        }
    }

    fn is_mkdir(&self) -> bool {
        matches!(self, Action::Mkdir { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "a.b", "a-", "ab"], 1..4)
            .prop_map(|c| c.join("/"))
    }

    proptest! {
        /// The indexed coverage answers as the scope's own (linear) rule.
        #[test]
        fn coverage_agrees_with_the_scope(
            full in any::<bool>(),
            scope in proptest::collection::vec(path(), 0..6),
            unreadable in proptest::collection::vec(path(), 0..3),
            asked in proptest::collection::vec(path(), 1..12),
        ) {
            let view = DiskView {
                entries: BTreeMap::new(),
                scope: if full { Scope::Full } else { Scope::Paths(scope) },
                marker: Marker::Missing,
                root_empty: false,
                unreadable: unreadable.clone(),
            };
            let c = view.coverage();
            for p in &asked {
                let want = view.scope.covers(p) && !Scope::Paths(unreadable.clone()).covers(p);
                prop_assert_eq!(c.covers(p), want, "{}", p);
            }
        }
    }
}
