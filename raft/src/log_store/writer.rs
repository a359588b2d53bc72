//! The log store's single writer thread: group commit.
//!
//! Every write (append, vote, committed, truncate, purge) is an [`Op`] sent, in call order,
//! over one bounded channel. The thread takes the first waiting op plus whatever else is
//! already queued (at most [`MAX_BATCH_OPS`]), applies them IN ORDER inside ONE redb write
//! transaction, commits it, and only then updates the shared in-memory state, fires the
//! append callbacks and answers the waiting callers. So one fsync covers every append that
//! arrived while the previous fsync was running: entries/s is not bounded by fsyncs/s.
//!
//! Durability: a batch is committed with `Durability::Immediate` (fsynced before `commit`
//! returns) unless it holds nothing but `SaveCommitted` ops, which are committed with
//! `Durability::None`: redb makes them durable with the next immediate commit (or at
//! shutdown, see [`run`]). Losing the newest committed id in a crash is safe: the value read
//! back is then an older committed id, which Raft treats as "re-apply less".
//!
//! Failure: if a batch fails, every op in it gets an error, the state is poisoned and every
//! later op fails too: the in-memory view may be ahead of the disk, and openraft stops the
//! node on a storage error anyway.

use std::sync::Arc;

use openraft::storage::LogFlushed;
use redb::Durability;
use tokio::sync::{mpsc, oneshot};

use super::db;
use super::error::LogStoreError;
use super::record::{self, RecordKey};
use super::{Entry, LogId, Shared, Vote};
use crate::TypeConfig;

/// Most ops folded into one transaction.
pub(crate) const MAX_BATCH_OPS: usize = 512;

pub(crate) type Reply = oneshot::Sender<Result<(), LogStoreError>>;

/// Who to tell that an append is durable.
pub(crate) enum Done {
    /// openraft's callback.
    Raft(LogFlushed<TypeConfig>),
    /// [`super::RedbLogStore::append_entries`]' waiter.
    Channel(Reply),
}

impl Done {
    fn complete(self, result: Result<(), LogStoreError>) {
        match self {
            Done::Raft(cb) => {
                cb.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())))
            }
            Done::Channel(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

pub(crate) enum Op {
    Append {
        entries: Vec<Arc<Entry>>,
        done: Done,
    },
    SaveVote {
        vote: Vote,
        reply: Reply,
    },
    SaveCommitted {
        committed: Option<LogId>,
    },
    Truncate {
        since: LogId,
        reply: Reply,
    },
    Purge {
        upto: LogId,
        reply: Reply,
    },
    Sync {
        reply: Reply,
    },
}

impl Op {
    fn needs_durability(&self) -> bool {
        !matches!(self, Op::SaveCommitted { .. })
    }

    fn fail(self, err: LogStoreError) {
        match self {
            Op::Append { done, .. } => done.complete(Err(err)),
            Op::SaveVote { reply, .. }
            | Op::Truncate { reply, .. }
            | Op::Purge { reply, .. }
            | Op::Sync { reply } => {
                let _ = reply.send(Err(err));
            }
            Op::SaveCommitted { .. } => {}
        }
    }
}

/// What a truncate found, to update the in-memory state after commit.
enum Effect {
    None,
    Truncated { new_last: Option<LogId> },
}

/// The thread body. Returns when every sender is gone, after making any lazily committed
/// state durable.
pub(crate) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Op>) {
    let mut lazy_pending = false;
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        if let Some(msg) = shared.poisoned() {
            ops.into_iter()
                .for_each(|op| op.fail(LogStoreError::Poisoned(msg.clone())));
            continue;
        }
        let durable = ops.iter().any(Op::needs_durability);
        match write_batch(&shared, &ops, durable) {
            Ok(effects) => {
                if ops.iter().any(|op| matches!(op, Op::Append { .. })) {
                    filesyncd_chunkstore::failpoint::hit("raft::log_appended");
                }
                lazy_pending = !durable;
                complete(&shared, ops, effects);
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, ops = ops.len(), "raft log store write failed; poisoning the store");
                shared.poison(msg.clone());
                ops.into_iter()
                    .for_each(|op| op.fail(LogStoreError::Poisoned(msg.clone())));
            }
        }
    }
    if lazy_pending && shared.poisoned().is_none() {
        if let Err(e) = flush_durable(&shared) {
            tracing::error!(error = %e, "raft log store: final durable commit failed");
        }
    }
}

fn flush_durable(shared: &Shared) -> Result<(), LogStoreError> {
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    txn.commit()?;
    Ok(())
}

/// Applies `ops` in order in one transaction and commits it.
fn write_batch(shared: &Shared, ops: &[Op], durable: bool) -> Result<Vec<Effect>, LogStoreError> {
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    // The purged id as of this point of the batch (truncate needs it).
    let mut last_purged = shared.lock().last_purged;
    let mut effects = Vec::with_capacity(ops.len());
    for op in ops {
        let effect = match op {
            Op::Append { entries, .. } => {
                let mut log = txn.open_table(db::LOG)?;
                for entry in entries {
                    let index = entry.log_id.index;
                    let rec = record::encode(RecordKey::Log(index), entry.as_ref())
                        .map_err(LogStoreError::Encode)?;
                    db::insert_record(&mut log, index, &rec)?;
                }
                Effect::None
            }
            Op::SaveVote { vote, .. } => {
                db::put_meta(&txn, db::META_VOTE, vote)?;
                Effect::None
            }
            Op::SaveCommitted { committed } => {
                db::put_meta(&txn, db::META_COMMITTED, committed)?;
                Effect::None
            }
            Op::Truncate { since, .. } => {
                let new_last = db::truncate_in(&txn, since.index, last_purged)?;
                Effect::Truncated { new_last }
            }
            Op::Purge { upto, .. } => {
                if last_purged.is_some_and(|p| p.index >= upto.index) {
                    // Already purged further: nothing to do (never move the purged id back).
                } else {
                    db::purge_in(&txn, upto)?;
                    last_purged = Some(*upto);
                }
                Effect::None
            }
            Op::Sync { .. } => Effect::None,
        };
        effects.push(effect);
    }
    txn.commit()?;
    Ok(effects)
}

/// After a successful commit: update the shared state, then notify, in op order.
fn complete(shared: &Shared, ops: Vec<Op>, effects: Vec<Effect>) {
    {
        let mut st = shared.lock();
        for (op, effect) in ops.iter().zip(&effects) {
            match (op, effect) {
                (Op::Append { entries, .. }, _) => {
                    if let Some(last) = entries.last() {
                        let upto = last.log_id.index;
                        while st.overlay.front().is_some_and(|e| e.log_id.index <= upto) {
                            st.overlay.pop_front();
                        }
                    }
                }
                (Op::SaveVote { vote, .. }, _) => st.vote = Some(*vote),
                (Op::Truncate { since, .. }, Effect::Truncated { new_last }) => {
                    st.overlay.retain(|e| e.log_id.index < since.index);
                    st.last_log_id = *new_last;
                }
                (Op::Purge { upto, .. }, _) => {
                    if st.last_purged.is_none_or(|p| p.index < upto.index) {
                        st.last_purged = Some(*upto);
                    }
                    while st
                        .overlay
                        .front()
                        .is_some_and(|e| e.log_id.index <= upto.index)
                    {
                        st.overlay.pop_front();
                    }
                    if st.last_log_id < Some(*upto) {
                        st.last_log_id = Some(*upto);
                    }
                }
                _ => {}
            }
        }
    }
    for op in ops {
        match op {
            Op::Append { done, .. } => done.complete(Ok(())),
            Op::SaveVote { reply, .. }
            | Op::Truncate { reply, .. }
            | Op::Purge { reply, .. }
            | Op::Sync { reply } => {
                let _ = reply.send(Ok(()));
            }
            Op::SaveCommitted { .. } => {}
        }
    }
}
