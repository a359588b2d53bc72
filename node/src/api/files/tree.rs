//! `POST /restore/tree`: a whole tree or subtree as it was committed at a
//! point of the history (`as_of`: a log index or an RFC 3339 time,
//! [`super::asof`]), written elsewhere (`to`) or in place (`in_place`).
//!
//! # Flow
//! 1. **Resolve** `as_of` against the state machine
//!    ([`SmReader::resolve_as_of`]): outside retention or beyond the
//!    applied index is a 404 with the reason, before anything is written.
//! 2. **Count** (metadata only, streaming): the paths to act on and the
//!    file bytes to write, page by page ([`SmReader::then_and_now`]: each
//!    path under `path` as of then and now, from a range of the history
//!    table). Nothing under `path` as of then is a 404: an in-place
//!    restore would delete the whole subtree.
//! 3. **Restore** in batches of [`TREE_BATCH`] paths, each batch read
//!    again from the state machine and run as ONE effect on the sync task
//!    ([`SyncHandle::run_effect`]): the engine steps between two batches,
//!    so it commits what a batch wrote while the next one runs, and a
//!    restore of a million paths never holds more than one batch. Every
//!    version is written by the single-path restore's machinery
//!    ([`super::restore::Writer`]: content made local from the holders,
//!    every tree node and chunk verified, then the materializer's temp,
//!    fsync, re-check, rename, fsync of the directory).
//! 4. **Answer** as newline-delimited JSON ([`TreeLine`]): one `progress`
//!    line with the totals at once, one after every batch, then `done`
//!    (the [`TreeRestored`] summary) or `error` (with what was done so
//!    far). Errors found before the first line (bad request, outside
//!    retention, destination not empty, another tree restore running)
//!    are plain 4xx answers. A client that goes away stops the job
//!    between two batches: what was written stays, a second run finishes
//!    it (a path already as it was then counts as `unchanged`).
//!
//! # `to`
//! Every path `path/x` alive then is written at `to/x` (`path` itself at
//! `to`), with the single restore's destination rules ([`super::dest`]):
//! relative is inside the synced directory (the engine then commits the
//! copy as new files), absolute is anywhere the daemon may write, only with
//! `allow_outside` (403 without). `to` must not exist or be an empty
//! directory (409 otherwise); nothing is ever replaced under it.
//!
//! # `in_place`
//! For every path under `path` whose content as of then differs from its
//! current committed content:
//! - alive then: its old version is written back, exactly as a single
//!   in-place restore does ([`super::restore::decide_in_place`]): what is
//!   on disk is replaced only if it is a retained version of the path (the
//!   history keeps it); other local content is moved to a conflict copy
//!   first. The engine commits the write as a new version: history is
//!   never rewritten, the versions since stay restorable.
//! - alive now, absent then: deleted, and the engine commits the delete
//!   as a new version. A file or symlink is removed only if it is a
//!   retained version of the path (its chunks are kept by the version
//!   store as for any delete); other local content is moved to a conflict
//!   copy instead. Directories are removed last, deepest first, and only
//!   when empty: one that still holds entries (local content, conflict
//!   copies) is kept and counted in `dirs_kept`. Their paths are the one
//!   list a job keeps whole (one string per directory to delete).
//! - paths whose committed content did not change are not touched, even if
//!   the disk differs (a local change in flight is the engine's).
//!
//! The paths an in-place batch changes are exempt from the mass-change
//! guard (the user asked for them: [`SyncHandle::run_effect_exempt`]),
//! but a restore that deletes more than half of the known entries at once
//! meets the engine's mass-delete guard like any such change: local
//! deletes are withheld until `filesyncd adopt` confirms them.
//!
//! One tree restore runs at a time per daemon (409 for a second).

use std::convert::Infallible;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_raft::history::{AsOf, ThenNow};
use filesyncd_raft::state_machine::SmReader;
use tokio::sync::{mpsc, Semaphore};

use super::asof::{as_of_error, describe, parse_as_of};
use super::dest::{parse_to, resolve, Target};
use super::frozen::FrozenIndex;
use super::listing::check_dir;
use super::restore::{decide_in_place, disk_meta, is_committed, InPlace, Writer};
use super::types::{
    KeptAs, PathFailure, TreeLine, TreeProgress, TreeRestoreRequest, TreeRestored, TREE_LISTED,
};
use super::{bad_request, conflict, not_found, sync_of};
use crate::api::{internal, ApiError, ApiState};
use crate::daemon::sync::ports::record_of;
use crate::daemon::sync::{EffectError, SyncHandle};
use crate::engine::fs::Fs;
use crate::engine::fs_real::RootFs;
use crate::engine::materialize::{Deleted, MaterializeError, Materializer};
use crate::engine::names::conflict_name;
use crate::engine::plan::Expect;
use crate::engine::types::{FileKind, NodeId};
use crate::now_ms;

/// Paths read and restored per batch (one effect on the sync task).
pub const TREE_BATCH: usize = 1000;

/// A job stops once this many paths failed (the cause is then rarely the
/// paths themselves).
pub const MAX_FAILURES: u64 = 1000;

/// One tree restore at a time in this process.
static TREE_RESTORES: Semaphore = Semaphore::const_new(1);

/// Where a `to` restore writes: `rel` beneath the directory `base`.
#[derive(Clone, Debug)]
struct DestDir {
    base: PathBuf,
    rel: String,
    in_root: bool,
}

impl DestDir {
    /// Where the path `p` of the subtree `path` goes.
    fn map(&self, path: &str, p: &str) -> String {
        let sub = if p == path {
            ""
        } else if path.is_empty() {
            p
        } else {
            &p[path.len() + 1..]
        };
        if sub.is_empty() {
            self.rel.clone()
        } else {
            format!("{}/{sub}", self.rel)
        }
    }

    fn shown(&self, rel: &str) -> String {
        if self.in_root {
            rel.to_owned()
        } else {
            self.base.join(rel).display().to_string()
        }
    }
}

/// What a batch does to one path.
fn todo(t: &ThenNow, in_place: bool) -> bool {
    if in_place {
        t.changed()
    } else {
        t.then.is_some()
    }
}

fn then_bytes(t: &ThenNow) -> u64 {
    t.then
        .as_ref()
        .and_then(|r| r.state.as_ref())
        .filter(|m| m.kind == filesyncd_raft::command::PutKind::File)
        .map_or(0, |m| m.size)
}

/// The totals of step 2, and how many paths were alive then.
fn count(
    reader: &SmReader,
    path: &str,
    at: &AsOf,
    in_place: bool,
) -> Result<(TreeProgress, u64), filesyncd_raft::state_machine::SmError> {
    let mut p = TreeProgress::default();
    let mut alive_then = 0;
    let mut after: Option<String> = None;
    loop {
        let (page, next) = reader.then_and_now(path, at, after.as_deref(), TREE_BATCH)?;
        for t in &page {
            alive_then += u64::from(t.then.is_some());
            if todo(t, in_place) {
                p.files_total += 1;
                p.bytes_total += then_bytes(t);
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok((p, alive_then)),
        }
    }
}

/// What one batch did (merged into the job's [`TreeRestored`]).
#[derive(Debug, Default)]
struct BatchOutcome {
    files: u64,
    bytes: u64,
    written: u64,
    deleted: u64,
    unchanged: u64,
    dirs_kept: u64,
    kept: Vec<KeptAs>,
    failures: Vec<PathFailure>,
    /// In place: directories to delete once everything else is done.
    dirs: Vec<String>,
    fetched: u64,
}

impl BatchOutcome {
    fn fail(&mut self, path: &str, e: ApiError) {
        self.failures.push(PathFailure {
            path: path.to_owned(),
            error: e.1,
        });
    }
}

/// A batch, run on the sync task (see the module doc).
struct Batch {
    w: Writer,
    reader: SmReader,
    path: String,
    dest: Option<DestDir>,
}

impl Batch {
    fn materializer<'a>(&'a self, fs: &'a dyn Fs, store: &'a dyn ChunkStore) -> Materializer<'a> {
        Materializer {
            fs,
            store,
            chunker: &self.w.chunker,
            node: self.w.node,
            now_ms: now_ms(),
        }
    }

    fn root_fs(&self) -> Result<RootFs, ApiError> {
        let base = self.dest.as_ref().map_or(&self.w.sync.root, |d| &d.base);
        RootFs::open(base).map_err(|e| internal(format!("{}: {e}", base.display())))
    }

    /// Restores `page` (step 3).
    fn run(self, page: Vec<ThenNow>) -> Result<BatchOutcome, ApiError> {
        let fs = self.root_fs()?;
        let frozen = FrozenIndex {
            inner: self.w.sync.store.as_ref(),
        };
        let store: &dyn ChunkStore = match &self.dest {
            Some(d) if !d.in_root => &frozen,
            _ => self.w.sync.store.as_ref(),
        };
        let mut out = BatchOutcome::default();
        for t in page {
            if !todo(&t, self.dest.is_none()) {
                continue;
            }
            out.files += 1;
            out.bytes += then_bytes(&t);
            let res = match &self.dest {
                Some(d) => self.write_to(&fs, store, d, &t, &mut out),
                None if t.then.is_some() => self.write_in_place(&fs, store, &t, &mut out),
                None => self.delete_in_place(&fs, store, &t, &mut out),
            };
            if let Err(e) = res {
                out.fail(&t.path, e);
            }
        }
        Ok(out)
    }

    fn write_to(
        &self,
        fs: &dyn Fs,
        store: &dyn ChunkStore,
        d: &DestDir,
        t: &ThenNow,
        out: &mut BatchOutcome,
    ) -> Result<(), ApiError> {
        let Some(rec) = &t.then else {
            return Ok(());
        };
        let Some(meta) = &rec.state else {
            return Ok(());
        };
        let rel = d.map(&self.path, &t.path);
        let shown = d.shown(&rel);
        let record = record_of(rel, rec);
        let (placed, n) = self
            .w
            .write(fs, store, &record, meta, Expect::Absent, &shown)?;
        out.written += 1;
        out.fetched += n;
        if let Some(c) = placed.conflict {
            out.kept.push(KeptAs {
                path: shown,
                kept_as: d.shown(&c),
            });
        }
        Ok(())
    }

    fn write_in_place(
        &self,
        fs: &dyn Fs,
        store: &dyn ChunkStore,
        t: &ThenNow,
        out: &mut BatchOutcome,
    ) -> Result<(), ApiError> {
        let Some(rec) = &t.then else {
            return Ok(());
        };
        let Some(meta) = &rec.state else {
            return Ok(());
        };
        let records = self.reader.history(&t.path).map_err(internal)?;
        let record = record_of(t.path.clone(), rec);
        let disk = disk_meta(fs, &t.path, &self.w.chunker, store)?;
        match decide_in_place(&record.meta, disk, &records, &t.path)? {
            InPlace::Unchanged => out.unchanged += 1,
            InPlace::Write(expect) => {
                let (placed, n) = self.w.write(fs, store, &record, meta, expect, &t.path)?;
                out.written += 1;
                out.fetched += n;
                if let Some(c) = placed.conflict {
                    out.kept.push(KeptAs {
                        path: t.path.clone(),
                        kept_as: c,
                    });
                }
            }
        }
        Ok(())
    }

    fn delete_in_place(
        &self,
        fs: &dyn Fs,
        store: &dyn ChunkStore,
        t: &ThenNow,
        out: &mut BatchOutcome,
    ) -> Result<(), ApiError> {
        let path = t.path.as_str();
        let io = |e: std::io::Error| internal(format!("{path}: {e}"));
        let Some(st) = fs.lstat(path).map_err(io)? else {
            out.unchanged += 1;
            return Ok(());
        };
        if st.kind == FileKind::Dir {
            out.dirs.push(path.to_owned());
            return Ok(());
        }
        let records = self.reader.history(path).map_err(internal)?;
        let Some((have, st)) = disk_meta(fs, path, &self.w.chunker, store)? else {
            out.unchanged += 1;
            return Ok(());
        };
        let m = self.materializer(fs, store);
        let fail = |e: MaterializeError| internal(format!("{path}: {e}"));
        if is_committed(&have, &records) {
            return match m.delete(path, &st).map_err(fail)? {
                Deleted::Removed | Deleted::AlreadyAbsent => {
                    out.deleted += 1;
                    Ok(())
                }
                Deleted::Changed | Deleted::NotEmpty => Err(conflict(format!(
                    "{path} changed while being restored: run the restore again"
                ))),
            };
        }
        // Local content: moved aside, never deleted.
        for n in 1..=1000 {
            let c = conflict_name(path, m.now_ms, self.w.node, n);
            match m.conflict_copy(path, &c, &st) {
                Ok(Some(_)) => {
                    out.kept.push(KeptAs {
                        path: path.to_owned(),
                        kept_as: c,
                    });
                    return Ok(());
                }
                Ok(None) => {
                    return Err(conflict(format!(
                        "{path} changed while being restored: run the restore again"
                    )))
                }
                Err(MaterializeError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Err(internal(format!("{path}: no free conflict name")))
    }

    /// Deletes the directories of an in-place restore, deepest first (the
    /// caller passes them in reverse path order), each only if empty.
    fn remove_dirs(self, dirs: Vec<String>) -> Result<BatchOutcome, ApiError> {
        let fs = self.root_fs()?;
        let store = self.w.sync.store.as_ref();
        let m = self.materializer(&fs, store);
        let mut out = BatchOutcome::default();
        for d in dirs {
            let st = match fs.lstat(&d) {
                Ok(Some(st)) => st,
                Ok(None) => {
                    out.deleted += 1;
                    continue;
                }
                Err(e) => {
                    out.fail(&d, internal(format!("{d}: {e}")));
                    continue;
                }
            };
            if st.kind != FileKind::Dir {
                out.dirs_kept += 1;
                continue;
            }
            match m.delete(&d, &st) {
                Ok(Deleted::Removed | Deleted::AlreadyAbsent) => out.deleted += 1,
                Ok(Deleted::NotEmpty | Deleted::Changed) => out.dirs_kept += 1,
                Err(e) => out.fail(&d, internal(format!("{d}: {e}"))),
            }
        }
        Ok(out)
    }
}

/// The job of step 3 and 4, on a task of its own.
struct Job {
    reader: SmReader,
    sync: SyncHandle,
    node: NodeId,
    path: String,
    at: AsOf,
    dest: Option<DestDir>,
    summary: TreeRestored,
    lines: mpsc::Sender<TreeLine>,
}

impl Job {
    fn batch(&self) -> impl FnOnce() -> Result<Batch, ApiError> + Send + 'static {
        let (reader, sync, node) = (self.reader.clone(), self.sync.clone(), self.node);
        let (path, dest) = (self.path.clone(), self.dest.clone());
        move || {
            let settings = reader
                .settings()
                .map_err(internal)?
                .ok_or_else(|| internal("the cluster is not initialized"))?;
            let chunker = settings.chunker.validate().map_err(internal)?;
            Ok(Batch {
                w: Writer {
                    rt: tokio::runtime::Handle::current(),
                    sync,
                    node,
                    chunker,
                },
                reader,
                path,
                dest,
            })
        }
    }

    fn merge(&mut self, b: BatchOutcome) {
        let s = &mut self.summary;
        s.progress.files_done += b.files;
        s.progress.bytes_done += b.bytes;
        s.written_paths += b.written;
        s.deleted += b.deleted;
        s.unchanged += b.unchanged;
        s.dirs_kept += b.dirs_kept;
        s.chunks_fetched += b.fetched;
        s.kept_count += b.kept.len() as u64;
        s.failed += b.failures.len() as u64;
        let room = TREE_LISTED.saturating_sub(s.kept.len());
        s.kept.extend(b.kept.into_iter().take(room));
        let room = TREE_LISTED.saturating_sub(s.failures.len());
        s.failures.extend(b.failures.into_iter().take(room));
    }

    /// Runs `f` on the sync task; the changes it makes at `exempt` are the
    /// user's request, not a mass change for the guard to hold.
    async fn effect<R: Send + 'static>(
        &self,
        exempt: Vec<String>,
        f: impl FnOnce() -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        self.sync
            .run_effect_exempt("restore tree", exempt, f)
            .await
            .map_err(|e| match e {
                EffectError::Stopped => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                EffectError::Failed(_) => internal(e),
            })?
    }

    async fn restore(&mut self) -> Result<(), ApiError> {
        let mut after: Option<String> = None;
        let mut dirs: Vec<String> = Vec::new();
        let given = self
            .summary
            .as_of
            .as_ref()
            .map_or_else(String::new, |a| a.given.clone());
        loop {
            if self.lines.is_closed() {
                return Err(internal("the client went away"));
            }
            let (reader, path, at, from) = (
                self.reader.clone(),
                self.path.clone(),
                self.at,
                after.clone(),
            );
            let (page, next) = tokio::task::spawn_blocking(move || {
                reader.then_and_now(&path, &at, from.as_deref(), TREE_BATCH)
            })
            .await
            .map_err(internal)?
            .map_err(|e| as_of_error(&given, e))?;
            if page.iter().any(|t| todo(t, self.dest.is_none())) {
                let make = self.batch();
                let exempt = match self.dest {
                    None => page.iter().map(|t| t.path.clone()).collect(),
                    Some(_) => Vec::new(),
                };
                let out = self.effect(exempt, move || make()?.run(page)).await?;
                dirs.extend_from_slice(&out.dirs);
                self.merge(out);
                let _ = self
                    .lines
                    .send(TreeLine::Progress(self.summary.progress.clone()))
                    .await;
                if self.summary.failed >= MAX_FAILURES {
                    return Err(internal(format!(
                        "stopped after {} failed paths",
                        self.summary.failed
                    )));
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        dirs.sort_unstable_by(|a, b| b.cmp(a));
        for chunk in dirs.chunks(TREE_BATCH) {
            let make = self.batch();
            let chunk = chunk.to_vec();
            let exempt = match self.dest {
                None => chunk.clone(),
                Some(_) => Vec::new(),
            };
            let out = self
                .effect(exempt, move || make()?.remove_dirs(chunk))
                .await?;
            self.merge(out);
        }
        Ok(())
    }

    async fn run(mut self) {
        let line = match self.restore().await {
            Ok(()) => {
                tracing::info!(
                    path = %self.path,
                    written = self.summary.written_paths,
                    deleted = self.summary.deleted,
                    unchanged = self.summary.unchanged,
                    failed = self.summary.failed,
                    "tree restored"
                );
                TreeLine::Done(self.summary)
            }
            Err(e) => {
                tracing::warn!(path = %self.path, error = %e.1, "tree restore stopped");
                TreeLine::Error {
                    error: e.1,
                    partial: self.summary,
                }
            }
        };
        let _ = self.lines.send(line).await;
    }
}

/// Checks the destination of a `to` restore on the sync task: absent, or
/// an empty directory.
fn check_dest(sync: &SyncHandle, target: Target, allow_outside: bool) -> Result<DestDir, ApiError> {
    let d = match target {
        Target::Root { rel, .. } => DestDir {
            base: sync.root.clone(),
            rel,
            in_root: true,
        },
        Target::Outside { dir, name } => {
            if !allow_outside {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "--to lies outside the synced directory: pass --allow-outside to write there \
                     (the daemon writes with its own rights)"
                        .into(),
                ));
            }
            DestDir {
                base: dir,
                rel: name,
                in_root: false,
            }
        }
    };
    let fs =
        RootFs::open(&d.base).map_err(|e| bad_request(format!("{}: {e}", d.base.display())))?;
    let shown = d.shown(&d.rel);
    let io = |e: std::io::Error| internal(format!("{shown}: {e}"));
    match fs.lstat(&d.rel).map_err(io)? {
        None => Ok(d),
        Some(st) if st.kind == FileKind::Dir && fs.read_dir(&d.rel).map_err(io)?.is_empty() => {
            Ok(d)
        }
        Some(_) => Err(conflict(format!(
            "{shown} exists and is not an empty directory: a tree restore never replaces a \
             destination; pick another --to"
        ))),
    }
}

pub(super) async fn restore_tree(
    State(s): State<ApiState>,
    Json(req): Json<TreeRestoreRequest>,
) -> Result<Response, ApiError> {
    check_dir(&req.path).map_err(bad_request)?;
    let spec = parse_as_of(&req.as_of).map_err(bad_request)?;
    let dest = match (&req.to, req.in_place) {
        (Some(to), false) => Some(parse_to(to).map_err(bad_request)?),
        (None, true) => None,
        _ => return Err(bad_request("give exactly one of --to DEST and --in-place")),
    };
    let sync = sync_of(&s)?;
    let permit = TREE_RESTORES.try_acquire().map_err(|_| {
        conflict("a tree restore is already running on this node: wait for it to end")
    })?;
    let reader = s.node.reader().clone();
    let (r, p, in_place) = (reader.clone(), req.path.clone(), dest.is_none());
    let (at, totals, alive_then) = tokio::task::spawn_blocking(move || {
        let at = r.resolve_as_of(spec)?;
        let (totals, alive) = count(&r, &p, &at, in_place)?;
        Ok::<_, filesyncd_raft::state_machine::SmError>((at, totals, alive))
    })
    .await
    .map_err(internal)?
    .map_err(|e| as_of_error(&req.as_of, e))?;
    if alive_then == 0 {
        return Err(not_found(format!(
            "nothing under {:?} as of {}: nothing to restore",
            if req.path.is_empty() { "." } else { &req.path },
            req.as_of.trim()
        )));
    }
    let dest = match dest {
        None => None,
        Some(d) => {
            let (sync2, allow) = (sync.clone(), req.allow_outside);
            let checked = sync
                .run_effect("restore tree: destination", move || {
                    let target = resolve(d, &sync2.root)?;
                    check_dest(&sync2, target, allow)
                })
                .await
                .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))??;
            Some(checked)
        }
    };
    let (tx, rx) = mpsc::channel::<TreeLine>(16);
    let summary = TreeRestored {
        path: req.path.clone(),
        as_of: Some(describe(&req.as_of, &at)),
        written: dest
            .as_ref()
            .map_or_else(|| req.path.clone(), |d| d.shown(&d.rel)),
        in_root: dest.as_ref().is_none_or(|d| d.in_root),
        in_place,
        progress: totals.clone(),
        ..TreeRestored::default()
    };
    let _ = tx.send(TreeLine::Progress(totals)).await;
    let job = Job {
        reader,
        sync,
        node: s.node.id(),
        path: req.path,
        at,
        dest,
        summary,
        lines: tx,
    };
    tokio::spawn(async move {
        let _permit = permit;
        job.run().await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let Ok(mut text) = serde_json::to_string(&line) else {
            return None;
        };
        text.push('\n');
        Some((Ok::<_, Infallible>(Bytes::from(text)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_map_the_subtree() {
        let d = DestDir {
            base: "/r".into(),
            rel: "old".into(),
            in_root: true,
        };
        assert_eq!(d.map("docs", "docs"), "old");
        assert_eq!(d.map("docs", "docs/a/b.txt"), "old/a/b.txt");
        assert_eq!(d.map("", "a/b.txt"), "old/a/b.txt");
        let out = DestDir {
            in_root: false,
            ..d
        };
        assert_eq!(out.shown("old/x"), "/r/old/x");
    }
}
