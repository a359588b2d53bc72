//! The watcher: which paths may have changed, delivered as [`Dirty`] sets
//! through a bounded mailbox.
//!
//! - File-system events come from `notify` (inotify on Linux, recursive)
//!   through `notify-debouncer-full` with a short debounce (default 30 ms:
//!   the goal is a change visible on another node within ~150 ms), without
//!   its file-id cache (renames are simply two dirty paths; the cache would
//!   walk the whole tree at start).
//! - Every event path is made relative to the root; paths in the daemon's
//!   namespace (the marker, temp files of the materializer) and names that
//!   are not UTF-8 are dropped. A batch is deduplicated and reduced to the
//!   top-most paths (`a` covers `a/b`), since a dirty directory is scanned
//!   whole — so a new directory, and whatever was written into it before
//!   inotify watched it, gets scanned.
//! - An event flagged "rescan" (the kernel queue overflowed), a watcher
//!   error, or an event for the root itself yields [`Dirty::Rescan`]; so does
//!   a periodic timer (`rescan_every`), the backstop for anything missed.
//! - The watcher never waits for the engine: batches are merged into one
//!   pending set (a mailbox the sync task takes whole, [`DirtyRx::recv`]).
//!   Waiting instead let the debouncer's own queue grow without bound
//!   while a long step ran (1.4 million queued events, ~220 MB of heap, on
//!   a peer receiving 20,000 files). The set is bounded: over
//!   [`WatchConfig::max_pending`] paths, paths are replaced by their parent
//!   directories (scanned whole, so nothing is missed), and a set still too
//!   big becomes a rescan.
//!
//! Dropping the [`Watcher`] stops the debouncer and the timer, and closes
//! the mailbox.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify_debouncer_full::notify::{self, RecursiveMode};
use notify_debouncer_full::{new_debouncer_opt, DebounceEventResult, Debouncer, NoCache};
use tokio::sync::Notify;

use super::names;

/// Watcher settings.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Quiet time before a path's events are delivered.
    pub debounce: Duration,
    /// Period of the backstop full rescan.
    pub rescan_every: Duration,
    /// Most dirty paths held for the engine (see the module doc).
    pub max_pending: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(30),
            rescan_every: Duration::from_secs(600),
            max_pending: 64 * 1024,
        }
    }
}

/// What may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dirty {
    /// These relative paths (top-most, sorted): scan each (a directory whole).
    Paths(Vec<String>),
    /// Scan everything.
    Rescan,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: {source}")]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// What the engine has not taken yet.
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeSet<String>,
    rescan: bool,
    closed: bool,
}

impl Pending {
    /// Adds `d`, keeping at most `max` paths (see the module doc).
    fn add(&mut self, d: Dirty, max: usize) {
        match d {
            Dirty::Rescan => {
                self.rescan = true;
                self.paths.clear();
            }
            Dirty::Paths(_) if self.rescan => {}
            Dirty::Paths(ps) => {
                self.paths.extend(ps);
                if self.paths.len() > max {
                    self.coarsen(max);
                }
            }
        }
    }

    /// Replaces each path below the top level by its parent, until the set
    /// fits in `max`; a rescan when even that does not.
    fn coarsen(&mut self, max: usize) {
        while self.paths.len() > max {
            let before = self.paths.len();
            let parents: Vec<String> = std::mem::take(&mut self.paths)
                .into_iter()
                .map(|p| match p.rsplit_once('/') {
                    Some((dir, _)) => dir.to_owned(),
                    None => p,
                })
                .collect();
            self.paths = top_most(parents).into_iter().collect();
            if self.paths.len() == before {
                // All top-level already: only a rescan covers them.
                self.rescan = true;
                self.paths.clear();
            }
        }
    }

    fn take(&mut self) -> Option<Dirty> {
        if std::mem::take(&mut self.rescan) {
            self.paths.clear();
            return Some(Dirty::Rescan);
        }
        if self.paths.is_empty() {
            return None;
        }
        Some(Dirty::Paths(top_most(
            std::mem::take(&mut self.paths).into_iter().collect(),
        )))
    }
}

/// The watcher's side of the mailbox.
#[derive(Debug)]
struct Mailbox {
    pending: Mutex<Pending>,
    ready: Notify,
    max: usize,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every method mutates after its checks: a panic cannot leave a
        // half-updated set that breaks the bound.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, d: Dirty) {
        self.lock().add(d, self.max);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// The engine's side: everything dirty since the last take, merged.
#[derive(Debug)]
pub struct DirtyRx {
    mailbox: Arc<Mailbox>,
}

impl DirtyRx {
    /// Waits for dirty paths and takes all of them; `None` once the watcher
    /// is dropped and nothing is left.
    pub async fn recv(&mut self) -> Option<Dirty> {
        loop {
            {
                let mut p = self.mailbox.lock();
                if let Some(d) = p.take() {
                    return Some(d);
                }
                if p.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits: a put between
            // the check above and this wait is not lost.
            self.mailbox.ready.notified().await;
        }
    }
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, NoCache>,
    timer: tokio::task::JoinHandle<()>,
    mailbox: Arc<Mailbox>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.timer.abort();
        self.mailbox.close();
    }
}

/// Starts watching `root` (call within a tokio runtime).
pub fn watch(root: &Path, cfg: &WatchConfig) -> Result<(Watcher, DirtyRx), WatchError> {
    let mailbox = Arc::new(Mailbox {
        pending: Mutex::default(),
        ready: Notify::new(),
        max: cfg.max_pending.max(1),
    });
    let base = root.to_path_buf();
    let events_to = mailbox.clone();
    let handler = move |res: DebounceEventResult| {
        let dirty = match res {
            Ok(events) => batch(
                &base,
                events
                    .iter()
                    .filter(|e| changes(&e.event.kind))
                    .map(|e| (&e.event.paths[..], e.event.need_rescan())),
            ),
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "watcher error; rescanning");
                }
                Some(Dirty::Rescan)
            }
        };
        if let Some(d) = dirty {
            events_to.put(d);
        }
    };
    let err = |source| WatchError::Notify {
        path: root.to_path_buf(),
        source,
    };
    let mut debouncer = new_debouncer_opt::<_, notify::RecommendedWatcher, NoCache>(
        cfg.debounce,
        None,
        handler,
        NoCache,
        notify::Config::default(),
    )
    .map_err(err)?;
    debouncer
        .watch(root, RecursiveMode::Recursive)
        .map_err(err)?;
    let every = cfg.rescan_every;
    let timer_to = mailbox.clone();
    let timer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            timer_to.put(Dirty::Rescan);
        }
    });
    Ok((
        Watcher {
            _debouncer: debouncer,
            timer,
            mailbox: mailbox.clone(),
        },
        DirtyRx { mailbox },
    ))
}

/// Whether an event can mean a change. Opens, reads and closes without a
/// write are not changes, and must be dropped: the scan itself opens every
/// directory it lists and every file it hashes, so counting them would make
/// each step trigger the next, forever. A close after writing is kept (the
/// writer is done).
fn changes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Turns a debounced batch into dirty paths (see the module doc).
fn batch<'a>(root: &Path, events: impl Iterator<Item = (&'a [PathBuf], bool)>) -> Option<Dirty> {
    let mut paths: Vec<String> = Vec::new();
    for (ps, rescan) in events {
        if rescan {
            return Some(Dirty::Rescan);
        }
        for p in ps {
            let Ok(rel) = p.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else {
                tracing::warn!(path = %p.display(), "event for a non-UTF-8 name; ignored");
                continue;
            };
            if rel.is_empty() {
                return Some(Dirty::Rescan);
            }
            if rel.split('/').any(names::is_reserved_component) {
                continue;
            }
            paths.push(rel.to_owned());
        }
    }
    let paths = top_most(paths);
    (!paths.is_empty()).then_some(Dirty::Paths(paths))
}

/// Sorted, deduplicated, without paths under another path of the set.
pub fn top_most(mut paths: Vec<String>) -> Vec<String> {
    paths.sort();
    paths.dedup();
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for p in paths {
        let covered = out
            .iter()
            .rev()
            .take_while(|q| p.starts_with(q.as_str()))
            .any(|q| p.as_bytes().get(q.len()) == Some(&b'/'));
        if !covered {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_and_opens_are_not_changes() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        use notify::EventKind;
        assert!(!super::changes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!super::changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!super::changes(&EventKind::Access(AccessKind::Read)));
        assert!(super::changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(super::changes(&EventKind::Create(CreateKind::File)));
        assert!(super::changes(&EventKind::Modify(ModifyKind::Any)));
    }

    use super::*;

    #[test]
    fn batches_are_relative_top_most_and_skip_the_daemon() {
        let root = Path::new("/r");
        let ev = |ps: &[&str]| ps.iter().map(PathBuf::from).collect::<Vec<_>>();
        let a = ev(&["/r/a/b", "/r/a", "/r/c.txt", "/elsewhere/x"]);
        let b = ev(&[
            "/r/d/.filesyncd-tmp-1",
            "/r/.filesyncd-marker",
            "/r/c.txt",
            "/r/ab",
        ]);
        let got = batch(root, [(&a[..], false), (&b[..], false)].into_iter());
        assert_eq!(
            got,
            Some(Dirty::Paths(vec!["a".into(), "ab".into(), "c.txt".into()]))
        );
        let only_tmp = ev(&["/r/.filesyncd-tmp-9"]);
        assert_eq!(batch(root, [(&only_tmp[..], false)].into_iter()), None);
        assert_eq!(
            batch(root, [(&a[..], true)].into_iter()),
            Some(Dirty::Rescan)
        );
        let rootev = ev(&["/r"]);
        assert_eq!(
            batch(root, [(&rootev[..], false)].into_iter()),
            Some(Dirty::Rescan)
        );
        assert_eq!(
            top_most(vec![
                "a/b/c".into(),
                "a/b".into(),
                "a/bc".into(),
                "a/b".into()
            ]),
            vec!["a/b".to_string(), "a/bc".into()]
        );
    }

    #[test]
    fn pending_paths_merge_and_stay_bounded() {
        let ps = |v: &[&str]| Dirty::Paths(v.iter().map(|s| s.to_string()).collect());
        let mut p = Pending::default();
        assert_eq!(p.take(), None);
        p.add(ps(&["a/b/c", "d"]), 4);
        p.add(ps(&["a/b", "e/f"]), 4);
        assert_eq!(p.take(), Some(ps(&["a/b", "d", "e/f"])));
        assert_eq!(p.take(), None);

        // Over the bound: parents instead (scanned whole), still bounded.
        let many: Vec<String> = (0..100).map(|i| format!("x/y/f{i}")).collect();
        p.add(Dirty::Paths(many), 4);
        p.add(ps(&["top"]), 4);
        assert_eq!(p.take(), Some(ps(&["top", "x/y"])));
        let dirs: Vec<String> = (0..100).map(|i| format!("d{}/f", i % 3)).collect();
        p.add(Dirty::Paths(dirs), 2);
        assert_eq!(p.take(), Some(Dirty::Rescan), "3 top-level dirs exceed 2");

        // A rescan covers everything before and after it.
        p.add(ps(&["a"]), 4);
        p.add(Dirty::Rescan, 4);
        p.add(ps(&["b"]), 4);
        assert_eq!(p.take(), Some(Dirty::Rescan));
        assert_eq!(p.take(), None);
    }

    #[tokio::test]
    async fn the_mailbox_wakes_the_engine_and_closes_with_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let (w, mut rx) = watch(dir.path(), &WatchConfig::default()).unwrap();
        w.mailbox.put(Dirty::Paths(vec!["a".into()]));
        w.mailbox.put(Dirty::Paths(vec!["b".into()]));
        assert_eq!(
            rx.recv().await,
            Some(Dirty::Paths(vec!["a".into(), "b".into()]))
        );
        std::fs::write(dir.path().join("new.txt"), b"x").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s");
        assert_eq!(got, Some(Dirty::Paths(vec!["new.txt".into()])));
        drop(w);
        assert_eq!(rx.recv().await, None);
    }
}
