//! Tests of `scan.rs` on a real temp directory and on the fake file system.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;

use std::sync::Mutex;

use filesyncd_chunkstore::chunker::{Chunker, ChunkerParams};
use filesyncd_chunkstore::store::{
    ChunkStore, FileIndex, FileStamp, GcStats, Location, MemChunkStore, Result as StoreResult,
};
use filesyncd_merkle::{build, ChunkEntry, Hash};

use super::fs::Fs;
use super::fs_fake::FakeFs;
use super::fs_real::RootFs;
use super::ignore::Ignore;
use super::plan::{Marker, Scope};
use super::scan::{load_ignore, HashBudget, IndexBatch, RacySet, ScanOutput, Scanner, INDEX_BATCH};
use super::types::{FileKind, Kind, LocalEntry, VersionId};

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

/// The local index a plan would record after the scan (everything committed).
fn adopt(out: &ScanOutput) -> BTreeMap<String, LocalEntry> {
    out.view
        .entries
        .iter()
        .filter_map(|(p, e)| {
            let meta = e.meta.clone()?;
            Some((
                p.clone(),
                LocalEntry::committed(meta, e.stat, VersionId::new(1, 0)),
            ))
        })
        .collect()
}

struct Real {
    dir: tempfile::TempDir,
    fs: RootFs,
    store: MemChunkStore,
    chunker: Chunker,
}

impl Real {
    fn new() -> Real {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = RootFs::open(dir.path()).expect("root");
        let store = MemChunkStore::new(dir.path());
        Real {
            dir,
            fs,
            store,
            chunker: chunker(),
        }
    }
    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
    fn scan(&self, scope: Scope, local: &BTreeMap<String, LocalEntry>) -> ScanOutput {
        let ignore = load_ignore(&self.fs);
        Scanner {
            fs: &self.fs,
            store: &self.store,
            chunker: &self.chunker,
            ignore: &ignore,
            max_file_size: u64::MAX,
            racy: &RacySet::default(),
            racy_after_ns: i64::MAX,
        }
        .scan(scope, local)
        .expect("scan")
    }
}

#[test]
fn full_scan_records_files_dirs_links_and_skips_the_rest() {
    let r = Real::new();
    let big = bytes(1, 20_000);
    r.write("a/big.bin", &big);
    r.write("a/b/small.txt", b"hello");
    r.write("empty", b"");
    r.write(".filesyncd-marker", b"cluster-1\n");
    r.write("a/.filesyncd-tmp-123", b"partial");
    r.write(".filesyncd/state", b"x");
    r.write(".filesyncignore", b"*.log\nbuild/\n");
    r.write("x.log", b"ignored");
    r.write("build/out.o", b"ignored");
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), b"s").expect("write");
    std::os::unix::fs::symlink(outside.path(), r.dir.path().join("link")).expect("symlink");
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(r.dir.path().join(bad), b"x").expect("write");
    std::fs::write(r.dir.path().join("ctl\u{1}name"), b"x").expect("write");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        r.dir.path().join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");

    let out = r.scan(Scope::Full, &BTreeMap::new());
    let paths: Vec<&str> = out.view.entries.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        vec![
            ".filesyncignore",
            "a",
            "a/b",
            "a/b/small.txt",
            "a/big.bin",
            "empty",
            "link"
        ]
    );
    assert_eq!(out.view.marker, Marker::Found("cluster-1".into()));
    assert!(!out.view.root_empty);
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    let link = out.view.entries["link"].meta.clone().expect("meta");
    assert_eq!(
        link.kind,
        Kind::Symlink {
            target: outside.path().to_str().expect("utf8").into()
        }
    );
    let big_meta = out.view.entries["a/big.bin"].meta.clone().expect("meta");
    let want = build(
        &filesyncd_chunkstore::chunker::chunk_and_hash(&big[..], &r.chunker)
            .expect("chunk")
            .entries,
    );
    assert_eq!((big_meta.root, big_meta.size), (want.root, 20_000));
    assert_eq!(out.view.entries["a"].stat.kind, FileKind::Dir);
    assert_eq!(out.files_hashed, 4);
    assert_eq!(out.trees.len(), 4);

    // Chunk locations are indexed as live-file locations, readable by hash.
    let first: ChunkEntry = filesyncd_chunkstore::chunker::chunk_and_hash(&big[..], &r.chunker)
        .expect("chunk")
        .entries[0];
    assert_eq!(
        r.store.get(&first.hash).expect("get").as_deref(),
        Some(&big[..first.len as usize])
    );
}

#[test]
fn unchanged_files_are_not_read_again() {
    let r = Real::new();
    r.write("f1", &bytes(2, 3000));
    r.write("d/f2", &bytes(3, 3000));
    let first = r.scan(Scope::Full, &BTreeMap::new());
    assert_eq!(first.files_hashed, 2);
    let local = adopt(&first);
    let again = r.scan(Scope::Full, &local);
    assert_eq!(again.files_hashed, 0);
    assert_eq!(again.view.entries, first.view.entries);
    r.write("d/f2", &bytes(4, 3000));
    let third = r.scan(Scope::Full, &local);
    assert_eq!(third.files_hashed, 1);
    assert_ne!(third.view.entries["d/f2"], first.view.entries["d/f2"]);
}

#[test]
fn path_scope_scans_only_the_given_paths() {
    let r = Real::new();
    r.write("a/x", b"1");
    r.write("a/y/z", b"2");
    r.write("b", b"3");
    let out = r.scan(
        Scope::Paths(vec!["a".into(), "gone".into()]),
        &BTreeMap::new(),
    );
    let paths: Vec<&str> = out.view.entries.keys().map(String::as_str).collect();
    assert_eq!(paths, vec!["a", "a/x", "a/y", "a/y/z"]);
    assert_eq!(out.view.marker, Marker::Missing);
}

#[test]
fn root_with_only_daemon_names_is_empty() {
    let r = Real::new();
    r.write(".filesyncd-marker", b"c");
    r.write(".filesyncd-tmp-1", b"c");
    assert!(r.scan(Scope::Full, &BTreeMap::new()).view.root_empty);
    r.write("f", b"1");
    assert!(!r.scan(Scope::Full, &BTreeMap::new()).view.root_empty);
}

fn fake_scan(fs: &FakeFs, scope: Scope) -> ScanOutput {
    let store = MemChunkStore::new("/nonexistent");
    let c = chunker();
    Scanner {
        fs,
        store: &store,
        chunker: &c,
        ignore: &Ignore::none(),
        max_file_size: u64::MAX,
        racy: &RacySet::default(),
        racy_after_ns: i64::MAX,
    }
    .scan(scope, &BTreeMap::new())
    .expect("scan")
}

#[test]
fn a_file_that_moves_while_hashed_is_unstable() {
    let fs = FakeFs::new();
    fs.write_file("moving.bin", &bytes(5, 5000));
    fs.write_file("g", b"calm");
    // Right after `f` is opened, a writer appends to it.
    fs.before("open_read", "moving.bin", |s| {
        s.push_hook("lstat", "moving.bin", |s| {
            s.write_file("moving.bin", &bytes(6, 6000))
        });
    });
    let out = fake_scan(&fs, Scope::Full);
    assert_eq!(out.view.entries["moving.bin"].meta, None, "retry later");
    assert!(out.view.entries["g"].meta.is_some());
    // Next time it is calm: hashed.
    let out = fake_scan(&fs, Scope::Full);
    assert_eq!(
        out.view.entries["moving.bin"].meta.as_ref().map(|m| m.size),
        Some(6000)
    );
}

#[test]
fn unreadable_directories_and_files_are_not_taken_as_deleted() {
    let fs = FakeFs::new();
    fs.mkdir("sub", 0o755).expect("mkdir");
    fs.write_file("sub/x", b"1");
    fs.write_file("locked", b"2");
    fs.fail("read_dir", "sub", io::ErrorKind::PermissionDenied);
    fs.fail("open_read", "locked", io::ErrorKind::PermissionDenied);
    let out = fake_scan(&fs, Scope::Full);
    assert_eq!(out.view.unreadable, vec!["sub".to_string()]);
    assert!(!out.view.covers("sub/x"));
    assert_eq!(out.view.entries["locked"].meta, None);
    assert_eq!(out.warnings.len(), 2);
}

/// A store that records every index commit: the paths of each
/// `index_files` batch and, with a fake file system, whether each file was
/// durable at that moment. A single `index_file` is recorded as a batch of
/// one, marked `single`.
struct Recording {
    inner: MemChunkStore,
    fs: Option<FakeFs>,
    commits: Mutex<Vec<Commit>>,
}

#[derive(Debug)]
struct Commit {
    single: bool,
    /// (path, durable when committed)
    files: Vec<(String, bool)>,
}

impl Recording {
    fn new(inner: MemChunkStore, fs: Option<FakeFs>) -> Recording {
        Recording {
            inner,
            fs,
            commits: Mutex::new(Vec::new()),
        }
    }
    fn record(&self, single: bool, rels: &[&str]) {
        let files = rels
            .iter()
            .map(|r| {
                let durable = self.fs.as_ref().is_none_or(|fs| fs.is_durable(r));
                ((*r).to_owned(), durable)
            })
            .collect();
        self.commits
            .lock()
            .expect("lock")
            .push(Commit { single, files });
    }
    fn batch_sizes(&self) -> Vec<usize> {
        let commits = self.commits.lock().expect("lock");
        assert!(commits.iter().all(|c| !c.single), "{commits:?}");
        commits.iter().map(|c| c.files.len()).collect()
    }
    fn indexed(&self) -> Vec<(String, bool)> {
        let commits = self.commits.lock().expect("lock");
        commits.iter().flat_map(|c| c.files.clone()).collect()
    }
}

impl ChunkStore for Recording {
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
    fn index_file(&self, p: &str, s: FileStamp, c: &[(u64, ChunkEntry)]) -> StoreResult<()> {
        self.record(true, &[p]);
        self.inner.index_file(p, s, c)
    }
    fn forget_file(&self, p: &str) -> StoreResult<()> {
        self.inner.forget_file(p)
    }
    fn index_files(&self, files: &[FileIndex<'_>]) -> StoreResult<()> {
        let rels: Vec<&str> = files.iter().map(|f| f.rel_path).collect();
        self.record(false, &rels);
        self.inner.index_files(files)
    }
    fn forget_files(&self, rel_paths: &[&str]) -> StoreResult<()> {
        self.inner.forget_files(rel_paths)
    }
    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> StoreResult<GcStats> {
        self.inner.gc(keep)
    }
}

/// Distinct contents of 300-1400 bytes (one to a few chunks).
fn content(i: usize) -> Vec<u8> {
    let mut d = bytes((i % 251) as u8, 300 + (i * 37) % 1100);
    d.extend_from_slice(&(i as u64).to_le_bytes());
    d
}

#[test]
fn more_files_than_the_batch_bound_are_all_indexed_in_batched_commits() {
    let r = Real::new();
    let n = INDEX_BATCH.files + 37;
    for i in 0..n {
        r.write(&format!("d{}/f{i}", i % 7), &content(i));
    }
    let store = Recording::new(MemChunkStore::new(r.dir.path()), None);
    let ignore = Ignore::none();
    let out = Scanner {
        fs: &r.fs,
        store: &store,
        chunker: &r.chunker,
        ignore: &ignore,
        max_file_size: u64::MAX,
        racy: &RacySet::default(),
        racy_after_ns: i64::MAX,
    }
    .scan(Scope::Full, &BTreeMap::new())
    .expect("scan");
    assert_eq!(out.files_hashed, n as u64);
    assert_eq!(out.trees.len(), n);
    assert_eq!(store.batch_sizes(), vec![INDEX_BATCH.files, 37]);
    for i in 0..n {
        let rel = format!("d{}/f{i}", i % 7);
        let data = content(i);
        let meta = out.view.entries[&rel].meta.as_ref().expect("hashed");
        assert_eq!(meta.size, data.len() as u64);
        let chunks = filesyncd_chunkstore::chunker::chunk_and_hash(&data[..], &r.chunker)
            .expect("chunk")
            .entries;
        let mut off = 0usize;
        for ce in chunks {
            match store.locate(&ce.hash).expect("locate") {
                Some(Location::LiveFile { .. }) => {}
                other => panic!("{rel}: chunk at {off} not located: {other:?}"),
            }
            if i % 97 == 0 {
                assert_eq!(
                    store.get(&ce.hash).expect("get").as_deref(),
                    Some(&data[off..off + ce.len as usize])
                );
            }
            off += ce.len as usize;
        }
    }
}

/// Writes `data` to a new file through the fake without any fsync (neither
/// the data nor the name is durable).
fn write_unsynced(fs: &FakeFs, rel: &str, data: &[u8]) {
    let mut w = fs.create_new(rel).expect("create");
    w.write_all_at(data, 0).expect("write");
}

fn fake_scan_with(fs: &FakeFs, store: &dyn ChunkStore, batch: IndexBatch) -> ScanOutput {
    let c = chunker();
    Scanner {
        fs,
        store,
        chunker: &c,
        ignore: &Ignore::none(),
        max_file_size: u64::MAX,
        racy: &RacySet::default(),
        racy_after_ns: i64::MAX,
    }
    .scan_batched(Scope::Full, &BTreeMap::new(), batch)
    .expect("scan")
}

#[test]
fn the_files_are_flushed_before_their_index_commit() {
    let fs = FakeFs::new();
    fs.mkdir("dir", 0o755).expect("mkdir");
    let names = ["a", "dir/b", "dir/c", "d", "e"];
    for (i, n) in names.iter().enumerate() {
        write_unsynced(&fs, n, &content(i));
    }
    assert!(names.iter().all(|n| !fs.is_durable(n)));
    let store = Recording::new(MemChunkStore::new("/nonexistent"), Some(fs.clone()));
    let batch = IndexBatch {
        files: 2,
        entries: 1000,
    };
    let out = fake_scan_with(&fs, &store, batch);
    assert_eq!(out.files_hashed, 5);
    let indexed = store.indexed();
    assert_eq!(indexed.len(), 5);
    for (rel, durable) in indexed {
        assert!(durable, "{rel} was indexed before it was durable");
    }
    // One flush and one commit per batch of 2 files.
    assert_eq!(store.batch_sizes(), vec![2, 2, 1]);
    let flushed: Vec<usize> = fs.flushes().iter().map(Vec::len).collect();
    assert_eq!(flushed, vec![2, 2, 1]);
    // A crash now keeps every file as hashed.
    fs.crash_after(0);
    let _ = fs.mkdir("boom", 0o755);
    fs.restart();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(fs.read_file(n), Some(content(i)), "{n}");
    }

    // The chunk-entry bound: every file (one chunk or more) fills a batch.
    let fs2 = FakeFs::new();
    for i in 0..3 {
        write_unsynced(&fs2, &format!("f{i}"), &content(i));
    }
    let store2 = Recording::new(MemChunkStore::new("/nonexistent"), Some(fs2.clone()));
    let out = fake_scan_with(
        &fs2,
        &store2,
        IndexBatch {
            files: 100,
            entries: 1,
        },
    );
    assert_eq!(out.files_hashed, 3);
    assert_eq!(store2.batch_sizes(), vec![1, 1, 1]);
}

#[test]
fn a_file_that_changes_or_vanishes_before_the_flush_is_retried_not_indexed() {
    let fs = FakeFs::new();
    for n in ["calm", "changes", "vanishes", "fails"] {
        fs.write_file(n, &bytes(n.len() as u8, 2000));
    }
    fs.before("sync_files", "changes", |s| {
        s.write_file("changes", &bytes(9, 2500))
    });
    fs.before("sync_files", "vanishes", |s| {
        s.entries.remove("vanishes");
    });
    fs.fail("sync_files", "fails", io::ErrorKind::Other);
    let store = Recording::new(MemChunkStore::new("/nonexistent"), Some(fs.clone()));
    let out = fake_scan_with(&fs, &store, INDEX_BATCH);
    let hashed = |n: &str| out.view.entries[n].meta.is_some();
    assert!(hashed("calm"));
    assert!(!hashed("changes"), "retry later");
    assert!(!hashed("vanishes"), "retry later");
    assert!(!hashed("fails"), "retry later");
    assert_eq!(out.files_hashed, 1);
    assert_eq!(out.trees.len(), 1);
    let indexed: Vec<String> = store.indexed().into_iter().map(|(p, _)| p).collect();
    assert_eq!(indexed, vec!["calm".to_string()]);
    // Only the flush failure is worth a warning; the scan itself succeeded.
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert_eq!(out.warnings[0].path, "fails");
    // Next time the changed file is calm: hashed and indexed.
    fs.clear_failures();
    let out = fake_scan_with(&fs, &store, INDEX_BATCH);
    assert_eq!(
        out.view.entries["changes"].meta.as_ref().map(|m| m.size),
        Some(2500)
    );
    assert!(out.view.entries["fails"].meta.is_some());
    assert!(!out.view.entries.contains_key("vanishes"));
}

/// Scans the fake tree from the root with `budget`, then what each scan
/// deferred, until nothing is; returns the files each round hashed.
fn scan_until_done(fs: &FakeFs, budget: HashBudget) -> Vec<Vec<String>> {
    let c = chunker();
    let store = MemChunkStore::new("/nonexistent");
    let scanner = Scanner {
        fs,
        store: &store,
        chunker: &c,
        ignore: &Ignore::none(),
        max_file_size: u64::MAX,
        racy: &RacySet::default(),
        racy_after_ns: i64::MAX,
    };
    let mut local: BTreeMap<String, LocalEntry> = BTreeMap::new();
    let mut scope = Scope::Full;
    let mut rounds = Vec::new();
    loop {
        assert!(rounds.len() < 100, "the deferred scans never end");
        let out = scanner
            .scan_with(scope, &local, INDEX_BATCH, budget)
            .expect("scan");
        let coverage = out.view.coverage();
        // Nothing deferred is looked at: a deferred file is unstable, a
        // deferred directory or scope path not covered (nothing under it
        // can be taken as deleted).
        for d in &out.deferred {
            let e = out.view.entries.get(d);
            assert!(
                !coverage.covers(d) || e.is_some_and(|e| e.meta.is_none()),
                "{d} deferred but looked at: {e:?}"
            );
        }
        let hashed: Vec<String> = out
            .view
            .entries
            .iter()
            .filter(|(p, e)| {
                e.stat.kind == FileKind::File && e.meta.is_some() && !local.contains_key(*p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(hashed.len() as u64, out.files_hashed);
        assert!(
            out.files_hashed <= budget.files,
            "{} over the budget",
            out.files_hashed
        );
        local.extend(adopt(&out));
        rounds.push(hashed);
        if out.deferred.is_empty() {
            return rounds;
        }
        assert!(out.files_hashed > 0, "a round that defers hashes something");
        scope = Scope::Paths(super::watch::top_most(out.deferred));
    }
}

/// A scan stops hashing at its budget and defers the rest, and scanning
/// what was deferred, again and again, hashes every file exactly once.
#[test]
fn a_scan_over_its_hash_budget_defers_the_rest_to_the_next_scans() {
    let fs = FakeFs::new();
    let mut files = Vec::new();
    for d in 0..4 {
        for s in 0..3 {
            fs.mkdir(&format!("d{d}"), 0o755).ok();
            fs.mkdir(&format!("d{d}/s{s}"), 0o755).expect("mkdir");
            for f in 0..(d + s) {
                files.push(format!("d{d}/s{s}/f{f}"));
            }
        }
        files.push(format!("d{d}/top"));
    }
    files.extend(["a".to_string(), "z".to_string()]);
    for (i, f) in files.iter().enumerate() {
        write_unsynced(&fs, f, &content(i));
    }
    files.sort();
    let check = |budget: HashBudget, min_rounds: usize| {
        let rounds = scan_until_done(&fs, budget);
        let mut all: Vec<String> = rounds.iter().flatten().cloned().collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a file hashed twice");
        assert_eq!(all, files);
        assert!(
            rounds.len() >= min_rounds,
            "{budget:?}: {} rounds",
            rounds.len()
        );
    };
    // 36 files, 5 a round: at least 8 rounds.
    check(
        HashBudget {
            files: 5,
            bytes: u64::MAX,
        },
        8,
    );
    // One byte: one file a round (the first file is always hashed).
    check(
        HashBudget {
            files: u64::MAX,
            bytes: 1,
        },
        files.len(),
    );
    // Unbounded: one round.
    assert_eq!(
        scan_until_done(
            &fs,
            HashBudget {
                files: u64::MAX,
                bytes: u64::MAX
            }
        )
        .len(),
        1
    );
}

#[test]
fn a_file_over_the_max_size_is_listed_but_never_read() {
    let r = Real::new();
    r.write("small", b"12345");
    r.write("big", b"123456");
    let ignore = Ignore::none();
    let out = Scanner {
        fs: &r.fs,
        store: &r.store,
        chunker: &r.chunker,
        ignore: &ignore,
        max_file_size: 5,
        racy: &RacySet::default(),
        racy_after_ns: i64::MAX,
    }
    .scan(Scope::Full, &BTreeMap::new())
    .expect("scan");
    assert_eq!((out.files_hashed, out.bytes_hashed), (1, 5));
    assert!(out.view.entries["small"].meta.is_some());
    let big = &out.view.entries["big"];
    assert_eq!((big.meta.as_ref(), big.stat.size), (None, 6));
    // Not deferred either: nothing of it is left for a next scan.
    assert!(out.deferred.is_empty(), "{:?}", out.deferred);
    assert_eq!(out.trees.len(), 1);
}

#[test]
fn a_file_rewritten_within_its_timestamp_tick_is_read_again() {
    let fs = FakeFs::new();
    fs.write_file("f", b"first content");
    let store = MemChunkStore::new("/nonexistent");
    let c = chunker();
    let scan = |racy: &RacySet, racy_after_ns: i64, local: &BTreeMap<String, LocalEntry>| {
        Scanner {
            fs: &fs,
            store: &store,
            chunker: &c,
            ignore: &Ignore::none(),
            max_file_size: u64::MAX,
            racy,
            racy_after_ns,
        }
        .scan(Scope::Full, local)
        .expect("scan")
    };
    // Hashed within a tick of its mtime (every fake mtime is recent here):
    // reported racy.
    let out = scan(&RacySet::default(), 0, &BTreeMap::new());
    assert_eq!(out.racy, vec!["f".to_string()]);
    let e = &out.view.entries["f"];
    let first = e.meta.clone().expect("hashed");
    let local: BTreeMap<String, LocalEntry> = [(
        "f".to_string(),
        LocalEntry::committed(first.clone(), e.stat, VersionId::new(1, 0)),
    )]
    .into();
    // Rewritten within the same tick: same size, same stat.
    fs.rewrite_within_tick("f", b"other content");
    assert!(fs.lstat("f").unwrap().unwrap().unchanged(&e.stat));
    // Without the racy mark, the stat alone says "unchanged": the old
    // content is reused (the race this guards against).
    let stale = scan(&RacySet::default(), i64::MAX, &local);
    assert_eq!(stale.view.entries["f"].meta.as_ref(), Some(&first));
    assert_eq!(stale.files_hashed, 0);
    // Marked racy, it is read again and the new content is seen; read now
    // more than a tick after its mtime, it is settled.
    let mut racy = RacySet::default();
    racy.insert("f".into(), 0);
    let fresh = scan(&racy, i64::MAX, &local);
    assert_eq!(fresh.files_hashed, 1);
    let now = fresh.view.entries["f"].meta.clone().expect("hashed");
    assert_ne!(now, first);
    assert_eq!(now.size, 13);
    assert!(fresh.racy.is_empty());
    assert_eq!(fresh.settled, vec!["f".to_string()]);
}

#[test]
fn the_racy_set_is_bounded_and_expires() {
    let mut r = RacySet::default();
    for i in 0..RacySet::MAX + 10 {
        r.insert(format!("p{i}"), 1_000);
    }
    assert_eq!(r.len(), RacySet::MAX);
    assert!(
        !r.contains("p0") && !r.contains("p9"),
        "the oldest go first"
    );
    assert!(r.contains("p10") && r.contains(&format!("p{}", RacySet::MAX + 9)));
    // Renewing keeps a path past the expiry of its first insertion.
    r.insert("p10".into(), 1_000 + RacySet::KEEP_MS);
    r.expire(1_001 + RacySet::KEEP_MS);
    assert_eq!(r.len(), 1);
    assert!(r.contains("p10"));
    r.remove("p10");
    assert!(r.is_empty());
    // Renewals alone never grow the queue without bound.
    for t in 0..(3 * RacySet::MAX as u64) {
        r.insert("same".into(), t);
    }
    assert_eq!(r.len(), 1);
    assert!(r.order.len() <= 2 * RacySet::MAX);
}
