//! Tests of `stage.rs`: a large version written once into a staged file,
//! taken by the materializer as its temp, local chunks copied, crash
//! recovery and the sweep. On a real directory (the chunk store resolves
//! live files on disk).

use std::sync::{Arc, Mutex};

use filesyncd_chunkstore::chunker::{chunk_and_hash, Chunker, ChunkerParams};
use filesyncd_chunkstore::store::{ChunkStore, FileStamp, MemChunkStore};
use filesyncd_merkle::{build, ChunkEntry, Hash, MemNodeStore};

use super::fs::Fs;
use super::fs_real::RootFs;
use super::materialize::Materializer;
use super::plan::Expect;
use super::ports::MemFetcher;
use super::stage::{self, located, stage_version, staged, staged_path, STAGE_DIR};
use super::types::{Meta, VersionId, VersionRecord};

fn chunker() -> Chunker {
    ChunkerParams {
        min_size: 2 << 10,
        avg_size: 8 << 10,
        max_size: 32 << 10,
        ..ChunkerParams::default()
    }
    .validate()
    .expect("params")
}

fn bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The origin: a store holding every chunk of `data` and its tree.
struct Origin {
    fetcher: MemFetcher,
    list: Vec<ChunkEntry>,
    root: Hash,
    size: u64,
}

fn origin(data: &[u8]) -> Origin {
    let list = chunk_and_hash(data, &chunker()).expect("chunk").entries;
    let store: Arc<dyn ChunkStore> = Arc::new(MemChunkStore::new(std::env::temp_dir()));
    let mut at = 0;
    for e in &list {
        store
            .put(e.hash, &data[at..at + e.len as usize])
            .expect("put");
        at += e.len as usize;
    }
    let tree = build(&list);
    let nodes = Arc::new(Mutex::new(MemNodeStore::new()));
    nodes.lock().unwrap().extend(tree.nodes.clone());
    let fetcher = MemFetcher::default();
    fetcher.add(1, store, nodes);
    Origin {
        fetcher,
        list,
        root: tree.root,
        size: tree.size,
    }
}

fn record(path: &str, o: &Origin) -> VersionRecord {
    VersionRecord {
        path: path.into(),
        meta: Meta::file(o.root, o.size, 0o640),
        mtime_ns: 1_600_000_000_000_000_007,
        version: VersionId::new(7, 0),
        origin: 1,
        holders: vec![1],
        deleted: false,
    }
}

fn mat<'a>(fs: &'a dyn Fs, store: &'a dyn ChunkStore, c: &'a Chunker) -> Materializer<'a> {
    Materializer {
        fs,
        store,
        chunker: c,
        node: 2,
        now_ms: 1_735_689_599_000,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Stages `o`'s version from `holders`.
fn stage_from(
    fs: &dyn Fs,
    store: &dyn ChunkStore,
    o: &Origin,
    holders: &[u64],
) -> Result<usize, String> {
    rt().block_on(stage_version(
        fs, store, &o.fetcher, o.root, o.size, &o.list, holders, "t",
    ))
}

#[test]
fn a_large_version_is_staged_once_and_the_write_takes_the_staged_file() {
    let data = bytes(1, 3 << 20);
    let o = origin(&data);
    let dir = tempfile::tempdir().unwrap();
    let fs = RootFs::open(dir.path()).unwrap();
    let store = MemChunkStore::new(dir.path());
    let fetched = stage_from(&fs, &store, &o, &[1]).expect("staged");
    let distinct: std::collections::HashSet<Hash> = o.list.iter().map(|c| c.hash).collect();
    assert_eq!(fetched, distinct.len(), "every chunk fetched once");
    let sp = staged(&fs, &store, &o.root, o.size).expect("staged and indexed");
    assert_eq!(std::fs::read(dir.path().join(&sp)).unwrap(), data);
    for c in &o.list {
        assert!(store.has(&c.hash).unwrap(), "held through the staged file");
    }
    assert!(
        store.get(&o.list[0].hash).unwrap().is_some(),
        "served from the staged file"
    );
    // Staging again is free.
    let again = stage_from(&fs, &store, &o, &[1]).unwrap();
    assert_eq!(again, 0);

    let c = chunker();
    let rec = record("d/big.bin", &o);
    let placed = mat(&fs, &store, &c)
        .write_file(&rec, &o.list, Expect::Absent)
        .expect("placed");
    let target = dir.path().join("d/big.bin");
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let meta = std::fs::metadata(&target).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        placed.stat.ino,
        meta.ino(),
        "the staged inode itself was placed"
    );
    assert_eq!(meta.mtime_nsec(), 7);
    assert!(!dir.path().join(&sp).exists(), "the staged name is gone");
    assert_eq!(store.file_stamp(&sp).unwrap(), None, "and forgotten");
    assert_eq!(
        store.file_stamp("d/big.bin").unwrap(),
        Some(FileStamp {
            inode: meta.ino(),
            size: meta.len(),
            mtime_ns: placed.stat.mtime_ns
        })
    );
    assert!(std::fs::read_dir(dir.path().join(STAGE_DIR))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn chunks_a_local_file_holds_are_copied_not_fetched() {
    // The old version is on disk and indexed; the new one has one byte
    // inserted in the middle.
    let old = bytes(2, 4 << 20);
    let mut new = old.clone();
    new.insert(old.len() / 2, 0x5a);
    let o_old = origin(&old);
    let o = origin(&new);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), &old).unwrap();
    let fs = RootFs::open(dir.path()).unwrap();
    let store = MemChunkStore::new(dir.path());
    let st = FileStamp::of_path(&dir.path().join("big")).unwrap();
    store.index_file("big", st, &located(&o_old.list)).unwrap();

    let fetched = stage_from(&fs, &store, &o, &[1]).expect("staged");
    assert!(
        fetched <= 3,
        "only the chunks around the insert travel ({fetched} did)"
    );
    let sp = staged_path(&o.root, o.size);
    assert_eq!(std::fs::read(dir.path().join(sp)).unwrap(), new);
}

#[test]
fn all_zero_chunks_stay_holes_and_are_never_fetched() {
    let mut data = bytes(3, 2 << 20);
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    let o = origin(&data);
    let dir = tempfile::tempdir().unwrap();
    let fs = RootFs::open(dir.path()).unwrap();
    let store = MemChunkStore::new(dir.path());
    stage_from(&fs, &store, &o, &[1]).expect("staged");
    let sp = staged(&fs, &store, &o.root, o.size).expect("staged");
    assert_eq!(std::fs::read(dir.path().join(sp)).unwrap(), data);
}

#[test]
fn a_version_no_holder_has_is_not_staged_and_leaves_nothing() {
    let data = bytes(4, 2 << 20);
    let o = origin(&data);
    let dir = tempfile::tempdir().unwrap();
    let fs = RootFs::open(dir.path()).unwrap();
    let store = MemChunkStore::new(dir.path());
    let err = stage_from(&fs, &store, &o, &[5]).expect_err("no holder");
    assert!(err.contains("could not be fetched"), "{err}");
    assert!(staged(&fs, &store, &o.root, o.size).is_none());
    assert!(std::fs::read_dir(dir.path().join(STAGE_DIR))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn after_a_crash_a_staged_file_is_re_verified_or_removed() {
    let c = chunker();
    let data = bytes(5, 2 << 20);
    let o = origin(&data);
    let other = origin(&bytes(6, 2 << 20));
    let dir = tempfile::tempdir().unwrap();
    let fs = RootFs::open(dir.path()).unwrap();
    let store = MemChunkStore::new(dir.path());
    for x in [&o, &other] {
        stage_from(&fs, &store, x, &[1]).expect("staged");
    }
    // A crash after the materializer set the mode and mtime of the first:
    // its stamp is stale. The second was damaged on disk.
    let sp = staged_path(&o.root, o.size);
    let f = std::fs::File::options()
        .write(true)
        .open(dir.path().join(&sp))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    drop(f);
    let bad = staged_path(&other.root, other.size);
    let mut b = std::fs::read(dir.path().join(&bad)).unwrap();
    b[10] ^= 1;
    std::fs::write(dir.path().join(&bad), &b).unwrap();
    std::fs::write(dir.path().join(STAGE_DIR).join("junk.part"), b"x").unwrap();
    assert!(staged(&fs, &store, &o.root, o.size).is_none());

    let r = stage::recover(&fs, &store, &c).unwrap();
    assert_eq!((r.kept, r.reindexed, r.removed), (0, 1, 1));
    assert!(staged(&fs, &store, &o.root, o.size).is_some(), "re-indexed");
    assert!(!dir.path().join(&bad).exists(), "damaged copy removed");
    assert!(
        dir.path().join(STAGE_DIR).join("junk.part").exists(),
        "a .part may be a pull in progress: left to the sweep"
    );

    // The sweep keeps what `keep` wants and removes the rest.
    assert_eq!(stage::sweep(&fs, &store, &|_, _| true).unwrap(), 0);
    assert_eq!(stage::sweep(&fs, &store, &|_, _| false).unwrap(), 1);
    assert_eq!(store.file_stamp(&sp).unwrap(), None);
}

/// A 2 MiB committed file `big` (bytes of `seed`), indexed, then kept by
/// a link in the staging area ([`stage::retire_by_link`]).
struct Linked {
    dir: tempfile::TempDir,
    fs: RootFs,
    store: MemChunkStore,
    o_old: Origin,
    /// `big`'s stat before the link, and after (its ctime moved).
    before: super::types::Stat,
    now: super::types::Stat,
}

fn linked_big(seed: u32) -> Linked {
    let old = bytes(seed, 2 << 20);
    let o_old = origin(&old);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), &old).unwrap();
    let fs = RootFs::open(dir.path()).unwrap();
    let store = MemChunkStore::new(dir.path());
    let before = fs.lstat("big").unwrap().unwrap();
    store
        .index_file("big", stamp_of(&before), &located(&o_old.list))
        .unwrap();
    let now = stage::retire_by_link(
        &fs,
        &store,
        "big",
        &before,
        o_old.root,
        o_old.size,
        &o_old.list,
    )
    .expect("linked")
    .expect("a stat to expect");
    Linked {
        dir,
        fs,
        store,
        o_old,
        before,
        now,
    }
}

#[test]
fn replaced_large_content_is_kept_by_a_link_and_the_write_still_places() {
    let c = chunker();
    let o = origin(&bytes(8, 2 << 20));
    let Linked {
        dir,
        fs,
        store,
        o_old,
        before,
        now,
    } = linked_big(7);
    assert_eq!(
        (now.ino, now.size, now.mtime_ns),
        (before.ino, before.size, before.mtime_ns)
    );
    // A stat the plan saw before the link is refused the second time.
    assert_eq!(
        stage::retire_by_link(
            &fs,
            &store,
            "big",
            &now,
            o_old.root,
            o_old.size,
            &o_old.list
        )
        .unwrap(),
        None,
        "already staged"
    );
    stage_from(&fs, &store, &o, &[1]).expect("staged");
    let rec = record("big", &o);
    let placed = mat(&fs, &store, &c)
        .write_file(&rec, &o.list, Expect::Entry(now))
        .expect("placed");
    assert_eq!(placed.conflict, None, "the link is not a local change");
    assert_eq!(
        std::fs::read(dir.path().join("big")).unwrap(),
        bytes(8, 2 << 20)
    );
    // The old version is still held, by the same inode, nothing copied.
    let kept = staged(&fs, &store, &o_old.root, o_old.size).expect("old kept");
    assert_eq!(fs.lstat(&kept).unwrap().unwrap().ino, before.ino);
    for ch in &o_old.list {
        assert!(
            store.get(&ch.hash).unwrap().is_some(),
            "old chunks readable"
        );
    }
}

fn stamp_of(s: &super::types::Stat) -> FileStamp {
    FileStamp {
        inode: s.ino,
        size: s.size,
        mtime_ns: s.mtime_ns,
    }
}

#[test]
fn a_deleted_large_file_is_kept_by_a_link_and_nothing_is_stored() {
    let c = chunker();
    let Linked {
        dir,
        fs,
        store,
        o_old,
        before,
        now,
    } = linked_big(9);
    let m = mat(&fs, &store, &c);
    // The plan's stat from before the link no longer matches: a delete
    // against it would not remove anything.
    assert_eq!(
        m.delete_kept("big", &before).unwrap(),
        super::materialize::Deleted::Changed
    );
    assert_eq!(
        m.delete_kept("big", &now).unwrap(),
        super::materialize::Deleted::Removed
    );
    assert!(!dir.path().join("big").exists());
    // The deleted version is held by its inode in the staging area: every
    // chunk is found in that live file, none was written as a blob.
    let kept = staged(&fs, &store, &o_old.root, o_old.size).expect("kept");
    assert_eq!(fs.lstat(&kept).unwrap().unwrap().ino, before.ino);
    for ch in &o_old.list {
        match store.locate(&ch.hash).unwrap() {
            Some(filesyncd_chunkstore::store::Location::LiveFile { rel_path, .. }) => {
                assert_eq!(rel_path, kept)
            }
            other => panic!("chunk not in the staged file: {other:?}"),
        }
        assert!(store.get(&ch.hash).unwrap().is_some());
    }
}
