//! Write-once pulls of large versions: the staging area.
//!
//! A version of at least [`STAGE_MIN`] bytes that a peer pulls (an offer it
//! acknowledges, or a committed version it lacks) is not stored chunk by
//! chunk in the chunk store and then copied into the file: its bytes are
//! written ONCE, at their offsets, into a staged file
//! `<root>/.filesyncd-stage/<merkle root hex>-<size>` on the synced
//! directory's own file system, and that file is what the node holds:
//!
//! 1. `<name>.part` is created and sized (a sparse file: all-zero chunks
//!    stay holes and are never fetched);
//! 2. chunks some local file already holds are copied from it
//!    (`copy_file_range`, contiguous runs in one call; through the verified
//!    `ChunkStore::get` where no file descriptor is at hand);
//! 3. the others are fetched as one continuous stream
//!    ([`ChunkFetcher::fetch_stream`]: asked of the holders only, the p2p
//!    layer's bounded window in flight, no round barrier), each chunk
//!    [`filesyncd_merkle::Verified`] where it entered the node (the p2p
//!    fetch hashed it; not hashed again here) and written at every offset
//!    it has as soon as it arrives;
//! 4. the file is flushed (`fsync`), renamed to `<name>`, the staging
//!    directory flushed, and only then are its chunk locations indexed in
//!    the chunk store, as a live file (one commit). From then on `has`
//!    answers yes for its chunks, and an offer of it is `Durable`.
//!
//! When the version commits, the materializer ([`super::materialize`])
//! takes the staged file as its temp file: mode and mtime are set on it
//! and it is re-indexed under its new stamp (one commit for the batch),
//! flushed with the batch, renamed over the target, both directories
//! flushed, the target indexed and the staged name forgotten. No byte is
//! written twice and none is read back.
//!
//! # Crash safety
//! - A `.part` was never acknowledged: replaced by the next staging of its
//!   version, removed by the version store's sweep once untouched for an
//!   hour ([`sweep`]).
//! - A staged file whose stamp no longer matches its index record (a crash
//!   between setting its mode/mtime and the re-index, or after its rename
//!   into place before the target's index commit, when the name survived)
//!   is re-chunked at start-up: kept and re-indexed if its content still
//!   hashes to the Merkle root its name says, removed otherwise.
//! - A staged file renamed into place before a crash is a file like any
//!   other: the start-up scan hashes and indexes it (it matches the
//!   committed version, so nothing is proposed).
//!
//! # Bounds
//! Memory of one staging: the chunk list (36 bytes per chunk, 0.1 % of the
//! file at the default 40 KiB mean chunk) and a map of the chunks' offsets
//! (about twice that), plus the chunks in flight, which the fetch bounds
//! (the p2p fetch: its stream windows and a channel of `fetch_batch`
//! chunks towards this writer). Staged files live until materialized, or until the version
//! store's sweep finds their version neither offered nor committed.

use std::collections::HashMap;
use std::io;

use filesyncd_chunkstore::chunker::{chunk_and_hash, Chunker};
use filesyncd_chunkstore::store::{ChunkStore, FileIndex, FileMove, FileStamp, Location};
use filesyncd_merkle::file_tree::build;
use filesyncd_merkle::{ChunkEntry, Hash};
use futures::StreamExt;

use super::fs::{join, FileRead, FileWrite, Fs};
use super::ports::ChunkFetcher;
use super::sync::fetch::ZeroChunks;
use super::types::{FileKind, NodeId, Stat};

/// The staging directory, beneath the synced root (a reserved name: never
/// scanned, never synced).
pub const STAGE_DIR: &str = ".filesyncd-stage";
/// Versions of at least this many bytes are pulled into a staged file;
/// smaller ones go to the chunk store (many small files share its batched
/// commits; a file per version would cost a create, a flush and a rename
/// each).
pub const STAGE_MIN: u64 = 1 << 20;
/// Suffix of a staged file being written.
const PART: &str = ".part";
/// A `.part` untouched this long is removed by [`sweep`].
const PART_STALE_NS: i64 = 3_600_000_000_000;

/// Where the staged copy of `(root, size)` lives.
pub fn staged_path(root: &Hash, size: u64) -> String {
    format!("{STAGE_DIR}/{}-{size}", root.to_hex())
}

fn part_path(root: &Hash, size: u64) -> String {
    format!("{}{PART}", staged_path(root, size))
}

/// `(root, size)` of a staged file's name (not a `.part`).
pub fn parse_name(name: &str) -> Option<(Hash, u64)> {
    let (hex, size) = name.split_once('-')?;
    if hex.len() != 64 || size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let root = Hash::from_hex(hex).ok()?;
    Some((root, size.parse().ok()?))
}

fn stamp_of(s: &Stat) -> FileStamp {
    FileStamp {
        inode: s.ino,
        size: s.size,
        mtime_ns: s.mtime_ns,
    }
}

/// `(offset, entry)` pairs of a chunk list.
pub fn located(chunks: &[ChunkEntry]) -> Vec<(u64, ChunkEntry)> {
    let mut at = 0u64;
    chunks
        .iter()
        .map(|c| {
            let o = at;
            at += u64::from(c.len);
            (o, *c)
        })
        .collect()
}

/// The staged copy of `(root, size)`, if it is there whole: flushed,
/// renamed and indexed, and untouched since (its stat is the stamp it was
/// indexed with).
pub fn staged(fs: &dyn Fs, store: &dyn ChunkStore, root: &Hash, size: u64) -> Option<String> {
    let p = staged_path(root, size);
    let st = fs.lstat(&p).ok()??;
    if st.kind != FileKind::File || st.size != size {
        return None;
    }
    let indexed = store.file_stamp(&p).ok()??;
    (indexed == stamp_of(&st)).then_some(p)
}

/// Records the staged file `path` (whose chunk list is `chunks`) under its
/// current stat, in one commit with the others.
pub fn reindex(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    files: &[(&str, &[ChunkEntry])],
) -> Result<(), String> {
    let mut stamps = Vec::with_capacity(files.len());
    for (p, _) in files {
        match fs.lstat(p) {
            Ok(Some(s)) => stamps.push(stamp_of(&s)),
            Ok(None) => return Err(format!("{p}: vanished")),
            Err(e) => return Err(format!("lstat {p}: {e}")),
        }
    }
    let tables: Vec<Vec<(u64, ChunkEntry)>> = files.iter().map(|(_, c)| located(c)).collect();
    let idx: Vec<FileIndex<'_>> = files
        .iter()
        .zip(&stamps)
        .zip(&tables)
        .map(|(((p, _), s), t)| FileIndex {
            rel_path: p,
            stamp: *s,
            chunks: t,
        })
        .collect();
    store.index_files(&idx).map_err(|e| e.to_string())
}

/// [`reindex`] of staged files whose content did not change since they
/// were indexed (only their mode and mtime): the store moves each record to
/// the new stamp (a row per file); a file it does not know is indexed in
/// full.
pub fn restamp(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    files: &[(&str, &[ChunkEntry])],
) -> Result<(), String> {
    let mut moves = Vec::with_capacity(files.len());
    for (p, _) in files {
        match fs.lstat(p) {
            Ok(Some(s)) => moves.push(FileMove {
                from: p,
                to: p,
                stamp: stamp_of(&s),
            }),
            Ok(None) => return Err(format!("{p}: vanished")),
            Err(e) => return Err(format!("lstat {p}: {e}")),
        }
    }
    let done = store.move_files(&moves).map_err(|e| e.to_string())?;
    let rest: Vec<(&str, &[ChunkEntry])> = files
        .iter()
        .zip(done)
        .filter(|(_, ok)| !ok)
        .map(|(f, _)| *f)
        .collect();
    if rest.is_empty() {
        return Ok(());
    }
    reindex(fs, store, &rest)
}

fn io_msg(op: &str, path: &str) -> impl FnOnce(io::Error) -> String {
    let (op, path) = (op.to_owned(), path.to_owned());
    move |e| format!("{op} {path}: {e}")
}

/// Makes a staged copy of the version `(root, size)`, whose chunk list is
/// `list`, as the module doc describes; returns the chunks fetched from
/// peers. Already staged: nothing to do.
#[allow(clippy::too_many_arguments)] // the engine's and the daemon's call sites differ in each
pub async fn stage_version<F: ChunkFetcher>(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    fetcher: &F,
    root: Hash,
    size: u64,
    list: &[ChunkEntry],
    holders: &[NodeId],
    label: &str,
) -> Result<usize, String> {
    // One staging of a version at a time in this process (an offer's pull
    // and the engine's may want the same one): the second waits, then
    // finds it staged.
    let _claim = Claim::take(root, size).await;
    if staged(fs, store, &root, size).is_some() {
        return Ok(0);
    }
    let total: u64 = list.iter().map(|c| u64::from(c.len)).sum();
    if total != size {
        return Err(format!(
            "{label}: the chunk list adds up to {total} bytes, not {size}"
        ));
    }
    ensure_dir(fs)?;
    let part = part_path(&root, size);
    match fs.remove_file(&part) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_msg("remove", &part)(e)),
    }
    let mut f = fs.create_new(&part).map_err(io_msg("create", &part))?;
    let res = async {
        f.set_len(size).map_err(io_msg("truncate", &part))?;
        let fetched = fill(fs, store, fetcher, f.as_mut(), list, holders, label, &part).await?;
        f.sync().map_err(io_msg("fsync", &part))?;
        Ok::<usize, String>(fetched)
    }
    .await;
    drop(f);
    let fetched = match res {
        Ok(n) => n,
        Err(e) => {
            let _ = fs.remove_file(&part);
            return Err(e);
        }
    };
    let done = staged_path(&root, size);
    fs.rename(&part, &done, false)
        .map_err(io_msg("rename", &part))?;
    fs.sync_dir(STAGE_DIR)
        .map_err(io_msg("fsync dir", STAGE_DIR))?;
    reindex(fs, store, &[(done.as_str(), list)])?;
    Ok(fetched)
}

/// Versions being staged in this process.
static STAGING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<(Hash, u64)>>> =
    std::sync::LazyLock::new(Default::default);
/// Woken when a staging ends.
static STAGED: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// The right to stage one version; released on drop.
struct Claim(Hash, u64);

impl Claim {
    async fn take(root: Hash, size: u64) -> Claim {
        loop {
            let notified = STAGED.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut set = STAGING.lock().unwrap_or_else(|p| p.into_inner());
                if set.insert((root, size)) {
                    return Claim(root, size);
                }
            }
            notified.await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        STAGING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(self.0, self.1));
        STAGED.notify_waiters();
    }
}

/// Steps 2 and 3 of the module doc: every non-zero chunk of `list` written
/// into `f` at its offsets, local ones copied, the others fetched.
#[allow(clippy::too_many_arguments)]
async fn fill<F: ChunkFetcher>(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    fetcher: &F,
    f: &mut dyn FileWrite,
    list: &[ChunkEntry],
    holders: &[NodeId],
    label: &str,
    part: &str,
) -> Result<usize, String> {
    let zeros = ZeroChunks::default();
    // The staged file takes every byte but its holes, copied or fetched
    // (counted whole: the zero chunks are not known yet).
    let need: u64 = list.iter().map(|c| u64::from(c.len)).sum();
    super::sync::fetch::check_space(store, need, label)?;
    // The offsets of each chunk to fetch.
    let mut offsets: HashMap<Hash, (u32, Vec<u64>)> = HashMap::new();
    let mut copier = Copier::default();
    for (off, c) in located(list) {
        if let Some((_, offs)) = offsets.get_mut(&c.hash) {
            offs.push(off);
            continue;
        }
        // (A local copy is taken first: a zero chunk held locally is
        // copied, which is cheaper than knowing it is zero.)
        let copied = match store.locate(&c.hash) {
            Ok(Some(loc)) => copier
                .copy(fs, store, f, &loc, &c, off, part)
                .map_err(io_msg("copy into", part))?,
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "chunk index read failed; fetching the chunk");
                false
            }
        };
        if !copied && !zeros.is_zero(&c) {
            offsets.insert(c.hash, (c.len, vec![off]));
        }
    }
    copier.flush(f).map_err(io_msg("copy into", part))?;
    let want: Vec<Hash> = offsets.keys().copied().collect();
    let total: u64 = offsets
        .values()
        .map(|(len, _)| u64::from(*len))
        .sum::<u64>();
    if want.is_empty() {
        return Ok(0);
    }
    let mut done = 0u64;
    let mut fetched = 0usize;
    let mut reported = 0u64;
    fetcher.progress(label, 0, total, false);
    let mut chunks = fetcher.fetch_stream(holders, &want);
    let result = async {
        while let Some(v) = chunks.next().await {
            // Verified where it entered this node (not hashed again).
            let (h, data) = (v.hash(), v.bytes());
            let Some((len, offs)) = offsets.get(&h) else {
                continue;
            };
            if data.len() != *len as usize {
                continue;
            }
            for off in offs {
                f.write_all_at(data, *off).map_err(io_msg("write", part))?;
            }
            done += data.len() as u64;
            offsets.remove(&h);
            fetched += 1;
            if done - reported >= PROGRESS_EVERY {
                reported = done;
                fetcher.progress(label, done, total, false);
            }
        }
        if !offsets.is_empty() {
            return Err(format!(
                "{label}: {} of {} chunks could not be fetched",
                offsets.len(),
                want.len()
            ));
        }
        Ok(fetched)
    }
    .await;
    drop(chunks);
    fetcher.progress(label, done, total, true);
    result
}

/// Bytes between two progress reports of a staging.
const PROGRESS_EVERY: u64 = 4 << 20;

/// Copies local chunks into the staged file, in runs: chunks that follow
/// each other in the same source file and in the target are one
/// `copy_file_range`.
#[derive(Default)]
struct Copier {
    /// The open source file (path, handle, the stamp it must still have).
    src: Option<(String, Box<dyn FileRead>)>,
    /// The run not yet copied: (source offset, target offset, length).
    run: Option<(u64, u64, u64)>,
}

impl Copier {
    /// Copies chunk `c` (located at `loc`) to target offset `off`; `false`
    /// if it could not be copied (the caller fetches it).
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        fs: &dyn Fs,
        store: &dyn ChunkStore,
        f: &mut dyn FileWrite,
        loc: &Location,
        c: &ChunkEntry,
        off: u64,
        part: &str,
    ) -> io::Result<bool> {
        if let Location::LiveFile {
            rel_path,
            offset,
            len,
            stamp,
        } = loc
        {
            if *len == c.len && rel_path != part && f.as_file().is_some() {
                let same = matches!(&self.src, Some((p, _)) if p == rel_path);
                if !same {
                    self.flush(f)?;
                    self.src = None;
                    if let Ok(r) = fs.open_read(rel_path) {
                        // The file opened must still be the one indexed.
                        if r.stat().is_ok_and(|s| stamp_of(&s) == *stamp) && r.as_file().is_some() {
                            self.src = Some((rel_path.clone(), r));
                        }
                    }
                }
                if self.src.is_some() {
                    let l = u64::from(*len);
                    match &mut self.run {
                        Some((s, t, n)) if *s + *n == *offset && *t + *n == off => *n += l,
                        _ => {
                            self.flush(f)?;
                            self.run = Some((*offset, off, l));
                        }
                    }
                    return Ok(true);
                }
            }
        }
        // No descriptor to copy from: the verified read.
        match store.get(&c.hash) {
            Ok(Some(d)) if d.len() == c.len as usize => {
                f.write_all_at(&d, off)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Copies the pending run.
    fn flush(&mut self, f: &mut dyn FileWrite) -> io::Result<()> {
        let Some((mut s, mut t, mut n)) = self.run.take() else {
            return Ok(());
        };
        let (Some((_, src)), Some(dst)) = (&self.src, f.as_file()) else {
            return Err(io::Error::other("copy run without files"));
        };
        let Some(src) = src.as_file() else {
            return Err(io::Error::other("copy run without a source descriptor"));
        };
        while n > 0 {
            let want = n.min(1 << 30) as usize;
            let got = match rustix::fs::copy_file_range(src, Some(&mut s), dst, Some(&mut t), want)
            {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "source shorter than indexed",
                    ))
                }
                Ok(k) => k,
                Err(e)
                    if e == rustix::io::Errno::XDEV
                        || e == rustix::io::Errno::NOSYS
                        || e == rustix::io::Errno::INVAL
                        || e == rustix::io::Errno::OPNOTSUPP =>
                {
                    // No in-kernel copy here: read and write.
                    use std::os::unix::fs::FileExt;
                    let k = want.min(1 << 20);
                    let mut buf = vec![0u8; k];
                    src.read_exact_at(&mut buf, s)?;
                    dst.write_all_at(&buf, t)?;
                    s += k as u64;
                    t += k as u64;
                    k
                }
                Err(e) => return Err(e.into()),
            };
            n -= got as u64;
        }
        Ok(())
    }
}

/// Keeps the content of `path` (the version `(root, size)`, whose chunk
/// list is `list`), which a write is about to replace, as a staged version:
/// a second name for the same inode in the staging area, indexed as a live
/// file (no byte copied; the version store's sweep removes it once
/// retention lets the version go). Returns the stat the write must now
/// expect at `path` (the link moved its ctime, nothing else), or `None` if
/// nothing was done (the file is not what the plan saw, or that version is
/// staged already).
pub fn retire_by_link(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    path: &str,
    expect: &Stat,
    root: Hash,
    size: u64,
    list: &[ChunkEntry],
) -> Result<Option<Stat>, String> {
    let now = fs.lstat(path).map_err(io_msg("lstat", path))?;
    if !now.is_some_and(|c| c.kind == FileKind::File && c.size == size && expect.unchanged(&c)) {
        return Ok(None);
    }
    if staged(fs, store, &root, size).is_some() {
        return Ok(None);
    }
    ensure_dir(fs)?;
    let sp = staged_path(&root, size);
    match fs.remove_file(&sp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_msg("remove", &sp)(e)),
    }
    fs.hard_link(path, &sp).map_err(io_msg("link", path))?;
    // Still the file the plan saw, but for the ctime the link moved (a
    // write in the instant since shares the inode: then the link is not a
    // copy of the version).
    let same = |c: &Stat| {
        c.kind == expect.kind
            && c.size == expect.size
            && c.mtime_ns == expect.mtime_ns
            && c.ino == expect.ino
    };
    let linked = fs.lstat(&sp).map_err(io_msg("lstat", &sp))?;
    let at_path = fs.lstat(path).map_err(io_msg("lstat", path))?;
    let (Some(linked), Some(at_path)) = (linked, at_path) else {
        let _ = fs.remove_file(&sp);
        return Ok(None);
    };
    if !same(&linked) || !same(&at_path) || linked.ctime_ns != at_path.ctime_ns {
        let _ = fs.remove_file(&sp);
        return Ok(None);
    }
    fs.sync_dir(STAGE_DIR)
        .map_err(io_msg("fsync dir", STAGE_DIR))?;
    reindex(fs, store, &[(sp.as_str(), list)])?;
    Ok(Some(at_path))
}

/// Creates the staging directory if it is missing.
fn ensure_dir(fs: &dyn Fs) -> Result<(), String> {
    match fs.lstat(STAGE_DIR).map_err(io_msg("lstat", STAGE_DIR))? {
        Some(s) if s.kind == FileKind::Dir => Ok(()),
        Some(_) => Err(format!("{STAGE_DIR} is not a directory")),
        None => match fs.mkdir(STAGE_DIR, 0o700) {
            Ok(()) => fs.sync_dir("").map_err(io_msg("fsync dir", "")),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_msg("mkdir", STAGE_DIR)(e)),
        },
    }
}

/// What [`recover`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub kept: u64,
    pub reindexed: u64,
    pub removed: u64,
}

/// Start-up pass over the staging directory (see "Crash safety" in the
/// module doc).
pub fn recover(fs: &dyn Fs, store: &dyn ChunkStore, chunker: &Chunker) -> io::Result<Recovered> {
    let mut out = Recovered::default();
    let names = match fs.lstat(STAGE_DIR)? {
        Some(s) if s.kind == FileKind::Dir => fs.read_dir(STAGE_DIR)?,
        _ => return Ok(out),
    };
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        let rel = join(STAGE_DIR, &name);
        let Some((root, size)) = parse_name(&name) else {
            // A `.part` may be an offer's pull that started before this
            // (its next staging replaces it; [`sweep`] removes it once
            // abandoned).
            continue;
        };
        if STAGING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(root, size))
        {
            continue;
        }
        if staged(fs, store, &root, size).is_some() {
            out.kept += 1;
            continue;
        }
        match rehash(fs, chunker, &rel, root, size) {
            Some(list) if reindex(fs, store, &[(rel.as_str(), &list)]).is_ok() => {
                tracing::info!(path = %rel, "staged version re-verified after a crash");
                out.reindexed += 1;
            }
            _ => {
                tracing::info!(path = %rel, "stale staged file removed");
                let _ = store.forget_files(&[rel.as_str()]);
                if fs.remove_file(&rel).is_ok() {
                    out.removed += 1;
                }
            }
        }
    }
    if out.removed > 0 {
        fs.sync_dir(STAGE_DIR)?;
    }
    Ok(out)
}

/// The chunk list of the staged file `rel` if its content is the version
/// `(root, size)`.
fn rehash(
    fs: &dyn Fs,
    chunker: &Chunker,
    rel: &str,
    root: Hash,
    size: u64,
) -> Option<Vec<ChunkEntry>> {
    let r = fs.open_read(rel).ok()?;
    if r.stat().ok()?.size != size {
        return None;
    }
    let chunks = chunk_and_hash(r, chunker).ok()?;
    let built = build(&chunks.entries);
    (chunks.total_len == size && built.root == root).then_some(chunks.entries)
}

/// Removes staged files whose version `keep` does not want (neither offered
/// nor committed and not yet placed), and forgets them in the store.
/// Returns how many went.
pub fn sweep(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    keep: &dyn Fn(&Hash, u64) -> bool,
) -> io::Result<u64> {
    let names = match fs.lstat(STAGE_DIR)? {
        Some(s) if s.kind == FileKind::Dir => fs.read_dir(STAGE_DIR)?,
        _ => return Ok(0),
    };
    let mut gone = 0;
    let stale_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
        .saturating_sub(PART_STALE_NS);
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let Some((root, size)) = parse_name(name) else {
            // A `.part` not written to for an hour was abandoned (a pull in
            // progress writes every few milliseconds).
            let rel = join(STAGE_DIR, name);
            if matches!(fs.lstat(&rel), Ok(Some(s)) if s.mtime_ns < stale_before)
                && fs.remove_file(&rel).is_ok()
            {
                gone += 1;
            }
            continue;
        };
        if keep(&root, size) {
            continue;
        }
        let rel = join(STAGE_DIR, name);
        if fs.remove_file(&rel).is_ok() {
            let _ = store.forget_files(&[rel.as_str()]);
            gone += 1;
        }
    }
    if gone > 0 {
        fs.sync_dir(STAGE_DIR)?;
    }
    Ok(gone)
}
