//! Crashes at every durable boundary, under load, and the loss of a whole
//! disk after an acknowledgement (issue 13: the promise under direct test).
//!
//! **Crash points.** For each point of `filesyncd_chunkstore::failpoint`, a
//! node is restarted with `FAILPOINTS=<point>=<k>*off->return`: it lets `k`
//! passes go by and aborts at the next, as a power cut would leave it. A
//! writer keeps writing on another node meanwhile (whole files, renamed in;
//! small ones that travel inline and bigger ones that are pulled). Then:
//! * the armed node must have crashed there (SIGABRT and the point's log
//!   line), else the case fails: a point that is never reached proves
//!   nothing;
//! * while it is down, every file in its synced directory is a whole
//!   version the writer wrote at that path (old or new, never torn, no
//!   conflict copy of a path it never wrote);
//! * restarted without the point, it catches up: every node ends with the
//!   same tree, holding exactly the last version of every path written
//!   (no acknowledged version lost), and no temp file is left behind.
//!
//! **Disk loss.** After a version is committed (acknowledged), its origin
//! is killed and its data and synced directories wiped; a fresh node takes
//! its place. The version's holders name a node other than the origin, and
//! every node ends up with the version's bytes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use filesyncd_chunkstore::failpoint;
use filesyncd_systests::tree::{converge, snapshot, Entry};
use filesyncd_systests::{serial, wait_for, Cluster, DEADLINE};

/// Paths the writer cycles through (rewritten across rounds).
const PATHS: u64 = 24;
/// Files written per round.
const PER_ROUND: u64 = 6;

/// The content of version `round` of `path`: a header naming both, then
/// bytes derived from them. Every tenth path is 1.25 MiB (above the
/// staging threshold: written once into a staged file that the write
/// takes), the other fifths 192 KiB (above the inline threshold: pulled as
/// chunks into the chunk store), the others 0.1 to 3 KiB (inline).
fn content(path: &str, round: u64) -> Vec<u8> {
    let seed = path.bytes().fold(round.wrapping_mul(0x9e37_79b9), |h, b| {
        h.rotate_left(5) ^ u64::from(b)
    });
    let n: u64 = path
        .rsplit('f')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len = if n.is_multiple_of(10) {
        (5 << 20) / 4
    } else if n.is_multiple_of(5) {
        192 << 10
    } else {
        100 + (seed % 3000) as usize
    };
    let mut out = format!("{path} {round}\n").into_bytes();
    let mut x = seed | 1;
    out.extend((0..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    out
}

/// Whether `bytes` is a whole version the writer wrote at `path`.
fn whole(path: &str, bytes: &[u8], written: &BTreeMap<String, Vec<u64>>) -> Result<(), String> {
    let Some(rounds) = written.get(path) else {
        return Err(format!("{path}: the writer never wrote this path"));
    };
    let head = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let head = String::from_utf8_lossy(head);
    let round = head
        .strip_prefix(&format!("{path} "))
        .and_then(|r| r.parse::<u64>().ok())
        .ok_or_else(|| format!("{path}: header `{head}` names another path"))?;
    if !rounds.contains(&round) {
        return Err(format!("{path}: round {round} was never written there"));
    }
    if bytes != content(path, round) {
        return Err(format!(
            "{path}: torn: {} bytes, version {round} has {}",
            bytes.len(),
            content(path, round).len()
        ));
    }
    Ok(())
}

/// Writes rounds of whole files into one node's directory (staged beside
/// it, renamed in) until stopped; records every version it wrote.
struct Writer {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    written: Arc<Mutex<BTreeMap<String, Vec<u64>>>>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        let stage = dir.with_file_name("stage");
        fs::create_dir_all(&stage).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let written: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
        let (s, r, w) = (stop.clone(), rounds.clone(), written.clone());
        let handle = std::thread::spawn(move || {
            let mut round = 0u64;
            while !s.load(Ordering::SeqCst) {
                for i in 0..PER_ROUND {
                    let k = (round * 7 + i) % PATHS;
                    let path = format!("d{}/f{k}", k % 4);
                    let tmp = stage.join("tmp");
                    fs::write(&tmp, content(&path, round)).unwrap();
                    let to = dir.join(&path);
                    fs::create_dir_all(to.parent().unwrap()).unwrap();
                    // Recorded before the rename: a version may be seen
                    // anywhere from then on.
                    w.lock().unwrap().entry(path).or_default().push(round);
                    fs::rename(&tmp, &to).unwrap();
                }
                round += 1;
                r.store(round, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Writer {
            stop,
            rounds,
            written,
            handle: Some(handle),
        }
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Waits for `n` more rounds.
    fn more(&self, n: u64) {
        let want = self.rounds() + n;
        wait_for("the writer's rounds", DEADLINE, || {
            Ok((self.rounds() >= want).then_some(()))
        })
        .unwrap();
    }

    fn written(&self) -> BTreeMap<String, Vec<u64>> {
        self.written.lock().unwrap().clone()
    }

    fn finish(mut self) -> BTreeMap<String, Vec<u64>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.written()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Files under `root` (relative paths), the reserved `.filesyncd*` entries
/// aside; temp files are reported separately.
fn files(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut temps = Vec::new();
    for (rel, e) in snapshot(root) {
        let temp = rel
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".filesyncd-tmp-"));
        if let (Entry::File(_, bytes), false) = (e, temp) {
            out.insert(rel, bytes);
        }
    }
    fn walk(dir: &Path, temps: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".filesyncd-tmp-") {
                temps.push(e.path().display().to_string());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with(".filesyncd") {
                walk(&e.path(), temps);
            }
        }
    }
    walk(root, &mut temps);
    (out, temps)
}

/// One crash case: node `armed` crashes at `point` after `skip` passes
/// while node `writer` writes; see the module doc.
fn crash_at(point: &str, armed: usize, writer: usize, skip: u32) {
    crash_case(point, armed, writer, skip, None);
}

/// [`crash_at`] where the armed node catches up by a snapshot: every node
/// snapshots every `snapshot_logs` entries, and the armed node stays down
/// while the writer writes `down_rounds` rounds (so the leader's log no
/// longer reaches back to it).
fn crash_at_catch_up(point: &str, snapshot_logs: u64, down_rounds: u64) {
    crash_case(point, 1, 0, 0, Some((snapshot_logs, down_rounds)));
}

fn crash_case(point: &str, armed: usize, writer: usize, skip: u32, lag: Option<(u64, u64)>) {
    assert!(
        failpoint::NAMES.contains(&point),
        "{point} is not a crash point"
    );
    let _g = serial();
    let flags = lag.map(|(n, _)| vec!["--snapshot-logs".to_string(), n.to_string()]);
    let flags: Vec<&str> = flags.iter().flatten().map(String::as_str).collect();
    let mut c = Cluster::builder().flags(&flags).start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let w = Writer::start(c.node(writer).dir());
    w.more(2);

    // Arm the point and let the node run into it.
    let spec = format!("{point}={skip}*off->return");
    c.node_mut(armed).stop().unwrap();
    if let Some((_, rounds)) = lag {
        w.more(rounds);
    }
    c.node_mut(armed).set_env(&[("FAILPOINTS", &spec)]);
    c.node_mut(armed).start().unwrap();
    let name = c.node(armed).name.clone();
    let status = wait_for(&format!("{name} to crash at {point}"), DEADLINE, || {
        if c.node_mut(armed).is_running() {
            return Ok(None);
        }
        Ok(Some(()))
    });
    assert!(
        status.is_ok(),
        "{name} never reached {point} ({skip} passes let by): {status:?}\n{}",
        c.node(armed).log()
    );
    let st = c.node_mut(armed).wait_exit().unwrap();
    assert_eq!(
        st.signal(),
        Some(SIGABRT),
        "{name} ended with {st:?}, not by the crash point"
    );
    assert!(
        c.node(armed)
            .log()
            .contains(&format!("failpoint=\"{point}\"")),
        "{name}'s log does not show the crash at {point}"
    );

    // Down: only whole versions on its disk.
    let written = w.written();
    let (on_disk, _temps) = files(&c.node(armed).dir());
    for (path, bytes) in &on_disk {
        if let Err(e) = whole(path, bytes, &written) {
            panic!("after the crash at {point}, {name} holds a bad file: {e}");
        }
    }

    // The others go on; then it comes back unarmed and catches up.
    w.more(2);
    let written = w.finish();
    c.node_mut(armed).set_env(&[]);
    c.node_mut(armed).start().unwrap();
    c.node_mut(armed).wait_healthy().unwrap();
    converge(&c, &[0, 1, 2]);
    for i in 0..3 {
        let n = c.node(i);
        let (mut got, temps) = files(&n.dir());
        assert!(temps.is_empty(), "{} keeps temp files: {temps:?}", n.name);
        // One writer: a conflict copy here is a version the crashed node
        // received and placed, taken at restart for its own edit (docs/CHAOS.md
        // finding 11, still open on the materializer's side). It must hold a
        // whole version of its path: nothing torn.
        let copies: Vec<String> = got
            .keys()
            .filter(|p| p.contains(".sync-conflict-"))
            .cloned()
            .collect();
        for copy in &copies {
            let base = copy.split(".sync-conflict-").next().unwrap_or_default();
            if let Err(e) = whole(base, &got[copy], &written) {
                panic!("{}: conflict copy {copy}: {e}", n.name);
            }
            got.remove(copy);
        }
        if !copies.is_empty() && i == 0 {
            eprintln!(
                "after the crash at {point}: {} self-conflict copies: {copies:?}",
                copies.len()
            );
        }
        let want: Vec<&String> = written.keys().collect();
        let have: Vec<&String> = got.keys().collect();
        assert_eq!(have, want, "{}: not the paths written", n.name);
        for (path, rounds) in &written {
            let last = *rounds.last().unwrap();
            assert!(
                got[path] == content(path, last),
                "{}: {path} is not its last version ({last}) after the crash at {point}",
                n.name
            );
        }
    }
}

/// The signal `std::process::abort` raises.
const SIGABRT: i32 = 6;

#[test]
fn every_crash_point_is_exercised_here() {
    // The cases below name every point; a new point needs a case.
    let src = include_str!("crash.rs");
    for p in failpoint::NAMES {
        assert!(
            src.contains(&format!("crash_at(\"{p}\""))
                || src.contains(&format!("crash_at_catch_up(\"{p}\"")),
            "no crash case for {p}"
        );
    }
    assert!(
        failpoint::enabled(),
        "the tests crate builds filesyncd with the failpoints feature"
    );
}

// A peer (node 1) crashes while node 0 writes.

#[test]
fn c01_peer_crashes_before_the_store_commit_of_received_content() {
    crash_at("chunkstore::put_before_commit", 1, 0, 2);
}

#[test]
fn c02_peer_crashes_between_its_stored_copy_and_its_ack() {
    crash_at("offer::stored_before_ack", 1, 0, 2);
}

#[test]
fn c03_peer_crashes_after_a_raft_log_append() {
    crash_at("raft::log_appended", 1, 0, 4);
}

#[test]
fn c04_peer_crashes_before_the_apply_commit() {
    crash_at("raft::apply_before_commit", 1, 0, 4);
}

#[test]
fn c05_peer_crashes_after_the_apply_commit() {
    crash_at("raft::applied", 1, 0, 4);
}

#[test]
fn c06_peer_crashes_with_a_batch_staged_unflushed() {
    crash_at("materialize::staged", 1, 0, 1);
}

#[test]
fn c07_peer_crashes_with_a_batch_flushed_not_renamed() {
    crash_at("materialize::flushed", 1, 0, 1);
}

#[test]
fn c08_peer_crashes_after_the_renames_before_the_dir_flush() {
    crash_at("materialize::renamed", 1, 0, 1);
}

#[test]
fn c09_peer_crashes_after_the_dir_flush_before_the_store_index() {
    crash_at("materialize::dirs_synced", 1, 0, 1);
}

#[test]
fn c10_peer_crashes_after_the_store_index_before_the_local_index() {
    crash_at("materialize::indexed", 1, 0, 1);
}

#[test]
fn c11_peer_crashes_after_a_local_index_commit() {
    crash_at("local_index::committed", 1, 0, 2);
}

#[test]
fn c12_the_writing_node_crashes_after_a_local_index_commit() {
    // The origin itself: its writer keeps writing while it is down.
    crash_at("local_index::committed", 0, 0, 2);
}

#[test]
fn c13_a_lagging_peer_crashes_after_installing_a_snapshot() {
    // Snapshots every 10 entries; 40 rounds go by while the peer is down.
    crash_at_catch_up("raft::snapshot_installed", 10, 40);
}

#[test]
fn d01_a_committed_version_survives_the_loss_of_its_origins_disks() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let origin = c.node(0).status().unwrap().node_id;
    // 192 KiB: pulled as chunks, not carried inline.
    let path = "keep/f5";
    let data = content(path, 1);
    let stage = c.node(0).dir().with_file_name("stage");
    fs::create_dir_all(&stage).unwrap();
    fs::write(stage.join("tmp"), &data).unwrap();
    fs::create_dir_all(c.node(0).dir().join("keep")).unwrap();
    fs::rename(stage.join("tmp"), c.node(0).dir().join(path)).unwrap();

    // The moment the origin lists the version as committed, it dies with
    // both of its disks.
    let holders = wait_for("the version to commit", DEADLINE, || {
        let Ok(h) = c.node(0).cli_json(&["history", path]) else {
            return Ok(None);
        };
        let last = h["versions"].as_array().and_then(|v| v.last()).cloned();
        Ok(last.map(|v| v["holders"].clone()))
    })
    .unwrap();
    c.node_mut(0).kill9();
    fs::remove_dir_all(c.node(0).dir()).unwrap();
    fs::remove_dir_all(c.node(0).data()).unwrap();
    let holders: Vec<String> = holders
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    assert!(
        holders.iter().any(|h| *h != origin),
        "a committed version names a holder besides its origin {origin}: {holders:?}"
    );

    // The cluster replaces the lost node; every node ends with the bytes.
    let r = c.node(1).cli_json(&["remove", &origin]);
    assert!(r.is_ok(), "removing the lost node: {r:?}");
    let k = c.add_node().unwrap();
    let t = converge(&c, &[1, 2, k]);
    assert!(
        matches!(t.get(path), Some(Entry::File(_, b)) if *b == data),
        "the committed version is not whole on every node"
    );
}

/// Recovery speed (issue 13 item 4), a measurement, not a check: the leader
/// is killed with SIGKILL while a follower writes, restarted 3 s later, and
/// the phases until every node is in sync again are printed. Run with
/// `cargo test -p filesyncd-systests --test crash -- --ignored --nocapture r01`
/// (with `FILESYNCD_BIN` set to a release build for figures).
#[test]
#[ignore]
fn r01_recovery_after_a_leader_is_killed_during_writes() {
    use std::time::Instant;
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    for round in 0..3 {
        let s = c.wait_converged(3, 3).unwrap();
        let leader = s.leader.clone().unwrap();
        let l = (0..3)
            .find(|i| c.node(*i).status().is_ok_and(|s| s.node_id == leader))
            .unwrap();
        let f = (0..3).find(|i| *i != l).unwrap();
        let w = Writer::start(c.node(f).dir());
        w.more(2);
        c.node_mut(l).kill9();
        w.more(4);
        let restarted = Instant::now();
        c.node_mut(l).start().unwrap();
        c.node_mut(l).wait_healthy().unwrap();
        let healthy = restarted.elapsed();
        wait_for("a leader on the restarted node", DEADLINE, || {
            Ok(c.node(l).status().ok().and_then(|s| s.leader))
        })
        .unwrap();
        let led = restarted.elapsed();
        w.more(2);
        let written = w.finish();
        let stopped = restarted.elapsed();
        converge(&c, &[0, 1, 2]);
        let synced = restarted.elapsed();
        println!(
            "round {round}: restart -> healthz {:.2}s, knows a leader {:.2}s, writer stopped {:.2}s, all in sync {:.2}s ({} paths)",
            healthy.as_secs_f64(),
            led.as_secs_f64(),
            stopped.as_secs_f64(),
            synced.as_secs_f64(),
            written.len()
        );
    }
}
