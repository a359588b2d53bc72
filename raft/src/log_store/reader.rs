//! Read side of the log store: [`RedbLogReader`] and the `RaftLogReader` impls.
//!
//! A read snapshots the overlay (appended, not yet committed entries) under the state lock
//! FIRST, then reads redb below the overlay's first index. Entries leave the overlay only
//! after their transaction committed, so an entry is in the snapshot or already in redb: an
//! entry appended before the read began is never missed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::{RaftLogReader, StorageError};

use super::{db, read_logs_err, Entry, LogId, LogStoreError, RedbLogStore, Shared};
use crate::{NodeId, TypeConfig};

/// Byte budget of one `limited_get_log_entries` answer (at least one entry is returned).
pub(crate) const LIMITED_READ_BYTES: usize = 8 << 20;

/// A cheap, cloneable read handle (used by openraft's replication tasks).
#[derive(Clone)]
pub struct RedbLogReader {
    pub(crate) shared: Arc<Shared>,
}

impl RedbLogReader {
    /// The last log id (appended entries not yet flushed included), else
    /// the last purged one.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.shared.lock().last_log_id
    }
}

fn to_range<RB: RangeBounds<u64>>(r: &RB) -> (Bound<u64>, Bound<u64>) {
    (r.start_bound().cloned(), r.end_bound().cloned())
}

impl RedbLogReader {
    /// Entries in `range`, overlay first then disk (see the module invariants).
    pub(crate) fn read(
        &self,
        range: (Bound<u64>, Bound<u64>),
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogStoreError> {
        let start = match range.0 {
            Bound::Included(s) => s,
            Bound::Excluded(s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive end; None = unbounded.
        let end = match range.1 {
            Bound::Included(e) => e.checked_add(1),
            Bound::Excluded(e) => Some(e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let in_range = |i: u64| i >= start && end.is_none_or(|e| i < e);
        let (overlay, overlay_first) = {
            let st = self.shared.lock();
            let first = st.overlay.front().map(|e| e.log_id.index);
            let picked: Vec<Entry> = st
                .overlay
                .iter()
                .filter(|e| in_range(e.log_id.index))
                .map(|e| Entry::clone(e))
                .collect();
            (picked, first)
        };
        let disk_end = match (end, overlay_first) {
            (Some(e), Some(f)) => Some(e.min(f)),
            (e, f) => e.or(f),
        };
        let (mut out, stopped_early) = if disk_end.is_some_and(|e| e <= start) {
            (Vec::new(), false)
        } else {
            let disk_range = (
                Bound::Included(start),
                disk_end.map_or(Bound::Unbounded, Bound::Excluded),
            );
            db::read_entries(&self.shared.db, disk_range, max_bytes)?
        };
        if !stopped_early {
            if let Some(first) = overlay.first() {
                let contiguous = out
                    .last()
                    .is_none_or(|l| l.log_id.index + 1 == first.log_id.index);
                if contiguous {
                    out.extend(overlay);
                }
            }
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for RedbLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read(to_range(&range), usize::MAX)
            .map_err(read_logs_err)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read(
            (Bound::Included(start), Bound::Excluded(end)),
            LIMITED_READ_BYTES,
        )
        .map_err(read_logs_err)
    }
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.reader()
            .read(to_range(&range), usize::MAX)
            .map_err(read_logs_err)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.reader()
            .read(
                (Bound::Included(start), Bound::Excluded(end)),
                LIMITED_READ_BYTES,
            )
            .map_err(read_logs_err)
    }
}

#[cfg(test)]
mod tests;
