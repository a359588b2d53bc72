//! How the workload reaches one node: its synced directory on this host's
//! file system, a staging directory on the same file system (so a rename
//! into the synced directory is atomic), and its control API through the
//! `filesyncd` CLI (`--json`), whatever network namespace the node lives in.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use filesyncd::api::files::types::{HistoryAnswer, LsAnswer, VerifyAnswer};
use filesyncd::api::types::Status;
use filesyncd_chunkstore::chunker::{chunk_and_hash, ChunkerParams};

/// Converts a CLI answer to its API type (a generic helper would need a
/// direct `serde` dependency for the trait bound).
macro_rules! typed {
    ($name:expr, $v:expr) => {
        serde_json::from_value($v).map_err(|e| format!("{}: unexpected JSON: {e}", $name))
    };
}

/// Longest a CLI call may take before it is killed (a paused node never
/// answers; the CLI's own I/O timeout is 30 s).
const CLI_DEADLINE: Duration = Duration::from_secs(45);

/// One node as the workload and the checker see it.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    /// The synced directory.
    pub dir: PathBuf,
    /// Where writers stage a file before renaming it into `dir` (same file
    /// system, outside `dir`).
    pub stage: PathBuf,
    /// A directory that must hold nothing but `outside_allowed` (the
    /// checker's "nothing outside the roots"), if any.
    pub outside: Option<PathBuf>,
    pub outside_allowed: Vec<String>,
    /// The CLI's program and leading arguments (e.g. `ip netns exec fsd1
    /// filesyncd`), then `--api` this address.
    pub cli: Vec<OsString>,
    pub api: String,
}

impl NodeSpec {
    /// `filesyncd ARGS --json --api API`, stdout parsed.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let out = self.cli_raw(args, true)?;
        serde_json::from_str(&out)
            .map_err(|e| format!("{}: bad JSON from {args:?}: {e}", self.name))
    }

    /// Runs the CLI with a deadline; stdout on exit 0, else the error.
    pub fn cli_raw(&self, args: &[&str], json: bool) -> Result<String, String> {
        let (prog, lead) = self.cli.split_first().ok_or("empty CLI command")?;
        let mut cmd = Command::new(prog);
        cmd.args(lead).args(args);
        if json {
            cmd.arg("--json");
        }
        cmd.args(["--api", &self.api])
            .env_remove("FILESYNCD_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot run the CLI: {e}", self.name))?;
        // Readers on their own threads: a big answer must not fill the pipe
        // while we wait for the exit.
        let mut so = child.stdout.take().ok_or("no stdout")?;
        let mut se = child.stderr.take().ok_or("no stderr")?;
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let end = Instant::now() + CLI_DEADLINE;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let stdout = t_out.join().unwrap_or_default();
        let stderr = t_err.join().unwrap_or_default();
        match status {
            Some(st) if st.success() => Ok(stdout),
            Some(st) => Err(format!(
                "{}: filesyncd {}: {st}: {}",
                self.name,
                args.join(" "),
                stderr.trim()
            )),
            None => Err(format!(
                "{}: filesyncd {} did not answer within {}s",
                self.name,
                args.join(" "),
                CLI_DEADLINE.as_secs()
            )),
        }
    }

    pub fn status(&self) -> Result<Status, String> {
        typed!(&self.name, self.cli_json(&["status"])?)
    }

    /// Every retained version of `path` (none if it was never committed).
    pub fn history(&self, path: &str) -> Result<HistoryAnswer, String> {
        match self
            .cli_json(&["history", path])
            .and_then(|v| typed!(&self.name, v))
        {
            Err(e) if is_not_found(&e) => Ok(HistoryAnswer {
                path: path.to_string(),
                versions: Vec::new(),
            }),
            r => r,
        }
    }

    /// Everything committed (all pages), or everything below `path`.
    pub fn ls_recursive(&self, path: &str) -> Result<LsAnswer, String> {
        let v = if path.is_empty() {
            self.cli_json(&["ls", "-R"])?
        } else {
            self.cli_json(&["ls", "-R", path])?
        };
        typed!(&self.name, v)
    }

    /// The direct entries of a directory (an absent directory is empty).
    pub fn ls_dir(&self, path: &str) -> Result<LsAnswer, String> {
        let args: &[&str] = if path.is_empty() {
            &["ls"]
        } else {
            &["ls", path]
        };
        match self.cli_json(args).and_then(|v| typed!(&self.name, v)) {
            Ok(a) => Ok(a),
            Err(e) if is_not_found(&e) => Ok(LsAnswer {
                path: path.to_string(),
                recursive: false,
                entries: Vec::new(),
                next_after: None,
            }),
            Err(e) => Err(e),
        }
    }

    pub fn verify(&self) -> Result<VerifyAnswer, String> {
        typed!(&self.name, self.cli_json(&["verify"])?)
    }
}

fn is_not_found(err: &str) -> bool {
    err.contains("answered 404")
}

/// A file's identity as the cluster records it: Merkle root (hex) with the
/// default chunker, and size.
pub fn bytes_root(bytes: &[u8]) -> (String, u64) {
    root_of_reader(bytes).expect("reading memory cannot fail")
}

fn root_of_reader<R: Read + Send>(r: R) -> Result<(String, u64), String> {
    let chunker = ChunkerParams::default()
        .validate()
        .map_err(|e| format!("default chunker params: {e}"))?;
    let chunks = chunk_and_hash(r, &chunker).map_err(|e| e.to_string())?;
    let tree = filesyncd_merkle::build(&chunks.entries);
    Ok((tree.root.to_string(), tree.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_the_chunk_commands() {
        // `filesyncd chunk` printed this root for the 6 bytes "hello\n".
        let (r, s) = bytes_root(b"hello\n");
        assert_eq!(s, 6);
        assert_eq!(
            r,
            "4792c8ced7e7d8e983936be9a561c7325b6b8e159a05e50b0c3a9ecdc1dfecce"
        );
        let mut data = vec![0u8; 300_000];
        super::super::content::Rng::new(3).fill(&mut data);
        let (r1, s1) = bytes_root(&data);
        assert_eq!(s1, 300_000);
        assert_ne!(r1, bytes_root(&data[1..]).0);
    }

    #[test]
    fn a_cli_that_fails_is_an_error() {
        let n = NodeSpec {
            name: "n".into(),
            dir: "/nonexistent".into(),
            stage: "/nonexistent".into(),
            outside: None,
            outside_allowed: vec![],
            cli: vec!["false".into()],
            api: "127.0.0.1:1".into(),
        };
        assert!(n.cli_raw(&["status"], true).is_err());
    }
}
