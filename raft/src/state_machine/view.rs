//! [`SmView`]: one read snapshot of the state machine for a caller whose reads must agree
//! with each other: a sync step reads the applied index, what changed since its last step
//! and the newest record of every path it decides, all at the same applied index, without
//! holding a copy of the committed tree in memory.
//!
//! Every method reads the snapshot taken by [`SmReader::view`](super::SmReader::view); the
//! writer is never blocked (redb readers see the last committed transaction). Costs: `newest`
//! one lookup in `live` (a live path) or one backward step in `history` (a tombstoned or
//! unknown one); `paths_under` and `for_each_newest` a range of `history` (every retained
//! version in it, each path reported once); `changed_since` as
//! [`SmReader::changed_since`](super::SmReader::changed_since), streamed.

use openraft::LogId;
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::error::SmError;
use super::reader::{applied_in, ChangedRead, SCAN_RATIO};
use super::tables::{self, dec, ChangedKey, HistKey};
use crate::history::PathRecord;
use crate::NodeId;

pub struct SmView {
    live: ReadOnlyTable<&'static str, &'static [u8]>,
    hist: ReadOnlyTable<HistKey, &'static [u8]>,
    changed: ReadOnlyTable<ChangedKey, &'static str>,
    applied: Option<LogId<NodeId>>,
}

impl SmView {
    pub(crate) fn new(txn: ReadTransaction) -> Result<SmView, SmError> {
        Ok(SmView {
            applied: applied_in(&txn)?,
            live: txn.open_table(tables::LIVE)?,
            hist: txn.open_table(tables::HISTORY)?,
            changed: txn.open_table(tables::CHANGED)?,
        })
    }

    /// The last applied log id of the snapshot.
    pub fn applied(&self) -> Option<LogId<NodeId>> {
        self.applied
    }

    /// The newest retained record of `path`, tombstones included (`None`: the path has no
    /// retained record).
    pub fn newest(&self, path: &str) -> Result<Option<PathRecord>, SmError> {
        // A live path's newest record is its live record; only the others need the history.
        if let Some(r) = tables::read_live(&self.live, path)? {
            return Ok(Some(r));
        }
        match self
            .hist
            .range((path, 0u64, 0u32)..=(path, u64::MAX, u32::MAX))?
            .next_back()
        {
            Some(item) => Ok(Some(dec(item?.1.value())?)),
            None => Ok(None),
        }
    }

    /// Every path with a retained record (tombstones included) that is `root` or beneath it
    /// (`""`: every path), ascending, each once.
    pub fn paths_under(&self, root: &str, out: &mut Vec<String>) -> Result<(), SmError> {
        let prefix = if root.is_empty() {
            String::new()
        } else {
            if self
                .hist
                .range((root, 0u64, 0u32)..=(root, u64::MAX, u32::MAX))?
                .next()
                .is_some()
            {
                out.push(root.to_string());
            }
            format!("{root}/")
        };
        for item in self.hist.range((prefix.as_str(), 0u64, 0u32)..)? {
            let (k, _) = item?;
            let (path, _, _) = k.value();
            if !path.starts_with(&prefix) {
                break;
            }
            if out.last().map(String::as_str) != Some(path) {
                out.push(path.to_string());
            }
        }
        Ok(())
    }

    /// Calls `f` with the newest retained record of every path, ascending by path: one
    /// forward pass over the history, each path's newest record decoded once.
    pub fn for_each_newest(
        &self,
        mut f: impl FnMut(&str, PathRecord) -> Result<(), SmError>,
    ) -> Result<(), SmError> {
        self.newest_after(0, &mut f)
    }

    /// [`SmReader::changed_since`](super::SmReader::changed_since) at this snapshot, streamed:
    /// `f` gets the newest record of every path whose newest record was written after log
    /// index `index`, ascending by path.
    pub fn changed_since(
        &self,
        index: u64,
        f: impl FnMut(&str, PathRecord) -> Result<(), SmError>,
    ) -> Result<(), SmError> {
        self.changed_since_by(index, ChangedRead::Auto, f)
    }

    /// [`SmView::changed_since`], reading as `how` says: the `changed` index and one history
    /// lookup per path, or one pass over the history once more than one path in
    /// `SCAN_RATIO` history records changed.
    pub(crate) fn changed_since_by(
        &self,
        index: u64,
        how: ChangedRead,
        mut f: impl FnMut(&str, PathRecord) -> Result<(), SmError>,
    ) -> Result<(), SmError> {
        let Some(from) = index.checked_add(1) else {
            return Ok(());
        };
        let limit = match how {
            ChangedRead::Auto => self.hist.len()? / SCAN_RATIO,
            ChangedRead::Index => u64::MAX,
            ChangedRead::Scan => return self.newest_after(index, &mut f),
        };
        let mut keys: Vec<(String, u64, u32)> = Vec::new();
        for item in self.changed.range((from, 0u32)..)? {
            if keys.len() as u64 >= limit {
                return self.newest_after(index, &mut f);
            }
            let (k, v) = item?;
            let (idx, pos) = k.value();
            keys.push((v.value().to_string(), idx, pos));
        }
        keys.sort_unstable();
        for (path, idx, pos) in keys {
            let v = self.hist.get((path.as_str(), idx, pos))?.ok_or_else(|| {
                SmError::Corrupt(format!(
                    "changed index names {path:?} at {idx}.{pos}, absent from the history"
                ))
            })?;
            f(&path, dec(v.value())?)?;
        }
        Ok(())
    }

    /// The newest record of every path whose newest record is after `index`, ascending: one
    /// forward pass, holding the encoded record of the path in hand until the next path.
    fn newest_after(
        &self,
        index: u64,
        f: &mut impl FnMut(&str, PathRecord) -> Result<(), SmError>,
    ) -> Result<(), SmError> {
        let mut held: Option<(String, u64, Vec<u8>)> = None;
        let mut emit = |h: &(String, u64, Vec<u8>)| -> Result<(), SmError> {
            if h.1 > index {
                f(&h.0, dec(&h.2)?)?;
            }
            Ok(())
        };
        for item in self.hist.iter()? {
            let (k, v) = item?;
            let (path, idx, _) = k.value();
            match &mut held {
                Some(h) if h.0 == path => {
                    h.1 = idx;
                    h.2.clear();
                    h.2.extend_from_slice(v.value());
                }
                _ => {
                    if let Some(h) = held.take() {
                        emit(&h)?;
                    }
                    held = Some((path.to_string(), idx, v.value().to_vec()));
                }
            }
        }
        if let Some(h) = held {
            emit(&h)?;
        }
        Ok(())
    }
}
