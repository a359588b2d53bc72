//! Conformance cases about the store's own copies: blobs and inline
//! values, put, dedup, corruption and gc (part of the suite of
//! `conformance.rs`, instantiated for both stores by its `suite!`).

use super::{bytes, write_live, Fixture};
use crate::store::*;
use std::fs;

/// A small chunk (stored inline) and a large one (a blob file).
pub const SMALL: usize = 1000;
pub const LARGE: usize = INLINE_MAX + 1000;

/// Where the store's own copy of a chunk of `len` bytes is: inline up to
/// [`INLINE_MAX`], a blob above (both stores, default options).
pub fn own_location(len: usize) -> Location {
    if len <= INLINE_MAX {
        Location::Inline { len: len as u32 }
    } else {
        Location::Blob { len: len as u64 }
    }
}

pub fn put_get_dedup(f: &Fixture) {
    let s = &f.store;
    for (seed, n) in [(1, SMALL), (2, LARGE)] {
        let data = bytes(seed, n);
        let h = Hash::of_chunk(&data);
        assert!(!s.has(&h).unwrap());
        assert_eq!(s.get(&h).unwrap(), None);
        assert_eq!(s.locate(&h).unwrap(), None);
        s.put(h, &data).unwrap();
        s.put(h, &data).unwrap(); // dedup: no-op
        assert!(s.has(&h).unwrap());
        assert_eq!(s.get(&h).unwrap(), Some(data.clone()));
        assert_eq!(s.locate(&h).unwrap(), Some(own_location(n)));
    }
    assert_eq!(
        s.locate(&Hash::of_chunk(&bytes(1, SMALL))).unwrap(),
        Some(Location::Inline { len: SMALL as u32 })
    );
    assert_eq!(
        s.locate(&Hash::of_chunk(&bytes(2, LARGE))).unwrap(),
        Some(Location::Blob { len: LARGE as u64 })
    );
    let data = bytes(1, SMALL);
    let h = Hash::of_chunk(&data);
    let empty = Hash::of_chunk(b"");
    s.put(empty, b"").unwrap();
    assert_eq!(s.get(&empty).unwrap(), Some(Vec::new()));
    assert_eq!(s.locate(&empty).unwrap(), Some(Location::Inline { len: 0 }));
    let other = bytes(2, 10);
    let h2 = Hash::of_chunk(&other);
    assert_eq!(
        s.get_many(&[h2, h, empty]).unwrap(),
        vec![None, Some(data), Some(vec![])]
    );
}

pub fn mixed_put_many_roundtrip(f: &Fixture) {
    let s = &f.store;
    let sizes = [
        0,
        1,
        2048,
        INLINE_MAX - 1,
        INLINE_MAX,
        INLINE_MAX + 1,
        3 * INLINE_MAX / 2,
    ];
    let chunks: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| bytes(80 + i as u8, *n))
        .collect();
    let mut items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    // A chunk twice in one batch, of each kind.
    items.push(items[2]);
    items.push(items[5]);
    s.put_many(&items).unwrap();
    for (c, n) in chunks.iter().zip(sizes) {
        let h = Hash::of_chunk(c);
        assert_eq!(s.get(&h).unwrap().as_ref(), Some(c), "{n} bytes");
        assert_eq!(s.locate(&h).unwrap(), Some(own_location(n)), "{n} bytes");
    }
    assert!(matches!(
        s.locate(&items[4].0).unwrap(),
        Some(Location::Inline { .. })
    ));
    assert!(matches!(
        s.locate(&items[5].0).unwrap(),
        Some(Location::Blob { .. })
    ));
    // Again: a no-op that changes nothing.
    s.put_many(&items).unwrap();
    let hashes: Vec<Hash> = items.iter().map(|(h, _)| *h).collect();
    let got = s.get_many(&hashes).unwrap();
    for ((_, want), got) in items.iter().zip(got) {
        assert_eq!(got.as_deref(), Some(*want));
    }
    // A bad hash anywhere refuses the mixed batch whole.
    let (x, y) = (bytes(90, 10), bytes(91, INLINE_MAX + 10));
    let bad = [
        (Hash::of_chunk(&x), x.as_slice()),
        (Hash::of_chunk(&y), y.as_slice()),
        (Hash::of_chunk(b"not this"), x.as_slice()),
    ];
    assert!(matches!(
        s.put_many(&bad),
        Err(StoreError::HashMismatch { .. })
    ));
    assert!(!s.has(&bad[0].0).unwrap());
    assert!(!s.has(&bad[1].0).unwrap());
}

pub fn corrupt_blob_is_never_returned(f: &Fixture) {
    corrupt_own_copy_is_never_returned(f, INLINE_MAX + 500);
}

pub fn corrupt_inline_value_is_never_returned(f: &Fixture) {
    corrupt_own_copy_is_never_returned(f, 500);
}

fn corrupt_own_copy_is_never_returned(f: &Fixture, n: usize) {
    let s = &f.store;
    let data = bytes(14, n);
    let h = Hash::of_chunk(&data);
    s.put(h, &data).unwrap();
    assert_eq!(s.locate(&h).unwrap(), Some(own_location(n)));
    assert!((f.corrupt)(&h));
    assert!(s.has(&h).unwrap(), "has does not read");
    assert_eq!(s.get(&h).unwrap(), None);
    assert!(!s.has(&h).unwrap(), "the corrupt entry is dropped");
    assert_eq!(s.locate(&h).unwrap(), None);
    assert!(!(f.corrupt)(&h), "the corrupt copy itself is gone");
    s.put(h, &data).unwrap();
    assert_eq!(s.get(&h).unwrap(), Some(data.clone()));
    // put over a corrupt (still indexed) copy repairs it rather than dedup.
    assert!((f.corrupt)(&h));
    s.put(h, &data).unwrap();
    assert_eq!(s.get(&h).unwrap(), Some(data.clone()));
    // The same through put_many, with another chunk in the batch.
    assert!((f.corrupt)(&h));
    let other = bytes(15, n + 1);
    s.put_many(&[(Hash::of_chunk(&other), &other), (h, &data)])
        .unwrap();
    assert_eq!(s.get(&h).unwrap(), Some(data.clone()));
    assert_eq!(s.get(&Hash::of_chunk(&other)).unwrap(), Some(other));
    // A corrupt own copy behind a stale live file: the live file is tried
    // first, then the own copy, and neither is returned.
    let (st, t) = write_live(&f.root, "rot", &[&data]);
    s.index_file("rot", st, &t).unwrap();
    assert!((f.corrupt)(&h));
    fs::remove_file(f.root.join("rot")).unwrap();
    assert!(s.has(&h).unwrap());
    assert_eq!(s.get(&h).unwrap(), None);
    assert!(!s.has(&h).unwrap());
}

pub fn own_copy_backs_a_stale_live_file(f: &Fixture) {
    let s = &f.store;
    for (seed, n) in [(16, SMALL), (17, LARGE)] {
        let data = bytes(seed, n);
        let h = Hash::of_chunk(&data);
        s.put(h, &data).unwrap();
        let rel = format!("backed{n}");
        let (st, t) = write_live(&f.root, &rel, &[&data]);
        s.index_file(&rel, st, &t).unwrap();
        assert!(matches!(
            s.locate(&h).unwrap(),
            Some(Location::LiveFile { .. })
        ));
        fs::write(f.root.join(&rel), b"edited").unwrap();
        assert_eq!(s.locate(&h).unwrap(), Some(own_location(n)));
        assert_eq!(s.get(&h).unwrap(), Some(data), "the next location");
        assert_eq!(s.locate(&h).unwrap(), Some(own_location(n)));
    }
}

pub fn gc_removes_unkept_and_redundant_blobs(f: &Fixture) {
    gc_removes_unkept_and_redundant(f, INLINE_MAX + 100);
}

pub fn gc_removes_unkept_and_redundant_inline_values(f: &Fixture) {
    gc_removes_unkept_and_redundant(f, 100);
}

/// gc over own copies of `n`, `n + 10` and `n + 20` bytes.
fn gc_removes_unkept_and_redundant(f: &Fixture, n: usize) {
    let s = &f.store;
    let inline = u64::from(n <= INLINE_MAX);
    let (x, y, z) = (bytes(15, n), bytes(16, n + 10), bytes(17, n + 20));
    let (hx, hy, hz) = (Hash::of_chunk(&x), Hash::of_chunk(&y), Hash::of_chunk(&z));
    for (h, d) in [(hx, &x), (hy, &y), (hz, &z)] {
        s.put(h, d).unwrap();
    }
    let (st, t) = write_live(&f.root, "live", &[&z]);
    s.index_file("live", st, &t).unwrap();
    let keep = move |h: &Hash| *h != hy;
    let stats = s.gc(&keep).unwrap();
    assert_eq!(stats.blobs_removed, 2, "{stats:?}");
    assert_eq!(stats.inline_removed, 2 * inline, "{stats:?}");
    assert_eq!(stats.redundant_blobs_removed, 1, "{stats:?}");
    assert_eq!(stats.blob_bytes_freed, 2 * n as u64 + 30, "{stats:?}");
    assert_eq!(stats.entries_removed, 1, "{stats:?}");
    assert_eq!(s.get(&hx).unwrap(), Some(x));
    assert_eq!(s.locate(&hx).unwrap(), Some(own_location(n)));
    assert_eq!(s.get(&hy).unwrap(), None);
    assert!(!s.has(&hy).unwrap());
    assert_eq!(s.get(&hz).unwrap(), Some(z.clone()));
    assert!(matches!(
        s.locate(&hz).unwrap(),
        Some(Location::LiveFile { .. })
    ));
    let p = f.root.join("live");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    // A second pass has nothing to do.
    let again = s.gc(&keep).unwrap();
    assert_eq!(
        again.blobs_removed + again.entries_removed + again.stale_locations_pruned,
        0
    );
    // Nothing left but a live copy: gc with keep=false keeps live entries.
    assert_eq!(s.gc(&|_| false).unwrap().entries_removed, 1); // x
    assert_eq!(s.get(&hz).unwrap(), Some(z));
    // The redundant copy is really gone: with the live file edited in place
    // (same stamp), nothing is left to read.
    fs::write(&p, bytes(18, n + 20)).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(s.get(&hz).unwrap(), None, "no own copy is left behind");
}

pub fn gc_keeps_blob_when_live_copy_is_bad(f: &Fixture) {
    gc_keeps_own_copy_when_live_copy_is_bad(f, INLINE_MAX + 100);
}

pub fn gc_keeps_inline_value_when_live_copy_is_bad(f: &Fixture) {
    gc_keeps_own_copy_when_live_copy_is_bad(f, 100);
}

fn gc_keeps_own_copy_when_live_copy_is_bad(f: &Fixture, n: usize) {
    let s = &f.store;
    let w = bytes(18, n);
    let hw = Hash::of_chunk(&w);
    s.put(hw, &w).unwrap();
    let (st, t) = write_live(&f.root, "w", &[&w]);
    s.index_file("w", st, &t).unwrap();
    // Same stamp, different bytes: only reading can tell.
    let p = f.root.join("w");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    fs::write(&p, bytes(19, n)).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let stats = s.gc(&|_| true).unwrap();
    assert_eq!(stats.blobs_removed, 0, "{stats:?}");
    assert_eq!(stats.files_dropped, 1, "{stats:?}");
    assert_eq!(s.get(&hw).unwrap(), Some(w.clone()));
    assert_eq!(s.locate(&hw).unwrap(), Some(own_location(n)));
    // Changed visibly (stamp) is also not a valid live copy.
    let (st, t) = write_live(&f.root, "v", &[&w]);
    s.index_file("v", st, &t).unwrap();
    let mut f2 = fs::OpenOptions::new()
        .append(true)
        .open(f.root.join("v"))
        .unwrap();
    std::io::Write::write_all(&mut f2, b"more").unwrap();
    let stats = s.gc(&|_| true).unwrap();
    assert_eq!(stats.blobs_removed, 0, "{stats:?}");
    assert_eq!(s.get(&hw).unwrap(), Some(w));
}

pub fn gc_of_both_kinds_in_one_pass(f: &Fixture) {
    let s = &f.store;
    // (seed, size, a live file holds it, keep accepts it)
    let cases = [
        (30, 200, false, false),
        (31, INLINE_MAX + 200, false, false),
        (32, 300, true, true),
        (33, INLINE_MAX + 300, true, true),
        (34, 400, false, true),
        (35, INLINE_MAX + 400, false, true),
    ];
    let chunks: Vec<Vec<u8>> = cases.iter().map(|c| bytes(c.0, c.1)).collect();
    let items: Vec<(Hash, &[u8])> = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.as_slice()))
        .collect();
    s.put_many(&items).unwrap();
    let live: Vec<&[u8]> = cases
        .iter()
        .zip(&chunks)
        .filter(|(c, _)| c.2)
        .map(|(_, d)| d.as_slice())
        .collect();
    let (st, t) = write_live(&f.root, "both", &live);
    s.index_file("both", st, &t).unwrap();
    let kept: Vec<Hash> = cases
        .iter()
        .zip(&items)
        .filter(|(c, _)| c.3)
        .map(|(_, (h, _))| *h)
        .collect();
    let stats = s.gc(&|h| kept.contains(h)).unwrap();
    assert_eq!(stats.blobs_removed, 4, "{stats:?}");
    assert_eq!(stats.inline_removed, 2, "{stats:?}");
    assert_eq!(stats.redundant_blobs_removed, 2, "{stats:?}");
    assert_eq!(stats.entries_removed, 2, "{stats:?}");
    let freed: usize = cases.iter().filter(|c| c.2 || !c.3).map(|c| c.1).sum();
    assert_eq!(stats.blob_bytes_freed, freed as u64, "{stats:?}");
    for (c, (h, d)) in cases.iter().zip(&items) {
        let want = match (c.2, c.3) {
            (true, _) => Some(Location::LiveFile {
                rel_path: "both".into(),
                offset: t.iter().find(|(_, e)| e.hash == *h).unwrap().0,
                len: c.1 as u32,
                stamp: st,
            }),
            (false, true) => Some(own_location(c.1)),
            (false, false) => None,
        };
        assert_eq!(s.locate(h).unwrap(), want, "{} bytes", c.1);
        assert_eq!(s.get(h).unwrap().is_some(), want.is_some());
        if want.is_some() {
            assert_eq!(s.get(h).unwrap().as_deref(), Some(*d));
        }
    }
}

/// `index_placed` removes the inline copy of every chunk the placed file
/// holds, in its commit, and leaves blobs (and chunks the file does not
/// hold) alone; `index_files` keeps them all.
pub fn index_placed_drops_inline_copies_of_held_chunks(f: &Fixture) {
    let s = &f.store;
    let small = bytes(71, SMALL);
    let large = bytes(72, LARGE);
    let other = bytes(73, SMALL);
    let kept = bytes(74, SMALL);
    let (hs, hl, ho, hk) = (
        Hash::of_chunk(&small),
        Hash::of_chunk(&large),
        Hash::of_chunk(&other),
        Hash::of_chunk(&kept),
    );
    s.put_many(&[(hs, &small), (hl, &large), (ho, &other), (hk, &kept)])
        .unwrap();
    // Placed: holds `small` (twice) and `large`.
    let (stamp, table) = write_live(&f.root, "d/placed", &[&small, &large, &small]);
    s.index_placed(&[FileIndex {
        rel_path: "d/placed",
        stamp,
        chunks: &table,
    }])
    .unwrap();
    // Indexed the ordinary way: holds `kept`.
    let (stamp2, table2) = write_live(&f.root, "scanned", &[&kept]);
    s.index_files(&[FileIndex {
        rel_path: "scanned",
        stamp: stamp2,
        chunks: &table2,
    }])
    .unwrap();
    // Every chunk still reads, the placed ones from the live file.
    for (h, d) in [(hs, &small), (hl, &large), (ho, &other), (hk, &kept)] {
        assert_eq!(s.get(&h).unwrap().as_ref(), Some(d));
    }
    assert!(matches!(
        s.locate(&hs).unwrap(),
        Some(Location::LiveFile { .. })
    ));
    // Both live files change: what is left is exactly the own copies.
    fs::write(f.root.join("d/placed"), b"edited").unwrap();
    fs::write(f.root.join("scanned"), b"edited too").unwrap();
    assert!(!s.has(&hs).unwrap(), "the inline copy went with the commit");
    assert_eq!(s.get(&hs).unwrap(), None);
    assert_eq!(s.get(&hl).unwrap(), Some(large), "blobs are left to gc");
    assert_eq!(s.locate(&hl).unwrap(), Some(own_location(LARGE)));
    assert_eq!(s.get(&ho).unwrap(), Some(other), "not in the placed file");
    assert_eq!(s.get(&hk).unwrap(), Some(kept), "index_files keeps copies");
    assert_eq!(s.locate(&hk).unwrap(), Some(own_location(SMALL)));
    // A later put stores the chunk again.
    s.put(hs, &small).unwrap();
    assert_eq!(s.get(&hs).unwrap(), Some(small.clone()));
    // A file changed before its index commit keeps the copies it holds.
    let (stamp3, table3) = write_live(&f.root, "raced", &[&small]);
    fs::write(
        f.root.join("raced"),
        b"a local write right after the rename",
    )
    .unwrap();
    s.index_placed(&[FileIndex {
        rel_path: "raced",
        stamp: stamp3,
        chunks: &table3,
    }])
    .unwrap();
    assert_eq!(s.get(&hs).unwrap(), Some(small), "kept: the file changed");
    assert_eq!(s.locate(&hs).unwrap(), Some(own_location(SMALL)));
}
