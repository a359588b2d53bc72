//! Bounds a peer or a user can hit, between real `filesyncd` processes on
//! loopback: the max file size, and a tree bomb offered by a member.

use std::fs;
use std::path::Path;

use filesyncd_systests::tree::status_json;
use filesyncd_systests::{random_bytes, serial, wait_for, Cluster, Node, DEADLINE};

/// Writes `data` at `rel` under `dir` by a rename (the watcher sees one
/// whole file).
fn put(dir: &Path, rel: &str, data: &[u8]) {
    let stage = dir.parent().unwrap().join(format!("stage-{rel}"));
    fs::write(&stage, data).unwrap();
    fs::rename(&stage, dir.join(rel)).unwrap();
}

/// The files a node's status lists as held back: (path, size, local).
fn held_back(n: &Node) -> Vec<(String, u64, bool)> {
    let Some(v) = status_json(n) else {
        return Vec::new();
    };
    v.pointer("/sync/held_back_files")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|f| {
                    Some((
                        f.get("path")?.as_str()?.to_owned(),
                        f.get("size")?.as_u64()?,
                        f.get("local")?.as_bool()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has(dir: &Path, rel: &str, data: &[u8]) -> bool {
    fs::read(dir.join(rel)).is_ok_and(|d| d == data)
}

#[test]
fn files_over_the_max_file_size_are_held_back_listed_and_never_deleted() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    // Node 2 syncs files of at most 1 MiB.
    {
        let n = c.node_mut(2);
        n.stop().unwrap();
        let mut args = n.args().to_vec();
        args.extend(["--max-file-size".to_string(), "1MiB".to_string()]);
        n.set_args(args);
        n.start().unwrap();
        n.wait_healthy().unwrap();
    }
    let (d0, d1, d2) = (c.node(0).dir(), c.node(1).dir(), c.node(2).dir());

    // A committed version over node 2's max is not fetched there, and
    // status says so; the others sync it (node 2's refusal of the offer
    // does not hold up the quorum of the two others).
    let big = random_bytes(2 << 20, 7);
    put(&d0, "big.bin", &big);
    fs::write(d0.join("small.txt"), b"small").unwrap();
    wait_for("big.bin on node 1, small.txt on node 2", DEADLINE, || {
        Ok((has(&d1, "big.bin", &big) && has(&d2, "small.txt", b"small")).then_some(()))
    })
    .unwrap();
    wait_for("node 2 to list big.bin as not fetched", DEADLINE, || {
        Ok(held_back(c.node(2))
            .contains(&("big.bin".into(), 2 << 20, false))
            .then_some(()))
    })
    .unwrap();
    assert!(!d2.join("big.bin").exists());
    let text = c.node(2).cli(&["status"]);
    assert!(
        text.stdout.contains("HELD BACK") && text.stdout.contains("big.bin"),
        "{}",
        text.stdout
    );

    // A file over the max written on node 2 is held back: never proposed,
    // never deleted, listed.
    let mine = random_bytes(3 << 20, 8);
    put(&d2, "mine.bin", &mine);
    wait_for("node 2 to list mine.bin as held back", DEADLINE, || {
        Ok(held_back(c.node(2))
            .contains(&("mine.bin".into(), 3 << 20, true))
            .then_some(()))
    })
    .unwrap();
    // A synced file that grows past the max on node 2: the committed
    // version stays everywhere else, node 2 keeps its file.
    fs::write(d0.join("grow.txt"), b"v1").unwrap();
    wait_for("grow.txt on node 2", DEADLINE, || {
        Ok(has(&d2, "grow.txt", b"v1").then_some(()))
    })
    .unwrap();
    let grown = random_bytes(2 << 20, 9);
    put(&d2, "grow.txt", &grown);
    wait_for("node 2 to list grow.txt as held back", DEADLINE, || {
        Ok(held_back(c.node(2))
            .iter()
            .any(|(p, _, local)| p == "grow.txt" && *local)
            .then_some(()))
    })
    .unwrap();
    // A later change of node 2 reaches node 0: everything before it was
    // stepped over by then.
    fs::write(d2.join("after.txt"), b"after").unwrap();
    wait_for("after.txt on node 0", DEADLINE, || {
        Ok(has(&d0, "after.txt", b"after").then_some(()))
    })
    .unwrap();
    assert!(
        !d0.join("mine.bin").exists(),
        "a held-back file was proposed"
    );
    assert!(
        has(&d0, "grow.txt", b"v1"),
        "a held-back file replaced the committed one"
    );
    assert!(has(&d1, "grow.txt", b"v1"));
    assert!(has(&d2, "mine.bin", &mine), "node 2 lost its file");
    assert!(has(&d2, "grow.txt", &grown), "node 2 lost its file");

    // Back under the max, the file syncs and leaves the list.
    let smaller = random_bytes(100 << 10, 10);
    put(&d2, "mine.bin", &smaller);
    wait_for("the smaller mine.bin on node 0", DEADLINE, || {
        Ok(has(&d0, "mine.bin", &smaller).then_some(()))
    })
    .unwrap();
    wait_for("mine.bin to leave node 2's list", DEADLINE, || {
        Ok((!held_back(c.node(2)).iter().any(|f| f.0 == "mine.bin")).then_some(()))
    })
    .unwrap();
    let held: Vec<String> = held_back(c.node(2)).into_iter().map(|f| f.0).collect();
    assert_eq!(held, vec!["big.bin".to_string(), "grow.txt".to_string()]);
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_tree_bomb_offered_by_a_member_is_refused_and_sync_goes_on() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    // Node 0 turns rogue (a test build's misbehaviour, `rogue.rs`): with
    // its next offers it offers two tree bombs to every other voter, a few
    // KB of nodes claiming 64 PiB, and 16 MiB in 16 Mi chunks.
    {
        let n = c.node_mut(0);
        n.stop().unwrap();
        n.set_env(&[("FILESYNCD_TEST_ROGUE_OFFERS", "1")]);
        n.start().unwrap();
        n.wait_healthy().unwrap();
    }
    c.wait_converged(3, 3).unwrap();
    let (d0, d1, d2) = (c.node(0).dir(), c.node(1).dir(), c.node(2).dir());
    let honest = random_bytes(300 << 10, 11);
    put(&d0, "honest.bin", &honest);
    wait_for("honest.bin on nodes 1 and 2", DEADLINE, || {
        Ok((has(&d1, "honest.bin", &honest) && has(&d2, "honest.bin", &honest)).then_some(()))
    })
    .unwrap();
    // Both victims answered both bombs with a refusal (the build has the
    // rogue: without it there is no such line and this fails). A round
    // whose pull met a connection lost at start may end unsettled; another
    // round follows.
    let victims: Vec<String> = (1..3)
        .map(|i| c.node(i).status().unwrap().node_id)
        .collect();
    let lines = wait_for(
        "the rogue's log of both refusals by each victim",
        DEADLINE,
        || {
            let log = c.node(0).log();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("rogue: tree bombs answered"))
                .map(str::to_owned)
                .collect();
            let refused_by = |v: &String| {
                lines.iter().any(|l| {
                    l.contains(&format!("node=\"{v}\""))
                        && l.contains("larger than this node's --max-file-size")
                        && l.contains("tree refused: file tree (chunks) too large")
                })
            };
            Ok(victims.iter().all(refused_by).then_some(lines))
        },
    )
    .unwrap();
    for l in &lines {
        assert!(!l.contains("Durable"), "a bomb was accepted: {l}");
    }
    for i in 1..3 {
        let n = c.node_mut(i);
        assert!(n.is_running(), "node {i} died");
        let log = n.log();
        assert!(
            log.contains("offered version refused") && log.contains("file tree (chunks) too large"),
            "node {i} did not refuse the 16 Mi chunk tree from its claim"
        );
        // Expanding the 16 Mi chunk claim takes over 600 MiB; the 64 PiB
        // one could not be allocated at all.
        let pid = n.pid().unwrap();
        let peak = peak_rss_kib(pid);
        eprintln!("node {i}: peak RSS {peak} KiB after the bombs");
        assert!(peak < 400 << 10, "node {i} peaked at {peak} KiB");
    }
    // Sync goes on after the bombs, both ways.
    fs::write(d2.join("later.txt"), b"later").unwrap();
    wait_for("later.txt on node 0", DEADLINE, || {
        Ok(has(&d0, "later.txt", b"later").then_some(()))
    })
    .unwrap();
}

#[test]
fn with_safe_links_links_out_of_the_tree_are_neither_made_nor_proposed() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    {
        let n = c.node_mut(2);
        n.stop().unwrap();
        let mut args = n.args().to_vec();
        args.push("--safe-links".to_string());
        n.set_args(args);
        n.start().unwrap();
        n.wait_healthy().unwrap();
    }
    let (d0, d1, d2) = (c.node(0).dir(), c.node(1).dir(), c.node(2).dir());
    let link = |d: &Path, rel: &str| fs::read_link(d.join(rel)).ok();
    use std::os::unix::fs::symlink;
    fs::create_dir(d0.join("sub")).unwrap();
    symlink("/etc/hostname", d0.join("abs")).unwrap();
    symlink("../../outside", d0.join("sub/up")).unwrap();
    symlink("../abs", d0.join("sub/in")).unwrap();
    fs::write(d0.join("done.txt"), b"done").unwrap();
    wait_for("the links on node 1, done.txt on node 2", DEADLINE, || {
        Ok((link(&d1, "abs").is_some()
            && link(&d1, "sub/up").is_some()
            && link(&d1, "sub/in").is_some()
            && has(&d2, "done.txt", b"done")
            && link(&d2, "sub/in").is_some())
        .then_some(()))
    })
    .unwrap();
    assert_eq!(link(&d2, "sub/in").unwrap(), Path::new("../abs"));
    assert!(link(&d2, "abs").is_none(), "an absolute link was made");
    assert!(
        link(&d2, "sub/up").is_none(),
        "a link out of the tree was made"
    );
    // Made on node 2, it is not proposed; the file after it is.
    symlink("/tmp", d2.join("mine")).unwrap();
    fs::write(d2.join("after.txt"), b"after").unwrap();
    wait_for("after.txt on node 0", DEADLINE, || {
        Ok(has(&d0, "after.txt", b"after").then_some(()))
    })
    .unwrap();
    assert!(
        link(&d0, "mine").is_none(),
        "a link out of the tree was proposed"
    );
    assert!(link(&d2, "mine").is_some(), "node 2 lost its link");
}
