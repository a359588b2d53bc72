//! The checker must catch what it claims to: each test breaks one
//! invariant in fabricated node views and expects exactly that finding.

use std::collections::BTreeMap;

use filesyncd::api::types::Status;

use super::checker::{check, conflict_copies, lost_writes, self_conflicts, settled};
use super::content::{self, Rng};
use super::ledger::{Ack, Ledger, Write};
use super::node::bytes_root;
use super::observe::{Committed, DiskFile, DiskScan, NodeView};

const ROOT: &str = "c0ffee";

fn status(in_sync: bool, cluster_root: &str) -> Status {
    serde_json::from_value(serde_json::json!({
        "node_id": "0000000000000001", "peer_id": "p", "state": "Follower",
        "leader": "0000000000000001", "term": 2, "last_log_index": 9, "applied_index": 9,
        "cluster_id": "c", "cluster_root": cluster_root, "members": [],
        "dir": "/d", "local_root": cluster_root, "in_sync": in_sync, "sync": null
    }))
    .unwrap()
}

/// A file's bytes for write `id` of `path`.
fn bytes(id: &str, path: &str, seed: u64) -> Vec<u8> {
    let mut p = vec![0u8; 200];
    Rng::new(seed).fill(&mut p);
    content::encode(id, path, &p)
}

struct World {
    ledger: Ledger,
    files: BTreeMap<String, Vec<u8>>,
    committed: BTreeMap<String, Committed>,
    next_index: u64,
}

impl World {
    fn new() -> World {
        World {
            ledger: Ledger::default(),
            files: BTreeMap::new(),
            committed: BTreeMap::new(),
            next_index: 10,
        }
    }

    /// Node `node` writes `path`; `commit_at` = where the cluster commits
    /// it (the path, a conflict copy) or nowhere; acknowledged if committed.
    fn write(&mut self, node: usize, path: &str, commit_at: Option<&str>) -> String {
        let seq = self.ledger.snapshot().len();
        let id = format!("n{node}-{seq:06}");
        let b = bytes(&id, path, seq as u64);
        let (root, size) = bytes_root(&b);
        self.ledger.record(node, &id, path, &root, size, false);
        if let Some(at) = commit_at {
            self.next_index += 1;
            let c = Committed {
                root: root.clone(),
                size,
                index: self.next_index,
                pos: 1,
            };
            self.committed.insert(at.to_string(), c);
            self.files.insert(at.to_string(), b);
            let hist = vec![filesyncd::api::files::types::HistoryEntry {
                index: self.next_index,
                pos: 1,
                time_ms: 0,
                origin: "0000000000000001".into(),
                kind: Some("file".into()),
                size: Some(size),
                root: Some(root),
                mode: Some(0o644),
                mtime_ns: Some(0),
                holders: vec![],
                state: "committed".into(),
                current: true,
            }];
            let entries: Vec<_> = self
                .committed
                .iter()
                .map(|(p, c)| filesyncd::api::files::types::LsEntry {
                    path: p.clone(),
                    kind: "file".into(),
                    size: c.size,
                    mode: 0o644,
                    root: Some(c.root.clone()),
                    target: None,
                    index: Some(c.index),
                    pos: Some(c.pos),
                    time_ms: None,
                    origin: None,
                    mtime_ns: None,
                    implicit: false,
                })
                .collect();
            let h: &[_] = if at == path { &hist } else { &[] };
            self.ledger.settle(Some(node), path, h, &entries, false);
        }
        id
    }

    fn writes(&self) -> Vec<Write> {
        self.ledger.snapshot()
    }

    /// A node holding exactly the committed files.
    fn view(&self, name: &str) -> NodeView {
        let mut disk = DiskScan::default();
        for (p, b) in &self.files {
            let (root, size) = bytes_root(b);
            disk.files.insert(
                p.clone(),
                DiskFile {
                    root,
                    size,
                    header: content::parse(b),
                },
            );
        }
        NodeView {
            name: name.into(),
            status: Ok(status(true, ROOT)),
            committed: Ok(self.committed.clone()),
            disk,
            verify: None,
        }
    }
}

fn kinds(v: &[super::checker::Violation]) -> Vec<&'static str> {
    let mut k: Vec<_> = v.iter().map(|x| x.kind).collect();
    k.dedup();
    k
}

/// Two nodes, overwrites, a concurrent edit kept as a conflict copy.
fn healthy() -> World {
    let mut w = World::new();
    w.write(0, "w0/a.dat", Some("w0/a.dat"));
    w.write(0, "w0/a.dat", Some("w0/a.dat"));
    w.write(1, "w1/b.dat", Some("w1/b.dat"));
    w.write(0, "shared/c0.dat", Some("shared/c0.dat"));
    w.write(
        1,
        "shared/c0.dat",
        Some("shared/c0.sync-conflict-20260101-000000-2.dat"),
    );
    w
}

#[test]
fn a_healthy_cluster_passes() {
    let w = healthy();
    let views = [w.view("node1"), w.view("node2")];
    assert_eq!(settled(&views).unwrap(), ROOT);
    let v = check(&w.writes(), &views);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(conflict_copies(&views), 1);
    assert_eq!(w.ledger.counts().acknowledged, 5);
}

#[test]
fn a_truncated_file_is_partial() {
    let w = healthy();
    let mut bad = w.view("node2");
    let f = bad.disk.files.get_mut("w1/b.dat").unwrap();
    let b = &w.files["w1/b.dat"];
    f.header = content::parse(&b[..b.len() - 1]);
    let v = check(&w.writes(), &[w.view("node1"), bad]);
    // A partial copy of the last write is also that write missing there.
    assert_eq!(kinds(&v), ["partial", "lost-last"]);
    assert_eq!(v[0].node.as_deref(), Some("node2"));
}

#[test]
fn a_leftover_temp_blocks_settling_and_is_reported() {
    let w = healthy();
    let mut bad = w.view("node1");
    bad.disk.temps.push("w0/.filesyncd-tmp-1234".into());
    assert!(settled(&[bad.clone()]).is_err());
    assert!(kinds(&check(&w.writes(), &[bad])).contains(&"temp-left"));
}

#[test]
fn not_in_sync_or_another_root_is_not_settled() {
    let w = healthy();
    let mut a = w.view("node1");
    a.status = Ok(status(false, ROOT));
    assert!(settled(&[a, w.view("node2")])
        .unwrap_err()
        .contains("not in sync"));
    let mut b = w.view("node2");
    b.status = Ok(status(true, "beef"));
    assert!(settled(&[w.view("node1"), b]).is_err());
}

#[test]
fn an_acknowledged_write_replaced_by_an_older_version_is_lost() {
    let w = healthy();
    let mut writes = w.writes();
    // Pretend the cluster acknowledged the first write later than it holds.
    let last = writes
        .iter_mut()
        .find(|x| x.path == "w0/a.dat" && x.seq == 0)
        .unwrap();
    last.ack = Some(Ack {
        path: "w0/a.dat".into(),
        index: 999,
        pos: 1,
        late: false,
    });
    let v = check(&writes, &[w.view("node1"), w.view("node2")]);
    assert_eq!(kinds(&v), ["lost-ack"]);
    assert_eq!(lost_writes(&v), 1);
}

#[test]
fn a_last_write_missing_on_one_node_is_lost_even_unacknowledged() {
    let mut w = healthy();
    // Node 1 writes, the cluster never commits it: still on node 1's disk
    // would be fine; gone from node 2's (never synced) is a loss.
    let id = w.write(1, "w1/b.dat", None);
    let mut n1 = w.view("node1");
    let b = bytes(&id, "w1/b.dat", 5);
    let (root, size) = bytes_root(&b);
    n1.disk.files.insert(
        "w1/b.dat".into(),
        DiskFile {
            root,
            size,
            header: content::parse(&b),
        },
    );
    let v = check(&w.writes(), &[n1, w.view("node2")]);
    let lost: Vec<_> = v.iter().filter(|x| x.kind == "lost-last").collect();
    assert_eq!(lost.len(), 1, "{v:?}");
    assert_eq!(lost[0].node.as_deref(), Some("node2"));
    assert!(
        kinds(&v).contains(&"tree"),
        "node 1's disk differs from its committed tree"
    );
    assert_eq!(lost_writes(&v), 1);
}

#[test]
fn a_lost_concurrent_edit_is_caught() {
    let mut w = healthy();
    w.committed
        .remove("shared/c0.sync-conflict-20260101-000000-2.dat");
    w.files
        .remove("shared/c0.sync-conflict-20260101-000000-2.dat");
    let v = check(&w.writes(), &[w.view("node1"), w.view("node2")]);
    assert!(kinds(&v).contains(&"lost-last"), "{v:?}");
    assert!(kinds(&v).contains(&"lost-ack"), "{v:?}");
}

#[test]
fn strangers_inside_and_outside_the_root_are_reported() {
    let w = healthy();
    let mut n = w.view("node1");
    let b = bytes("n7-000001", "w7/x.dat", 1);
    let (root, size) = bytes_root(&b);
    n.committed.as_mut().unwrap().insert(
        "w0/elsewhere.dat".into(),
        Committed {
            root: root.clone(),
            size,
            index: 50,
            pos: 1,
        },
    );
    n.disk.files.insert(
        "w0/elsewhere.dat".into(),
        DiskFile {
            root,
            size,
            header: content::parse(&b),
        },
    );
    n.disk.outside.push("/x/fs/stray".into());
    n.disk.odd.push("w0/link".into());
    let k = kinds(&check(&w.writes(), &[n]));
    for want in ["misplaced", "unknown", "outside-root", "odd"] {
        assert!(k.contains(&want), "{want} missing from {k:?}");
    }
}

#[test]
fn a_conflict_copy_of_a_single_writer_path_is_a_self_conflict() {
    let w = healthy();
    assert!(self_conflicts(&w.writes(), &[w.view("node1")]).is_empty());
    // Node 0's newer write of its own path set aside as a conflict copy,
    // the path holding its older one.
    let mut w = World::new();
    w.write(0, "w0/a.dat", Some("w0/a.dat"));
    w.write(
        0,
        "w0/a.dat",
        Some("w0/a.sync-conflict-20260101-000000-1.dat"),
    );
    let views = [w.view("node1"), w.view("node2")];
    assert!(check(&w.writes(), &views).is_empty());
    let s = self_conflicts(&w.writes(), &views);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(s[0].contains("the path went back"), "{s:?}");
}

#[test]
fn an_unacknowledged_write_wiped_with_its_disk_is_excused_an_acknowledged_one_is_not() {
    let mut w = healthy();
    // Node 1 writes twice, neither committed, then loses its disks.
    w.write(1, "w1/b.dat", None);
    w.write(1, "w1/new.dat", None);
    assert_eq!(w.ledger.wipe(1), 2);
    assert_eq!(w.ledger.wipe(1), 0, "already marked");
    let v = check(&w.writes(), &[w.view("node1"), w.view("node2")]);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(w.ledger.counts().wiped, 2);
    // A write of node 0 (not wiped) that vanished is still lost.
    w.write(0, "w0/z.dat", None);
    let v = check(&w.writes(), &[w.view("node1"), w.view("node2")]);
    assert_eq!(kinds(&v), vec!["lost-last"], "{v:?}");
    // An acknowledged write is never marked: it must survive the wipe.
    let mut w = healthy();
    assert_eq!(w.ledger.wipe(1), 0);
    w.committed.remove("w1/b.dat");
    w.files.remove("w1/b.dat");
    let v = check(&w.writes(), &[w.view("node1"), w.view("node2")]);
    assert!(kinds(&v).contains(&"lost-ack"), "{v:?}");
}
