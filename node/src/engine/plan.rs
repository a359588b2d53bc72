//! The pure decision step: what to do about each path.
//!
//! [`plan`] reads four views and returns a [`Plan`]; it does no I/O, reads no
//! clock (the caller passes `now_ms`) and is deterministic, so every rule is
//! a table-driven unit test (`plan_tests.rs`).
//!
//! # Inputs, per path
//! - **disk** `d`: what the scan found — absent, present with its content
//!   ([`Meta`]) and stat, or *unstable* (still being written). Paths outside
//!   the scan's [`Scope`] were not looked at: they are assumed to be what the
//!   local index says (and every write re-checks the target before rename).
//! - **committed** `t`: the newest record of the path at the applied index,
//!   tombstones included. Contract: for every path of `local` and of the
//!   scanned disk the caller passes its record if it has one; a path with no
//!   record has never been committed or its history was dropped.
//! - **local** `l`: what the engine last materialized or proposed
//!   ([`LocalEntry`]): content, stat, committed version, base.
//! - **chunks**: which chunks the store holds and each root's chunk list
//!   ([`ChunkView`]).
//!
//! # Guards (checked first)
//! 1. The marker ([`MARKER`](super::names::MARKER)) missing, unreadable or
//!    holding another cluster id → [`Verdict::Halt`], no action at all (an
//!    unmounted or foreign directory must not be written or emptied).
//! 2. The root is empty while the local index knows committed entries →
//!    `Halt`, unless `deletes_confirmed`.
//! 3. More than `max_vanished_share` of the known entries (and at least
//!    `min_vanished` of them) vanished from disk in this scan →
//!    [`Verdict::Pause`]: every other action proceeds, the local delete
//!    proposals are withheld until `deletes_confirmed`.
//!
//! # Rules (`b` = the base the local content derives from, [`LocalEntry::derived_from`])
//! - ignored or unsyncable path → nothing (`Skip` for unsyncable committed paths);
//! - `d` unstable → `Skip(RetryLater)`; `d` a file over the max file size
//!   (never hashed) → `Skip(TooLarge)`: nothing proposed, written or
//!   deleted there;
//! - a write of a committed file over the max file size → `Skip(TooLarge)`
//!   instead (nothing fetched);
//! - with `safe_links`, a symlink that can lead outside the root, on disk
//!   or committed → `Skip(UnsafeLink)`: nothing proposed, made or deleted
//!   at the path;
//! - `d` absent: `t` live at `b` → propose Delete(base `b`); `t` live, older
//!   than `b` → `Skip(Lagging)`; `t` live otherwise → write `t` (a local
//!   delete loses against newer content); `t` dead or none → `Forget`.
//! - `d` present and equal to `l.meta` with `l.version = v` (unchanged since
//!   recorded): `t.version == v` → in sync (`Record` a refreshed stat only);
//!   `t` older → `Skip(Lagging)`; `t` newer: dead → `Delete` (expecting the
//!   scanned stat: never unseen data), same content → `Record`, else write
//!   `t`; no `t` at all → `Delete`.
//! - otherwise (a local change, or content never recorded): `t` none →
//!   propose Put(base none); `t` dead → propose Put(base = the tombstone: a
//!   modification wins over a delete); `t` live with the same content →
//!   `Record`; `t` live at `b`, or older than `b` → propose Put(base `b`);
//!   `t` newer but this node's own change (its outcome was lost in a crash
//!   or a leader change) → propose Put(base `t`): compare-and-set means
//!   every version up to `t` was seen here, so no conflict copy;
//!   both directories → apply `t`'s mode (`Mkdir`); else both changed →
//!   `MakeConflictCopy` (move the local content aside, propose it at the
//!   conflict name) and write `t`.
//! - a remote delete of a directory that still holds surviving entries on
//!   disk becomes a proposal to keep it (Put, base the tombstone).
//!
//! **No echo**: content the engine materialized is recorded with its stat, so
//! the next scan finds it unchanged and the rules above yield nothing.
//!
//! # Order of the actions
//! Conflict copies; proposals (deletes deepest first, then puts shallowest
//! first, as the index wants parents before children); fetches; writes,
//! directories and links (shallowest first); deletes (deepest first); last,
//! writes that replace a directory by a non-directory.

use std::collections::{BTreeMap, BTreeSet};

use filesyncd_merkle::{ChunkEntry, Hash};

use super::names::{self, conflict_name};
use super::ports::CommittedView;
use super::types::{
    DiskEntry, FileKind, Kind, LocalEntry, Meta, NodeId, Stat, VersionId, VersionRecord,
};

pub use super::plan_types::*;

/// What the plan needs to know about chunks.
pub trait ChunkView {
    /// Whether the store holds the chunk (a zero-filled chunk may count as held).
    fn has_chunk(&self, hash: &Hash) -> bool;
    /// The chunk list of the file version `(root, size)`, if its tree is known locally.
    fn chunk_list(&self, root: &Hash, size: u64) -> Option<Vec<ChunkEntry>>;
    /// Whether a whole verified copy of the version is staged here
    /// (`engine::stage`): then every chunk is held, and the plan need not
    /// ask about each (a lookup and a `stat` per chunk: 26,800 for 1 GiB).
    fn is_staged(&self, _root: &Hash, _size: u64) -> bool {
        false
    }
}

/// Everything [`plan`] reads.
pub struct PlanInput<'a> {
    pub disk: &'a DiskView,
    /// Read per path decided (the caller checks [`CommittedView::failed`]
    /// before acting on the plan).
    pub committed: &'a dyn CommittedView,
    pub local: &'a BTreeMap<String, LocalEntry>,
    pub chunks: &'a dyn ChunkView,
    /// Whether a path is ignored (`.filesyncignore`), given whether it is a directory.
    pub ignored: &'a dyn Fn(&str, bool) -> bool,
    /// Wall clock for conflict names, in ms since the epoch.
    pub now_ms: u64,
    /// The log index `committed` reflects: a version this node knows with a
    /// higher index is simply not in the view yet.
    pub applied: u64,
    /// `None`: every path of the three views is decided. `Some(extra)`: only
    /// the paths the scan covered (on disk within the scope, or known to
    /// the local index or the view under it) and `extra`; every other path
    /// is taken as settled. The caller's contract: a path left out has the
    /// same record, local entry and ignore rules as at a plan that decided
    /// nothing for it (the engine passes the paths that changed since its
    /// last plan and those its last plan acted on; see `Engine::step`).
    pub only: Option<&'a BTreeSet<String>>,
    /// The mass-change guard's memory: recent changes, held folders.
    pub guard: &'a GuardMemory,
}

/// Decides what to do (see the module doc).
pub fn plan(cfg: &PlanConfig, input: &PlanInput<'_>) -> Plan {
    if let Some(reason) = marker_problem(cfg, &input.disk.marker) {
        return Plan::halt(reason);
    }
    // The committed entries of the local index: counted (a pass over the
    // whole index) only when a guard needs them, never on an ordinary step.
    let known = || input.local.values().filter(|l| l.version.is_some()).count();
    // An emptied root with the marker still there halts only when it would
    // also be a mass delete (`min_vanished` known entries, 10 by default):
    // deleting the last few files of a small folder is an ordinary delete.
    if input.disk.root_empty && !cfg.deletes_confirmed {
        let known = known();
        if known > 0 && known >= cfg.min_vanished {
            return Plan::halt(HaltReason::RootEmpty { known });
        }
    }
    let coverage = input.disk.coverage();
    // The committed paths to decide, read from the view (owned: the view
    // is not a map in memory).
    let mut committed: Vec<String> = Vec::new();
    let paths = match (input.only, &input.disk.scope) {
        (Some(extra), Scope::Paths(scope)) => {
            scoped_paths(input, scope, extra, &coverage, &mut committed)
        }
        // Every path of the three maps, in order: merged (linear), where
        // inserting them into a set cost a string compare per level per
        // path.
        _ => {
            input.committed.paths_under("", &mut committed);
            merge_sorted(
                merge_sorted(
                    committed.iter().map(String::as_str),
                    input.local.keys().map(String::as_str),
                )
                .into_iter(),
                input.disk.entries.keys().map(String::as_str),
            )
        }
    };

    let mut out = Vec::new();
    let mut ctx = Ctx {
        cfg,
        input,
        coverage,
        taken: BTreeSet::new(),
    };
    for path in paths {
        ctx.decide(path, &mut out);
    }
    keep_nonempty_dirs(input, &mut out);
    let mut verdict = Verdict::Proceed;
    let mut withheld = Vec::new();
    let mut passed = Vec::new();
    let mut held = Vec::new();
    let mut settling: Vec<(String, u64)> = Vec::new();
    let mut settling_paths = Vec::new();
    if let (Some(g), false) = (&cfg.guard, cfg.deletes_confirmed) {
        (held, settling) = guarded_folders(g, input, &out);
        if let Some(first) = held.first() {
            verdict = Verdict::Pause(PauseReason::MassChange {
                folder: first.folder.clone(),
                changed: first.changed,
                known: first.known,
                folders: held.len(),
            });
        }
        out.retain(|a| {
            if !is_change(input.local, a) || input.guard.is_exempt(a.path()) {
                return true;
            }
            let path = a.path().to_owned();
            // A directory's delete under a held folder waits with its
            // files, and so does the delete of a directory above one (it
            // cannot go while what is held below it stays).
            let hold = held.iter().any(|h| {
                within(&path, &h.folder)
                    || (matches!(a, Action::Propose(Proposal::Delete { .. }))
                        && within(&h.folder, &path))
            });
            let settle = !hold && settling.iter().any(|(f, _)| within(&path, f));
            if hold {
                withheld.push(path);
            } else if settle {
                settling_paths.push(path);
            } else if counts(input.local, &path) {
                passed.push(path);
            }
            !hold && !settle
        });
    }
    let vanished = out
        .iter()
        .filter(|a| matches!(a, Action::Propose(Proposal::Delete { .. })))
        .count();
    if vanished > 0 && vanished >= cfg.min_vanished && !cfg.deletes_confirmed {
        let known = known();
        if vanished as f64 > cfg.max_vanished_share * known as f64 {
            out.retain(|a| match a {
                Action::Propose(Proposal::Delete { path, .. }) => {
                    withheld.push(path.clone());
                    false
                }
                _ => true,
            });
            if verdict == Verdict::Proceed {
                verdict = Verdict::Pause(PauseReason::MassDelete { vanished, known });
            }
        }
    }
    out.sort_by_key(Action::order_key);
    Plan {
        verdict,
        actions: out,
        withheld,
        passed,
        held,
        settling,
        settling_paths,
    }
}

/// Whether `put` replaces the content of a committed file known here
/// (a mode-only change, a new file or a file over a tombstone does not).
fn replaces(local: &BTreeMap<String, LocalEntry>, put: &Proposal) -> bool {
    let Proposal::Put { path, meta, .. } = put else {
        return false;
    };
    local.get(path).is_some_and(|l| {
        l.version.is_some()
            && l.meta.kind == Kind::File
            && meta.kind == Kind::File
            && (l.meta.root, l.meta.size) != (meta.root, meta.size)
    })
}

/// Whether `path` is a committed file of the local index.
fn counts(local: &BTreeMap<String, LocalEntry>, path: &str) -> bool {
    local
        .get(path)
        .is_some_and(|l| l.version.is_some() && l.meta.kind == Kind::File)
}

/// What the mass-change guard may hold: a local delete (of anything) or
/// a replacement of a committed file.
fn is_change(local: &BTreeMap<String, LocalEntry>, a: &Action) -> bool {
    match a {
        Action::Propose(Proposal::Delete { .. }) => true,
        Action::Propose(p @ Proposal::Put { .. }) => replaces(local, p),
        _ => false,
    }
}

/// Whether `path` is `folder` or under it ("" is the root: everything).
fn within(path: &str, folder: &str) -> bool {
    folder.is_empty()
        || path == folder
        || (path.len() > folder.len()
            && path.starts_with(folder)
            && path.as_bytes()[folder.len()] == b'/')
}

/// The folders the mass-change guard holds after this plan, disjoint, in
/// path order. Counted toward each folder above it: this plan's local
/// deletes and replacements of committed files, and the files replaced or
/// deleted here within the guard's window ([`GuardMemory`]). The narrowest
/// folders that explain a mass change are held: folders are tried deepest
/// first, and a folder counts only the changes no held folder below it
/// explains (a rewrite of `a/b` holds `a/b`, not the root and with it
/// every edit elsewhere; small changes scattered over many small folders
/// add up to their parent). A folder held before stays held while a
/// change under it waits. Cheap on an ordinary step (too few changes to
/// trip anything: nothing is counted); else a folder's known files are
/// counted only up to what would clear it, so the cost is the changes
/// times the depth, not the size of the tree.
/// Also answers the folders whose burst of changes settles (see
/// [`GUARD_SETTLE_MS`]), deepest, with when each was first seen.
fn guarded_folders(
    g: &MassChangeGuard,
    input: &PlanInput<'_>,
    out: &[Action],
) -> (Vec<HeldFolder>, Vec<(String, u64)>) {
    let mem = input.guard;
    let changes: Vec<&str> = out
        .iter()
        .filter(|a| is_change(input.local, a) && !mem.is_exempt(a.path()))
        .map(Action::path)
        .collect();
    if changes.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut settling: Vec<(String, u64)> = Vec::new();
    let mut held: Vec<HeldFolder> = mem
        .held
        .iter()
        .filter(|h| changes.iter().any(|p| within(p, &h.folder)))
        .cloned()
        .collect();
    let floor = g.min_changes();
    // (A file remembered from the window counts there, once.)
    let counted: Vec<&str> = changes
        .iter()
        .copied()
        .filter(|p| counts(input.local, p) && !mem.remembers(p))
        .collect();
    if counted.len() + mem.recent_len() >= floor {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &counted {
            for f in folders_of(p) {
                *per.entry(f).or_default() += 1;
            }
        }
        let total = |f: &str| per.get(f).copied().unwrap_or(0) + mem.recent_under(f);
        // Deepest first: a folder sorts before everything under it.
        let folders: Vec<&str> = per.keys().rev().copied().collect();
        for folder in folders {
            if held.iter().any(|h| within(folder, &h.folder)) {
                continue;
            }
            let n = total(folder);
            let explained: usize = held
                .iter()
                .filter(|h| within(&h.folder, folder))
                .map(|h| total(&h.folder))
                .sum();
            let u = n.saturating_sub(explained);
            if u < floor {
                continue;
            }
            // Tripped iff known < u / share: count no further than that.
            let limit = (u as f64 / g.share).ceil() as usize;
            let known = files_under(input.local, folder, limit);
            if g.trips(u, known) {
                held.retain(|h| !within(&h.folder, folder));
                held.push(HeldFolder {
                    folder: folder.to_owned(),
                    changed: n,
                    known,
                });
            }
        }
    }
    held.sort_by(|a, b| a.folder.cmp(&b.folder));
    // A burst too small to trip yet, in a folder the guard watches: its
    // changes wait a moment for the rest of the burst (deepest folder).
    let settle_floor = (floor / 4).max(2);
    if counted.len() >= settle_floor {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &counted {
            for f in folders_of(p) {
                *per.entry(f).or_default() += 1;
            }
        }
        // Folders that qualified (settling, or settled already): an
        // ancestor counts only the changes none of them explains.
        let mut qualified: Vec<(&str, usize)> = Vec::new();
        for (folder, n) in per.iter().rev() {
            let covered = |f: &str| within(folder, f) || within(f, folder);
            if held.iter().any(|h| covered(&h.folder)) {
                continue;
            }
            let explained: usize = qualified
                .iter()
                .filter(|(f, _)| within(f, folder))
                .map(|(_, n)| n)
                .sum();
            if n.saturating_sub(explained) < settle_floor
                || files_under(input.local, folder, g.min_files) < g.min_files
            {
                continue;
            }
            qualified.retain(|(f, _)| !within(f, folder));
            qualified.push((folder, *n));
            let since = mem.settling.get(*folder).copied();
            if since.is_none() && mem.settling.len() >= GUARD_SETTLING_MAX {
                continue;
            }
            let since = since.unwrap_or(input.now_ms);
            if input.now_ms.saturating_sub(since) < GUARD_SETTLE_MS {
                settling.push(((*folder).to_owned(), since));
            }
        }
    }
    (held, settling)
}

/// The committed files of `local` under `folder`, counted up to `limit`.
fn files_under(local: &BTreeMap<String, LocalEntry>, folder: &str, limit: usize) -> usize {
    let counts = |l: &LocalEntry| l.version.is_some() && l.meta.kind == Kind::File;
    if folder.is_empty() {
        return local.values().filter(|l| counts(l)).take(limit).count();
    }
    let prefix = format!("{folder}/");
    local
        .range::<str, _>((
            std::ops::Bound::Included(prefix.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, l)| counts(l))
        .take(limit)
        .count()
}

/// The paths a plan with [`PlanInput::only`] decides, ascending: what the
/// scan found, what the local index and the view hold under each scope
/// path (a range per scope path: the cost is the scope, not the tree), and
/// `extra`.
fn scoped_paths<'a>(
    input: &PlanInput<'a>,
    scope: &'a [String],
    extra: &'a BTreeSet<String>,
    coverage: &Coverage<'_>,
    committed: &'a mut Vec<String>,
) -> Vec<&'a str> {
    let mut paths: Vec<&'a str> = Vec::new();
    paths.extend(input.disk.entries.keys().map(String::as_str));
    paths.extend(extra.iter().map(String::as_str));
    for root in scope {
        // A root the scan did not look at (unreadable, or deferred by the
        // hash budget) is decided as if it were outside the scope: what is
        // under it counts as unchanged since the last plan, except `extra`.
        // Expanding it would cost the subtree on every deferred step.
        if !coverage.covers(root) {
            continue;
        }
        under(input.local, root, &mut paths);
        input.committed.paths_under(root, committed);
    }
    let committed: &'a Vec<String> = committed;
    paths.extend(committed.iter().map(String::as_str));
    paths.sort_unstable();
    paths.dedup();
    paths
}

/// The keys of `map` equal to `root` or beneath it (an empty root: all).
fn under<'a, V>(map: &'a BTreeMap<String, V>, root: &str, out: &mut Vec<&'a str>) {
    if root.is_empty() {
        out.extend(map.keys().map(String::as_str));
        return;
    }
    if let Some((k, _)) = map.get_key_value(root) {
        out.push(k);
    }
    let prefix = format!("{root}/");
    out.extend(
        map.range(prefix.clone()..)
            .map(|(k, _)| k.as_str())
            .take_while(|k| k.starts_with(&prefix)),
    );
}

/// The union of two ascending sequences without duplicates, ascending.
fn merge_sorted<'a>(
    a: impl Iterator<Item = &'a str>,
    b: impl Iterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(a.size_hint().0.max(b.size_hint().0));
    for (k, _, _) in outer_join(a.map(|k| (k, ())), b.map(|k| (k, ()))) {
        out.push(k);
    }
    out
}

/// The full outer join of two sequences ascending by key (each key at most
/// once per side), ascending: per key, its value on each side.
pub fn outer_join<'k, A, B>(
    a: impl Iterator<Item = (&'k str, A)>,
    b: impl Iterator<Item = (&'k str, B)>,
) -> impl Iterator<Item = (&'k str, Option<A>, Option<B>)> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        Some(match order {
            std::cmp::Ordering::Less => {
                let (k, v) = a.next()?;
                (k, Some(v), None)
            }
            std::cmp::Ordering::Greater => {
                let (k, v) = b.next()?;
                (k, None, Some(v))
            }
            std::cmp::Ordering::Equal => {
                let (k, v) = a.next()?;
                let (_, w) = b.next()?;
                (k, Some(v), Some(w))
            }
        })
    })
}

fn marker_problem(cfg: &PlanConfig, marker: &Marker) -> Option<HaltReason> {
    match marker {
        Marker::Found(id) if *id == cfg.cluster_id => None,
        Marker::Found(id) => Some(HaltReason::WrongMarker {
            found: id.clone(),
            expected: cfg.cluster_id.clone(),
        }),
        Marker::Missing => Some(HaltReason::MarkerMissing),
        Marker::Unreadable(e) => Some(HaltReason::MarkerUnreadable(e.clone())),
    }
}

/// What the disk holds at a path, as far as the plan knows.
enum Disk<'a> {
    Absent,
    Unstable,
    /// A file over the max file size, never hashed: held back.
    TooLarge(u64),
    Present(&'a Stat, &'a Meta),
}

struct Ctx<'a, 'b> {
    cfg: &'a PlanConfig,
    input: &'a PlanInput<'b>,
    coverage: Coverage<'a>,
    /// Conflict names handed out by this plan.
    taken: BTreeSet<String>,
}

impl<'a> Ctx<'a, '_> {
    fn disk(&self, path: &str) -> Disk<'a> {
        let input: &'a PlanInput<'_> = self.input;
        if self.coverage.covers(path) {
            match input.disk.entries.get(path) {
                None => Disk::Absent,
                Some(DiskEntry { meta: None, stat })
                    if stat.kind == FileKind::File && stat.size > self.cfg.max_file_size =>
                {
                    Disk::TooLarge(stat.size)
                }
                Some(DiskEntry { meta: None, .. }) => Disk::Unstable,
                Some(DiskEntry {
                    stat,
                    meta: Some(m),
                }) => Disk::Present(stat, m),
            }
        } else {
            match input.local.get(path) {
                Some(l) => Disk::Present(&l.stat, &l.meta),
                None => Disk::Absent,
            }
        }
    }

    fn decide(&mut self, path: &str, out: &mut Vec<Action>) {
        let t = self.input.committed.get(path);
        let t = t.as_ref();
        let l = self.input.local.get(path);
        let d = self.disk(path);
        if !names::is_syncable(path) {
            if t.is_some() {
                out.push(Action::Skip {
                    path: path.to_owned(),
                    reason: SkipReason::Invalid,
                });
            }
            return;
        }
        let is_dir = match &d {
            Disk::Present(_, m) => m.is_dir(),
            _ => t.and_then(VersionRecord::live).is_some_and(Meta::is_dir),
        };
        if (self.input.ignored)(path, is_dir) {
            return;
        }
        if self.cfg.safe_links {
            if let Disk::Present(_, m) = &d {
                if let Kind::Symlink { target } = &m.kind {
                    if names::link_escapes_root(path, target) {
                        out.push(Action::Skip {
                            path: path.to_owned(),
                            reason: SkipReason::UnsafeLink,
                        });
                        return;
                    }
                }
            }
        }
        match d {
            Disk::Unstable => out.push(Action::Skip {
                path: path.to_owned(),
                reason: SkipReason::RetryLater,
            }),
            // Neither proposed nor replaced nor taken as deleted: what is
            // committed at the path stays, the file stays as it is.
            Disk::TooLarge(size) => out.push(Action::Skip {
                path: path.to_owned(),
                reason: SkipReason::TooLarge { size, local: true },
            }),
            Disk::Absent => self.absent(path, t, l, out),
            Disk::Present(stat, m) => match l {
                Some(le) if le.version.is_some() && le.meta == *m => {
                    self.unchanged(path, t, le, stat, out)
                }
                _ => self.changed(path, t, l, stat, m, out),
            },
        }
    }

    fn absent(
        &self,
        path: &str,
        t: Option<&VersionRecord>,
        l: Option<&LocalEntry>,
        out: &mut Vec<Action>,
    ) {
        let b = l.and_then(LocalEntry::derived_from);
        match t.filter(|t| !t.deleted) {
            Some(t) if Some(t.version) == b => out.push(Action::Propose(Proposal::Delete {
                path: path.to_owned(),
                base: t.version,
            })),
            Some(t) if b.is_some_and(|b| t.version < b) => out.push(lagging(path)),
            Some(t) => self.write(t, Expect::Absent, out),
            None => {
                if l.is_some() {
                    out.push(Action::Forget {
                        path: path.to_owned(),
                    });
                }
            }
        }
    }

    fn unchanged(
        &self,
        path: &str,
        t: Option<&VersionRecord>,
        l: &LocalEntry,
        stat: &Stat,
        out: &mut Vec<Action>,
    ) {
        let v = l.version.unwrap_or_default();
        let expect = Expect::Entry(*stat);
        let refreshed = || LocalEntry {
            stat: *stat,
            ..l.clone()
        };
        match t {
            // A path this node knows committed at an index past the view's:
            // the view lags behind this node's own proposal (the leader
            // applied it first). Deleting here lost the user's next write.
            // (At or below the view's index, absence means the history was
            // dropped: the path was deleted long ago.)
            None if l.version.is_some_and(|v| v.index > self.input.applied) => {
                out.push(lagging(path))
            }
            None => out.push(Action::Delete {
                path: path.to_owned(),
                version: None,
                expect: *stat,
            }),
            Some(t) if t.version == v => {
                if !stat.same_entry(&l.stat) {
                    out.push(record(path, refreshed()));
                }
            }
            Some(t) if t.version < v => out.push(lagging(path)),
            Some(t) if t.deleted => out.push(Action::Delete {
                path: path.to_owned(),
                version: Some(t.version),
                expect: *stat,
            }),
            Some(t) if t.meta == l.meta => {
                out.push(record(
                    path,
                    LocalEntry::committed(t.meta.clone(), *stat, t.version),
                ));
            }
            Some(t) => self.write(t, expect, out),
        }
    }

    fn changed(
        &mut self,
        path: &str,
        t: Option<&VersionRecord>,
        l: Option<&LocalEntry>,
        stat: &Stat,
        m: &Meta,
        out: &mut Vec<Action>,
    ) {
        let b = l.and_then(LocalEntry::derived_from);
        let put = |base| {
            Action::Propose(Proposal::Put {
                path: path.to_owned(),
                meta: m.clone(),
                mtime_ns: stat.mtime_ns,
                base,
                stat: *stat,
            })
        };
        let Some(t) = t else {
            // Absent from the view: new, or the view lags behind a version
            // this node knows (then that version is the base, not "absent").
            let b = b.filter(|v| v.index > self.input.applied);
            out.push(put(b));
            return;
        };
        if t.deleted {
            out.push(put(Some(t.version)));
        } else if t.meta == *m {
            out.push(record(
                path,
                LocalEntry::committed(m.clone(), *stat, t.version),
            ));
        } else if b.is_some_and(|b| t.version <= b) {
            out.push(put(b));
        } else if t.origin == self.cfg.node {
            // This node's own change committed, but the node did not learn
            // the outcome (killed first, or the answer was lost with the
            // leadership). Compare-and-set means every version up to it was
            // seen here, and the disk moved on from its content since: a
            // later local edit, so it builds on that version, no conflict.
            out.push(put(Some(t.version)));
        } else if m.is_dir() && t.meta.is_dir() {
            self.write(t, Expect::Entry(*stat), out);
        } else {
            let conflict_path = self.conflict_path(path);
            out.push(Action::MakeConflictCopy {
                path: path.to_owned(),
                conflict_path: conflict_path.clone(),
                expect: *stat,
            });
            out.push(Action::Propose(Proposal::Put {
                path: conflict_path,
                meta: m.clone(),
                mtime_ns: stat.mtime_ns,
                base: None,
                stat: *stat,
            }));
            self.write(t, Expect::Absent, out);
        }
    }

    /// The first conflict-copy name no view and no earlier action uses.
    fn conflict_path(&mut self, path: &str) -> String {
        let i = self.input;
        let mut n = 1;
        loop {
            let c = conflict_name(path, i.now_ms, self.cfg.node, n);
            let used = i.committed.get(&c).is_some_and(|t| !t.deleted)
                || i.local.contains_key(&c)
                || i.disk.entries.contains_key(&c)
                || self.taken.contains(&c);
            if !used || n >= 1000 {
                self.taken.insert(c.clone());
                return c;
            }
            n += 1;
        }
    }

    /// Materializes the live record `t` (plus the fetch its chunks need).
    fn write(&self, t: &VersionRecord, expect: Expect, out: &mut Vec<Action>) {
        let path = t.path.clone();
        let record = t.clone();
        match &t.meta.kind {
            Kind::Dir => out.push(Action::Mkdir {
                path,
                record,
                expect,
            }),
            Kind::Symlink { target } if !names::valid_target(target) => out.push(Action::Skip {
                path,
                reason: SkipReason::Invalid,
            }),
            Kind::Symlink { target }
                if self.cfg.safe_links && names::link_escapes_root(&path, target) =>
            {
                out.push(Action::Skip {
                    path,
                    reason: SkipReason::UnsafeLink,
                })
            }
            Kind::Symlink { .. } => out.push(Action::Symlink {
                path,
                record,
                expect,
            }),
            Kind::File if t.meta.size > self.cfg.max_file_size => out.push(Action::Skip {
                path,
                reason: SkipReason::TooLarge {
                    size: t.meta.size,
                    local: false,
                },
            }),
            Kind::File => {
                let missing = match self.input.chunks.chunk_list(&t.meta.root, t.meta.size) {
                    Some(_) if self.input.chunks.is_staged(&t.meta.root, t.meta.size) => None,
                    None => Some(Missing::Tree),
                    Some(list) => {
                        let mut seen = BTreeSet::new();
                        let hashes: Vec<Hash> = list
                            .iter()
                            .map(|c| c.hash)
                            .filter(|h| !self.input.chunks.has_chunk(h) && seen.insert(*h))
                            .collect();
                        (!hashes.is_empty()).then_some(Missing::Chunks(hashes))
                    }
                };
                if let Some(missing) = missing {
                    out.push(Action::Fetch {
                        path: path.clone(),
                        root: t.meta.root,
                        size: t.meta.size,
                        holders: t.holders.clone(),
                        missing,
                    });
                }
                out.push(Action::Write {
                    path,
                    record,
                    expect,
                });
            }
        }
    }
}

fn record(path: &str, entry: LocalEntry) -> Action {
    Action::Record {
        path: path.to_owned(),
        entry,
    }
}

fn lagging(path: &str) -> Action {
    Action::Skip {
        path: path.to_owned(),
        reason: SkipReason::Lagging,
    }
}

/// A remote delete of a directory that still holds entries which survive
/// this plan turns into a proposal to keep the directory.
fn keep_nonempty_dirs(input: &PlanInput<'_>, out: &mut [Action]) {
    let removed: BTreeSet<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::Delete { path, .. } | Action::Forget { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    for a in out.iter_mut() {
        let Action::Delete {
            path,
            version: Some(v),
            expect,
        } = a
        else {
            continue;
        };
        if expect.kind != FileKind::Dir {
            continue;
        }
        let prefix = format!("{path}/");
        let survivor = input
            .disk
            .entries
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .any(|(p, _)| !removed.contains(p));
        if survivor {
            let meta = input
                .disk
                .entries
                .get(path.as_str())
                .and_then(|d| d.meta.clone())
                .or_else(|| input.local.get(path.as_str()).map(|l| l.meta.clone()))
                .unwrap_or_else(|| Meta::dir(expect.mode));
            *a = Action::Propose(Proposal::Put {
                path: path.clone(),
                meta,
                mtime_ns: expect.mtime_ns,
                base: Some(*v),
                stat: *expect,
            });
        }
    }
}

/// The committed version a proposal would be based on, for tests and logs.
pub fn base_of(p: &Proposal) -> Option<VersionId> {
    match p {
        Proposal::Put { base, .. } => *base,
        Proposal::Delete { base, .. } => Some(*base),
    }
}

/// Holders to announce for a local put by `node`.
pub fn local_holders(node: NodeId, meta: &Meta) -> Vec<NodeId> {
    if meta.is_file() {
        vec![node]
    } else {
        Vec::new()
    }
}
