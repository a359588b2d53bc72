//! The parallel path against the serial one: same chunk list, same sink
//! calls, on any data and any unit size (tiny units, so that small inputs
//! cross many units), and the same errors.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use rand::{RngCore, SeedableRng};

use super::parallel::{parallel_at, stitch, Layout, ReadAt};
use super::pipeline::pipeline;
use super::*;
use crate::ChunkEntry;

/// max 1024, so that kilobytes of data make many chunks and units.
fn small(normalization: u8) -> Chunker {
    ChunkerParams {
        window: 16,
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        normalization,
        ..ChunkerParams::default()
    }
    .validate()
    .expect("valid")
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// What a run produced: the result and every sink call.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    chunks: FileChunks,
    calls: Vec<(u64, ChunkEntry, Vec<u8>)>,
}

fn serial(c: &Chunker, data: &[u8]) -> Run {
    let mut calls = Vec::new();
    let chunks = pipeline(data, c, 2048, |o, e: &ChunkEntry, b: &[u8]| {
        calls.push((o, *e, b.to_vec()));
        Ok::<(), ()>(())
    })
    .expect("in memory");
    Run { chunks, calls }
}

fn parallel<S: ReadAt + ?Sized>(
    c: &Chunker,
    src: &S,
    len: u64,
    layout: Layout,
) -> Result<Run, PipelineError<()>> {
    let mut calls = Vec::new();
    let chunks = parallel_at(src, len, c, layout, |o, e: &ChunkEntry, b: &[u8]| {
        calls.push((o, *e, b.to_vec()));
        Ok::<(), ()>(())
    })?;
    Ok(Run { chunks, calls })
}

fn layout(unit: usize, threads: usize, pool: usize) -> Layout {
    Layout {
        unit,
        threads,
        pool,
    }
}

fn same_as_serial(c: &Chunker, data: &[u8], l: Layout) {
    let got = parallel(c, data, data.len() as u64, l).expect("in memory");
    let want = serial(c, data);
    assert_eq!(got.chunks, want.chunks, "{l:?}");
    assert_eq!(got.calls, want.calls, "{l:?}");
}

/// Chunk ends of a serial run.
fn ends(c: &Chunker, data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        pos += c.cut(&data[pos..]);
        out.push(pos);
    }
    out
}

/// Random bytes, zero runs (only ever cut at `max`) and short repeated
/// patterns, concatenated.
fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..6_000),
        (0..6_000usize).prop_map(|n| vec![0u8; n]),
        (proptest::collection::vec(any::<u8>(), 1..40), 0..6_000usize).prop_map(|(pat, n)| pat
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn parallel_equals_serial(
        data in data_strategy(),
        lvl in 0u8..=2,
        unit in 1usize..5_000,
        threads in 1usize..5,
        pool in 1usize..8,
    ) {
        let c = small(lvl);
        let got = parallel(&c, &data[..], data.len() as u64, layout(unit, threads, pool))
            .expect("in memory");
        let want = serial(&c, &data);
        prop_assert_eq!(&got.chunks, &want.chunks);
        prop_assert_eq!(&got.calls, &want.calls);
        let lens: Vec<u32> = got.chunks.entries.iter().map(|e| e.len).collect();
        let mut pos = 0;
        for (n, end) in lens.iter().zip(ends(&c, &data)) {
            pos += *n as usize;
            prop_assert_eq!(pos, end);
        }
    }

    /// The file grew (or shrank) between the stat and the reads: the result
    /// is the serial chunking of what is there when read.
    #[test]
    fn a_file_that_grew_or_shrank_is_chunked_to_its_real_end(
        data in data_strategy(),
        stated in 0usize..40_000,
        unit in 1usize..5_000,
        threads in 1usize..4,
    ) {
        let c = small(1);
        let got = parallel(&c, &data[..], stated as u64, layout(unit, threads, 2 * threads))
            .expect("in memory");
        prop_assert_eq!(got, serial(&c, &data));
    }
}

#[test]
fn empty_file() {
    let c = small(1);
    for unit in [1, 1000, 1 << 20] {
        let got = parallel(&c, &[][..], 0, layout(unit, 2, 4)).expect("empty");
        assert_eq!(got.chunks, FileChunks::default());
        assert!(got.calls.is_empty());
    }
}

#[test]
fn file_smaller_than_one_unit() {
    let c = small(1);
    for len in [1, 63, 64, 1023, 1024, 1025, 3000] {
        let data = random_bytes(len as u64, len);
        same_as_serial(&c, &data, layout(10_000, 2, 4));
        // Smaller than one unit but not than the unit plus its overlap.
        same_as_serial(&c, &data, layout(len.saturating_sub(5).max(1), 2, 4));
    }
}

#[test]
fn unit_boundaries_exactly_on_cuts() {
    let c = small(2);
    let data = random_bytes(9, 40_000);
    let ends = ends(&c, &data);
    // Unit 1 starts on a cut; units of 1..=max bytes too (each the length
    // of a chunk somewhere).
    for &e in &ends[..6] {
        same_as_serial(&c, &data, layout(e, 3, 6));
    }
    // Every unit starts on a cut: data made of equal 1024-byte blocks of
    // zeros, cut at max, with units a multiple of max.
    let zeros = vec![0u8; 20 * 1024 + 77];
    for unit in [1024, 2048, 5 * 1024] {
        same_as_serial(&c, &zeros, layout(unit, 2, 3));
    }
    // A unit whose start is a cut is synchronised at once: the stitched
    // chain is the unit's own.
    let first = ends[0];
    let own: Vec<usize> = std::iter::once(0)
        .chain(ends.iter().map(|e| e - first))
        .take_while(|&p| p < 10_000)
        .collect();
    let own_exit = ends.iter().map(|e| e - first).find(|&p| p >= 10_000);
    let own_exit = own_exit.expect("a cut past 10,000");
    let (chain, exit) = stitch(&c, &data[first..], 0, 10_000, &own, own_exit);
    assert_eq!((chain, exit), (own.clone(), own_exit));
}

#[test]
fn data_with_no_natural_cuts() {
    let c = small(1);
    // All cuts at max; a unit not a multiple of max never meets its own
    // chain and is walked serially.
    let zeros = vec![0u8; 50_000];
    assert!(serial(&c, &zeros).chunks.entries[..48]
        .iter()
        .all(|e| e.len == 1024));
    for unit in [1, 100, 1000, 3000, 1025, 7 * 1024 + 1] {
        same_as_serial(&c, &zeros, layout(unit, 3, 6));
    }
    // Walked serially: from 1000 (the true chain's next position after
    // 24 * 1024 in unit [24_000, 27_000)), never meeting the own chain.
    let data = &zeros[24_000..];
    let own: Vec<usize> = (0..3000).step_by(1024).collect();
    let (chain, exit) = stitch(&c, data, 576, 3000, &own, 3072);
    assert_eq!(chain, vec![576, 1600, 2624]);
    assert_eq!(exit, 3648);
    // A repeated pattern: also cut only at max (its fingerprints never
    // match), mixed with random data that cuts naturally.
    let mut mixed: Vec<u8> = b"abcdefg".iter().copied().cycle().take(30_000).collect();
    mixed.extend(random_bytes(4, 20_000));
    mixed.extend(vec![0u8; 9_999]);
    for unit in [333, 1500, 4096, 10_000] {
        same_as_serial(&c, &mixed, layout(unit, 2, 2));
    }
}

#[test]
fn one_buffer_or_more_threads_than_units() {
    let c = small(0);
    let data = random_bytes(12, 30_000);
    for (unit, threads, pool) in [(1000, 4, 1), (1000, 1, 1), (29_999, 8, 16), (7, 8, 2)] {
        same_as_serial(&c, &data, layout(unit, threads, pool));
    }
}

/// A real file, the default params and unit size (4 MiB), several units;
/// above `PARALLEL_MIN_LEN`, so `chunk_file` takes the parallel path when
/// the machine has more than one core.
#[test]
fn real_file_default_params() {
    let c = ChunkerParams::default().validate().expect("valid");
    let len = PARALLEL_MIN_LEN as usize + (1 << 20) + 12_345;
    let mut data = random_bytes(21, len);
    data[(3 << 20)..(5 << 20)].fill(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big");
    std::fs::write(&path, &data).expect("write");
    let file = std::fs::File::open(&path).expect("open");
    let mut calls = Vec::new();
    let got = chunk_file_parallel_with(&file, &c, 3, |o, e: &ChunkEntry, b: &[u8]| {
        calls.push((o, *e, b.to_vec()));
        Ok::<(), ()>(())
    })
    .expect("read");
    let mut want_calls = Vec::new();
    let want = pipeline(&data[..], &c, 2 << 20, |o, e: &ChunkEntry, b: &[u8]| {
        want_calls.push((o, *e, b.to_vec()));
        Ok::<(), ()>(())
    })
    .expect("in memory");
    assert_eq!(got, want);
    assert!(calls == want_calls);
    assert_eq!(chunk_file(&path, &c).expect("read"), want);
    let open = chunk_open_file_with(&file, &c, |_, _, _| Ok::<(), ()>(())).expect("read");
    assert_eq!(open, want);
}

/// Returns the bytes of `data` before `fail_at`, then fails.
struct FailingAt<'a> {
    data: &'a [u8],
    fail_at: u64,
}

impl ReadAt for FailingAt<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.fail_at {
            return Err(io::Error::other("disk on fire"));
        }
        let room = buf.len().min((self.fail_at - offset) as usize);
        self.data[..].read_at(&mut buf[..room], offset)
    }
}

/// The error is the failing read's, and the sink got exactly the chunks
/// that start before the first unit whose read reaches it.
#[test]
fn read_errors_carry_their_offset() {
    let c = small(1);
    let data = random_bytes(5, 20_000);
    let want = serial(&c, &data).calls;
    for fail_at in [0u64, 1, 999, 1000, 1001, 5_555, 19_999] {
        for unit in [1000u64, 4096] {
            let src = FailingAt {
                data: &data,
                fail_at,
            };
            let mut calls = Vec::new();
            let res = parallel_at(
                &src,
                data.len() as u64,
                &c,
                layout(unit as usize, 3, 4),
                |o, e: &ChunkEntry, b: &[u8]| {
                    calls.push((o, *e, b.to_vec()));
                    Ok::<(), ()>(())
                },
            );
            match res {
                Err(PipelineError::Read(ReadError::Io { offset, .. })) => {
                    assert_eq!(offset, fail_at, "unit {unit}")
                }
                other => panic!("expected a read error at {fail_at}, got {other:?}"),
            }
            // Unit k reads up to its end plus max (1024).
            let first_failing = (0..)
                .find(|k| ((k + 1) * unit).min(20_000) + 1024 > fail_at)
                .expect("some unit");
            let before: Vec<_> = want
                .iter()
                .filter(|(o, _, _)| *o < first_failing * unit)
                .cloned()
                .collect();
            assert_eq!(calls, before, "fail at {fail_at}, unit {unit}");
        }
    }
}

/// An error while going on past the stated length (the file grew) is
/// reported at its file offset.
#[test]
fn read_error_after_growth_carries_its_offset() {
    let c = small(1);
    let data = random_bytes(6, 20_000);
    let src = FailingAt {
        data: &data,
        fail_at: 15_000,
    };
    match parallel(&c, &src, 8_000, layout(1000, 2, 4)) {
        Err(PipelineError::Read(ReadError::Io { offset, .. })) => assert_eq!(offset, 15_000),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn sink_error_stops_the_run() {
    let c = small(1);
    let data = random_bytes(7, 50_000);
    let mut seen = 0;
    let res = parallel_at(&data[..], 50_000, &c, layout(1000, 3, 4), |_, _, _| {
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

/// Panics when asked for bytes at or past `at`.
struct PanicsAt<'a> {
    data: &'a [u8],
    at: u64,
    reads: AtomicUsize,
}

impl ReadAt for PanicsAt<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        assert!(offset < self.at, "injected panic");
        let room = buf.len().min((self.at - offset) as usize);
        self.data[..].read_at(&mut buf[..room], offset)
    }
}

#[test]
fn a_panicking_worker_is_reported_not_waited_for() {
    let c = small(1);
    let data = random_bytes(8, 30_000);
    let src = PanicsAt {
        data: &data,
        at: 12_345,
        reads: AtomicUsize::new(0),
    };
    let res = parallel(&c, &src, data.len() as u64, layout(1000, 3, 4));
    assert!(
        matches!(res, Err(PipelineError::Read(ReadError::WorkerPanicked))),
        "{res:?}"
    );
    assert!(src.reads.load(Ordering::Relaxed) > 0);
}
