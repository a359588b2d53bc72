//! [`FakeFs`]: an in-memory [`Fs`] with injected errors and simulated crashes.
//!
//! # Durability model (what a crash keeps)
//! - File *data and metadata* are durable once the file was `sync`ed; a file
//!   that never was comes back empty (as on ext4 after a crash).
//! - A *directory entry* (create, rename, unlink, mkdir, symlink) is durable
//!   once its parent directory was `sync_dir`ed.
//! - Directories and symlinks themselves are durable when created.
//! - `sync_files` makes each listed file's data and metadata, its entry and
//!   its parents' entries durable (what one `syncfs` gives); each path is
//!   one mutating operation `"sync_files"`, and every call is recorded
//!   ([`FakeFs::flushes`]).
//!
//! [`FakeFs::crash_after`]`(n)` lets `n` more mutating operations happen and
//! makes the next one crash *before* it takes effect: the state reverts to
//! the durable one and every later call fails until [`FakeFs::restart`].
//! Iterating `n` over every value therefore tests every crash point of a
//! sequence. [`FakeFs::fail`] makes matching operations fail with an error;
//! [`FakeFs::before`] runs a closure (a concurrent user) just before the
//! next matching operation. Limitation: renaming a directory moves its
//! descendants' live entries but not their durable ones.
//!
//! Paths are checked like the real one: a symlink as a parent component is
//! `ENOTDIR`-like, never followed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{split, FileRead, FileWrite, Fs};
pub use super::fs_fake_state::FakeState;
use super::fs_fake_state::{err, Body};
use super::types::{FileKind, Stat};

/// The in-memory file system (cheap to clone: clones share the state).
#[derive(Clone)]
pub struct FakeFs(Arc<Mutex<FakeState>>);

impl Default for FakeFs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeFs {
    pub fn new() -> FakeFs {
        let mut s = FakeState {
            entries: BTreeMap::new(),
            inodes: HashMap::new(),
            durable_entries: BTreeMap::new(),
            durable_inodes: HashMap::new(),
            next_ino: 0,
            clock: 1_000,
            ops: 0,
            crash_at: None,
            crashed: false,
            fails: Vec::new(),
            hooks: Vec::new(),
            flushes: Vec::new(),
        };
        let root = s.new_inode(Body::Dir, 0o755);
        s.entries.insert(String::new(), root);
        s.durable_entries.insert(String::new(), root);
        FakeFs(Arc::new(Mutex::new(s)))
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Crash right before the `n`-th mutating operation from now (0 = the next).
    pub fn crash_after(&self, n: u64) {
        let mut s = self.lock();
        s.crash_at = Some(s.ops + n);
    }

    /// Whether a simulated crash happened (and no restart yet).
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Back to work after a crash.
    pub fn restart(&self) {
        self.lock().crashed = false;
    }

    /// Every later `op` on a path containing `path_part` fails with `kind`.
    pub fn fail(&self, op: &str, path_part: &str, kind: io::ErrorKind) {
        self.lock().fails.push((op.into(), path_part.into(), kind));
    }

    pub fn clear_failures(&self) {
        self.lock().fails.clear();
    }

    /// Runs `hook` right before the next `op` on a path containing
    /// `path_part` (before its failure/crash checks).
    pub fn before(
        &self,
        op: &str,
        path_part: &str,
        hook: impl FnOnce(&mut FakeState) + Send + 'static,
    ) {
        self.lock().push_hook(op, path_part, hook);
    }

    /// Writes a whole file now, durably (test setup).
    pub fn write_file(&self, rel: &str, data: &[u8]) {
        self.lock().write_file(rel, data);
    }

    /// Replaces a file's bytes keeping its whole stat (size included, so
    /// `data` must be as long): a rewrite within one timestamp tick, as a
    /// file system with coarse timestamps shows it (test setup).
    pub fn rewrite_within_tick(&self, rel: &str, data: &[u8]) {
        let mut s = self.lock();
        let ino = *s.entries.get(rel).expect("a file");
        let n = s.inodes.get_mut(&ino).expect("an inode");
        match &mut n.body {
            Body::File(d) => {
                assert_eq!(d.len(), data.len(), "same size");
                *d = data.to_vec();
            }
            _ => panic!("not a file"),
        }
        let n = n.clone();
        s.durable_inodes.insert(ino, n);
    }

    /// A file's bytes, `None` if absent or not a file.
    pub fn read_file(&self, rel: &str) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.entries.get(rel)?;
        match &s.inodes.get(ino)?.body {
            Body::File(d) => Some(d.clone()),
            _ => None,
        }
    }

    /// Every path, sorted (without the root).
    pub fn paths(&self) -> Vec<String> {
        self.lock()
            .entries
            .keys()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }

    /// Makes every current entry and inode durable (test setup).
    pub fn settle(&self) {
        let mut s = self.lock();
        s.durable_entries = s.entries.clone();
        s.durable_inodes = s.inodes.clone();
    }

    /// Whether `rel` would survive a crash as it is now (its data and every
    /// entry of its path are durable).
    pub fn is_durable(&self, rel: &str) -> bool {
        self.lock().is_durable(rel)
    }

    /// The paths of every `sync_files` call so far, in call order.
    pub fn flushes(&self) -> Vec<Vec<String>> {
        self.lock().flushes.clone()
    }

    /// Number of mutating operations done so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    fn add_entry(&self, op: &str, rel: &str, body: Body, mode: u32) -> io::Result<u64> {
        let mut s = self.lock();
        s.enter(op, rel, true)?;
        s.parents_ok(rel)?;
        if s.entries.contains_key(rel) {
            return Err(err(io::ErrorKind::AlreadyExists, "exists"));
        }
        let ino = s.new_inode(body.clone(), mode);
        s.entries.insert(rel.to_owned(), ino);
        if !matches!(body, Body::File(_)) {
            let n = s.inodes[&ino].clone();
            s.durable_inodes.insert(ino, n);
        }
        Ok(ino)
    }
}

struct FakeRead {
    data: io::Cursor<Vec<u8>>,
    stat: Stat,
}

impl Read for FakeRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.data.read(buf)
    }
}

impl FileRead for FakeRead {
    fn stat(&self) -> io::Result<Stat> {
        Ok(self.stat)
    }
}

struct FakeWrite {
    fs: FakeFs,
    ino: u64,
    path: String,
}

impl FakeWrite {
    fn with(
        &self,
        op: &str,
        f: impl FnOnce(&mut FakeState, u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.enter(op, &self.path, true)?;
        f(&mut s, self.ino)
    }
}

impl FileWrite for FakeWrite {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with("write", |s, ino| {
            let t = s.tick();
            let n = s.file_mut(ino)?;
            if let Body::File(d) = &mut n.body {
                let end = offset as usize + buf.len();
                if d.len() < end {
                    d.resize(end, 0);
                }
                d[offset as usize..end].copy_from_slice(buf);
            }
            n.mtime_ns = t;
            n.ctime_ns = t;
            Ok(())
        })
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with("set_len", |s, ino| {
            if let Body::File(d) = &mut s.file_mut(ino)?.body {
                d.resize(len as usize, 0);
            }
            Ok(())
        })
    }
    fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        self.with("set_mode", |s, ino| {
            let t = s.tick();
            let n = s.file_mut(ino)?;
            n.mode = mode & 0o7777;
            n.ctime_ns = t;
            Ok(())
        })
    }
    fn set_mtime(&mut self, mtime_ns: i64) -> io::Result<()> {
        self.with("set_mtime", |s, ino| {
            let t = s.tick();
            let n = s.file_mut(ino)?;
            n.mtime_ns = mtime_ns;
            n.ctime_ns = t;
            Ok(())
        })
    }
    fn sync(&mut self) -> io::Result<()> {
        self.with("sync", |s, ino| {
            let n = s.file_mut(ino)?.clone();
            s.durable_inodes.insert(ino, n);
            Ok(())
        })
    }
    fn stat(&self) -> io::Result<Stat> {
        let s = self.fs.lock();
        s.stat(self.ino)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "unlinked"))
    }
}

impl Fs for FakeFs {
    fn lstat(&self, rel: &str) -> io::Result<Option<Stat>> {
        let mut s = self.lock();
        s.enter("lstat", rel, false)?;
        if !rel.is_empty() {
            if let Err(e) = s.parents_ok(rel) {
                return match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Ok(None),
                    _ => Err(e),
                };
            }
        }
        Ok(s.entries.get(rel).and_then(|i| s.stat(*i)))
    }

    fn read_dir(&self, rel: &str) -> io::Result<Vec<OsString>> {
        let mut s = self.lock();
        s.enter("read_dir", rel, false)?;
        if !rel.is_empty() {
            s.parents_ok(rel)?;
        }
        if s.kind_at(rel) != Some(FileKind::Dir) {
            return Err(err(io::ErrorKind::NotADirectory, "not a dir"));
        }
        Ok(s.entries
            .keys()
            .filter(|k| !k.is_empty() && split(k).0 == rel)
            .map(|k| OsString::from(split(k).1))
            .collect())
    }

    fn read_link(&self, rel: &str) -> io::Result<OsString> {
        let mut s = self.lock();
        s.enter("read_link", rel, false)?;
        s.parents_ok(rel)?;
        match s
            .entries
            .get(rel)
            .and_then(|i| s.inodes.get(i))
            .map(|n| &n.body)
        {
            Some(Body::Link(t)) => Ok(OsString::from(t)),
            _ => Err(err(io::ErrorKind::InvalidInput, "not a symlink")),
        }
    }

    fn open_read(&self, rel: &str) -> io::Result<Box<dyn FileRead>> {
        let mut s = self.lock();
        s.enter("open_read", rel, false)?;
        s.parents_ok(rel)?;
        let ino = *s
            .entries
            .get(rel)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "absent"))?;
        let stat = s
            .stat(ino)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "absent"))?;
        match &s.inodes[&ino].body {
            Body::File(d) => Ok(Box::new(FakeRead {
                data: io::Cursor::new(d.clone()),
                stat,
            })),
            _ => Err(err(io::ErrorKind::InvalidInput, "not a regular file")),
        }
    }

    fn create_new(&self, rel: &str) -> io::Result<Box<dyn FileWrite>> {
        let ino = self.add_entry("create_new", rel, Body::File(Vec::new()), 0o600)?;
        Ok(Box::new(FakeWrite {
            fs: self.clone(),
            ino,
            path: rel.to_owned(),
        }))
    }

    fn open_write(&self, rel: &str) -> io::Result<Box<dyn FileWrite>> {
        let mut s = self.lock();
        s.enter("open_write", rel, false)?;
        s.parents_ok(rel)?;
        let ino = *s
            .entries
            .get(rel)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "absent"))?;
        match &s.inodes[&ino].body {
            Body::File(_) => Ok(Box::new(FakeWrite {
                fs: self.clone(),
                ino,
                path: rel.to_owned(),
            })),
            _ => Err(err(io::ErrorKind::InvalidInput, "not a regular file")),
        }
    }

    fn rename(&self, from: &str, to: &str, noreplace: bool) -> io::Result<()> {
        let mut s = self.lock();
        s.enter("rename", from, true)?;
        s.parents_ok(from)?;
        s.parents_ok(to)?;
        let ino = *s
            .entries
            .get(from)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "absent"))?;
        if let Some(old) = s.kind_at(to) {
            if noreplace {
                return Err(err(io::ErrorKind::AlreadyExists, "exists"));
            }
            let prefix = format!("{to}/");
            if old == FileKind::Dir && s.entries.keys().any(|k| k.starts_with(&prefix)) {
                return Err(err(io::ErrorKind::DirectoryNotEmpty, "not empty"));
            }
        }
        let from_prefix = format!("{from}/");
        let moved: Vec<(String, u64)> = s
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(&from_prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, v) in moved {
            s.entries.remove(&k);
            s.entries
                .insert(format!("{to}/{}", &k[from_prefix.len()..]), v);
        }
        s.entries.remove(from);
        s.entries.insert(to.to_owned(), ino);
        let t = s.tick();
        s.file_mut(ino)?.ctime_ns = t;
        Ok(())
    }

    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.enter("sync_dir", rel, true)?;
        let live: Vec<(String, u64)> = s
            .entries
            .iter()
            .filter(|(k, _)| !k.is_empty() && split(k).0 == rel)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        s.durable_entries
            .retain(|k, _| k.is_empty() || split(k).0 != rel);
        s.durable_entries.extend(live);
        Ok(())
    }

    fn sync_files(&self, rels: &[&str]) -> Vec<io::Result<()>> {
        let mut s = self.lock();
        s.flushes
            .push(rels.iter().map(|r| (*r).to_owned()).collect());
        rels.iter().map(|rel| s.sync_file(rel)).collect()
    }

    fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        self.add_entry("mkdir", rel, Body::Dir, mode & 0o7777)
            .map(|_| ())
    }

    fn symlink(&self, target: &str, rel: &str) -> io::Result<()> {
        self.add_entry("symlink", rel, Body::Link(target.to_owned()), 0o777)
            .map(|_| ())
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.enter("hard_link", to, true)?;
        s.parents_ok(from)?;
        s.parents_ok(to)?;
        if s.entries.contains_key(to) {
            return Err(err(io::ErrorKind::AlreadyExists, "exists"));
        }
        match s.entries.get(from).copied() {
            Some(ino) if s.kind_at(from) == Some(FileKind::File) => {
                s.entries.insert(to.to_owned(), ino);
                Ok(())
            }
            Some(_) => Err(err(io::ErrorKind::PermissionDenied, "not a regular file")),
            None => Err(err(io::ErrorKind::NotFound, "absent")),
        }
    }

    fn remove_file(&self, rel: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.enter("remove_file", rel, true)?;
        s.parents_ok(rel)?;
        match s.kind_at(rel) {
            None => Err(err(io::ErrorKind::NotFound, "absent")),
            Some(FileKind::Dir) => Err(err(io::ErrorKind::IsADirectory, "is a dir")),
            Some(_) => {
                s.entries.remove(rel);
                Ok(())
            }
        }
    }

    fn remove_dir(&self, rel: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.enter("remove_dir", rel, true)?;
        s.parents_ok(rel)?;
        if s.kind_at(rel) != Some(FileKind::Dir) {
            return Err(err(io::ErrorKind::NotADirectory, "not a dir"));
        }
        let prefix = format!("{rel}/");
        if s.entries.keys().any(|k| k.starts_with(&prefix)) {
            return Err(err(io::ErrorKind::DirectoryNotEmpty, "not empty"));
        }
        s.entries.remove(rel);
        Ok(())
    }

    fn set_mode(&self, rel: &str, mode: u32) -> io::Result<()> {
        let mut s = self.lock();
        s.enter("set_mode", rel, true)?;
        s.parents_ok(rel)?;
        let ino = *s
            .entries
            .get(rel)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "absent"))?;
        if s.kind_at(rel) == Some(FileKind::Symlink) {
            return Err(err(io::ErrorKind::InvalidInput, "symlink"));
        }
        let t = s.tick();
        let n = s.file_mut(ino)?;
        n.mode = mode & 0o7777;
        n.ctime_ns = t;
        let n = n.clone();
        s.durable_inodes.insert(ino, n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_entries_are_lost_in_a_crash() {
        let fs = FakeFs::new();
        fs.write_file("old", b"keep");
        let mut w = fs.create_new("new").expect("create");
        w.write_all_at(b"data", 0).expect("write");
        fs.crash_after(0);
        assert!(w.sync().is_err());
        assert!(fs.crashed());
        assert!(fs.lstat("x").is_err(), "every call fails until restart");
        fs.restart();
        assert_eq!(fs.paths(), vec!["old"]);
        assert_eq!(fs.read_file("old").as_deref(), Some(&b"keep"[..]));

        let mut w = fs.create_new("new").expect("create");
        w.write_all_at(b"data", 0).expect("write");
        w.sync().expect("sync");
        fs.crash_after(1);
        fs.sync_dir("").expect("sync dir");
        assert!(fs.rename("new", "old", false).is_err());
        fs.restart();
        assert_eq!(fs.read_file("new").as_deref(), Some(&b"data"[..]));
        assert_eq!(fs.read_file("old").as_deref(), Some(&b"keep"[..]));
    }

    #[test]
    fn symlinked_parents_are_refused_and_failures_injected() {
        let fs = FakeFs::new();
        fs.symlink("/etc", "l").expect("symlink");
        assert!(fs.create_new("l/x").is_err());
        assert_eq!(fs.lstat("l/x").expect("lstat"), None);
        fs.fail("rename", "a", io::ErrorKind::PermissionDenied);
        fs.write_file("a", b"1");
        assert_eq!(
            fs.rename("a", "b", false).expect_err("injected").kind(),
            io::ErrorKind::PermissionDenied
        );
        fs.clear_failures();
        fs.before("rename", "a", |s| s.write_file("c", b"2"));
        fs.rename("a", "b", false).expect("rename");
        assert_eq!(fs.paths(), vec!["b", "c", "l"]);
    }
}
