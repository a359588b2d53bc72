//! [`RootFs`]: the real [`Fs`], confined beneath the root without following
//! symlinks.
//!
//! The root directory is opened once. Every operation opens the parent
//! directory of its path from the root fd in one `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (`O_PATH`: no inotify event), or,
//! where the kernel lacks it, by walking the components with
//! `openat(O_DIRECTORY | O_NOFOLLOW)`; either way a symlinked component
//! fails with `ELOOP`/`ENOTDIR`, and `.`, `..` and empty components are
//! refused,
//! then acts on the last component with an `*at` call that does not follow
//! it either (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`, `renameat2`, `unlinkat`,
//! `mkdirat`, `symlinkat`, `readlinkat`; a chmod opens with `O_NOFOLLOW` and
//! uses `fchmod`). Regular files are opened with `O_NONBLOCK` so that a fifo
//! cannot hang a scan, and refused unless `fstat` says regular file.
//!
//! # Flushing a batch of files ([`Fs::sync_files`])
//! The scanner makes the files it hashed durable before it indexes them as
//! held here (see `scan.rs`), a batch at a time. Measured on the dev VM
//! (ext4, virtio disk with a write-back cache, 2 cores; 5,000 freshly
//! written 4 KiB files): one `syncfs` 44-66 ms, `fsync` of each on 8
//! threads 418-653 ms, serially 6.0-12.6 s; one file: `syncfs` 0.3-4 ms,
//! `fsync` 3.4-7.5 ms; with 1 GiB of unrelated dirty data on the same file
//! system, `syncfs` 600-635 ms (it flushes that too) vs parallel `fsync`
//! 264-412 ms. So:
//! - a file on the root's own file system (same `st_dev`), when that file
//!   system is one whose `syncfs` is known to flush everything to stable
//!   storage ([`SYNCFS_DURABLE`]: ext2/3/4, xfs, btrfs, zfs, f2fs,
//!   bcachefs, tmpfs), is covered by **one `syncfs`** on the root;
//! - any other file (FUSE, whose `syncfs` is a silent no-op unless the
//!   server implements it, e.g. mergerfs or Unraid's shfs; CIFS, whose
//!   `syncfs` sends no flush to the server; NFS; a file on another mount
//!   beneath the root) is `fsync`ed itself, then its directory, on up to 8
//!   threads ([`par_map`]).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use filesyncd_chunkstore::store::{flush, par_map};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{
    self as rfs, AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;

use super::fs::{kind_of_mode, ns, split, FileRead, FileWrite, Fs, COARSE_TICK_NS, FINE_TICK_NS};
use super::types::{FileKind, Stat};

/// The real file system, confined to one root directory.
#[derive(Debug)]
pub struct RootFs {
    root: OwnedFd,
    path: PathBuf,
    /// The root's device, and whether one `syncfs` on the root makes every
    /// file on that device durable (module doc).
    root_dev: u64,
    flush: Flush,
    /// [`Fs::timestamp_tick_ns`].
    tick_ns: i64,
    /// Whether `openat2` is usable here (cleared at its first `ENOSYS` or
    /// `EPERM`).
    openat2: AtomicBool,
}

/// How [`RootFs::sync_files`] flushes the files on the root's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// One `syncfs` on the root.
    SyncFs,
    /// `fsync` of each file and its directory, in parallel.
    FsyncEach,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory opened only to name things in it (see [`RootFs::parent`]).
const PATH_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl RootFs {
    /// Opens `root` (which may itself be reached through symlinks: only what
    /// is beneath it is confined).
    pub fn open(root: &Path) -> io::Result<RootFs> {
        let root_fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let root_dev = dev_of(&rfs::fstat(&root_fd)?);
        let fs_type = flush::fs_type(&root_fd)?;
        // The file systems known to flush on syncfs are the local ones with
        // ns timestamps from the kernel's coarse clock.
        let tick_ns = if flush::SYNCFS_DURABLE.contains(&fs_type) {
            FINE_TICK_NS
        } else {
            COARSE_TICK_NS
        };
        let flush = if flush::SYNCFS_DURABLE.contains(&fs_type) {
            Flush::SyncFs
        } else {
            tracing::info!(
                root = %root.display(),
                fs_type = format_args!("{fs_type:#x}"),
                "file system not known to flush on syncfs; files are fsynced one by one (in parallel)"
            );
            Flush::FsyncEach
        };
        Ok(RootFs {
            root: root_fd,
            path: root.to_path_buf(),
            root_dev,
            flush,
            tick_ns,
            openat2: AtomicBool::new(true),
        })
    }

    /// Where `sync_files` finds `rel`: its directory (in `dirs`), its name,
    /// and its device. Fails unless it is a regular file beneath the root.
    fn flush_target<'r>(
        &self,
        dirs: &mut DirCache<'r>,
        rel: &'r str,
    ) -> io::Result<(usize, &'r str, u64)> {
        let (dir, name) = split(rel);
        check_component(name)?;
        let d = dirs.open(self, dir)?;
        let st = rfs::statat(&dirs.fds[d], name, AtFlags::SYMLINK_NOFOLLOW)?;
        if from_rustix(&st).kind != FileKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok((d, name, dev_of(&st)))
    }

    /// Forces the component walk instead of `openat2` (tests).
    #[cfg(test)]
    fn walk_only(self) -> RootFs {
        self.openat2.store(false, Ordering::Relaxed);
        self
    }

    /// Forces the per-file `fsync` path (tests).
    #[cfg(test)]
    fn fsync_each(mut self) -> RootFs {
        self.flush = Flush::FsyncEach;
        self
    }

    /// The root's path (for logs and for the watcher).
    pub fn root_path(&self) -> &Path {
        &self.path
    }

    /// Whether the root's path still names the directory this `RootFs`
    /// opened. It does not when something was mounted over it, or it was
    /// moved away and another directory put in its place: then every
    /// operation here would act on a directory the user no longer sees.
    pub fn still_at_path(&self) -> io::Result<bool> {
        let opened = rfs::fstat(&self.root)?;
        let now = rfs::stat(&self.path)?;
        Ok((opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino))
    }

    /// Opens directory `rel` beneath the root, following no symlink.
    fn dir(&self, rel: &str) -> io::Result<OwnedFd> {
        self.open_dir(rel, DIR_FLAGS)
    }

    /// Directory `rel` beneath the root opened with `flags` (one of
    /// [`DIR_FLAGS`], [`PATH_FLAGS`]): in one `openat2` with
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it
    /// (Linux 5.6+; not denied by a seccomp filter), else by the
    /// component walk (module doc). Both refuse the same paths.
    fn open_dir(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return Ok(rfs::openat(&self.root, ".", flags, Mode::empty())?);
        }
        for comp in rel.split('/') {
            check_component(comp)?;
        }
        if self.openat2.load(Ordering::Relaxed) {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: the resolution raced with a rename; tried again, then
            // walked.
            for _ in 0..3 {
                match rfs::openat2(&self.root, rel, flags, Mode::empty(), resolve) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS | Errno::PERM) => {
                        self.openat2.store(false, Ordering::Relaxed);
                        break;
                    }
                    res => return Ok(res?),
                }
            }
        }
        let mut cur = rfs::openat(&self.root, ".", flags, Mode::empty())?;
        for comp in rel.split('/') {
            cur = rfs::openat(&cur, comp, flags, Mode::empty())?;
        }
        Ok(cur)
    }

    /// The parent directory of `rel` (opened `O_PATH`: enough for the `*at`
    /// calls, and an `O_PATH` open raises no inotify event, where a read
    /// open of each directory woke the watcher once per file operation) and
    /// its last component.
    fn parent<'r>(&self, rel: &'r str) -> io::Result<(OwnedFd, &'r str)> {
        let (dir, name) = split(rel);
        check_component(name)?;
        Ok((self.open_dir(dir, PATH_FLAGS)?, name))
    }

    fn open_nofollow(&self, rel: &str) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        Ok(File::from(rfs::openat(&dir, name, flags, Mode::empty())?))
    }
}

fn check_component(c: &str) -> io::Result<()> {
    if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path component {c:?}"),
        ));
    }
    Ok(())
}

/// The engine's stat of a rustix `Stat` (field widths vary by target).
#[allow(clippy::unnecessary_cast)]
fn from_rustix(s: &rfs::Stat) -> Stat {
    Stat {
        kind: kind_of_mode(s.st_mode as u32),
        size: s.st_size as u64,
        mtime_ns: ns(s.st_mtime as i64, s.st_mtime_nsec as i64),
        ctime_ns: ns(s.st_ctime as i64, s.st_ctime_nsec as i64),
        ino: s.st_ino as u64,
        mode: (s.st_mode as u32) & 0o7777,
    }
}

/// The engine's stat of an open file's metadata.
pub fn from_metadata(m: &std::fs::Metadata) -> Stat {
    Stat {
        kind: kind_of_mode(m.mode()),
        size: m.size(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        mode: m.mode() & 0o7777,
    }
}

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

struct RealRead(File);

impl Read for RealRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl FileRead for RealRead {
    fn stat(&self) -> io::Result<Stat> {
        Ok(from_metadata(&self.0.metadata()?))
    }
    fn as_file(&self) -> Option<&File> {
        Some(&self.0)
    }
}

struct RealWrite(File);

impl FileWrite for RealWrite {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        Ok(rfs::fchmod(
            self.0.as_fd(),
            Mode::from_raw_mode(mode & 0o7777),
        )?)
    }
    fn set_mtime(&mut self, mtime_ns: i64) -> io::Result<()> {
        let t = timespec(mtime_ns);
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        Ok(rfs::futimens(self.0.as_fd(), &times)?)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn stat(&self) -> io::Result<Stat> {
        Ok(from_metadata(&self.0.metadata()?))
    }
    fn as_file(&self) -> Option<&File> {
        Some(&self.0)
    }
}

impl Fs for RootFs {
    fn lstat(&self, rel: &str) -> io::Result<Option<Stat>> {
        if rel.is_empty() {
            return Ok(Some(from_rustix(&rfs::fstat(&self.root)?)));
        }
        let res = self
            .parent(rel)
            .and_then(|(dir, name)| Ok(rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?));
        match res {
            Ok(s) => Ok(Some(from_rustix(&s))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_dir(&self, rel: &str) -> io::Result<Vec<OsString>> {
        let fd = self.dir(rel)?;
        let mut dir = rfs::Dir::read_from(&fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    fn read_link(&self, rel: &str) -> io::Result<OsString> {
        let (dir, name) = self.parent(rel)?;
        let target = rfs::readlinkat(&dir, name, Vec::new())?;
        Ok(OsStr::from_bytes(target.as_bytes()).to_owned())
    }

    fn open_read(&self, rel: &str) -> io::Result<Box<dyn FileRead>> {
        let f = self.open_nofollow(rel)?;
        if kind_of_mode(f.metadata()?.mode()) != FileKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Box::new(RealRead(f)))
    }

    fn create_new(&self, rel: &str) -> io::Result<Box<dyn FileWrite>> {
        let (dir, name) = self.parent(rel)?;
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&dir, name, flags, Mode::from_raw_mode(0o600))?;
        Ok(Box::new(RealWrite(File::from(fd))))
    }

    fn open_write(&self, rel: &str) -> io::Result<Box<dyn FileWrite>> {
        let (dir, name) = self.parent(rel)?;
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let f = File::from(rfs::openat(&dir, name, flags, Mode::empty())?);
        if kind_of_mode(f.metadata()?.mode()) != FileKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Box::new(RealWrite(f)))
    }

    fn rename(&self, from: &str, to: &str, noreplace: bool) -> io::Result<()> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        let flags = if noreplace {
            RenameFlags::NOREPLACE
        } else {
            RenameFlags::empty()
        };
        Ok(rfs::renameat_with(&fdir, fname, &tdir, tname, flags)?)
    }

    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        Ok(rfs::fsync(self.dir(rel)?)?)
    }

    fn sync_files(&self, rels: &[&str]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(rels.len());
        let mut dirs = DirCache::default();
        let mut via_syncfs = Vec::new();
        let mut via_fsync: Vec<(usize, usize, &str)> = Vec::new();
        for (i, rel) in rels.iter().enumerate() {
            match self.flush_target(&mut dirs, rel) {
                Ok((_, _, dev)) if self.flush == Flush::SyncFs && dev == self.root_dev => {
                    via_syncfs.push(i);
                    results.push(Ok(()));
                }
                Ok((d, name, _)) => {
                    via_fsync.push((i, d, name));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if !via_syncfs.is_empty() {
            if let Err(e) = rfs::syncfs(&self.root) {
                for i in via_syncfs {
                    results[i] = Err(e.into());
                }
            }
        }
        if !via_fsync.is_empty() {
            let fds = &dirs.fds;
            let synced = par_map(&via_fsync, |(_, d, name)| {
                let flags = OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::CLOEXEC
                    | OFlags::NOCTTY;
                rfs::fsync(rfs::openat(&fds[*d], *name, flags, Mode::empty())?)
            });
            // Then their names: each directory of a flushed file, once.
            let mut used: Vec<usize> = via_fsync
                .iter()
                .zip(&synced)
                .filter(|(_, r)| r.is_ok())
                .map(|((_, d, _), _)| *d)
                .collect();
            used.sort_unstable();
            used.dedup();
            let dir_synced: HashMap<usize, rustix::io::Result<()>> = used
                .iter()
                .copied()
                .zip(par_map(&used, |d| rfs::fsync(&fds[*d])))
                .collect();
            for ((i, d, _), r) in via_fsync.iter().zip(synced) {
                let r = r.and_then(|()| dir_synced.get(d).copied().unwrap_or(Ok(())));
                results[*i] = r.map_err(io::Error::from);
            }
        }
        results
    }

    fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rfs::mkdirat(
            &dir,
            name,
            Mode::from_raw_mode(mode & 0o7777),
        )?)
    }

    fn symlink(&self, target: &str, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rfs::symlinkat(target, &dir, name)?)
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        Ok(rfs::linkat(&fdir, fname, &tdir, tname, AtFlags::empty())?)
    }

    fn remove_file(&self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rfs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    fn remove_dir(&self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?)
    }

    fn set_mode(&self, rel: &str, mode: u32) -> io::Result<()> {
        let f = if rel.is_empty() {
            File::from(self.dir("")?)
        } else {
            self.open_nofollow(rel)?
        };
        Ok(rfs::fchmod(f.as_fd(), Mode::from_raw_mode(mode & 0o7777))?)
    }

    fn timestamp_tick_ns(&self) -> i64 {
        self.tick_ns
    }
}

/// The directories `sync_files` opened, each once.
#[derive(Default)]
struct DirCache<'r> {
    fds: Vec<OwnedFd>,
    index: HashMap<&'r str, usize>,
}

impl<'r> DirCache<'r> {
    /// Opens directory `rel` beneath the root, once per `sync_files` call
    /// (a failure is not kept: it is rare, and tried again per file); its
    /// index in `fds`.
    fn open(&mut self, fs: &RootFs, rel: &'r str) -> io::Result<usize> {
        if let Some(d) = self.index.get(rel) {
            return Ok(*d);
        }
        self.fds.push(fs.dir(rel)?);
        let d = self.fds.len() - 1;
        self.index.insert(rel, d);
        Ok(d)
    }
}

/// The device of a rustix `Stat` (its width varies by target).
#[allow(clippy::unnecessary_cast)]
fn dev_of(s: &rfs::Stat) -> u64 {
    s.st_dev as u64
}

/// "Nothing there": the entry or one of its parents is missing, or a parent
/// is not a directory.
fn is_absent(e: &io::Error) -> bool {
    let raw = e.raw_os_error();
    raw == Some(Errno::NOENT.raw_os_error()) || raw == Some(Errno::NOTDIR.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, RootFs) {
        let t = tempfile::tempdir().expect("tempdir");
        let fs = RootFs::open(t.path()).expect("open root");
        (t, fs)
    }

    #[test]
    fn basic_operations() {
        let (t, fs) = setup();
        fs.mkdir("d", 0o755).expect("mkdir");
        let mut w = fs.create_new("d/f").expect("create");
        w.write_all_at(b"hello", 0).expect("write");
        w.set_len(8).expect("extend");
        w.set_mode(0o4640).expect("chmod");
        w.set_mtime(1_500_000_000_123_456_789).expect("mtime");
        w.sync().expect("sync");
        let st = fs.lstat("d/f").expect("lstat").expect("present");
        assert_eq!((st.kind, st.size, st.mode), (FileKind::File, 8, 0o4640));
        assert_eq!(st.mtime_ns, 1_500_000_000_123_456_789);
        assert!(fs.create_new("d/f").is_err(), "O_EXCL");
        let mut r = fs.open_read("d/f").expect("open");
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).expect("read");
        assert_eq!(buf, b"hello\0\0\0");
        fs.symlink("../elsewhere", "d/l").expect("symlink");
        assert_eq!(fs.read_link("d/l").expect("readlink"), "../elsewhere");
        assert_eq!(
            fs.lstat("d/l").expect("lstat").map(|s| s.kind),
            Some(FileKind::Symlink)
        );
        let mut names = fs.read_dir("d").expect("read_dir");
        names.sort();
        assert_eq!(names, vec![OsString::from("f"), OsString::from("l")]);
        fs.rename("d/f", "g", false).expect("rename");
        fs.mkdir("h", 0o700).expect("mkdir");
        let e = fs.rename("g", "h", true).expect_err("noreplace");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        fs.sync_dir("").expect("sync root");
        fs.set_mode("h", 0o750).expect("chmod dir");
        assert_eq!(fs.lstat("h").expect("lstat").map(|s| s.mode), Some(0o750));
        fs.remove_dir("h").expect("rmdir");
        fs.remove_file("g").expect("unlink");
        assert_eq!(fs.lstat("g").expect("lstat"), None);
        assert_eq!(fs.lstat("nope/deeper").expect("lstat"), None);
        assert!(t.path().join("d/l").symlink_metadata().is_ok());
    }

    #[test]
    fn sync_files_flushes_files_and_reports_what_is_not_one() {
        for each in [false, true] {
            let (t, fs) = setup();
            let fs = if each { fs.fsync_each() } else { fs };
            fs.mkdir("d", 0o755).expect("mkdir");
            std::fs::write(t.path().join("top"), b"1").expect("write");
            std::fs::write(t.path().join("d/f"), b"2").expect("write");
            std::fs::write(t.path().join("d/g"), b"3").expect("write");
            fs.symlink("top", "link").expect("symlink");
            fs.symlink("d", "dlink").expect("symlink");
            let rels = [
                "top", "d/f", "gone", "link", "d", "dlink/g", "d/g", "no/dir", "d/f",
            ];
            let res = fs.sync_files(&rels);
            assert_eq!(res.len(), rels.len());
            let ok: Vec<bool> = res.iter().map(Result::is_ok).collect();
            assert_eq!(
                ok,
                [true, true, false, false, false, false, true, false, true],
                "fsync each: {each}: {res:?}"
            );
            assert_eq!(
                res[2].as_ref().map_err(io::Error::kind),
                Err(io::ErrorKind::NotFound)
            );
            assert!(fs.sync_files(&[]).is_empty());
        }
    }

    #[test]
    fn never_follows_a_symlinked_parent_or_target() {
        for walk in [false, true] {
            let (t, fs) = setup();
            let fs = if walk { fs.walk_only() } else { fs };
            refuses_symlinks(&t, &fs);
            // Where the kernel has openat2 (5.6+), it was the path taken.
            assert_eq!(fs.openat2.load(Ordering::Relaxed), !walk);
        }
    }

    fn refuses_symlinks(t: &tempfile::TempDir, fs: &RootFs) {
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(outside.path(), t.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("secret"), t.path().join("flink"))
            .expect("symlink");
        fs.mkdir("real", 0o755).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), t.path().join("real/mid")).expect("symlink");
        std::fs::create_dir(outside.path().join("sub")).expect("mkdir");
        assert!(fs.create_new("real/mid/sub/x").is_err(), "symlink mid-path");
        assert!(
            fs.lstat("real/mid/secret").is_err()
                || fs.lstat("real/mid/secret").expect("ok").is_none()
        );
        assert!(fs.create_new("link/x").is_err());
        assert!(fs.open_read("link/secret").is_err());
        assert!(fs.open_read("flink").is_err(), "final symlink not followed");
        assert!(fs.read_dir("link").is_err());
        assert!(fs.set_mode("flink", 0o777).is_err());
        assert!(fs.mkdir("link/d", 0o755).is_err());
        assert!(fs.rename("flink", "link/moved", false).is_err());
        assert!(fs.lstat("link/secret").is_err() || fs.lstat("link/secret").expect("ok").is_none());
        assert!(fs.create_new("../escape").is_err());
        assert!(!outside.path().join("x").exists());
        assert!(!outside.path().join("sub/x").exists());
        assert!(!outside.path().join("d").exists());
        let meta = std::fs::metadata(outside.path().join("secret")).expect("stat");
        assert_ne!(meta.mode() & 0o777, 0o777);
    }
}
