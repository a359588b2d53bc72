//! The watcher: which paths may have changed, delivered as [`Dirty`] batches
//! on a bounded channel.
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
//! - The channel is bounded: when the engine is slow, the debouncer thread
//!   waits (back-pressure; a kernel overflow then turns into a rescan).
//!
//! Dropping the [`Watcher`] stops the debouncer and the timer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::{self, RecursiveMode};
use notify_debouncer_full::{new_debouncer_opt, DebounceEventResult, Debouncer, NoCache};
use tokio::sync::mpsc;

use super::names;

/// Watcher settings.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Quiet time before a path's events are delivered.
    pub debounce: Duration,
    /// Period of the backstop full rescan.
    pub rescan_every: Duration,
    /// Capacity of the batch channel.
    pub capacity: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(30),
            rescan_every: Duration::from_secs(600),
            capacity: 64,
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

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, NoCache>,
    timer: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// Starts watching `root` (call within a tokio runtime).
pub fn watch(
    root: &Path,
    cfg: &WatchConfig,
) -> Result<(Watcher, mpsc::Receiver<Dirty>), WatchError> {
    let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
    let base = root.to_path_buf();
    let events_tx = tx.clone();
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
            // Back-pressure: wait for the engine. Fails only once it is gone.
            let _ = events_tx.blocking_send(d);
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
    let timer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tx.send(Dirty::Rescan).await.is_err() {
                return;
            }
        }
    });
    Ok((
        Watcher {
            _debouncer: debouncer,
            timer,
        },
        rx,
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
}
