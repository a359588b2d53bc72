//! The network-namespace lab of `deploy/chaos/` as the suite drives it:
//! node specs from its state directory, faults through its scripts (each
//! logged with the time since the start and counted by kind).
//!
//! The scripts read the same environment as this program (`FSD_STATE`,
//! `FSD_PREFIX`, `FSD_SUBNET`, `FSD_BIN`, ...), which it passes on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

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
    pub faults: BTreeMap<String, u32>,
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
            faults: BTreeMap::new(),
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
                    cli: vec![
                        "ip".into(),
                        "netns".into(),
                        "exec".into(),
                        format!("{}{i}", self.prefix).into(),
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

    /// [`Lab::script`], counted as one fault of `kind` if it succeeds.
    pub fn fault(&mut self, kind: &str, script: &str, args: &[&str]) -> Result<String, String> {
        let r = self.script(script, args);
        if r.is_ok() {
            *self.faults.entry(kind.to_string()).or_default() += 1;
        }
        r
    }
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
