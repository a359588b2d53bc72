//! Installing a received snapshot (see the parent module doc).

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;
use redb::{Database, ReadableTable};

use super::file::{open_for_read, promote, verify, SnapHeader, SnapRecord};
use crate::apply::tree_value;
use crate::history::PathRecord;
use crate::state_machine::error::SmError;
use crate::state_machine::tables::{self, enc, WriteTables};
use crate::state_machine::tree::ClusterTree;
use crate::{NodeId, NodeInfo};

/// Verifies the snapshot in `src` and replaces the state of `db` with it. Returns the
/// header, the snapshot's final path in `dir`, and the rebuilt cluster tree.
pub fn install(
    db: &Database,
    dir: &Path,
    src: &mut File,
    expected: &SnapshotMeta<NodeId, NodeInfo>,
) -> Result<(SnapHeader, PathBuf, ClusterTree), SmError> {
    let tmp = dir.join(format!("install-{:016x}.tmp", rand::random::<u64>()));
    let result = copy_and_load(db, &tmp, src, expected);
    let (header, tree) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let index = header.last_log_id.map_or(0, |l| l.index);
    let dest = match promote(dir, &tmp, index)? {
        Some(d) => d,
        None => {
            super::current(dir)?.ok_or_else(|| SmError::BadSnapshot("snapshot vanished".into()))?
        }
    };
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "part") {
            let _ = fs::remove_file(&p);
        }
    }
    Ok((header, dest, tree))
}

/// Makes the current snapshot file cover the last installed snapshot.
///
/// `install` commits the received state and then promotes its file: a crash
/// in between leaves the state machine at the installed index with the
/// current snapshot file older, and the log behind both. openraft then
/// purges the log up to the applied index at start-up and finds no snapshot
/// covering it (it panics: `purge_upto <= snapshot_last_log_id`). The state
/// is the truth: a snapshot of it is built now. Runs at open; returns
/// whether it built one.
pub fn repair_current(db: &Database, dir: &Path) -> Result<bool, SmError> {
    let installed: Option<openraft::LogId<NodeId>> = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(tables::META)?;
        let v = meta.get(tables::META_INSTALLED)?;
        match v {
            Some(v) => tables::dec(v.value())?,
            None => None,
        }
    };
    let Some(installed) = installed else {
        return Ok(false);
    };
    let current = match super::current(dir)? {
        Some(p) => super::read_header(&p)?.last_log_id,
        None => None,
    };
    if current.is_some_and(|c| c.index >= installed.index) {
        return Ok(false);
    }
    tracing::warn!(
        installed = installed.index,
        current = current.map(|c| c.index),
        "the last installed snapshot has no file (a crash after its commit): building one from the state"
    );
    super::build(db, dir)?;
    Ok(true)
}

fn copy_and_load(
    db: &Database,
    tmp: &Path,
    src: &mut File,
    expected: &SnapshotMeta<NodeId, NodeInfo>,
) -> Result<(SnapHeader, ClusterTree), SmError> {
    src.seek(SeekFrom::Start(0))?;
    {
        let mut out = File::create(tmp)?;
        std::io::copy(src, &mut out)?;
        out.sync_all()?;
    }
    verify(tmp)?;
    let (header, mut frames) = open_for_read(tmp)?;
    if header.last_log_id != expected.last_log_id {
        return Err(SmError::BadSnapshot(format!(
            "file is at {:?}, meta says {:?}",
            header.last_log_id, expected.last_log_id
        )));
    }

    let txn = db.begin_write()?;
    for t in [tables::LIVE, tables::STATE, tables::META] {
        txn.delete_table(t)?;
    }
    txn.delete_table(tables::HISTORY)?;
    txn.delete_table(tables::CHANGED)?;
    txn.delete_table(tables::HINTS)?;
    txn.delete_table(tables::TOKENS)?;
    txn.delete_table(tables::TOKEN_IDS)?;
    txn.delete_table(tables::DEDUP)?;
    txn.delete_table(tables::REVOKED)?;
    txn.delete_table(tables::REVOKED_PEERS)?;
    tables::create_all(&txn)?;
    let tree;
    {
        let mut t = WriteTables::open(&txn)?;
        let mut count = 0u64;
        let mut last: Option<(String, PathRecord)> = None;
        // The newest record of a path: its `changed` key, and its live record unless a
        // tombstone.
        let flush = |t: &mut WriteTables<'_>, last: Option<(String, PathRecord)>| {
            if let Some((p, r)) = last {
                tables::changed_insert(&mut t.changed, r.version, &p)?;
                if !r.is_tombstone() {
                    t.live.insert(p.as_str(), enc(&r)?.as_slice())?;
                }
            }
            Ok::<(), SmError>(())
        };
        loop {
            let rec: SnapRecord = frames.next()?;
            match rec {
                SnapRecord::History { path, rec } => {
                    if let Some((lp, lr)) = &last {
                        let prev = (lp.as_str(), lr.version);
                        if (path.as_str(), rec.version) <= prev {
                            return Err(SmError::BadSnapshot("history out of order".into()));
                        }
                    }
                    let key = (path.as_str(), rec.version.index, rec.version.pos);
                    t.history.insert(key, enc(&rec)?.as_slice())?;
                    if last.as_ref().is_some_and(|(lp, _)| *lp != path) {
                        flush(&mut t, last.take())?;
                    }
                    last = Some((path, rec));
                }
                SnapRecord::Token { hash, rec } => {
                    t.tokens.insert(hash.0, enc(&rec)?.as_slice())?;
                }
                SnapRecord::TokenId { id, hash } => {
                    t.token_ids.insert(id.as_str(), hash.0)?;
                }
                SnapRecord::Dedup {
                    origin,
                    seq,
                    outcomes,
                } => {
                    t.dedup.insert((origin, seq), enc(&outcomes)?.as_slice())?;
                }
                SnapRecord::Hint(h) => {
                    let key = (h.at_ms, h.path.as_str(), h.version.index, h.version.pos);
                    t.hints.insert(key, ())?;
                }
                SnapRecord::Revoked { node, rec } => {
                    t.revoked.insert(node, enc(&rec)?.as_slice())?;
                    t.revoked_peers.insert(rec.peer_id.as_str(), node)?;
                }
                SnapRecord::ClusterKey(seed) => {
                    t.state
                        .insert(tables::CLUSTER_KEY, enc(&seed)?.as_slice())?;
                }
                SnapRecord::End { records } => {
                    if records != count {
                        return Err(SmError::BadSnapshot(format!(
                            "{count} records, trailer says {records}"
                        )));
                    }
                    break;
                }
            }
            count += 1;
        }
        flush(&mut t, last.take())?;
        t.state
            .insert(tables::STATE_KEY, enc(&header.state)?.as_slice())?;

        let items = t.live.iter()?.map(|item| {
            let (k, v) = item?;
            let rec: PathRecord = tables::dec(v.value())?;
            let meta = rec
                .state
                .as_ref()
                .ok_or_else(|| SmError::Corrupt("tombstone in live".into()))?;
            Ok((k.value().to_string(), tree_value(meta)))
        });
        tree = ClusterTree::build(items)?;
        if tree.root() != header.root {
            return Err(SmError::BadSnapshot(format!(
                "rebuilt root {} differs from the snapshot's {}",
                tree.root(),
                header.root
            )));
        }
    }
    {
        let mut meta = txn.open_table(tables::META)?;
        meta.insert(tables::META_APPLIED, enc(&header.last_log_id)?.as_slice())?;
        meta.insert(tables::META_FORMAT, enc(&tables::SM_FORMAT)?.as_slice())?;
        meta.insert(
            tables::META_CHANGED_AT,
            enc(&header.last_log_id)?.as_slice(),
        )?;
        meta.insert(tables::META_MEMBERSHIP, enc(&header.membership)?.as_slice())?;
        meta.insert(tables::META_ROOT, enc(&header.root)?.as_slice())?;
        meta.insert(tables::META_INSTALLED, enc(&header.last_log_id)?.as_slice())?;
    }
    txn.commit()?;
    filesyncd_chunkstore::failpoint::hit("raft::snapshot_installed");
    Ok((header, tree))
}
