//! The end of every run: stop the workload, wait for the cluster to settle
//! after the heal, sweep the last acknowledgements, check, and report the
//! figures (human-readable, plus one `CHAOS-RESULT {json}` line).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use super::checker::{self, Violation};
use super::ledger::Counts;
use super::observe::{NodeView, Observer};
use super::workload::Workload;

/// The longest the cluster may take to settle after the last heal. The
/// daemon's backstop rescan runs every 600 s: a deadline that long would
/// let a stall that only the rescan ends pass.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(30);

/// One named condition the scenario required during the run (e.g. "the
/// majority committed 5 writes while the leader was cut off").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was seen (the reason when it failed).
    pub detail: String,
}

/// Figures and findings of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub nodes: usize,
    pub counts: Counts,
    pub lost: usize,
    /// Faults the scenario set out to inject, by kind.
    pub planned: BTreeMap<String, u32>,
    /// Faults injected and confirmed, by kind.
    pub faults: BTreeMap<String, u32>,
    /// Faults (or heals) whose script failed or that were not confirmed.
    pub fault_failures: Vec<String>,
    pub checks: Vec<Check>,
    pub concurrent_rounds: usize,
    pub conflict_copies: usize,
    /// Conflict copies of single-writer paths ([`checker::self_conflicts`]).
    pub self_conflicts: Vec<String>,
    /// Files on the first node's disk at the end.
    pub files: usize,
    /// From the heal until every node settled; `None`: not within the
    /// (long) deadline of [`finish`]. More than [`CONVERGE_LIMIT`] fails.
    pub converge_secs: Option<f64>,
    /// Why the cluster had not settled [`CONVERGE_LIMIT`] after the heal:
    /// the checker's reason and each node's state then.
    pub converge_detail: Option<String>,
    pub run_secs: f64,
    pub violations: Vec<Violation>,
    pub notes: Vec<String>,
}

impl Report {
    /// Records a named check.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        if !ok {
            println!("CHECK FAILED: {name}: {detail}");
        }
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
        });
    }

    /// Every reason this run fails; empty: PASS.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.violations.is_empty() {
            out.push(format!("{} invariant violations", self.violations.len()));
        }
        let limit = CONVERGE_LIMIT.as_secs_f64();
        match self.converge_secs {
            None => out.push("the cluster did not converge after the heal".into()),
            Some(x) if x > limit => out.push(format!(
                "converged {x:.1} s after the heal, over the limit of {limit:.0} s"
            )),
            Some(_) => {}
        }
        for (kind, &want) in &self.planned {
            let got = self.faults.get(kind).copied().unwrap_or(0);
            if got < want {
                out.push(format!(
                    "fault {kind}: {want} planned, {got} injected and confirmed"
                ));
            }
        }
        for f in &self.fault_failures {
            out.push(format!("fault failed: {f}"));
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            out.push(format!("check failed: {}: {}", c.name, c.detail));
        }
        out
    }

    pub fn ok(&self) -> bool {
        self.failures().is_empty()
    }

    pub fn faults_total(&self) -> u32 {
        self.faults.values().sum()
    }

    pub fn planned_total(&self) -> u32 {
        self.planned.values().sum()
    }

    /// The report as text; the last line is `CHAOS-RESULT {json}`.
    pub fn render(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        let failures = self.failures();
        let verdict = if failures.is_empty() { "PASS" } else { "FAIL" };
        s.push_str(&format!(
            "== chaos {}: {verdict} ({} nodes, {:.0} s)\n",
            self.scenario, self.nodes, self.run_secs
        ));
        s.push_str(&format!(
            "writes attempted {}, acknowledged {} ({} only after the heal), never committed (superseded) {}, lost with a wiped disk (never acknowledged) {}, lost {}\n",
            c.attempted, c.acknowledged, c.acknowledged_late, c.abandoned, c.wiped, self.lost
        ));
        let kinds: BTreeSet<&String> = self.planned.keys().chain(self.faults.keys()).collect();
        let faults: Vec<String> = kinds
            .into_iter()
            .map(|k| {
                format!(
                    "{k} {}/{}",
                    self.faults.get(k).copied().unwrap_or(0),
                    self.planned.get(k).copied().unwrap_or(0)
                )
            })
            .collect();
        s.push_str(&format!(
            "faults injected and confirmed {} of {} planned ({})\n",
            self.faults_total(),
            self.planned_total(),
            faults.join(", ")
        ));
        let mut passed: BTreeMap<&str, usize> = BTreeMap::new();
        for ch in self.checks.iter().filter(|c| c.ok) {
            *passed.entry(ch.name.as_str()).or_default() += 1;
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        s.push_str(&format!(
            "checks {} passed, {failed} failed\n",
            self.checks.len() - failed
        ));
        for (name, n) in &passed {
            s.push_str(&format!("check ok: {name} (x{n})\n"));
        }
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
            Some(x) => s.push_str(&format!(
                "seconds to converge after heal {x:.1} (limit {})\n",
                CONVERGE_LIMIT.as_secs()
            )),
            None => s.push_str("did NOT converge within the deadline\n"),
        }
        if let Some(d) = &self.converge_detail {
            s.push_str(&format!(
                "not converged {} s after the heal: {d}\n",
                CONVERGE_LIMIT.as_secs()
            ));
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
        for f in &failures {
            s.push_str(&format!("FAIL: {f}\n"));
        }
        let kinds: BTreeMap<&str, usize> =
            self.violations.iter().fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v.kind).or_default() += 1;
                m
            });
        let j = json!({
            "scenario": self.scenario,
            "pass": failures.is_empty(),
            "nodes": self.nodes,
            "writes_attempted": c.attempted,
            "writes_acknowledged": c.acknowledged,
            "acknowledged_after_heal": c.acknowledged_late,
            "writes_wiped_unacknowledged": c.wiped,
            "writes_lost": self.lost,
            "faults_planned": self.planned_total(),
            "faults_injected": self.faults_total(),
            "faults": self.faults,
            "faults_planned_by_kind": self.planned,
            "fault_failures": self.fault_failures,
            "checks_passed": self.checks.len() - failed,
            "checks_failed": failed,
            "concurrent_rounds": self.concurrent_rounds,
            "conflict_copies": self.conflict_copies,
            "self_conflicts": self.self_conflicts.len(),
            "files": self.files,
            "seconds_to_converge": self.converge_secs,
            "converge_limit": CONVERGE_LIMIT.as_secs(),
            "run_seconds": self.run_secs,
            "violations": kinds,
            "failures": failures,
        });
        s.push_str(&format!("CHAOS-RESULT {j}\n"));
        s
    }
}

/// One line per node: what it reports (for a slow settle).
pub fn node_states(views: &[NodeView]) -> String {
    views
        .iter()
        .map(|v| match &v.status {
            Err(e) => format!("{}: no status ({e})", v.name),
            Ok(st) => {
                let sync = st.sync.as_ref().map(|y| {
                    format!(
                        " applied {} pending local {} remote {}{}",
                        y.applied,
                        y.pending_local,
                        y.pending_remote,
                        y.halted
                            .as_ref()
                            .map(|h| format!(" halted {h}"))
                            .unwrap_or_default()
                    )
                });
                format!(
                    "{}: {} leader {} raft applied {:?} in_sync {} local {} cluster {}{}",
                    v.name,
                    st.state,
                    st.leader.as_deref().unwrap_or("none"),
                    st.applied_index,
                    st.in_sync,
                    st.local_root.as_deref().map(short).unwrap_or("none"),
                    short(&st.cluster_root),
                    sync.unwrap_or_else(|| " sync not running".into())
                )
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// How [`wait_settled`] ended.
#[derive(Clone, Debug, Default)]
pub struct Settle {
    /// Seconds from `since` until settled; `None`: not within the deadline.
    pub secs: Option<f64>,
    /// The last reason it had not settled.
    pub last: String,
    /// If it had not settled `limit` after `since`: the reason then and
    /// every node's state.
    pub at_limit: Option<String>,
}

/// Polls until [`checker::settled`] holds or `deadline` passes; returns the
/// seconds it took from `since`, the last reason it did not hold, and, if
/// it had not settled `limit` after `since`, why not then.
pub fn wait_settled(
    obs: &mut Observer,
    wl: &Workload,
    since: Instant,
    limit: Duration,
    deadline: Duration,
) -> Settle {
    let end = Instant::now() + deadline;
    let mut out = Settle::default();
    loop {
        let views = obs.views(wl.nodes(), false);
        match checker::settled(&views) {
            Ok(_) => {
                out.secs = Some(since.elapsed().as_secs_f64());
                return out;
            }
            Err(e) => {
                // Each new reason once, with its time: the evidence of a
                // slow settle.
                if e != out.last {
                    eprintln!(
                        "settle +{:.1}s: not yet: {e}",
                        since.elapsed().as_secs_f64()
                    );
                }
                if out.at_limit.is_none() && since.elapsed() >= limit {
                    let at = format!("{e}; nodes: {}", node_states(&views));
                    eprintln!(
                        "settle: NOT settled {} s after the heal: {at}",
                        limit.as_secs()
                    );
                    out.at_limit = Some(at);
                }
                out.last = e;
            }
        }
        if Instant::now() >= end {
            return out;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Stops the workload (if still running), waits for the cluster to settle
/// (the faults must be healed by then, at `healed`; up to `deadline`, to
/// measure how long it took even when that is over [`CONVERGE_LIMIT`],
/// which fails the run), sweeps the
/// acknowledgements and runs every check.
pub fn finish(wl: &mut Workload, report: &mut Report, healed: Instant, deadline: Duration) {
    wl.stop();
    let mut obs = Observer::default();
    let settle = wait_settled(&mut obs, wl, healed, CONVERGE_LIMIT, deadline);
    report.converge_secs = settle.secs;
    report.converge_detail = settle.at_limit;
    if settle.secs.is_none() {
        report.notes.push(format!(
            "not settled after {}s: {}",
            deadline.as_secs(),
            settle.last
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A run where everything planned was confirmed, every check passed,
    /// nothing was violated and the cluster settled in 2 s.
    fn good() -> Report {
        let mut r = Report {
            scenario: "smoke".into(),
            nodes: 3,
            converge_secs: Some(2.0),
            ..Report::default()
        };
        for k in ["partition-leader", "kill9"] {
            r.planned.insert(k.into(), 1);
            r.faults.insert(k.into(), 1);
        }
        r.check("the majority committed", true, "10 -> 15");
        r
    }

    fn verdict(r: &Report) -> String {
        let text = r.render();
        assert!(text.lines().last().unwrap().starts_with("CHAOS-RESULT {"));
        text.lines().next().unwrap().to_string()
    }

    #[test]
    fn all_good_passes() {
        let r = good();
        assert!(r.ok(), "{:?}", r.failures());
        assert!(verdict(&r).contains("PASS"));
        assert!(r.render().contains("\"pass\":true"));
    }

    #[test]
    fn fewer_faults_confirmed_than_planned_fails() {
        let mut r = good();
        r.faults.insert("kill9".into(), 0);
        assert!(!r.ok());
        assert!(verdict(&r).contains("FAIL"));
        let f = r.failures();
        assert_eq!(f, vec!["fault kill9: 1 planned, 0 injected and confirmed"]);
        // A kind never injected at all counts too.
        let mut r = good();
        r.faults.remove("partition-leader");
        assert!(!r.ok());
        assert!(r.render().contains("partition-leader 0/1"));
    }

    #[test]
    fn a_fault_whose_script_failed_fails_even_if_others_made_up_the_count() {
        let mut r = good();
        r.fault_failures
            .push("heal of kill9: not confirmed: node 2 is down, not running".into());
        assert!(!r.ok());
        assert!(r.render().contains("FAIL: fault failed: heal of kill9"));
    }

    #[test]
    fn a_failed_check_fails() {
        let mut r = good();
        r.check(
            "the old leader's writes committed after the heal",
            false,
            "3 -> 3 acknowledged writes",
        );
        assert!(!r.ok());
        let text = r.render();
        assert!(text.contains("checks 1 passed, 1 failed"), "{text}");
        assert!(
            text.contains(
                "FAIL: check failed: the old leader's writes committed after the heal: 3 -> 3"
            ),
            "{text}"
        );
    }

    #[test]
    fn convergence_over_the_limit_fails_at_the_limit_passes() {
        let mut r = good();
        r.converge_secs = Some(31.0);
        r.converge_detail = Some("node2 not in_sync; nodes: ...".into());
        assert!(!r.ok());
        let text = r.render();
        assert!(text.contains("over the limit of 30 s"), "{text}");
        assert!(text.contains("not converged 30 s after the heal: node2 not in_sync"));
        r.converge_secs = Some(30.0);
        r.converge_detail = None;
        assert!(r.ok());
        r.converge_secs = None;
        assert!(!r.ok());
    }

    #[test]
    fn a_violation_fails() {
        let mut r = good();
        r.violations.push(Violation {
            kind: "lost-ack",
            node: None,
            path: "w0/a.dat".into(),
            id: Some("n0-000001".into()),
            detail: "gone".into(),
        });
        assert!(!r.ok());
    }
}
