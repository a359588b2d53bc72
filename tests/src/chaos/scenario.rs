//! The two runs on the namespace lab.
//!
//! * **smoke** (a few minutes, CI): writers on every node; the leader
//!   partitioned into the minority (until the majority commits again);
//!   a follower killed with SIGKILL and restarted while its writer goes on;
//!   one concurrent-edit round; heal; settle; check.
//! * **long** (`--minutes N`): the same writers under a cycle of faults
//!   (leader partitioned, leader killed, a node isolated, packet loss,
//!   the synced directory replaced by an empty mount, the leader
//!   partitioned again, a node paused, a one-way partition, a follower
//!   killed, a full disk), each held a few seconds then healed, with a
//!   concurrent-edit round every third fault; then heal, settle, check.
//!
//! Waits inside a run are for conditions with generous deadlines; when one
//! passes, the run notes it and goes on: only the final checks decide.

use std::time::{Duration, Instant};

use super::checker::Violation;
use super::content::Rng;
use super::lab::{leader, Lab};
use super::node::NodeSpec;
use super::report::{finish, Report};
use super::workload::{Opts, Workload};

/// Deadline for the cluster to settle after the final heal.
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

pub fn smoke(lab: &mut Lab, opts: Opts) -> Report {
    let started = Instant::now();
    let specs = lab.specs();
    let n = specs.len();
    let mut rng = Rng::new(opts.seed ^ 0x5a5a);
    let mut r = Report {
        scenario: "smoke".into(),
        nodes: n,
        ..Report::default()
    };
    if let Err(e) = wait_ready(&specs, STEP) {
        r.notes.push(e);
        r.converge_secs = None;
        return r;
    }
    let mut wl = match Workload::start(specs.clone(), opts) {
        Ok(w) => w,
        Err(e) => {
            r.notes.push(e);
            return r;
        }
    };
    soft(
        &mut r,
        wl.wait_acks(None, 10, STEP),
        "10 writes acknowledged before the faults",
    );

    // The leader cut off into the minority until the majority commits again.
    let old = leader(&specs);
    if lab
        .fault("partition-leader", "partition.sh", &["split-leader"])
        .is_ok()
    {
        std::thread::sleep(Duration::from_secs(5));
        let majority: Vec<usize> = (0..n).filter(|i| Some(*i) != old).collect();
        let before: usize = majority
            .iter()
            .map(|i| wl.ledger().acked_count(Some(*i)))
            .sum();
        let end = Instant::now() + STEP;
        while Instant::now() < end
            && majority
                .iter()
                .map(|i| wl.ledger().acked_count(Some(*i)))
                .sum::<usize>()
                < before + 5
        {
            std::thread::sleep(Duration::from_millis(250));
        }
        let after: usize = majority
            .iter()
            .map(|i| wl.ledger().acked_count(Some(*i)))
            .sum();
        soft(
            &mut r,
            after >= before + 5,
            "the majority committed 5 writes while the leader was cut off",
        );
        let _ = lab.script("partition.sh", &["heal"]);
        if let Some(o) = old {
            soft(
                &mut r,
                wl.wait_acks(Some(o), 1, STEP),
                "the old leader's writes committed after the heal",
            );
        }
    } else {
        r.notes
            .push("split-leader failed: no partition in this run".into());
    }

    // A follower killed while its writer goes on, then restarted.
    let now = leader(&specs);
    let f = other_than(n, &now.into_iter().collect::<Vec<_>>(), &mut rng);
    if lab
        .fault("kill9", "proc.sh", &["kill", &lab.arg(f)])
        .is_ok()
    {
        std::thread::sleep(Duration::from_secs(5));
        if let Err(e) = lab.script("proc.sh", &["restart", &lab.arg(f)]) {
            r.notes.push(e);
        }
        soft(
            &mut r,
            wl.wait_acks(Some(f), 2, STEP),
            "the restarted follower's writes committed",
        );
    }

    // One concurrent-edit round: the restarted follower and another node.
    let g = other_than(n, &[f], &mut rng);
    concurrent(&mut r, &wl, 0, f, g, lab);
    soft(
        &mut r,
        wl.wait_acks(None, 3, STEP),
        "writes acknowledged after the concurrent round",
    );

    wl.stop();
    if let Err(e) = lab.script("heal.sh", &[]) {
        r.notes.push(format!("heal: {e}"));
    }
    let healed = Instant::now();
    r.faults = lab.faults.clone();
    finish(&mut wl, &mut r, healed, SETTLE);
    r.run_secs = started.elapsed().as_secs_f64();
    r
}

fn concurrent(r: &mut Report, wl: &Workload, round: usize, a: usize, b: usize, lab: &Lab) {
    match wl.concurrent_round(round, a, b, STEP) {
        Ok((x, y, note)) => {
            lab.log(&format!(
                "concurrent edit round {round}: {x} on {}, {y} on {}",
                wl.nodes()[a].name,
                wl.nodes()[b].name
            ));
            r.concurrent_rounds += 1;
            if let Some(n) = note {
                r.notes.push(n);
            }
        }
        Err(e) => r.notes.push(format!("concurrent round {round}: {e}")),
    }
}

fn soft(r: &mut Report, ok: bool, what: &str) {
    if !ok {
        r.notes
            .push(format!("not within {}s: {what}", STEP.as_secs()));
    }
}

/// The fault cycle of the long run.
const CYCLE: [&str; 10] = [
    "split-leader",
    "kill-leader",
    "isolate",
    "loss",
    "empty-root",
    "split-leader",
    "pause",
    "oneway",
    "kill-follower",
    "disk-full",
];

pub fn long(lab: &mut Lab, opts: Opts, minutes: u64) -> Report {
    let started = Instant::now();
    let specs = lab.specs();
    let n = specs.len();
    let mut rng = Rng::new(opts.seed ^ 0x10_e6);
    let mut r = Report {
        scenario: format!("long ({minutes} min)"),
        nodes: n,
        ..Report::default()
    };
    if let Err(e) = wait_ready(&specs, STEP) {
        r.notes.push(e);
        return r;
    }
    let mut wl = match Workload::start(specs.clone(), opts) {
        Ok(w) => w,
        Err(e) => {
            r.notes.push(e);
            return r;
        }
    };
    soft(
        &mut r,
        wl.wait_acks(None, 10, STEP),
        "10 writes acknowledged before the faults",
    );
    let end = started + Duration::from_secs(minutes * 60);
    let mut step = 0usize;
    while Instant::now() < end {
        let kind = CYCLE[step % CYCLE.len()];
        let hold = Duration::from_secs(rng.range(5, 16));
        if let Err(e) = one_fault(lab, &specs, kind, hold, &mut rng, &mut r) {
            r.notes.push(format!("step {step} ({kind}): {e}"));
        }
        step += 1;
        if step.is_multiple_of(3) {
            let a = rng.range(0, n as u64) as usize;
            let b = other_than(n, &[a], &mut rng);
            concurrent(&mut r, &wl, step / 3, a, b, lab);
        }
        std::thread::sleep(Duration::from_secs(rng.range(2, 7)));
        if step.is_multiple_of(CYCLE.len()) {
            let c = wl.ledger().counts();
            lab.log(&format!(
                "progress: {} writes, {} acknowledged, faults {:?}",
                c.attempted, c.acknowledged, lab.faults
            ));
        }
    }
    wl.stop();
    if let Err(e) = lab.script("heal.sh", &[]) {
        r.notes.push(format!("heal: {e}"));
    }
    let healed = Instant::now();
    r.faults = lab.faults.clone();
    finish(&mut wl, &mut r, healed, SETTLE);
    r.run_secs = started.elapsed().as_secs_f64();
    r
}

/// Injects one fault of `kind`, holds it, heals it.
fn one_fault(
    lab: &mut Lab,
    specs: &[NodeSpec],
    kind: &str,
    hold: Duration,
    rng: &mut Rng,
    r: &mut Report,
) -> Result<(), String> {
    let n = specs.len();
    match kind {
        "empty-root" => empty_root(lab, specs, hold, rng, r),
        "disk-full" => {
            // The node's writer and its downloads fail with ENOSPC meanwhile
            // (counted as write errors, not as writes).
            let i = rng.range(0, n as u64) as usize;
            lab.fault("disk-full", "disk.sh", &["fill", &lab.arg(i)])?;
            std::thread::sleep(hold);
            lab.script("disk.sh", &["heal", &lab.arg(i)]).map(drop)
        }
        "split-leader" => {
            lab.fault("partition-leader", "partition.sh", &["split-leader"])?;
            std::thread::sleep(hold);
            lab.script("partition.sh", &["heal"]).map(drop)
        }
        "isolate" => {
            let i = rng.range(0, n as u64) as usize;
            lab.fault(
                "partition-isolate",
                "partition.sh",
                &["isolate", &lab.arg(i)],
            )?;
            std::thread::sleep(hold);
            lab.script("partition.sh", &["heal"]).map(drop)
        }
        "oneway" => {
            let a = rng.range(0, n as u64) as usize;
            let b = other_than(n, &[a], rng);
            lab.fault(
                "partition-oneway",
                "partition.sh",
                &["oneway", &lab.arg(a), &lab.arg(b)],
            )?;
            std::thread::sleep(hold);
            lab.script("partition.sh", &["heal"]).map(drop)
        }
        "loss" => {
            let i = rng.range(0, n as u64) as usize;
            lab.fault("loss", "loss.sh", &["on", &lab.arg(i), "0.3", "both"])?;
            std::thread::sleep(hold);
            lab.script("loss.sh", &["heal"]).map(drop)
        }
        "pause" => {
            let i = rng.range(0, n as u64) as usize;
            lab.fault("pause", "proc.sh", &["pause", &lab.arg(i)])?;
            std::thread::sleep(hold);
            lab.script("proc.sh", &["resume", &lab.arg(i)]).map(drop)
        }
        "kill-leader" | "kill-follower" => {
            let l = leader(specs).ok_or("no leader to find")?;
            let (i, k) = if kind == "kill-leader" {
                (l, "kill9-leader")
            } else {
                (other_than(n, &[l], rng), "kill9-follower")
            };
            lab.fault(k, "proc.sh", &["kill", &lab.arg(i)])?;
            std::thread::sleep(hold.min(Duration::from_secs(8)));
            lab.script("proc.sh", &["restart", &lab.arg(i)]).map(drop)
        }
        other => Err(format!("unknown fault {other}")),
    }
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
/// `halted` is noted.
fn empty_root(
    lab: &mut Lab,
    specs: &[NodeSpec],
    hold: Duration,
    rng: &mut Rng,
    r: &mut Report,
) -> Result<(), String> {
    let n = specs.len();
    let i = rng.range(0, n as u64) as usize;
    let j = other_than(n, &[i], rng);
    let before = committed_files(&specs[j]);
    lab.fault("empty-root", "disk.sh", &["empty-root", &lab.arg(i)])?;
    // A running daemon notices the swap only at its next full rescan
    // (minutes): restart it, as a NAS that booted without its disk.
    let crashed = lab.script("proc.sh", &["crash", &lab.arg(i)]);
    std::thread::sleep(hold);
    let halted = specs[i]
        .status()
        .ok()
        .and_then(|s| s.sync)
        .and_then(|y| y.halted);
    let after = committed_files(&specs[j]);
    let mut healed = lab.script("disk.sh", &["heal", &lab.arg(i)]).map(drop);
    if crashed.is_ok() {
        // Back on its real root: restart it again to leave the halt.
        healed = healed.and(lab.script("proc.sh", &["crash", &lab.arg(i)]).map(drop));
    }
    match &halted {
        Some(why) => lab.log(&format!("{} halted: {why}", specs[i].name)),
        None => r.notes.push(format!(
            "{} did not report halted while its root was empty",
            specs[i].name
        )),
    }
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
