//! The scan: what is on disk now, as a [`DiskView`] for the plan.
//!
//! # Walk
//! Through the [`Fs`] seam (beneath the root, never following a symlink), from
//! the root ([`Scope::Full`]) or from each given path ([`Scope::Paths`]: the
//! watcher's dirty paths; a directory is walked whole). Per entry, in order:
//! 1. a name that is not UTF-8, or a path that is not syncable
//!    ([`names::invalid_reason`]), is skipped with a warning (never proposed;
//!    an invalid directory is not descended);
//! 2. the daemon's namespace (the marker, `.filesyncd*`, temp files) is
//!    skipped silently;
//! 3. ignored paths ([`Ignore`]) are skipped (an ignored directory is not
//!    descended);
//! 4. directories and symlinks are recorded from `lstat`/`readlink` (a link is
//!    a link with its target, never followed); sockets, fifos and devices are
//!    skipped;
//! 5. a regular file whose `(size, mtime, ctime, inode)` equals the local
//!    index's stat is unchanged: its recorded content is reused, nothing is
//!    read. Any other file is opened, chunked and hashed with the chunk+hash
//!    pipeline, then `lstat`ed again: if the stat moved since the open (or
//!    the file could not be read), it is reported *unstable* (`meta: None`:
//!    "still being written, retry later") and nothing is indexed. Otherwise
//!    it joins the pending batch (6). A file the caller lists as racy
//!    ([`Scanner::racy`], see [`RacySet`]) is read again even when
//!    its stat is unchanged. A file larger than
//!    [`Scanner::max_file_size`] is never read: reported with `meta: None`,
//!    which the plan holds back (`Skip(TooLarge)`), never a delete.
//! 6. **Flush, then index, a batch at a time** ([`INDEX_BATCH`]): when the
//!    pending batch is full, and at the end of the scan, the files of the
//!    batch are made durable with one [`Fs::sync_files`] call (they are the
//!    user's files, and this node counts as a holder of their chunks toward
//!    the acknowledgement quorum: they must be on disk before they are
//!    indexed as held here), `lstat`ed again (one that vanished or moved
//!    since it was hashed is unstable, as in 5), and the chunk locations of
//!    the rest are indexed in the [`ChunkStore`] as live files with ONE
//!    [`ChunkStore::index_files`] commit (so any of their chunks can be
//!    reused by a write elsewhere, a rename transfers nothing). Only then is
//!    a file reported hashed (`meta`, its Merkle tree for the node store,
//!    the counters); until then its entry has `meta: None`.
//!
//! A directory that cannot be read is reported in `unreadable` (what is under
//! it counts as not looked at, so nothing there is taken as deleted).
//!
//! 7. **A bounded step** ([`HASH_BUDGET`]): once the scan has hashed its
//!    budget of files or bytes, it hashes nothing more. A file that would
//!    need hashing is reported unstable (`meta: None`), a directory not yet
//!    read and a scope path not yet begun are not looked at (`unreadable`),
//!    and all of them are listed in [`ScanOutput::deferred`]: the caller
//!    scans them next, at once. So a change of a million files is taken a
//!    budget at a time (proposed, replicated, and out of memory) instead of
//!    all hashed, held and planned in one step.
//!
//! The marker is read on every scan, and whether the root holds anything but
//! the daemon's names (`root_empty`), for the plan's guards.

use std::collections::{BTreeMap, HashMap, VecDeque};

use filesyncd_chunkstore::chunker::{Chunker, PipelineError};
use filesyncd_chunkstore::store::{ChunkStore, FileIndex, FileStamp, StoreError};
use filesyncd_merkle::{build, BuiltTree, ChunkEntry};

use super::fs::{chunk_read, join, read_to_end, Fs};
use super::ignore::Ignore;
use super::names::{self, IGNORE_FILE, MARKER};
use super::plan::{DiskView, Marker, Scope};
use super::types::{DiskEntry, FileKind, LocalEntry, Meta, Stat};

/// Longest marker file read.
const MARKER_LIMIT: u64 = 4096;
/// Longest ignore file read.
const IGNORE_LIMIT: u64 = 1 << 20;

/// When the scanner flushes and indexes the files it hashed: as soon as the
/// pending batch holds `files` files or `entries` chunk entries, whichever
/// comes first, and at the end of the scan (see the module doc, 6).
///
/// Why batches: an `index_file` per file is one durable redb commit (one
/// fsync) per file, serially: 10,000 single-chunk files took 14.0-19.5 s
/// that way, 0.14-0.19 s with `index_files` in batches of 1024 (75-144x;
/// `FILESYNCD_BENCH_MIB=1 FILESYNCD_BENCH_PUT_MIB=0 cargo bench -p
/// filesyncd-chunkstore --bench store_index`, ext4 on the 2-core dev VM).
/// Why a bound: a batch holds its files' chunk tables in memory (48 bytes an
/// entry: 256 Ki entries are 12 MiB) and redb keeps its dirty pages until
/// the commit.
///
/// The flush before each commit is one batch too ([`Fs::sync_files`]),
/// never a serial fsync per file. Measured on the same VM with 5,000 freshly
/// written 4 KiB files: one `syncfs` on the root 44-66 ms, `fsync` of each
/// file (opened read-only) on 8 threads 418-653 ms, serially 6.0-12.6 s. So
/// the real file system uses one `syncfs` where that is known to be durable
/// (ext4, xfs, btrfs, zfs, ...) and parallel `fsync`s elsewhere (FUSE,
/// network file systems, other mounts beneath the root), see `fs_real.rs`.
pub const INDEX_BATCH: IndexBatch = IndexBatch {
    files: 1024,
    entries: 256 * 1024,
};

/// How much one scan hashes before it defers the rest (module doc, 7): the
/// memory of a step (each hashed file's tree, view entry and plan action,
/// about 600 bytes for a small file: 40 MiB at this budget) and the time
/// before its first proposal are bounded by this, not by the size of the
/// change. Not smaller: between two steps the peers wait for the next
/// scan, and the origin for the last commit of the step before. 1,000,000
/// files of 0-4 KiB on 3 nodes (`deploy/bench/scale.sh --files 1000000`):
/// one unbounded step 753 s, largest peak RSS 2.42 GiB; 16 Ki files a step
/// 849 s, 1.88 GiB; 64 Ki 743 s, 1.96 GiB.
pub const HASH_BUDGET: HashBudget = HashBudget {
    files: 64 * 1024,
    bytes: 1 << 30,
};

/// A bound on what one scan hashes (see [`HASH_BUDGET`]). At least one file
/// is always hashed, however large, so every scan makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashBudget {
    pub files: u64,
    pub bytes: u64,
}

/// A bound on the scanner's pending batch (see [`INDEX_BATCH`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexBatch {
    pub files: usize,
    pub entries: usize,
}

/// Why a scan failed as a whole (per-path problems are warnings).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read the synced root: {0}")]
    Root(#[source] std::io::Error),
    #[error("chunk store: {0}")]
    Store(#[from] StoreError),
}

/// A path the scan skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanWarning {
    /// The path, lossily converted for display.
    pub path: String,
    pub reason: String,
}

/// What a scan found.
#[derive(Debug)]
pub struct ScanOutput {
    pub view: DiskView,
    /// Trees of the files hashed in this scan (store their nodes).
    pub trees: Vec<BuiltTree>,
    pub warnings: Vec<ScanWarning>,
    /// Files read and hashed, and their bytes.
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// Paths left for the next scan once the hash budget ran out (module
    /// doc, 7): files not hashed, directories not read, scope paths not
    /// begun. Empty when the scan covered its whole scope.
    pub deferred: Vec<String>,
    /// Files hashed (and indexed) by this scan that may be racily clean
    /// ([`Scanner::racy_after_ns`]): the caller passes them in
    /// [`Scanner::racy`] until a scan hashes them again and they are not.
    pub racy: Vec<String>,
    /// Paths of [`Scanner::racy`] that this scan hashed again and found
    /// settled (mtime older than the tick): no longer racy.
    pub settled: Vec<String>,
}

/// What a scan uses.
pub struct Scanner<'a> {
    pub fs: &'a dyn Fs,
    pub store: &'a dyn ChunkStore,
    pub chunker: &'a Chunker,
    pub ignore: &'a Ignore,
    /// A regular file larger than this is not read: it is reported with
    /// `meta: None`, and the plan holds it back (`--max-file-size`).
    pub max_file_size: u64,
    /// Paths whose recorded content may be racily clean (see [`RacySet`]):
    /// re-read even when their stat is unchanged.
    pub racy: &'a RacySet,
    /// A file hashed by this scan whose mtime is not older than this (ns
    /// since the epoch: the scan's start less the tick) is reported
    /// in [`ScanOutput::racy`].
    pub racy_after_ns: i64,
}

/// The paths a scan must re-read although their stat is unchanged, bounded
/// (git's "racily clean" entries): a file rewritten within one timestamp
/// tick ([`Fs::timestamp_tick_ns`]) of being hashed, with the same size,
/// keeps its whole stat (mtime and ctime included), so a scan that finds
/// the stat unchanged cannot tell it from the hashed content. A file whose
/// mtime is not older than the scan's start by a tick is listed here by
/// the caller and re-read by the next scan that covers it, whatever its
/// stat says. Bounded: at most [`RacySet::MAX`] paths, each kept
/// at most [`RacySet::KEEP_MS`] (a rewrite within the tick sends the
/// watcher an event at once, so the scan it causes comes long before),
/// the oldest dropped first.
#[derive(Debug, Default)]
pub struct RacySet {
    pub(super) at: HashMap<String, u64>,
    pub(super) order: VecDeque<(u64, String)>,
}

impl RacySet {
    /// Paths kept at most (about 150 bytes each).
    pub const MAX: usize = 65_536;
    /// How long a path is kept, in ms.
    pub const KEEP_MS: u64 = 10 * 60 * 1000;

    pub fn contains(&self, path: &str) -> bool {
        self.at.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Adds (or renews) `path` at `now_ms`, dropping the oldest past the
    /// bound.
    pub fn insert(&mut self, path: String, now_ms: u64) {
        self.at.insert(path.clone(), now_ms);
        self.order.push_back((now_ms, path));
        while self.at.len() > Self::MAX {
            self.pop_oldest();
        }
        // Renewed paths leave stale places in the queue: keep it bounded.
        if self.order.len() > 2 * Self::MAX {
            let at = &self.at;
            self.order.retain(|(t, p)| at.get(p) == Some(t));
        }
    }

    pub fn remove(&mut self, path: &str) {
        self.at.remove(path);
    }

    /// Drops the paths added more than [`RacySet::KEEP_MS`] before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(t, _)| t.saturating_add(Self::KEEP_MS) < now_ms)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((t, p)) = self.order.pop_front() {
            if self.at.get(&p) == Some(&t) {
                self.at.remove(&p);
            }
        }
    }
}

/// Reads and compiles the root's ignore file (absent: no rules).
pub fn load_ignore(fs: &dyn Fs) -> Ignore {
    match read_to_end(fs, IGNORE_FILE, IGNORE_LIMIT) {
        Ok(bytes) => Ignore::parse(&String::from_utf8_lossy(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::none(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read {IGNORE_FILE}; ignoring nothing");
            Ignore::none()
        }
    }
}

/// Reads the marker.
pub fn read_marker(fs: &dyn Fs) -> Marker {
    match read_to_end(fs, MARKER, MARKER_LIMIT) {
        Ok(bytes) => Marker::Found(String::from_utf8_lossy(&bytes).trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Marker::Missing,
        Err(e) => Marker::Unreadable(e.to_string()),
    }
}

impl Scanner<'_> {
    /// Scans `scope` against the local index (see the module doc).
    pub fn scan(
        &self,
        scope: Scope,
        local: &BTreeMap<String, LocalEntry>,
    ) -> Result<ScanOutput, ScanError> {
        self.scan_with(scope, local, INDEX_BATCH, HASH_BUDGET)
    }

    /// [`Scanner::scan`] with another batch bound (tests).
    #[cfg(test)]
    pub(super) fn scan_batched(
        &self,
        scope: Scope,
        local: &BTreeMap<String, LocalEntry>,
        batch: IndexBatch,
    ) -> Result<ScanOutput, ScanError> {
        self.scan_with(scope, local, batch, HASH_BUDGET)
    }

    /// [`Scanner::scan`] with other bounds (tests).
    pub(super) fn scan_with(
        &self,
        scope: Scope,
        local: &BTreeMap<String, LocalEntry>,
        batch: IndexBatch,
        budget: HashBudget,
    ) -> Result<ScanOutput, ScanError> {
        let root_names = self.fs.read_dir("").map_err(ScanError::Root)?;
        let root_empty = !root_names
            .iter()
            .any(|n| n.to_str().is_none_or(|n| !names::is_reserved_component(n)));
        let mut walk = Walk {
            s: self,
            local,
            out: ScanOutput {
                view: DiskView {
                    entries: BTreeMap::new(),
                    scope: scope.clone(),
                    marker: read_marker(self.fs),
                    root_empty,
                    unreadable: Vec::new(),
                },
                trees: Vec::new(),
                warnings: Vec::new(),
                files_hashed: 0,
                bytes_hashed: 0,
                deferred: Vec::new(),
                racy: Vec::new(),
                settled: Vec::new(),
            },
            batch,
            pending: Vec::new(),
            pending_entries: 0,
            budget,
            spent: HashBudget { files: 0, bytes: 0 },
        };
        match &scope {
            Scope::Full => walk.dir("")?,
            Scope::Paths(paths) => {
                for p in paths {
                    if walk.exhausted() {
                        walk.defer_subtree(p);
                    } else {
                        walk.path(p)?;
                    }
                }
            }
        }
        walk.flush()?;
        Ok(walk.out)
    }
}

struct Walk<'a, 'b> {
    s: &'a Scanner<'b>,
    local: &'a BTreeMap<String, LocalEntry>,
    out: ScanOutput,
    batch: IndexBatch,
    /// Files hashed, not yet flushed and indexed (their entries have
    /// `meta: None` until then).
    pending: Vec<Pending>,
    /// Chunk entries in `pending`.
    pending_entries: usize,
    /// What this scan may hash, and what it has begun to.
    budget: HashBudget,
    spent: HashBudget,
}

/// A file hashed and found stable, waiting for its batch's flush and index.
struct Pending {
    rel: String,
    /// `fstat` of the handle it was hashed through (its stamp in the index).
    hashed: Stat,
    located: Vec<(u64, ChunkEntry)>,
    tree: BuiltTree,
    meta: Meta,
}

impl Walk<'_, '_> {
    fn warn(&mut self, path: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(path, %reason, "skipping");
        self.out.warnings.push(ScanWarning {
            path: path.to_owned(),
            reason,
        });
    }

    /// Scans one given path (and, if a directory, everything under it).
    fn path(&mut self, rel: &str) -> Result<(), ScanError> {
        if rel.is_empty() {
            return self.dir("");
        }
        if let Some(reason) = names::invalid_reason(rel) {
            if !rel.split('/').any(names::is_reserved_component) {
                self.warn(rel, reason);
            }
            return Ok(());
        }
        if self.is_ignored_path(rel) {
            return Ok(());
        }
        match self.s.fs.lstat(rel) {
            Ok(Some(st)) => {
                if self.entry(rel, st)? {
                    self.dir(rel)?;
                }
            }
            Ok(None) => {}
            Err(e) => self.unreadable(rel, &e),
        }
        Ok(())
    }

    /// Whether `rel` or a parent is ignored (the parent must be a directory).
    fn is_ignored_path(&self, rel: &str) -> bool {
        let is_dir = matches!(
            self.s.fs.lstat(rel),
            Ok(Some(Stat {
                kind: FileKind::Dir,
                ..
            }))
        );
        self.s.ignore.is_ignored(rel, is_dir)
    }

    /// Whether the hash budget is spent (module doc, 7).
    fn exhausted(&self) -> bool {
        self.spent.files >= self.budget.files || self.spent.bytes >= self.budget.bytes
    }

    /// Leaves `rel` and everything under it for the next scan: not looked
    /// at now, so nothing there is taken as deleted or changed.
    fn defer_subtree(&mut self, rel: &str) {
        self.out.view.unreadable.push(rel.to_owned());
        self.out.deferred.push(rel.to_owned());
    }

    fn unreadable(&mut self, rel: &str, e: &std::io::Error) {
        self.warn(rel, format!("cannot read: {e}"));
        self.out.view.unreadable.push(rel.to_owned());
    }

    /// Walks directory `dir` (iteratively, depth-first).
    fn dir(&mut self, dir: &str) -> Result<(), ScanError> {
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            if self.exhausted() && !d.is_empty() {
                self.defer_subtree(&d);
                continue;
            }
            let names = match self.s.fs.read_dir(&d) {
                Ok(n) => n,
                Err(e) if d.is_empty() => return Err(ScanError::Root(e)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.unreadable(&d, &e);
                    continue;
                }
            };
            for name in names {
                let Some(name) = name.to_str() else {
                    let lossy = join(&d, &name.to_string_lossy());
                    self.warn(&lossy, "name is not UTF-8");
                    continue;
                };
                if names::is_reserved_component(name) {
                    continue;
                }
                let rel = join(&d, name);
                if let Some(reason) = names::invalid_reason(&rel) {
                    self.warn(&rel, reason);
                    continue;
                }
                let st = match self.s.fs.lstat(&rel) {
                    Ok(Some(st)) => st,
                    Ok(None) => continue,
                    Err(e) => {
                        self.unreadable(&rel, &e);
                        continue;
                    }
                };
                if self.s.ignore.is_ignored(&rel, st.kind == FileKind::Dir) {
                    continue;
                }
                if self.entry(&rel, st)? {
                    stack.push(rel);
                }
            }
        }
        Ok(())
    }

    /// Records one entry; returns whether it is a directory to descend.
    fn entry(&mut self, rel: &str, st: Stat) -> Result<bool, ScanError> {
        let meta = match st.kind {
            FileKind::Dir => Some(Meta::dir(st.mode)),
            FileKind::Symlink => match self.s.fs.read_link(rel) {
                Ok(t) => match t.to_str() {
                    Some(t) if names::valid_target(t) => Some(Meta::symlink(t)),
                    _ => {
                        self.warn(rel, "symlink target is not UTF-8 or invalid");
                        return Ok(false);
                    }
                },
                Err(e) => {
                    self.warn(rel, format!("cannot read the link: {e}"));
                    None
                }
            },
            FileKind::Other => return Ok(false),
            FileKind::File => match self.local.get(rel) {
                Some(l)
                    if l.meta.is_file() && l.stat.unchanged(&st) && !self.s.racy.contains(rel) =>
                {
                    Some(l.meta.clone())
                }
                // Held back by the plan, never read (no budget spent).
                _ if st.size > self.s.max_file_size => None,
                _ if self.exhausted() => {
                    // Unstable for this plan; hashed by the next scan.
                    self.out.deferred.push(rel.to_owned());
                    None
                }
                _ => {
                    self.hash(rel);
                    None
                }
            },
        };
        let stat = st;
        self.out
            .view
            .entries
            .insert(rel.to_owned(), DiskEntry { stat, meta });
        if self.pending.len() >= self.batch.files || self.pending_entries >= self.batch.entries {
            self.flush()?;
        }
        Ok(st.kind == FileKind::Dir)
    }

    /// Makes the pending files durable, indexes those still as hashed in
    /// one commit, and only then reports them hashed (module doc, 6).
    fn flush(&mut self) -> Result<(), ScanError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_entries = 0;
        let flushed = {
            let rels: Vec<&str> = batch.iter().map(|p| p.rel.as_str()).collect();
            self.s.fs.sync_files(&rels)
        };
        let mut flushed = flushed.into_iter();
        let mut durable = Vec::with_capacity(batch.len());
        for p in batch {
            let result = flushed.next();
            let now = self.s.fs.lstat(&p.rel).ok().flatten();
            if !now.is_some_and(|n| n.unchanged(&p.hashed)) {
                tracing::debug!(path = p.rel, "changed before the flush; retry later");
                self.unstable(&p.rel);
                continue;
            }
            match result {
                Some(Ok(())) => durable.push(p),
                Some(Err(e)) => {
                    self.warn(&p.rel, format!("cannot flush to disk: {e}"));
                    self.unstable(&p.rel);
                }
                None => {
                    self.warn(&p.rel, "cannot flush to disk: no result");
                    self.unstable(&p.rel);
                }
            }
        }
        let files: Vec<FileIndex<'_>> = durable
            .iter()
            .map(|p| FileIndex {
                rel_path: &p.rel,
                stamp: FileStamp {
                    inode: p.hashed.ino,
                    size: p.hashed.size,
                    mtime_ns: p.hashed.mtime_ns,
                },
                chunks: &p.located,
            })
            .collect();
        if !files.is_empty() {
            self.s.store.index_files(&files)?;
        }
        for p in durable {
            if let Some(e) = self.out.view.entries.get_mut(&p.rel) {
                e.meta = Some(p.meta);
            }
            if p.hashed.mtime_ns >= self.s.racy_after_ns {
                self.out.racy.push(p.rel.clone());
            } else if self.s.racy.contains(&p.rel) {
                self.out.settled.push(p.rel.clone());
            }
            self.out.files_hashed += 1;
            self.out.bytes_hashed += p.tree.size;
            self.out.trees.push(p.tree);
        }
        Ok(())
    }

    /// Reports a pending file as not hashed ("retry later"). (The same path
    /// may have been pending twice in one batch, when two scoped paths
    /// cover it: the later one decides.)
    fn unstable(&mut self, rel: &str) {
        if let Some(e) = self.out.view.entries.get_mut(rel) {
            e.meta = None;
        }
    }

    /// Chunks and hashes a file; if it did not move meanwhile, queues it for
    /// its batch's flush and index (module doc, 5-6): its entry is reported
    /// hashed only by [`Walk::flush`].
    fn hash(&mut self, rel: &str) {
        self.spent.files += 1;
        let file = match self.s.fs.open_read(rel) {
            Ok(f) => f,
            Err(e) => {
                self.warn(rel, format!("cannot open: {e}"));
                return;
            }
        };
        let before = match file.stat() {
            Ok(s) => s,
            Err(e) => {
                self.warn(rel, format!("cannot stat: {e}"));
                return;
            }
        };
        self.spent.bytes += before.size;
        let mut located: Vec<(u64, ChunkEntry)> = Vec::new();
        let sink = |offset: u64, e: &ChunkEntry, _: &[u8]| {
            located.push((offset, *e));
            Ok::<(), std::convert::Infallible>(())
        };
        let chunks = match chunk_read(file, self.s.chunker, sink) {
            Ok(c) => c,
            Err(PipelineError::Read(e)) => {
                self.warn(rel, format!("read failed: {e}"));
                return;
            }
            Err(PipelineError::Sink(never)) => match never {},
        };
        let after = self.s.fs.lstat(rel).ok().flatten();
        if !after.is_some_and(|a| a.unchanged(&before)) || chunks.total_len != before.size {
            tracing::debug!(path = rel, "changed while hashing; retry later");
            return;
        }
        let tree = build(&chunks.entries);
        let meta = Meta::file(tree.root, tree.size, before.mode);
        self.pending_entries += located.len();
        self.pending.push(Pending {
            rel: rel.to_owned(),
            hashed: before,
            located,
            tree,
            meta,
        });
    }
}
