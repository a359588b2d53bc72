//! Syncing a directory between real `filesyncd` processes on loopback.
//!
//! Every test waits for convergence: all nodes' synced trees equal (paths,
//! kinds, file bytes, symlink targets, permission bits; the marker aside)
//! and every node reporting `in_sync` with the same cluster root. Nothing
//! asserts on durations; deadlines are generous.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use filesyncd_systests::tree::{converge, converge_within, in_sync, short, status_json, Entry};
use filesyncd_systests::{random_bytes, serial, wait_for, Cluster, Node, DEADLINE};

#[test]
fn t10_create_modify_delete_rename_across_three_nodes() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();
    let d1 = c.node(1).dir();

    // Create on node 0: nested dirs, an empty dir, an empty file, a file
    // larger than the chunk maximum, a symlink, an executable.
    fs::create_dir_all(d0.join("a/b/c")).unwrap();
    fs::create_dir_all(d0.join("empty/dir")).unwrap();
    fs::write(d0.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(d0.join("empty.txt"), b"").unwrap();
    fs::write(d0.join("big.bin"), random_bytes(3 << 20, 7)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", d0.join("link")).unwrap();
    fs::write(d0.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(d0.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let t = converge(&c, &[0, 1, 2]);
    assert_eq!(t.get("empty.txt"), Some(&Entry::File(0o644, vec![])));
    assert!(matches!(t.get("empty/dir"), Some(Entry::Dir(_))));
    assert_eq!(
        t.get("link"),
        Some(&Entry::Link("a/b/c/deep.txt".to_string()))
    );
    assert!(matches!(t.get("run.sh"), Some(Entry::File(0o755, _))));
    assert!(matches!(t.get("big.bin"), Some(Entry::File(_, b)) if b.len() == 3 << 20));

    // Modify on node 1 (a 1-byte insert in the big file), delete and rename.
    let mut big = fs::read(d1.join("big.bin")).unwrap();
    big.insert(big.len() / 2, b'!');
    fs::write(d1.join("big.bin"), &big).unwrap();
    fs::remove_file(d1.join("empty.txt")).unwrap();
    fs::rename(d1.join("a/b/c/deep.txt"), d1.join("a/moved.txt")).unwrap();
    fs::remove_dir_all(d1.join("empty")).unwrap();
    let t = converge(&c, &[0, 1, 2]);
    assert!(matches!(t.get("big.bin"), Some(Entry::File(_, b)) if *b == big));
    assert!(!t.contains_key("empty.txt") && !t.contains_key("empty/dir"));
    assert_eq!(
        t.get("a/moved.txt"),
        Some(&Entry::File(0o644, b"deep\n".to_vec()))
    );
    assert!(!t.contains_key("a/b/c/deep.txt"));
    // No temp file is left anywhere.
    for i in 0..3 {
        let tmp = walk_names(&c.node(i).dir())
            .into_iter()
            .filter(|n| n.contains(".filesyncd-tmp"))
            .collect::<Vec<_>>();
        assert!(tmp.is_empty(), "node {i} has temp files {tmp:?}");
    }
}

/// Chunk bytes node `i` received from peers since it started.
fn bytes_fetched(n: &Node) -> u64 {
    status_json(n)
        .and_then(|v| v["sync"]["bytes_fetched"].as_u64())
        .expect("status reports sync.bytes_fetched")
}

#[test]
fn t15_rename_moves_no_bytes_and_an_insert_moves_few() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();
    let size = 8 << 20;
    let mut big = random_bytes(size, 11);
    fs::write(d0.join("big.bin"), &big).unwrap();
    converge(&c, &[0, 1, 2]);
    let first = bytes_fetched(c.node(2));
    assert!(
        first >= size as u64,
        "the new file crossed the network: {first}"
    );

    // A rename (into another directory) reuses every local chunk.
    fs::create_dir(d0.join("moved")).unwrap();
    fs::rename(d0.join("big.bin"), d0.join("moved/big.bin")).unwrap();
    let t = converge(&c, &[0, 1, 2]);
    assert!(matches!(t.get("moved/big.bin"), Some(Entry::File(_, b)) if *b == big));
    let renamed = bytes_fetched(c.node(2)) - first;
    eprintln!("figure: rename of an {size}-byte file fetched {renamed} chunk bytes on a peer");
    assert_eq!(renamed, 0, "a rename fetched chunk bytes");

    // A 1-byte insert in the middle: only the chunks around it move.
    big.insert(size / 2, b'!');
    fs::write(d0.join("moved/big.bin"), &big).unwrap();
    let t = converge(&c, &[0, 1, 2]);
    assert!(matches!(t.get("moved/big.bin"), Some(Entry::File(_, b)) if *b == big));
    let inserted = bytes_fetched(c.node(2)) - first - renamed;
    eprintln!(
        "figure: a 1-byte insert in an {size}-byte file fetched {inserted} chunk bytes on a peer"
    );
    assert!(inserted > 0, "the changed chunk must be fetched");
    assert!(
        inserted < (size as u64) / 8,
        "a 1-byte insert fetched {inserted} of {size} bytes"
    );
}

fn walk_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn t20_concurrent_edits_leave_a_winner_and_a_conflict_copy_everywhere() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    fs::write(c.node(0).dir().join("doc.txt"), b"base\n").unwrap();
    converge(&c, &[0, 1, 2]);
    // Both edit the same base version before either sees the other's.
    fs::write(c.node(1).dir().join("doc.txt"), b"edit from node 1\n").unwrap();
    fs::write(c.node(2).dir().join("doc.txt"), b"edit from node 2\n").unwrap();
    let t = converge(&c, &[0, 1, 2]);
    let contents: Vec<&Vec<u8>> = t
        .iter()
        .filter(|(p, _)| p.starts_with("doc"))
        .filter_map(|(_, e)| match e {
            Entry::File(_, b) => Some(b),
            _ => None,
        })
        .collect();
    let edits = [
        b"edit from node 1\n".to_vec(),
        b"edit from node 2\n".to_vec(),
    ];
    // Both edits survive: one as doc.txt, the other as a conflict copy
    // (unless one node saw the other's version before writing, then the
    // later write simply wins; the test writes both at once to avoid that).
    for e in &edits {
        assert!(
            contents.contains(&e),
            "edit {:?} lost; tree: {:?}",
            String::from_utf8_lossy(e),
            short(&t)
        );
    }
    assert!(
        t.keys().any(|p| p.contains(".sync-conflict-")),
        "a conflict copy exists: {:?}",
        short(&t)
    );
}

#[test]
fn t30_kill9_follower_and_leader_then_catch_up() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let s = c.wait_converged(3, 3).unwrap();
    let leader = s.leader.clone().unwrap();
    let node_of = |c: &Cluster, id: &str| {
        (0..3)
            .find(|i| {
                c.node(*i)
                    .status()
                    .map(|s| s.node_id == id)
                    .unwrap_or(false)
            })
            .unwrap()
    };
    let l = node_of(&c, &leader);
    let f = (0..3).find(|i| *i != l).unwrap();
    let other = (0..3).find(|i| *i != l && *i != f).unwrap();

    // A follower dies; the other two keep committing (a majority).
    c.node_mut(f).kill9();
    fs::write(c.node(l).dir().join("while-f-down.txt"), b"1\n").unwrap();
    fs::write(c.node(other).dir().join("also.txt"), b"2\n").unwrap();
    converge(&c, &[l, other]);
    c.node_mut(f).restart().unwrap();
    let t = converge(&c, &[0, 1, 2]);
    assert!(t.contains_key("while-f-down.txt") && t.contains_key("also.txt"));

    // The leader dies; the others elect a new one and keep committing.
    c.node_mut(l).kill9();
    fs::write(c.node(f).dir().join("while-leader-down.txt"), b"3\n").unwrap();
    converge(&c, &[f, other]);
    c.node_mut(l).restart().unwrap();
    let t = converge(&c, &[0, 1, 2]);
    assert!(t.contains_key("while-leader-down.txt"));
}

#[test]
fn t40_ten_thousand_small_files() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();
    let n: usize = std::env::var("FILESYNCD_TEST_MANY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    for i in 0..n {
        let dir = d0.join(format!("d{:02}", i % 100));
        if i < 100 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("f{i:05}")), format!("file {i}\n")).unwrap();
    }
    let t = converge_within(&c, &[0, 1, 2], DEADLINE * 4);
    assert_eq!(
        t.values().filter(|e| matches!(e, Entry::File(..))).count(),
        n
    );
}

/// Issue 12: a change far larger than one offer request (256 items), one
/// peer's offer memory (4,096) and one Raft entry (the proposal is split
/// into entries of bounded bytes): 100,000 files of 0-2 KiB in 1,000
/// directories appear on node 0 in ONE rename, so one step scans, offers
/// and proposes all of them. Before, a change of this shape never
/// converged (one 32 MB proposal over the RPC cap, retried forever).
/// `FILESYNCD_TEST_SCALE` sets the count.
#[test]
fn t42_a_hundred_thousand_files_in_one_rename() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let n: usize = std::env::var("FILESYNCD_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // Staged beside the synced directory (same file system), then renamed in.
    let stage = c.root().join("stage-t42");
    let tree = stage.join("big");
    let mut sizes = 0u64;
    for i in 0..n {
        let dir = tree.join(format!("d{:03}", i % 1000));
        if i < 1000 {
            fs::create_dir_all(&dir).unwrap();
        }
        let len = (i * 7919) % 2049;
        let mut body = format!("file {i} ").into_bytes();
        body.resize(len, b'x');
        sizes += len as u64;
        fs::write(dir.join(format!("f{i:06}")), body).unwrap();
    }
    fs::rename(&tree, c.node(0).dir().join("big")).unwrap();
    let t = converge_within(&c, &[0, 1, 2], DEADLINE * 10);
    let files: Vec<&Entry> = t
        .iter()
        .filter(|(p, _)| p.starts_with("big/"))
        .map(|(_, e)| e)
        .filter(|e| matches!(e, Entry::File(..)))
        .collect();
    assert_eq!(files.len(), n);
    let bytes: u64 = files
        .iter()
        .map(|e| match e {
            Entry::File(_, b) => b.len() as u64,
            _ => 0,
        })
        .sum();
    assert_eq!(bytes, sizes);
}

#[test]
fn t50_missing_marker_propagates_no_deletions() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    for i in 0..20 {
        fs::write(c.node(0).dir().join(format!("keep{i}.txt")), b"x\n").unwrap();
    }
    converge(&c, &[0, 1, 2]);
    // Node 2's root is "emptied": marker and files gone (an unmounted disk).
    let d2 = c.node(2).dir();
    for e in fs::read_dir(&d2).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    wait_for("node 2 to halt", DEADLINE, || {
        Ok(status_json(c.node(2)).and_then(|v| {
            let halted = v.get("sync")?.get("halted")?;
            (!halted.is_null()).then_some(())
        }))
    })
    .unwrap();
    // The others still sync (a new file reaches node 1) and lost nothing.
    fs::write(c.node(0).dir().join("after.txt"), b"y\n").unwrap();
    wait_for("after.txt on node 1", DEADLINE, || {
        Ok(c.node(1).dir().join("after.txt").exists().then_some(()))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..2 {
        for k in 0..20 {
            assert!(
                c.node(i).dir().join(format!("keep{k}.txt")).exists(),
                "node {i} lost keep{k}.txt"
            );
        }
    }
}

#[test]
fn t60_a_file_of_256_mib() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let size = 256 << 20;
    // Staged outside the synced tree and renamed in: the watcher sees one
    // whole file, not a file being written.
    let stage = c.node(0).dir().parent().unwrap().join("stage.bin");
    let data = random_bytes(size, 23);
    fs::write(&stage, &data).unwrap();
    fs::rename(&stage, c.node(0).dir().join("huge.bin")).unwrap();
    drop(data);
    wait_for("the 256 MiB file on every node", DEADLINE * 2, || {
        for i in 0..3 {
            let v = status_json(c.node(i));
            if !v.as_ref().is_some_and(in_sync) {
                return Ok(None);
            }
            let len = fs::metadata(c.node(i).dir().join("huge.bin")).map_or(0, |m| m.len());
            if len != size as u64 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .unwrap();
    let want = random_bytes(size, 23);
    for i in 1..3 {
        let got = fs::read(c.node(i).dir().join("huge.bin")).unwrap();
        assert!(got == want, "node {i} holds other bytes");
    }
}

/// `--no-bulk`: no bulk endpoint, chunks over the swarm only, and status
/// says so. The file (32 MiB) is chunked on every core at its origin; its
/// delete keeps each peer's copy by a hard link in the staging area (the
/// same inode, no byte written again).
#[test]
fn t61_no_bulk_endpoint_and_a_large_delete_kept_by_link() {
    use std::os::unix::fs::MetadataExt;
    let _g = serial();
    let mut c = Cluster::builder().flags(&["--no-bulk"]).start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    for i in 0..3 {
        let v = status_json(c.node(i)).expect("status");
        assert!(v["bulk"]["addr"].is_null(), "node {i}: {}", v["bulk"]);
    }
    let size = 32 << 20;
    let stage = c.node(0).dir().parent().unwrap().join("stage.bin");
    fs::write(&stage, random_bytes(size, 61)).unwrap();
    fs::rename(&stage, c.node(0).dir().join("big.bin")).unwrap();
    let on_every_node = |c: &Cluster, want: Option<u64>| {
        for i in 0..3 {
            if !status_json(c.node(i)).as_ref().is_some_and(in_sync) {
                return false;
            }
            let len = fs::metadata(c.node(i).dir().join("big.bin"))
                .ok()
                .map(|m| m.len());
            if len != want {
                return false;
            }
        }
        true
    };
    wait_for("the 32 MiB file on every node", DEADLINE, || {
        Ok(on_every_node(&c, Some(size as u64)).then_some(()))
    })
    .unwrap();
    let want = random_bytes(size, 61);
    let mut inodes = Vec::new();
    for i in 1..3 {
        let path = c.node(i).dir().join("big.bin");
        assert!(
            fs::read(&path).unwrap() == want,
            "node {i} holds other bytes"
        );
        inodes.push(fs::metadata(&path).unwrap().ino());
        let v = status_json(c.node(i)).expect("status");
        assert_eq!(v["bulk"]["bytes_bulk"], 0, "node {i}: {}", v["bulk"]);
    }
    fs::remove_file(c.node(0).dir().join("big.bin")).unwrap();
    wait_for("the delete on every node", DEADLINE, || {
        Ok(on_every_node(&c, None).then_some(()))
    })
    .unwrap();
    for (i, ino) in (1..3).zip(inodes) {
        let stage_dir = c.node(i).dir().join(".filesyncd-stage");
        let kept: Vec<_> = fs::read_dir(&stage_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.ino() == ino && m.len() == size as u64)
            .collect();
        assert_eq!(
            kept.len(),
            1,
            "node {i}: the deleted file's inode is not kept in {stage_dir:?}"
        );
    }
}

#[test]
fn t70_a_fourth_node_joins_while_files_are_written() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            fs::create_dir_all(d0.join("w")).unwrap();
            let mut k = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(d0.join(format!("w/{k}.txt")), format!("write {k}\n")).unwrap();
                k += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            k
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let i = c.add_node().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 10, "the writer ran during the join");
    c.wait_converged(4, 4).unwrap();
    let t = converge(&c, &[0, 1, 2, i]);
    for k in 0..written {
        assert_eq!(
            t.get(&format!("w/{k}.txt")),
            Some(&Entry::File(0o644, format!("write {k}\n").into_bytes())),
            "w/{k}.txt on every node"
        );
    }
}

/// iptables rules that cut node pairs apart on loopback; removed on drop.
struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    /// Drops every UDP packet between `a` and each of `others` (both ways).
    /// `None` when iptables is not usable here (not root).
    ///
    /// Cutting the nodes' own addresses is not enough: a daemon also dials
    /// from sockets bound to 0.0.0.0 (autonat's dial-back asks for a new
    /// port), whose packets to `127.0.x.y` leave from 127.0.0.1, and a
    /// connection made that way carries Raft and chunks like any other. So
    /// 127.0.0.1 is cut from every node on either side as well; the
    /// majority then talks over its nodes' own addresses only, which is all
    /// it needs.
    fn cut(a: &Node, others: &[&Node]) -> Option<Partition> {
        let ip = |n: &Node| n.api().split(':').next().unwrap().to_string();
        let tag = format!("fsd-systest-{}", std::process::id());
        let mut p = Partition { rules: Vec::new() };
        let wildcard = "127.0.0.1".to_string();
        let mut pairs = Vec::new();
        for o in others {
            pairs.extend([(ip(a), ip(o)), (ip(o), ip(a))]);
            pairs.extend([(wildcard.clone(), ip(o)), (ip(o), wildcard.clone())]);
        }
        pairs.extend([(wildcard.clone(), ip(a)), (ip(a), wildcard.clone())]);
        pairs.sort();
        pairs.dedup();
        for (src, dst) in pairs {
            let rule: Vec<String> = [
                "INPUT",
                "-i",
                "lo",
                "-p",
                "udp",
                "-s",
                &src,
                "-d",
                &dst,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let ok = std::process::Command::new("iptables")
                .arg("-I")
                .args(&rule)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None; // p's drop removes what was added
            }
            p.rules.push(rule);
        }
        Some(p)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let _ = std::process::Command::new("iptables")
                .arg("-D")
                .args(&rule)
                .status();
        }
    }
}

#[test]
fn t80_a_partitioned_minority_keeps_its_edits_until_the_heal() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let (d0, d2) = (c.node(0).dir(), c.node(2).dir());
    fs::write(d0.join("shared.txt"), b"v0\n").unwrap();
    converge(&c, &[0, 1, 2]);

    let Some(cut) = Partition::cut(c.node(2), &[c.node(0), c.node(1)]) else {
        // CI sets FSD_CHAOS_REQUIRE=1: there a partition that cannot be
        // made is a failure, never a pass.
        assert_ne!(
            std::env::var("FSD_CHAOS_REQUIRE").as_deref(),
            Ok("1"),
            "iptables is not usable, and FSD_CHAOS_REQUIRE=1 asks for the partition test"
        );
        eprintln!("skipped: iptables is not usable (needs root)");
        return;
    };
    // The minority (node 2) edits a shared path and adds its own file...
    fs::write(d2.join("shared.txt"), b"minority\n").unwrap();
    fs::write(d2.join("minority-only.txt"), b"from the minority\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // ...while the majority edits the same path and commits.
    fs::write(d0.join("shared.txt"), b"majority\n").unwrap();
    fs::write(d0.join("majority-only.txt"), b"from the majority\n").unwrap();
    converge(&c, &[0, 1]);
    assert!(
        !d0.join("minority-only.txt").exists(),
        "the minority committed nothing while cut off"
    );
    let st = status_json(c.node(2)).expect("the minority answers status");
    assert!(!in_sync(&st), "the minority's edits wait: {st}");
    assert_eq!(fs::read(d2.join("shared.txt")).unwrap(), b"minority\n");

    drop(cut);
    let t = converge(&c, &[0, 1, 2]);
    assert_eq!(
        t.get("shared.txt"),
        Some(&Entry::File(0o644, b"majority\n".to_vec())),
        "the committed edit wins"
    );
    assert_eq!(
        t.get("minority-only.txt"),
        Some(&Entry::File(0o644, b"from the minority\n".to_vec()))
    );
    assert!(t.contains_key("majority-only.txt"));
    let copies: Vec<_> = t
        .iter()
        .filter(|(p, _)| p.starts_with("shared") && p.contains(".sync-conflict-"))
        .collect();
    assert!(
        copies
            .iter()
            .any(|(_, e)| **e == Entry::File(0o644, b"minority\n".to_vec())),
        "the minority's edit is a conflict copy everywhere: {:?}",
        short(&t)
    );
}

/// Bytes of the blobs in a node's version store (`<data>/sync/chunks/blobs`).
fn blob_bytes(n: &Node) -> u64 {
    fn walk(p: &Path) -> u64 {
        match fs::read_dir(p) {
            Ok(rd) => rd
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum(),
            Err(_) => 0,
        }
    }
    walk(&n.data().join("sync/chunks/blobs"))
}

/// Bytes of the staged versions of node `n` (`.filesyncd-stage`, no `.part`).
fn staged_bytes(n: &Node) -> u64 {
    fs::read_dir(n.dir().join(".filesyncd-stage"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".part"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn t90_retention_drops_replaced_content_from_the_version_store() {
    let _g = serial();
    let mut c = Cluster::builder()
        .flags(&["--keep-versions", "2", "--gc-interval", "2"])
        .start(3)
        .unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();
    let size = 2 << 20;
    // Three different contents (`random_bytes` ignores a seed's low bit).
    for seed in [2, 4, 6] {
        fs::write(d0.join("doc.bin"), random_bytes(size, seed)).unwrap();
        converge(&c, &[0, 1, 2]);
    }
    // Peers replaced doc.bin twice: the first two contents went into their
    // version stores. Retention keeps 2 versions: v3 (on disk) and v2 (a
    // blob); v1's chunks must go at the next sweep, v2's must stay.
    let hist = c.node(1).cli_json(&["history", "doc.bin"]).unwrap();
    assert_eq!(hist["versions"].as_array().map(Vec::len), Some(2), "{hist}");
    for i in [1, 2] {
        let n = c.node(i);
        let (freed, held) = wait_for("the replaced version swept", DEADLINE, || {
            let freed = status_json(n)
                .and_then(|v| v["sync"]["blob_bytes_freed"].as_u64())
                .unwrap_or(0);
            // The version store: blobs, and old versions of 1 MiB or more
            // kept whole by a hard link in the staging area (a write that
            // replaced most of them).
            let held = blob_bytes(n) + staged_bytes(n);
            // v2's content stays (about one version's worth); v1's goes,
            // and so do the blobs of v3 fetched before it was placed (a
            // live file holds them now).
            let swept = held < 2 * size as u64;
            Ok(swept.then_some((freed, held)))
        })
        .unwrap_or_else(|e| {
            let log = n.log();
            let sweeps: Vec<&str> = log.lines().filter(|l| l.contains("swept")).collect();
            panic!("node {i}: {e:?}; sweep log lines: {sweeps:#?}")
        });
        eprintln!(
            "figure: node {i} swept {freed} blob bytes; its version store holds {held} bytes"
        );
        assert!(
            held >= size as u64 / 2,
            "node {i}: v2 swept: {held} bytes left"
        );
    }
    // The older version retention keeps can still be restored, byte for
    // byte, from the version store of a peer.
    let v2 = &hist["versions"][0];
    let v2 = format!("{}.{}", v2["index"], v2["pos"]);
    let out = c.node(2).cli(&["restore", "doc.bin", "--version", &v2]);
    assert!(out.ok(), "{out:?}");
    let want = random_bytes(size, 4);
    wait_for("the restored version everywhere", DEADLINE, || {
        let t = converge(&c, &[0, 1, 2]);
        Ok(matches!(t.get("doc.bin"), Some(Entry::File(_, b)) if *b == want).then_some(()))
    })
    .unwrap();
}
