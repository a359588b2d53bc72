//! The one conformance suite both stores must pass: every case is a plain
//! function over a [`Fixture`], and `suite!` instantiates all of them for
//! each store kind.

use super::*;
use std::fs;
use std::path::PathBuf;

mod own_copies;
pub use own_copies::*;

/// A store under test, its synced root, and a way to rot one of its own
/// copies (blob or inline value).
pub struct Fixture {
    pub store: Box<dyn ChunkStore>,
    pub root: PathBuf,
    pub corrupt: Box<dyn Fn(&Hash) -> bool>,
    pub _dir: tempfile::TempDir,
}

pub fn redb_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let store = std::sync::Arc::new(RedbChunkStore::open(dir.path().join("store"), &root).unwrap());
    let s2 = store.clone();
    let blobs = dir.path().join("store");
    let corrupt = Box::new(move |h: &Hash| {
        if s2.corrupt_inline(h).unwrap() {
            return true;
        }
        let hex = h.to_hex();
        let p = blobs.join("blobs").join(&hex[..2]).join(&hex);
        match fs::read(&p) {
            // Bit rot does not heal: a blob already corrupt stays as it is
            // (flipping the byte again would restore it).
            Ok(b) if !b.is_empty() && Hash::of_chunk(&b) != *h => true,
            Ok(mut b) if !b.is_empty() => {
                b[0] ^= 0x55;
                fs::write(&p, b).unwrap();
                true
            }
            _ => false,
        }
    });
    Fixture {
        store: Box::new(ArcStore(store)),
        root,
        corrupt,
        _dir: dir,
    }
}

pub fn mem_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let store = std::sync::Arc::new(MemChunkStore::new(&root));
    let s2 = store.clone();
    Fixture {
        store: Box::new(ArcStore(store)),
        root,
        corrupt: Box::new(move |h| s2.corrupt_blob(h)),
        _dir: dir,
    }
}

/// Lets the fixture share the store with its `corrupt` hook.
struct ArcStore<S>(std::sync::Arc<S>);

impl<S: ChunkStore> ChunkStore for ArcStore<S> {
    fn put(&self, hash: Hash, data: &[u8]) -> Result<()> {
        self.0.put(hash, data)
    }
    fn put_many(&self, items: &[(Hash, &[u8])]) -> Result<()> {
        self.0.put_many(items)
    }
    fn get_many(&self, hashes: &[Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        self.0.get_many(hashes)
    }
    fn has(&self, hash: &Hash) -> Result<bool> {
        self.0.has(hash)
    }
    fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.0.get(hash)
    }
    fn locate(&self, hash: &Hash) -> Result<Option<Location>> {
        self.0.locate(hash)
    }
    fn file_stamp(&self, p: &str) -> Result<Option<FileStamp>> {
        self.0.file_stamp(p)
    }
    fn index_file(&self, p: &str, s: FileStamp, c: &[(u64, ChunkEntry)]) -> Result<()> {
        self.0.index_file(p, s, c)
    }
    fn forget_file(&self, p: &str) -> Result<()> {
        self.0.forget_file(p)
    }
    fn index_files(&self, files: &[FileIndex<'_>]) -> Result<()> {
        self.0.index_files(files)
    }
    fn index_placed(&self, files: &[FileIndex<'_>]) -> Result<()> {
        self.0.index_placed(files)
    }
    fn forget_files(&self, rel_paths: &[&str]) -> Result<()> {
        self.0.forget_files(rel_paths)
    }
    fn move_files(&self, moves: &[FileMove<'_>]) -> Result<Vec<bool>> {
        self.0.move_files(moves)
    }
    fn gc(&self, keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats> {
        self.0.gc(keep)
    }
}

/// Deterministic test bytes: `n` bytes derived from `seed`.
pub fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Writes `parts` concatenated to `root/rel` and returns its chunk table
/// (one chunk per part) and stamp.
pub fn write_live(root: &Path, rel: &str, parts: &[&[u8]]) -> (FileStamp, Vec<(u64, ChunkEntry)>) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, parts.concat()).unwrap();
    let mut off = 0u64;
    let table = parts
        .iter()
        .map(|part| {
            let e = (
                off,
                ChunkEntry {
                    hash: Hash::of_chunk(part),
                    len: part.len() as u32,
                },
            );
            off += part.len() as u64;
            e
        })
        .collect();
    (FileStamp::of_path(&p).unwrap(), table)
}

pub fn put_rejects_wrong_hash(f: &Fixture) {
    let s = &f.store;
    let data = bytes(3, 100);
    let wrong = Hash::of_chunk(b"something else");
    match s.put(wrong, &data) {
        Err(StoreError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Hash::of_chunk(&data));
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.has(&wrong).unwrap());
    let good = bytes(4, 10);
    let items: Vec<(Hash, &[u8])> = vec![(Hash::of_chunk(&good), &good), (wrong, &data)];
    assert!(matches!(
        s.put_many(&items),
        Err(StoreError::HashMismatch { .. })
    ));
    assert!(
        !s.has(&Hash::of_chunk(&good)).unwrap(),
        "batch is all-or-nothing on hashes"
    );
    s.put_many(&items[..1]).unwrap();
    assert_eq!(s.get(&Hash::of_chunk(&good)).unwrap(), Some(good));
}

pub fn live_file_roundtrip(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (bytes(5, 300), bytes(6, 200));
    let (stamp, table) = write_live(&f.root, "dir/sub/file.bin", &[&a, &b]);
    s.index_file("dir/sub/file.bin", stamp, &table).unwrap();
    for (off, ce) in &table {
        assert!(s.has(&ce.hash).unwrap());
        let want = if *off == 0 { &a } else { &b };
        assert_eq!(s.get(&ce.hash).unwrap().as_ref(), Some(want));
        assert_eq!(
            s.locate(&ce.hash).unwrap(),
            Some(Location::LiveFile {
                rel_path: "dir/sub/file.bin".into(),
                offset: *off,
                len: ce.len,
                stamp
            })
        );
    }
}

pub fn changed_live_file_reads_absent(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (bytes(7, 100), bytes(8, 100));
    let (stamp, table) = write_live(&f.root, "f", &[&a, &b]);
    s.index_file("f", stamp, &table).unwrap();
    let (ha, hb) = (table[0].1.hash, table[1].1.hash);
    // Same size, same mtime, same inode, different bytes: the stamp cannot
    // see it, the hash must.
    let p = f.root.join("f");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    let mut changed = a.clone();
    changed[10] ^= 1;
    fs::write(&p, [changed.as_slice(), &b].concat()).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(FileStamp::of_path(&p).unwrap(), stamp);
    assert!(s.has(&ha).unwrap(), "has is stat-only");
    assert_eq!(
        s.get(&ha).unwrap(),
        None,
        "wrong bytes must never come back"
    );
    // The whole file record was dropped: even the unchanged chunk reads absent.
    assert!(!s.has(&ha).unwrap());
    assert!(!s.has(&hb).unwrap());
    assert_eq!(s.get(&hb).unwrap(), None);
    // A visible change (size/mtime) is caught by the stamp.
    let (stamp2, table2) = write_live(&f.root, "g", &[&a]);
    s.index_file("g", stamp2, &table2).unwrap();
    assert!(s.has(&ha).unwrap());
    fs::write(f.root.join("g"), [a.as_slice(), b"tail"].concat()).unwrap();
    assert!(!s.has(&ha).unwrap());
    assert_eq!(s.locate(&ha).unwrap(), None);
    assert_eq!(s.get(&ha).unwrap(), None);
    // Deleted file.
    let (stamp3, table3) = write_live(&f.root, "h", &[&b]);
    s.index_file("h", stamp3, &table3).unwrap();
    fs::remove_file(f.root.join("h")).unwrap();
    assert!(!s.has(&hb).unwrap());
    assert_eq!(s.get(&hb).unwrap(), None);
}

pub fn reindex_replaces_and_forget(f: &Fixture) {
    let s = &f.store;
    let (a, b, c) = (bytes(9, 50), bytes(10, 60), bytes(11, 70));
    let (ha, hb, hc) = (Hash::of_chunk(&a), Hash::of_chunk(&b), Hash::of_chunk(&c));
    let (st, t) = write_live(&f.root, "x", &[&a, &b]);
    s.index_file("x", st, &t).unwrap();
    // Rewrite with other content, then re-index: old chunks are gone.
    let (st, t) = write_live(&f.root, "x", &[&c, &a]);
    s.index_file("x", st, &t).unwrap();
    assert!(!s.has(&hb).unwrap());
    assert_eq!(s.get(&hb).unwrap(), None);
    assert_eq!(s.get(&hc).unwrap(), Some(c.clone()));
    assert_eq!(s.get(&ha).unwrap(), Some(a.clone()));
    s.forget_file("x").unwrap();
    assert!(!s.has(&ha).unwrap());
    assert_eq!(s.get(&hc).unwrap(), None);
    s.forget_file("never/indexed").unwrap();
}

pub fn shared_chunk_survives_forgetting_one_file(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (bytes(12, 80), bytes(13, 90));
    let ha = Hash::of_chunk(&a);
    let (s1, t1) = write_live(&f.root, "one", &[&a, &b]);
    let (s2, t2) = write_live(&f.root, "two", &[&b, &a, &a]);
    s.index_file("one", s1, &t1).unwrap();
    s.index_file("two", s2, &t2).unwrap();
    s.forget_file("two").unwrap();
    assert_eq!(s.get(&ha).unwrap(), Some(a.clone()));
    s.index_file("two", s2, &t2).unwrap();
    fs::remove_file(f.root.join("one")).unwrap();
    assert_eq!(
        s.get(&ha).unwrap(),
        Some(a.clone()),
        "falls back to the other file"
    );
    fs::remove_file(f.root.join("two")).unwrap();
    assert_eq!(s.get(&ha).unwrap(), None);
}

pub fn invalid_paths_and_tables_are_typed_errors(f: &Fixture) {
    let s = &f.store;
    let stamp = FileStamp {
        inode: 1,
        size: 100,
        mtime_ns: 0,
    };
    let ce = ChunkEntry {
        hash: Hash::of_chunk(b"x"),
        len: 10,
    };
    for p in [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a\0b",
        "a//b",
        "./a",
        "a/",
    ] {
        assert!(
            matches!(
                s.index_file(p, stamp, &[(0, ce)]),
                Err(StoreError::InvalidPath { .. })
            ),
            "{p:?}"
        );
        assert!(
            matches!(s.forget_file(p), Err(StoreError::InvalidPath { .. })),
            "{p:?}"
        );
    }
    for off in [91, u64::MAX - 3] {
        assert!(matches!(
            s.index_file("ok", stamp, &[(off, ce)]),
            Err(StoreError::InvalidChunkTable { .. })
        ));
    }
    assert!(!s.has(&ce.hash).unwrap());
}

/// Whether every chunk of `table` locates in `rel` at its offset and reads
/// back as `data[offset..offset + len]`.
fn assert_live(
    s: &dyn ChunkStore,
    rel: &str,
    stamp: FileStamp,
    table: &[(u64, ChunkEntry)],
    data: &[u8],
) {
    for (off, ce) in table {
        let at = *off as usize;
        assert_eq!(
            s.get(&ce.hash).unwrap().as_deref(),
            Some(&data[at..at + ce.len as usize]),
            "{rel} @{off}"
        );
        assert_eq!(
            s.locate(&ce.hash).unwrap(),
            Some(Location::LiveFile {
                rel_path: rel.into(),
                offset: *off,
                len: ce.len,
                stamp
            }),
            "{rel} @{off}"
        );
    }
}

pub fn index_files_batch_roundtrip(f: &Fixture) {
    let s = &*f.store;
    let parts: Vec<Vec<u8>> = (0..6)
        .map(|i| bytes(40 + i, 100 + 10 * i as usize))
        .collect();
    let files = [
        ("top", vec![&parts[0][..], &parts[1][..]]),
        ("a/b/deep.bin", vec![&parts[2][..]]),
        ("a/other", vec![&parts[3][..], &parts[4][..], &parts[5][..]]),
    ];
    let written: Vec<_> = files
        .iter()
        .map(|(rel, p)| (*rel, write_live(&f.root, rel, p), p.concat()))
        .collect();
    let batch: Vec<FileIndex<'_>> = written
        .iter()
        .map(|(rel, (stamp, table), _)| FileIndex {
            rel_path: rel,
            stamp: *stamp,
            chunks: table,
        })
        .collect();
    s.index_files(&batch).unwrap();
    for (rel, (stamp, table), data) in &written {
        assert_live(s, rel, *stamp, table, data);
    }
    // An empty batch is a no-op.
    s.index_files(&[]).unwrap();
    s.forget_files(&[]).unwrap();
    assert_live(s, "top", written[0].1 .0, &written[0].1 .1, &written[0].2);
}

pub fn index_files_with_one_invalid_entry_records_nothing(f: &Fixture) {
    let s = &*f.store;
    let (a, b, c) = (bytes(50, 120), bytes(51, 130), bytes(52, 140));
    let (hb, hc) = (Hash::of_chunk(&b), Hash::of_chunk(&c));
    // "kept" is indexed with `a` before; the bad batch would re-index it.
    let (st_kept, t_kept) = write_live(&f.root, "kept", &[&a]);
    s.index_file("kept", st_kept, &t_kept).unwrap();
    let (st_new, t_new) = write_live(&f.root, "new", &[&b]);
    let (st_kept2, t_kept2) = write_live(&f.root, "kept2", &[&c]);
    let good = |rel: &'static str, stamp, chunks| FileIndex {
        rel_path: rel,
        stamp,
        chunks,
    };
    // A record for "kept" with a table of `c` (would replace the `a` one).
    let replace = FileIndex {
        rel_path: "kept",
        stamp: st_kept2,
        chunks: &t_kept2,
    };
    let bad_path = FileIndex {
        rel_path: "../escape",
        stamp: st_new,
        chunks: &t_new,
    };
    let past_end = [(st_new.size, ChunkEntry { hash: hb, len: 1 })];
    let bad_table = FileIndex {
        rel_path: "new",
        stamp: st_new,
        chunks: &past_end,
    };
    assert!(matches!(
        s.index_files(&[good("new", st_new, &t_new), replace, bad_path]),
        Err(StoreError::InvalidPath { .. })
    ));
    assert!(matches!(
        s.index_files(&[bad_table, good("new", st_new, &t_new), replace]),
        Err(StoreError::InvalidChunkTable { .. })
    ));
    assert!(!s.has(&hb).unwrap(), "nothing of the batch is recorded");
    assert!(!s.has(&hc).unwrap());
    assert_live(s, "kept", st_kept, &t_kept, &a);
    // forget_files is all or nothing on paths too.
    assert!(matches!(
        s.forget_files(&["kept", "/abs"]),
        Err(StoreError::InvalidPath { .. })
    ));
    assert_live(s, "kept", st_kept, &t_kept, &a);
    // The good part alone goes through.
    s.index_files(&[
        good("new", st_new, &t_new),
        good("kept2", st_kept2, &t_kept2),
    ])
    .unwrap();
    assert_live(s, "new", st_new, &t_new, &b);
    assert_live(s, "kept2", st_kept2, &t_kept2, &c);
}

pub fn forget_files_batch(f: &Fixture) {
    let s = &*f.store;
    let parts: Vec<Vec<u8>> = (0..3).map(|i| bytes(60 + i, 90)).collect();
    let names = ["f0", "d/f1", "d/f2"];
    let written: Vec<_> = names
        .iter()
        .zip(&parts)
        .map(|(rel, p)| write_live(&f.root, rel, &[p]))
        .collect();
    let batch: Vec<FileIndex<'_>> = names
        .iter()
        .zip(&written)
        .map(|(rel, (stamp, table))| FileIndex {
            rel_path: rel,
            stamp: *stamp,
            chunks: table,
        })
        .collect();
    s.index_files(&batch).unwrap();
    s.forget_files(&["f0", "never/indexed", "d/f2"]).unwrap();
    assert!(!s.has(&Hash::of_chunk(&parts[0])).unwrap());
    assert_eq!(s.get(&Hash::of_chunk(&parts[0])).unwrap(), None);
    assert!(!s.has(&Hash::of_chunk(&parts[2])).unwrap());
    assert_eq!(s.locate(&Hash::of_chunk(&parts[2])).unwrap(), None);
    assert_live(s, "d/f1", written[1].0, &written[1].1, &parts[1]);
    // Forgetting the same path twice in one batch is fine.
    s.forget_files(&["d/f1", "d/f1"]).unwrap();
    assert!(!s.has(&Hash::of_chunk(&parts[1])).unwrap());
}

pub fn index_files_same_path_twice_last_wins(f: &Fixture) {
    let s = &*f.store;
    let (a, b, c) = (bytes(70, 100), bytes(71, 110), bytes(72, 120));
    let (stamp, table) = write_live(&f.root, "x", &[&c, &a]);
    // An earlier table for the same path (another content, same stamp).
    let stale = [(
        0,
        ChunkEntry {
            hash: Hash::of_chunk(&b),
            len: b.len() as u32,
        },
    )];
    let first = FileIndex {
        rel_path: "x",
        stamp,
        chunks: &stale,
    };
    let last = FileIndex {
        rel_path: "x",
        stamp,
        chunks: &table,
    };
    s.index_files(&[first, last]).unwrap();
    assert!(!s.has(&Hash::of_chunk(&b)).unwrap(), "the first entry lost");
    assert_eq!(s.locate(&Hash::of_chunk(&b)).unwrap(), None);
    assert_live(s, "x", stamp, &table, &[c.as_slice(), &a].concat());
    // And the other way round: the stale table last wins (and reads absent,
    // never as wrong bytes).
    s.index_files(&[last, first]).unwrap();
    assert!(!s.has(&Hash::of_chunk(&c)).unwrap());
    assert!(!s.has(&Hash::of_chunk(&a)).unwrap());
    assert_eq!(s.get(&Hash::of_chunk(&b)).unwrap(), None);
}

pub fn gc_prunes_dangling_entries(f: &Fixture) {
    let s = &f.store;
    let parts: Vec<Vec<u8>> = (0..5).map(|i| bytes(20 + i, 40)).collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let (st, t) = write_live(&f.root, "d", &refs);
    s.index_file("d", st, &t).unwrap();
    s.forget_file("d").unwrap();
    let stats = s.gc(&|_| true).unwrap();
    assert_eq!(stats.entries_removed, 5, "{stats:?}");
    assert_eq!(stats.stale_locations_pruned, 5, "{stats:?}");
    // stale stamp: the record is dropped too
    let (st, t) = write_live(&f.root, "e", &refs[..2]);
    s.index_file("e", st, &t).unwrap();
    fs::write(f.root.join("e"), b"other").unwrap();
    let stats = s.gc(&|_| true).unwrap();
    assert_eq!(
        (stats.entries_removed, stats.files_dropped),
        (2, 1),
        "{stats:?}"
    );
}

pub fn concurrent_use(f: &Fixture) {
    let s = &f.store;
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            scope.spawn(move || {
                for i in 0..8u8 {
                    // Small and large, own and shared by every thread.
                    let n = 64 + i as usize + if i % 2 == 0 { 0 } else { INLINE_MAX };
                    let seed = if i < 4 {
                        200 + i
                    } else {
                        t.wrapping_mul(16).wrapping_add(i)
                    };
                    let d = bytes(seed, n);
                    let h = Hash::of_chunk(&d);
                    s.put(h, &d).unwrap();
                    assert_eq!(s.get(&h).unwrap(), Some(d));
                    assert_eq!(s.locate(&h).unwrap(), Some(own_location(n)));
                }
            });
        }
    });
}

pub fn file_stamp_and_get_to_serve(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (bytes(21, 300), bytes(22, 200));
    let (stamp, table) = write_live(&f.root, "s/f", &[&a, &b]);
    s.index_file("s/f", stamp, &table).unwrap();
    assert_eq!(s.file_stamp("s/f").unwrap(), Some(stamp));
    assert_eq!(s.file_stamp("s/other").unwrap(), None);
    assert!(s.file_stamp("../x").is_err(), "paths are checked");
    // Read twice: the second read may come through a kept handle.
    for _ in 0..2 {
        assert_eq!(s.get_to_serve(&table[1].1.hash).unwrap(), Some(b.clone()));
    }
    // A visible change: neither a kept handle nor the path serves it.
    fs::write(f.root.join("s/f"), [a.as_slice(), b"other bytes"].concat()).unwrap();
    assert_eq!(s.get_to_serve(&table[0].1.hash).unwrap(), None);
    s.forget_file("s/f").unwrap();
    assert_eq!(s.file_stamp("s/f").unwrap(), None);
}

pub fn move_files_keeps_locations_per_file(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (bytes(31, 300), bytes(32, 200));
    let (stamp, table) = write_live(&f.root, "stage/v", &[&a, &b]);
    s.index_file("stage/v", stamp, &table).unwrap();
    let (old_stamp, old_table) = write_live(&f.root, "d/target", &[&bytes(33, 100)]);
    s.index_file("d/target", old_stamp, &old_table).unwrap();
    // A re-stamp in place (chmod/utime), then a rename over an indexed path.
    fs::OpenOptions::new()
        .write(true)
        .open(f.root.join("stage/v"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let restamped = FileStamp::from_metadata(&fs::metadata(f.root.join("stage/v")).unwrap());
    let moves = [FileMove {
        from: "stage/v",
        to: "stage/v",
        stamp: restamped,
    }];
    assert_ne!(restamped, stamp, "the mtime moved");
    assert_eq!(s.move_files(&moves).unwrap(), vec![true]);
    assert_eq!(s.file_stamp("stage/v").unwrap(), Some(restamped));
    fs::rename(f.root.join("stage/v"), f.root.join("d/target")).unwrap();
    let moves = [
        FileMove {
            from: "stage/v",
            to: "d/target",
            stamp: restamped,
        },
        FileMove {
            from: "never/indexed",
            to: "d/x",
            stamp: restamped,
        },
    ];
    assert_eq!(s.move_files(&moves).unwrap(), vec![true, false]);
    assert_eq!(s.file_stamp("stage/v").unwrap(), None);
    assert_eq!(s.file_stamp("d/target").unwrap(), Some(restamped));
    assert_eq!(s.file_stamp("d/x").unwrap(), None);
    for (off, ce) in &table {
        assert_eq!(
            s.locate(&ce.hash).unwrap(),
            Some(Location::LiveFile {
                rel_path: "d/target".into(),
                offset: *off,
                len: ce.len,
                stamp: restamped
            })
        );
        let want = if *off == 0 { &a } else { &b };
        assert_eq!(s.get(&ce.hash).unwrap().as_ref(), Some(want));
    }
    // The replaced record of the target is gone: its chunk is nowhere.
    assert_eq!(s.get(&old_table[0].1.hash).unwrap(), None);
    // Paths are checked before anything is written.
    let bad = [
        FileMove {
            from: "d/target",
            to: "d/y",
            stamp: restamped,
        },
        FileMove {
            from: "d/target",
            to: "../out",
            stamp: restamped,
        },
    ];
    assert!(s.move_files(&bad).is_err());
    assert_eq!(s.file_stamp("d/target").unwrap(), Some(restamped));
}

macro_rules! suite {
    ($kind:ident, $fixture:path) => {
        mod $kind {
            use super::*;
            suite!(@cases $fixture; put_get_dedup, put_rejects_wrong_hash, live_file_roundtrip,
                changed_live_file_reads_absent, reindex_replaces_and_forget,
                shared_chunk_survives_forgetting_one_file,
                invalid_paths_and_tables_are_typed_errors, corrupt_blob_is_never_returned,
                corrupt_inline_value_is_never_returned, own_copy_backs_a_stale_live_file,
                mixed_put_many_roundtrip,
                gc_removes_unkept_and_redundant_blobs,
                gc_removes_unkept_and_redundant_inline_values,
                gc_keeps_blob_when_live_copy_is_bad, gc_keeps_inline_value_when_live_copy_is_bad,
                gc_of_both_kinds_in_one_pass,
                gc_prunes_dangling_entries, concurrent_use, index_files_batch_roundtrip,
                index_files_with_one_invalid_entry_records_nothing, forget_files_batch,
                index_files_same_path_twice_last_wins,
                index_placed_drops_inline_copies_of_held_chunks, file_stamp_and_get_to_serve,
                move_files_keeps_locations_per_file);
        }
    };
    (@cases $fixture:path; $($case:ident),*) => {
        $(#[test] fn $case() { super::$case(&$fixture()); })*
    };
}

suite!(redb, redb_fixture);
suite!(mem, mem_fixture);
