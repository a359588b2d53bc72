//! The serving side's zstd choice: a chunk served to several fetchers is
//! compressed once (over both paths), a slow link gets zstd and a fast one
//! does not, and the server measures each fetcher's link. The link rate
//! is injected (`CompressionConfig::assume_link_rate`): no assertion
//! depends on timing.

use crate::common::*;
use filesyncd_p2p::{BulkConfig, CompressionConfig, FetchPlan, Hash, P2pConfig, Verified};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;

const MB: u64 = 1_000_000;

fn text_chunks(n: usize, seed: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..1500)
                .map(|j| format!("chunk {seed}/{i} line {j}: compressible text\n"))
                .collect::<String>()
                .into_bytes()
        })
        .collect()
}

fn random_chunks(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.gen::<u8>()).collect())
        .collect()
}

fn hashes(chunks: &[Vec<u8>]) -> Vec<Hash> {
    chunks.iter().map(|c| Hash::of_chunk(c)).collect()
}

/// A server whose links are all taken as draining `link` bytes/s.
async fn server(chunks: &[Vec<u8>], link: Option<u64>) -> Node {
    let config = P2pConfig {
        limits: test_limits(),
        compression: CompressionConfig {
            assume_link_rate: link,
            ..CompressionConfig::default()
        },
        ..loopback_config()
    };
    node_with(config, Arc::new(MapProvider::with(chunks)), None).await
}

async fn fetcher(bulk: bool) -> Node {
    let config = P2pConfig {
        limits: test_limits(),
        bulk: BulkConfig {
            enabled: bulk,
            ..BulkConfig::default()
        },
        ..loopback_config()
    };
    node_with(config, Arc::new(MapProvider::default()), None).await
}

/// Fetches every chunk from `from`; checks each one.
async fn fetch_all(to: &Node, from: &Node, chunks: &[Vec<u8>]) {
    let (got, failed) = to
        .client
        .fetch_chunks(FetchPlan::from_all(&[from.peer], hashes(chunks)))
        .collect_all()
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    let got: HashMap<Hash, Vec<u8>> = got.into_iter().map(Verified::into_parts).collect();
    for c in chunks {
        assert_eq!(got.get(&Hash::of_chunk(c)), Some(c));
    }
}

#[tokio::test]
async fn t10_a_chunk_served_to_two_fetchers_is_compressed_once() {
    let text = text_chunks(12, 1);
    let random = random_chunks(4, 64 * 1024, 1);
    let all: Vec<Vec<u8>> = text.iter().chain(&random).cloned().collect();
    let s = server(&all, Some(MB)).await;
    // One fetcher over the bulk endpoint, one over libp2p-stream.
    let a = fetcher(true).await;
    let b = fetcher(false).await;
    make_members(&[&s, &a, &b]).await;
    bulk_up(&a, &s).await;

    fetch_all(&a, &s, &all).await;
    let first = s.client.compression_stats();
    assert_eq!(first.compressions, 12, "{first:?}");
    assert_eq!(first.frames_zstd, 12, "{first:?}");
    assert_eq!(first.frames_raw, 4, "random chunks go raw: {first:?}");
    assert_eq!(a.client.bulk_stats().requests_libp2p, 0);

    fetch_all(&b, &s, &all).await;
    let second = s.client.compression_stats();
    assert_eq!(second.compressions, 12, "compressed once: {second:?}");
    assert_eq!(second.frames_zstd, 24, "{second:?}");
    assert_eq!(second.frames_zstd_cached, 12, "{second:?}");
    assert_eq!(second.cache_entries, 12, "{second:?}");
    assert!(second.cache_bytes <= CompressionConfig::default().cache_bytes);
    assert_eq!(b.client.bulk_stats().requests_bulk, 0);
    assert!(b.client.bulk_stats().requests_libp2p > 0);
}

#[tokio::test]
async fn t20_slow_link_gets_zstd_fast_link_does_not() {
    let text = text_chunks(10, 2);
    let slow = server(&text, Some(MB)).await;
    let fast = server(&text, Some(100_000 * MB)).await;
    let a = fetcher(true).await;
    make_members(&[&slow, &fast, &a]).await;

    fetch_all(&a, &slow, &text).await;
    let s = slow.client.compression_stats();
    assert_eq!(
        (s.compressions, s.frames_zstd, s.frames_raw),
        (10, 10, 0),
        "{s:?}"
    );
    assert_eq!(slow.client.link_rate(&a.peer), Some(MB as f64));

    fetch_all(&a, &fast, &text).await;
    let f = fast.client.compression_stats();
    assert_eq!(
        (f.compressions, f.probes, f.frames_zstd),
        (0, 0, 0),
        "{f:?}"
    );
    assert_eq!(f.frames_raw, 10, "{f:?}");
}

#[tokio::test]
async fn t30_the_server_measures_each_fetchers_link() {
    // 5 MiB, more than the 4 MiB a link needs to be known.
    let chunks = random_chunks(80, 64 * 1024, 3);
    let s = server(&chunks, None).await;
    let a = fetcher(true).await;
    make_members(&[&s, &a]).await;
    assert_eq!(s.client.link_rate(&a.peer), None);
    fetch_all(&a, &s, &chunks).await;
    let rate = s.client.link_rate(&a.peer).expect("measured");
    assert!(rate > 0.0, "{rate}");
    assert_eq!(s.client.compression_stats().peers, 1);
}
