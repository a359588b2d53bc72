//! The workload: one writer thread per node creating and overwriting files
//! in its own subtree (`w<node>/d<k>/f<n>.dat`), one ack poller per node
//! asking that node which writes it reports committed, and concurrent-edit
//! rounds (`shared/c<round>.dat` written on two nodes at once).
//!
//! A write is a whole file staged outside the synced directory (same file
//! system), fsynced, then renamed in: the daemon sees either the old or the
//! new content, never a half-written one, so any partial file the checker
//! finds was made by the daemon.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::content::{self, split_dir, Rng};
use super::ledger::Ledger;
use super::node::{bytes_root, NodeSpec};

/// How hard the workload writes and how it polls.
#[derive(Clone, Debug)]
pub struct Opts {
    pub seed: u64,
    /// Mean pause between two writes of one writer (uniform in 0.5x..1.5x).
    pub mean_gap: Duration,
    /// Distinct paths per writer; after that, writes overwrite.
    pub paths_per_writer: usize,
    /// How long a poller keeps asking about an unacknowledged write (older
    /// ones wait for the final sweep).
    pub ack_window: Duration,
    /// Pause between two polling rounds.
    pub poll: Duration,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            seed: 1,
            mean_gap: Duration::from_millis(700),
            paths_per_writer: 40,
            ack_window: Duration::from_secs(180),
            poll: Duration::from_millis(500),
        }
    }
}

/// Writers and pollers running against a set of nodes.
pub struct Workload {
    nodes: Arc<Vec<NodeSpec>>,
    ledger: Arc<Ledger>,
    seqs: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    /// Per node: its writer holds off (see [`Workload::pause`]).
    paused: Arc<Vec<Pause>>,
    threads: Vec<JoinHandle<()>>,
    opts: Opts,
}

/// A writer's pause switch; the lock is held for each write, so that
/// [`Workload::pause`] can wait for the write in flight.
#[derive(Default)]
struct Pause {
    on: AtomicBool,
    writing: Mutex<()>,
}

impl Workload {
    /// Starts a writer and a poller per node.
    pub fn start(nodes: Vec<NodeSpec>, opts: Opts) -> Result<Workload, String> {
        for n in &nodes {
            fs::create_dir_all(&n.stage).map_err(|e| format!("{}: {e}", n.stage.display()))?;
        }
        let nodes = Arc::new(nodes);
        let seqs = Arc::new(
            (0..nodes.len())
                .map(|_| AtomicU64::new(1))
                .collect::<Vec<_>>(),
        );
        let paused = Arc::new((0..nodes.len()).map(|_| Pause::default()).collect());
        let mut w = Workload {
            nodes,
            ledger: Arc::new(Ledger::default()),
            seqs,
            stop: Arc::new(AtomicBool::new(false)),
            paused,
            threads: Vec::new(),
            opts,
        };
        for i in 0..w.nodes.len() {
            let (nodes, ledger, seqs, stop, paused, opts) = (
                w.nodes.clone(),
                w.ledger.clone(),
                w.seqs.clone(),
                w.stop.clone(),
                w.paused.clone(),
                w.opts.clone(),
            );
            w.threads.push(std::thread::spawn(move || {
                writer(i, &nodes, &ledger, &seqs, &stop, &paused[i], &opts)
            }));
            let (nodes, ledger, stop, opts) = (
                w.nodes.clone(),
                w.ledger.clone(),
                w.stop.clone(),
                w.opts.clone(),
            );
            w.threads.push(std::thread::spawn(move || {
                poller(i, &nodes[i], &ledger, &stop, &opts)
            }));
        }
        Ok(w)
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// Holds node `i`'s writer (e.g. while its disks are wiped); returns
    /// once no write of it is in flight.
    pub fn pause(&self, i: usize) {
        let p = &self.paused[i];
        p.on.store(true, Ordering::SeqCst);
        drop(p.writing.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn resume(&self, i: usize) {
        self.paused[i].on.store(false, Ordering::SeqCst);
    }

    /// Stops writers and pollers and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Waits until `n` more writes (of `node`, or of any node) are
    /// acknowledged, or `deadline` passes; returns whether they were.
    pub fn wait_acks(&self, node: Option<usize>, n: usize, deadline: Duration) -> bool {
        let want = self.ledger.acked_count(node) + n;
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if self.ledger.acked_count(node) >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// One concurrent-edit round: `shared/c<round>.dat` is written on
    /// node `a` and, once node `b` holds it (or `deadline` passed), written
    /// again on `a` and `b` at the same moment. Returns the ids of the two
    /// concurrent writes, and a note if `b` never received the base.
    pub fn concurrent_round(
        &self,
        round: usize,
        a: usize,
        b: usize,
        deadline: Duration,
    ) -> Result<(String, String, Option<String>), String> {
        let path = format!("shared/c{round}.dat");
        let mut rng = Rng::new(self.opts.seed ^ (round as u64).wrapping_mul(0x51_7cc1_b727_220a));
        let base = write_file(
            &self.nodes,
            &self.ledger,
            &self.seqs,
            a,
            &path,
            false,
            &mut rng,
        )?;
        let target = self.nodes[b].dir.join(&path);
        let end = Instant::now() + deadline;
        let mut note = None;
        loop {
            let got = fs::read(&target).ok().and_then(|b| content::parse(&b).ok());
            if got.is_some_and(|h| h.id == base) {
                break;
            }
            if Instant::now() >= end {
                note = Some(format!(
                    "round {round}: node {b} did not receive the base {base} within {}s",
                    deadline.as_secs()
                ));
                break;
            }
            // Poll fast: the write that follows lands right after the
            // daemon placed the base, a window worth probing.
            std::thread::sleep(Duration::from_millis(10));
        }
        let barrier = Arc::new(Barrier::new(2));
        let mut handles = Vec::new();
        for (k, node) in [a, b].into_iter().enumerate() {
            let (nodes, ledger, seqs, barrier, path) = (
                self.nodes.clone(),
                self.ledger.clone(),
                self.seqs.clone(),
                barrier.clone(),
                path.clone(),
            );
            let mut rng = Rng::new(rng.next_u64() ^ k as u64);
            handles.push(std::thread::spawn(move || {
                barrier.wait();
                write_file(&nodes, &ledger, &seqs, node, &path, true, &mut rng)
            }));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.push(
                h.join()
                    .map_err(|_| "concurrent writer panicked".to_string())??,
            );
        }
        Ok((ids[0].clone(), ids[1].clone(), note))
    }

    /// The final sweep: asks `via` about every write still unacknowledged
    /// (any node, any age). Returns how many became acknowledged.
    pub fn sweep(&self, via: usize) -> Result<usize, String> {
        settle_paths(
            &self.nodes[via],
            &self.ledger,
            None,
            &self.ledger.pending_paths(None, None),
            true,
        )
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes one new version of `path` on `node`: staged, fsynced, renamed
/// into the synced directory, then recorded. Returns its content id.
pub fn write_file(
    nodes: &[NodeSpec],
    ledger: &Ledger,
    seqs: &[AtomicU64],
    node: usize,
    path: &str,
    concurrent: bool,
    rng: &mut Rng,
) -> Result<String, String> {
    let n = &nodes[node];
    let id = format!("n{node}-{:06}", seqs[node].fetch_add(1, Ordering::SeqCst));
    let mut payload = vec![0u8; rng.payload_len()];
    rng.fill(&mut payload);
    let bytes = content::encode(&id, path, &payload);
    let (root, size) = bytes_root(&bytes);
    let staged = n.stage.join(format!("{id}.part"));
    let target = n.dir.join(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&staged)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&staged, &target)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&staged);
        return Err(format!("{}: write {path}: {e}", n.name));
    }
    ledger.record(node, &id, path, &root, size, concurrent);
    Ok(id)
}

fn writer(
    i: usize,
    nodes: &[NodeSpec],
    ledger: &Ledger,
    seqs: &[AtomicU64],
    stop: &AtomicBool,
    pause: &Pause,
    opts: &Opts,
) {
    let mut rng = Rng::new(opts.seed.wrapping_mul(1_000_003) ^ (i as u64 + 1));
    let mut own: Vec<String> = Vec::new();
    let mut created = 0usize;
    let gap = opts.mean_gap.as_millis() as u64;
    while !stop.load(Ordering::SeqCst) {
        if !sleep_unless(
            stop,
            Duration::from_millis(rng.range(gap / 2, gap * 3 / 2 + 1)),
        ) {
            return;
        }
        let _writing = pause.writing.lock().unwrap_or_else(|e| e.into_inner());
        if pause.on.load(Ordering::SeqCst) {
            continue;
        }
        let path = if own.len() < opts.paths_per_writer && (own.is_empty() || rng.chance(0.35)) {
            let p = format!("w{i}/d{}/f{created}.dat", created % 4);
            created += 1;
            own.push(p.clone());
            p
        } else {
            own[rng.range(0, own.len() as u64) as usize].clone()
        };
        if let Err(e) = write_file(nodes, ledger, seqs, i, &path, false, &mut rng) {
            ledger.write_failed(e);
        }
    }
}

/// Sleeps `d` in small steps; false if `stop` was raised meanwhile.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
        );
    }
    !stop.load(Ordering::SeqCst)
}

fn poller(i: usize, node: &NodeSpec, ledger: &Ledger, stop: &AtomicBool, opts: &Opts) {
    while sleep_unless(stop, opts.poll) {
        let paths = ledger.pending_paths(Some(i), Some(opts.ack_window));
        // A node that is down, paused or cut off answers nothing: next round.
        let _ = settle_paths(node, ledger, Some(i), &paths, false);
    }
}

/// Asks `via` for the history of each path and the entries of its
/// directory, and settles the ledger. Stops at the first failed call.
fn settle_paths(
    via: &NodeSpec,
    ledger: &Ledger,
    node: Option<usize>,
    paths: &[String],
    late: bool,
) -> Result<usize, String> {
    let mut dirs: std::collections::BTreeMap<String, Vec<filesyncd::api::files::types::LsEntry>> =
        Default::default();
    let mut acked = 0;
    for p in paths {
        let history = via.history(p)?;
        let (dir, _) = split_dir(p);
        if !dirs.contains_key(dir) {
            dirs.insert(dir.to_string(), via.ls_dir(dir)?.entries);
        }
        acked += ledger.settle(node, p, &history.versions, &dirs[dir], late);
    }
    Ok(acked)
}

/// Removes a node's staging directory if it is empty (the checker's
/// "nothing outside the roots" allows an empty one).
pub fn stage_is_empty(stage: &Path) -> bool {
    fs::read_dir(stage)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}
