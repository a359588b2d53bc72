//! Merge of overlay and disk reads, with entries staged but deliberately never sent to the
//! writer (so they stay in the overlay for the whole test).

use std::ops::Bound;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::CommittedLeaderId;

use super::super::{Entry, LogId, RedbLogStore};

fn blank(term: u64, index: u64) -> Entry {
    Entry::new_blank(LogId::new(CommittedLeaderId::new(term, 1), index))
}

fn indexes(v: &[Entry]) -> Vec<u64> {
    v.iter().map(|e| e.log_id.index).collect()
}

/// Disk holds 0..5 (term 1), the overlay 5..8 (term 2).
async fn setup(dir: &std::path::Path) -> RedbLogStore {
    let mut store = RedbLogStore::open(dir.join("log.redb"), 1).expect("open");
    store
        .append_entries((0..5).map(|i| blank(1, i)))
        .await
        .expect("append")
        .wait()
        .await
        .expect("flushed");
    let staged: Vec<Arc<Entry>> = (5..8).map(|i| Arc::new(blank(2, i))).collect();
    store.stage(&staged).expect("stage");
    store
}

#[tokio::test]
async fn overlay_and_disk_merge_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path()).await;
    let r = store.reader();
    let all = r
        .read((Bound::Unbounded, Bound::Unbounded), usize::MAX)
        .expect("read");
    assert_eq!(indexes(&all), (0..8).collect::<Vec<_>>());
    assert!(all[..5].iter().all(|e| e.log_id.leader_id.term == 1));
    assert!(all[5..].iter().all(|e| e.log_id.leader_id.term == 2));

    let mid = r
        .read((Bound::Included(3), Bound::Excluded(7)), usize::MAX)
        .expect("read");
    assert_eq!(indexes(&mid), vec![3, 4, 5, 6]);
    let tail = r
        .read((Bound::Excluded(5), Bound::Unbounded), usize::MAX)
        .expect("read");
    assert_eq!(indexes(&tail), vec![6, 7]);
    let disk_only = r
        .read((Bound::Included(1), Bound::Included(2)), usize::MAX)
        .expect("read");
    assert_eq!(indexes(&disk_only), vec![1, 2]);
    let beyond = r
        .read((Bound::Included(8), Bound::Unbounded), usize::MAX)
        .expect("read");
    assert!(beyond.is_empty());
}

#[tokio::test]
async fn empty_and_degenerate_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path()).await;
    let r = store.reader();
    for range in [
        (Bound::Included(3), Bound::Excluded(3)),
        (Bound::Included(4), Bound::Excluded(2)),
        (Bound::Excluded(u64::MAX), Bound::Unbounded),
        (Bound::Included(6), Bound::Included(5)),
    ] {
        assert!(
            r.read(range, usize::MAX).expect("read").is_empty(),
            "{range:?}"
        );
    }
    let last = r
        .read((Bound::Included(7), Bound::Included(u64::MAX)), usize::MAX)
        .expect("read");
    assert_eq!(indexes(&last), vec![7]);
}

#[tokio::test]
async fn byte_limit_never_leaves_a_hole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = setup(dir.path()).await;
    let r = store.reader();
    // A 1-byte budget stops after the first disk entry: the overlay must not be glued on.
    let one = r
        .read((Bound::Included(0), Bound::Excluded(8)), 1)
        .expect("read");
    assert_eq!(indexes(&one), vec![0]);
    // Starting inside the overlay, the budget does not apply to it.
    let ov = r
        .read((Bound::Included(5), Bound::Excluded(8)), 1)
        .expect("read");
    assert_eq!(indexes(&ov), vec![5, 6, 7]);
    // A budget that covers the disk part lets the overlay follow.
    let all = r
        .read((Bound::Included(0), Bound::Excluded(8)), 1 << 20)
        .expect("read");
    assert_eq!(indexes(&all), (0..8).collect::<Vec<_>>());
}
