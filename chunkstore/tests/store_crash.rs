//! Crash consistency and persistence of `RedbChunkStore`, through its public
//! API and its documented on-disk layout.

use filesyncd_chunkstore::store::{
    ChunkStore, FileStamp, Location, RecoveryStats, RedbChunkStore, StoreError,
};
use filesyncd_chunkstore::{ChunkEntry, Hash};
use std::fs;
use std::path::{Path, PathBuf};

fn data(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect()
}

fn blob_path(store: &Path, h: &Hash) -> PathBuf {
    let hex = h.to_hex();
    store.join("blobs").join(&hex[..2]).join(hex)
}

struct Dirs {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    root: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    Dirs {
        store,
        root,
        _tmp: tmp,
    }
}

#[test]
fn everything_survives_a_reopen() {
    let d = dirs();
    let blob = data(1, 4000);
    let hb = Hash::of_chunk(&blob);
    let live = data(2, 3000);
    fs::write(d.root.join("live"), &live).unwrap();
    let stamp = FileStamp::of_path(&d.root.join("live")).unwrap();
    let ce = ChunkEntry {
        hash: Hash::of_chunk(&live[1000..]),
        len: 2000,
    };
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put(hb, &blob).unwrap();
        s.index_file("live", stamp, &[(1000, ce)]).unwrap();
        assert_eq!(s.blob_path(&hb), blob_path(&d.store, &hb));
    }
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(
        s.recovery(),
        RecoveryStats::default(),
        "clean stop: nothing to recover"
    );
    assert_eq!(s.get(&hb).unwrap(), Some(blob));
    assert_eq!(s.get(&ce.hash).unwrap().as_deref(), Some(&live[1000..]));
    assert_eq!(
        s.locate(&ce.hash).unwrap(),
        Some(Location::LiveFile {
            rel_path: "live".into(),
            offset: 1000,
            len: 2000,
            stamp
        })
    );
    assert_eq!(s.entry_count().unwrap(), 2);
}

#[test]
fn open_recovers_from_a_crash_between_blob_and_index() {
    let d = dirs();
    let indexed = data(3, 500);
    let hi = Hash::of_chunk(&indexed);
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put(hi, &indexed).unwrap();
    }
    // What a crash can leave: a temp file mid-write, a blob renamed into
    // place but never indexed, and (bit rot, or a torn write on a fs that
    // lies) a blob that does not hash to its name.
    fs::write(d.store.join("tmp").join("deadbeef.0.tmp"), b"half a chunk").unwrap();
    let orphan = data(4, 700);
    let ho = Hash::of_chunk(&orphan);
    let po = blob_path(&d.store, &ho);
    fs::create_dir_all(po.parent().unwrap()).unwrap();
    fs::write(&po, &orphan).unwrap();
    let hbad = Hash::of_chunk(b"the real bytes");
    let pbad = blob_path(&d.store, &hbad);
    fs::create_dir_all(pbad.parent().unwrap()).unwrap();
    fs::write(&pbad, b"other bytes").unwrap();
    // A stranger's file in the blob area is left alone.
    fs::write(d.store.join("blobs").join("README"), b"not ours").unwrap();

    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(
        s.recovery(),
        RecoveryStats {
            temp_files_removed: 1,
            orphan_blobs_indexed: 1,
            bad_blobs_removed: 1
        }
    );
    assert_eq!(fs::read_dir(d.store.join("tmp")).unwrap().count(), 0);
    assert!(!pbad.exists());
    assert!(d.store.join("blobs").join("README").exists());
    assert!(!s.has(&hbad).unwrap());
    assert_eq!(s.get(&ho).unwrap(), Some(orphan));
    assert_eq!(s.get(&hi).unwrap(), Some(indexed));
    drop(s);
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(
        s.recovery(),
        RecoveryStats::default(),
        "recovery is durable"
    );
}

#[test]
fn blob_rot_on_disk_is_detected_and_dropped() {
    let d = dirs();
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    let x = data(5, 1234);
    let h = Hash::of_chunk(&x);
    s.put(h, &x).unwrap();
    let p = s.blob_path(&h);
    let mut bytes = fs::read(&p).unwrap();
    bytes[617] ^= 0x01;
    fs::write(&p, &bytes).unwrap();
    assert_eq!(s.get(&h).unwrap(), None);
    assert!(!p.exists(), "a corrupt blob is deleted");
    assert!(!s.has(&h).unwrap());
    // A vanished blob reads as absent too.
    s.put(h, &x).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!s.has(&h).unwrap());
    assert_eq!(s.get(&h).unwrap(), None);
    assert_eq!(s.entry_count().unwrap(), 0);
}

#[test]
fn unknown_index_format_is_refused() {
    let d = dirs();
    drop(RedbChunkStore::open(&d.store, &d.root).unwrap());
    {
        let db = redb::Database::create(d.store.join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            txn.open_table(def).unwrap().insert("format", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    match RedbChunkStore::open(&d.store, &d.root) {
        Err(StoreError::CorruptIndex(msg)) => assert!(msg.contains("99"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_open_of_the_same_store_fails_cleanly() {
    let d = dirs();
    let _s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert!(matches!(
        RedbChunkStore::open(&d.store, &d.root),
        Err(StoreError::Db(_))
    ));
}

#[test]
fn put_many_is_one_durable_batch() {
    let d = dirs();
    let chunks: Vec<Vec<u8>> = (0..20).map(|i| data(i, 100 + i as usize)).collect();
    let items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put_many(&items).unwrap();
        s.put_many(&items).unwrap();
    }
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    for (h, c) in &items {
        assert_eq!(s.get(h).unwrap().as_deref(), Some(*c));
    }
    assert_eq!(s.entry_count().unwrap(), 20);
}
