//! What the checker looks at, gathered from each node: its status, the
//! committed tree it reports (`ls -R`), its synced directory on disk (every
//! file parsed, self-checked and hashed), what lies beside the directory,
//! and optionally its own `verify`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use filesyncd::api::files::types::VerifyAnswer;
use filesyncd::api::types::Status;

use super::content::{self, Bad, Header};
use super::node::{bytes_root, NodeSpec};

/// A committed file (from `ls -R`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub root: String,
    pub size: u64,
    pub index: u64,
    pub pos: u32,
}

/// A file on a node's disk.
#[derive(Clone, Debug)]
pub struct DiskFile {
    pub root: String,
    pub size: u64,
    pub header: Result<Header, Bad>,
}

/// A node's synced directory as found on disk.
#[derive(Clone, Debug, Default)]
pub struct DiskScan {
    pub files: BTreeMap<String, DiskFile>,
    pub dirs: BTreeSet<String>,
    /// Names containing `.filesyncd-tmp` (writes in flight; none may be left).
    pub temps: Vec<String>,
    /// Neither a file nor a directory (the workload makes no symlinks).
    pub odd: Vec<String>,
    /// Entries beside the synced directory that should not be there.
    pub outside: Vec<String>,
    pub errors: Vec<String>,
}

/// Everything the checker knows about one node.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub name: String,
    pub status: Result<Status, String>,
    /// Committed files by path.
    pub committed: Result<BTreeMap<String, Committed>, String>,
    pub disk: DiskScan,
    pub verify: Option<Result<VerifyAnswer, String>>,
}

/// Gathers views, hashing only files that changed since the last call.
#[derive(Default)]
pub struct Observer {
    cache: HashMap<PathBuf, (FileKey, DiskFile)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileKey {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Observer {
    pub fn view(&mut self, n: &NodeSpec, with_verify: bool) -> NodeView {
        let status = n.status();
        let committed = n.ls_recursive("").map(|a| {
            a.entries
                .into_iter()
                .filter(|e| e.kind == "file")
                .map(|e| {
                    let c = Committed {
                        root: e.root.unwrap_or_default(),
                        size: e.size,
                        index: e.index.unwrap_or(0),
                        pos: e.pos.unwrap_or(0),
                    };
                    (e.path, c)
                })
                .collect()
        });
        let disk = self.scan(n);
        let verify = with_verify.then(|| n.verify());
        NodeView {
            name: n.name.clone(),
            status,
            committed,
            disk,
            verify,
        }
    }

    pub fn views(&mut self, nodes: &[NodeSpec], with_verify: bool) -> Vec<NodeView> {
        nodes.iter().map(|n| self.view(n, with_verify)).collect()
    }

    fn scan(&mut self, n: &NodeSpec) -> DiskScan {
        let mut s = DiskScan::default();
        self.walk(&n.dir, &n.dir, &mut s);
        if let Some(out) = &n.outside {
            match fs::read_dir(out) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let p = e.path();
                        if p == n.dir {
                            continue;
                        }
                        if p == n.stage {
                            if !super::workload::stage_is_empty(&p) {
                                s.outside.push(format!("{} (not empty)", p.display()));
                            }
                            continue;
                        }
                        if !n.outside_allowed.contains(&name) {
                            s.outside.push(p.display().to_string());
                        }
                    }
                }
                Err(e) => s.errors.push(format!("{}: {e}", out.display())),
            }
        }
        s
    }

    fn walk(&mut self, root: &Path, dir: &Path, s: &mut DiskScan) {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                s.errors.push(format!("{}: {e}", dir.display()));
                return;
            }
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".filesyncd-tmp") {
                s.temps.push(rel);
                continue;
            }
            if name.starts_with(".filesyncd") {
                continue; // the daemon's own (the marker)
            }
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) => {
                    s.errors.push(format!("{rel}: {e}"));
                    continue;
                }
            };
            if m.is_dir() {
                s.dirs.insert(rel);
                self.walk(root, &p, s);
            } else if m.is_file() {
                let key = FileKey {
                    ino: m.ino(),
                    size: m.size(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                };
                if let Some((k, f)) = self.cache.get(&p) {
                    if *k == key {
                        s.files.insert(rel, f.clone());
                        continue;
                    }
                }
                match fs::read(&p) {
                    Ok(bytes) => {
                        let (root, size) = bytes_root(&bytes);
                        let f = DiskFile {
                            root,
                            size,
                            header: content::parse(&bytes),
                        };
                        self.cache.insert(p.clone(), (key, f.clone()));
                        s.files.insert(rel, f);
                    }
                    // Replaced or removed between listing and reading.
                    Err(e) => s.errors.push(format!("{rel}: {e}")),
                }
            } else {
                s.odd.push(rel);
            }
        }
    }
}
