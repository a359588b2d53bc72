//! Durable Raft log for openraft 0.9 (storage-v2) on redb: [`RedbLogStore`] implements
//! `RaftLogStorage<TypeConfig>`, [`RedbLogReader`] the replication-side `RaftLogReader`.
//!
//! # Goals
//! - Durable: an append's callback fires, and `save_vote` / `truncate` / `purge` return, only
//!   after the redb transaction holding them committed with `Durability::Immediate` (fsynced).
//!   `save_committed` alone is persisted lazily (with the next fsynced batch, or when the store
//!   is dropped): after a crash `read_committed` may return an OLDER committed id, never a
//!   newer one, which openraft handles by re-applying less (see `log_store/writer.rs`).
//! - Fast: appends never wait for the disk. A single writer thread group-commits everything
//!   queued into one transaction (see `log_store/writer.rs`), so openraft's one entry per
//!   append still costs one fsync per *batch*, not per entry. No lock is held across an
//!   `.await`; the async methods only touch a `std::sync::Mutex` briefly and a bounded channel.
//! - Corruption is detected, never replayed: every record is framed with a version byte and a
//!   64-bit BLAKE3 checksum bound to its key (see `log_store/record.rs`).
//!
//! # On-disk layout
//! One redb file (tables in `log_store/db.rs`): `raft_log` maps index → framed postcard
//! `Entry`; `raft_meta` holds the format version, the owning node id, the vote, the committed
//! log id and the last purged log id, each framed the same way.
//!
//! # Invariants
//! - The entries on disk plus the not-yet-flushed *overlay* form one contiguous run of
//!   indexes; all of it is above `last_purged`. `append` refuses anything that would leave a
//!   hole or overwrite (openraft truncates first; [`LogStoreOptions::check_contiguous`] turns
//!   this guard off for openraft's conformance suite only).
//! - An entry is readable from the moment `append` returns (from the overlay until its batch
//!   commits, from redb afterwards). Readers snapshot the overlay *before* reading redb, so an
//!   entry moving from one to the other is never missed.
//! - The store refuses to open a database created for another node id.
//! - Dropping the store closes the queue and joins the writer thread (at most one batch plus
//!   the final flush), so the file is closed when `drop` returns and can be reopened.
//!
//! # Corruption and torn writes: what happens at open
//! redb commits are atomic: after a crash redb rolls back to the last fully committed
//! transaction (its own page checksums find a torn commit). A commit that did not complete was
//! never acknowledged (callbacks fire after commit), so redb already drops an unflushed, torn
//! tail for us. Consequently every record that redb *does* show belongs to a completed commit
//! and may have been acknowledged to a leader: if one fails verification (flipped bit, cut
//! record, record under the wrong key, a hole in the indexes), [`RedbLogStore::open`] returns a
//! typed [`LogStoreError`] instead of truncating it (`tests/log_store_durability.rs` builds
//! torn-commit images page by page and checks each reopens as exactly the previous or the new
//! committed state). Dropping an acknowledged entry could lose
//! a committed write from the cluster; the safe remedy is the operator's: wipe the node's data
//! directory and re-add it as a new member (a new node id, see [`crate::node_id`]). Reads
//! after open verify every record again and turn a failure into a `StorageError`, which stops
//! the openraft node.

mod db;
pub mod error;
mod reader;
mod record;
mod writer;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use tokio::sync::{mpsc, oneshot};

pub use db::LOG_STORE_FORMAT;
pub use error::{CorruptReason, LogStoreError};
pub use reader::RedbLogReader;

use crate::{NodeId, TypeConfig};

/// A log entry of this crate's Raft.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of this crate's Raft.
pub type LogId = openraft::LogId<NodeId>;
/// A vote of this crate's Raft.
pub type Vote = openraft::Vote<NodeId>;

/// Bounded queue between the async API and the writer thread.
const WRITE_QUEUE: usize = 1024;

/// In-memory view shared by the store, its readers and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Appended entries not yet committed to redb, contiguous and in order.
    overlay: VecDeque<Arc<Entry>>,
    /// Last entry (overlay included), else `last_purged`.
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    poisoned: Option<String>,
}

pub(crate) struct Shared {
    db: redb::Database,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` half-updated in a way that
        // matters more than the panic itself; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    fn poison(&self, msg: String) {
        let mut st = self.lock();
        if st.poisoned.is_none() {
            st.poisoned = Some(msg);
        }
    }
}

/// Owns the writer thread; dropping it closes the queue and waits for the thread to finish.
struct WriterHandle {
    tx: Option<mpsc::Sender<writer::Op>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("raft log store writer thread panicked");
            }
        }
    }
}

/// Knobs of [`RedbLogStore::open_with`].
#[derive(Clone, Copy, Debug)]
pub struct LogStoreOptions {
    /// Refuse an append that does not extend the log by exactly the next index (default
    /// `true`). openraft never appends otherwise; its storage conformance suite does (it
    /// appends below the purged id and leaves holes), so the suite runs with `false`. With
    /// `false` an append simply inserts, as a map would; a log with holes then fails the
    /// open-time verification.
    pub check_contiguous: bool,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            check_contiguous: true,
        }
    }
}

/// Summary of what [`RedbLogStore::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Entries present (not purged).
    pub entries: u64,
    pub last_purged: Option<LogId>,
    pub last_log_id: Option<LogId>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
}

/// Resolves once the entries of one [`RedbLogStore::append_entries`] call are durable.
#[must_use = "dropping it does not cancel the append, but loses the durability signal"]
pub struct Flushed(oneshot::Receiver<Result<(), LogStoreError>>);

impl Flushed {
    /// Waits for the fsync that covers the entries.
    pub async fn wait(self) -> Result<(), LogStoreError> {
        self.0.await.map_err(|_| LogStoreError::WriterGone)?
    }
}

/// The Raft log store. Not `Clone`: openraft owns the single writing handle; readers come
/// from [`RedbLogStore::reader`] / `get_log_reader`.
pub struct RedbLogStore {
    shared: Arc<Shared>,
    writer: WriterHandle,
    report: OpenReport,
    options: LogStoreOptions,
}

impl RedbLogStore {
    /// Opens (or creates) the log store at `path` (a redb file; parent directories are
    /// created) for node `node_id`, verifying every stored record. Blocking: call it before
    /// starting Raft, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, node_id: NodeId) -> Result<Self, LogStoreError> {
        Self::open_with(path, node_id, LogStoreOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    pub fn open_with(
        path: impl AsRef<Path>,
        node_id: NodeId,
        options: LogStoreOptions,
    ) -> Result<Self, LogStoreError> {
        let path = path.as_ref();
        let (database, rec) = db::open(path, node_id)?;
        let report = OpenReport {
            entries: rec.entries,
            last_purged: rec.last_purged,
            last_log_id: rec.last_log_id,
            vote: rec.vote,
            committed: rec.committed,
        };
        tracing::info!(path = %path.display(), node_id, entries = rec.entries,
            last_log_id = ?rec.last_log_id, last_purged = ?rec.last_purged, "raft log store opened");
        let shared = Arc::new(Shared {
            db: database,
            state: Mutex::new(State {
                overlay: VecDeque::new(),
                last_log_id: rec.last_log_id,
                last_purged: rec.last_purged,
                vote: rec.vote,
                committed: rec.committed,
                poisoned: None,
            }),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("raft-log-{node_id}"))
            .spawn(move || writer::run(thread_shared, rx))
            .map_err(|source| LogStoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(RedbLogStore {
            shared,
            writer: WriterHandle {
                tx: Some(tx),
                thread: Some(thread),
            },
            report,
            options,
        })
    }

    /// What was on disk when this store was opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// A read handle sharing this store's state.
    pub fn reader(&self) -> RedbLogReader {
        RedbLogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits until everything written so far (the lazily persisted committed id included) is
    /// durable.
    pub async fn sync(&mut self) -> Result<(), LogStoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(writer::Op::Sync { reply }).await?;
        rx.await.map_err(|_| LogStoreError::WriterGone)?
    }

    async fn send(&self, op: writer::Op) -> Result<(), LogStoreError> {
        if let Some(msg) = self.shared.poisoned() {
            return Err(LogStoreError::Poisoned(msg));
        }
        let tx = self.writer.tx.as_ref().ok_or(LogStoreError::WriterGone)?;
        tx.send(op).await.map_err(|_| LogStoreError::WriterGone)
    }

    async fn send_and_wait(
        &self,
        make: impl FnOnce(writer::Reply) -> writer::Op,
    ) -> Result<(), LogStoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| LogStoreError::WriterGone)?
    }

    /// Appends outside openraft (tools, tests, benches): returns once the entries are
    /// readable; the returned [`Flushed`] resolves once they are durable.
    pub async fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Flushed, LogStoreError> {
        let entries: Vec<Arc<Entry>> = entries.into_iter().map(Arc::new).collect();
        let (tx, rx) = oneshot::channel();
        self.append_inner(entries, writer::Done::Channel(tx))
            .await?;
        Ok(Flushed(rx))
    }

    async fn append_inner(
        &mut self,
        entries: Vec<Arc<Entry>>,
        done: writer::Done,
    ) -> Result<(), LogStoreError> {
        self.stage(&entries)?;
        if let Err(e) = self.send(writer::Op::Append { entries, done }).await {
            // The overlay now holds entries that will never reach the disk.
            self.shared.poison(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Checks `entries` extend the log without a hole and makes them readable.
    fn stage(&self, entries: &[Arc<Entry>]) -> Result<(), LogStoreError> {
        let mut st = self.shared.lock();
        if let Some(msg) = &st.poisoned {
            return Err(LogStoreError::Poisoned(msg.clone()));
        }
        let mut expect = st.last_log_id.map(|l| l.index + 1);
        for e in entries {
            let index = e.log_id.index;
            if let Some(x) = expect.filter(|_| self.options.check_contiguous) {
                if index != x {
                    return Err(LogStoreError::NonContiguous(format!(
                        "entry {} appended where {} was expected (last log id {:?})",
                        e.log_id, x, st.last_log_id
                    )));
                }
            }
            expect = Some(index + 1);
        }
        if let Some(last) = entries.last() {
            st.last_log_id = Some(last.log_id);
            st.overlay.extend(entries.iter().cloned());
        }
        Ok(())
    }
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: LogStoreError,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn read_logs_err(e: LogStoreError) -> StorageError<NodeId> {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_logs_err(e: LogStoreError) -> StorageError<NodeId> {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

fn write_vote_err(e: LogStoreError) -> StorageError<NodeId> {
    io_err(ErrorSubject::Vote, ErrorVerb::Write, e)
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = RedbLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let st = self.shared.lock();
        Ok(LogState {
            last_purged_log_id: st.last_purged,
            last_log_id: st.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.send_and_wait(|reply| writer::Op::SaveVote { vote, reply })
            .await
            .map_err(write_vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        Ok(self.shared.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        self.shared.lock().committed = committed;
        self.send(writer::Op::SaveCommitted { committed })
            .await
            .map_err(write_logs_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.shared.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Even an empty append goes through the queue so its callback keeps the call order.
        let entries: Vec<Arc<Entry>> = entries.into_iter().map(Arc::new).collect();
        self.append_inner(entries, writer::Done::Raft(callback))
            .await
            .map_err(write_logs_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.send_and_wait(|reply| writer::Op::Truncate {
            since: log_id,
            reply,
        })
        .await
        .map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.send_and_wait(|reply| writer::Op::Purge {
            upto: log_id,
            reply,
        })
        .await
        .map_err(write_logs_err)
    }
}
