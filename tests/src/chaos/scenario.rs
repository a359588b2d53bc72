//! The two runs on the namespace lab.
//!
//! * **smoke** (a few minutes, CI): writers on every node; the leader
//!   partitioned into the minority (until the majority commits again);
//!   a follower killed with SIGKILL and restarted while its writer goes on;
//!   a node's data dir full for 5 s; one concurrent-edit round; heal;
//!   settle; check.
//! * **long** (`--minutes N`): the same writers under a cycle of faults
//!   ([`CYCLE`]: partitions, kills, packet loss, a pause, an empty root, a
//!   full synced dir and a full data dir, a disk loss, the leader removed
//!   from the membership, a crash at a random crash point: `FSD_BIN` needs
//!   the failpoints feature), each held a few seconds then healed, with a
//!   concurrent-edit round every third fault; then heal, settle, check.
//!
//! Nothing can pass by being skipped: every fault is planned, and the run
//! fails unless each planned fault was injected and confirmed
//! ([`Lab::inject`]) and its heal confirmed; every condition the run waits
//! for is a named check ([`Report::check`]) that fails the run when its
//! (generous) deadline passes; and the cluster must settle within
//! [`super::report::CONVERGE_LIMIT`] of the final heal.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::checker::Violation;
use super::content::Rng;
use super::lab::{cut, leader, parse_split, Lab};
use super::node::NodeSpec;
use super::report::{finish, Report};
use super::workload::{Opts, Workload};

/// Deadline for the cluster to settle after the final heal: the run waits
/// this long to measure it, and fails past [`super::report::CONVERGE_LIMIT`].
const SETTLE: Duration = Duration::from_secs(600);
/// Deadline of the waits between faults.
const STEP: Duration = Duration::from_secs(120);

/// Waits until every node answers and agrees on a leader with all nodes
/// as members (the lab is up and joined).
pub fn wait_ready(specs: &[NodeSpec], deadline: Duration) -> Result<(), String> {
    let end = Instant::now() + deadline;
    let mut last = String::new();
    while Instant::now() < end {
        let st: Result<Vec<_>, String> = specs.iter().map(NodeSpec::status).collect();
        match st {
            Ok(st) => {
                let l = st[0].leader.clone();
                let agree = l.is_some()
                    && st
                        .iter()
                        .all(|s| s.leader == l && s.members.len() == specs.len());
                if agree {
                    return Ok(());
                }
                last = format!(
                    "leaders {:?}",
                    st.iter().map(|s| s.leader.clone()).collect::<Vec<_>>()
                );
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "cluster not ready after {}s: {last}",
        deadline.as_secs()
    ))
}

fn other_than(n: usize, not: &[usize], rng: &mut Rng) -> usize {
    let choices: Vec<usize> = (0..n).filter(|i| !not.contains(i)).collect();
    choices[rng.range(0, choices.len() as u64) as usize]
}

/// Acknowledged writes of the nodes `of`.
fn acked(wl: &Workload, of: &[usize]) -> usize {
    of.iter().map(|i| wl.ledger().acked_count(Some(*i))).sum()
}

/// Waits until the nodes `of` have `n` more acknowledged writes than
/// `before`; the check's detail.
fn wait_acked(wl: &Workload, of: &[usize], before: usize, n: usize) -> (bool, String) {
    let end = Instant::now() + STEP;
    while Instant::now() < end && acked(wl, of) < before + n {
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = acked(wl, of);
    (
        after >= before + n,
        format!(
            "{before} -> {after} acknowledged writes (wanted +{n} within {}s)",
            STEP.as_secs()
        ),
    )
}

/// Checks that node `i`'s writes commit again (one more acknowledged).
fn check_commits(r: &mut Report, wl: &Workload, name: &str, i: usize) {
    let ok = wl.wait_acks(Some(i), 1, STEP);
    let detail = format!(
        "{}: {} acknowledged writes{}",
        wl.nodes()[i].name,
        wl.ledger().acked_count(Some(i)),
        if ok {
            String::new()
        } else {
            format!(", none more within {}s", STEP.as_secs())
        }
    );
    r.check(name, ok, detail);
}

/// The end of every run: stop the writers, heal everything, confirm no
/// pair is left blocked, settle and check.
fn wrap_up(lab: &mut Lab, mut wl: Workload, mut r: Report, started: Instant) -> Report {
    wl.stop();
    if let Err(e) = lab.script("heal.sh", &[]) {
        lab.failed(format!("final heal: {e}"));
    }
    match lab.blocked_pairs() {
        Ok(b) => r.check(
            "no pair of nodes blocked after the final heal",
            b.is_empty(),
            super::lab::show_pairs(&b),
        ),
        Err(e) => r.check("no pair of nodes blocked after the final heal", false, e),
    }
    let healed = Instant::now();
    collect(lab, &mut r);
    finish(&mut wl, &mut r, healed, SETTLE);
    r.run_secs = started.elapsed().as_secs_f64();
    r
}

/// The lab's fault figures into the report.
fn collect(lab: &Lab, r: &mut Report) {
    r.planned = lab.planned.clone();
    r.faults = lab.faults.clone();
    r.fault_failures = lab.failures.clone();
}

/// A run that could not start its workload: it fails with what it planned.
fn aborted(lab: &Lab, mut r: Report, what: &str, e: String, started: Instant) -> Report {
    r.check(what, false, e);
    collect(lab, &mut r);
    r.run_secs = started.elapsed().as_secs_f64();
    r
}

/// Confirms a partition: exactly the pairs between the two groups the
/// script printed are blocked.
fn split_confirmed(lab: &Lab, out: &str) -> Result<String, String> {
    let (a, b) = parse_split(out)?;
    lab.expect_blocked(&cut(&a, &b))
}

fn nothing_blocked(lab: &Lab, _: &str) -> Result<String, String> {
    lab.expect_blocked(&BTreeSet::new())
}

pub fn smoke(lab: &mut Lab, opts: Opts) -> Report {
    let started = Instant::now();
    let specs = lab.specs();
    let n = specs.len();
    let mut rng = Rng::new(opts.seed ^ 0x5a5a);
    // The smoke's plan, fixed: each must be injected and confirmed.
    lab.plan("partition-leader");
    lab.plan("kill9");
    lab.plan("data-full");
    let mut r = Report {
        scenario: "smoke".into(),
        nodes: n,
        ..Report::default()
    };
    if let Err(e) = wait_ready(&specs, STEP) {
        return aborted(lab, r, "the cluster is ready", e, started);
    }
    let wl = match Workload::start(specs.clone(), opts) {
        Ok(w) => w,
        Err(e) => return aborted(lab, r, "the workload started", e, started),
    };
    let ok = wl.wait_acks(None, 10, STEP);
    r.check(
        "10 writes acknowledged before the faults",
        ok,
        format!("{} acknowledged", wl.ledger().acked_count(None)),
    );

    // The leader cut off into the minority until the majority commits again.
    if let Ok(out) = lab.inject(
        "partition-leader",
        "partition.sh",
        &["split-leader"],
        split_confirmed,
    ) {
        // parse_split succeeded in the confirmation: the minority (with
        // the leader) first, the majority second.
        let (minority, majority) = parse_split(&out).unwrap_or_default();
        let majority: Vec<usize> = majority.iter().filter_map(|&x| lab.index_of(x)).collect();
        let minority: Vec<usize> = minority.iter().filter_map(|&x| lab.index_of(x)).collect();
        std::thread::sleep(Duration::from_secs(5));
        let before = acked(&wl, &majority);
        let (ok, detail) = wait_acked(&wl, &majority, before, 5);
        r.check(
            "the majority committed 5 writes while the leader was cut off",
            ok,
            detail,
        );
        let _ = lab.heal(
            "partition-leader",
            "partition.sh",
            &["heal"],
            nothing_blocked,
        );
        let before = acked(&wl, &minority);
        let (ok, detail) = wait_acked(&wl, &minority, before, 1);
        r.check(
            "the old leader's writes committed after the heal",
            ok,
            detail,
        );
    }

    // A follower killed while its writer goes on, then restarted.
    let now = leader(&specs);
    let f = other_than(n, &now.into_iter().collect::<Vec<_>>(), &mut rng);
    let arg = lab.arg(f);
    if lab
        .inject("kill9", "proc.sh", &["kill", &arg], |lab, _| {
            lab.expect_state(f, "down")
        })
        .is_ok()
    {
        std::thread::sleep(Duration::from_secs(5));
        let _ = lab.heal("kill9", "proc.sh", &["restart", &arg], |lab, _| {
            lab.expect_state(f, "running")
        });
        let before = acked(&wl, &[f]);
        let (ok, detail) = wait_acked(&wl, &[f], before, 2);
        r.check("the restarted follower's writes committed", ok, detail);
    }

    // A node's data dir (chunk store, Raft log, index) full for a few
    // seconds: it says so or exits, loses nothing, and catches up after.
    if let Err(e) = data_full(lab, &specs, &wl, Duration::from_secs(5), &mut rng, &mut r) {
        lab.log(&format!("data-full: {e}"));
    }

    // One concurrent-edit round: the restarted follower and another node.
    let g = other_than(n, &[f], &mut rng);
    concurrent(&mut r, &wl, 0, f, g, lab);
    let ok = wl.wait_acks(None, 3, STEP);
    r.check(
        "writes acknowledged after the concurrent round",
        ok,
        format!("{} acknowledged", wl.ledger().acked_count(None)),
    );
    wrap_up(lab, wl, r, started)
}

fn concurrent(r: &mut Report, wl: &Workload, round: usize, a: usize, b: usize, lab: &Lab) {
    let name = "a concurrent-edit round wrote its base, saw it arrive and wrote both sides";
    match wl.concurrent_round(round, a, b, STEP) {
        Ok((x, y, note)) => {
            lab.log(&format!(
                "concurrent edit round {round}: {x} on {}, {y} on {}",
                wl.nodes()[a].name,
                wl.nodes()[b].name
            ));
            r.concurrent_rounds += 1;
            match note {
                Some(n) => r.check(name, false, n),
                None => r.check(name, true, format!("round {round}")),
            }
        }
        Err(e) => r.check(name, false, format!("round {round}: {e}")),
    }
}

/// The fault cycle of the long run (the kinds as the report counts them).
pub const CYCLE: [&str; 14] = [
    "partition-leader",
    "kill9-leader",
    "partition-isolate",
    "loss",
    "disk-loss",
    "empty-root",
    "partition-leader",
    "pause",
    "data-full",
    "partition-oneway",
    "kill9-follower",
    "leader-removal",
    "disk-full",
    "crash-point",
];

/// The crash points (`chunkstore/src/failpoint.rs`) any node passes within
/// seconds under the workload: every node writes, so each also stores and
/// places the others' versions, appends and applies entries, and commits
/// its local index. All but `raft::snapshot_installed`, which needs a node
/// left far behind (the loopback crash suite covers it).
pub fn crash_points() -> Vec<&'static str> {
    filesyncd_chunkstore::failpoint::NAMES
        .iter()
        .copied()
        .filter(|p| *p != "raft::snapshot_installed")
        .collect()
}

/// How many times node `id`'s log says it aborted at `point`.
fn crash_lines(lab: &Lab, id: usize, point: &str) -> usize {
    let log = lab.state.join(format!("n{id}/log"));
    let needle = format!("failpoint=\"{point}\"");
    std::fs::read_to_string(log)
        .map(|s| s.matches(&needle).count())
        .unwrap_or(0)
}

/// The kinds of a comma-separated list, each checked against [`CYCLE`],
/// in the cycle's order.
pub fn kinds(list: &str) -> Result<Vec<&'static str>, String> {
    let want: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = want.iter().find(|k| !CYCLE.contains(k)) {
        return Err(format!(
            "unknown fault kind {bad} (known: {})",
            CYCLE.join(", ")
        ));
    }
    let mut out: Vec<&'static str> = CYCLE.iter().copied().filter(|k| want.contains(k)).collect();
    out.dedup();
    if out.is_empty() {
        return Err("--kinds names no fault kind".into());
    }
    Ok(out)
}

/// The long run over `cycle` (a subsequence of [`CYCLE`]; see [`kinds`]).
pub fn long(lab: &mut Lab, opts: Opts, minutes: u64, cycle: &[&'static str]) -> Report {
    let started = Instant::now();
    let specs = lab.specs();
    let n = specs.len();
    let mut rng = Rng::new(opts.seed ^ 0x10_e6);
    let mut r = Report {
        scenario: format!("long ({minutes} min)"),
        nodes: n,
        ..Report::default()
    };
    // At least one fault is planned whatever happens next.
    lab.plan(cycle[0]);
    if let Err(e) = wait_ready(&specs, STEP) {
        return aborted(lab, r, "the cluster is ready", e, started);
    }
    let wl = match Workload::start(specs.clone(), opts) {
        Ok(w) => w,
        Err(e) => return aborted(lab, r, "the workload started", e, started),
    };
    let ok = wl.wait_acks(None, 10, STEP);
    r.check(
        "10 writes acknowledged before the faults",
        ok,
        format!("{} acknowledged", wl.ledger().acked_count(None)),
    );
    let end = started + Duration::from_secs(minutes * 60);
    let mut step = 0usize;
    while Instant::now() < end {
        let kind = cycle[step % cycle.len()];
        if step > 0 {
            lab.plan(kind);
        }
        let hold = Duration::from_secs(rng.range(5, 16));
        if let Err(e) = one_fault(lab, &specs, &wl, kind, hold, &mut rng, &mut r) {
            r.notes.push(format!("step {step} ({kind}): {e}"));
        }
        step += 1;
        if step.is_multiple_of(3) {
            let a = rng.range(0, n as u64) as usize;
            let b = other_than(n, &[a], &mut rng);
            concurrent(&mut r, &wl, step / 3, a, b, lab);
        }
        std::thread::sleep(Duration::from_secs(rng.range(2, 7)));
        if step.is_multiple_of(cycle.len()) {
            let c = wl.ledger().counts();
            lab.log(&format!(
                "progress: {} writes, {} acknowledged, faults {:?} of {:?}",
                c.attempted, c.acknowledged, lab.faults, lab.planned
            ));
        }
    }
    wrap_up(lab, wl, r, started)
}

/// Injects one fault of `kind` (planned by the caller), holds it, heals it,
/// and checks that the node it hit commits again. An error has been
/// recorded by the lab already (or is a reason to note: the fault was not
/// injected, which fails the run as a shortfall).
fn one_fault(
    lab: &mut Lab,
    specs: &[NodeSpec],
    wl: &Workload,
    kind: &str,
    hold: Duration,
    rng: &mut Rng,
    r: &mut Report,
) -> Result<(), String> {
    let n = specs.len();
    let after = format!("the faulted node's writes committed after the heal of {kind}");
    match kind {
        "empty-root" => {
            let i = rng.range(0, n as u64) as usize;
            empty_root(lab, specs, i, hold, rng, r)?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        "disk-full" => {
            // The node's writer and its downloads fail with ENOSPC meanwhile
            // (counted as write errors, not as writes).
            let i = rng.range(0, n as u64) as usize;
            let arg = lab.arg(i);
            lab.inject("disk-full", "disk.sh", &["fill", &arg], |lab, _| {
                full(lab, i, "ballast", "free")
            })?;
            std::thread::sleep(hold);
            lab.heal("disk-full", "disk.sh", &["heal", &arg], |lab, _| {
                freed(lab, i, "ballast", "free")
            })?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        "data-full" => data_full(lab, specs, wl, hold, rng, r),
        "disk-loss" => disk_loss(lab, specs, wl, hold, rng, r),
        "leader-removal" => leader_removal(lab, specs, wl, hold, r),
        "partition-leader" => {
            let out = lab.inject(kind, "partition.sh", &["split-leader"], split_confirmed)?;
            let (minority, _) = parse_split(&out)?;
            std::thread::sleep(hold);
            lab.heal(kind, "partition.sh", &["heal"], nothing_blocked)?;
            for i in minority.iter().filter_map(|&x| lab.index_of(x)) {
                check_commits(r, wl, &after, i);
            }
            Ok(())
        }
        "partition-isolate" => {
            let i = rng.range(0, n as u64) as usize;
            lab.inject(
                kind,
                "partition.sh",
                &["isolate", &lab.arg(i)],
                split_confirmed,
            )?;
            std::thread::sleep(hold);
            lab.heal(kind, "partition.sh", &["heal"], nothing_blocked)?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        "partition-oneway" => {
            let a = rng.range(0, n as u64) as usize;
            let b = other_than(n, &[a], rng);
            let want: BTreeSet<(usize, usize)> = [(lab.ids[a], lab.ids[b])].into_iter().collect();
            lab.inject(
                kind,
                "partition.sh",
                &["oneway", &lab.arg(a), &lab.arg(b)],
                |lab, _| lab.expect_blocked(&want),
            )?;
            std::thread::sleep(hold);
            lab.heal(kind, "partition.sh", &["heal"], nothing_blocked)?;
            check_commits(r, wl, &after, a);
            check_commits(r, wl, &after, b);
            Ok(())
        }
        "loss" => {
            let i = rng.range(0, n as u64) as usize;
            let j = other_than(n, &[i], rng);
            lab.inject(
                kind,
                "loss.sh",
                &["on", &lab.arg(i), "0.3", "both"],
                |lab, _| lossy(lab, i, j, true),
            )?;
            std::thread::sleep(hold);
            lab.heal(kind, "loss.sh", &["heal"], |lab, _| lossy(lab, i, j, false))?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        "pause" => {
            let i = rng.range(0, n as u64) as usize;
            let arg = lab.arg(i);
            lab.inject(kind, "proc.sh", &["pause", &arg], |lab, _| {
                lab.expect_state(i, "paused")
            })?;
            std::thread::sleep(hold);
            lab.heal(kind, "proc.sh", &["resume", &arg], |lab, _| {
                lab.expect_state(i, "running")
            })?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        "kill9-leader" | "kill9-follower" => {
            let l = leader(specs).ok_or("no leader to find")?;
            let i = if kind == "kill9-leader" {
                l
            } else {
                other_than(n, &[l], rng)
            };
            let arg = lab.arg(i);
            lab.inject(kind, "proc.sh", &["kill", &arg], |lab, _| {
                lab.expect_state(i, "down")
            })?;
            std::thread::sleep(hold.min(Duration::from_secs(8)));
            lab.heal(kind, "proc.sh", &["restart", &arg], |lab, _| {
                lab.expect_state(i, "running")
            })?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        "crash-point" => {
            // Restarted with one crash point armed; confirmed once the
            // process is gone and its log shows the abort at that point.
            let i = rng.range(0, n as u64) as usize;
            let points = crash_points();
            let point = points[rng.range(0, points.len() as u64) as usize];
            let id = lab.ids[i];
            let before = crash_lines(lab, id, point);
            let spec = format!("{point}=return");
            let arg = lab.arg(i);
            let within = Duration::from_secs(60);
            lab.inject_within(kind, "proc.sh", &["arm", &arg, &spec], within, |lab, _| {
                let st = lab.proc_state(i)?;
                let now = crash_lines(lab, id, point);
                if st == "down" && now > before {
                    Ok(format!("node {id} aborted at {point}"))
                } else {
                    Err(format!(
                        "node {id} is {st}, its log shows {now} aborts at {point} ({before} before; \
                         FSD_BIN needs the failpoints feature)"
                    ))
                }
            })?;
            std::thread::sleep(hold.min(Duration::from_secs(5)));
            lab.heal(kind, "proc.sh", &["disarm", &arg], |lab, _| {
                lab.expect_state(i, "running")
            })?;
            check_commits(r, wl, &after, i);
            Ok(())
        }
        other => Err(format!("unknown fault {other}")),
    }
}

/// Less than this many bytes free counts as full.
const FULL: u64 = 1 << 20;

/// Confirms that `disk.sh state` shows the ballast `ballast` in place and
/// less than [`FULL`] free in `free`.
fn full(lab: &Lab, i: usize, ballast: &str, free: &str) -> Result<String, String> {
    let f = lab.fields("disk.sh", i)?;
    let bytes: u64 = f
        .get(free)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no {free} in {f:?}"))?;
    if f.get(ballast).map(String::as_str) == Some("1") && bytes < FULL {
        Ok(format!("{ballast} in place, {bytes} bytes free"))
    } else {
        Err(format!("not full: {f:?}"))
    }
}

fn freed(lab: &Lab, i: usize, ballast: &str, free: &str) -> Result<String, String> {
    let f = lab.fields("disk.sh", i)?;
    let bytes: u64 = f
        .get(free)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no {free} in {f:?}"))?;
    if f.get(ballast).map(String::as_str) == Some("0") && bytes >= FULL {
        Ok(format!("{ballast} gone, {bytes} bytes free"))
    } else {
        Err(format!("still full: {f:?}"))
    }
}

/// Confirms packet loss between specs `i` and `j` in both directions
/// (`on`: some but not all of 100 probes arrive each way) or its absence
/// (at least 98 of 100 arrive each way).
fn lossy(lab: &Lab, i: usize, j: usize, on: bool) -> Result<String, String> {
    let ij = lab.probe(i, j, 100)?;
    let ji = lab.probe(j, i, 100)?;
    let how = format!(
        "{}->{} {ij}/100, {}->{} {ji}/100 probes arrived",
        lab.arg(i),
        lab.arg(j),
        lab.arg(j),
        lab.arg(i)
    );
    let ok = if on {
        [ij, ji].iter().all(|&x| x > 0 && x < 100)
    } else {
        [ij, ji].iter().all(|&x| x >= 98)
    };
    if ok {
        Ok(how)
    } else {
        Err(how)
    }
}

/// Confirms from `member.sh state` that spec `i` is down with an empty
/// data dir, and (`dir_empty`) an empty synced dir.
fn wiped(lab: &Lab, i: usize, dir_empty: bool) -> Result<String, String> {
    let f = lab.fields("member.sh", i)?;
    let is = |k: &str, v: &str| f.get(k).map(String::as_str) == Some(v);
    if is("running", "0") && is("data_entries", "0") && (!dir_empty || is("dir_entries", "0")) {
        Ok(format!("node {} down, {f:?}", lab.arg(i)))
    } else {
        Err(format!("node {} not wiped: {f:?}", lab.arg(i)))
    }
}

/// Confirms that no other node that answers lists `id` as a member (and
/// that one answers).
fn not_member(specs: &[NodeSpec], i: usize, id: &str) -> Result<String, String> {
    let mut seen = Vec::new();
    for (j, s) in specs.iter().enumerate().filter(|(j, _)| *j != i) {
        if let Ok(st) = s.status() {
            if st.members.iter().any(|m| m.id == id) {
                return Err(format!("{} still lists {id} as a member", s.name));
            }
            seen.push(specs[j].name.clone());
        }
    }
    if seen.is_empty() {
        Err("no other node answers".into())
    } else {
        Ok(format!("{id} is no member for {}", seen.join(", ")))
    }
}

/// Confirms that spec `i` runs again as a new member (another node id than
/// `old`) of the cluster of the others, listed by another node.
fn rejoined(specs: &[NodeSpec], i: usize, old: &str) -> Result<String, String> {
    let me = specs[i].status()?;
    if me.node_id == old {
        return Err(format!("{} still has node id {old}", specs[i].name));
    }
    for (j, s) in specs.iter().enumerate().filter(|(j, _)| *j != i) {
        let Ok(st) = s.status() else { continue };
        if st.cluster_id != me.cluster_id || me.cluster_id.is_none() {
            return Err(format!(
                "{} is in cluster {:?}, {} in {:?}",
                specs[i].name, me.cluster_id, specs[j].name, st.cluster_id
            ));
        }
        if !st.members.iter().any(|m| m.id == me.node_id) {
            return Err(format!("{} does not list {} yet", s.name, me.node_id));
        }
        return Ok(format!(
            "{} rejoined as {} ({} members for {})",
            specs[i].name,
            me.node_id,
            st.members.len(),
            s.name
        ));
    }
    Err("no other node answers".into())
}

/// Waits until spec `i` has applied at least what `j` had applied when
/// this started, and holds on disk what it reports committed.
fn caught_up(specs: &[NodeSpec], i: usize, j: usize) -> (bool, String) {
    let target = specs[j].status().ok().and_then(|s| s.applied_index);
    let end = Instant::now() + STEP;
    let mut last = String::from("no answer");
    while Instant::now() < end {
        match specs[i].status() {
            Ok(st) => {
                let applied = st.applied_index;
                let ok = st.in_sync
                    && st.local_root.as_deref() == Some(st.cluster_root.as_str())
                    && applied.is_some()
                    && applied >= target;
                last = format!(
                    "{} applied {applied:?} (target {target:?} of {}), in_sync {}",
                    specs[i].name, specs[j].name, st.in_sync
                );
                if ok {
                    return (true, last);
                }
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    (false, format!("not within {}s: {last}", STEP.as_secs()))
}

/// A disk loss: a follower killed and its data dir and synced dir wiped
/// (its writer held meanwhile, its unacknowledged writes gone with the
/// disk); it is removed from the membership through another node, then
/// started again: it joins with a fresh token as a new node and must catch
/// up; its writer resumes then. The final checks find every acknowledged
/// write on every node, this one included.
fn disk_loss(
    lab: &mut Lab,
    specs: &[NodeSpec],
    wl: &Workload,
    hold: Duration,
    rng: &mut Rng,
    r: &mut Report,
) -> Result<(), String> {
    let n = specs.len();
    let l = leader(specs).ok_or("no leader to find")?;
    let i = other_than(n, &[l], rng);
    let old = specs[i].status()?.node_id;
    let arg = lab.arg(i);
    wl.pause(i);
    if let Err(e) = lab.inject(
        "disk-loss",
        "member.sh",
        &["wipe", &arg, "all"],
        |lab, _| wiped(lab, i, true),
    ) {
        wl.resume(i);
        return Err(e);
    }
    let gone = wl.ledger().wipe(i);
    lab.log(&format!(
        "{}: {gone} unacknowledged writes gone with its disks",
        specs[i].name
    ));
    // Whatever fails from here on, the node is started again (a failure
    // is recorded by the lab and fails the run).
    let removed = lab.step(
        "disk-loss: the lost node removed from the membership",
        "member.sh",
        &["remove", &old],
        |_, _| not_member(specs, i, &old),
    );
    std::thread::sleep(hold);
    let healed = lab.heal("disk-loss", "member.sh", &["rejoin", &arg], |_, _| {
        rejoined(specs, i, &old)
    });
    if healed.is_ok() {
        let (ok, detail) = caught_up(specs, i, l);
        r.check(
            "the node whose disks were wiped caught up after its re-join",
            ok,
            detail,
        );
    }
    wl.resume(i);
    removed.and(healed)?;
    check_commits(
        r,
        wl,
        "the faulted node's writes committed after the heal of disk-loss",
        i,
    );
    Ok(())
}

/// The data dir (chunk store, Raft log, index) of node `i` full. The
/// daemon may stop on it (a Raft storage error exits 1); the heal frees
/// the space and starts it again if it stopped.
fn data_full(
    lab: &mut Lab,
    specs: &[NodeSpec],
    wl: &Workload,
    hold: Duration,
    rng: &mut Rng,
    r: &mut Report,
) -> Result<(), String> {
    let i = rng.range(0, specs.len() as u64) as usize;
    let arg = lab.arg(i);
    lab.inject("data-full", "disk.sh", &["fill-data", &arg], |lab, _| {
        full(lab, i, "data_ballast", "data_free")
    })?;
    std::thread::sleep(hold);
    let state = lab.proc_state(i)?;
    let answers = specs[i].status().is_ok();
    lab.log(&format!(
        "{} with a full data dir: {state}, API {}",
        specs[i].name,
        if answers {
            "answers"
        } else {
            "does not answer"
        }
    ));
    lab.heal("data-full", "disk.sh", &["heal", &arg], |lab, _| {
        freed(lab, i, "data_ballast", "data_free")
    })?;
    // A node whose Raft stopped on the full disk is on its way out: wait
    // until it has exited or answers steadily, as a supervisor would see it.
    if settled_state(lab, &specs[i], i, SETTLE_LIMIT)? == "down" {
        r.notes.push(format!(
            "{} exited with its data dir full (restarted by the heal)",
            specs[i].name
        ));
        lab.heal("data-full", "proc.sh", &["restart", &arg], |lab, _| {
            lab.expect_state(i, "running")
        })?;
    }
    check_commits(
        r,
        wl,
        "the faulted node's writes committed after the heal of data-full",
        i,
    );
    Ok(())
}

/// How long a node may take to exit or answer after a fault is healed.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Node `i`'s process state once it is settled: `down`, or `running` with
/// its API answering twice a second apart. Fails when it is neither within
/// `limit` (a process that lingers without its API is a daemon bug).
fn settled_state(lab: &Lab, spec: &NodeSpec, i: usize, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut answered = false;
    loop {
        let state = lab.proc_state(i)?;
        if state == "down" {
            return Ok(state);
        }
        let answers = state == "running" && spec.status().is_ok();
        if answers && answered {
            return Ok(state);
        }
        answered = answers;
        if start.elapsed() > limit {
            return Err(format!(
                "{} neither exited nor answered within {}s of the heal (state {state})",
                spec.name,
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The leader removed from the membership through another node's CLI; the
/// others must keep committing. The removed node runs on with its state
/// and its writer. A node with Raft state cannot join again (its --join is
/// ignored): the heal kills it, wipes its data dir, keeps its synced dir,
/// and starts it: it joins with a fresh token as a new node, with the files
/// it holds, and its writes (of the time it was out) must commit.
fn leader_removal(
    lab: &mut Lab,
    specs: &[NodeSpec],
    wl: &Workload,
    hold: Duration,
    r: &mut Report,
) -> Result<(), String> {
    let n = specs.len();
    let l = leader(specs).ok_or("no leader to find")?;
    let old = specs[l].status()?.node_id;
    let others: Vec<usize> = (0..n).filter(|&j| j != l).collect();
    let via = lab.arg(others[0]);
    let before = acked(wl, &others);
    lab.inject(
        "leader-removal",
        "member.sh",
        &["remove", &old, &via],
        |_, _| {
            let how = not_member(specs, l, &old)?;
            let st = specs[others[0]].status()?;
            match st.leader {
                Some(x) if x != old => Ok(format!("{how}; new leader {x}")),
                other => Err(format!("{how}; leader {other:?}")),
            }
        },
    )?;
    let (ok, detail) = wait_acked(wl, &others, before, 3);
    r.check(
        "the other nodes committed 3 writes after the leader was removed",
        ok,
        detail,
    );
    std::thread::sleep(hold);
    let arg = lab.arg(l);
    lab.step(
        "leader-removal: the removed node's data dir wiped for its re-join",
        "member.sh",
        &["wipe", &arg, "data"],
        |lab, _| wiped(lab, l, false),
    )?;
    lab.heal("leader-removal", "member.sh", &["rejoin", &arg], |_, _| {
        rejoined(specs, l, &old)
    })?;
    let (ok, detail) = caught_up(specs, l, others[0]);
    r.check("the removed leader caught up after its re-join", ok, detail);
    check_commits(
        r,
        wl,
        "the faulted node's writes committed after the heal of leader-removal",
        l,
    );
    Ok(())
}

/// Files another node lists as committed (`None` if it does not answer).
fn committed_files(spec: &NodeSpec) -> Option<usize> {
    spec.ls_recursive("")
        .ok()
        .map(|a| a.entries.iter().filter(|e| e.kind == "file").count())
}

/// Node `i`'s synced directory replaced by an empty mount, and node `i`
/// restarted on it (a NAS that booted without its disk), then the mount
/// removed and the node restarted again. Its writer's renames fail
/// meanwhile (another file system: counted as write errors). The node must halt its sync and
/// propagate no deletion: the workload never deletes, so the committed
/// file count seen by another node must not drop (else a
/// `deleted-from-empty-root` violation); a node that does not report
/// `halted` fails a check.
fn empty_root(
    lab: &mut Lab,
    specs: &[NodeSpec],
    i: usize,
    hold: Duration,
    rng: &mut Rng,
    r: &mut Report,
) -> Result<(), String> {
    let n = specs.len();
    let j = other_than(n, &[i], rng);
    let arg = lab.arg(i);
    let before = committed_files(&specs[j]);
    let mounted = |lab: &Lab, want: &str| -> Result<String, String> {
        let f = lab.fields("disk.sh", i)?;
        match f.get("empty_root") {
            Some(v) if v == want => Ok(format!("empty_root={v}")),
            other => Err(format!("empty_root={other:?}, want {want}")),
        }
    };
    lab.inject("empty-root", "disk.sh", &["empty-root", &arg], |lab, _| {
        mounted(lab, "1")
    })?;
    // A running daemon notices the swap only at its next full rescan
    // (minutes): restart it, as a NAS that booted without its disk.
    lab.step(
        "empty-root: the node restarted on the empty root",
        "proc.sh",
        &["crash", &arg],
        |lab, _| lab.expect_state(i, "running"),
    )?;
    std::thread::sleep(hold);
    let halted = specs[i]
        .status()
        .ok()
        .and_then(|s| s.sync)
        .and_then(|y| y.halted);
    let after = committed_files(&specs[j]);
    r.check(
        "a node restarted on an empty root halted its sync",
        halted.is_some(),
        match &halted {
            Some(why) => format!("{} halted: {why}", specs[i].name),
            None => format!("{} did not report halted", specs[i].name),
        },
    );
    let healed = lab
        .heal("empty-root", "disk.sh", &["heal", &arg], |lab, _| {
            mounted(lab, "0")
        })
        // Back on its real root: restart it again to leave the halt.
        .and_then(|()| {
            lab.heal("empty-root", "proc.sh", &["crash", &arg], |lab, _| {
                lab.expect_state(i, "running")
            })
        });
    if let (Some(b), Some(a)) = (before, after) {
        lab.log(&format!(
            "{} lists {b} committed files before, {a} during the empty root",
            specs[j].name
        ));
        if a < b {
            r.violations.push(Violation {
                kind: "deleted-from-empty-root",
                node: Some(specs[i].name.clone()),
                path: String::new(),
                id: None,
                detail: format!(
                    "{} listed {b} committed files before {}'s root was emptied, {a} after",
                    specs[j].name, specs[i].name
                ),
            });
        }
    }
    healed
}

#[cfg(test)]
mod tests {
    use super::crash_points;

    #[test]
    fn kinds_are_checked_and_kept_in_cycle_order() {
        assert_eq!(
            super::kinds("crash-point, loss").unwrap(),
            vec!["loss", "crash-point"]
        );
        assert_eq!(
            super::kinds("partition-leader").unwrap(),
            vec!["partition-leader"]
        );
        assert!(super::kinds("lose")
            .unwrap_err()
            .contains("unknown fault kind"));
        assert!(super::kinds(",").is_err());
    }

    #[test]
    fn the_cycle_arms_every_crash_point_a_node_passes_under_load() {
        let p = crash_points();
        assert_eq!(p.len(), filesyncd_chunkstore::failpoint::NAMES.len() - 1);
        assert!(!p.contains(&"raft::snapshot_installed"));
        assert!(p.contains(&"materialize::renamed"));
    }
}
