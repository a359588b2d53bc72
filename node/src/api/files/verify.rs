//! `POST /verify`: rehash the synced directory and compare it with the
//! committed tree.
//!
//! The committed side is every live record of the state machine (read
//! once, at the applied index the answer names). The disk side is the
//! engine's own scan ([`Scanner`], so the same rules decide what counts:
//! symlinks never followed, the daemon's `.filesyncd*` names skipped,
//! `.filesyncignore`d paths skipped, unsyncable names reported as skipped)
//! with an empty local index, so that every file is read and hashed with
//! the cluster's chunker, and with the live-file index frozen
//! ([`FrozenIndex`]): verifying changes nothing. Kind, content (root and
//! size) and permission bits are compared ([`compare`]); an ignored
//! committed path is not expected on disk.
//!
//! One verify runs at a time (409 otherwise), on the blocking pool. The
//! engine keeps running meanwhile: while a sync is in flight
//! (`was_in_sync` false) differences can be changes on their way. Memory:
//! the committed records and the disk view, plus the tree nodes of the
//! hashed files (about 0.1 % of the bytes hashed) until the scan ends.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::State;
use axum::Json;
use filesyncd_chunkstore::chunker::Chunker;
use filesyncd_chunkstore::store::MemChunkStore;
use filesyncd_raft::history::PathRecord;
use filesyncd_raft::state_machine::SmReader;

use super::frozen::FrozenIndex;
use super::types::{problem, Difference, EntryDesc, Skipped, VerifyAnswer};
use super::{conflict, sync_of};
use crate::api::{internal, ApiError, ApiState};
use crate::daemon::sync::ports::record_of;
use crate::engine::fs_real::RootFs;
use crate::engine::ignore::Ignore;
use crate::engine::plan::Scope;
use crate::engine::scan::{load_ignore, RacySet, Scanner};
use crate::engine::types::{DiskEntry, Kind, Meta};

fn desc(m: &Meta) -> EntryDesc {
    EntryDesc {
        kind: match m.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink { .. } => "symlink",
        }
        .to_owned(),
        size: m.size,
        mode: m.mode,
        root: m.root.to_hex(),
    }
}

fn same_kind(a: &Kind, b: &Kind) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// What the disk holds, as the scan saw it.
pub struct DiskSide {
    pub entries: BTreeMap<String, DiskEntry>,
    /// Directories that could not be read (nothing below them was seen).
    pub unreadable: Vec<String>,
}

/// The differences between the committed records (in path order) and the
/// disk, sorted by path.
pub fn compare(
    committed: &[(String, PathRecord)],
    disk: &DiskSide,
    ignore: &Ignore,
) -> Vec<Difference> {
    let below_unreadable = |p: &str| {
        disk.unreadable.iter().any(|u| {
            p == u
                || (p.len() > u.len() && p.starts_with(u.as_str()) && p.as_bytes()[u.len()] == b'/')
        })
    };
    let mut out = Vec::new();
    let mut known: BTreeMap<&str, Meta> = BTreeMap::new();
    for (path, rec) in committed {
        let want = record_of(path.clone(), rec);
        if want.deleted {
            continue;
        }
        let want = want.meta;
        known.insert(path.as_str(), want.clone());
        if ignore.is_ignored(path, want.is_dir()) || below_unreadable(path) {
            continue;
        }
        let diff = |problem: &str, disk: Option<&Meta>| Difference {
            path: path.clone(),
            problem: problem.to_owned(),
            committed: Some(desc(&want)),
            disk: disk.map(desc),
        };
        match disk.entries.get(path) {
            None => out.push(diff(problem::MISSING, None)),
            Some(DiskEntry { meta: None, .. }) => out.push(diff(problem::UNREADABLE, None)),
            Some(DiskEntry {
                meta: Some(have), ..
            }) => {
                if !same_kind(&have.kind, &want.kind) {
                    out.push(diff(problem::KIND, Some(have)));
                } else if have.root != want.root || have.size != want.size || have.kind != want.kind
                {
                    out.push(diff(problem::CONTENT, Some(have)));
                } else if have.mode != want.mode {
                    out.push(diff(problem::MODE, Some(have)));
                }
            }
        }
    }
    for (path, entry) in &disk.entries {
        if !known.contains_key(path.as_str()) {
            out.push(Difference {
                path: path.clone(),
                problem: problem::UNTRACKED.to_owned(),
                committed: None,
                disk: entry.meta.as_ref().map(desc),
            });
        }
    }
    for u in &disk.unreadable {
        out.push(Difference {
            path: u.clone(),
            problem: problem::UNREADABLE.to_owned(),
            committed: known.get(u.as_str()).map(desc),
            disk: None,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Reads the committed tree and scans the disk; see the module doc.
pub(in crate::api) fn run(reader: &SmReader, root: &Path) -> Result<VerifyAnswer, ApiError> {
    let settings = reader
        .settings()
        .map_err(internal)?
        .ok_or_else(|| conflict("the cluster is not initialized yet"))?;
    let chunker: Chunker = settings.chunker.validate().map_err(internal)?;
    let applied = reader.applied().map_err(internal)?.map_or(0, |l| l.index);
    let committed = reader.list("", None, usize::MAX).map_err(internal)?;
    let fs = RootFs::open(root).map_err(|e| internal(format!("{}: {e}", root.display())))?;
    let ignore = load_ignore(&fs);
    let nowhere = MemChunkStore::new(root);
    let store = FrozenIndex { inner: &nowhere };
    let scanner = Scanner {
        fs: &fs,
        store: &store,
        chunker: &chunker,
        ignore: &ignore,
        max_file_size: u64::MAX,
        racy: &RacySet::default(),
        racy_after_ns: i64::MAX,
    };
    let out = scanner
        .scan(Scope::Full, &BTreeMap::new())
        .map_err(|e| internal(format!("scan: {e}")))?;
    let (files_hashed, bytes_hashed) = (out.files_hashed, out.bytes_hashed);
    drop(out.trees);
    let disk = DiskSide {
        entries: out.view.entries,
        unreadable: out.view.unreadable,
    };
    let skipped = out
        .warnings
        .into_iter()
        .filter(|w| !disk.entries.contains_key(&w.path) && !disk.unreadable.contains(&w.path))
        .map(|w| Skipped {
            path: w.path,
            reason: w.reason,
        })
        .collect();
    Ok(VerifyAnswer {
        applied,
        committed: committed.len() as u64,
        files_hashed,
        bytes_hashed,
        differences: compare(&committed, &disk, &ignore),
        skipped,
        was_in_sync: None,
    })
}

pub(super) async fn verify(State(s): State<ApiState>) -> Result<Json<VerifyAnswer>, ApiError> {
    let sync = sync_of(&s)?;
    let permit = s
        .verifying
        .clone()
        .try_acquire_owned()
        .map_err(|_| conflict("a verify is already running"))?;
    let was_in_sync = {
        let st = sync.status.borrow();
        st.started.then_some(st.in_sync)
    };
    let reader = s.node.reader().clone();
    let root = sync.root.clone();
    let mut answer = tokio::task::spawn_blocking(move || {
        let _running = permit;
        run(&reader, &root)
    })
    .await
    .map_err(internal)??;
    answer.was_in_sync = was_in_sync;
    tracing::info!(
        differences = answer.differences.len(),
        files = answer.files_hashed,
        bytes = answer.bytes_hashed,
        "verify done"
    );
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use filesyncd_merkle::Hash;
    use filesyncd_raft::command::{PutKind, Version};
    use filesyncd_raft::history::FileMeta;

    use super::*;
    use crate::engine::types::{FileKind, Stat};

    fn rec(kind: PutKind, root: u8, size: u64, mode: u32) -> PathRecord {
        PathRecord {
            version: Version::new(1, 0),
            time_ms: 1,
            origin: 1,
            state: Some(FileMeta {
                kind,
                root: Hash([root; 32]),
                size,
                mode,
                mtime_ns: 0,
                holders: vec![1],
            }),
        }
    }

    fn on_disk(meta: Option<Meta>) -> DiskEntry {
        DiskEntry {
            stat: Stat {
                kind: FileKind::File,
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                ino: 0,
                mode: 0,
            },
            meta,
        }
    }

    #[test]
    fn every_kind_of_difference() {
        let f = |root: u8, size, mode| Meta::file(Hash([root; 32]), size, mode);
        let committed = vec![
            ("dir".to_string(), rec(PutKind::Dir, 0, 0, 0o755)),
            ("dir/same".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("gone".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("ignored.tmp".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("kind".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("locked/x".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("mode".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("other".to_string(), rec(PutKind::File, 1, 5, 0o644)),
            ("busy".to_string(), rec(PutKind::File, 1, 5, 0o644)),
        ];
        let mut entries = BTreeMap::new();
        entries.insert("dir".to_string(), on_disk(Some(Meta::dir(0o755))));
        entries.insert("dir/same".to_string(), on_disk(Some(f(1, 5, 0o644))));
        entries.insert("kind".to_string(), on_disk(Some(Meta::dir(0o755))));
        entries.insert("mode".to_string(), on_disk(Some(f(1, 5, 0o600))));
        entries.insert("other".to_string(), on_disk(Some(f(2, 5, 0o644))));
        entries.insert("busy".to_string(), on_disk(None));
        entries.insert("new".to_string(), on_disk(Some(f(3, 1, 0o644))));
        let disk = DiskSide {
            entries,
            unreadable: vec!["locked".to_string()],
        };
        let got: Vec<(String, String)> = compare(&committed, &disk, &Ignore::parse("*.tmp\n"))
            .into_iter()
            .map(|d| (d.path, d.problem))
            .collect();
        let want: Vec<(String, String)> = [
            ("busy", problem::UNREADABLE),
            ("gone", problem::MISSING),
            ("kind", problem::KIND),
            ("locked", problem::UNREADABLE),
            ("mode", problem::MODE),
            ("new", problem::UNTRACKED),
            ("other", problem::CONTENT),
        ]
        .iter()
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn equal_trees_have_no_differences() {
        let committed = vec![("a".to_string(), rec(PutKind::File, 1, 5, 0o644))];
        let mut entries = BTreeMap::new();
        entries.insert(
            "a".to_string(),
            on_disk(Some(Meta::file(Hash([1; 32]), 5, 0o644))),
        );
        let disk = DiskSide {
            entries,
            unreadable: vec![],
        };
        assert!(compare(&committed, &disk, &Ignore::none()).is_empty());
        let link = vec![(
            "l".to_string(),
            rec(PutKind::Symlink { target: "x".into() }, 1, 1, 0o777),
        )];
        let mut entries = BTreeMap::new();
        entries.insert("l".to_string(), on_disk(Some(Meta::symlink("y"))));
        let d = compare(
            &link,
            &DiskSide {
                entries,
                unreadable: vec![],
            },
            &Ignore::none(),
        );
        assert_eq!(d[0].problem, problem::CONTENT, "another link target");
    }
}
