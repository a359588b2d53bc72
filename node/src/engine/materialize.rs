//! Materializing committed versions on disk, crash-safely and never over
//! unseen local data.
//!
//! # Writing a file version ([`Materializer::write_file`])
//! 1. Parents are created if missing (mode 0755); nothing is ever resolved
//!    through a symlink (the [`Fs`] seam refuses symlinked components).
//! 2. The content is assembled into a new temp file
//!    `<dir>/.filesyncd-tmp-<random>` in the target's directory: each chunk
//!    is read, verified, from the [`ChunkStore`] (any live file holding it or
//!    a blob: a rename or copy of a local file transfers nothing); a chunk of
//!    zeros is not written but skipped by offset, so zero runs stay holes
//!    (a zero chunk the store lacks is synthesized). The length is set, the
//!    mode (masked to `0o777`: setuid/setgid/sticky never come from a peer)
//!    and the mtime are applied, and the temp is fsynced.
//! 3. The target is `lstat`ed again and compared with what the plan saw
//!    ([`Expect`]). If it changed (a local write since the plan), the local
//!    entry is first moved aside to a conflict copy
//!    (`<stem>.sync-conflict-<time>-<node>.<ext>`, never replacing anything),
//!    so nothing unseen is overwritten; the caller proposes the copy.
//! 4. The temp is renamed over the target (`RENAME_NOREPLACE` when the
//!    target is expected absent), the directory is fsynced, and the file's
//!    chunk locations are indexed in the store as a live file.
//!
//! A crash at any point leaves the target either the old content or the new
//! one, whole (the temp is durable before the rename); a leftover temp is
//! removed at start-up by [`remove_stale_temps`].
//!
//! Directories ([`Materializer::mkdir`]) and symlinks
//! ([`Materializer::symlink`], created under a temp name then renamed) follow
//! the same re-check. A delete ([`Materializer::delete`]) only removes an
//! entry that is still exactly what the plan expected; a file's chunks are
//! put into the store as blobs before the unlink (retention and reuse by a
//! later write), then its live-file locations are forgotten. A write that
//! replaces a file first does the same for the chunks of the old content
//! that the new one does not reuse ([`Materializer::retire_replaced`]);
//! the engine keeps mostly replaced large content by a hard link instead
//! ([`super::stage::retire_by_link`]). A version staged by a pull
//! ([`super::stage`]) is not written here at all: its staged file is the
//! temp.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;

use filesyncd_chunkstore::chunker::{Chunker, PipelineError};
use filesyncd_chunkstore::store::{ChunkStore, FileIndex, FileMove, FileStamp, StoreError};
use filesyncd_merkle::{ChunkEntry, Hash};

use super::fs::{chunk_read, join, split, Fs};
use super::names::{self, conflict_name, TMP_PREFIX};
use super::plan::Expect;
use super::stage::{self, located};
use super::types::{FileKind, Kind, NodeId, Stat, VersionRecord, MODE_MASK};

/// Why a materialization failed (the target is then untouched).
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: chunk {hash} is not in the store")]
    MissingChunk { path: String, hash: Hash },
    #[error("{path}: the chunk list does not add up to the version's size")]
    BadChunkList { path: String },
    #[error("{path}: not a syncable path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path}: not a {expected} version")]
    WrongKind {
        path: String,
        expected: &'static str,
    },
    #[error("chunk store: {0}")]
    Store(#[from] StoreError),
    /// Placed, but the batch's one index commit failed (the next scan
    /// re-indexes it).
    #[error("{path}: chunk index commit of the batch failed: {error}")]
    BatchIndex { path: String, error: String },
}

type Result<T, E = MaterializeError> = std::result::Result<T, E>;

/// Chunks read and stored together when a replaced version is retired
/// (bounds the memory: at most 64 × the chunk max).
const RETIRE_BATCH: usize = 64;

fn io_err(op: &'static str, path: &str) -> impl FnOnce(io::Error) -> MaterializeError {
    let path = path.to_owned();
    move |source| MaterializeError::Io { op, path, source }
}

/// One file version to write ([`Materializer::write_files`]).
#[derive(Clone, Copy, Debug)]
pub struct WriteJob<'r> {
    pub record: &'r VersionRecord,
    /// Its chunk list.
    pub chunks: &'r [ChunkEntry],
    /// What the plan saw at the target.
    pub expect: Expect,
}

/// What a write left on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The target's stat after the write (record it in the local index).
    pub stat: Stat,
    /// Local content found changed since the plan, moved to this path.
    pub conflict: Option<String>,
}

/// What a delete did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    /// Nothing was there.
    AlreadyAbsent,
    /// The entry changed since the plan: kept (it is a local change).
    Changed,
    /// A directory that still has entries: kept.
    NotEmpty,
}

/// Writes committed versions through an [`Fs`].
pub struct Materializer<'a> {
    pub fs: &'a dyn Fs,
    pub store: &'a dyn ChunkStore,
    /// Chunks a deleted file before retiring its chunks to the store.
    pub chunker: &'a Chunker,
    /// This node (names conflict copies).
    pub node: NodeId,
    /// Wall clock for conflict names, ms since the epoch.
    pub now_ms: u64,
}

impl Materializer<'_> {
    /// Writes the file version `record` (whose chunk list is `chunks`) at
    /// its path; see the module doc. One write is a batch of one
    /// ([`Materializer::write_files`]).
    pub fn write_file(
        &self,
        record: &VersionRecord,
        chunks: &[ChunkEntry],
        expect: Expect,
    ) -> Result<Placed> {
        let job = WriteJob {
            record,
            chunks,
            expect,
        };
        self.write_files(std::slice::from_ref(&job))
            .pop()
            .unwrap_or_else(|| {
                Err(MaterializeError::BadChunkList {
                    path: record.path.clone(),
                })
            })
    }

    /// Writes many file versions with batched durability, in this order:
    /// 1. every version is staged in its temp file (content, length, mode,
    ///    mtime), nothing flushed yet;
    /// 2. all temps are flushed together ([`Fs::sync_files`]: one `syncfs`
    ///    where that is durable, parallel `fsync`s elsewhere);
    /// 3. each target is re-checked and its temp renamed over it;
    /// 4. each touched directory is fsynced once;
    /// 5. the placed files' chunk locations go into the store in one commit.
    ///
    /// A crash at any point leaves each target old or new, whole (a rename
    /// only ever moves a flushed temp); the caller's local-index commit comes
    /// after this returns. One result per job, in order: a failed job leaves
    /// its target untouched (or, after its rename, placed but unrecorded, as
    /// a single write would).
    pub fn write_files(&self, jobs: &[WriteJob<'_>]) -> Vec<Result<Placed>> {
        let mut out: Vec<Option<Result<Placed>>> = (0..jobs.len()).map(|_| None).collect();
        // 1. Stage.
        let mut staged: Vec<(usize, String)> = Vec::with_capacity(jobs.len());
        // Temps that are staged versions (`engine::stage`), taken as they are.
        let mut adopted: BTreeSet<String> = BTreeSet::new();
        for (i, job) in jobs.iter().enumerate() {
            match self.stage(job, &mut adopted) {
                Ok(tmp) => staged.push((i, tmp)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !adopted.is_empty() {
            // Their mode and mtime changed: recorded under the new stamp
            // (one commit, a row per file: the chunk locations stay), so a
            // staged file that is not placed after all is still known to
            // hold its chunks.
            let files: Vec<(&str, &[ChunkEntry])> = staged
                .iter()
                .filter(|(_, t)| adopted.contains(t))
                .map(|(i, t)| (t.as_str(), jobs[*i].chunks))
                .collect();
            if let Err(e) = stage::restamp(self.fs, self.store, &files) {
                tracing::warn!(error = %e, "re-indexing staged versions failed (re-verified at start-up)");
            }
        }
        crate::engine::crash_point("materialize::staged", !staged.is_empty());
        // 2. Flush the data of every temp.
        let tmps: Vec<&str> = staged.iter().map(|(_, t)| t.as_str()).collect();
        let flushed = self.fs.sync_files(&tmps);
        if flushed.len() != staged.len() {
            tracing::error!(
                asked = staged.len(),
                answered = flushed.len(),
                "flush answered the wrong number of results"
            );
        }
        crate::engine::crash_point("materialize::flushed", !staged.is_empty());
        // 3. Place.
        let mut placed: Vec<(usize, Placed)> = Vec::with_capacity(staged.len());
        let mut dirs: BTreeSet<&str> = BTreeSet::new();
        let flushed = flushed.into_iter().chain(std::iter::repeat_with(|| {
            Err(io::Error::other("not flushed"))
        }));
        for ((i, tmp), synced) in staged.iter().zip(flushed) {
            let path = jobs[*i].record.path.as_str();
            let res = synced
                .map_err(io_err("fsync", tmp))
                .and_then(|()| self.place_unsynced(tmp, path, jobs[*i].expect));
            match res {
                Ok(p) => {
                    dirs.insert(split(path).0);
                    placed.push((*i, p));
                }
                Err(e) => {
                    if !adopted.contains(tmp) {
                        let _ = self.fs.remove_file(tmp);
                    }
                    out[*i] = Some(Err(e));
                }
            }
        }
        // A staged version moved out of the staging directory: its entry
        // there goes with this batch's directory flushes.
        let placed_at: HashSet<usize> = placed.iter().map(|(j, _)| *j).collect();
        let moved: Vec<&str> = staged
            .iter()
            .filter(|(i, t)| adopted.contains(t) && placed_at.contains(i))
            .map(|(_, t)| t.as_str())
            .collect();
        if !moved.is_empty() {
            dirs.insert(stage::STAGE_DIR);
        }
        crate::engine::crash_point("materialize::renamed", !placed.is_empty());
        // 4. Make the renames durable: each directory once.
        let mut dir_failed: HashMap<&str, String> = HashMap::new();
        let any_dir = !dirs.is_empty();
        for d in dirs {
            if let Err(e) = self.fs.sync_dir(d) {
                dir_failed.insert(d, e.to_string());
            }
        }
        crate::engine::crash_point("materialize::dirs_synced", any_dir);
        // 5. Index what was placed durably, in one commit.
        let mut indexed: Vec<(usize, Placed)> = Vec::with_capacity(placed.len());
        for (i, p) in placed {
            let path = jobs[i].record.path.as_str();
            match dir_failed.get(split(path).0) {
                Some(e) => {
                    out[i] = Some(Err(io_err("fsync dir", split(path).0)(io::Error::other(
                        e.clone(),
                    ))))
                }
                None => indexed.push((i, p)),
            }
        }
        // A staged version placed as the target keeps its index record:
        // moved to the target's path and stamp (a row per file, its chunk
        // locations as they are). The rest, and any the store does not
        // know, are indexed in full.
        let temp_of: HashMap<usize, &str> = staged
            .iter()
            .filter(|(_, t)| adopted.contains(t))
            .map(|(i, t)| (*i, t.as_str()))
            .collect();
        let relinks: Vec<(usize, FileMove<'_>)> = indexed
            .iter()
            .filter_map(|(i, p)| {
                Some((
                    *i,
                    FileMove {
                        from: temp_of.get(i)?,
                        to: jobs[*i].record.path.as_str(),
                        stamp: FileStamp {
                            inode: p.stat.ino,
                            size: p.stat.size,
                            mtime_ns: p.stat.mtime_ns,
                        },
                    },
                ))
            })
            .collect();
        let moves: Vec<FileMove<'_>> = relinks.iter().map(|(_, m)| *m).collect();
        let relinked: HashSet<usize> = match self.store.move_files(&moves) {
            Ok(done) => relinks
                .iter()
                .zip(done)
                .filter(|(_, ok)| *ok)
                .map(|((i, _), _)| *i)
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "moving staged records failed; indexing in full");
                HashSet::new()
            }
        };
        let indexed_full: Vec<&(usize, Placed)> = indexed
            .iter()
            .filter(|(i, _)| !relinked.contains(i))
            .collect();
        let tables: Vec<Vec<(u64, ChunkEntry)>> = indexed_full
            .iter()
            .map(|(i, _)| located(jobs[*i].chunks))
            .collect();
        let files: Vec<FileIndex<'_>> = indexed_full
            .iter()
            .copied()
            .zip(&tables)
            .map(|((i, p), t)| FileIndex {
                rel_path: jobs[*i].record.path.as_str(),
                stamp: FileStamp {
                    inode: p.stat.ino,
                    size: p.stat.size,
                    mtime_ns: p.stat.mtime_ns,
                },
                chunks: t,
            })
            .collect();
        let index_err = match self.store.index_placed(&files) {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        if index_err.is_none() && !moved.is_empty() {
            // The staged names are gone: their records go too (else the
            // store's path table would keep one row per staged version).
            if let Err(e) = self.store.forget_files(&moved) {
                tracing::warn!(error = %e, "forgetting placed staged versions failed");
            }
        }
        crate::engine::crash_point("materialize::indexed", !files.is_empty());
        for (i, p) in indexed {
            out[i] = Some(match &index_err {
                None => Ok(p),
                Some(e) => Err(MaterializeError::BatchIndex {
                    path: jobs[i].record.path.clone(),
                    error: e.clone(),
                }),
            });
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(MaterializeError::Io {
                        op: "write",
                        path: String::new(),
                        source: io::Error::other("write job without a result"),
                    })
                })
            })
            .collect()
    }

    /// Step 1 of [`Materializer::write_files`] for one job: the temp file
    /// with the version's content, length, mode and mtime, closed, not
    /// flushed.
    fn stage(&self, job: &WriteJob<'_>, adopted: &mut BTreeSet<String>) -> Result<String> {
        let record = job.record;
        let chunks = job.chunks;
        let path = checked(&record.path)?;
        if record.meta.kind != Kind::File {
            return Err(MaterializeError::WrongKind {
                path: path.into(),
                expected: "file",
            });
        }
        let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        if total != record.meta.size {
            return Err(MaterializeError::BadChunkList { path: path.into() });
        }
        let (dir, _) = split(path);
        self.make_parents(dir)?;
        if let Some(sp) = stage::staged(self.fs, self.store, &record.meta.root, total) {
            if !adopted.contains(&sp) {
                match self.adopt_staged(&sp, record) {
                    Ok(()) => {
                        adopted.insert(sp.clone());
                        return Ok(sp);
                    }
                    Err(e) => {
                        tracing::warn!(path, error = %e, "staged version not usable; writing from the chunk store")
                    }
                }
            }
        }
        let tmp = temp_name(dir);
        let mut f = self.fs.create_new(&tmp).map_err(io_err("create", &tmp))?;
        let res = (|| {
            let mut zeros: HashMap<u32, Hash> = HashMap::new();
            let mut offset = 0u64;
            // The length the writes gave the new (empty) temp file.
            let mut written_end = 0u64;
            for c in chunks {
                let data = self.store.get(&c.hash)?;
                match data {
                    Some(d) if d.len() == c.len as usize => {
                        if d.iter().any(|b| *b != 0) {
                            f.write_all_at(&d, offset).map_err(io_err("write", &tmp))?;
                            written_end = offset + u64::from(c.len);
                        }
                    }
                    _ => {
                        let z = zeros
                            .entry(c.len)
                            .or_insert_with(|| Hash::of_chunk(&vec![0; c.len as usize]));
                        if *z != c.hash {
                            return Err(MaterializeError::MissingChunk {
                                path: path.into(),
                                hash: c.hash,
                            });
                        }
                    }
                }
                offset += u64::from(c.len);
            }
            // Only a version that ends in zeros (left as a hole) needs its
            // length set: one syscall, and one inotify event, less per file.
            if written_end != total {
                f.set_len(total).map_err(io_err("truncate", &tmp))?;
            }
            f.set_mode(record.meta.mode & MODE_MASK)
                .map_err(io_err("chmod", &tmp))?;
            f.set_mtime(record.mtime_ns)
                .map_err(io_err("utime", &tmp))?;
            Ok(())
        })();
        drop(f);
        match res {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = self.fs.remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Gives the staged copy `sp` of `record`'s content the version's mode
    /// and mtime: it is then the batch's temp file for `record`.
    fn adopt_staged(&self, sp: &str, record: &VersionRecord) -> Result<()> {
        let mut f = self.fs.open_write(sp).map_err(io_err("open", sp))?;
        f.set_mode(record.meta.mode & MODE_MASK)
            .map_err(io_err("chmod", sp))?;
        f.set_mtime(record.mtime_ns).map_err(io_err("utime", sp))?;
        Ok(())
    }

    /// Creates the directory of `record` or sets its mode.
    pub fn mkdir(&self, record: &VersionRecord, expect: Expect) -> Result<Placed> {
        let path = checked(&record.path)?;
        let mode = record.meta.mode & MODE_MASK;
        let current = self.fs.lstat(path).map_err(io_err("lstat", path))?;
        let mut conflict = None;
        match current {
            Some(s) if s.kind == FileKind::Dir => {}
            Some(s) => {
                if expect.matches(Some(&s)) {
                    self.remove_entry(path, &s)?;
                } else {
                    conflict = Some(self.move_aside(path)?);
                }
            }
            None => {}
        }
        let (dir, _) = split(path);
        if !matches!(
            current,
            Some(Stat {
                kind: FileKind::Dir,
                ..
            })
        ) {
            self.make_parents(dir)?;
            self.fs.mkdir(path, mode).map_err(io_err("mkdir", path))?;
        }
        self.fs
            .set_mode(path, mode)
            .map_err(io_err("chmod", path))?;
        self.fs.sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        let stat = self.stat_of(path)?;
        Ok(Placed { stat, conflict })
    }

    /// Creates the symlink of `record` (atomically replacing what was expected).
    pub fn symlink(&self, record: &VersionRecord, expect: Expect) -> Result<Placed> {
        let path = checked(&record.path)?;
        let Kind::Symlink { target } = &record.meta.kind else {
            return Err(MaterializeError::WrongKind {
                path: path.into(),
                expected: "symlink",
            });
        };
        if !names::valid_target(target) {
            return Err(MaterializeError::InvalidPath {
                path: path.into(),
                reason: "invalid symlink target",
            });
        }
        let (dir, _) = split(path);
        self.make_parents(dir)?;
        let tmp = temp_name(dir);
        self.fs
            .symlink(target, &tmp)
            .map_err(io_err("symlink", &tmp))?;
        let res = self.place(&tmp, path, expect);
        if res.is_err() {
            let _ = self.fs.remove_file(&tmp);
        }
        res
    }

    /// Removes `path` if it is still `expect` (see [`Deleted`]); a file's
    /// chunks go into the version store first.
    pub fn delete(&self, path: &str, expect: &Stat) -> Result<Deleted> {
        self.delete_with(path, expect, true)
    }

    /// [`Materializer::delete`] of a file whose content is kept elsewhere
    /// already (a staged version linked to the same inode): nothing stored.
    pub fn delete_kept(&self, path: &str, expect: &Stat) -> Result<Deleted> {
        self.delete_with(path, expect, false)
    }

    fn delete_with(&self, path: &str, expect: &Stat, retire: bool) -> Result<Deleted> {
        let path = checked(path)?;
        let Some(current) = self.fs.lstat(path).map_err(io_err("lstat", path))? else {
            self.store.forget_file(path)?;
            return Ok(Deleted::AlreadyAbsent);
        };
        if !expect.same_entry(&current) {
            return Ok(Deleted::Changed);
        }
        if current.kind == FileKind::Dir {
            return match self.fs.remove_dir(path) {
                Ok(()) => {
                    let (dir, _) = split(path);
                    self.fs.sync_dir(dir).map_err(io_err("fsync dir", dir))?;
                    Ok(Deleted::Removed)
                }
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(Deleted::NotEmpty),
                Err(e) => Err(io_err("rmdir", path)(e)),
            };
        }
        if retire {
            self.remove_entry(path, &current)?;
        } else {
            self.fs.remove_file(path).map_err(io_err("unlink", path))?;
            self.store.forget_file(path)?;
        }
        let (dir, _) = split(path);
        self.fs.sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        Ok(Deleted::Removed)
    }

    /// Moves the local entry at `path` (still `expect`) to `conflict_path`;
    /// returns its stat there, or `None` if it changed or vanished since the plan.
    pub fn conflict_copy(
        &self,
        path: &str,
        conflict_path: &str,
        expect: &Stat,
    ) -> Result<Option<Stat>> {
        let path = checked(path)?;
        let conflict_path = checked(conflict_path)?;
        let current = self.fs.lstat(path).map_err(io_err("lstat", path))?;
        if !current.is_some_and(|c| expect.same_entry(&c)) {
            return Ok(None);
        }
        self.fs
            .rename(path, conflict_path, true)
            .map_err(io_err("rename", path))?;
        self.sync_parents(path, conflict_path)?;
        self.store.forget_file(path)?;
        self.reindex(conflict_path)?;
        Ok(Some(self.stat_of(conflict_path)?))
    }

    /// Re-indexes the chunk locations of a file that was moved (its chunks
    /// must stay readable: it is proposed with this node as holder). A file
    /// that changes meanwhile is left unindexed (the next scan hashes it).
    fn reindex(&self, path: &str) -> Result<()> {
        let Some(st) = self.fs.lstat(path).map_err(io_err("lstat", path))? else {
            return Ok(());
        };
        if st.kind != FileKind::File {
            return Ok(());
        }
        let f = self.fs.open_read(path).map_err(io_err("open", path))?;
        let before = f.stat().map_err(io_err("fstat", path))?;
        let mut located: Vec<(u64, ChunkEntry)> = Vec::new();
        let sink = |o: u64, e: &ChunkEntry, _: &[u8]| {
            located.push((o, *e));
            Ok::<(), std::convert::Infallible>(())
        };
        if let Err(PipelineError::Read(e)) = chunk_read(f, self.chunker, sink) {
            return Err(io_err("read", path)(io::Error::other(e)));
        }
        let after = self.fs.lstat(path).map_err(io_err("lstat", path))?;
        if after.is_some_and(|a| a.unchanged(&before)) {
            let stamp = FileStamp {
                inode: before.ino,
                size: before.size,
                mtime_ns: before.mtime_ns,
            };
            self.store.index_file(path, stamp, &located)?;
        }
        Ok(())
    }

    /// Re-checks the target, moves unseen local content aside, renames the
    /// temp over the target and fsyncs the directory.
    fn place(&self, tmp: &str, path: &str, expect: Expect) -> Result<Placed> {
        let placed = self.place_unsynced(tmp, path, expect)?;
        let (dir, _) = split(path);
        self.fs.sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        self.store.forget_file(path)?;
        Ok(placed)
    }

    /// [`Materializer::place`] without the directory fsync and the store
    /// update: the caller does both (once per directory, once per batch).
    fn place_unsynced(&self, tmp: &str, path: &str, expect: Expect) -> Result<Placed> {
        let mut conflict = None;
        let current = self.fs.lstat(path).map_err(io_err("lstat", path))?;
        let mut noreplace = true;
        match current {
            None => {}
            Some(s) if expect.matches(Some(&s)) => {
                if s.kind == FileKind::Dir {
                    self.fs.remove_dir(path).map_err(io_err("rmdir", path))?;
                } else {
                    noreplace = false;
                }
            }
            Some(_) => conflict = Some(self.move_aside(path)?),
        }
        // What we place, to tell it apart afterwards from a local write that
        // replaced the path right after our rename.
        let ours = self.stat_of(tmp)?;
        match self.fs.rename(tmp, path, noreplace) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && conflict.is_none() => {
                // Created in the instant since the re-check: keep it too.
                conflict = Some(self.move_aside(path)?);
                self.fs
                    .rename(tmp, path, true)
                    .map_err(io_err("rename", path))?;
            }
            Err(e) => return Err(io_err("rename", path)(e)),
        }
        // The stat recorded for the placed version must be of our file: if
        // a local write replaced the path since the rename, recording its
        // stat would make the next scan take that write for the placed
        // version, and it would never be proposed (lost). Recording our
        // own (pre-rename) stat instead makes the scan see a change there.
        let now = self.fs.lstat(path).map_err(io_err("lstat", path))?;
        let stat = match now {
            // Same inode, size and mtime (set on the temp before the
            // rename): ours, untouched. (The rename itself moves ctime.)
            Some(s)
                if s.ino == ours.ino
                    && s.kind == ours.kind
                    && s.size == ours.size
                    && s.mtime_ns == ours.mtime_ns =>
            {
                s
            }
            _ => {
                tracing::info!(
                    path,
                    "replaced locally right after it was placed; rescanning it"
                );
                ours
            }
        };
        Ok(Placed { stat, conflict })
    }

    /// Renames the entry at `path` to a free conflict name; returns the name.
    fn move_aside(&self, path: &str) -> Result<String> {
        for n in 1..=1000 {
            let c = conflict_name(path, self.now_ms, self.node, n);
            match self.fs.rename(path, &c, true) {
                Ok(()) => {
                    tracing::warn!(path, conflict = %c, "local change kept as a conflict copy");
                    self.store.forget_file(path)?;
                    self.reindex(&c)?;
                    return Ok(c);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("rename", path)(e)),
            }
        }
        Err(io_err("rename", path)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free conflict name",
        )))
    }

    /// Unlinks a file or symlink, putting a file's chunks into the store first.
    fn remove_entry(&self, path: &str, current: &Stat) -> Result<()> {
        if current.kind == FileKind::File {
            self.retire_chunks(path, current)?;
        }
        self.fs.remove_file(path).map_err(io_err("unlink", path))?;
        self.store.forget_file(path)?;
        Ok(())
    }

    /// Before a write replaces the file at `path` (still `expect`): stores
    /// as blobs the chunks of its content that the new version does not
    /// reuse (`old_only`), so the version store keeps the replaced version
    /// (and the sweep drops it once retention does). Reads only those chunks
    /// (verified, through the store); if the store cannot find one, re-chunks
    /// the whole file instead. A target that changed since the plan, or is
    /// not a file, is left to the write's own re-check (it becomes a
    /// conflict copy there, never overwritten).
    pub fn retire_replaced(&self, path: &str, expect: &Stat, old_only: &[Hash]) -> Result<()> {
        let path = checked(path)?;
        let current = self.fs.lstat(path).map_err(io_err("lstat", path))?;
        if !current.is_some_and(|c| c.kind == FileKind::File && expect.unchanged(&c)) {
            return Ok(());
        }
        for batch in old_only.chunks(RETIRE_BATCH) {
            let mut got = Vec::with_capacity(batch.len());
            for h in batch {
                match self.store.get(h)? {
                    Some(d) => got.push((*h, d)),
                    None => return self.retire_chunks(path, expect),
                }
            }
            let items: Vec<(Hash, &[u8])> = got.iter().map(|(h, d)| (*h, d.as_slice())).collect();
            self.store.put_many(&items)?;
        }
        Ok(())
    }

    /// Reads `path` and stores every chunk as a blob (verified by `put`).
    fn retire_chunks(&self, path: &str, expect: &Stat) -> Result<()> {
        let f = self.fs.open_read(path).map_err(io_err("open", path))?;
        let before = f.stat().map_err(io_err("fstat", path))?;
        if !before.unchanged(expect) {
            return Err(io_err("retire", path)(io::Error::other(
                "changed before delete",
            )));
        }
        let store = self.store;
        let sink = |_: u64, e: &ChunkEntry, data: &[u8]| store.put(e.hash, data);
        match chunk_read(f, self.chunker, sink) {
            Ok(_) => Ok(()),
            Err(PipelineError::Read(e)) => Err(io_err("read", path)(io::Error::other(e))),
            Err(PipelineError::Sink(e)) => Err(e.into()),
        }
    }

    fn make_parents(&self, dir: &str) -> Result<()> {
        if dir.is_empty() {
            return Ok(());
        }
        match self.fs.lstat(dir).map_err(io_err("lstat", dir))? {
            Some(s) if s.kind == FileKind::Dir => Ok(()),
            Some(_) => Err(io_err("mkdir", dir)(io::Error::new(
                io::ErrorKind::NotADirectory,
                "a parent is not a directory",
            ))),
            None => {
                let (parent, _) = split(dir);
                self.make_parents(parent)?;
                match self.fs.mkdir(dir, 0o755) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("mkdir", dir)(e)),
                }
                self.fs
                    .sync_dir(parent)
                    .map_err(io_err("fsync dir", parent))
            }
        }
    }

    fn sync_parents(&self, a: &str, b: &str) -> Result<()> {
        let (da, _) = split(a);
        let (db, _) = split(b);
        self.fs.sync_dir(da).map_err(io_err("fsync dir", da))?;
        if db != da {
            self.fs.sync_dir(db).map_err(io_err("fsync dir", db))?;
        }
        Ok(())
    }

    fn stat_of(&self, path: &str) -> Result<Stat> {
        self.fs
            .lstat(path)
            .map_err(io_err("lstat", path))?
            .ok_or_else(|| io_err("lstat", path)(io::ErrorKind::NotFound.into()))
    }
}

fn checked(path: &str) -> Result<&str> {
    match names::invalid_reason(path) {
        None => Ok(path),
        Some(reason) => Err(MaterializeError::InvalidPath {
            path: path.into(),
            reason,
        }),
    }
}

fn temp_name(dir: &str) -> String {
    join(dir, &format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()))
}

/// Removes every leftover temp file (`.filesyncd-tmp-*`) under the root,
/// walking without following symlinks; returns how many were removed. Run at
/// start-up, before the first scan.
pub fn remove_stale_temps(fs: &dyn Fs) -> io::Result<u64> {
    let mut removed = 0;
    let mut stack = vec![String::new()];
    while let Some(d) = stack.pop() {
        let names = match fs.read_dir(&d) {
            Ok(n) => n,
            Err(e) if d.is_empty() => return Err(e),
            Err(_) => continue,
        };
        let mut touched = false;
        for name in names {
            let Some(name) = name.to_str() else { continue };
            let rel = join(&d, name);
            if name.starts_with(TMP_PREFIX) {
                if fs.remove_file(&rel).is_ok() {
                    removed += 1;
                    touched = true;
                }
            } else if !names::is_reserved_component(name)
                && matches!(
                    fs.lstat(&rel),
                    Ok(Some(Stat {
                        kind: FileKind::Dir,
                        ..
                    }))
                )
            {
                stack.push(rel);
            }
        }
        if touched {
            fs.sync_dir(&d)?;
        }
    }
    Ok(removed)
}
