//! Tests of `scan.rs` on a real temp directory and on the fake file system.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;

use filesyncd_chunkstore::chunker::{Chunker, ChunkerParams};
use filesyncd_chunkstore::store::{ChunkStore, MemChunkStore};
use filesyncd_merkle::{build, ChunkEntry};

use super::fs::Fs;
use super::fs_fake::FakeFs;
use super::fs_real::RootFs;
use super::ignore::Ignore;
use super::plan::{Marker, Scope};
use super::scan::{load_ignore, ScanOutput, Scanner};
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
