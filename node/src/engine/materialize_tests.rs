//! Tests of `materialize.rs`: content, metadata, re-checks, crashes, symlinks.

use std::io;

use filesyncd_chunkstore::chunker::{chunk_and_hash, Chunker, ChunkerParams};
use filesyncd_chunkstore::store::{
    ChunkStore, FileIndex, FileStamp, GcStats, Location, MemChunkStore, Result as StoreResult,
};
use filesyncd_merkle::{build, ChunkEntry, Hash};

use super::fs::Fs;
use super::fs_fake::FakeFs;
use super::fs_real::RootFs;
use super::materialize::{remove_stale_temps, Deleted, Materializer};
use super::names::TMP_PREFIX;
use super::plan::Expect;
use super::types::{FileKind, Meta, VersionId, VersionRecord};

const NOW: u64 = 1_735_689_599_000;

fn chunker() -> Chunker {
    ChunkerParams {
        min_size: 256,
        avg_size: 512,
        max_size: 1024,
        ..ChunkerParams::default()
    }
    .validate()
    .expect("params")
}

fn bytes(seed: u8, n: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Chunks `data`, puts every chunk into `store`, returns the record and list.
fn version(
    store: &dyn ChunkStore,
    path: &str,
    data: &[u8],
    mode: u32,
    put: bool,
) -> (VersionRecord, Vec<ChunkEntry>) {
    let c = chunker();
    let chunks = chunk_and_hash(data, &c).expect("chunk").entries;
    let mut at = 0;
    for e in &chunks {
        let d = &data[at..at + e.len as usize];
        if put && d.iter().any(|b| *b != 0) {
            store.put(e.hash, d).expect("put");
        }
        at += e.len as usize;
    }
    let tree = build(&chunks);
    let rec = VersionRecord {
        path: path.into(),
        meta: Meta::file(tree.root, tree.size, mode),
        mtime_ns: 1_600_000_000_000_000_007,
        version: VersionId::new(7, 0),
        origin: 1,
        holders: vec![1],
        deleted: false,
    };
    (rec, chunks)
}

fn mat<'a>(fs: &'a dyn Fs, store: &'a dyn ChunkStore, c: &'a Chunker) -> Materializer<'a> {
    Materializer {
        fs,
        store,
        chunker: c,
        node: 9,
        now_ms: NOW,
    }
}

fn no_temps(fs: &FakeFs) -> bool {
    !fs.paths().iter().any(|p| p.contains(TMP_PREFIX))
}

#[test]
fn writes_content_mode_and_mtime_and_records_the_stat() {
    let fs = FakeFs::new();
    let store = MemChunkStore::new("/nonexistent");
    let c = chunker();
    let data = bytes(1, 5000);
    let (rec, chunks) = version(&store, "d/e/f.bin", &data, 0o4755, true);
    let placed = mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Absent)
        .expect("write");
    assert_eq!(fs.read_file("d/e/f.bin"), Some(data));
    let st = fs.lstat("d/e/f.bin").expect("lstat").expect("present");
    assert_eq!(placed.stat, st);
    assert_eq!(placed.conflict, None);
    assert_eq!(st.mode, 0o755, "setuid never comes from a peer");
    assert_eq!(st.mtime_ns, rec.mtime_ns);
    assert_eq!(
        fs.lstat("d").expect("lstat").map(|s| s.kind),
        Some(FileKind::Dir)
    );
    assert!(no_temps(&fs));
}

#[test]
fn zero_chunks_are_synthesized_and_a_missing_chunk_fails_cleanly() {
    let fs = FakeFs::new();
    let store = MemChunkStore::new("/nonexistent");
    let c = chunker();
    let mut data = bytes(2, 3000);
    data.extend(vec![0u8; 4000]);
    let (rec, chunks) = version(&store, "z", &data, 0o644, true);
    mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Absent)
        .expect("write");
    assert_eq!(fs.read_file("z"), Some(data));

    fs.write_file("y", b"old");
    let old = fs.lstat("y").expect("lstat").expect("present");
    let (rec, chunks) = version(&store, "y", &bytes(3, 3000), 0o644, false);
    let e = mat(&fs, &store, &c).write_file(&rec, &chunks, Expect::Entry(old));
    assert!(e.is_err());
    assert_eq!(
        fs.read_file("y").as_deref(),
        Some(&b"old"[..]),
        "target untouched"
    );
    assert!(no_temps(&fs));
}

#[test]
fn a_target_changed_since_the_plan_is_moved_to_a_conflict_copy() {
    let fs = FakeFs::new();
    let store = MemChunkStore::new("/nonexistent");
    let c = chunker();
    fs.write_file("doc.txt", b"seen by the plan");
    let seen = fs.lstat("doc.txt").expect("lstat").expect("present");
    // The user saves again while the new version is being assembled.
    fs.before("sync_files", TMP_PREFIX, |s| {
        s.write_file("doc.txt", b"unseen edit")
    });
    let (rec, chunks) = version(&store, "doc.txt", b"remote", 0o644, true);
    let placed = mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Entry(seen))
        .expect("write");
    let conflict = "doc.sync-conflict-20241231-235959-9.txt";
    assert_eq!(placed.conflict.as_deref(), Some(conflict));
    assert_eq!(fs.read_file(conflict).as_deref(), Some(&b"unseen edit"[..]));
    assert_eq!(fs.read_file("doc.txt").as_deref(), Some(&b"remote"[..]));

    // Expected absent, but a file appeared: kept as a conflict copy too.
    fs.write_file("new.txt", b"local");
    let (rec, chunks) = version(&store, "new.txt", b"remote2", 0o644, true);
    let placed = mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Absent)
        .expect("write");
    assert!(placed.conflict.is_some());
    assert_eq!(fs.read_file("new.txt").as_deref(), Some(&b"remote2"[..]));
}

#[test]
fn a_crash_at_any_point_leaves_old_or_new_content_whole() {
    let old = bytes(4, 3000);
    let new = bytes(5, 7000);
    for with_old in [true, false] {
        let mut n = 0;
        loop {
            let fs = FakeFs::new();
            let store = MemChunkStore::new("/nonexistent");
            let c = chunker();
            fs.mkdir("d", 0o755).expect("mkdir");
            if with_old {
                fs.write_file("d/f", &old);
            }
            fs.settle();
            let expect = match fs.lstat("d/f").expect("lstat") {
                Some(s) => Expect::Entry(s),
                None => Expect::Absent,
            };
            let (rec, chunks) = version(&store, "d/f", &new, 0o644, true);
            fs.crash_after(n);
            let res = mat(&fs, &store, &c).write_file(&rec, &chunks, expect);
            if !fs.crashed() {
                res.expect("no crash: success");
                assert_eq!(fs.read_file("d/f"), Some(new.clone()));
                break;
            }
            fs.restart();
            let now = fs.read_file("d/f");
            let ok = now.as_ref() == Some(&new)
                || (with_old && now.as_ref() == Some(&old))
                || (!with_old && now.is_none());
            assert!(ok, "crash point {n}: {:?} bytes", now.map(|d| d.len()));
            remove_stale_temps(&fs).expect("cleanup");
            assert!(no_temps(&fs), "crash point {n}: temp left");
            n += 1;
        }
        assert!(n >= 8, "every step was a crash point ({n})");
    }
}

#[test]
fn directories_symlinks_and_deletes() {
    let fs = FakeFs::new();
    let store = MemChunkStore::new("/nonexistent");
    let c = chunker();
    let m = mat(&fs, &store, &c);
    let dir = |mode| VersionRecord {
        path: "a".into(),
        meta: Meta::dir(mode),
        mtime_ns: 0,
        version: VersionId::new(3, 0),
        origin: 1,
        holders: vec![],
        deleted: false,
    };
    let p = m.mkdir(&dir(0o1750), Expect::Absent).expect("mkdir");
    assert_eq!((p.stat.kind, p.stat.mode), (FileKind::Dir, 0o750));
    let p = m.mkdir(&dir(0o700), Expect::Entry(p.stat)).expect("chmod");
    assert_eq!(p.stat.mode, 0o700);

    let link = VersionRecord {
        path: "a/l".into(),
        meta: Meta::symlink("../target"),
        ..dir(0)
    };
    let p = m.symlink(&link, Expect::Absent).expect("symlink");
    assert_eq!(p.stat.kind, FileKind::Symlink);
    assert_eq!(fs.read_link("a/l").expect("readlink"), "../target");

    // A delete puts the file's chunks into the store before unlinking.
    let data = bytes(6, 4000);
    fs.write_file("a/f", &data);
    let st = fs.lstat("a/f").expect("lstat").expect("present");
    let first = chunk_and_hash(&data[..], &c).expect("chunk").entries[0];
    assert!(!store.has(&first.hash).expect("has"));
    assert_eq!(m.delete("a/f", &st).expect("delete"), Deleted::Removed);
    assert!(
        store.has(&first.hash).expect("has"),
        "chunks retired to the store"
    );
    assert_eq!(fs.lstat("a/f").expect("lstat"), None);
    assert_eq!(
        m.delete("a/f", &st).expect("delete"),
        Deleted::AlreadyAbsent
    );

    // A changed file is never deleted; a non-empty directory is kept.
    fs.write_file("a/g", b"1");
    let st = fs.lstat("a/g").expect("lstat").expect("present");
    fs.write_file("a/g", b"changed");
    assert_eq!(m.delete("a/g", &st).expect("delete"), Deleted::Changed);
    assert_eq!(fs.read_file("a/g").as_deref(), Some(&b"changed"[..]));
    let dst = fs.lstat("a").expect("lstat").expect("present");
    assert_eq!(m.delete("a", &dst).expect("delete"), Deleted::NotEmpty);

    // A conflict copy moves the entry only if it is still as planned.
    let st = fs.lstat("a/g").expect("lstat").expect("present");
    let moved = m.conflict_copy("a/g", "a/g.c", &st).expect("copy");
    assert!(moved.is_some());
    assert_eq!(fs.read_file("a/g.c").as_deref(), Some(&b"changed"[..]));
    assert_eq!(m.conflict_copy("a/g", "a/g.d", &st).expect("copy"), None);
}

#[test]
fn io_errors_leave_the_target_untouched() {
    for op in ["write", "sync_files", "rename", "set_mode"] {
        let fs = FakeFs::new();
        let store = MemChunkStore::new("/nonexistent");
        let c = chunker();
        fs.write_file("f", b"old");
        let st = fs.lstat("f").expect("lstat").expect("present");
        fs.fail(op, TMP_PREFIX, io::ErrorKind::Other);
        let (rec, chunks) = version(&store, "f", &bytes(7, 3000), 0o644, true);
        assert!(mat(&fs, &store, &c)
            .write_file(&rec, &chunks, Expect::Entry(st))
            .is_err());
        assert_eq!(fs.read_file("f").as_deref(), Some(&b"old"[..]), "{op}");
        fs.clear_failures();
        assert!(no_temps(&fs), "{op}");
    }
}

#[test]
fn real_fs_sparse_zero_runs_and_no_write_through_symlinked_parents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = RootFs::open(dir.path()).expect("root");
    let store = MemChunkStore::new(dir.path());
    let c = chunker();
    let mut data = bytes(8, 2000);
    data.extend(vec![0u8; 4 << 20]);
    data.extend(bytes(9, 2000));
    let (rec, chunks) = version(&store, "sparse.img", &data, 0o644, true);
    mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Absent)
        .expect("write");
    assert_eq!(
        std::fs::read(dir.path().join("sparse.img")).expect("read"),
        data
    );
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir.path().join("sparse.img")).expect("stat");
    assert!(
        md.blocks() * 512 < md.size() / 2,
        "zero run is a hole: {} blocks",
        md.blocks()
    );
    // The written file's chunks are indexed as live locations.
    assert!(store.get(&chunks[0].hash).expect("get").is_some());

    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("evil")).expect("symlink");
    let (rec, chunks) = version(&store, "evil/x", b"payload", 0o644, true);
    assert!(mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Absent)
        .is_err());
    assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
    assert_eq!(remove_stale_temps(&fs).expect("cleanup"), 0);
}

/// A received small file is stored inline until it is placed; the batch's
/// index commit drops that copy (the placed file holds it), unless the file
/// changed before the commit.
#[test]
fn placing_a_file_drops_the_inline_copies_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let fs = RootFs::open(&root).expect("root");
    let store = filesyncd_chunkstore::store::RedbChunkStore::open(dir.path().join("store"), &root)
        .expect("store");
    let c = chunker();
    let data = bytes(21, 3000);
    let (rec, chunks) = version(&store, "d/small", &data, 0o644, true);
    assert!(chunks.len() > 1);
    for e in &chunks {
        assert!(matches!(
            store.locate(&e.hash).expect("locate"),
            Some(Location::Inline { .. })
        ));
    }
    mat(&fs, &store, &c)
        .write_file(&rec, &chunks, Expect::Absent)
        .expect("write");
    for e in &chunks {
        assert!(
            store.get(&e.hash).expect("get").is_some(),
            "read from the file"
        );
    }
    // Once the placed file changes, nothing else holds those chunks.
    std::fs::write(root.join("d/small"), b"edited").expect("edit");
    for e in &chunks {
        assert_eq!(
            store.get(&e.hash).expect("get"),
            None,
            "inline copy dropped"
        );
    }
}

/// A batch of writes (two directories, replacing and new files): a crash at
/// any point leaves each target old or new, whole; a write reported done,
/// and a file the chunk index points at, is the new content durably (data
/// flush → rename → directory flush → index commit).
#[test]
fn a_crash_at_any_point_of_a_batch_leaves_each_target_old_or_new() {
    use super::materialize::WriteJob;
    let paths = ["a/one", "a/two", "b/three", "b/four", "five"];
    let mut n = 0;
    loop {
        let fs = FakeFs::new();
        let store = Indexed::new();
        let c = chunker();
        fs.mkdir("a", 0o755).expect("mkdir");
        fs.mkdir("b", 0o755).expect("mkdir");
        // Odd files have an old version on disk.
        let mut olds = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let old = bytes(40 + i as u8, 900 + 300 * i);
            if i % 2 == 1 {
                fs.write_file(p, &old);
            }
            olds.push(old);
        }
        fs.settle();
        let news: Vec<Vec<u8>> = (0..paths.len())
            .map(|i| bytes(60 + i as u8, 1500 + 700 * i))
            .collect();
        let versions: Vec<_> = paths
            .iter()
            .zip(&news)
            .map(|(p, d)| version(&store, p, d, 0o644, true))
            .collect();
        let expects: Vec<Expect> = paths
            .iter()
            .map(|p| match fs.lstat(p).expect("lstat") {
                Some(s) => Expect::Entry(s),
                None => Expect::Absent,
            })
            .collect();
        let jobs: Vec<WriteJob<'_>> = versions
            .iter()
            .zip(&expects)
            .map(|((rec, chunks), e)| WriteJob {
                record: rec,
                chunks,
                expect: *e,
            })
            .collect();
        fs.crash_after(n);
        let results = mat(&fs, &store, &c).write_files(&jobs);
        assert_eq!(results.len(), paths.len());
        let crashed = fs.crashed();
        // What the chunk index was told about.
        let seen = store.paths.lock().expect("lock").clone();
        let indexed: Vec<bool> = paths.iter().map(|p| seen.iter().any(|s| s == p)).collect();
        if !crashed {
            for (i, p) in paths.iter().enumerate() {
                assert!(results[i].is_ok(), "{p}: {:?}", results[i]);
                assert_eq!(fs.read_file(p).as_ref(), Some(&news[i]), "{p}");
                assert!(indexed[i], "{p} indexed");
            }
            break;
        }
        // `crash_after` reverted the file system to its durable state.
        fs.restart();
        for (i, p) in paths.iter().enumerate() {
            let now = fs.read_file(p);
            let was = (i % 2 == 1).then(|| olds[i].clone());
            assert!(
                now.as_ref() == Some(&news[i]) || now == was,
                "crash point {n}, {p}: {:?} bytes",
                now.as_ref().map(|d| d.len())
            );
            if results[i].is_ok() || indexed[i] {
                assert_eq!(
                    now.as_ref(),
                    Some(&news[i]),
                    "crash point {n}, {p}: acked but not durable"
                );
            }
        }
        remove_stale_temps(&fs).expect("cleanup");
        assert!(no_temps(&fs), "crash point {n}: temp left");
        n += 1;
    }
    assert!(n >= 20, "every step was a crash point ({n})");
}

/// A [`MemChunkStore`] that remembers which live files were indexed.
struct Indexed {
    inner: MemChunkStore,
    paths: std::sync::Mutex<Vec<String>>,
}

impl Indexed {
    fn new() -> Indexed {
        Indexed {
            inner: MemChunkStore::new("/nonexistent"),
            paths: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl ChunkStore for Indexed {
    fn put(&self, hash: Hash, data: &[u8]) -> StoreResult<()> {
        self.inner.put(hash, data)
    }
    fn has(&self, hash: &Hash) -> StoreResult<bool> {
        self.inner.has(hash)
    }
    fn get(&self, hash: &Hash) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get(hash)
    }
    fn locate(&self, hash: &Hash) -> StoreResult<Option<Location>> {
        self.inner.locate(hash)
    }
    fn file_stamp(&self, p: &str) -> StoreResult<Option<FileStamp>> {
        self.inner.file_stamp(p)
    }
    fn index_file(
        &self,
        rel_path: &str,
        stamp: FileStamp,
        chunks: &[(u64, ChunkEntry)],
    ) -> StoreResult<()> {
        self.paths.lock().expect("lock").push(rel_path.to_owned());
        self.inner.index_file(rel_path, stamp, chunks)
    }
    fn index_files(&self, files: &[FileIndex<'_>]) -> StoreResult<()> {
        self.paths
            .lock()
            .expect("lock")
            .extend(files.iter().map(|f| f.rel_path.to_owned()));
        self.inner.index_files(files)
    }
    fn forget_file(&self, rel_path: &str) -> StoreResult<()> {
        self.inner.forget_file(rel_path)
    }
    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> StoreResult<GcStats> {
        self.inner.gc(keep)
    }
}
