//! Property test: random sequences of put (one chunk or a mixed
//! batch)/get/has/index/forget (one file or a batch)/touch/corrupt/gc on
//! both stores, checked after every step against a model built on plain
//! maps (`has` and the kind of `locate` of every chunk of the pool).

use super::conformance::{bytes, mem_fixture, redb_fixture, write_live, Fixture};
use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const POOL: usize = 8;
const PATHS: usize = 3;

fn pool(i: usize) -> Vec<u8> {
    // sizes 0, 17, 34, ..., 85 (includes the empty chunk; stored inline),
    // then both sides of the inline threshold.
    let n = match i {
        6 => INLINE_MAX,
        7 => INLINE_MAX + 1,
        _ => 17 * i,
    };
    bytes(100 + i as u8, n)
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize),
    /// `put_many` of several chunks (may repeat one).
    PutMany(Vec<usize>),
    Get(usize),
    Index(usize, Vec<usize>),
    Forget(usize),
    /// Append a byte to the live file without re-indexing it.
    Touch(usize),
    Corrupt(usize),
    Gc(u8),
    /// `index_files` of several (path, content) files (a path may repeat:
    /// the last one wins). Poisoned: the batch ends with an invalid entry,
    /// its other entries name existing paths with made-up stamps and the
    /// files are not written, so the whole batch must be refused.
    IndexFiles(Vec<(usize, Vec<usize>)>, bool),
    ForgetFiles(Vec<usize>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..POOL).prop_map(Op::Put),
        1 => proptest::collection::vec(0..POOL, 1..5).prop_map(Op::PutMany),
        3 => (0..POOL).prop_map(Op::Get),
        2 => (0..PATHS, proptest::collection::vec(0..POOL, 1..5)).prop_map(|(p, c)| Op::Index(p, c)),
        1 => (0..PATHS).prop_map(Op::Forget),
        1 => (0..PATHS).prop_map(Op::Touch),
        1 => (0..POOL).prop_map(Op::Corrupt),
        1 => any::<u8>().prop_map(Op::Gc),
        2 => (
            proptest::collection::vec(
                (0..PATHS, proptest::collection::vec(0..POOL, 1..4)),
                1..4
            ),
            proptest::bool::weighted(0.25)
        ).prop_map(|(files, poison)| Op::IndexFiles(files, poison)),
        1 => proptest::collection::vec(0..PATHS, 0..3).prop_map(Op::ForgetFiles),
    ]
}

#[derive(Default)]
struct Model {
    /// pool index → blob is corrupt
    blobs: HashMap<usize, bool>,
    /// path index → (content, still the indexed version)
    files: HashMap<usize, (Vec<usize>, bool)>,
}

impl Model {
    fn live(&self, i: usize) -> bool {
        self.files
            .values()
            .any(|(c, valid)| *valid && c.contains(&i))
    }
    fn has(&self, i: usize) -> bool {
        self.live(i) || self.blobs.contains_key(&i)
    }
    /// The kind of location `locate` reports: a live file first, else the
    /// own copy (unverified: even a corrupt one, like `has`).
    fn locate_kind(&self, i: usize) -> Option<&'static str> {
        if self.live(i) {
            Some("live")
        } else if self.blobs.contains_key(&i) {
            Some(if pool(i).len() <= INLINE_MAX {
                "inline"
            } else {
                "blob"
            })
        } else {
            None
        }
    }
}

fn kind(l: &Location) -> &'static str {
    match l {
        Location::LiveFile { .. } => "live",
        Location::Blob { .. } => "blob",
        Location::Inline { .. } => "inline",
    }
}

fn path(p: usize) -> String {
    format!("d{p}/file{p}")
}

fn run(f: &Fixture, ops: &[Op]) -> std::result::Result<(), TestCaseError> {
    let s = &f.store;
    let hash = |i: usize| Hash::of_chunk(&pool(i));
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Put(i) => {
                s.put(hash(*i), &pool(*i)).unwrap();
                m.blobs.insert(*i, false);
            }
            Op::PutMany(is) => {
                let parts: Vec<Vec<u8>> = is.iter().map(|i| pool(*i)).collect();
                let items: Vec<(Hash, &[u8])> = is
                    .iter()
                    .zip(&parts)
                    .map(|(i, p)| (hash(*i), p.as_slice()))
                    .collect();
                s.put_many(&items).unwrap();
                for i in is {
                    m.blobs.insert(*i, false);
                }
            }
            Op::Get(i) => {
                let want = if m.live(*i) {
                    Some(pool(*i))
                } else {
                    match m.blobs.get(i) {
                        Some(false) => Some(pool(*i)),
                        Some(true) => {
                            m.blobs.remove(i);
                            None
                        }
                        None => None,
                    }
                };
                prop_assert_eq!(s.get(&hash(*i)).unwrap(), want, "get {}", i);
            }
            Op::Index(p, content) => {
                let parts: Vec<Vec<u8>> = content.iter().map(|i| pool(*i)).collect();
                let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                let (stamp, table) = write_live(&f.root, &path(*p), &refs);
                s.index_file(&path(*p), stamp, &table).unwrap();
                m.files.insert(*p, (content.clone(), true));
            }
            Op::IndexFiles(files, false) => {
                let mut tables = Vec::new();
                for (p, content) in files {
                    let parts: Vec<Vec<u8>> = content.iter().map(|i| pool(*i)).collect();
                    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                    tables.push((path(*p), write_live(&f.root, &path(*p), &refs)));
                    m.files.insert(*p, (content.clone(), true));
                }
                let batch: Vec<FileIndex<'_>> = tables
                    .iter()
                    .map(|(rel, (stamp, table))| FileIndex {
                        rel_path: rel,
                        stamp: *stamp,
                        chunks: table,
                    })
                    .collect();
                s.index_files(&batch).unwrap();
            }
            Op::IndexFiles(files, true) => {
                let mut tables = Vec::new();
                for (p, content) in files {
                    let mut table = Vec::new();
                    let mut off = 0;
                    for i in content {
                        let len = pool(*i).len() as u32;
                        table.push((
                            off,
                            ChunkEntry {
                                hash: hash(*i),
                                len,
                            },
                        ));
                        off += u64::from(len);
                    }
                    let stamp = FileStamp {
                        inode: 0,
                        size: off,
                        mtime_ns: 0,
                    };
                    tables.push((path(*p), stamp, table));
                }
                let mut batch: Vec<FileIndex<'_>> = tables
                    .iter()
                    .map(|(rel, stamp, table)| FileIndex {
                        rel_path: rel,
                        stamp: *stamp,
                        chunks: table,
                    })
                    .collect();
                batch.push(FileIndex {
                    rel_path: "../out",
                    stamp: FileStamp {
                        inode: 0,
                        size: 0,
                        mtime_ns: 0,
                    },
                    chunks: &[],
                });
                let refused = matches!(s.index_files(&batch), Err(StoreError::InvalidPath { .. }));
                prop_assert!(refused, "a poisoned batch is refused whole");
            }
            Op::ForgetFiles(ps) => {
                let names: Vec<String> = ps.iter().map(|p| path(*p)).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                s.forget_files(&refs).unwrap();
                for p in ps {
                    m.files.remove(p);
                }
            }
            Op::Forget(p) => {
                s.forget_file(&path(*p)).unwrap();
                m.files.remove(p);
            }
            Op::Touch(p) => {
                let full = f.root.join(path(*p));
                if full.exists() {
                    let mut file = std::fs::OpenOptions::new().append(true).open(full).unwrap();
                    std::io::Write::write_all(&mut file, b"!").unwrap();
                }
                if let Some(e) = m.files.get_mut(p) {
                    e.1 = false;
                }
            }
            Op::Corrupt(i) => {
                let expect = m.blobs.contains_key(i) && !pool(*i).is_empty();
                prop_assert_eq!((f.corrupt)(&hash(*i)), expect);
                if expect {
                    m.blobs.insert(*i, true);
                }
            }
            Op::Gc(mask) => {
                let keep = |h: &Hash| (0..POOL).any(|i| mask & (1 << i) != 0 && hash(i) == *h);
                let stats = s.gc(&keep).unwrap();
                let before = m.blobs.len();
                let kept: HashMap<usize, bool> = m
                    .blobs
                    .iter()
                    .filter(|(i, _)| mask & (1 << **i) != 0 && !m.live(**i))
                    .map(|(i, c)| (*i, *c))
                    .collect();
                m.blobs = kept;
                prop_assert_eq!(stats.blobs_removed as usize, before - m.blobs.len());
            }
        }
        for i in 0..POOL {
            prop_assert_eq!(
                s.has(&hash(i)).unwrap(),
                m.has(i),
                "has {} after {:?}",
                i,
                op
            );
            prop_assert_eq!(
                s.locate(&hash(i)).unwrap().as_ref().map(kind),
                m.locate_kind(i),
                "locate {} after {:?}",
                i,
                op
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn mem_store_matches_model(ops in proptest::collection::vec(arb_op(), 1..40)) {
        run(&mem_fixture(), &ops)?;
    }
}

proptest! {
    // Every put/index is fsynced: fewer cases, same ops.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn redb_store_matches_model(ops in proptest::collection::vec(arb_op(), 1..40)) {
        run(&redb_fixture(), &ops)?;
    }
}
