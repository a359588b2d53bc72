//! Crash consistency and persistence of `RedbChunkStore`, through its public
//! API and its documented on-disk layout (blob files and inline values).

use filesyncd_chunkstore::store::{
    ChunkStore, FileStamp, Location, RecoveryStats, RedbChunkStore, StoreError, INLINE_MAX,
};
use filesyncd_chunkstore::{ChunkEntry, Hash};
use redb::ReadableTable;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A chunk stored as a blob file under the default options.
const LARGE: usize = INLINE_MAX + 4000;

/// The `inline` table of the layout in the module doc of `store`.
const INLINE: redb::TableDefinition<&[u8; 32], &[u8]> = redb::TableDefinition::new("inline");

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

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                files_under(&p)
            } else {
                1
            }
        })
        .sum()
}

/// Rewrites the inline value of `h` with redb directly, the store closed.
fn rewrite_inline(store: &Path, h: &Hash, f: impl FnOnce(&mut Vec<u8>)) {
    let db = redb::Database::create(store.join("index.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(INLINE).unwrap();
        let mut v = t
            .get(h.as_bytes())
            .unwrap()
            .expect("inline row")
            .value()
            .to_vec();
        f(&mut v);
        t.insert(h.as_bytes(), v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn everything_survives_a_reopen() {
    let d = dirs();
    let blob = data(1, LARGE);
    let hb = Hash::of_chunk(&blob);
    let small = data(6, 2048);
    let hs = Hash::of_chunk(&small);
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
        s.put(hs, &small).unwrap();
        s.index_file("live", stamp, &[(1000, ce)]).unwrap();
        assert_eq!(s.blob_path(&hb), blob_path(&d.store, &hb));
    }
    assert!(blob_path(&d.store, &hb).exists());
    assert!(
        !blob_path(&d.store, &hs).exists(),
        "a small chunk is no file"
    );
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(
        s.recovery(),
        RecoveryStats::default(),
        "clean stop: nothing to recover"
    );
    assert_eq!(s.get(&hb).unwrap(), Some(blob));
    assert_eq!(s.get(&hs).unwrap(), Some(small));
    assert_eq!(
        s.locate(&hb).unwrap(),
        Some(Location::Blob { len: LARGE as u64 })
    );
    assert_eq!(s.locate(&hs).unwrap(), Some(Location::Inline { len: 2048 }));
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
    assert_eq!(s.entry_count().unwrap(), 3);
    assert_eq!(s.index_stats().unwrap().inline_values, 1);
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
    let x = data(5, LARGE);
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
        Err(StoreError::IndexFormatTooNew {
            found: 99,
            supported: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    // Refused untouched: still format 99, and no inline table was added.
    let db = redb::Database::create(d.store.join("index.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let meta = txn.open_table(def).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), 99);
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
    // 17 small chunks (inline) and 3 large ones (blob files).
    let size = |i: u8| if i % 7 == 3 { LARGE } else { 100 + i as usize };
    let chunks: Vec<Vec<u8>> = (0..20).map(|i| data(i, size(i))).collect();
    let items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put_many(&items).unwrap();
        s.put_many(&items).unwrap();
    }
    assert_eq!(
        files_under(&d.store.join("blobs")),
        3,
        "one file per large chunk"
    );
    assert_eq!(files_under(&d.store.join("tmp")), 0);
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(s.recovery(), RecoveryStats::default());
    for (h, c) in &items {
        assert_eq!(s.get(h).unwrap().as_deref(), Some(*c));
    }
    assert_eq!(s.entry_count().unwrap(), 20);
    assert_eq!(s.index_stats().unwrap().inline_values, 17);
}

#[test]
fn small_chunks_are_no_files() {
    let d = dirs();
    let chunks: Vec<Vec<u8>> = (0..50).map(|i| data(i, 37 * i as usize)).collect();
    let items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    s.put_many(&items).unwrap();
    s.put(Hash::of_chunk(&data(99, INLINE_MAX)), &data(99, INLINE_MAX))
        .unwrap();
    assert_eq!(files_under(&d.store.join("blobs")), 0);
    assert_eq!(files_under(&d.store.join("tmp")), 0);
    assert_eq!(s.index_stats().unwrap().inline_values, 51);
    for (h, c) in &items {
        assert_eq!(s.get(h).unwrap().as_deref(), Some(*c));
    }
}

#[test]
fn inline_rot_is_detected_and_dropped() {
    let d = dirs();
    let (x, y, z) = (data(7, 3000), data(8, 3001), data(9, 3002));
    let (hx, hy, hz) = (Hash::of_chunk(&x), Hash::of_chunk(&y), Hash::of_chunk(&z));
    let all = [(hx, x.as_slice()), (hy, &y), (hz, &z)];
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put_many(&all).unwrap();
    }
    // One flipped bit; values grown past the inline limit (a damaged index
    // must not make us copy them) or cut short.
    rewrite_inline(&d.store, &hx, |v| v[1500] ^= 0x01);
    rewrite_inline(&d.store, &hy, |v| v.resize(200_000, 7));
    rewrite_inline(&d.store, &hz, |v| v.truncate(3001));
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert!(s.has(&hx).unwrap(), "has does not read the bytes");
    assert_eq!(s.get(&hx).unwrap(), None);
    assert!(!s.has(&hx).unwrap(), "the corrupt value is dropped");
    // `has` takes an inline location at its word (it reads no value);
    // `locate` and `get` check the length.
    assert!(s.has(&hy).unwrap(), "has does not read the value");
    assert_eq!(
        s.locate(&hy).unwrap(),
        None,
        "a value of the wrong length is no copy"
    );
    assert_eq!(s.get(&hz).unwrap(), None);
    assert_eq!(s.entry_count().unwrap(), 1, "{hy} is left to gc");
    let stats = s.gc(&|_| true).unwrap();
    assert_eq!(stats.missing_blobs_pruned, 1, "{stats:?}");
    assert_eq!(s.entry_count().unwrap(), 0);
    assert_eq!(s.index_stats().unwrap().inline_values, 0);
    // Put again: whole again.
    s.put_many(&all).unwrap();
    for (h, c) in all {
        assert_eq!(s.get(&h).unwrap().as_deref(), Some(c));
    }
}

#[test]
fn orphan_blob_of_an_inline_chunk_replaces_it_at_open() {
    // A crash can leave a renamed, un-indexed blob of a chunk that is also
    // inline (stored inline by a build with a larger threshold). The blob
    // hashes to its name: it is indexed, and the chunk keeps one own copy.
    let d = dirs();
    let x = data(9, 5000);
    let hx = Hash::of_chunk(&x);
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put(hx, &x).unwrap();
    }
    let p = blob_path(&d.store, &hx);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, &x).unwrap();
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(s.recovery().orphan_blobs_indexed, 1);
    assert_eq!(s.locate(&hx).unwrap(), Some(Location::Blob { len: 5000 }));
    assert_eq!(s.index_stats().unwrap().inline_values, 0);
    assert_eq!(s.get(&hx).unwrap(), Some(x.clone()));
    // And the blob of a small chunk (format 1 wrote those) stays a blob
    // while it is good; put replaces a bad one by an inline value.
    s.put(hx, &x).unwrap();
    assert_eq!(s.locate(&hx).unwrap(), Some(Location::Blob { len: 5000 }));
    let mut rotten = x.clone();
    rotten[0] ^= 1;
    fs::write(&p, &rotten).unwrap();
    s.put(hx, &x).unwrap();
    assert_eq!(s.locate(&hx).unwrap(), Some(Location::Inline { len: 5000 }));
    assert!(!p.exists(), "the bad blob went with the commit");
    drop(s);
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(s.recovery(), RecoveryStats::default());
    assert_eq!(s.get(&hx).unwrap(), Some(x));
}

/// The chunks of batch `b` of the killed writer: 8 small, 2 large.
fn batch(b: u32) -> Vec<Vec<u8>> {
    (0..10u32)
        .map(|i| {
            let n = if i < 8 {
                2048 + i as usize
            } else {
                LARGE + i as usize
            };
            let seed = (b * 10 + i) as u8 ^ (b >> 5) as u8;
            let mut v = data(seed, n);
            v[..4].copy_from_slice(&b.to_le_bytes());
            v[4] = i as u8;
            v
        })
        .collect()
}

/// The writer `a_killed_writer_leaves_whole_batches` runs in a child
/// process (a no-op unless `FILESYNCD_CRASH_CHILD` names its directory).
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os("FILESYNCD_CRASH_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let s = RedbChunkStore::open(dir.join("store"), dir.join("root")).unwrap();
    // (Bounded: killed long before, or ended by EPIPE if the parent died.)
    for b in 0..10_000 {
        let chunks = batch(b);
        let items: Vec<(Hash, &[u8])> = chunks
            .iter()
            .map(|c| (Hash::of_chunk(c), c.as_slice()))
            .collect();
        s.put_many(&items).unwrap();
        println!("committed {b}");
    }
}

#[test]
fn a_killed_writer_leaves_whole_batches() {
    // SIGKILL, not a power cut: what the kernel accepted survives. This
    // checks that a mixed batch commits whole or not at all and that open
    // recovers, not the fsyncs.
    for delay_ms in [0, 2, 5, 11, 23] {
        let d = dirs();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FILESYNCD_CRASH_CHILD", d.store.parent().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last = None;
        while last.is_none_or(|l| l < 2) {
            let line = lines.next().expect("the writer runs").unwrap();
            if let Some(b) = line.strip_prefix("committed ") {
                last = Some(b.parse::<u32>().unwrap());
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        for line in lines {
            if let Some(b) = line.unwrap().strip_prefix("committed ") {
                last = Some(b.parse().unwrap());
            }
        }
        child.wait().unwrap();
        let last = last.unwrap();

        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        let present = |b: u32| -> (usize, usize) {
            let mut n = (0, 0);
            for (i, c) in batch(b).iter().enumerate() {
                if let Some(got) = s.get(&Hash::of_chunk(c)).unwrap() {
                    assert_eq!(&got, c, "never wrong bytes");
                    if i < 8 {
                        n.0 += 1
                    } else {
                        n.1 += 1
                    }
                }
            }
            n
        };
        for b in 0..=last {
            assert_eq!(
                present(b),
                (8, 2),
                "acknowledged batch {b} (delay {delay_ms} ms)"
            );
        }
        // The batch in flight: its inline chunks all or none; if they are
        // there, so are its blobs (one commit). Blobs without them are
        // renamed blobs recovery indexed.
        match present(last + 1) {
            (8, 2) | (0, _) => {}
            other => panic!("batch {} torn: {other:?} (delay {delay_ms} ms)", last + 1),
        }
        assert_eq!(present(last + 2), (0, 0));
        assert_eq!(files_under(&d.store.join("tmp")), 0);
    }
}

#[test]
fn gc_and_get_leave_no_inline_row_behind() {
    let d = dirs();
    let chunks: Vec<Vec<u8>> = (0..6).map(|i| data(40 + i, 700 + i as usize)).collect();
    let items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    let inline_rows = |s: &RedbChunkStore| s.index_stats().unwrap().inline_values;
    {
        let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
        s.put_many(&items).unwrap();
        assert_eq!(inline_rows(&s), 6);
        // Rejected by keep: rows 0 and 1 go.
        let (h0, h1) = (items[0].0, items[1].0);
        let stats = s.gc(&|h| *h != h0 && *h != h1).unwrap();
        assert_eq!((stats.blobs_removed, stats.inline_removed), (2, 2));
        assert_eq!(inline_rows(&s), 4);
        // Redundant with a verified live copy: row 2 goes.
        fs::write(d.root.join("f"), &chunks[2]).unwrap();
        let stamp = FileStamp::of_path(&d.root.join("f")).unwrap();
        let ce = ChunkEntry {
            hash: items[2].0,
            len: chunks[2].len() as u32,
        };
        s.index_file("f", stamp, &[(0, ce)]).unwrap();
        assert_eq!(s.gc(&|_| true).unwrap().redundant_blobs_removed, 1);
        assert_eq!(inline_rows(&s), 3);
        assert_eq!(s.get(&items[2].0).unwrap().as_deref(), Some(items[2].1));
    }
    // Found corrupt by get: row 3 goes.
    rewrite_inline(&d.store, &items[3].0, |v| v[0] ^= 0xff);
    let s = RedbChunkStore::open(&d.store, &d.root).unwrap();
    assert_eq!(s.get(&items[3].0).unwrap(), None);
    assert_eq!(inline_rows(&s), 2);
    assert_eq!(s.entry_count().unwrap(), 3, "chunks 2 (live), 4 and 5");
    for (h, c) in &items[4..] {
        assert_eq!(s.get(h).unwrap().as_deref(), Some(*c));
    }
}
