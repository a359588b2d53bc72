//! openraft's storage conformance suite against `RedbLogStore`.
//!
//! The suite also needs a state machine. `TestSm` below is a deliberately tiny, test-only,
//! in-memory one (it only tracks last-applied and membership, the only things the suite
//! checks). TODO(integration): swap it for the crate's real redb state machine once both
//! halves are in, so the suite covers the pair that ships.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use filesyncd_raft::command::Response;
use filesyncd_raft::log_store::{LogId, LogStoreOptions, RedbLogStore};
use filesyncd_raft::{NodeId, NodeInfo, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

type Membership = StoredMembership<NodeId, NodeInfo>;

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// The current snapshot's meta and the file holding its data.
type CurrentSnapshot = (SnapshotMeta<NodeId, NodeInfo>, PathBuf);

/// Test-only state machine: last applied + membership; snapshots are files in `dir`.
struct TestSm {
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: Membership,
    /// Shared with snapshot builders: a built snapshot becomes the current one.
    current: Arc<Mutex<Option<CurrentSnapshot>>>,
    seq: Arc<AtomicU64>,
}

impl TestSm {
    fn new(dir: PathBuf) -> Self {
        TestSm {
            dir,
            last_applied: None,
            membership: Membership::default(),
            current: Arc::default(),
            seq: Arc::default(),
        }
    }

    fn next_path(&self, what: &str) -> (u64, PathBuf) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        (n, self.dir.join(format!("{what}-{n}")))
    }

    fn set_current(&self, meta: SnapshotMeta<NodeId, NodeInfo>, path: PathBuf) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta, path));
    }

    async fn write_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = postcard::to_allocvec(&(self.last_applied, &self.membership)).map_err(sm_err)?;
        let (n, path) = self.next_path("snap");
        tokio::fs::write(&path, &data).await.map_err(sm_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("snap-{n}"),
        };
        self.set_current(meta.clone(), path.clone());
        let file = tokio::fs::File::open(&path).await.map_err(sm_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

struct TestSmBuilder(TestSm);

impl RaftSnapshotBuilder<TypeConfig> for TestSmBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.0.write_snapshot().await
    }
}

impl RaftStateMachine<TypeConfig> for TestSm {
    type SnapshotBuilder = TestSmBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            if let EntryPayload::Membership(m) = e.payload {
                self.membership = StoredMembership::new(Some(e.log_id), m);
            }
            out.push(Response::default());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A copy of the data, sharing the snapshot slot and file counter.
        TestSmBuilder(TestSm {
            dir: self.dir.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            current: Arc::clone(&self.current),
            seq: Arc::clone(&self.seq),
        })
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let (_, path) = self.next_path("recv");
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(sm_err)?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        snapshot.seek(SeekFrom::Start(0)).await.map_err(sm_err)?;
        let mut data = Vec::new();
        snapshot.read_to_end(&mut data).await.map_err(sm_err)?;
        let (applied, membership): (Option<LogId>, Membership) =
            postcard::from_bytes(&data).map_err(sm_err)?;
        self.last_applied = applied;
        self.membership = membership;
        let (_, path) = self.next_path("installed");
        let mut f = tokio::fs::File::create(&path).await.map_err(sm_err)?;
        f.write_all(&data).await.map_err(sm_err)?;
        f.sync_all().await.map_err(sm_err)?;
        self.set_current(meta.clone(), path);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match current {
            None => Ok(None),
            Some((meta, path)) => {
                let file = tokio::fs::File::open(path).await.map_err(sm_err)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(file),
                }))
            }
        }
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, RedbLogStore, TestSm, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RedbLogStore, TestSm), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(sm_err)?;
        // The suite appends below the purged id and with holes (openraft itself never does),
        // so the contiguity guard is off here; everything else is the production store.
        let options = LogStoreOptions {
            check_contiguous: false,
        };
        let store = RedbLogStore::open_with(dir.path().join("log.redb"), 1, options)
            .map_err(|e| StorageError::from(StorageIOError::read_logs(AnyError::new(&e))))?;
        let sm_dir = dir.path().join("sm");
        std::fs::create_dir_all(&sm_dir).map_err(sm_err)?;
        Ok((dir, store, TestSm::new(sm_dir)))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite failed: {e}");
    }
}
