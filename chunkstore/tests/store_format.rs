//! The on-disk format of `RedbChunkStore`: an index of an older format, as
//! the older code wrote it, is upgraded in place on open (module doc of
//! `store`, "On-disk layout").

use filesyncd_chunkstore::store::{ChunkStore, FileStamp, Location, RecoveryStats, RedbChunkStore};
use filesyncd_chunkstore::Hash;
use redb::{ReadableTableMetadata, TableDefinition};
use std::fs;
use std::path::Path;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
const FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("files");
const PATHS: TableDefinition<&str, u64> = TableDefinition::new("paths");
const INLINE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("inline");

/// A file record as format 1 encodes it (postcard `FileRec { path, stamp }`).
#[derive(serde::Serialize)]
struct FileRecV1<'a> {
    path: &'a str,
    stamp: FileStamp,
}

fn data(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(29) ^ seed).collect()
}

fn varints(vs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in vs {
        out = postcard::to_extend(v, out).unwrap();
    }
    out
}

fn write_blob(store: &Path, bytes: &[u8]) -> Hash {
    let h = Hash::of_chunk(bytes);
    let hex = h.to_hex();
    let dir = store.join("blobs").join(&hex[..2]);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(hex), bytes).unwrap();
    h
}

/// What format 1 wrote: the four tables, `format = 1`, a small and a large
/// chunk as blob files, one live file of one chunk (file id 1).
fn write_format_1(store: &Path, small: &[u8], large: &[u8], live: (&str, FileStamp, &[u8])) {
    fs::create_dir_all(store.join("tmp")).unwrap();
    let (hs, hl) = (write_blob(store, small), write_blob(store, large));
    let db = redb::Builder::new()
        .create_with_file_format_v3(true)
        .create(store.join("index.redb"))
        .unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format", 1).unwrap();
        meta.insert("next_file_id", 2).unwrap();
        let mut chunks = txn.open_table(CHUNKS).unwrap();
        chunks
            .insert(hs.as_bytes(), varints(&[0, small.len() as u64]).as_slice())
            .unwrap();
        chunks
            .insert(hl.as_bytes(), varints(&[0, large.len() as u64]).as_slice())
            .unwrap();
        let (rel, stamp, bytes) = live;
        chunks
            .insert(
                Hash::of_chunk(bytes).as_bytes(),
                varints(&[1, 0, bytes.len() as u64]).as_slice(),
            )
            .unwrap();
        let rec = postcard::to_allocvec(&FileRecV1 { path: rel, stamp }).unwrap();
        txn.open_table(FILES)
            .unwrap()
            .insert(1, rec.as_slice())
            .unwrap();
        txn.open_table(PATHS).unwrap().insert(rel, 1).unwrap();
    }
    txn.commit().unwrap();
}

fn format_of(store: &Path) -> (u64, Option<u64>) {
    let db = redb::Database::create(store.join("index.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let format = txn
        .open_table(META)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value();
    let inline = txn.open_table(INLINE).ok().map(|t| t.len().unwrap());
    (format, inline)
}

#[test]
fn format_1_index_is_upgraded_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, root) = (tmp.path().join("store"), tmp.path().join("root"));
    fs::create_dir_all(root.join("docs")).unwrap();
    let small = data(1, 3000);
    let large = data(2, filesyncd_chunkstore::store::INLINE_MAX + 5000);
    let live = data(3, 4096);
    fs::write(root.join("docs/a.txt"), &live).unwrap();
    let stamp = FileStamp::of_path(&root.join("docs/a.txt")).unwrap();
    write_format_1(&store, &small, &large, ("docs/a.txt", stamp, &live));
    assert_eq!(format_of(&store), (1, None), "the fixture is format 1");

    let (hs, hl, hv) = (
        Hash::of_chunk(&small),
        Hash::of_chunk(&large),
        Hash::of_chunk(&live),
    );
    let new_small = data(4, 2000);
    let hn = Hash::of_chunk(&new_small);
    {
        let s = RedbChunkStore::open(&store, &root).unwrap();
        assert_eq!(
            s.recovery(),
            RecoveryStats::default(),
            "its blobs are indexed"
        );
        // Old blobs stay blobs, small ones included; the live file reads.
        assert_eq!(s.locate(&hs).unwrap(), Some(Location::Blob { len: 3000 }));
        assert_eq!(s.get(&hs).unwrap(), Some(small.clone()));
        assert_eq!(s.get(&hl).unwrap(), Some(large.clone()));
        assert_eq!(
            s.locate(&hv).unwrap(),
            Some(Location::LiveFile {
                rel_path: "docs/a.txt".into(),
                offset: 0,
                len: 4096,
                stamp
            })
        );
        assert_eq!(s.get(&hv).unwrap(), Some(live.clone()));
        // A good old blob is not duplicated inline by a put.
        s.put(hs, &small).unwrap();
        assert_eq!(s.locate(&hs).unwrap(), Some(Location::Blob { len: 3000 }));
        // New small chunks go inline; the next file id follows the old ones.
        s.put(hn, &new_small).unwrap();
        assert_eq!(s.locate(&hn).unwrap(), Some(Location::Inline { len: 2000 }));
        let other = data(5, 100);
        fs::write(root.join("b"), &other).unwrap();
        let st = FileStamp::of_path(&root.join("b")).unwrap();
        let ce = filesyncd_chunkstore::ChunkEntry {
            hash: Hash::of_chunk(&other),
            len: 100,
        };
        s.index_file("b", st, &[(0, ce)]).unwrap();
        assert_eq!(s.get(&hv).unwrap(), Some(live.clone()), "id 1 not reused");
        assert_eq!(s.get(&ce.hash).unwrap(), Some(other));
    }
    assert_eq!(
        format_of(&store),
        (2, Some(1)),
        "upgraded: format 2, inline table"
    );
    let s = RedbChunkStore::open(&store, &root).unwrap();
    assert_eq!(s.recovery(), RecoveryStats::default());
    assert_eq!(s.get(&hn).unwrap(), Some(new_small));
    assert_eq!(s.get(&hs).unwrap(), Some(small));
    assert_eq!(s.get(&hl).unwrap(), Some(large));
    assert_eq!(s.entry_count().unwrap(), 5);
}

#[test]
fn a_new_index_is_format_2() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    drop(RedbChunkStore::open(&store, tmp.path()).unwrap());
    assert_eq!(format_of(&store), (2, Some(0)));
    drop(RedbChunkStore::open(&store, tmp.path()).unwrap());
    assert_eq!(format_of(&store), (2, Some(0)));
}
