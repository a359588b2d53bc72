//! Multi-process test harness: real `filesyncd` daemons on loopback,
//! driven through their CLI, the way an operator would.
//!
//! ```no_run
//! use filesyncd_systests::{serial, Cluster, DEADLINE};
//!
//! let _guard = serial(); // one cluster at a time per test binary
//! let mut c = Cluster::start(3).unwrap(); // node 0 forms, 1 and 2 join with tokens
//! let s = c.wait_converged(3, 3).unwrap(); // same leader, 3 members, 3 voters
//! let members = c.node(0).members().unwrap();
//! let out = c.node(1).cli(&["members", "--json"]); // exit code, stdout, stderr
//! std::fs::write(c.node(2).dir().join("hello.txt"), b"hi").unwrap();
//! c.node_mut(1).kill9(); // SIGKILL
//! c.node_mut(1).restart().unwrap(); // same command line, waits for /healthz
//! let i = c.add_node().unwrap(); // a 4th node joins with a fresh token
//! ```
//!
//! * **Binary**: `$FILESYNCD_BIN` if set, else `cargo build -p filesyncd --features failpoints`
//!   (once per test process; a no-op when fresh) and
//!   `<target>/{debug,release}/filesyncd` (`$CARGO_TARGET_DIR` or the
//!   workspace's `target/`), release when the tests are built with
//!   `--release`.
//! * **Nodes**: each on its own `127.0.x.y` with free UDP (p2p) and TCP
//!   (control API) ports, with `<root>/<name>/dir` (synced), `.../data`
//!   (state) and `.../log` (stdout and stderr of every run, appended).
//!   `RUST_LOG` of the daemons is `$FILESYNCD_TEST_LOG`, else `info`.
//! * **CLI**: [`Node::cli`] runs `filesyncd <args> --api <its API>`;
//!   [`Node::cli_json`] adds `--json` and parses stdout.
//! * **Waits** poll a condition until a generous deadline ([`DEADLINE`]);
//!   nothing asserts on durations.
//! * **Clean-up**: dropping a [`Node`] SIGKILLs its process; dropping a
//!   [`Cluster`] also removes its directory, unless the test is panicking
//!   (then every node's log tail is printed and the directory kept) or
//!   `$FILESYNCD_KEEP` is set.
//! * Options: [`Cluster::builder`] sets `max_voters` (through a TOML
//!   `--config` file) and `--join-timeout` for every node it starts.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use filesyncd::api::types::{Member, Status};
pub use serde_json::Value;

pub mod tree;

/// Default deadline of every wait (generous: the machine is shared and noisy).
pub const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// A harness failure, with what it was waiting for and the last observation.
pub struct Error(pub String);

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

/// Serializes the tests of one binary that start clusters (each cluster
/// is several processes; two at once on a small machine only slow both).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The `filesyncd` binary (see the module doc).
pub fn filesyncd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FILESYNCD_BIN") {
            return PathBuf::from(p);
        }
        let ws = workspace_root();
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&ws)
            .args(["build", "-p", "filesyncd", "--bin", "filesyncd"])
            // As `cargo test --workspace` builds it (this crate asks for
            // the feature): with the crash points of tests/tests/crash.rs.
            .args(["--features", "failpoints"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo to build filesyncd");
        assert!(
            status.success(),
            "cargo build -p filesyncd failed: {status}"
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
            Some(t) => ws.join(t),
            None => ws.join("target"),
        };
        target
            .join(if release { "release" } else { "debug" })
            .join("filesyncd")
    })
}

/// A fresh loopback address: `127.0.x.y`, spread by process id so that
/// concurrent test binaries rarely share one (ports are checked free anyway).
fn next_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id() % 200) * 250 + NEXT.fetch_add(1, Ordering::Relaxed);
    let n = n % (250 * 250);
    Ipv4Addr::new(127, 0, (n / 250 + 1) as u8, (n % 250 + 2) as u8)
}

fn free_udp_port(ip: Ipv4Addr) -> Result<u16> {
    let s = UdpSocket::bind((ip, 0)).map_err(|e| Error(format!("bind udp {ip}: {e}")))?;
    Ok(s.local_addr().map_err(|e| Error(e.to_string()))?.port())
}

fn free_tcp_port(ip: Ipv4Addr) -> Result<u16> {
    let s = TcpListener::bind((ip, 0)).map_err(|e| Error(format!("bind tcp {ip}: {e}")))?;
    Ok(s.local_addr().map_err(|e| Error(e.to_string()))?.port())
}

/// A free `127.0.x.y:port` nobody listens on (for "unreachable" tests).
pub fn unused_p2p_addr() -> Result<String> {
    let ip = next_ip();
    Ok(format!("{ip}:{}", free_udp_port(ip)?))
}

/// Polls `f` every 200 ms until it answers `Ok(Some(_))` or `deadline`
/// passes; `Ok(None)` and `Err` mean "not yet" (the last `Err` is reported).
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let end = Instant::now() + deadline;
    let mut last = String::from("condition false");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.0,
        }
        if Instant::now() >= end {
            return err(format!(
                "timed out after {}s waiting for {what}; last: {last}",
                deadline.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// What a CLI call printed and returned.
#[derive(Clone, Debug)]
pub struct CliOutput {
    /// `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Reproducible bytes of length `n` for `seed` (xorshift): incompressible
/// enough to be chunked and pulled rather than sent inline.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One daemon (running or not).
pub struct Node {
    pub name: String,
    ip: Ipv4Addr,
    p2p_port: u16,
    api_port: u16,
    root: PathBuf,
    /// Extra `run` flags (join, token, config...), kept for restarts.
    args: Vec<String>,
    /// Extra environment of the process (e.g. `FAILPOINTS`), kept for restarts.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    /// Prepares a node under `parent/<name>` (directories and ports); not started.
    pub fn new(parent: &Path, name: &str, args: Vec<String>) -> Result<Node> {
        let ip = next_ip();
        let root = parent.join(name);
        for d in ["dir", "data"] {
            fs::create_dir_all(root.join(d)).map_err(|e| Error(format!("mkdir: {e}")))?;
        }
        Ok(Node {
            name: name.to_string(),
            ip,
            p2p_port: free_udp_port(ip)?,
            api_port: free_tcp_port(ip)?,
            root,
            args,
            env: Vec::new(),
            child: None,
        })
    }

    /// The synced directory.
    pub fn dir(&self) -> PathBuf {
        self.root.join("dir")
    }

    /// The state directory (`--data`).
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Everything the process wrote (all runs).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Control API address, `127.0.x.y:port`.
    pub fn api(&self) -> String {
        format!("{}:{}", self.ip, self.api_port)
    }

    /// Peer-to-peer address as `--join` takes it, `127.0.x.y:port`.
    pub fn p2p_addr(&self) -> String {
        format!("{}:{}", self.ip, self.p2p_port)
    }

    /// Moves the peer-to-peer listen address to a new free port (for the
    /// next start): the node "moved", as after a new lease or a recreated
    /// container.
    pub fn move_p2p_port(&mut self) -> Result<()> {
        self.p2p_port = free_udp_port(self.ip)?;
        Ok(())
    }

    /// The `run` flags this node starts with (beyond dir, data, listen, api).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Replaces the extra `run` flags for the next start.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    /// Replaces the extra environment for the next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Starts the process (does not wait for it to be ready).
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return err(format!("{} is already running", self.name));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Error(format!("log file: {e}")))?;
        let log2 = log.try_clone().map_err(|e| Error(e.to_string()))?;
        let filter = std::env::var("FILESYNCD_TEST_LOG").unwrap_or_else(|_| "info".into());
        let child = hermetic(Command::new(filesyncd_bin()))
            .arg("run")
            .arg("--dir")
            .arg(self.dir())
            .arg("--data")
            .arg(self.data())
            .args(["--listen", &self.p2p_addr(), "--api", &self.api()])
            .args(&self.args)
            .env("RUST_LOG", filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error(format!("spawn {}: {e}", filesyncd_bin().display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until `GET /healthz` answers `ok`; fails at once if the process exits.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let api = self.api();
        let name = self.name.clone();
        wait_for(&format!("{name} /healthz"), DEADLINE, || {
            if let Some(c) = &mut self.child {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(Error(format!("{name} exited with {st}")));
                }
            }
            match filesyncd::api::client::request(&api, "GET", "/healthz", None, None) {
                Ok(r) if r.status == 200 => Ok(Some(())),
                Ok(r) => Err(Error(format!("healthz answered {}", r.status))),
                Err(e) => Err(Error(e.to_string())),
            }
        })
        .map_err(|e| {
            if self.is_running() {
                e
            } else {
                Error(format!(
                    "{e}\n--- log of {name} ---\n{}",
                    tail(&self.log(), 40)
                ))
            }
        })
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (a `kill -<signal>` name: STOP, CONT...) to the process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let Some(c) = &self.child else {
            return err(format!("{} is not running", self.name));
        };
        let pid = c.id().to_string();
        match Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
        {
            Ok(s) if s.success() => Ok(()),
            other => err(format!("kill -{signal} {}: {other:?}", self.name)),
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(c) = &self.child else {
            return err(format!("{} is not running", self.name));
        };
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit()
    }

    /// Waits (up to [`DEADLINE`]) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| Error(format!("{name} was not started")))?;
        let st = wait_for(&format!("{name} to exit"), DEADLINE, || {
            child.try_wait().map_err(|e| Error(e.to_string()))
        })?;
        self.child = None;
        Ok(st)
    }

    /// Kills the process if it runs, starts it again with the same command
    /// line, and waits for `/healthz`.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.start()?;
        self.wait_healthy()
    }

    /// Runs `filesyncd <args> --api <this node's API>`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = hermetic(Command::new(filesyncd_bin()))
            .args(args)
            .args(["--api", &self.api()])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => CliOutput {
                code: o.status.code(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => CliOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("cannot run filesyncd: {e}"),
            },
        }
    }

    /// [`Node::cli`] with `--json`; exit 0 required; stdout parsed.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        if !out.ok() {
            return err(format!(
                "filesyncd {} on {}: exit {:?}: {}",
                all.join(" "),
                self.name,
                out.code,
                out.stderr.trim()
            ));
        }
        serde_json::from_str(&out.stdout).map_err(|e| {
            Error(format!(
                "bad JSON from {}: {e}: {}",
                all.join(" "),
                out.stdout
            ))
        })
    }

    pub fn status(&self) -> Result<Status> {
        let v = self.cli_json(&["status"])?;
        serde_json::from_value(v).map_err(|e| Error(format!("status JSON: {e}")))
    }

    pub fn members(&self) -> Result<Vec<Member>> {
        let v = self.cli_json(&["members"])?;
        serde_json::from_value(v).map_err(|e| Error(format!("members JSON: {e}")))
    }

    /// `token create --ttl <ttl>`: the token printed.
    pub fn create_token(&self, ttl: &str) -> Result<String> {
        let out = self.cli(&["token", "create", "--ttl", ttl]);
        if !out.ok() {
            return err(format!(
                "token create on {}: exit {:?}: {}",
                self.name,
                out.code,
                out.stderr.trim()
            ));
        }
        Ok(out.stdout.trim().to_string())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Drops every `FILESYNCD_*` variable of the test's environment: the
/// daemons and CLI calls see only the flags the harness gives.
fn hermetic(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FILESYNCD_") || k == "FAILPOINTS" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Options of the nodes a [`Cluster`] starts.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    max_voters: Option<usize>,
    join_timeout_secs: Option<u64>,
    /// Extra `run` flags of every node.
    flags: Vec<String>,
}

impl Builder {
    /// `max_voters` for every node (written to a TOML `--config` file).
    pub fn max_voters(mut self, n: usize) -> Builder {
        self.max_voters = Some(n);
        self
    }

    /// Extra `run` flags for every node (e.g. `--keep-versions 1`).
    pub fn flags(mut self, flags: &[&str]) -> Builder {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// `--join-timeout` for every joining node.
    pub fn join_timeout_secs(mut self, s: u64) -> Builder {
        self.join_timeout_secs = Some(s);
        self
    }

    /// An empty cluster (no node yet).
    pub fn empty(self) -> Result<Cluster> {
        let root = tempfile::Builder::new()
            .prefix("filesyncd-systest-")
            .tempdir()
            .map_err(|e| Error(format!("tempdir: {e}")))?;
        Ok(Cluster {
            root: Some(root),
            nodes: Vec::new(),
            opts: self,
        })
    }

    /// Node 0 forms a cluster, the others join it one by one with tokens;
    /// returns once every node is healthy and counted as a member by all.
    pub fn start(self, n: usize) -> Result<Cluster> {
        let mut c = self.empty()?;
        if n == 0 {
            return Ok(c);
        }
        let first = c.spawn(None)?;
        c.node_mut(first).wait_healthy()?;
        for _ in 1..n {
            c.add_node()?;
        }
        Ok(c)
    }
}

/// Several nodes under one temporary directory.
pub struct Cluster {
    root: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    opts: Builder,
}

impl Cluster {
    /// [`Builder::start`] with default options.
    pub fn start(n: usize) -> Result<Cluster> {
        Builder::default().start(n)
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The directory holding every node's files.
    pub fn root(&self) -> &Path {
        self.root
            .as_ref()
            .map(|r| r.path())
            .unwrap_or(Path::new("/"))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The `run` flags of a new node: options, plus `--join`/`--token`.
    fn node_args(&self, name: &str, join: Option<(&str, &str)>) -> Result<Vec<String>> {
        let mut args = self.opts.flags.clone();
        if let Some(n) = self.opts.max_voters {
            let cfg = self.root().join(format!("{name}.toml"));
            fs::write(&cfg, format!("max_voters = {n}\n"))
                .map_err(|e| Error(format!("config file: {e}")))?;
            args.push("--config".to_string());
            args.push(cfg.display().to_string());
        }
        if let Some((addr, token)) = join {
            args.extend(["--join".into(), addr.into(), "--token".into(), token.into()]);
            if let Some(s) = self.opts.join_timeout_secs {
                args.extend(["--join-timeout".into(), s.to_string()]);
            }
        }
        Ok(args)
    }

    /// Prepares and starts a new node (joining `join` = (address, token)
    /// if given) without waiting; returns its index.
    pub fn spawn(&mut self, join: Option<(&str, &str)>) -> Result<usize> {
        let name = format!("n{}", self.nodes.len());
        let args = self.node_args(&name, join)?;
        let mut node = Node::new(self.root(), &name, args)?;
        node.start()?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Index of a running node that answers `status` (the first one).
    pub fn any_running(&mut self) -> Result<usize> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() && self.nodes[i].status().is_ok() {
                return Ok(i);
            }
        }
        err("no running node answers")
    }

    /// A new node joins through a running member with a fresh token; waits
    /// until it is healthy (caught up) and every running node lists it.
    pub fn add_node(&mut self) -> Result<usize> {
        let via = self.any_running()?;
        let token = self.nodes[via].create_token("10m")?;
        let addr = self.nodes[via].p2p_addr();
        let i = self.spawn(Some((&addr, &token)))?;
        self.nodes[i].wait_healthy()?;
        let id = self.nodes[i].status()?.node_id;
        for j in 0..self.nodes.len() {
            if !self.nodes[j].is_running() {
                continue;
            }
            let n = &self.nodes[j];
            wait_for(&format!("{} to list {id}", n.name), DEADLINE, || {
                Ok(n.members()?.iter().any(|m| m.id == id).then_some(()))
            })?;
        }
        Ok(i)
    }

    /// Waits until every running node reports `members` members of which
    /// `voters` are voters, and the same leader (one of them). Returns the
    /// status of the first running node.
    pub fn wait_converged(&mut self, members: usize, voters: usize) -> Result<Status> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect();
        let nodes = &self.nodes;
        wait_for(
            &format!("{members} members, {voters} voters, one leader on every running node"),
            DEADLINE,
            || {
                let mut first: Option<Status> = None;
                for i in &running {
                    let s = nodes[*i].status()?;
                    let v = s.members.iter().filter(|m| m.role == "voter").count();
                    if s.members.len() != members || v != voters {
                        return err(format!(
                            "{} sees {} members, {v} voters",
                            nodes[*i].name,
                            s.members.len()
                        ));
                    }
                    let Some(leader) = &s.leader else {
                        return err(format!("{} knows no leader", nodes[*i].name));
                    };
                    if !s.members.iter().any(|m| &m.id == leader) {
                        return err(format!("{} follows a non-member", nodes[*i].name));
                    }
                    match &first {
                        Some(f) if f.leader != s.leader => {
                            return err(format!("leaders differ: {:?} vs {:?}", f.leader, s.leader))
                        }
                        Some(_) => {}
                        None => first = Some(s),
                    }
                }
                Ok(first)
            },
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            for n in &self.nodes {
                eprintln!(
                    "--- last lines of {} ({}) ---",
                    n.name,
                    n.log_path().display()
                );
                eprintln!("{}", tail(&n.log(), 60));
            }
        }
        for n in &mut self.nodes {
            n.kill9();
        }
        if panicking || std::env::var_os("FILESYNCD_KEEP").is_some() {
            if let Some(root) = self.root.take() {
                eprintln!("cluster files kept in {}", root.keep().display());
            }
        }
    }
}

/// Reads a whole file (for tests comparing synced content).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| Error(format!("{}: {e}", path.display())))?;
    Ok(buf)
}
