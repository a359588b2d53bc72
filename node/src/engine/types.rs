//! The engine's own small vocabulary, independent of Raft and p2p types.
//!
//! - [`Meta`]: what a path *is* for the cluster (kind, content root, size,
//!   permission bits). Two metas with equal fields are the same content.
//! - [`Stat`]: what `lstat` says about an on-disk entry, enough to tell
//!   cheaply whether it changed since it was last looked at.
//! - [`VersionRecord`]: one committed version of a path (the daemon maps the
//!   state machine's records onto it).
//! - [`LocalEntry`]: what the engine last recorded for a path: the content it
//!   materialized or proposed, with the stat the file had right after, and
//!   the committed version that content is (if known).
//! - [`DiskEntry`]: what a scan found on disk for a path.
//!
//! Conventions, shared with the Raft index: a directory has root
//! [`Hash::ZERO`] and size 0; a symlink has root `Hash::of_chunk(target)` and
//! size = the target length; `mode` holds permission bits only and is always
//! masked with [`MODE_MASK`] (setuid, setgid and sticky are never synced), a
//! symlink's mode is `0o777`.

use filesyncd_merkle::Hash;
use serde::{Deserialize, Serialize};

/// A node of the cluster (the same integer as Raft's node id).
pub type NodeId = u64;

/// Permission bits that are synced: never setuid/setgid/sticky.
pub const MODE_MASK: u32 = 0o777;

/// A committed version: the log index of the entry that wrote it and the op's
/// position in that entry. Totally ordered, identical on every node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct VersionId {
    pub index: u64,
    pub pos: u32,
}

impl VersionId {
    pub const fn new(index: u64, pos: u32) -> VersionId {
        VersionId { index, pos }
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.index, self.pos)
    }
}

/// What a path is; a symlink carries its target verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink { target: String },
}

/// The content of a path, as the cluster compares it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    pub kind: Kind,
    /// File: the Merkle root of its chunk list; symlink: `Hash::of_chunk(target)`;
    /// directory: [`Hash::ZERO`].
    pub root: Hash,
    pub size: u64,
    /// Permission bits, masked with [`MODE_MASK`].
    pub mode: u32,
}

impl Meta {
    pub fn file(root: Hash, size: u64, mode: u32) -> Meta {
        Meta {
            kind: Kind::File,
            root,
            size,
            mode: mode & MODE_MASK,
        }
    }

    pub fn dir(mode: u32) -> Meta {
        Meta {
            kind: Kind::Dir,
            root: Hash::ZERO,
            size: 0,
            mode: mode & MODE_MASK,
        }
    }

    pub fn symlink(target: &str) -> Meta {
        Meta {
            kind: Kind::Symlink {
                target: target.to_owned(),
            },
            root: Hash::of_chunk(target.as_bytes()),
            size: target.len() as u64,
            mode: 0o777,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }
}

/// The type of an on-disk entry, from `lstat` (symlinks are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Sockets, fifos, devices: never synced.
    Other,
}

/// What `lstat` says about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stat {
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// All permission bits as on disk (`0o7777`); mask before syncing.
    pub mode: u32,
}

impl Stat {
    /// Whether the entry is, cheaply judged, the same one with the same
    /// content: kind, size, mtime, ctime and inode all equal. (A chmod or
    /// any write moves ctime, which user space cannot set back.)
    pub fn unchanged(&self, other: &Stat) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.ino == other.ino
    }
}

impl Stat {
    /// [`Stat::unchanged`] for files and symlinks; for directories (whose
    /// times move whenever an entry inside changes) the same inode and
    /// permission bits.
    pub fn same_entry(&self, other: &Stat) -> bool {
        if self.kind == FileKind::Dir {
            other.kind == FileKind::Dir && self.ino == other.ino && self.mode == other.mode
        } else {
            self.unchanged(other)
        }
    }
}

/// One committed version of a path, at some applied index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub path: String,
    /// The content; meaningless when `deleted`.
    pub meta: Meta,
    pub mtime_ns: i64,
    pub version: VersionId,
    /// The node whose change this is.
    pub origin: NodeId,
    /// Nodes holding every chunk of `meta.root` durably.
    pub holders: Vec<NodeId>,
    /// A tombstone: the path was deleted at `version`.
    pub deleted: bool,
}

impl VersionRecord {
    /// The live content, `None` for a tombstone.
    pub fn live(&self) -> Option<&Meta> {
        (!self.deleted).then_some(&self.meta)
    }
}

/// What the engine last recorded for a path (the local index).
///
/// Written after the engine materialized a committed version (with the stat
/// re-read after the final rename/chmod/utime), after a local change was
/// proposed (with the stat the scan hashed), or when the on-disk content was
/// found equal to the committed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEntry {
    pub meta: Meta,
    /// The on-disk stat that goes with `meta`.
    pub stat: Stat,
    /// The committed version `meta` is; `None` while a proposal of it is not
    /// committed (or failed).
    pub version: Option<VersionId>,
    /// The committed version this content was derived from (equal to
    /// `version` when that is known): the compare-and-set base of a proposal.
    pub base: Option<VersionId>,
}

impl LocalEntry {
    /// An entry for content that is the committed version `version`.
    pub fn committed(meta: Meta, stat: Stat, version: VersionId) -> LocalEntry {
        LocalEntry {
            meta,
            stat,
            version: Some(version),
            base: Some(version),
        }
    }

    /// The base a proposal of a change to this entry uses.
    pub fn derived_from(&self) -> Option<VersionId> {
        self.version.or(self.base)
    }
}

/// What a scan found on disk at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskEntry {
    pub stat: Stat,
    /// The content; `None` when it could not be hashed reliably (the file
    /// was still being written: its stat moved while hashing). Such a path is
    /// retried later, never proposed or replaced.
    pub meta: Option<Meta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_follow_the_index_conventions() {
        let f = Meta::file(Hash([1; 32]), 9, 0o104755);
        assert_eq!(f.mode, 0o755, "setuid masked off");
        let d = Meta::dir(0o1777);
        assert_eq!((d.root, d.size, d.mode), (Hash::ZERO, 0, 0o777));
        let s = Meta::symlink("../x");
        assert_eq!(s.root, Hash::of_chunk(b"../x"));
        assert_eq!(s.size, 4);
        assert!(f.is_file() && d.is_dir() && !s.is_file());
    }

    #[test]
    fn stat_unchanged_compares_every_identity_field() {
        let a = Stat {
            kind: FileKind::File,
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            mode: 0o644,
        };
        assert!(a.unchanged(&Stat { mode: 0o600, ..a }));
        for b in [
            Stat { size: 9, ..a },
            Stat { mtime_ns: 9, ..a },
            Stat { ctime_ns: 9, ..a },
            Stat { ino: 9, ..a },
            Stat {
                kind: FileKind::Dir,
                ..a
            },
        ] {
            assert!(!a.unchanged(&b), "{b:?}");
        }
    }
}
