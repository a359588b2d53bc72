//! The Raft state machine: the replicated file index on redb (openraft 0.9 storage-v2).
//!
//! # Layout
//! `<data>/state.redb` holds the tables described in `tables.rs`; `<data>/snapshots/` the
//! snapshot files (`snapshot.rs`).
//!
//! # Durability and atomicity
//! One `apply` call (any number of entries) is ONE redb write transaction with
//! `Durability::Immediate`: the index changes, the last applied log id, the last membership
//! and the cluster root commit together and are fsynced before `apply` returns. After a crash
//! the state is exactly that of some applied prefix, and `applied_state` says which.
//!
//! # Concurrency
//! openraft drives this type through `&mut self`; the blocking redb work runs in
//! `spawn_blocking` with the in-memory part behind a `std::sync::Mutex` taken only inside the
//! blocking closure (never across `.await`). Readers use [`SmReader`] (cloneable, redb read
//! transactions, never blocked by apply). Snapshot builds read from their own read
//! transaction, concurrently with apply.
//!
//! # Cluster root
//! The merkle path tree of every live path is kept in memory and updated per entry
//! (`tree.rs`); it is rebuilt from the `live` table on open and checked against the root
//! stored beside the applied log id.
//!
//! # Format upgrades
//! `meta["format"]` versions the table layout (`tables.rs`). Open brings an older file up to
//! date in one write transaction before anything reads it: a file without the `changed`
//! index (format 1), or whose index was last maintained at another log id than the applied
//! one, gets it rebuilt from `history`. A newer format is refused.

#[cfg(test)]
mod changed_tests;
pub mod error;
mod reader;
pub(crate) mod tables;
pub(crate) mod tree;
mod view;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftTypeConfig, Snapshot, SnapshotMeta, StorageError,
    StoredMembership,
};
use redb::{Database, ReadableTable};

use filesyncd_merkle::Hash;

pub use error::SmError;
pub use reader::SmReader;
pub use view::SmView;

use crate::command::{Request, Response};
use crate::snapshot;
use crate::{NodeId, NodeInfo, TypeConfig};
use tables::{dec, enc, WriteTables};
use tree::ClusterTree;

type Entry = <TypeConfig as RaftTypeConfig>::Entry;

/// The page cache of `state.redb`.
const STATE_CACHE_BYTES: usize = 32 << 20;

/// The root of the empty path tree.
pub fn empty_root() -> Hash {
    ClusterTree::empty().root()
}

struct Inner {
    tree: ClusterTree,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeInfo>,
    /// Set when the in-memory tree may disagree with the database (a failed commit).
    poisoned: Option<String>,
}

struct Shared {
    db: Arc<Database>,
    snap_dir: PathBuf,
    /// Serialises promoting snapshot files (builder task vs install).
    snap_lock: Mutex<()>,
}

/// The state machine handed to `openraft::Raft::new`.
pub struct StateMachine {
    shared: Arc<Shared>,
    inner: Arc<Mutex<Inner>>,
}

/// Builds snapshots from a read transaction (see `snapshot.rs`).
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine {
    /// Opens (or creates) the state machine under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<StateMachine, SmError> {
        let snap_dir = data_dir.join("snapshots");
        fs::create_dir_all(&snap_dir)?;
        for e in fs::read_dir(&snap_dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tmp" || x == "part") {
                fs::remove_file(&p)?;
            }
        }
        // redb's default page cache is 1 GiB: a bound that would let the
        // state machine of a 1,000,000-file share hold most of its table in
        // memory. The hot pages (the applied index, the recent history) fit
        // in far less.
        let db = redb::Builder::new()
            .set_cache_size(STATE_CACHE_BYTES)
            .create(data_dir.join("state.redb"))?;
        upgrade(&db)?;
        snapshot::repair_current(&db, &snap_dir)?;

        let txn = db.begin_read()?;
        let applied = reader::applied_in(&txn)?;
        let meta = txn.open_table(tables::META)?;
        let membership = match meta.get(tables::META_MEMBERSHIP)? {
            Some(v) => dec(v.value())?,
            None => StoredMembership::default(),
        };
        let stored_root: Option<Hash> = meta
            .get(tables::META_ROOT)?
            .map(|v| dec(v.value()))
            .transpose()?;
        let tree = build_tree(&txn.open_table(tables::LIVE)?)?;
        if let Some(r) = stored_root {
            if r != tree.root() {
                return Err(SmError::Corrupt(format!(
                    "rebuilt cluster root {} differs from the stored {r}",
                    tree.root()
                )));
            }
        }
        drop(meta);
        drop(txn);
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db: Arc::new(db),
                snap_dir,
                snap_lock: Mutex::new(()),
            }),
            inner: Arc::new(Mutex::new(Inner {
                tree,
                applied,
                membership,
                poisoned: None,
            })),
        })
    }

    /// A read handle for the daemon and tests.
    pub fn reader(&self) -> SmReader {
        SmReader::new(self.shared.db.clone())
    }

    /// The in-memory cluster root and the log id it belongs to. Waits for a running apply;
    /// from async code prefer [`SmReader::cluster_root`] (a redb read, never blocked).
    pub fn cluster_root(&self) -> (Hash, Option<LogId<NodeId>>) {
        let g = lock(&self.inner);
        (g.tree.root(), g.applied)
    }

    /// (nodes, encoded bytes) of the in-memory cluster tree.
    pub fn tree_memory(&self) -> (usize, usize) {
        lock(&self.inner).tree.memory()
    }

    /// Applies entries synchronously (what `RaftStateMachine::apply` runs off the runtime).
    pub fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Response>, SmError> {
        apply_entries(&self.shared, &mut lock(&self.inner), entries)
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &mut Inner) -> Result<R, SmError> + Send + 'static,
    ) -> Result<R, SmError> {
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&shared, &mut lock(&inner)))
            .await
            .map_err(|e| SmError::Unavailable(e.to_string()))?
    }
}

/// Creates missing tables and brings the file to [`tables::SM_FORMAT`] (see the module doc),
/// in one write transaction.
fn upgrade(db: &Database) -> Result<(), SmError> {
    let txn = db.begin_write()?;
    tables::create_all(&txn)?;
    {
        let mut meta = txn.open_table(tables::META)?;
        let format: Option<u32> = meta
            .get(tables::META_FORMAT)?
            .map(|v| dec(v.value()))
            .transpose()?;
        if let Some(found) = format.filter(|f| *f > tables::SM_FORMAT) {
            return Err(SmError::UnsupportedFormat {
                found,
                supported: tables::SM_FORMAT,
            });
        }
        let applied: Option<LogId<NodeId>> = match meta.get(tables::META_APPLIED)? {
            Some(v) => dec(v.value())?,
            None => None,
        };
        let changed_at: Option<Option<LogId<NodeId>>> = meta
            .get(tables::META_CHANGED_AT)?
            .map(|v| dec(v.value()))
            .transpose()?;
        // Format 3 only adds tables (created above, empty): the `changed`
        // index of a format-2 file maintained at the applied id is good.
        let changed_ok = format.is_some_and(|f| f >= 2) && changed_at == Some(applied);
        if format == Some(tables::SM_FORMAT) && changed_ok {
            drop(meta);
            txn.commit()?;
            return Ok(());
        }
        if !changed_ok {
            let paths = tables::rebuild_changed(&txn)?;
            tracing::info!(
                from_format = format.unwrap_or(1),
                paths,
                "state machine: rebuilt the changed-paths index"
            );
        }
        meta.insert(tables::META_FORMAT, enc(&tables::SM_FORMAT)?.as_slice())?;
        meta.insert(tables::META_CHANGED_AT, enc(&applied)?.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

fn build_tree(
    live: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<ClusterTree, SmError> {
    let items = live.iter()?.map(|item| {
        let (k, v) = item?;
        let rec: crate::history::PathRecord = dec(v.value())?;
        let meta = rec
            .state
            .as_ref()
            .ok_or_else(|| SmError::Corrupt("tombstone in the live table".into()))?;
        Ok((k.value().to_string(), crate::apply::tree_value(meta)))
    });
    ClusterTree::build(items)
}

fn apply_entries(
    shared: &Shared,
    inner: &mut Inner,
    entries: Vec<Entry>,
) -> Result<Vec<Response>, SmError> {
    if let Some(why) = &inner.poisoned {
        return Err(SmError::Unavailable(why.clone()));
    }
    let r = apply_entries_inner(shared, inner, entries);
    if let Err(e) = &r {
        // The in-memory tree may be ahead of the (rolled back) database: refuse to go on;
        // reopening rebuilds it from the committed state.
        inner.poisoned = Some(format!("apply failed: {e}"));
    }
    r
}

fn apply_entries_inner(
    shared: &Shared,
    inner: &mut Inner,
    entries: Vec<Entry>,
) -> Result<Vec<Response>, SmError> {
    let mut responses = Vec::with_capacity(entries.len());
    let mut applied = inner.applied;
    let mut membership = None;
    let txn = shared.db.begin_write()?;
    {
        let mut t = WriteTables::open(&txn)?;
        for entry in entries {
            let index = entry.log_id.index;
            let resp = match entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Normal(Request::V1(batch)) => {
                    let quorums = membership
                        .as_ref()
                        .unwrap_or(&inner.membership)
                        .membership()
                        .get_joint_config();
                    let (changes, resp) = crate::apply::apply_batch(&t, index, &batch, quorums)?;
                    t.write(&changes)?;
                    inner.tree.apply(&changes)?;
                    resp
                }
                EntryPayload::Membership(m) => {
                    let before = membership.as_ref().unwrap_or(&inner.membership);
                    let removed = removed_nodes(before.membership(), &m);
                    if !removed.is_empty() {
                        let changes = crate::apply::apply_removal(&t, index, &removed)?;
                        t.write(&changes)?;
                        tracing::info!(
                            removed = ?removed.iter().map(|(id, _)| format!("{id:016x}")).collect::<Vec<_>>(),
                            index,
                            "members removed: revoked for good, outstanding join tokens revoked"
                        );
                    }
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    Response::Empty
                }
            };
            applied = Some(entry.log_id);
            responses.push(resp);
        }
        let mut meta = txn.open_table(tables::META)?;
        meta.insert(tables::META_APPLIED, enc(&applied)?.as_slice())?;
        meta.insert(tables::META_CHANGED_AT, enc(&applied)?.as_slice())?;
        if let Some(m) = &membership {
            meta.insert(tables::META_MEMBERSHIP, enc(m)?.as_slice())?;
        }
        meta.insert(tables::META_ROOT, enc(&inner.tree.root())?.as_slice())?;
    }
    filesyncd_chunkstore::failpoint::hit("raft::apply_before_commit");
    txn.commit()?;
    filesyncd_chunkstore::failpoint::hit("raft::applied");
    inner.applied = applied;
    if let Some(m) = membership {
        inner.membership = m;
    }
    Ok(responses)
}

/// The nodes (voters and learners) of `before` that `after` no longer has,
/// with their PeerIds.
fn removed_nodes(
    before: &openraft::Membership<NodeId, NodeInfo>,
    after: &openraft::Membership<NodeId, NodeInfo>,
) -> Vec<(NodeId, String)> {
    before
        .nodes()
        .filter(|(id, _)| after.get_node(id).is_none())
        .map(|(id, info)| (*id, info.peer_id.clone()))
        .collect()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>), StorageError<NodeId>>
    {
        let g = lock(&self.inner);
        Ok((g.applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.blocking(move |s, i| apply_entries(s, i, entries))
            .await
            .map_err(|e| e.into_storage(true))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let path = self
            .shared
            .snap_dir
            .join(format!("recv-{:016x}.part", rand::random::<u64>()));
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| SmError::Io(e).into_storage(true))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut file = snapshot.into_std().await;
        let meta = meta.clone();
        self.blocking(move |s, i| {
            let _g = lock(&s.snap_lock);
            let (header, _path, tree) = snapshot::install(&s.db, &s.snap_dir, &mut file, &meta)?;
            i.tree = tree;
            i.applied = header.last_log_id;
            i.membership = header.membership;
            i.poisoned = None;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(true))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let shared = self.shared.clone();
        let found = tokio::task::spawn_blocking(move || {
            let _g = lock(&shared.snap_lock);
            match snapshot::current(&shared.snap_dir)? {
                Some(p) => {
                    let h = snapshot::read_header(&p)?;
                    Ok::<_, SmError>(Some((h.meta(), std::fs::File::open(&p)?)))
                }
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| SmError::Unavailable(e.to_string()).into_storage(false))?
        .map_err(|e| e.into_storage(false))?;
        Ok(found.map(|(meta, f)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let shared = self.shared.clone();
        let (header, path) = tokio::task::spawn_blocking(move || {
            let _g = lock(&shared.snap_lock);
            snapshot::build(&shared.db, &shared.snap_dir)
        })
        .await
        .map_err(|e| SmError::Unavailable(e.to_string()).into_storage(false))?
        .map_err(|e| e.into_storage(false))?;
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| SmError::Io(e).into_storage(false))?;
        Ok(Snapshot {
            meta: header.meta(),
            snapshot: Box::new(f),
        })
    }
}
