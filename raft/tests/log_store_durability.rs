//! `RedbLogStore` across restarts: what was written comes back, corruption is refused, a torn
//! commit rolls back to a committed state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use filesyncd_raft::log_store::{CorruptReason, Entry, LogId, LogStoreError, RedbLogStore, Vote};
use filesyncd_raft::NodeInfo;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Membership, RaftLogReader};

const NODE: u64 = 7;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, NODE), index)
}

/// A membership entry whose node address carries a findable marker (and some bulk).
fn member(term: u64, index: u64) -> Entry {
    let info = NodeInfo {
        peer_id: format!("MARKER-{index:06}-"),
        addr: "x".repeat(200),
    };
    let nodes = BTreeMap::from([(NODE, info)]);
    Entry::new_membership(
        log_id(term, index),
        Membership::new(vec![BTreeSet::from([NODE])], nodes),
    )
}

fn path_in(dir: &Path) -> PathBuf {
    dir.join("raft").join("log.redb")
}

async fn append_all(store: &mut RedbLogStore, entries: impl IntoIterator<Item = Entry>) {
    store
        .append_entries(entries)
        .await
        .expect("append")
        .wait()
        .await
        .expect("flushed");
}

async fn all_entries(store: &mut RedbLogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.expect("read")
}

fn ids(v: &[Entry]) -> Vec<LogId> {
    v.iter().map(|e| e.log_id).collect()
}

#[tokio::test]
async fn restart_keeps_entries_vote_committed_and_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = path_in(dir.path());
    let written: Vec<Entry>;
    {
        let mut store = RedbLogStore::open(&path, NODE).expect("open");
        assert_eq!(store.open_report().entries, 0);
        append_all(&mut store, (0..10).map(|i| member(1, i))).await;
        // One entry per call, as openraft does.
        for i in 10..20 {
            append_all(&mut store, [member(2, i)]).await;
        }
        store
            .save_vote(&Vote::new_committed(2, NODE))
            .await
            .expect("vote");
        store.purge(log_id(1, 4)).await.expect("purge");
        // Saved lazily (no fsync of its own): must still be there after a clean drop.
        store
            .save_committed(Some(log_id(2, 15)))
            .await
            .expect("committed");
        written = all_entries(&mut store).await;
    }
    assert_eq!(
        ids(&written),
        (5..20)
            .map(|i| log_id(if i < 10 { 1 } else { 2 }, i))
            .collect::<Vec<_>>()
    );

    let mut store = RedbLogStore::open(&path, NODE).expect("reopen");
    let report = store.open_report().clone();
    assert_eq!(report.entries, 15);
    assert_eq!(report.last_purged, Some(log_id(1, 4)));
    assert_eq!(report.last_log_id, Some(log_id(2, 19)));
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(2, 19)));
    assert_eq!(
        store.read_vote().await.expect("vote"),
        Some(Vote::new_committed(2, NODE))
    );
    assert_eq!(
        store.read_committed().await.expect("committed"),
        Some(log_id(2, 15))
    );
    let back = all_entries(&mut store).await;
    assert_eq!(back, written, "entries come back byte for byte");
}

#[tokio::test]
async fn truncate_then_append_and_purge_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = path_in(dir.path());
    {
        let mut store = RedbLogStore::open(&path, NODE).expect("open");
        append_all(&mut store, (0..10).map(|i| member(1, i))).await;
        store.truncate(log_id(1, 7)).await.expect("truncate");
        let st = store.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, Some(log_id(1, 6)));
        assert_eq!(ids(&all_entries(&mut store).await).len(), 7);
        // A new leader's entries replace the truncated ones.
        append_all(&mut store, (7..12).map(|i| member(3, i))).await;
        store.purge(log_id(1, 3)).await.expect("purge");
        // Purging behind the purged id is a no-op, never a step back.
        store.purge(log_id(1, 1)).await.expect("purge again");
    }
    let mut store = RedbLogStore::open(&path, NODE).expect("reopen");
    let got = ids(&all_entries(&mut store).await);
    let want: Vec<LogId> = (4..12)
        .map(|i| log_id(if i < 7 { 1 } else { 3 }, i))
        .collect();
    assert_eq!(got, want);
    let st = store.get_log_state().await.expect("state");
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(3, 11)));

    // Truncating everything leaves last_log_id at the purged id.
    store.truncate(log_id(1, 4)).await.expect("truncate all");
    let st = store.get_log_state().await.expect("state");
    assert_eq!(st.last_log_id, Some(log_id(1, 3)));
    assert!(all_entries(&mut store).await.is_empty());
    drop(store);
    let store = RedbLogStore::open(&path, NODE).expect("reopen");
    assert_eq!(store.open_report().entries, 0);
    assert_eq!(store.open_report().last_log_id, Some(log_id(1, 3)));
}

#[tokio::test]
async fn holes_and_overwrites_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RedbLogStore::open(path_in(dir.path()), NODE).expect("open");
    append_all(&mut store, (0..3).map(|i| member(1, i))).await;
    for bad in [
        vec![member(1, 4)],
        vec![member(1, 2)],
        vec![member(1, 3), member(1, 5)],
    ] {
        match store.append_entries(bad).await {
            Err(LogStoreError::NonContiguous(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a non-contiguous append was accepted"),
        }
    }
    // A refused append changes nothing; the next good one goes through.
    append_all(&mut store, [member(1, 3)]).await;
    assert_eq!(
        ids(&all_entries(&mut store).await),
        (0..4).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn reopening_under_another_node_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = path_in(dir.path());
    drop(RedbLogStore::open(&path, NODE).expect("open"));
    match RedbLogStore::open(&path, NODE + 1) {
        Err(LogStoreError::NodeIdMismatch { stored, requested }) => {
            assert_eq!((stored, requested), (NODE, NODE + 1));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a log store under a foreign node id"),
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_entry_is_detected_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = path_in(dir.path());
    {
        let mut store = RedbLogStore::open(&path, NODE).expect("open");
        append_all(&mut store, (0..8).map(|i| member(1, i))).await;
    }
    let mut bytes = std::fs::read(&path).expect("read db");
    let hits = find_all(&bytes, b"MARKER-000005-");
    assert!(!hits.is_empty(), "entry 5 not found in the file");
    // redb is copy-on-write: stale copies may exist; flip the byte in every copy.
    for at in hits {
        bytes[at + 3] ^= 0x20;
    }
    std::fs::write(&path, &bytes).expect("write db");

    match RedbLogStore::open(&path, NODE) {
        Err(LogStoreError::Corrupt { what, reason }) => {
            assert!(what.contains("log entry 5"), "{what}");
            assert!(
                matches!(reason, CorruptReason::ChecksumMismatch),
                "{reason}"
            );
        }
        Err(e) => panic!("expected a corruption error, got {e}"),
        Ok(_) => panic!("a corrupt entry was accepted"),
    }
}

/// Which of the two committed states a reopened image shows.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Before,
    After,
    Refused(String),
}

/// Crash images: the file is copied while the database is open (so redb treats it as an
/// unclean shutdown), after commit K and after commit K+1. A torn K+1 is K+1's image with
/// some of the pages that changed put back to their K content, as if the crash hit while
/// K+1's writes were reaching the disk. Every such image must reopen as exactly K or K+1
/// (redb verifies the newest commit's page checksums and falls back to the previous one),
/// or be refused with a typed error; never as anything in between.
#[tokio::test]
async fn a_torn_commit_reopens_as_a_committed_state_or_is_refused() {
    const PAGE: usize = 4096;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = path_in(dir.path());
    let mut store = RedbLogStore::open(&path, NODE).expect("open");
    append_all(&mut store, (0..10).map(|i| member(1, i))).await;
    let before_entries = all_entries(&mut store).await;
    let image_k = std::fs::read(&path).expect("image k");
    append_all(&mut store, (10..20).map(|i| member(1, i))).await;
    let after_entries = all_entries(&mut store).await;
    let image_k1 = std::fs::read(&path).expect("image k+1");
    drop(store);

    let page_of = |img: &[u8], p: usize| -> Vec<u8> {
        let mut out = vec![0u8; PAGE];
        let start = (p * PAGE).min(img.len());
        let end = ((p + 1) * PAGE).min(img.len());
        out[..end - start].copy_from_slice(&img[start..end]);
        out
    };
    let pages = image_k1.len().div_ceil(PAGE);
    let changed: Vec<usize> = (0..pages)
        .filter(|&p| page_of(&image_k, p) != page_of(&image_k1, p))
        .collect();
    assert!(
        changed.len() >= 2,
        "commit K+1 changed {} pages",
        changed.len()
    );

    let mut variants: Vec<(String, Vec<usize>)> = changed
        .iter()
        .map(|&p| (format!("page {p} reverted"), vec![p]))
        .collect();
    let data: Vec<usize> = changed.iter().copied().filter(|&p| p != 0).collect();
    variants.push(("all data pages reverted, header new".into(), data.clone()));
    variants.push((
        "first half of data pages reverted".into(),
        data[..data.len() / 2].to_vec(),
    ));

    let mut outcomes = Vec::new();
    for (i, (name, revert)) in variants.iter().enumerate() {
        let mut img = image_k1.clone();
        for &p in revert {
            let old = page_of(&image_k, p);
            let start = p * PAGE;
            let end = ((p + 1) * PAGE).min(img.len());
            img[start..end].copy_from_slice(&old[..end - start]);
        }
        let torn = dir.path().join(format!("torn-{i}.redb"));
        std::fs::write(&torn, &img).expect("write image");
        let seen = match RedbLogStore::open(&torn, NODE) {
            Ok(mut s) => {
                let got = all_entries(&mut s).await;
                if got == before_entries {
                    Seen::Before
                } else if got == after_entries {
                    Seen::After
                } else {
                    panic!(
                        "{name}: reopened as neither committed state: {:?}",
                        ids(&got)
                    );
                }
            }
            Err(e) => Seen::Refused(e.to_string()),
        };
        outcomes.push((name.clone(), seen));
    }
    eprintln!("torn-commit outcomes: {outcomes:#?}");
    // Losing the newest data pages while keeping the new header is the textbook torn write:
    // it must roll back, not be refused and not be half-applied.
    let textbook = outcomes
        .iter()
        .find(|(n, _)| n.starts_with("all data pages"))
        .map(|(_, s)| s);
    assert_eq!(textbook, Some(&Seen::Before));
}
