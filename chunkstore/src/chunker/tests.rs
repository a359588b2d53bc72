//! Cross-cutting properties of the chunker: the cut rule against a
//! brute-force reference, independence from read splitting, reassembly,
//! size bounds, re-synchronisation after edits, and pipeline behaviour.

use std::io::{self, Read};

use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};

use super::pipeline::{pipeline, pipeline_from};
use super::*;
use crate::{ChunkEntry, Hash};

fn params(normalization: u8) -> ChunkerParams {
    ChunkerParams {
        window: 16,
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        normalization,
        ..ChunkerParams::default()
    }
}

fn small(normalization: u8) -> Chunker {
    params(normalization).validate().expect("valid")
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Chunk lengths of an in-memory buffer (the whole rest is always given to
/// `cut`, so its precondition holds trivially).
fn lengths(c: &Chunker, data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = c.cut(&data[pos..]);
        out.push(n);
        pos += n;
    }
    out
}

/// Boundary offsets (chunk ends).
fn ends(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .scan(0, |acc, &n| {
            *acc += n;
            Some(*acc)
        })
        .collect()
}

/// The cut rule as documented, the slow way: fresh fingerprint of each
/// window, explicit masks.
fn reference_lengths(p: &ChunkerParams, data: &[u8]) -> Vec<usize> {
    let c = p.validate().expect("valid");
    let (w, min, avg, max) = (
        p.window as usize,
        p.min_size as usize,
        p.avg_size as usize,
        p.max_size as usize,
    );
    let bits = p.avg_size.trailing_zeros();
    let lvl = u32::from(p.normalization);
    let magic = 0x2c6f_1d3b_87a5_e94fu64;
    let mut out = Vec::new();
    let mut s = 0;
    while s < data.len() {
        let rest = &data[s..];
        let mut len = rest.len().min(max);
        for l in min..rest.len().min(max) {
            let mask = if l < avg {
                (1u64 << (bits + lvl)) - 1
            } else {
                (1u64 << (bits - lvl)) - 1
            };
            if c.fingerprint(&rest[l - w..l]) & mask == magic & mask {
                len = l;
                break;
            }
        }
        out.push(len);
        s += len;
    }
    out
}

/// A reader that returns at most `sizes[i % len]` bytes per call and
/// sometimes fails with `Interrupted` first.
struct ChoppyReader<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    call: usize,
}

impl Read for ChoppyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.call += 1;
        let size = self.sizes[self.call % self.sizes.len()];
        if size == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn reader_lengths(c: &Chunker, r: impl Read) -> Vec<usize> {
    let mut cr = ChunkReader::with_buffer_size(r, c.clone(), 0);
    let mut out = Vec::new();
    let mut expect_offset = 0u64;
    while let Some(chunk) = cr.next_chunk().expect("in-memory read") {
        assert_eq!(chunk.offset, expect_offset);
        expect_offset += chunk.data.len() as u64;
        out.push(chunk.data.len());
    }
    out
}

fn entries_of(data: &[u8], lens: &[usize]) -> Vec<ChunkEntry> {
    let mut pos = 0;
    lens.iter()
        .map(|&n| {
            let e = ChunkEntry {
                hash: Hash::of_chunk(&data[pos..pos + n]),
                len: n as u32,
            };
            pos += n;
            e
        })
        .collect()
}

fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12_000),
        // Low-entropy data: repeated short patterns and zero runs.
        (
            proptest::collection::vec(any::<u8>(), 1..40),
            0..12_000usize
        )
            .prop_map(|(pat, n)| pat.iter().copied().cycle().take(n).collect()),
        (
            0..5_000usize,
            proptest::collection::vec(any::<u8>(), 0..3_000)
        )
            .prop_map(|(z, tail)| {
                let mut v = vec![0u8; z];
                v.extend(tail);
                v
            }),
    ]
}

proptest! {
    #[test]
    fn matches_reference_rule(data in data_strategy(), lvl in 0u8..=2) {
        let p = params(lvl);
        prop_assert_eq!(lengths(&p.validate().expect("valid"), &data), reference_lengths(&p, &data));
    }

    #[test]
    fn boundaries_independent_of_read_sizes(
        data in data_strategy(),
        sizes in proptest::collection::vec(0usize..700, 1..20),
        lvl in 0u8..=2,
    ) {
        prop_assume!(sizes.iter().any(|&s| s > 0));
        let c = small(lvl);
        let expected = lengths(&c, &data);
        let choppy = ChoppyReader { data: &data, sizes: sizes.clone(), call: 0 };
        prop_assert_eq!(&reader_lengths(&c, choppy), &expected);
        let choppy = ChoppyReader { data: &data, sizes, call: 0 };
        let got = pipeline(choppy, &c, 2048, |_, _, _| Ok::<(), ()>(())).expect("in-memory");
        prop_assert_eq!(got.entries, entries_of(&data, &expected));
        prop_assert_eq!(got.total_len, data.len() as u64);
    }

    #[test]
    fn a_short_first_read_changes_nothing(
        data in data_strategy(),
        lvl in 0u8..=2,
        first in 1usize..=2048,
    ) {
        let c = small(lvl);
        let mut got = Vec::new();
        let out = pipeline_from(&data[..], &c, 2048, first, |offset, e: &ChunkEntry, bytes: &[u8]| {
            got.push((offset, e.len as usize, bytes.to_vec()));
            Ok::<(), ()>(())
        })
        .expect("in-memory");
        let lens = lengths(&c, &data);
        prop_assert_eq!(&out.entries, &entries_of(&data, &lens));
        prop_assert_eq!(out.total_len, data.len() as u64);
        let mut offset = 0usize;
        for ((o, len, bytes), want) in got.iter().zip(&lens) {
            prop_assert_eq!((*o as usize, *len), (offset, *want));
            prop_assert_eq!(&bytes[..], &data[offset..offset + want]);
            offset += want;
        }
        prop_assert_eq!(got.len(), lens.len());
    }

    #[test]
    fn reassembles_and_honours_bounds(data in data_strategy(), lvl in 0u8..=2) {
        let c = small(lvl);
        let lens = lengths(&c, &data);
        prop_assert_eq!(lens.iter().sum::<usize>(), data.len());
        for (i, &n) in lens.iter().enumerate() {
            prop_assert!(n <= 1024);
            prop_assert!(n >= 64 || i + 1 == lens.len(), "short chunk {} of {}", n, i);
        }
        // The sink sees every byte once, in order, at the right offsets.
        let mut rebuilt = Vec::new();
        let out = pipeline(&data[..], &c, 2048, |offset, entry: &ChunkEntry, bytes: &[u8]| {
            assert_eq!(offset, rebuilt.len() as u64);
            assert_eq!(entry.hash, Hash::of_chunk(bytes));
            assert_eq!(entry.len as usize, bytes.len());
            rebuilt.extend_from_slice(bytes);
            Ok::<(), ()>(())
        }).expect("in-memory");
        prop_assert_eq!(&rebuilt, &data);
        prop_assert_eq!(out.entries.len(), lens.len());
    }

    /// After an edit, chunks ending before the edit are unchanged, and once
    /// a new boundary coincides with an old one (shifted by the edit) every
    /// later chunk is identical.
    #[test]
    fn edits_only_disturb_locally(
        seed in any::<u64>(),
        len in 2_000usize..20_000,
        at in any::<prop::sample::Index>(),
        insert in proptest::collection::vec(any::<u8>(), 0..5),
        delete in 0usize..5,
    ) {
        let old = random_bytes(seed, len);
        let at = at.index(len - delete);
        let mut new = old[..at].to_vec();
        new.extend_from_slice(&insert);
        new.extend_from_slice(&old[at + delete..]);
        let shift = insert.len() as isize - delete as isize;
        let c = small(1);
        let old_ends = ends(&lengths(&c, &old));
        let new_ends = ends(&lengths(&c, &new));
        let before_old: Vec<_> = old_ends.iter().filter(|&&e| e < at).collect();
        let before_new: Vec<_> = new_ends.iter().filter(|&&e| e < at).collect();
        prop_assert_eq!(before_old, before_new);
        let shifted: std::collections::BTreeSet<isize> =
            old_ends.iter().filter(|&&e| e > at + delete).map(|&e| e as isize + shift).collect();
        let after: Vec<isize> = new_ends.iter().map(|&e| e as isize).filter(|&e| e > (at + insert.len()) as isize).collect();
        if let Some(first_common) = after.iter().position(|e| shifted.contains(e)) {
            for e in &after[first_common..] {
                prop_assert!(shifted.contains(e));
            }
        }
    }
}

/// Deterministic data, so this cannot flake: over 300 random edits, the
/// new chunking re-joins the old one within four max-size chunks of the
/// edit.
#[test]
fn resynchronises_soon_after_insert_or_delete() {
    let c = small(2);
    let data = random_bytes(7, 200_000);
    let old_ends = ends(&lengths(&c, &data));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..300 {
        let at = rng.gen_range(0..data.len() - 10_000);
        let (ins, del) = if rng.gen() {
            (rng.gen_range(1..4), 0)
        } else {
            (0, rng.gen_range(1..4))
        };
        let mut new = data[..at].to_vec();
        new.extend(std::iter::repeat_n(0xA5u8, ins));
        new.extend_from_slice(&data[at + del..]);
        let shift = ins as isize - del as isize;
        let new_ends = ends(&lengths(&c, &new));
        let limit = at + 4 * 1024;
        let old_after: Vec<isize> = old_ends
            .iter()
            .filter(|&&e| e > limit)
            .map(|&e| e as isize + shift)
            .collect();
        let new_after: Vec<isize> = new_ends
            .iter()
            .map(|&e| e as isize)
            .filter(|&e| e > limit as isize + shift)
            .collect();
        assert_eq!(
            old_after, new_after,
            "edit at {at} (+{ins} -{del}) did not resync"
        );
    }
}

#[test]
fn empty_and_one_byte() {
    let c = small(1);
    assert!(lengths(&c, &[]).is_empty());
    assert_eq!(reader_lengths(&c, io::empty()), Vec::<usize>::new());
    let out = chunk_and_hash(io::empty(), &c).expect("empty");
    assert_eq!(out, FileChunks::default());
    let out = chunk_and_hash(&[42u8][..], &c).expect("one byte");
    assert_eq!(
        out.entries,
        vec![ChunkEntry {
            hash: Hash::of_chunk(&[42]),
            len: 1
        }]
    );
    assert_eq!(out.total_len, 1);
    assert_eq!(reader_lengths(&c, &[42u8][..]), vec![1]);
}

/// Large enough for several 2 MiB blocks: the threaded path with the real
/// block size and the default params agrees with the sequential reader.
#[test]
fn threaded_pipeline_matches_sequential_reader() {
    let c = ChunkerParams::default().validate().expect("valid");
    let data = random_bytes(3, 5 << 20);
    let out = chunk_and_hash(&data[..], &c).expect("in-memory");
    let lens = reader_lengths(&c, &data[..]);
    assert_eq!(out.entries, entries_of(&data, &lens));
    assert_eq!(out.total_len, data.len() as u64);
    let stats = lens.len();
    assert!(stats > 100, "{stats} chunks in 5 MiB");
}

struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.left).min(1000);
        buf[..n].fill(7);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn read_errors_carry_offset() {
    let c = small(1);
    for fail_at in [0usize, 500, 5000, 100_000] {
        match pipeline(FailingReader { left: fail_at }, &c, 2048, |_, _, _| {
            Ok::<(), ()>(())
        }) {
            Err(PipelineError::Read(ReadError::Io { offset, .. })) => {
                assert_eq!(offset, fail_at as u64)
            }
            other => panic!("expected a read error, got {other:?}"),
        }
        let mut cr = ChunkReader::with_buffer_size(FailingReader { left: fail_at }, c.clone(), 0);
        let err = loop {
            match cr.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ReadError::Io { offset, .. } if offset == fail_at as u64));
    }
}

#[test]
fn sink_error_stops_pipeline() {
    let c = small(1);
    let data = random_bytes(5, 50_000);
    let mut seen = 0;
    let res = pipeline(&data[..], &c, 2048, |_, _, _| {
        seen += 1;
        if seen == 10 {
            Err("full")
        } else {
            Ok(())
        }
    });
    assert!(matches!(res, Err(PipelineError::Sink("full"))));
    assert_eq!(seen, 10);
}

#[test]
fn chunk_files_keeps_order_and_reports_per_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = small(1);
    let mut paths = Vec::new();
    let mut expected = Vec::new();
    for i in 0..7u64 {
        let data = random_bytes(i, (i as usize) * 3_000);
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, &data).expect("write");
        expected.push(entries_of(&data, &lengths(&c, &data)));
        paths.push(path);
    }
    paths.insert(3, dir.path().join("missing"));
    let results = chunk_files(&paths, &c, 3);
    assert_eq!(results.len(), 8);
    assert!(matches!(&results[3], Err(ReadError::Open { path, .. }) if path.ends_with("missing")));
    let ok: Vec<_> = results
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, r)| r.expect("readable").entries)
        .collect();
    assert_eq!(ok, expected);
    assert!(chunk_files::<std::path::PathBuf>(&[], &c, 2).is_empty());
}
