use super::*;
use crate::chunks::wire::Kind;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;

const MB: u64 = 1_000_000;

fn compressor(link: Option<u64>) -> Compressor {
    Compressor::new(&CompressionConfig {
        assume_link_rate: link,
        ..CompressionConfig::default()
    })
}

fn text(i: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut j = 0;
    while out.len() < len {
        out.extend_from_slice(format!("chunk {i}, line {j}: the quick brown fox\n").as_bytes());
        j += 1;
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn frame(c: &Compressor, peer: PeerId, data: &[u8]) -> Frame {
    c.frame(peer, Hash::of_chunk(data), data.to_vec(), true)
}

/// The frame opens to the chunk.
fn check(f: &Frame, data: &[u8]) {
    let back = wire::open_body(&f.header, f.body.to_vec()).expect("frame opens");
    assert_eq!(back.bytes(), data);
}

#[test]
fn slow_link_compresses_once_for_every_peer() {
    let c = compressor(Some(MB));
    let data = text(1, 64 * 1024);
    let first = frame(&c, PeerId::random(), &data);
    assert_eq!(first.header.kind, Kind::Zstd);
    check(&first, &data);
    let second = frame(&c, PeerId::random(), &data);
    assert_eq!(second.header.kind, Kind::Zstd);
    // The same frame, shared.
    assert_eq!(first.body.as_ptr(), second.body.as_ptr());
    let s = c.stats();
    assert_eq!(s.compressions, 1, "{s:?}");
    assert_eq!((s.frames_zstd, s.frames_zstd_cached), (2, 1), "{s:?}");
    assert_eq!(s.cache_hits, 1, "{s:?}");
    assert_eq!(s.cache_entries, 1, "{s:?}");
    assert!(s.compress_rate.is_some() && s.ratio.unwrap() < 0.5, "{s:?}");
    // A fetcher that does not accept zstd gets the chunk raw.
    let raw = c.frame(PeerId::random(), Hash::of_chunk(&data), data.clone(), false);
    assert_eq!(raw.header.kind, Kind::Raw);
}

#[test]
fn fast_link_sends_raw_without_compressing() {
    let c = compressor(Some(100_000 * MB));
    for i in 0..40 {
        let data = text(i, 64 * 1024);
        let f = frame(&c, PeerId::random(), &data);
        assert_eq!(f.header.kind, Kind::Raw);
        check(&f, &data);
    }
    let s = c.stats();
    assert_eq!(
        (s.compressions, s.probes, s.frames_zstd),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.frames_raw, 40);
}

#[test]
fn incompressible_goes_raw_whatever_the_link() {
    let c = compressor(Some(1000));
    // Random: the entropy sample turns it down; nothing compressed.
    let data = random(64 * 1024, 1);
    assert_eq!(frame(&c, PeerId::random(), &data).header.kind, Kind::Raw);
    assert_eq!(c.stats().compressions, 0);
    // Random but for the sampled slices: zstd is tried, saves < 1/32, and
    // the verdict is kept.
    let len = 256 * 1024;
    let mut data = random(len, 2);
    for i in 0..8 {
        data[i * len / 8..i * len / 8 + 512].fill(0);
    }
    for _ in 0..3 {
        let f = frame(&c, PeerId::random(), &data);
        assert_eq!(f.header.kind, Kind::Raw);
        check(&f, &data);
    }
    let s = c.stats();
    assert_eq!(
        (s.compressions, s.cache_hits, s.frames_raw),
        (1, 2, 4),
        "{s:?}"
    );
    assert_eq!(s.cache_bytes, super::super::frame_cache::ENTRY_OVERHEAD);
}

#[test]
fn measured_links_decide_per_peer() {
    let c = compressor(None);
    let (fast, slow, unknown) = (PeerId::random(), PeerId::random(), PeerId::random());
    // 8 MiB written in 1 ms, and in 8 s.
    c.record_write(fast, 8 << 20, Duration::from_millis(1));
    c.record_write(slow, 8 << 20, Duration::from_secs(8));
    assert!(c.link_rate(&fast).unwrap() > 1e9);
    assert!(c.link_rate(&slow).unwrap() < 2e6);
    assert_eq!(c.link_rate(&unknown), None);
    let data = text(7, 128 * 1024);
    assert_eq!(frame(&c, fast, &data).header.kind, Kind::Raw);
    assert_eq!(
        c.stats().compressions,
        0,
        "no probe on a link faster than zstd"
    );
    assert_eq!(frame(&c, slow, &data).header.kind, Kind::Zstd);
    // Made for the slow peer, still not worth it for the fast one.
    assert_eq!(frame(&c, fast, &data).header.kind, Kind::Raw);
    let s = c.stats();
    assert_eq!((s.compressions, s.cache_hits, s.peers), (1, 1, 2), "{s:?}");
}

#[test]
fn middling_link_probes_to_measure() {
    // 300 MB/s: the priors say compression does not pay, and a link that
    // slow could gain from it: some candidates are compressed to measure.
    let c = compressor(Some(300 * MB));
    for i in 0..17 {
        let data = text(i, 64 * 1024);
        check(&frame(&c, PeerId::random(), &data), &data);
    }
    let s = c.stats();
    assert!(s.probes >= 2, "{s:?}");
    assert_eq!(s.compressions, s.probes, "{s:?}");
    assert!(s.decompress_rate.is_some(), "{s:?}");
}

#[test]
fn concurrent_requests_for_one_chunk_compress_it_once() {
    let c = Arc::new(compressor(Some(MB)));
    let data = Arc::new(text(3, 4 << 20));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (c, data) = (c.clone(), data.clone());
            std::thread::spawn(move || frame(&c, PeerId::random(), &data))
        })
        .collect();
    for t in threads {
        let f = t.join().expect("thread");
        assert_eq!(f.header.kind, Kind::Zstd);
        check(&f, &data);
    }
    let s = c.stats();
    assert_eq!(s.compressions, 1, "{s:?}");
    assert_eq!(s.frames_zstd_cached, 3, "{s:?}");
}

#[test]
fn the_cache_stays_within_its_bytes() {
    let c = Compressor::new(&CompressionConfig {
        cache_bytes: 40 * 1024,
        assume_link_rate: Some(MB),
        ..CompressionConfig::default()
    });
    for i in 0..64 {
        let data = text(i, 64 * 1024);
        check(&frame(&c, PeerId::random(), &data), &data);
    }
    let s = c.stats();
    assert_eq!(s.compressions, 64);
    assert!(s.cache_bytes <= 40 * 1024, "{s:?}");
    assert!(s.cache_evictions > 0, "{s:?}");
}
