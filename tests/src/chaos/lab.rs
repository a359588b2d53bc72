//! The network-namespace lab of `deploy/chaos/` as the suite drives it:
//! node specs from its state directory, faults through its scripts (each
//! logged with the time since the start).
//!
//! Every fault is *planned*, then injected by its script, then *confirmed*
//! by looking at the lab: UDP probes between the namespaces for partitions
//! and packet loss (`reach.sh`), the process state for kills and pauses
//! (`proc.sh state`), the file systems for the disk faults (`disk.sh
//! state`, `member.sh state`). A fault counts only once confirmed; a script
//! that fails, or a fault (or its heal) that cannot be confirmed, is
//! recorded in [`Lab::failures`] and fails the run.
//!
//! The scripts read the same environment as this program (`FSD_STATE`,
//! `FSD_PREFIX`, `FSD_SUBNET`, `FSD_BIN`, ...), which it passes on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::node::NodeSpec;

/// API address inside every namespace (see `deploy/chaos/lib.sh`).
const API: &str = "127.0.0.1:7401";
/// The workload's staging directory, beside the synced `dir/` on each
/// node's tmpfs.
pub const STAGE: &str = ".chaos-stage";

pub struct Lab {
    pub chaos_dir: PathBuf,
    pub state: PathBuf,
    pub prefix: String,
    pub bin: PathBuf,
    /// Script node numbers (1-based), in order; spec `i` is node `ids[i]`.
    pub ids: Vec<usize>,
    /// Faults the run set out to inject, by kind.
    pub planned: BTreeMap<String, u32>,
    /// Faults injected and confirmed, by kind.
    pub faults: BTreeMap<String, u32>,
    /// Why a planned fault or a heal failed (script error, not confirmed).
    pub failures: Vec<String>,
    start: Instant,
}

impl Lab {
    /// The lab `netns.sh up` made, from the environment.
    pub fn from_env(chaos_dir: PathBuf) -> Result<Lab, String> {
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let state = PathBuf::from(env("FSD_STATE", "/tmp/filesyncd-chaos"));
        let bin = std::env::var_os("FSD_BIN")
            .map(PathBuf::from)
            .ok_or("FSD_BIN is not set (the filesyncd binary the lab runs)")?;
        let nodes = std::fs::read_to_string(state.join("nodes"))
            .map_err(|e| format!("{}/nodes: {e} (run netns.sh up first)", state.display()))?;
        let ids: Vec<usize> = nodes
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if ids.is_empty() {
            return Err(format!("{}/nodes lists no node", state.display()));
        }
        Ok(Lab {
            chaos_dir,
            state,
            prefix: env("FSD_PREFIX", "fsd"),
            bin,
            ids,
            planned: BTreeMap::new(),
            faults: BTreeMap::new(),
            failures: Vec::new(),
            start: Instant::now(),
        })
    }

    pub fn specs(&self) -> Vec<NodeSpec> {
        self.ids
            .iter()
            .map(|&i| {
                let fs = self.state.join(format!("n{i}/fs"));
                NodeSpec {
                    name: format!("node{i}"),
                    dir: fs.join("dir"),
                    stage: fs.join(STAGE),
                    outside: Some(fs),
                    outside_allowed: Vec::new(),
                    // Every node's API is 127.0.0.1:7401 in its own
                    // namespace: the CLI finds the node's secret in its data
                    // dir (deploy/chaos/lib.sh `fsd_data`), not by address.
                    cli: vec![
                        "ip".into(),
                        "netns".into(),
                        "exec".into(),
                        format!("{}{i}", self.prefix).into(),
                        "env".into(),
                        format!(
                            "FILESYNCD_DATA={}",
                            self.state.join(format!("n{i}/dfs/data")).display()
                        )
                        .into(),
                        self.bin.clone().into(),
                    ],
                    api: API.to_string(),
                }
            })
            .collect()
    }

    /// The script's node number of spec `i`, as an argument.
    pub fn arg(&self, i: usize) -> String {
        self.ids[i].to_string()
    }

    pub fn log(&self, msg: &str) {
        println!("[{:7.1}s] {msg}", self.start.elapsed().as_secs_f64());
    }

    /// Runs `deploy/chaos/<script> ARGS`; its output on success.
    pub fn script(&self, script: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.chaos_dir.join(script))
            .args(args)
            .output()
            .map_err(|e| format!("{script}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ");
        let err = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        if out.status.success() {
            self.log(&format!("{script} {}: {text}", args.join(" ")));
            Ok(text)
        } else {
            self.log(&format!(
                "{script} {} FAILED ({}): {text} {err}",
                args.join(" "),
                out.status
            ));
            Err(format!(
                "{script} {}: {}: {err}",
                args.join(" "),
                out.status
            ))
        }
    }

    /// The spec index of script node number `id`.
    pub fn index_of(&self, id: usize) -> Option<usize> {
        self.ids.iter().position(|&x| x == id)
    }

    /// Plans one fault of `kind`: the run fails unless as many faults of
    /// the kind are confirmed ([`Lab::inject`]) as were planned.
    pub fn plan(&mut self, kind: &str) {
        *self.planned.entry(kind.to_string()).or_default() += 1;
    }

    /// Injects a fault of `kind` (planned with [`Lab::plan`]) with `script
    /// ARGS` and confirms it with `confirm` (given the script's output;
    /// retried for up to [`CONFIRM`]). Counted in [`Lab::faults`] only when
    /// confirmed; otherwise the reason goes to [`Lab::failures`] and is
    /// returned.
    pub fn inject<F>(
        &mut self,
        kind: &str,
        script: &str,
        args: &[&str],
        confirm: F,
    ) -> Result<String, String>
    where
        F: Fn(&Lab, &str) -> Result<String, String>,
    {
        self.inject_within(kind, script, args, CONFIRM, confirm)
    }

    /// [`Lab::inject`] with another confirmation deadline (a fault that
    /// takes effect only when the daemon gets there, e.g. a crash point).
    pub fn inject_within<F>(
        &mut self,
        kind: &str,
        script: &str,
        args: &[&str],
        within: Duration,
        confirm: F,
    ) -> Result<String, String>
    where
        F: Fn(&Lab, &str) -> Result<String, String>,
    {
        let out = self.run_confirmed(kind, "injection failed", script, args, within, confirm)?;
        *self.faults.entry(kind.to_string()).or_default() += 1;
        Ok(out)
    }

    /// A step of a fault after its injection (e.g. the removal of the
    /// wiped node from the membership), confirmed like [`Lab::inject`];
    /// a failure is one of the run, but plans and counts nothing.
    pub fn step<F>(
        &mut self,
        what: &str,
        script: &str,
        args: &[&str],
        confirm: F,
    ) -> Result<String, String>
    where
        F: Fn(&Lab, &str) -> Result<String, String>,
    {
        self.run_confirmed(what, "failed", script, args, CONFIRM, confirm)
    }

    /// Runs `script ARGS`, then `confirm` on its output until it holds or
    /// `within` passes; a failure of either is recorded ([`Lab::failed`])
    /// as `<what>: <failed>: ...` or `<what>: not confirmed: ...`.
    fn run_confirmed<F>(
        &mut self,
        what: &str,
        failed: &str,
        script: &str,
        args: &[&str],
        within: Duration,
        confirm: F,
    ) -> Result<String, String>
    where
        F: Fn(&Lab, &str) -> Result<String, String>,
    {
        let out = match self.script(script, args) {
            Ok(out) => out,
            Err(e) => return Err(self.failed(format!("{what}: {failed}: {e}"))),
        };
        match self.confirmed_within(&out, within, confirm) {
            Ok(how) => {
                self.log(&format!("{what} confirmed: {how}"));
                Ok(out)
            }
            Err(e) => Err(self.failed(format!("{what}: not confirmed: {e}"))),
        }
    }

    /// Heals a fault with `script ARGS` and confirms the heal the same way.
    pub fn heal<F>(
        &mut self,
        kind: &str,
        script: &str,
        args: &[&str],
        confirm: F,
    ) -> Result<(), String>
    where
        F: Fn(&Lab, &str) -> Result<String, String>,
    {
        self.step(&format!("heal of {kind}"), script, args, confirm)
            .map(drop)
    }

    /// Records a failure of the run's faults that no script reported.
    pub fn failed(&mut self, why: String) -> String {
        self.log(&format!("FAULT FAILED: {why}"));
        self.failures.push(why.clone());
        why
    }

    fn confirmed_within<F>(&self, out: &str, within: Duration, confirm: F) -> Result<String, String>
    where
        F: Fn(&Lab, &str) -> Result<String, String>,
    {
        let end = Instant::now() + within;
        loop {
            match confirm(self, out) {
                Ok(how) => return Ok(how),
                Err(e) if Instant::now() >= end => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// The ordered pairs (script node numbers) between which no UDP probe
    /// arrives now (`reach.sh blocked`).
    pub fn blocked_pairs(&self) -> Result<BTreeSet<(usize, usize)>, String> {
        let out = self.quiet("reach.sh", &["blocked"])?;
        parse_pairs(&out)
    }

    /// Confirms that exactly `want` is blocked.
    pub fn expect_blocked(&self, want: &BTreeSet<(usize, usize)>) -> Result<String, String> {
        let got = self.blocked_pairs()?;
        if &got == want {
            Ok(format!("probes blocked exactly {}", show_pairs(&got)))
        } else {
            Err(format!(
                "probes blocked {}, intended {}",
                show_pairs(&got),
                show_pairs(want)
            ))
        }
    }

    /// `proc.sh state` of spec `i`: running, paused or down.
    pub fn proc_state(&self, i: usize) -> Result<String, String> {
        self.quiet("proc.sh", &["state", &self.arg(i)])
    }

    /// Confirms `proc.sh state` of spec `i` is `want`.
    pub fn expect_state(&self, i: usize, want: &str) -> Result<String, String> {
        let got = self.proc_state(i)?;
        if got == want {
            Ok(format!("node {} is {got}", self.arg(i)))
        } else {
            Err(format!("node {} is {got}, not {want}", self.arg(i)))
        }
    }

    /// The `key=value` fields of a script's one-line state (`disk.sh state
    /// i`, `member.sh state i`).
    pub fn fields(&self, script: &str, i: usize) -> Result<BTreeMap<String, String>, String> {
        Ok(parse_fields(&self.quiet(script, &["state", &self.arg(i)])?))
    }

    /// Datagrams of `count` from `a` to `b` (specs) that arrived.
    pub fn probe(&self, a: usize, b: usize, count: u32) -> Result<u32, String> {
        // reach.sh exits 1 when nothing arrived: still an answer.
        let out = Command::new(self.chaos_dir.join("reach.sh"))
            .args([self.arg(a), self.arg(b), count.to_string()])
            .output()
            .map_err(|e| format!("reach.sh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_probe(&text).ok_or_else(|| format!("reach.sh: unexpected answer {text:?}"))
    }

    /// Runs a script whose output is an answer, not an event: not logged.
    fn quiet(&self, script: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.chaos_dir.join(script))
            .args(args)
            .output()
            .map_err(|e| format!("{script}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "{script} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// How long a fault (or its heal) may take to show after its script.
pub const CONFIRM: Duration = Duration::from_secs(15);

/// `reach.sh blocked` output ("1>2 3>1 ...") as pairs.
pub fn parse_pairs(s: &str) -> Result<BTreeSet<(usize, usize)>, String> {
    s.split_whitespace()
        .map(|p| {
            let (a, b) = p.split_once('>').ok_or(format!("bad pair {p:?}"))?;
            let n = |x: &str| {
                x.parse::<usize>()
                    .map_err(|e| format!("bad pair {p:?}: {e}"))
            };
            Ok((n(a)?, n(b)?))
        })
        .collect()
}

pub fn show_pairs(p: &BTreeSet<(usize, usize)>) -> String {
    if p.is_empty() {
        return "nothing".into();
    }
    p.iter()
        .map(|(a, b)| format!("{a}>{b}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every ordered pair between groups `a` and `b`, both ways.
pub fn cut(a: &[usize], b: &[usize]) -> BTreeSet<(usize, usize)> {
    let mut out = BTreeSet::new();
    for &x in a {
        for &y in b {
            out.insert((x, y));
            out.insert((y, x));
        }
    }
    out
}

/// The groups of `partition.sh`'s "partition: {1} | {2,3}" line.
pub fn parse_split(out: &str) -> Result<(Vec<usize>, Vec<usize>), String> {
    let line = out
        .split("; ")
        .find_map(|l| l.trim().strip_prefix("partition: "))
        .ok_or(format!("no \"partition:\" line in {out:?}"))?;
    let (a, b) = line
        .split_once(" | ")
        .ok_or(format!("no two groups in {line:?}"))?;
    let group = |g: &str| -> Result<Vec<usize>, String> {
        g.trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .map_err(|e| format!("bad group {g:?}: {e}"))
            })
            .collect()
    };
    Ok((group(a)?, group(b)?))
}

/// "k=v k=v" as a map.
pub fn parse_fields(s: &str) -> BTreeMap<String, String> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The received count of `reach.sh A B N`'s "A->B ok|blocked GOT/N".
pub fn parse_probe(s: &str) -> Option<u32> {
    let last = s.split_whitespace().last()?;
    last.split_once('/')?.0.parse().ok()
}

/// The spec index of the node most running nodes name as leader.
pub fn leader(specs: &[NodeSpec]) -> Option<usize> {
    let statuses: Vec<_> = specs.iter().map(|s| s.status().ok()).collect();
    let mut votes: BTreeMap<String, usize> = BTreeMap::new();
    for l in statuses.iter().flatten().filter_map(|s| s.leader.clone()) {
        *votes.entry(l).or_default() += 1;
    }
    let (id, _) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    statuses
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.node_id == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_output_names_the_groups_and_the_cut_pairs() {
        let (a, b) = parse_split("leader: node 2; partition: {2} | {1,3}").unwrap();
        assert_eq!((a.clone(), b.clone()), (vec![2], vec![1, 3]));
        let want: BTreeSet<_> = [(2, 1), (1, 2), (2, 3), (3, 2)].into_iter().collect();
        assert_eq!(cut(&a, &b), want);
        assert!(parse_split("partition: healed all").is_err());
        assert!(parse_split("nothing").is_err());
    }

    #[test]
    fn probe_answers_parse() {
        assert_eq!(
            parse_pairs("1>2 3>1").unwrap(),
            [(1, 2), (3, 1)].into_iter().collect()
        );
        assert!(parse_pairs("").unwrap().is_empty());
        assert!(parse_pairs("1-2").is_err());
        assert_eq!(parse_probe("1->2 ok 71/100\n"), Some(71));
        assert_eq!(parse_probe("1->2 blocked 0/5"), Some(0));
        assert_eq!(parse_probe(""), None);
        let f = parse_fields("free=0 ballast=1 empty_root=0");
        assert_eq!(f.get("ballast").map(String::as_str), Some("1"));
        assert_eq!(f.len(), 3);
    }
}
