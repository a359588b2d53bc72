//! The state behind [`FakeFs`](super::fs_fake::FakeFs): entries, inodes,
//! their durable copies, the crash model, injected failures and hooks (see
//! `fs_fake.rs` for the model).

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::types::{FileKind, Stat};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Body {
    File(Vec<u8>),
    Dir,
    Link(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Inode {
    pub(super) body: Body,
    pub(super) mode: u32,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
}

pub(super) type Hook = Box<dyn FnOnce(&mut FakeState) + Send>;

/// The fake's state; hooks get it to act as a concurrent user.
pub struct FakeState {
    pub(super) entries: BTreeMap<String, u64>,
    pub(super) inodes: HashMap<u64, Inode>,
    pub(super) durable_entries: BTreeMap<String, u64>,
    pub(super) durable_inodes: HashMap<u64, Inode>,
    pub(super) next_ino: u64,
    pub(super) clock: i64,
    pub(super) ops: u64,
    pub(super) crash_at: Option<u64>,
    pub(super) crashed: bool,
    pub(super) fails: Vec<(String, String, io::ErrorKind)>,
    pub(super) hooks: Vec<(String, String, Hook)>,
    /// The paths of every `sync_files` call, in call order.
    pub(super) flushes: Vec<Vec<String>>,
}

pub(super) fn err(kind: io::ErrorKind, msg: &str) -> io::Error {
    io::Error::new(kind, msg.to_owned())
}

impl FakeState {
    pub(super) fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn new_inode(&mut self, body: Body, mode: u32) -> u64 {
        let t = self.tick();
        self.next_ino += 1;
        self.inodes.insert(
            self.next_ino,
            Inode {
                body,
                mode,
                mtime_ns: t,
                ctime_ns: t,
            },
        );
        self.next_ino
    }

    /// Runs `hook` right before the next `op` on a path containing
    /// `path_part` (lets a hook chain another).
    pub fn push_hook(
        &mut self,
        op: &str,
        path_part: &str,
        hook: impl FnOnce(&mut FakeState) + Send + 'static,
    ) {
        self.hooks
            .push((op.into(), path_part.into(), Box::new(hook)));
    }

    /// A test helper: writes a whole file now (durably), replacing any file there.
    pub fn write_file(&mut self, rel: &str, data: &[u8]) {
        let t = self.tick();
        let ino = match self.entries.get(rel) {
            Some(ino) => *ino,
            None => {
                let ino = self.new_inode(Body::File(Vec::new()), 0o644);
                self.entries.insert(rel.to_owned(), ino);
                self.durable_entries.insert(rel.to_owned(), ino);
                ino
            }
        };
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.body = Body::File(data.to_vec());
            n.mtime_ns = t;
            n.ctime_ns = t;
            self.durable_inodes.insert(ino, n.clone());
        }
    }

    pub(super) fn stat(&self, ino: u64) -> Option<Stat> {
        let n = self.inodes.get(&ino)?;
        let (kind, size) = match &n.body {
            Body::File(d) => (FileKind::File, d.len() as u64),
            Body::Dir => (FileKind::Dir, 4096),
            Body::Link(t) => (FileKind::Symlink, t.len() as u64),
        };
        Some(Stat {
            kind,
            size,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            ino,
            mode: n.mode,
        })
    }

    pub(super) fn kind_at(&self, rel: &str) -> Option<FileKind> {
        self.entries
            .get(rel)
            .and_then(|i| self.stat(*i))
            .map(|s| s.kind)
    }

    /// Checks that every parent of `rel` is a real directory.
    pub(super) fn parents_ok(&self, rel: &str) -> io::Result<()> {
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(err(io::ErrorKind::InvalidInput, "bad path"));
        }
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            let p = &rel[..at + i];
            match self.kind_at(p) {
                Some(FileKind::Dir) => {}
                None => return Err(err(io::ErrorKind::NotFound, "parent missing")),
                Some(_) => return Err(err(io::ErrorKind::NotADirectory, "parent not a dir")),
            }
            at += i + 1;
        }
        Ok(())
    }

    /// Bookkeeping of every operation: injected failures, crashes, hooks.
    pub(super) fn enter(&mut self, op: &str, rel: &str, mutating: bool) -> io::Result<()> {
        if self.crashed {
            return Err(err(io::ErrorKind::Other, "crashed"));
        }
        if let Some(i) = self
            .hooks
            .iter()
            .position(|(o, p, _)| o == op && rel.contains(p.as_str()))
        {
            let (_, _, hook) = self.hooks.remove(i);
            hook(self);
        }
        if let Some(i) = self
            .fails
            .iter()
            .position(|(o, p, _)| o == op && rel.contains(p.as_str()))
        {
            let kind = self.fails[i].2;
            return Err(err(kind, "injected failure"));
        }
        if mutating {
            if self.crash_at == Some(self.ops) {
                self.crash();
                return Err(err(io::ErrorKind::Other, "crashed"));
            }
            self.ops += 1;
        }
        Ok(())
    }

    pub(super) fn crash(&mut self) {
        self.crashed = true;
        self.crash_at = None;
        self.entries = self.durable_entries.clone();
        let mut inodes = HashMap::new();
        for ino in self.entries.values() {
            let n = match self.durable_inodes.get(ino) {
                Some(n) => n.clone(),
                None => match self.inodes.get(ino) {
                    Some(Inode {
                        body: Body::File(_),
                        mode,
                        mtime_ns,
                        ctime_ns,
                    }) => Inode {
                        body: Body::File(Vec::new()),
                        mode: *mode,
                        mtime_ns: *mtime_ns,
                        ctime_ns: *ctime_ns,
                    },
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            inodes.insert(*ino, n);
        }
        self.inodes = inodes;
    }

    /// Whether `rel` (a file or not) would come back as it is now after a
    /// crash: its entry and every parent's entry are durable, and so is its
    /// inode.
    pub(super) fn is_durable(&self, rel: &str) -> bool {
        let Some(ino) = self.entries.get(rel) else {
            return false;
        };
        let entries_durable = ancestry(rel).all(|p| {
            self.entries.contains_key(p) && self.durable_entries.get(p) == self.entries.get(p)
        });
        entries_durable && self.durable_inodes.get(ino) == self.inodes.get(ino)
    }

    /// `sync_files` of one path: its data, its entry and its parents'
    /// entries become durable (what a `syncfs` gives).
    pub(super) fn sync_file(&mut self, rel: &str) -> io::Result<()> {
        self.enter("sync_files", rel, true)?;
        self.parents_ok(rel)?;
        let ino = *self
            .entries
            .get(rel)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "absent"))?;
        if self.kind_at(rel) != Some(FileKind::File) {
            return Err(err(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let n = self.file_mut(ino)?.clone();
        self.durable_inodes.insert(ino, n);
        for p in ancestry(rel) {
            if let Some(i) = self.entries.get(p).copied() {
                self.durable_entries.insert(p.to_owned(), i);
            }
        }
        Ok(())
    }

    pub(super) fn file_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "unlinked"))
    }
}

/// `a/b/c`, `a/b`, `a`: the path and each of its parents (not the root).
fn ancestry(rel: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(rel), |p| p.rfind('/').map(|i| &p[..i]))
}
