//! The invariants, as pure functions of the ledger and the node views.
//!
//! * [`settled`]: every node answers, follows the same leader, reports the
//!   same cluster root, `in_sync` with its local root equal to it, nothing
//!   pending or halted; every node's disk holds exactly the files it
//!   reports committed; no temp file. The suite polls this until it holds.
//! * [`check`], after that:
//!   - `partial`: every file on every node parses and matches its own
//!     length and blake3; `misplaced`: it sits at the path its header names
//!     or at a conflict copy of it; `unknown`: its id was written by the
//!     workload; `temp-left`, `odd`, `outside-root`.
//!   - `tree`: each node's disk equals its committed tree, and every
//!     node's committed tree equals the first node's; `verify`: the
//!     daemon's own rehash finds no difference.
//!   - `lost-ack`: every acknowledged write is still the committed content
//!     of the path it was committed at, or a later version replaced it.
//!   - `lost-last`: the last write of every (node, path), acknowledged or
//!     not, is on every node, at its path or as a conflict copy of it (this
//!     covers both sides of every concurrent edit); except a write that was
//!     never acknowledged and was on a node when its disks were wiped.

use std::collections::{BTreeMap, BTreeSet};

use super::content::is_path_or_copy;
use super::ledger::{last_writes, Write};
use super::observe::NodeView;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: &'static str,
    pub node: Option<String>,
    pub path: String,
    /// The content id a `lost-*` violation is about.
    pub id: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(n) => write!(f, "[{}] {n}: {}: {}", self.kind, self.path, self.detail),
            None => write!(f, "[{}] {}: {}", self.kind, self.path, self.detail),
        }
    }
}

fn v(kind: &'static str, node: Option<&str>, path: &str, detail: String) -> Violation {
    Violation {
        kind,
        node: node.map(str::to_string),
        path: path.to_string(),
        id: None,
        detail,
    }
}

fn lost(kind: &'static str, node: Option<&str>, path: &str, id: &str, detail: String) -> Violation {
    Violation {
        id: Some(id.to_string()),
        ..v(kind, node, path, detail)
    }
}

/// Whether the cluster has settled (see the module doc); the reason if not.
/// On success, the common cluster root.
pub fn settled(views: &[NodeView]) -> Result<String, String> {
    let mut root: Option<&str> = None;
    let mut leader: Option<&str> = None;
    for n in views {
        let s = n
            .status
            .as_ref()
            .map_err(|e| format!("{}: status: {e}", n.name))?;
        let l = s
            .leader
            .as_deref()
            .ok_or_else(|| format!("{} knows no leader", n.name))?;
        if *leader.get_or_insert(l) != l {
            return Err(format!(
                "{} follows {l}, another node {}",
                n.name,
                leader.unwrap_or("")
            ));
        }
        if *root.get_or_insert(&s.cluster_root) != s.cluster_root {
            return Err(format!(
                "{} has cluster root {}, another node {}",
                n.name,
                short(&s.cluster_root),
                short(root.unwrap_or(""))
            ));
        }
        if !s.in_sync {
            let why = s.sync.as_ref().map(|y| {
                format!(
                    "pending local {} remote {}, halted {:?}, paused {:?}, last error {:?}",
                    y.pending_local, y.pending_remote, y.halted, y.paused, y.last_error
                )
            });
            return Err(format!(
                "{} is not in sync ({})",
                n.name,
                why.unwrap_or_else(|| "no sync service".into())
            ));
        }
        if s.local_root.as_deref() != Some(s.cluster_root.as_str()) {
            return Err(format!(
                "{}: local root {:?} is not the cluster root",
                n.name, s.local_root
            ));
        }
        if let Some(y) = &s.sync {
            if y.pending_local != 0 || y.pending_remote != 0 || y.halted.is_some() {
                return Err(format!(
                    "{}: pending {}/{} halted {:?}",
                    n.name, y.pending_local, y.pending_remote, y.halted
                ));
            }
        }
        if !n.disk.temps.is_empty() {
            return Err(format!("{}: temp files {:?}", n.name, n.disk.temps));
        }
        let c = n
            .committed
            .as_ref()
            .map_err(|e| format!("{}: ls: {e}", n.name))?;
        if let Some(d) = tree_difference(c, n) {
            return Err(format!("{}: disk differs from committed: {d}", n.name));
        }
    }
    let first = views.first().ok_or("no nodes")?;
    let c0 = first.committed.as_ref().map_err(|e| e.clone())?;
    for n in &views[1..] {
        if n.committed.as_ref().ok() != Some(c0) {
            return Err(format!(
                "{} and {} list different committed trees",
                first.name, n.name
            ));
        }
    }
    Ok(root.unwrap_or_default().to_string())
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// The first difference between a node's disk and its committed files.
fn tree_difference(
    c: &BTreeMap<String, super::observe::Committed>,
    n: &NodeView,
) -> Option<String> {
    for (p, e) in c {
        match n.disk.files.get(p) {
            None => return Some(format!("{p} committed, not on disk")),
            Some(f) if f.root != e.root || f.size != e.size => {
                return Some(format!(
                    "{p}: disk {} ({} B), committed {} ({} B)",
                    short(&f.root),
                    f.size,
                    short(&e.root),
                    e.size
                ))
            }
            Some(_) => {}
        }
    }
    n.disk
        .files
        .keys()
        .find(|p| !c.contains_key(*p))
        .map(|p| format!("{p} on disk, not committed"))
}

/// Every invariant (see the module doc) over the final views.
pub fn check(writes: &[Write], views: &[NodeView]) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Err(e) = settled(views) {
        out.push(v("not-settled", None, "", e));
    }
    let by_id: BTreeMap<&str, &Write> = writes.iter().map(|w| (w.id.as_str(), w)).collect();
    // Per node: every content id found on disk, and where.
    let mut found: Vec<BTreeMap<String, Vec<String>>> = Vec::new();
    for n in views {
        let name = Some(n.name.as_str());
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &n.disk.temps {
            out.push(v(
                "temp-left",
                name,
                t,
                "temp file left in the synced tree".into(),
            ));
        }
        for o in &n.disk.odd {
            out.push(v("odd", name, o, "neither a file nor a directory".into()));
        }
        for o in &n.disk.outside {
            out.push(v(
                "outside-root",
                name,
                o,
                "beside the synced directory".into(),
            ));
        }
        for e in &n.disk.errors {
            out.push(v("io", name, "", e.clone()));
        }
        for (p, f) in &n.disk.files {
            match &f.header {
                Err(bad) => out.push(v("partial", name, p, bad.to_string())),
                Ok(h) => {
                    if !is_path_or_copy(p, &h.path) {
                        out.push(v(
                            "misplaced",
                            name,
                            p,
                            format!("holds {} written to {}", h.id, h.path),
                        ));
                    }
                    if !by_id.contains_key(h.id.as_str()) {
                        out.push(v(
                            "unknown",
                            name,
                            p,
                            format!("content id {} was never written", h.id),
                        ));
                    }
                    ids.entry(h.id.clone()).or_default().push(p.clone());
                }
            }
        }
        match &n.committed {
            Err(e) => out.push(v("tree", name, "", format!("no committed listing: {e}"))),
            Ok(c) => {
                if let Some(d) = tree_difference(c, n) {
                    out.push(v("tree", name, "", d));
                }
            }
        }
        if let Some(r) = &n.verify {
            match r {
                Err(e) => out.push(v("verify", name, "", e.clone())),
                Ok(a) => {
                    for d in &a.differences {
                        out.push(v("verify", name, &d.path, d.problem.clone()));
                    }
                }
            }
        }
        found.push(ids);
    }
    let reference = views.iter().find_map(|n| n.committed.as_ref().ok());
    if let Some(c0) = reference {
        for n in views {
            if let Ok(c) = &n.committed {
                if c != c0 {
                    out.push(v(
                        "tree",
                        Some(&n.name),
                        "",
                        "committed tree differs from the first node's".into(),
                    ));
                }
            }
        }
        for w in writes {
            let Some(a) = &w.ack else { continue };
            let ok = match c0.get(&a.path) {
                None => false,
                Some(c) => c.root == w.root || (c.index, c.pos) > (a.index, a.pos),
            };
            if !ok {
                let now = c0
                    .get(&a.path)
                    .map(|c| format!("now {}@{}.{}", short(&c.root), c.index, c.pos));
                out.push(lost(
                    "lost-ack",
                    None,
                    &a.path,
                    &w.id,
                    format!(
                        "{} acknowledged at {}.{} is gone ({})",
                        w.id,
                        a.index,
                        a.pos,
                        now.unwrap_or_else(|| "path absent".into())
                    ),
                ));
            }
        }
    }
    for ((_, path), w) in &last_writes(writes) {
        if w.wiped && w.ack.is_none() {
            // Gone with its node's disks before the cluster had it.
            continue;
        }
        for (n, ids) in views.iter().zip(&found) {
            let here = ids
                .get(&w.id)
                .is_some_and(|ps| ps.iter().any(|p| is_path_or_copy(p, path)));
            if !here {
                let acked = w
                    .ack
                    .as_ref()
                    .map(|a| format!("acknowledged at {}.{}", a.index, a.pos));
                out.push(lost(
                    "lost-last",
                    Some(&n.name),
                    path,
                    &w.id,
                    format!(
                        "last write {} of node {} is missing ({})",
                        w.id,
                        w.node,
                        acked.unwrap_or_else(|| "never acknowledged".into())
                    ),
                ));
            }
        }
    }
    out
}

/// Writes named by `lost-*` violations (each counted once).
pub fn lost_writes(violations: &[Violation]) -> usize {
    let ids: BTreeSet<&str> = violations.iter().filter_map(|x| x.id.as_deref()).collect();
    ids.len()
}

/// Conflict copies in a committed tree.
pub fn conflict_copies(views: &[NodeView]) -> usize {
    views
        .iter()
        .find_map(|n| n.committed.as_ref().ok())
        .map(|c| c.keys().filter(|p| p.contains(".sync-conflict-")).count())
        .unwrap_or(0)
}

/// Conflict copies of paths that only one node ever wrote, outside any
/// concurrent-edit round: the daemon took one of its own writes for a
/// concurrent edit. Nothing is lost (both versions stay), so this is a
/// finding, not a violation; each line says which write sits where, and
/// whether the path itself went back to an older write than the copy's.
pub fn self_conflicts(writes: &[Write], views: &[NodeView]) -> Vec<String> {
    let Some(first) = views.first() else {
        return Vec::new();
    };
    let mut writers: BTreeMap<&str, (BTreeSet<usize>, bool)> = BTreeMap::new();
    for w in writes {
        let e = writers.entry(w.path.as_str()).or_default();
        e.0.insert(w.node);
        e.1 |= w.concurrent;
    }
    let seq: BTreeMap<&str, usize> = writes.iter().map(|w| (w.id.as_str(), w.seq)).collect();
    let id_at = |p: &str| {
        first
            .disk
            .files
            .get(p)
            .and_then(|f| f.header.as_ref().ok())
            .map(|h| h.id.clone())
    };
    let mut out = Vec::new();
    for (p, f) in &first.disk.files {
        if !p.contains(".sync-conflict-") {
            continue;
        }
        let Ok(h) = &f.header else { continue };
        let Some((nodes, concurrent)) = writers.get(h.path.as_str()) else {
            continue;
        };
        if nodes.len() != 1 || *concurrent {
            continue;
        }
        let at_path = id_at(&h.path);
        let order = match at_path.as_deref().and_then(|i| seq.get(i)) {
            Some(s) if seq.get(h.id.as_str()).is_some_and(|c| c > s) => {
                " (older than the copy: the path went back)"
            }
            Some(_) => " (newer than the copy)",
            None => "",
        };
        out.push(format!(
            "{p} holds {} while {} holds {}{order}",
            h.id,
            h.path,
            at_path.unwrap_or_else(|| "nothing".into())
        ));
    }
    out
}
