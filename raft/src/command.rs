//! Commands replicated through the Raft log, and what applying them answers.
//!
//! # Wire format
//! Encoded with postcard (the log store and the snapshot both use it). [`Request`] is a
//! versioned enum: `Request::V1` is the only version today; a later format adds `V2` at the
//! END (postcard encodes the variant index), so old entries stay readable forever. Within a
//! version nothing is ever reordered; new [`Op`] / [`Outcome`] / [`RejectReason`] variants are
//! only appended.
//!
//! # One entry, one batch
//! A log entry carries a [`Batch`]: the proposer's [`RequestId`] (origin node, per-origin
//! sequence number) so that a forward retried after a leader change is applied once, the
//! leader's wall clock `time_ms` (the ONLY clock apply may read: every node derives the same
//! conflict names, token expiries and retention cuts from it), and the ops, applied in order,
//! each seeing the effects of the ones before it.
//!
//! # Outcomes
//! [`Response::Applied`] holds one [`Outcome`] per op, in op order. A retried request id
//! within the dedup window gets [`Response::Duplicate`] with the ORIGINAL outcomes and changes
//! nothing. See `apply.rs` for the exact rules (compare-and-set, conflict copies, deletes).

use serde::{Deserialize, Serialize};

pub use filesyncd_chunkstore::chunker::ChunkerParams;
use filesyncd_merkle::Hash;

use crate::NodeId;

/// Names one proposal: `origin` is the node that built it, `seq` grows strictly per origin
/// (across restarts too: the origin persists it or starts from its clock). A retried forward
/// reuses the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub origin: NodeId,
    pub seq: u64,
}

/// A version of a path (or of any op's effect): the Raft log index of the entry that wrote it
/// and the op's position within that entry's batch. Totally ordered, identical on every node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub index: u64,
    pub pos: u32,
}

impl Version {
    pub const fn new(index: u64, pos: u32) -> Version {
        Version { index, pos }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.index, self.pos)
    }
}

/// What a path is. A symlink carries its target (kept verbatim; the daemon decides what
/// targets it materialises). The put's other fields follow the merkle `PathValue` rules
/// (checked at apply): `mode` is permission bits only (`<= 0o7777`); a directory has
/// `root = Hash::ZERO` and `size = 0`; a symlink has `root = Hash::of_chunk(target bytes)`
/// and `size` = the target's length in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PutKind {
    File,
    Dir,
    Symlink { target: String },
}

/// Retention of old versions, fixed at cluster creation. A superseded version is kept while
/// it is among the `keep_versions` newest versions of its path OR was superseded less than
/// `keep_days` ago (either bound may be absent; both absent = keep everything). A deleted
/// path's whole history is dropped `keep_days` after the delete (never if `keep_days` is
/// absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_versions: Option<u32>,
    pub keep_days: Option<u32>,
}

/// One change. Paths are relative, '/'-separated (see `paths.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace `path`. Compare-and-set on `base`: the version this one replaces,
    /// `None` = "I expect the path to be absent".
    Put {
        path: String,
        kind: PutKind,
        root: Hash,
        size: u64,
        mode: u32,
        mtime_ns: i64,
        /// The node whose change this is (names conflict copies).
        origin: NodeId,
        base: Option<Version>,
        /// Nodes that hold every chunk of `root` durably (the durability contract): a
        /// non-empty file with no holder is rejected.
        holders: Vec<NodeId>,
    },
    /// Delete `path`, which the proposer saw at version `base`.
    Delete { path: String, base: Version },
    /// Fixes the cluster's settings; only the first one ever applies.
    InitCluster {
        cluster_id: String,
        /// Checked with `ChunkerParams::validate` at apply.
        chunker: ChunkerParams,
        retention: Retention,
    },
    /// Registers a join token by its hash; usable once, until `expires_ms` (entry time).
    AddToken { token_hash: Hash, expires_ms: u64 },
    /// Spends a join token for `node`.
    ConsumeToken { token_hash: Hash, node: NodeId },
    /// Records more nodes holding the chunks of `path` at `version` (a retained version).
    AddHolders {
        path: String,
        version: Version,
        holders: Vec<NodeId>,
    },
    /// Registers a join token by its hash AND its public id (the `abcdef` of
    /// `abcdef.0123456789abcdef`), so that a member can find the hash from the id a joiner
    /// announces (`SmReader::token_by_id`). Usable once, until `expires_ms` (entry time).
    /// The id must be 1..=[`crate::apply::MAX_TOKEN_ID_BYTES`] ASCII letters or digits and
    /// unused, like the hash. `AddToken` stays for entries written before this op existed;
    /// its tokens have no id and cannot be used to join.
    AddNamedToken {
        token_id: String,
        token_hash: Hash,
        expires_ms: u64,
    },
    /// Sets the cluster key's secret seed (an ed25519 signing key; its
    /// public half's fingerprint pins the cluster for joiners). Only the
    /// first one ever applies; later ones are `AlreadyInitialized`.
    SetClusterKey { seed: ClusterSeed },
}

/// The secret seed of the cluster key. Replicated to every member (it is how
/// any leader proves to a joiner that it speaks for the pinned cluster);
/// never printed: its `Debug` is redacted.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSeed(pub [u8; 32]);

impl std::fmt::Debug for ClusterSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSeed(..)")
    }
}

/// A batch: the payload of one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: RequestId,
    /// Stamped by the leader when proposing.
    pub time_ms: u64,
    pub ops: Vec<Op>,
}

/// The application data of a log entry (versioned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    V1(Batch),
}

impl Request {
    pub fn new(id: RequestId, time_ms: u64, ops: Vec<Op>) -> Request {
        Request::V1(Batch { id, time_ms, ops })
    }

    pub fn id(&self) -> RequestId {
        match self {
            Request::V1(b) => b.id,
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::V1(b) => write!(
                f,
                "V1(origin {} seq {}, {} ops)",
                b.id.origin,
                b.id.seq,
                b.ops.len()
            ),
        }
    }
}

/// Why an op was refused. A refused op changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The path (or the computed conflict name) breaks `paths.rs` rules.
    InvalidPath(String),
    /// Symlink target empty, too long or containing NUL.
    InvalidTarget,
    /// Mode above `0o7777`, a directory with a non-zero root or size, a symlink whose root
    /// is not `Hash::of_chunk(target)` or whose size is not the target length.
    InvalidValue(String),
    /// A non-empty file with an empty holder list.
    NoHolders,
    /// Path/token ops before `InitCluster`.
    NotInitialized,
    AlreadyInitialized,
    /// Bad `InitCluster` fields (empty or overlong cluster id, invalid chunker params).
    InvalidSettings,
    /// An ancestor of the path is a file or symlink.
    NotADirectory {
        ancestor: String,
    },
    /// Replacing or deleting a directory that still has live entries under it.
    DirectoryNotEmpty,
    /// Every conflict-copy name candidate is taken.
    NoConflictName,
    TokenExists,
    UnknownToken,
    TokenExpired,
    TokenReused,
    /// `AddHolders` names a version that is not retained for that path.
    UnknownVersion,
    /// A non-empty file whose holders are not a majority of the voters (of
    /// each voter set during a joint membership change) at the entry's
    /// apply: its content could be lost with a minority. The origin offers
    /// it again to the current voters and proposes again.
    TooFewHolders {
        holders: u32,
        voters: u32,
    },
    /// The token was outstanding when a member was removed: a removal
    /// revokes every token that was not spent yet.
    TokenRevoked,
    /// The cluster already records [`crate::apply::MAX_TOKENS`] tokens
    /// (spent and expired ones are pruned a day after their end).
    TooManyTokens,
}

/// The result of one op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The op took effect as `version`.
    Applied {
        version: Version,
    },
    /// A stale put: committed as a new path, the conflict copy.
    Conflict {
        conflict_path: String,
        version: Version,
    },
    /// A stale put whose content equals the current one: nothing new, its holders merged.
    Unchanged {
        version: Version,
    },
    /// A delete with a stale base: the delete loses, the newer content `current` stays.
    DeleteLost {
        current: Version,
    },
    /// Delete of a path that is not live: nothing to do.
    AlreadyAbsent,
    Rejected {
        reason: RejectReason,
    },
}

/// What applying an entry answers to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    Empty,
    /// First application: one outcome per op.
    Applied(Vec<Outcome>),
    /// A retried request id: the original outcomes; nothing was applied again.
    Duplicate(Vec<Outcome>),
    /// A retried request id older than the dedup window: its outcome is no longer known and
    /// nothing was applied.
    TooOld,
}

impl Response {
    /// The per-op outcomes (empty for `Empty`/`TooOld`).
    pub fn outcomes(&self) -> &[Outcome] {
        match self {
            Response::Applied(o) | Response::Duplicate(o) => o,
            Response::Empty | Response::TooOld => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_is_versioned() {
        let r = Request::new(
            RequestId { origin: 3, seq: 9 },
            1_700_000_000_000,
            vec![
                Op::Put {
                    path: "a/b.txt".into(),
                    kind: PutKind::Symlink { target: "x".into() },
                    root: Hash([7; 32]),
                    size: 5,
                    mode: 0o644,
                    mtime_ns: -1,
                    origin: 3,
                    base: Some(Version::new(4, 1)),
                    holders: vec![1, 3],
                },
                Op::Delete {
                    path: "c".into(),
                    base: Version::new(2, 0),
                },
            ],
        );
        let bytes = postcard::to_allocvec(&r).expect("encode");
        // The version tag is the first byte: variant 0 = V1.
        assert_eq!(bytes[0], 0);
        let back: Request = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, r);
        assert_eq!(back.id(), RequestId { origin: 3, seq: 9 });
    }

    #[test]
    fn unknown_version_tag_is_an_error() {
        let r = Request::new(RequestId { origin: 1, seq: 1 }, 0, vec![]);
        let mut bytes = postcard::to_allocvec(&r).expect("encode");
        bytes[0] = 7;
        assert!(postcard::from_bytes::<Request>(&bytes).is_err());
    }
}
