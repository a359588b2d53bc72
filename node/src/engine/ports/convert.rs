//! The one translation between the engine's port types ([`ProposeOp`],
//! [`ProposeOutcome`], [`VersionRecord`]) and the Raft state machine's
//! ([`Op`], [`Outcome`], [`PathRecord`]). The daemon's port
//! (`daemon::sync::ports::RaftCommitted`) and the in-memory twin
//! ([`super::MemCommitted`]) both go through it, so the twin applies exactly
//! the commands the daemon would propose.

use filesyncd_raft::command::{Op, Outcome, PutKind, RejectReason, Version};
use filesyncd_raft::history::PathRecord;

use super::{ProposeOp, ProposeOutcome};
use crate::engine::types::{Kind, Meta, VersionId, VersionRecord};

/// The engine's id of a state-machine version.
pub fn version_id(v: Version) -> VersionId {
    VersionId::new(v.index, v.pos)
}

/// The state machine's version of an engine version id.
pub fn raft_version(v: VersionId) -> Version {
    Version::new(v.index, v.pos)
}

/// The Raft op that commits `op`.
pub fn raft_op(op: ProposeOp) -> Op {
    match op {
        ProposeOp::Put {
            path,
            meta,
            mtime_ns,
            origin,
            base,
            holders,
        } => Op::Put {
            path,
            kind: match meta.kind {
                Kind::File => PutKind::File,
                Kind::Dir => PutKind::Dir,
                Kind::Symlink { target } => PutKind::Symlink { target },
            },
            root: meta.root,
            size: meta.size,
            mode: meta.mode,
            mtime_ns,
            origin,
            base: base.map(raft_version),
            holders,
        },
        ProposeOp::Delete { path, base } => Op::Delete {
            path,
            base: raft_version(base),
        },
    }
}

/// What the engine is told of an op's outcome.
pub fn propose_outcome(o: &Outcome) -> ProposeOutcome {
    match o {
        Outcome::Applied { version } => ProposeOutcome::Applied(version_id(*version)),
        Outcome::Conflict {
            conflict_path,
            version,
        } => ProposeOutcome::Conflict {
            path: conflict_path.clone(),
            version: version_id(*version),
        },
        Outcome::Unchanged { version } => ProposeOutcome::Unchanged(version_id(*version)),
        Outcome::DeleteLost { current } => ProposeOutcome::DeleteLost {
            current: version_id(*current),
        },
        Outcome::AlreadyAbsent => ProposeOutcome::AlreadyAbsent,
        Outcome::Rejected {
            reason: reason @ RejectReason::TooFewHolders { .. },
        } => ProposeOutcome::Retry(format!("{reason:?}")),
        Outcome::Rejected { reason } => ProposeOutcome::Rejected(format!("{reason:?}")),
    }
}

/// The engine's view of a state-machine record of `path`. A tombstone
/// carries no content: its meta is an empty directory's, its mtime 0.
pub fn record_of(path: String, r: &PathRecord) -> VersionRecord {
    match &r.state {
        Some(m) => VersionRecord {
            path,
            meta: Meta {
                kind: match &m.kind {
                    PutKind::File => Kind::File,
                    PutKind::Dir => Kind::Dir,
                    PutKind::Symlink { target } => Kind::Symlink {
                        target: target.clone(),
                    },
                },
                root: m.root,
                size: m.size,
                mode: m.mode,
            },
            mtime_ns: m.mtime_ns,
            version: version_id(r.version),
            origin: r.origin,
            holders: m.holders.clone(),
            deleted: false,
        },
        None => VersionRecord {
            path,
            meta: Meta::dir(0),
            mtime_ns: 0,
            version: version_id(r.version),
            origin: r.origin,
            holders: Vec::new(),
            deleted: true,
        },
    }
}
