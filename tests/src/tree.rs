//! Trees on disk, compared across nodes: a snapshot of a synced directory
//! and the wait until running nodes hold equal trees, all in sync with one
//! cluster root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::{wait_for, Cluster, Error, Node, Value, DEADLINE};

/// One entry of a tree snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(String),
}

pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".filesyncd") {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let mode = m.permissions().mode() & 0o777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, Entry::Link(t.to_string_lossy().into_owned()));
            } else if m.is_dir() {
                out.insert(rel, Entry::Dir(mode));
                walk(root, &p, out);
            } else if let Ok(bytes) = fs::read(&p) {
                out.insert(rel, Entry::File(mode, bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

pub fn status_json(n: &Node) -> Option<Value> {
    n.cli_json(&["status"]).ok()
}

pub fn in_sync(v: &Value) -> bool {
    v.get("in_sync")
        .or_else(|| v.get("sync").and_then(|s| s.get("in_sync")))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub fn short(s: &BTreeMap<String, Entry>) -> Vec<String> {
    s.iter()
        .map(|(p, e)| match e {
            Entry::File(m, b) => format!("{p} file {m:o} {}B", b.len()),
            Entry::Dir(m) => format!("{p} dir {m:o}"),
            Entry::Link(t) => format!("{p} -> {t}"),
        })
        .take(20)
        .collect()
}

/// Waits until the running nodes `idx` hold equal trees, all `in_sync`,
/// with one cluster root; returns the common tree.
pub fn converge(c: &Cluster, idx: &[usize]) -> BTreeMap<String, Entry> {
    converge_within(c, idx, DEADLINE)
}

/// [`converge`] with another deadline (big trees on a debug build: each
/// placed file costs two fsyncs on every peer).
pub fn converge_within(c: &Cluster, idx: &[usize], deadline: Duration) -> BTreeMap<String, Entry> {
    wait_for("the nodes to converge", deadline, || {
        let snaps: Vec<_> = idx.iter().map(|i| snapshot(&c.node(*i).dir())).collect();
        if snaps.windows(2).any(|w| w[0] != w[1]) {
            let diff: Vec<String> = idx
                .iter()
                .zip(&snaps)
                .map(|(i, s)| format!("node {i}: {} entries {:?}", s.len(), short(s)))
                .collect();
            return Err(Error(format!("trees differ: {}", diff.join(" | "))));
        }
        let mut roots = Vec::new();
        for i in idx {
            let Some(v) = status_json(c.node(*i)) else {
                return Ok(None);
            };
            if !in_sync(&v) {
                return Err(Error(format!(
                    "node {i} not in sync: {}",
                    v.get("sync").map(|s| s.to_string()).unwrap_or_default()
                )));
            }
            roots.push(v["cluster_root"].as_str().unwrap_or_default().to_string());
        }
        if roots.windows(2).any(|w| w[0] != w[1]) {
            return Ok(None);
        }
        Ok(Some(snaps.into_iter().next().unwrap()))
    })
    .unwrap()
}
