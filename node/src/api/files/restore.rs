//! `POST /restore`: writes a retained version of a path.
//!
//! 1. **Pick** the version: `version` (a log index; `pos` when one entry
//!    wrote several versions of the path) or, by default, the newest
//!    retained record that is not a deletion. A deletion cannot be restored.
//! 2. **Content** (files): the chunk list comes from the tree nodes held
//!    here ([`SyncHandle::chunk_list`]); unknown nodes and chunks not held
//!    are fetched from the version's holders through the sync handle's
//!    `remote`, every node checked against its hash and every chunk with
//!    blake3 before it is stored ([`crate::engine::sync::pull`]).
//! 3. **Destination** ([`super::dest`]):
//!    - none: the path itself, in place. What is there is replaced only if
//!      it is committed content (it hashes to some retained version of the
//!      path, so the history still has it; its chunks are put into the
//!      store first, so this node can restore it again); any other local
//!      content is moved aside to a conflict copy first, never overwritten. A
//!      directory is never replaced by a file. The engine then sees a local
//!      change and commits the restored content as a new version;
//!    - relative `to`: a path inside the synced directory;
//!    - absolute `to`: anywhere the daemon may write, with `allow_outside`
//!      (403 without it, so that the API does not write where its caller
//!      could not, by accident or by a script's mistake). If it lies inside
//!      the synced directory (as given, or once its parent is resolved) it
//!      is treated as the relative path there.
//!
//!    `to` never replaces anything: an existing destination is a 409.
//! 4. **Write** with the engine's materializer: a temp file in the
//!    destination's directory, fsync, a re-check of the destination, rename,
//!    fsync of the directory. Inside the synced directory every path is
//!    resolved beneath the root without following symlinks ([`RootFs`]);
//!    outside it the destination's directory is resolved once and written
//!    through its descriptor the same way, and the live-file index is left
//!    alone ([`FrozenIndex`]).
//!
//! The whole job (hashing what is there, fetching, writing) runs on the sync
//! task between two steps ([`SyncHandle::run_effect`]): a restore never
//! interleaves with a step's scan or writes of the same paths.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use filesyncd_chunkstore::chunker::{chunk_and_hash_with, Chunker, PipelineError};
use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::file_tree::FileTree;
use filesyncd_merkle::{build, ChunkEntry, Hash};
use filesyncd_raft::command::PutKind;
use filesyncd_raft::history::{FileMeta, PathRecord};

use super::dest::{parse_dest, resolve, Target};
use super::frozen::FrozenIndex;
use super::types::{RestoreRequest, Restored};
use super::{bad_request, conflict, not_found, sync_of};
use crate::api::{internal, ApiError, ApiState};
use crate::daemon::sync::ports::record_of;
use crate::daemon::sync::{EffectError, RemoteChunks, SyncHandle};
use crate::engine::fs::Fs;
use crate::engine::fs_real::RootFs;
use crate::engine::materialize::{MaterializeError, Materializer, Placed};
use crate::engine::plan::{Expect, Missing};
use crate::engine::ports::{ChunkFetcher, PortError, PortResult};
use crate::engine::types::{FileKind, Kind, Meta, NodeId, Stat, VersionRecord};
use crate::now_ms;

/// The version to restore, from the path's records (oldest first).
pub(in crate::api) fn pick(
    records: &[PathRecord],
    index: Option<u64>,
    pos: Option<u32>,
) -> Result<&PathRecord, ApiError> {
    let found = match index {
        None => records.iter().rev().find(|r| r.state.is_some()),
        Some(i) => records
            .iter()
            .rev()
            .find(|r| r.version.index == i && pos.is_none_or(|p| r.version.pos == p)),
    };
    let Some(rec) = found else {
        return Err(not_found(match index {
            None if records.is_empty() => {
                "no retained history for this path (never committed, or pruned by retention)".into()
            }
            None => "every retained version of this path is a deletion".into(),
            Some(i) => format!(
                "no retained version at index {i}{} (see `filesyncd history`)",
                pos.map(|p| format!(".{p}")).unwrap_or_default()
            ),
        }));
    };
    if rec.state.is_none() {
        return Err(conflict(format!(
            "version {}.{} is a deletion: pick an earlier version",
            rec.version.index, rec.version.pos
        )));
    }
    Ok(rec)
}

/// [`ChunkFetcher`] over the sync handle's [`RemoteChunks`].
struct RemoteFetcher(Arc<dyn RemoteChunks>);

impl ChunkFetcher for RemoteFetcher {
    fn fetch(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> impl std::future::Future<Output = PortResult<Vec<(Hash, Vec<u8>)>>> + Send {
        let f = self.0.chunks(holders.to_vec(), hashes.to_vec());
        async move { f.await.map_err(PortError::Unavailable) }
    }

    fn fetch_nodes(
        &self,
        holders: &[NodeId],
        hashes: &[Hash],
    ) -> impl std::future::Future<Output = PortResult<Vec<(Hash, Vec<u8>)>>> + Send {
        let f = self.0.nodes(holders.to_vec(), hashes.to_vec());
        async move { f.await.map_err(PortError::Unavailable) }
    }
}

fn unavailable(msg: String) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, msg)
}

/// Makes every chunk of a file version local (fetching what is missing,
/// verified) and returns its chunk list and the chunks fetched.
pub(super) fn ensure_local(
    rt: &tokio::runtime::Handle,
    sync: &SyncHandle,
    root: Hash,
    size: u64,
    holders: &[NodeId],
    missing: Missing,
) -> Result<(Vec<ChunkEntry>, u64), ApiError> {
    if size == 0 {
        if root == FileTree::empty().root {
            return Ok((Vec::new(), 0));
        }
        return Err(internal("an empty file version with a non-empty root"));
    }
    let fetcher = RemoteFetcher(sync.remote.clone());
    let fetched = rt
        .block_on(crate::engine::sync::pull(
            sync.store.as_ref(),
            &sync.nodes,
            &fetcher,
            root,
            size,
            holders,
            missing,
            "restore",
        ))
        .map_err(|e| {
            unavailable(format!(
                "the version's content is not all held here and its holders could not supply it \
                 (a replaced or deleted version stays restorable while some node keeps its chunks): {e}"
            ))
        })?;
    let list = sync
        .chunk_list(root, size)
        .map_err(|e| unavailable(format!("the version's chunk list is incomplete: {e}")))?;
    Ok((list, fetched as u64))
}

/// What is on disk at `rel`, hashed like the scanner does; the stat is the
/// one the content goes with (409 if the entry changed while hashed). A
/// file's chunks are put into `store` on the way: if the restore replaces
/// it, the version it held stays restorable from this node.
pub(super) fn disk_meta(
    fs: &dyn Fs,
    rel: &str,
    chunker: &Chunker,
    store: &dyn ChunkStore,
) -> Result<Option<(Meta, Stat)>, ApiError> {
    let io = |e: std::io::Error| internal(format!("{rel}: {e}"));
    let Some(st) = fs.lstat(rel).map_err(io)? else {
        return Ok(None);
    };
    let meta = match st.kind {
        FileKind::Dir => Meta::dir(st.mode),
        FileKind::Symlink => {
            let t = fs.read_link(rel).map_err(io)?;
            Meta::symlink(&t.to_string_lossy())
        }
        FileKind::Other => {
            return Err(conflict(format!(
                "{rel} is a socket, fifo or device here: move it away first"
            )))
        }
        FileKind::File => {
            let f = fs.open_read(rel).map_err(io)?;
            let before = f.stat().map_err(io)?;
            let sink = |_: u64, e: &ChunkEntry, d: &[u8]| store.put(e.hash, d);
            let chunks = match chunk_and_hash_with(f, chunker, sink) {
                Ok(c) => c,
                Err(PipelineError::Read(e)) => return Err(internal(format!("{rel}: {e}"))),
                Err(PipelineError::Sink(e)) => {
                    return Err(internal(format!("keeping the chunks of {rel}: {e}")))
                }
            };
            let after = fs.lstat(rel).map_err(io)?;
            if !after.is_some_and(|a| a.unchanged(&before)) || chunks.total_len != before.size {
                return Err(conflict(format!(
                    "{rel} is being written: try again when it is quiet"
                )));
            }
            let tree = build(&chunks.entries);
            return Ok(Some((
                Meta::file(tree.root, tree.size, before.mode),
                before,
            )));
        }
    };
    Ok(Some((meta, st)))
}

/// What an in-place restore does with what is at the path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InPlace {
    /// The disk already holds the version.
    Unchanged,
    Write(Expect),
}

/// Decides an in-place restore from what is on disk and the path's
/// retained versions (see the module doc).
pub(super) fn decide_in_place(
    want: &Meta,
    disk: Option<(Meta, Stat)>,
    records: &[PathRecord],
    rel: &str,
) -> Result<InPlace, ApiError> {
    let Some((have, st)) = disk else {
        return Ok(InPlace::Write(Expect::Absent));
    };
    if have == *want {
        return Ok(InPlace::Unchanged);
    }
    if have.is_dir() {
        if want.is_dir() {
            return Ok(InPlace::Write(Expect::Entry(st)));
        }
        return Err(conflict(format!(
            "{rel} is a directory here: restore the version elsewhere with --to"
        )));
    }
    Ok(InPlace::Write(if is_committed(&have, records) {
        Expect::Entry(st)
    } else {
        Expect::Absent
    }))
}

/// Whether content found on disk (`have`) is one of the path's retained
/// versions (`records`): the history keeps it, so it may be replaced or
/// deleted; anything else is local content, moved aside instead.
pub(super) fn is_committed(have: &Meta, records: &[PathRecord]) -> bool {
    records.iter().filter_map(|r| r.state.as_ref()).any(|m| {
        let kind = match &m.kind {
            PutKind::File => Kind::File,
            PutKind::Dir => Kind::Dir,
            PutKind::Symlink { target } => Kind::Symlink {
                target: target.clone(),
            },
        };
        kind == have.kind && m.root == have.root && m.size == have.size
    })
}

/// What every restore writes with, on the sync task's blocking pool (async
/// parts through `rt`): the single-path restore below and the tree restore
/// ([`super::tree`]).
pub(super) struct Writer {
    pub rt: tokio::runtime::Handle,
    pub sync: SyncHandle,
    pub node: NodeId,
    pub chunker: Chunker,
}

impl Writer {
    /// Writes the retained version `meta` at `record.path` through `fs`
    /// (the synced directory, or a directory outside it with a
    /// [`FrozenIndex`] as `store`), expecting `expect` there: a file's
    /// content is first made local (fetched from its holders and verified
    /// where missing). Returns what the materializer placed and the chunks
    /// fetched; `shown` names the destination in errors.
    pub(super) fn write(
        &self,
        fs: &dyn Fs,
        store: &dyn ChunkStore,
        record: &VersionRecord,
        meta: &FileMeta,
        expect: Expect,
        shown: &str,
    ) -> Result<(Placed, u64), ApiError> {
        let mut fetched = 0;
        let mut chunks = Vec::new();
        if record.meta.is_file() {
            let (list, n) = ensure_local(
                &self.rt,
                &self.sync,
                meta.root,
                meta.size,
                &meta.holders,
                Missing::Tree,
            )?;
            chunks = list;
            fetched += n;
        }
        let m = Materializer {
            fs,
            store,
            chunker: &self.chunker,
            node: self.node,
            now_ms: now_ms(),
        };
        // A chunk located in a live file that changed since it was indexed
        // reads as absent: fetch it and try again.
        let mut attempts = 0;
        loop {
            let res = match &record.meta.kind {
                Kind::File => m.write_file(record, &chunks, expect),
                Kind::Dir => m.mkdir(record, expect),
                Kind::Symlink { .. } => m.symlink(record, expect),
            };
            match res {
                Ok(p) => return Ok((p, fetched)),
                Err(MaterializeError::MissingChunk { hash, .. }) if attempts < 3 => {
                    attempts += 1;
                    let (_, n) = ensure_local(
                        &self.rt,
                        &self.sync,
                        meta.root,
                        meta.size,
                        &meta.holders,
                        Missing::Chunks(vec![hash]),
                    )?;
                    fetched += n;
                }
                Err(e) => return Err(internal(format!("writing {shown}: {e}"))),
            }
        }
    }
}

/// The restore, on the sync task's blocking pool (async parts through `rt`).
struct Job {
    w: Writer,
    records: Vec<PathRecord>,
    req: RestoreRequest,
}

impl Job {
    fn run(self) -> Result<Restored, ApiError> {
        let dest = parse_dest(&self.req.path, self.req.to.as_deref()).map_err(bad_request)?;
        let rec = pick(&self.records, self.req.version, self.req.pos)?.clone();
        let Some(meta) = rec.state.clone() else {
            return Err(internal("picked a deletion"));
        };
        let target = resolve(dest, &self.w.sync.root)?;
        if matches!(target, Target::Outside { .. }) && !self.req.allow_outside {
            return Err(ApiError(
                axum::http::StatusCode::FORBIDDEN,
                "--to lies outside the synced directory: pass --allow-outside to write there \
                 (the daemon writes with its own rights)"
                    .into(),
            ));
        }
        let (fs, rel, in_root, shown) = match &target {
            Target::Root { rel, .. } => (
                RootFs::open(&self.w.sync.root)
                    .map_err(|e| internal(format!("{}: {e}", self.w.sync.root.display())))?,
                rel.clone(),
                true,
                rel.clone(),
            ),
            Target::Outside { dir, name } => (
                RootFs::open(dir).map_err(|e| bad_request(format!("{}: {e}", dir.display())))?,
                name.clone(),
                false,
                dir.join(name).display().to_string(),
            ),
        };
        let mut record = record_of(rel.clone(), &rec);
        record.path = rel.clone();
        let expect = match target {
            Target::Root { in_place: true, .. } => {
                let disk = disk_meta(&fs, &rel, &self.w.chunker, self.w.sync.store.as_ref())?;
                match decide_in_place(&record.meta, disk, &self.records, &rel)? {
                    InPlace::Unchanged => {
                        return Ok(self.answer(&rec, &record.meta, shown, in_root, true, None, 0))
                    }
                    InPlace::Write(e) => e,
                }
            }
            _ => {
                if fs
                    .lstat(&rel)
                    .map_err(|e| internal(format!("{shown}: {e}")))?
                    .is_some()
                {
                    return Err(conflict(format!(
                        "{shown} exists: restore never replaces a destination; pick another --to"
                    )));
                }
                Expect::Absent
            }
        };
        let frozen = FrozenIndex {
            inner: self.w.sync.store.as_ref(),
        };
        let store: &dyn ChunkStore = if in_root {
            self.w.sync.store.as_ref()
        } else {
            &frozen
        };
        let (placed, fetched) = self.w.write(&fs, store, &record, &meta, expect, &shown)?;
        tracing::info!(
            path = %self.req.path,
            index = rec.version.index,
            pos = rec.version.pos,
            written = %shown,
            kept_as = ?placed.conflict,
            "version restored"
        );
        Ok(self.answer(
            &rec,
            &record.meta,
            shown,
            in_root,
            false,
            placed.conflict,
            fetched,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        rec: &PathRecord,
        meta: &Meta,
        written: String,
        in_root: bool,
        unchanged: bool,
        kept_as: Option<String>,
        chunks_fetched: u64,
    ) -> Restored {
        Restored {
            path: self.req.path.clone(),
            index: rec.version.index,
            pos: rec.version.pos,
            written,
            in_root,
            kind: match meta.kind {
                Kind::File => "file",
                Kind::Dir => "dir",
                Kind::Symlink { .. } => "symlink",
            }
            .to_owned(),
            size: meta.size,
            root: meta.root.to_hex(),
            unchanged,
            kept_as,
            chunks_fetched,
        }
    }
}

pub(super) async fn restore(
    State(s): State<ApiState>,
    Json(req): Json<RestoreRequest>,
) -> Result<Json<Restored>, ApiError> {
    parse_dest(&req.path, req.to.as_deref()).map_err(bad_request)?;
    let sync = sync_of(&s)?;
    let reader = s.node.reader().clone();
    let node = s.node.id();
    let owner = sync.clone();
    owner
        .run_effect("restore", move || {
            let rt = tokio::runtime::Handle::current();
            let records = reader.history(&req.path).map_err(internal)?;
            let settings = reader
                .settings()
                .map_err(internal)?
                .ok_or_else(|| unavailable("the cluster is not initialized yet".into()))?;
            let chunker = settings.chunker.validate().map_err(internal)?;
            Job {
                w: Writer {
                    rt,
                    sync,
                    node,
                    chunker,
                },
                records,
                req,
            }
            .run()
        })
        .await
        .map_err(|e| match e {
            EffectError::Stopped => unavailable(e.to_string()),
            EffectError::Failed(_) => internal(e),
        })?
        .map(Json)
}

#[cfg(test)]
mod tests {
    use filesyncd_raft::command::Version;
    use filesyncd_raft::history::FileMeta;

    use super::*;

    fn put(index: u64, root: u8) -> PathRecord {
        PathRecord {
            version: Version::new(index, 0),
            time_ms: 1,
            origin: 1,
            state: Some(FileMeta {
                kind: PutKind::File,
                root: Hash([root; 32]),
                size: 10,
                mode: 0o644,
                mtime_ns: 0,
                holders: vec![1],
            }),
        }
    }

    fn tomb(index: u64) -> PathRecord {
        PathRecord {
            version: Version::new(index, 0),
            time_ms: 1,
            origin: 1,
            state: None,
        }
    }

    #[test]
    fn picks_versions() {
        let recs = vec![put(3, 1), put(5, 2), tomb(8)];
        assert_eq!(pick(&recs, None, None).unwrap().version.index, 5);
        assert_eq!(pick(&recs, Some(3), None).unwrap().version.index, 3);
        assert_eq!(
            pick(&recs, Some(3), Some(1)).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            pick(&recs, Some(4), None).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            pick(&recs, Some(8), None).unwrap_err().0,
            StatusCode::CONFLICT
        );
        assert_eq!(
            pick(&[tomb(2)], None, None).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(pick(&[], None, None).unwrap_err().0, StatusCode::NOT_FOUND);
    }

    fn stat(kind: FileKind) -> Stat {
        Stat {
            kind,
            size: 10,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            mode: 0o644,
        }
    }

    #[test]
    fn in_place_keeps_uncommitted_content() {
        let recs = vec![put(3, 1), put(5, 2)];
        let want = Meta::file(Hash([1; 32]), 10, 0o644);
        let committed = Meta::file(Hash([2; 32]), 10, 0o644);
        let local = Meta::file(Hash([9; 32]), 10, 0o644);
        let st = stat(FileKind::File);
        assert_eq!(
            decide_in_place(&want, None, &recs, "p").unwrap(),
            InPlace::Write(Expect::Absent)
        );
        assert_eq!(
            decide_in_place(&want, Some((want.clone(), st)), &recs, "p").unwrap(),
            InPlace::Unchanged
        );
        assert_eq!(
            decide_in_place(&want, Some((committed, st)), &recs, "p").unwrap(),
            InPlace::Write(Expect::Entry(st)),
            "committed content is replaced (the history keeps it)"
        );
        assert_eq!(
            decide_in_place(&want, Some((local, st)), &recs, "p").unwrap(),
            InPlace::Write(Expect::Absent),
            "local content is moved aside, never overwritten"
        );
        let dir = stat(FileKind::Dir);
        assert_eq!(
            decide_in_place(&want, Some((Meta::dir(0o755), dir)), &recs, "p")
                .unwrap_err()
                .0,
            StatusCode::CONFLICT
        );
    }
}
