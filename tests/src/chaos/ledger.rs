//! The ledger: every write the workload made, and which ones the cluster
//! acknowledged (reported committed), where and at which version.
//!
//! One `Mutex` guards it: writers and ack pollers are plain threads holding
//! it for a few map operations at a time, never across I/O.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use filesyncd::api::files::types::{HistoryEntry, LsEntry, STATE_DELETED};

use super::content::is_path_or_copy;

/// One write: a whole file renamed into a node's synced directory.
#[derive(Clone, Debug)]
pub struct Write {
    /// Position in the ledger (order in which writes reached the disk).
    pub seq: usize,
    /// The content id (in the file's header).
    pub id: String,
    /// Index of the node whose directory it was written to.
    pub node: usize,
    pub path: String,
    /// Merkle root (hex) and size of the whole file, as the cluster records it.
    pub root: String,
    pub size: u64,
    /// Written in a concurrent-edit round (two nodes, one path).
    pub concurrent: bool,
    pub at: Instant,
    pub ack: Option<Ack>,
    /// Never committed: a later write of the same path on the same node
    /// was committed while this one was not in the path's history.
    pub abandoned: bool,
    /// Unacknowledged when its node's disks were wiped (a disk loss): the
    /// only copy may have gone with them, so it need not survive. Once
    /// acknowledged (the final sweep finds it committed) it must.
    pub wiped: bool,
}

/// Where and as which version the cluster committed a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The path itself, or a conflict copy of it.
    pub path: String,
    pub index: u64,
    pub pos: u32,
    /// Seen only by the final sweep, after the faults were healed.
    pub late: bool,
}

#[derive(Default)]
struct Inner {
    writes: Vec<Write>,
    write_errors: u64,
    last_error: Option<String>,
}

#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

/// Counts for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub attempted: usize,
    pub acknowledged: usize,
    pub acknowledged_late: usize,
    pub abandoned: usize,
    /// Wiped with their node's disks, never acknowledged.
    pub wiped: usize,
    pub concurrent: usize,
    pub write_errors: u64,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a write that is now on `node`'s disk; returns its seq.
    pub fn record(
        &self,
        node: usize,
        id: &str,
        path: &str,
        root: &str,
        size: u64,
        concurrent: bool,
    ) -> usize {
        let mut g = self.lock();
        let seq = g.writes.len();
        g.writes.push(Write {
            seq,
            id: id.to_string(),
            node,
            path: path.to_string(),
            root: root.to_string(),
            size,
            concurrent,
            at: Instant::now(),
            ack: None,
            abandoned: false,
            wiped: false,
        });
        seq
    }

    /// Node `node`'s disks were wiped: marks its unacknowledged writes
    /// [`Write::wiped`]; returns how many.
    pub fn wipe(&self, node: usize) -> usize {
        let mut g = self.lock();
        let mut n = 0;
        for w in g.writes.iter_mut() {
            if w.node == node && w.ack.is_none() && !w.wiped {
                w.wiped = true;
                n += 1;
            }
        }
        n
    }

    /// A write the workload could not make (disk full, ...): not in the
    /// ledger, counted.
    pub fn write_failed(&self, err: String) {
        let mut g = self.lock();
        g.write_errors += 1;
        g.last_error = Some(err);
    }

    pub fn last_write_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Paths with unacknowledged, not abandoned writes on `node`, younger
    /// than `max_age` (all ages with `None`).
    pub fn pending_paths(&self, node: Option<usize>, max_age: Option<Duration>) -> Vec<String> {
        let g = self.lock();
        let mut out: Vec<String> = g
            .writes
            .iter()
            .filter(|w| node.is_none_or(|n| w.node == n))
            .filter(|w| w.ack.is_none() && !w.abandoned)
            .filter(|w| max_age.is_none_or(|a| w.at.elapsed() < a))
            .map(|w| w.path.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Matches the unacknowledged writes of `path` (on `node`, or on any
    /// node) against what the cluster holds: the path's history and the
    /// live entries of its directory (conflict copies). Returns how many
    /// writes became acknowledged.
    pub fn settle(
        &self,
        node: Option<usize>,
        path: &str,
        history: &[HistoryEntry],
        dir_entries: &[LsEntry],
        late: bool,
    ) -> usize {
        let mut g = self.lock();
        let idx: Vec<usize> = g
            .writes
            .iter()
            .filter(|w| w.path == path && node.is_none_or(|n| w.node == n))
            .map(|w| w.seq)
            .collect();
        let mut acked = 0;
        for &i in &idx {
            if g.writes[i].ack.is_some() {
                continue;
            }
            if let Some(a) = find_ack(&g.writes[i], history, dir_entries, late) {
                g.writes[i].ack = Some(a);
                g.writes[i].abandoned = false;
                acked += 1;
            }
        }
        // A write older than an acknowledged write of the same path by the
        // same node, and absent from the complete history: never committed.
        for &i in &idx {
            let w = &g.writes[i];
            if w.ack.is_some() || w.abandoned {
                continue;
            }
            let later_acked = idx.iter().any(|&j| {
                let o = &g.writes[j];
                o.seq > w.seq && o.node == w.node && o.ack.as_ref().is_some_and(|a| a.path == path)
            });
            if later_acked {
                g.writes[i].abandoned = true;
            }
        }
        acked
    }

    pub fn snapshot(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    pub fn counts(&self) -> Counts {
        let g = self.lock();
        let mut c = Counts {
            attempted: g.writes.len(),
            write_errors: g.write_errors,
            ..Counts::default()
        };
        for w in &g.writes {
            if let Some(a) = &w.ack {
                c.acknowledged += 1;
                if a.late {
                    c.acknowledged_late += 1;
                }
            }
            if w.abandoned {
                c.abandoned += 1;
            }
            if w.wiped && w.ack.is_none() && !w.abandoned {
                c.wiped += 1;
            }
            if w.concurrent {
                c.concurrent += 1;
            }
        }
        c
    }

    /// The acknowledged writes of `node` (all nodes with `None`).
    pub fn acked_count(&self, node: Option<usize>) -> usize {
        let g = self.lock();
        g.writes
            .iter()
            .filter(|w| w.ack.is_some() && node.is_none_or(|n| w.node == n))
            .count()
    }
}

fn find_ack(
    w: &Write,
    history: &[HistoryEntry],
    dir_entries: &[LsEntry],
    late: bool,
) -> Option<Ack> {
    let at_path = history.iter().find(|v| {
        v.state != STATE_DELETED
            && v.kind.as_deref() == Some("file")
            && v.root.as_deref() == Some(w.root.as_str())
            && v.size == Some(w.size)
    });
    if let Some(v) = at_path {
        return Some(Ack {
            path: w.path.clone(),
            index: v.index,
            pos: v.pos,
            late,
        });
    }
    dir_entries
        .iter()
        .filter(|e| e.path != w.path && is_path_or_copy(&e.path, &w.path))
        .find(|e| {
            e.kind == "file" && e.root.as_deref() == Some(w.root.as_str()) && e.size == w.size
        })
        .map(|e| Ack {
            path: e.path.clone(),
            index: e.index.unwrap_or(0),
            pos: e.pos.unwrap_or(0),
            late,
        })
}

/// The last write of every (node, path): what must survive whatever
/// happened to the earlier ones.
pub fn last_writes(writes: &[Write]) -> BTreeMap<(usize, String), &Write> {
    let mut out = BTreeMap::new();
    for w in writes {
        out.insert((w.node, w.path.clone()), w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(index: u64, root: &str, size: u64) -> HistoryEntry {
        HistoryEntry {
            index,
            pos: 1,
            time_ms: 0,
            origin: "0000000000000001".into(),
            kind: Some("file".into()),
            size: Some(size),
            root: Some(root.into()),
            mode: Some(0o644),
            mtime_ns: Some(0),
            holders: vec![],
            state: "committed".into(),
            current: false,
        }
    }

    fn entry(path: &str, root: &str, size: u64, index: u64) -> LsEntry {
        LsEntry {
            path: path.into(),
            kind: "file".into(),
            size,
            mode: 0o644,
            root: Some(root.into()),
            target: None,
            index: Some(index),
            pos: Some(1),
            time_ms: None,
            origin: None,
            mtime_ns: None,
            implicit: false,
        }
    }

    #[test]
    fn acks_by_history_and_by_conflict_copy_and_abandons_older() {
        let l = Ledger::default();
        l.record(0, "n0-1", "w0/a.dat", "r1", 10, false);
        l.record(0, "n0-2", "w0/a.dat", "r2", 11, false);
        l.record(0, "n0-3", "w0/a.dat", "r3", 12, false);
        l.record(1, "n1-1", "w0/a.dat", "r4", 13, true);
        // Nothing committed yet.
        assert_eq!(l.settle(Some(0), "w0/a.dat", &[], &[], false), 0);
        assert_eq!(l.pending_paths(Some(0), None), vec!["w0/a.dat".to_string()]);
        // r1 and r3 committed, r2 never was (superseded on disk first).
        let h = [version(5, "r1", 10), version(9, "r3", 12)];
        assert_eq!(l.settle(Some(0), "w0/a.dat", &h, &[], false), 2);
        let s = l.snapshot();
        assert_eq!(s[0].ack.as_ref().unwrap().index, 5);
        assert!(s[1].ack.is_none() && s[1].abandoned);
        assert_eq!(s[2].ack.as_ref().unwrap().path, "w0/a.dat");
        // Node 1's write lost the race: committed as a conflict copy.
        let copy = "w0/a.sync-conflict-20260101-000000-1.dat";
        let d = [
            entry("w0/a.dat", "r3", 12, 9),
            entry(copy, "r4", 13, 10),
            entry("w0/b.dat", "r4", 13, 3),
        ];
        assert_eq!(l.settle(Some(1), "w0/a.dat", &h, &d, true), 1);
        let s = l.snapshot();
        let a = s[3].ack.as_ref().unwrap();
        assert_eq!((a.path.as_str(), a.index, a.late), (copy, 10, true));
        let c = l.counts();
        assert_eq!(
            (
                c.attempted,
                c.acknowledged,
                c.acknowledged_late,
                c.abandoned,
                c.concurrent
            ),
            (4, 3, 1, 1, 1)
        );
        assert!(l.pending_paths(None, None).is_empty());
        let last = last_writes(&s);
        assert_eq!(last[&(0, "w0/a.dat".to_string())].id, "n0-3");
    }

    #[test]
    fn a_same_size_other_root_or_a_deletion_is_no_ack() {
        let l = Ledger::default();
        l.record(0, "n0-1", "p.dat", "r1", 10, false);
        let mut del = version(4, "r1", 10);
        del.state = STATE_DELETED.into();
        let h = [version(3, "rX", 10), del];
        assert_eq!(
            l.settle(None, "p.dat", &h, &[entry("p.dat", "rX", 10, 3)], false),
            0
        );
        assert_eq!(l.counts().acknowledged, 0);
    }
}
