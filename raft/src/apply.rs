//! Applying one log entry: a pure, deterministic function
//! `(index view, log index, batch) → (changes, response)` ([`apply_batch`]).
//!
//! It reads only the view and the entry (never a local clock, never randomness), so every
//! node computes the same [`Changes`] from the same state; the redb state machine writes them
//! in the same transaction as the applied log id, and tests run it on [`MemIndex`].
//!
//! # Rules, in order
//! 1. **Dedup.** A request id already recorded answers `Duplicate(original outcomes)` and
//!    changes nothing. Each origin keeps its [`DEDUP_WINDOW`] highest sequence numbers; an
//!    id at or below `highest - DEDUP_WINDOW` answers `TooOld` and changes nothing. Ids within
//!    the window but never seen (reordered forwards) apply normally.
//! 2. **Clock.** `now = max(clock, time_ms)`: the entry clock never runs backwards.
//! 3. **Retention.** Due hints are processed (see `history.rs`).
//! 4. **Ops**, in order, version `(index, position)`:
//!    - every path is validated (`paths.rs`): a bad one is `Rejected`, never indexed;
//!    - paths and tokens need `InitCluster` first; a second `InitCluster` is rejected;
//!    - a path under a live file/symlink is rejected (`NotADirectory`); replacing a directory
//!      by a non-directory, or deleting it, while it has live entries under it is rejected
//!      (`DirectoryNotEmpty`): delete the children first (earlier in the same batch is fine);
//!    - **Put, compare-and-set.** The base matches when it names the live version, or when
//!      the path is not live and the base is `None` or names its tombstone. A match writes a
//!      new version (`Applied`). A stale base is not an error and not an overwrite: if the
//!      content equals the live one (kind, root, size, mode) the op is `Unchanged` and its
//!      holders are merged into the live record; if it equals a retained version newer than
//!      the base (any, without a base) it is `Unchanged` at that version (what the origin
//!      holds was received, not edited); otherwise it is committed as a new path, the
//!      conflict copy `<stem>.sync-conflict-<YYYYMMDD-HHMMSS>-<origin>.<ext>` (time from the
//!      entry clock, origin from the op), disambiguated with `-2`, `-3`, ... while taken by a
//!      live path (`Conflict`);
//!    - **Delete.** Not live → `AlreadyAbsent`. Stale base → the delete LOSES: the newer
//!      content stays (`DeleteLost`), as the deleting node had not seen it. Otherwise a
//!      tombstone is written (`Applied`);
//!    - **Tokens** are single use: consuming needs a known, unconsumed, unrevoked token
//!      whose `expires_ms` is after the entry clock. A token's hash and (for
//!      `AddNamedToken`) its id are unique: a second token with either is `TokenExists`; a
//!      malformed id is `InvalidValue`. Spent, revoked and expired tokens stay recorded for
//!      [`TOKEN_KEEP_MS`] after their end (a join with them is told `TokenReused` /
//!      `TokenRevoked` / `TokenExpired`, not `UnknownToken`), then every token op prunes
//!      them; at most [`MAX_TOKENS`] are recorded (`TooManyTokens`);
//!    - **SetClusterKey** applies once (after that: `AlreadyInitialized`);
//!    - **Holders.** A put of a non-empty file needs holders (`NoHolders`), and once a
//!      membership is applied they must hold a majority of each voter set ([`Quorums`]),
//!      else `TooFewHolders`: a committed version survives the loss of any minority;
//!    - **AddHolders** merges holders into a retained version (and the live record if it is
//!      the live version).
//! 5. **Record** the outcomes under the request id.
//!
//! # Membership entries ([`apply_removal`])
//! A membership entry that drops nodes (voters or learners) records each as revoked, by
//! node id and PeerId, for good; and revokes every token not yet spent (a removed member
//! kept the hashes of outstanding tokens in its copy of this state, enough to prove
//! possession of one). A revoked token is recorded as spent by [`REVOKED_BY_REMOVAL`].

mod mem;
mod overlay;

pub use mem::MemIndex;
pub use overlay::{Changes, IndexView, Overlay};

use filesyncd_merkle::{EntryKind, Hash, PathValue};

use crate::command::{Batch, Op, Outcome, PutKind, RejectReason, Response, Retention, Version};
use crate::history::{
    self, FileMeta, Hint, PathRecord, RevokedRecord, Settings, TokenRecord, TokenUse,
};
use crate::paths;
use crate::NodeId;

/// The voter sets of the membership applied before an entry: one, or two
/// during a joint change. Empty before any membership is applied (a state
/// machine under test), when holders are not counted.
pub type Quorums = [std::collections::BTreeSet<NodeId>];

/// Whether `holders` (sorted, deduplicated) hold a majority of each voter
/// set of `quorums`.
pub fn holders_hold_quorum(holders: &[NodeId], quorums: &Quorums) -> bool {
    quorums
        .iter()
        .all(|voters| 2 * count_in(holders, voters) > voters.len())
}

fn count_in(holders: &[NodeId], voters: &std::collections::BTreeSet<NodeId>) -> usize {
    holders.iter().filter(|h| voters.contains(h)).count()
}

/// Request ids remembered per origin.
pub const DEDUP_WINDOW: u64 = 64;
/// Conflict-name candidates tried before giving up.
pub const MAX_CONFLICT_CANDIDATES: u32 = 1000;
/// Longest cluster id accepted.
pub const MAX_CLUSTER_ID_BYTES: usize = 128;
/// Longest join token id accepted.
pub const MAX_TOKEN_ID_BYTES: usize = 32;
/// Most token records kept (outstanding, and spent/expired/revoked within
/// [`TOKEN_KEEP_MS`]); `AddNamedToken` beyond it is `TooManyTokens`.
pub const MAX_TOKENS: usize = 1024;
/// How long a spent, revoked or expired token stays recorded after its end
/// (so a late join with it gets a precise answer), before it is pruned.
pub const TOKEN_KEEP_MS: u64 = 24 * 3600 * 1000;
/// The spender recorded for a token revoked by a member's removal (node ids
/// are never 0).
pub const REVOKED_BY_REMOVAL: NodeId = 0;

/// Whether `id` is acceptable as a join token id: 1..=[`MAX_TOKEN_ID_BYTES`] ASCII letters
/// or digits.
pub fn valid_token_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TOKEN_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The cluster-tree value of a live record.
pub fn tree_value(meta: &FileMeta) -> PathValue {
    let kind = match meta.kind {
        PutKind::File => EntryKind::File,
        PutKind::Dir => EntryKind::Dir,
        PutKind::Symlink { .. } => EntryKind::Symlink,
    };
    PathValue {
        kind,
        root: meta.root,
        size: meta.size,
        mode: meta.mode,
    }
}

/// Applies `batch`, the payload of the entry at log `index`, to `view`,
/// with `quorums` the voter sets of the membership applied before it.
pub fn apply_batch<V: IndexView>(
    view: &V,
    index: u64,
    batch: &Batch,
    quorums: &Quorums,
) -> Result<(Changes, Response), V::Error> {
    let mut ov = Overlay::new(view);
    if let Some(outcomes) = ov.dedup(batch.id)? {
        return Ok((Changes::default(), Response::Duplicate(outcomes)));
    }
    let seqs = ov.dedup_seqs(batch.id.origin)?;
    let highest = seqs.last().copied();
    if highest.is_some_and(|h| batch.id.seq.saturating_add(DEDUP_WINDOW) <= h) {
        return Ok((Changes::default(), Response::TooOld));
    }

    let mut state = ov.state()?;
    state.clock_ms = state.clock_ms.max(batch.time_ms);
    let now = state.clock_ms;
    ov.changes.state = Some(state.clone());
    if let Some(s) = &state.settings {
        process_hints(&mut ov, &s.retention, now)?;
    }

    let mut outcomes = Vec::with_capacity(batch.ops.len());
    for (pos, op) in batch.ops.iter().enumerate() {
        let version = Version::new(index, u32::try_from(pos).unwrap_or(u32::MAX));
        let outcome = apply_op(&mut ov, batch, version, now, op, quorums)?;
        outcomes.push(outcome);
    }

    let id = batch.id;
    ov.changes
        .dedup
        .insert((id.origin, id.seq), Some(outcomes.clone()));
    let top = highest.map_or(id.seq, |h| h.max(id.seq));
    for s in seqs {
        if s.saturating_add(DEDUP_WINDOW) <= top {
            ov.changes.dedup.insert((id.origin, s), None);
        }
    }
    Ok((ov.changes, Response::Applied(outcomes)))
}

fn rejected(reason: RejectReason) -> Outcome {
    Outcome::Rejected { reason }
}

fn apply_op<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    batch: &Batch,
    version: Version,
    now: u64,
    op: &Op,
    quorums: &Quorums,
) -> Result<Outcome, V::Error> {
    let state = ov.state()?;
    if let Op::InitCluster {
        cluster_id,
        chunker,
        retention,
    } = op
    {
        if state.settings.is_some() {
            return Ok(rejected(RejectReason::AlreadyInitialized));
        }
        if cluster_id.is_empty()
            || cluster_id.len() > MAX_CLUSTER_ID_BYTES
            || chunker.validate().is_err()
        {
            return Ok(rejected(RejectReason::InvalidSettings));
        }
        let mut state = state;
        state.settings = Some(Settings {
            cluster_id: cluster_id.clone(),
            chunker: *chunker,
            retention: *retention,
            created: version,
            created_ms: now,
        });
        ov.changes.state = Some(state);
        return Ok(Outcome::Applied { version });
    }
    let Some(settings) = state.settings else {
        return Ok(rejected(RejectReason::NotInitialized));
    };
    let retention = settings.retention;
    match op {
        Op::InitCluster { .. } => Ok(rejected(RejectReason::AlreadyInitialized)),
        Op::Put {
            path,
            kind,
            root,
            size,
            mode,
            mtime_ns,
            origin,
            base,
            holders,
        } => {
            let mut holders = holders.clone();
            holders.sort_unstable();
            holders.dedup();
            if *kind == PutKind::File
                && *size > 0
                && !holders.is_empty()
                && !holders_hold_quorum(&holders, quorums)
            {
                let largest = quorums.iter().map(|q| q.len()).max().unwrap_or(0);
                let held = quorums
                    .iter()
                    .map(|q| count_in(&holders, q))
                    .min()
                    .unwrap_or(0);
                return Ok(rejected(RejectReason::TooFewHolders {
                    holders: u32::try_from(held).unwrap_or(u32::MAX),
                    voters: u32::try_from(largest).unwrap_or(u32::MAX),
                }));
            }
            let meta = FileMeta {
                kind: kind.clone(),
                root: *root,
                size: *size,
                mode: *mode,
                mtime_ns: *mtime_ns,
                holders,
            };
            put(ov, &retention, version, now, path, *origin, *base, meta)
        }
        Op::Delete { path, base } => delete(ov, &retention, version, now, batch, path, *base),
        Op::AddToken {
            token_hash,
            expires_ms,
        } => add_token(ov, version, now, None, token_hash, *expires_ms),
        Op::AddNamedToken {
            token_id,
            token_hash,
            expires_ms,
        } => add_token(ov, version, now, Some(token_id), token_hash, *expires_ms),
        Op::ConsumeToken { token_hash, node } => {
            tidy_tokens(ov, now)?;
            let Some(mut rec) = ov.token(token_hash)? else {
                return Ok(rejected(RejectReason::UnknownToken));
            };
            if rec
                .consumed
                .as_ref()
                .is_some_and(|u| u.node == REVOKED_BY_REMOVAL)
            {
                return Ok(rejected(RejectReason::TokenRevoked));
            }
            // Expiry next: an expired token is refused as such, spent
            // or not, so a spender's retry window never outlives it.
            if rec.expires_ms <= now {
                return Ok(rejected(RejectReason::TokenExpired));
            }
            if rec.consumed.is_some() {
                return Ok(rejected(RejectReason::TokenReused));
            }
            rec.consumed = Some(TokenUse {
                node: *node,
                at_ms: now,
                version,
            });
            ov.changes.tokens.insert(*token_hash, Some(rec));
            Ok(Outcome::Applied { version })
        }
        Op::SetClusterKey { seed } => {
            if ov.cluster_key()?.is_some() {
                return Ok(rejected(RejectReason::AlreadyInitialized));
            }
            ov.changes.cluster_key = Some(*seed);
            Ok(Outcome::Applied { version })
        }
        Op::AddHolders {
            path,
            version: target,
            holders,
        } => add_holders(ov, path, *target, holders),
    }
}

/// `AddToken` (no id) and `AddNamedToken`.
fn add_token<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    version: Version,
    now: u64,
    token_id: Option<&String>,
    token_hash: &Hash,
    expires_ms: u64,
) -> Result<Outcome, V::Error> {
    if let Some(id) = token_id {
        if !valid_token_id(id) {
            return Ok(rejected(RejectReason::InvalidValue(format!(
                "token id must be 1 to {MAX_TOKEN_ID_BYTES} ASCII letters or digits"
            ))));
        }
        if ov.token_by_id(id)?.is_some() {
            return Ok(rejected(RejectReason::TokenExists));
        }
    }
    if ov.token(token_hash)?.is_some() {
        return Ok(rejected(RejectReason::TokenExists));
    }
    if expires_ms <= now {
        return Ok(rejected(RejectReason::TokenExpired));
    }
    tidy_tokens(ov, now)?;
    if ov.tokens(MAX_TOKENS)?.len() >= MAX_TOKENS {
        return Ok(rejected(RejectReason::TooManyTokens));
    }
    let rec = TokenRecord {
        expires_ms,
        created: version,
        consumed: None,
    };
    ov.changes.tokens.insert(*token_hash, Some(rec));
    if let Some(id) = token_id {
        ov.changes.token_ids.insert(id.clone(), Some(*token_hash));
    }
    Ok(Outcome::Applied { version })
}

/// When a token stopped admitting: its expiry, or its spending (revocation
/// included) if earlier.
fn token_end(t: &TokenRecord) -> u64 {
    t.consumed
        .as_ref()
        .map_or(t.expires_ms, |u| u.at_ms.min(t.expires_ms))
}

/// Prunes the tokens that ended more than [`TOKEN_KEEP_MS`] before `now`,
/// with their ids. Costs at most [`MAX_TOKENS`] records.
fn tidy_tokens<V: IndexView>(ov: &mut Overlay<'_, V>, now: u64) -> Result<(), V::Error> {
    let stale: std::collections::BTreeSet<Hash> = ov
        .tokens(MAX_TOKENS)?
        .into_iter()
        .filter(|(_, t)| token_end(t).saturating_add(TOKEN_KEEP_MS) <= now)
        .map(|(h, _)| h)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    for (id, h) in ov.token_ids(MAX_TOKENS)? {
        if stale.contains(&h) {
            ov.changes.token_ids.insert(id, None);
        }
    }
    for h in stale {
        ov.changes.tokens.insert(h, None);
    }
    Ok(())
}

/// The changes of the membership entry at log `index` that drops `removed`
/// (node id, PeerId) from the membership: see the module doc. Reads the
/// entry clock; never moves it.
pub fn apply_removal<V: IndexView>(
    view: &V,
    index: u64,
    removed: &[(NodeId, String)],
) -> Result<Changes, V::Error> {
    let mut ov = Overlay::new(view);
    if removed.is_empty() {
        return Ok(ov.changes);
    }
    let now = ov.state()?.clock_ms;
    for (node, peer_id) in removed {
        if ov.revoked(*node)?.is_none() {
            let rec = RevokedRecord {
                peer_id: peer_id.clone(),
                index,
                at_ms: now,
            };
            ov.changes.revoked.insert(*node, rec);
        }
    }
    tidy_tokens(&mut ov, now)?;
    for (h, mut t) in ov.tokens(MAX_TOKENS)? {
        if t.consumed.is_none() && t.expires_ms > now {
            t.consumed = Some(TokenUse {
                node: REVOKED_BY_REMOVAL,
                at_ms: now,
                version: Version::new(index, 0),
            });
            ov.changes.tokens.insert(h, Some(t));
        }
    }
    Ok(ov.changes)
}

/// Problems that reject a put or delete of `path` before looking at versions.
fn path_problem<V: IndexView>(
    ov: &Overlay<'_, V>,
    path: &str,
) -> Result<Option<RejectReason>, V::Error> {
    if let Err(e) = paths::validate(path) {
        return Ok(Some(RejectReason::InvalidPath(e.to_string())));
    }
    for a in paths::ancestors(path) {
        if let Some(rec) = ov.live(a)? {
            if rec.state.as_ref().is_some_and(|m| !m.is_dir()) {
                return Ok(Some(RejectReason::NotADirectory {
                    ancestor: a.to_string(),
                }));
            }
        }
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn put<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    retention: &Retention,
    version: Version,
    now: u64,
    path: &str,
    origin: NodeId,
    base: Option<Version>,
    meta: FileMeta,
) -> Result<Outcome, V::Error> {
    if let Some(reason) = path_problem(ov, path)? {
        return Ok(rejected(reason));
    }
    if let PutKind::Symlink { target } = &meta.kind {
        if !paths::valid_target(target) {
            return Ok(rejected(RejectReason::InvalidTarget));
        }
    }
    if let Err(e) = tree_value(&meta).validate() {
        return Ok(rejected(RejectReason::InvalidValue(e.to_string())));
    }
    if let PutKind::Symlink { target } = &meta.kind {
        if meta.root != Hash::of_chunk(target.as_bytes()) || meta.size != target.len() as u64 {
            return Ok(rejected(RejectReason::InvalidValue(
                "symlink root/size do not match its target".into(),
            )));
        }
    }
    if meta.kind == PutKind::File && meta.size > 0 && meta.holders.is_empty() {
        return Ok(rejected(RejectReason::NoHolders));
    }
    let live = ov.live(path)?;
    let matches = match &live {
        Some(cur) => base == Some(cur.version),
        None => match base {
            None => true,
            Some(b) => ov
                .versions(path)?
                .last()
                .is_some_and(|t| t.is_tombstone() && t.version == b),
        },
    };
    if matches {
        if let Some(cur) = &live {
            let was_dir = cur.state.as_ref().is_some_and(FileMeta::is_dir);
            if was_dir && !meta.is_dir() && ov.has_live_children(path)? {
                return Ok(rejected(RejectReason::DirectoryNotEmpty));
            }
        }
        write_version(ov, retention, now, path, version, origin, Some(meta))?;
        return Ok(Outcome::Applied { version });
    }
    // Stale base.
    if let Some(mut cur) = live {
        if let Some(cur_meta) = cur.state.as_mut() {
            if cur_meta.same_content(&meta) {
                let before = cur_meta.holders.len();
                cur_meta.holders.extend(meta.holders.iter().copied());
                cur_meta.holders.sort_unstable();
                cur_meta.holders.dedup();
                let current = cur.version;
                if cur_meta.holders.len() != before {
                    ov.set_history(path, cur.clone());
                    ov.set_live(path, Some(cur));
                }
                return Ok(Outcome::Unchanged { version: current });
            }
        }
    }
    // Content a retained version newer than the base already holds is that
    // version, not an edit: a node that placed it and crashed before
    // recording it, or that comes back with an old synced dir, proposes
    // what it received. It is `Unchanged` at that version (no conflict
    // copy); the origin records it and places the live version over it.
    for old in ov.versions(path)?.iter().rev() {
        if base.is_some_and(|b| old.version <= b) {
            break;
        }
        if old.state.as_ref().is_some_and(|m| m.same_content(&meta)) {
            return Ok(Outcome::Unchanged {
                version: old.version,
            });
        }
    }
    for n in 1..=MAX_CONFLICT_CANDIDATES {
        let name = paths::conflict_name(path, now, origin, n);
        if let Err(e) = paths::validate(&name) {
            return Ok(rejected(RejectReason::InvalidPath(e.to_string())));
        }
        if ov.live(&name)?.is_none() {
            write_version(ov, retention, now, &name, version, origin, Some(meta))?;
            return Ok(Outcome::Conflict {
                conflict_path: name,
                version,
            });
        }
    }
    Ok(rejected(RejectReason::NoConflictName))
}

fn delete<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    retention: &Retention,
    version: Version,
    now: u64,
    batch: &Batch,
    path: &str,
    base: Version,
) -> Result<Outcome, V::Error> {
    if let Some(reason) = path_problem(ov, path)? {
        return Ok(rejected(reason));
    }
    let Some(cur) = ov.live(path)? else {
        return Ok(Outcome::AlreadyAbsent);
    };
    if cur.version != base {
        return Ok(Outcome::DeleteLost {
            current: cur.version,
        });
    }
    let is_dir = cur.state.as_ref().is_some_and(FileMeta::is_dir);
    if is_dir && ov.has_live_children(path)? {
        return Ok(rejected(RejectReason::DirectoryNotEmpty));
    }
    write_version(ov, retention, now, path, version, batch.id.origin, None)?;
    Ok(Outcome::Applied { version })
}

/// Writes a new record of `path` (`None` = tombstone), queues retention hints and prunes.
fn write_version<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    retention: &Retention,
    now: u64,
    path: &str,
    version: Version,
    origin: NodeId,
    state: Option<FileMeta>,
) -> Result<(), V::Error> {
    let mut versions = ov.versions(path)?;
    let previous = versions.last().map(|r| r.version);
    let tombstone = state.is_none();
    let rec = PathRecord {
        version,
        time_ms: now,
        origin,
        state,
    };
    ov.put_record(path, rec.clone(), previous);
    versions.push(rec);
    if history::keep_ms(retention).is_some() {
        let mut hint = |v: Version| {
            let h = Hint {
                at_ms: now,
                path: path.to_string(),
                version: v,
            };
            ov.changes.hints.insert(h, true);
        };
        if let Some(p) = previous {
            hint(p);
        }
        if tombstone {
            hint(version);
        }
    }
    prune_versions(ov, retention, now, path, &versions)
}

fn prune_path<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    retention: &Retention,
    now: u64,
    path: &str,
) -> Result<(), V::Error> {
    let versions = ov.versions(path)?;
    prune_versions(ov, retention, now, path, &versions)
}

/// Prunes `path`, whose retained records (oldest first) are `versions`.
fn prune_versions<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    retention: &Retention,
    now: u64,
    path: &str,
    versions: &[PathRecord],
) -> Result<(), V::Error> {
    let plan = history::prune_plan(versions, retention, now);
    if plan.drop.is_empty() {
        return Ok(());
    }
    let all = plan.drop.len() == versions.len();
    let newest = versions.last().map(|r| r.version);
    for v in plan.drop {
        ov.drop_record(path, v, newest);
    }
    if all {
        ov.set_live(path, None);
    }
    let mut state = ov.state()?;
    if plan.horizon > state.horizon {
        state.horizon = plan.horizon;
        ov.changes.state = Some(state);
    }
    Ok(())
}

fn process_hints<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    retention: &Retention,
    now: u64,
) -> Result<(), V::Error> {
    let Some(d) = history::keep_ms(retention) else {
        return Ok(());
    };
    let Some(until) = now.checked_sub(d.saturating_add(1)) else {
        return Ok(());
    };
    let due = ov.hints_due(until, history::MAX_HINTS_PER_ENTRY)?;
    let mut paths = std::collections::BTreeSet::new();
    for h in due {
        paths.insert(h.path.clone());
        ov.changes.hints.insert(h, false);
    }
    for p in paths {
        prune_path(ov, retention, now, &p)?;
    }
    Ok(())
}

fn add_holders<V: IndexView>(
    ov: &mut Overlay<'_, V>,
    path: &str,
    target: Version,
    holders: &[NodeId],
) -> Result<Outcome, V::Error> {
    if let Err(e) = paths::validate(path) {
        return Ok(rejected(RejectReason::InvalidPath(e.to_string())));
    }
    let versions = ov.versions(path)?;
    let Some(mut rec) = versions.into_iter().find(|r| r.version == target) else {
        return Ok(rejected(RejectReason::UnknownVersion));
    };
    let Some(meta) = rec.state.as_mut() else {
        return Ok(rejected(RejectReason::UnknownVersion));
    };
    meta.holders.extend_from_slice(holders);
    meta.holders.sort_unstable();
    meta.holders.dedup();
    let is_live = ov.live(path)?.is_some_and(|l| l.version == target);
    ov.set_history(path, rec.clone());
    if is_live {
        ov.set_live(path, Some(rec));
    }
    Ok(Outcome::Applied { version: target })
}
