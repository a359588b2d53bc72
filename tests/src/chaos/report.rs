//! The end of every run: stop the workload, wait for the cluster to settle
//! after the heal, sweep the last acknowledgements, check, and report the
//! figures (human-readable, plus one `CHAOS-RESULT {json}` line).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::checker::{self, Violation};
use super::ledger::Counts;
use super::observe::{NodeView, Observer};
use super::workload::Workload;

/// Figures and findings of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub nodes: usize,
    pub counts: Counts,
    pub lost: usize,
    pub faults: BTreeMap<String, u32>,
    pub concurrent_rounds: usize,
    pub conflict_copies: usize,
    /// Conflict copies of single-writer paths ([`checker::self_conflicts`]).
    pub self_conflicts: Vec<String>,
    /// Files on the first node's disk at the end.
    pub files: usize,
    /// From the heal until every node settled; `None`: not within the deadline.
    pub converge_secs: Option<f64>,
    pub run_secs: f64,
    pub violations: Vec<Violation>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.converge_secs.is_some()
    }

    pub fn faults_total(&self) -> u32 {
        self.faults.values().sum()
    }

    /// The report as text; the last line is `CHAOS-RESULT {json}`.
    pub fn render(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        let verdict = if self.ok() { "PASS" } else { "FAIL" };
        s.push_str(&format!(
            "== chaos {}: {verdict} ({} nodes, {:.0} s)\n",
            self.scenario, self.nodes, self.run_secs
        ));
        s.push_str(&format!(
            "writes attempted {}, acknowledged {} ({} only after the heal), never committed (superseded) {}, lost {}\n",
            c.attempted, c.acknowledged, c.acknowledged_late, c.abandoned, self.lost
        ));
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        s.push_str(&format!(
            "faults injected {} ({})\n",
            self.faults_total(),
            faults.join(", ")
        ));
        s.push_str(&format!(
            "concurrent-edit rounds {} ({} writes), conflict copies {} ({} of single-writer paths), files {}, write errors {}\n",
            self.concurrent_rounds,
            c.concurrent,
            self.conflict_copies,
            self.self_conflicts.len(),
            self.files,
            c.write_errors
        ));
        match self.converge_secs {
            Some(x) => s.push_str(&format!("seconds to converge after heal {x:.1}\n")),
            None => s.push_str("did NOT converge within the deadline\n"),
        }
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        for x in self.self_conflicts.iter().take(20) {
            s.push_str(&format!("SELF-CONFLICT {x}\n"));
        }
        for v in self.violations.iter().take(40) {
            s.push_str(&format!("VIOLATION {v}\n"));
        }
        if self.violations.len() > 40 {
            s.push_str(&format!(
                "... {} violations in all\n",
                self.violations.len()
            ));
        }
        let kinds: BTreeMap<&str, usize> =
            self.violations.iter().fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v.kind).or_default() += 1;
                m
            });
        let j = json!({
            "scenario": self.scenario,
            "pass": self.ok(),
            "nodes": self.nodes,
            "writes_attempted": c.attempted,
            "writes_acknowledged": c.acknowledged,
            "acknowledged_after_heal": c.acknowledged_late,
            "writes_lost": self.lost,
            "faults_injected": self.faults_total(),
            "faults": self.faults,
            "concurrent_rounds": self.concurrent_rounds,
            "conflict_copies": self.conflict_copies,
            "self_conflicts": self.self_conflicts.len(),
            "files": self.files,
            "seconds_to_converge": self.converge_secs,
            "run_seconds": self.run_secs,
            "violations": kinds,
        });
        s.push_str(&format!("CHAOS-RESULT {j}\n"));
        s
    }
}

/// Polls until [`checker::settled`] holds or `deadline` passes; returns the
/// seconds it took from `since`, and the last reason it did not hold.
pub fn wait_settled(
    obs: &mut Observer,
    wl: &Workload,
    since: Instant,
    deadline: Duration,
) -> (Option<f64>, String) {
    let end = Instant::now() + deadline;
    let mut last = String::new();
    loop {
        let views = obs.views(wl.nodes(), false);
        match checker::settled(&views) {
            Ok(_) => return (Some(since.elapsed().as_secs_f64()), last),
            Err(e) => {
                // Each new reason once, with its time: the evidence of a
                // slow settle.
                if e != last {
                    eprintln!(
                        "settle +{:.1}s: not yet: {e}",
                        since.elapsed().as_secs_f64()
                    );
                }
                last = e;
            }
        }
        if Instant::now() >= end {
            return (None, last);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Stops the workload (if still running), waits for the cluster to settle
/// (the faults must be healed by then, at `healed`), sweeps the
/// acknowledgements and runs every check.
pub fn finish(wl: &mut Workload, report: &mut Report, healed: Instant, deadline: Duration) {
    wl.stop();
    let mut obs = Observer::default();
    let (secs, last) = wait_settled(&mut obs, wl, healed, deadline);
    report.converge_secs = secs;
    if secs.is_none() {
        report
            .notes
            .push(format!("not settled after {}s: {last}", deadline.as_secs()));
    }
    let mut swept = Err(String::from("no node answered"));
    for via in 0..wl.nodes().len() {
        swept = wl.sweep(via);
        if swept.is_ok() {
            break;
        }
    }
    if let Err(e) = swept {
        report
            .notes
            .push(format!("final acknowledgement sweep failed: {e}"));
    }
    let views: Vec<NodeView> = obs.views(wl.nodes(), true);
    let writes = wl.ledger().snapshot();
    // Violations the scenario found during the run come first.
    report.violations.extend(checker::check(&writes, &views));
    report.lost = checker::lost_writes(&report.violations);
    report.conflict_copies = checker::conflict_copies(&views);
    report.self_conflicts = checker::self_conflicts(&writes, &views);
    report.files = views.first().map(|v| v.disk.files.len()).unwrap_or(0);
    report.counts = wl.ledger().counts();
    report.nodes = wl.nodes().len();
    if let Some(e) = wl.ledger().last_write_error() {
        report.notes.push(format!("last write error: {e}"));
    }
}
