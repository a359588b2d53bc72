//! JSON bodies of the file routes (`/ls`, `/history`, `/restore`, `/verify`,
//! `/adopt`), shared by the server and the CLI. Hashes are lowercase hex,
//! node ids 16 hex digits (see [`super::super::types::node_hex`]), times ms
//! since the Unix epoch by the cluster's entry clock.

use serde::{Deserialize, Serialize};

/// One entry of `GET /ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsEntry {
    /// Relative to the synced directory.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Content root (hex); `None` for an implicit directory.
    pub root: Option<String>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The version: log index and position in the entry.
    pub index: Option<u64>,
    pub pos: Option<u32>,
    pub time_ms: Option<u64>,
    /// The node whose change this version is.
    pub origin: Option<String>,
    pub mtime_ns: Option<i64>,
    /// A directory with live entries below it but no record of its own.
    #[serde(default)]
    pub implicit: bool,
}

/// The answer of `GET /ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsAnswer {
    /// The listed path (`""`: the synced directory).
    pub path: String,
    /// Whether everything below `path` is listed, not only its children.
    pub recursive: bool,
    pub entries: Vec<LsEntry>,
    /// More entries follow: ask again with `after=<this>`.
    pub next_after: Option<String>,
}

/// The state of one version in `GET /history`.
pub const STATE_COMMITTED: &str = "committed";
/// A conflict copy: the content of a stale concurrent change, committed
/// under a `.sync-conflict-…` name.
pub const STATE_CONFLICT: &str = "conflict";
/// A deletion (tombstone).
pub const STATE_DELETED: &str = "deleted";

/// One retained version of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub index: u64,
    pub pos: u32,
    pub time_ms: u64,
    pub origin: String,
    /// `file`, `dir`, `symlink`; `None` for a deletion.
    pub kind: Option<String>,
    pub size: Option<u64>,
    pub root: Option<String>,
    pub mode: Option<u32>,
    pub mtime_ns: Option<i64>,
    /// Nodes holding every chunk of this version.
    #[serde(default)]
    pub holders: Vec<String>,
    /// [`STATE_COMMITTED`], [`STATE_CONFLICT`] or [`STATE_DELETED`].
    pub state: String,
    /// The newest record of the path (what `ls` shows, unless deleted).
    pub current: bool,
}

/// The answer of `GET /history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryAnswer {
    pub path: String,
    /// Oldest first.
    pub versions: Vec<HistoryEntry>,
}

/// The body of `POST /restore`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The path, relative to the synced directory.
    pub path: String,
    /// Log index of the version (default: the newest retained version that
    /// is not a deletion).
    #[serde(default)]
    pub version: Option<u64>,
    /// Position in that log entry, when one entry wrote several versions
    /// of the path (default: the last).
    #[serde(default)]
    pub pos: Option<u32>,
    /// Where to write: relative = inside the synced directory, absolute =
    /// anywhere the daemon may write. Default: `path` itself, in place.
    #[serde(default)]
    pub to: Option<String>,
    /// An absolute `to` outside the synced directory is refused (403)
    /// unless this is set: the daemon writes there with its own rights.
    #[serde(default)]
    pub allow_outside: bool,
}

/// The answer of `POST /restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The version's path.
    pub path: String,
    pub index: u64,
    pub pos: u32,
    /// Where it was written: relative to the synced directory when
    /// `in_root`, else absolute.
    pub written: String,
    pub in_root: bool,
    pub kind: String,
    pub size: u64,
    pub root: String,
    /// The destination already held exactly this version: nothing written.
    pub unchanged: bool,
    /// Local content found at the destination that is not a committed
    /// version was kept under this name (relative to the destination's
    /// directory's root: the synced directory, or the absolute directory).
    pub kept_as: Option<String>,
    /// Chunks fetched from peers for this restore.
    pub chunks_fetched: u64,
}

/// What a path is, for `verify`'s report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDesc {
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub root: String,
}

/// Kinds of `verify` differences.
pub mod problem {
    /// Committed, not on disk.
    pub const MISSING: &str = "missing";
    /// On disk, not committed (and not ignored).
    pub const UNTRACKED: &str = "untracked";
    /// A file, directory or symlink where the committed version is another kind.
    pub const KIND: &str = "kind";
    /// Same kind, other content (root or size).
    pub const CONTENT: &str = "content";
    /// Same content, other permission bits.
    pub const MODE: &str = "mode";
    /// Could not be read, or changed while being hashed.
    pub const UNREADABLE: &str = "unreadable";
}

/// One difference between the disk and the committed tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub path: String,
    /// One of [`problem`].
    pub problem: String,
    pub committed: Option<EntryDesc>,
    pub disk: Option<EntryDesc>,
}

/// A path `verify` did not compare, and why (unsyncable names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The answer of `POST /verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyAnswer {
    /// The applied log index of the committed tree compared against.
    pub applied: u64,
    /// Committed entries compared.
    pub committed: u64,
    /// Files read and hashed, and their bytes.
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    pub differences: Vec<Difference>,
    pub skipped: Vec<Skipped>,
    /// The sync engine had nothing pending when the check started (if not,
    /// differences may only be changes in flight).
    pub was_in_sync: Option<bool>,
}

/// The answer of `POST /confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    /// Local changes that were withheld when the confirmation arrived.
    pub withheld: u64,
}

/// The answer of `POST /adopt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    pub adopted: bool,
    /// The synced directory.
    pub dir: String,
}

/// The point of history an answer read the tree at (`--as-of`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOfDesc {
    /// `--as-of` as given.
    pub given: String,
    /// The log index, when one was given (or the time was at or after the
    /// entry clock: then the last applied index).
    pub index: Option<u64>,
    /// The time, when one was given (ms since the Unix epoch, entry clock):
    /// the versions of the entries stamped at or before it.
    pub time_ms: Option<u64>,
    /// No entry after this log index was read (the last applied index when
    /// a time was resolved).
    pub applied: u64,
    /// A log index known to be at or before the point (equal to `index`
    /// when one was given).
    pub floor: u64,
}

/// The body of `POST /restore/tree`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeRestoreRequest {
    /// The subtree (a directory or a file), relative to the synced
    /// directory; `""`: all of it.
    #[serde(default)]
    pub path: String,
    /// A log index or an RFC 3339 time ([`super::asof::parse_as_of`]).
    pub as_of: String,
    /// Write the subtree as of then under this path (relative: inside the
    /// synced directory; absolute: anywhere, with `allow_outside`). It must
    /// not exist or be an empty directory. Exclusive with `in_place`.
    #[serde(default)]
    pub to: Option<String>,
    /// Make the subtree what it was then, in the synced directory: changed
    /// paths are written back, paths created since are deleted (the engine
    /// commits both as new versions), local content not committed is kept
    /// as a conflict copy.
    #[serde(default)]
    pub in_place: bool,
    #[serde(default)]
    pub allow_outside: bool,
}

/// How far a tree restore is: paths acted on (written, deleted, already
/// right, failed) and file bytes written, of the totals counted first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeProgress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A path a tree restore could not restore, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFailure {
    pub path: String,
    pub error: String,
}

/// Local content a tree restore moved aside instead of replacing or
/// deleting it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAs {
    pub path: String,
    /// The conflict copy's path (same root as `written`).
    pub kept_as: String,
}

/// The outcome of `POST /restore/tree`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeRestored {
    pub path: String,
    pub as_of: Option<AsOfDesc>,
    /// Where the tree was written: `path` itself (`in_place`), a path
    /// relative to the synced directory (`in_root`), or absolute.
    pub written: String,
    pub in_root: bool,
    pub in_place: bool,
    pub progress: TreeProgress,
    /// Versions written (files, directories, symlinks).
    pub written_paths: u64,
    /// Paths deleted (in place: alive now, absent then).
    pub deleted: u64,
    /// Paths already as they were then (nothing done).
    pub unchanged: u64,
    /// Directories to delete that still held other entries (kept).
    pub dirs_kept: u64,
    /// Local content moved aside: the count, and the first
    /// [`TREE_LISTED`] of them.
    pub kept_count: u64,
    pub kept: Vec<KeptAs>,
    /// Paths that failed: the count, and the first [`TREE_LISTED`].
    pub failed: u64,
    pub failures: Vec<PathFailure>,
    pub chunks_fetched: u64,
}

/// How many kept and failed paths a [`TreeRestored`] lists by name.
pub const TREE_LISTED: usize = 100;

/// One line of the `POST /restore/tree` answer (newline-delimited JSON):
/// progress after every batch, then `done` or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeLine {
    Progress(TreeProgress),
    Done(TreeRestored),
    /// The restore stopped (what was done so far stays done).
    Error {
        error: String,
        partial: TreeRestored,
    },
}

/// Kinds of `diff` changes.
pub mod change {
    /// Alive now, absent (or deleted) then.
    pub const ADDED: &str = "added";
    /// Alive both times, other content (kind, root, size or mode).
    pub const MODIFIED: &str = "modified";
    /// Alive then, absent now.
    pub const DELETED: &str = "deleted";
}

/// One path that changed since the point of `GET /diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffEntry {
    pub path: String,
    /// One of [`change`].
    pub change: String,
    /// The version then and now (`INDEX`, `POS`), if alive.
    pub then_version: Option<(u64, u32)>,
    pub now_version: Option<(u64, u32)>,
    pub then: Option<EntryDesc>,
    pub now: Option<EntryDesc>,
}

/// The answer of `GET /diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffAnswer {
    pub path: String,
    pub as_of: AsOfDesc,
    pub entries: Vec<DiffEntry>,
    /// More entries follow: ask again with `after=<this>`.
    pub next_after: Option<String>,
}
