//! The bulk endpoint: members fetch over it, strangers and removed members
//! get nothing, the client checks the server's PeerId, and fetches fall
//! back to libp2p-stream when the bulk endpoint cannot be reached.

use crate::common::*;
use filesyncd_p2p::{BulkConfig, FetchError, FetchPlan, Hash, P2pConfig, PeerId, Verified};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn random_chunks(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.gen::<u8>()).collect())
        .collect()
}

fn hashes(chunks: &[Vec<u8>]) -> Vec<Hash> {
    chunks.iter().map(|c| Hash::of_chunk(c)).collect()
}

fn config(bulk: BulkConfig) -> P2pConfig {
    P2pConfig {
        limits: test_limits(),
        bulk,
        ..loopback_config()
    }
}

fn quick_bulk() -> BulkConfig {
    BulkConfig {
        connect_timeout: Duration::from_secs(1),
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        ..BulkConfig::default()
    }
}

#[tokio::test]
async fn t10_member_fetches_over_bulk_streams() {
    let mut chunks = random_chunks(60, 64 * 1024, 11);
    chunks.extend((0..20).map(|i| format!("text {i} ").repeat(3000).into_bytes()));
    let store = Arc::new(MapProvider::with(&chunks));
    let a = plain_node().await;
    let b = node(test_limits(), store.clone(), None).await;
    make_members(&[&a, &b]).await;
    bulk_up(&a, &b).await;

    let want = hashes(&chunks);
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want.iter().copied()))
        .collect_all()
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    let got: HashMap<Hash, Vec<u8>> = got.into_iter().map(Verified::into_parts).collect();
    for c in &chunks {
        assert_eq!(got.get(&Hash::of_chunk(c)), Some(c));
    }
    let s = a.client.bulk_stats();
    assert_eq!(s.chunks_bulk, chunks.len() as u64, "{s:?}");
    assert_eq!(
        s.bytes_bulk,
        chunks.iter().map(|c| c.len() as u64).sum::<u64>()
    );
    assert_eq!(s.requests_libp2p, 0, "{s:?}");
    assert!(s.requests_bulk >= 3, "80 chunks in batches of 32: {s:?}");
    assert_eq!(b.client.bulk_stats().served_requests, s.requests_bulk);

    // Later fetches reuse the connection (and its idle streams).
    let (got, _) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want[..10].iter().copied()))
        .collect_all()
        .await;
    assert_eq!(got.len(), 10);
    let s = a.client.bulk_stats();
    assert_eq!(s.connects, 1, "{s:?}");
    assert_eq!(s.requests_libp2p, 0, "{s:?}");
    // Raft is untouched by all this.
    assert_eq!(
        a.client.raft_request(b.peer, b"x".to_vec()).await.unwrap(),
        b"raft:x"
    );
    assert!(s.local_addr.is_some() && s.recv_buffer > 0, "{s:?}");
}

#[tokio::test]
async fn t20_lying_server_over_bulk_is_charged() {
    let chunks = random_chunks(40, 4096, 12);
    let honest = Arc::new(MapProvider::with(&chunks));
    let a = plain_node().await;
    let b = node(test_limits(), honest.clone(), None).await;
    let liar = node(test_limits(), Arc::new(LyingProvider), None).await;
    make_members(&[&a, &b, &liar]).await;
    bulk_up(&a, &liar).await;
    bulk_up(&a, &b).await;

    let plan = FetchPlan::from_all(&[liar.peer, b.peer], hashes(&chunks));
    let (got, failed) = a.client.fetch_chunks(plan).collect_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(got.len(), chunks.len());
    assert!(a.client.peer_faults(&liar.peer).0 >= 1);
    assert_eq!(a.client.peer_faults(&b.peer), (0, false));
    assert_eq!(a.client.bulk_stats().requests_libp2p, 0);
}

#[tokio::test]
async fn t30_non_member_gets_nothing() {
    let chunks = random_chunks(8, 1000, 13);
    let store = Arc::new(MapProvider::with(&chunks));
    let a = node_with(config(quick_bulk()), Arc::new(MapProvider::default()), None).await;
    let b = node(test_limits(), store.clone(), None).await;
    // A takes B for a member; B does not know A.
    a.client
        .set_members([a.peer, b.peer].into_iter().collect())
        .await
        .unwrap();
    a.client
        .add_addresses(b.peer, vec![b.addr.clone()])
        .await
        .unwrap();
    b.client
        .set_members([b.peer].into_iter().collect())
        .await
        .unwrap();
    let b_bulk = b.client.bulk_stats().local_addr.unwrap();
    a.client.add_bulk_address(b.peer, b_bulk);
    eventually("the refused bulk handshake", || async {
        a.client.bulk_stats().connect_failures >= 1 && b.client.bulk_stats().refused >= 1
    })
    .await;
    assert!(a.client.bulk_peers().await.is_empty());

    let want = hashes(&chunks);
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want.iter().copied()))
        .collect_all()
        .await;
    assert!(got.is_empty());
    assert_eq!(failed.len(), want.len());
    assert!(failed.iter().all(|(_, e)| *e == FetchError::NoHolder));
    assert_eq!(store.calls.load(Ordering::Relaxed), 0, "nothing served");
    assert_eq!(b.client.bulk_stats().served_requests, 0);
}

#[tokio::test]
async fn t40_removed_member_is_cut_off() {
    let chunks = random_chunks(16, 8192, 14);
    let store = Arc::new(MapProvider::with(&chunks));
    let a = node_with(config(quick_bulk()), Arc::new(MapProvider::default()), None).await;
    let b = node(test_limits(), store.clone(), None).await;
    make_members(&[&a, &b]).await;
    bulk_up(&a, &b).await;
    let want = hashes(&chunks);
    let (got, _) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want[..8].iter().copied()))
        .collect_all()
        .await;
    assert_eq!(got.len(), 8);
    assert_eq!(a.client.bulk_stats().chunks_bulk, 8);

    // B removes A while A's bulk connection (and its idle streams) is up.
    b.client
        .set_members([b.peer].into_iter().collect::<HashSet<PeerId>>())
        .await
        .unwrap();
    eventually("the bulk connection cut off", || async {
        b.client.bulk_stats().cut_off >= 1 && !a.client.bulk_peers().await.contains(&b.peer)
    })
    .await;
    let calls = store.calls.load(Ordering::Relaxed);
    let served = b.client.bulk_stats().served_requests;

    // A still takes B for a member: its fetches get nothing, on either path.
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want[8..].iter().copied()))
        .collect_all()
        .await;
    assert!(got.is_empty());
    assert_eq!(failed.len(), 8);
    assert_eq!(store.calls.load(Ordering::Relaxed), calls);
    assert_eq!(b.client.bulk_stats().served_requests, served);
    // Its later bulk dials are refused at the handshake.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want[8..9].iter().copied()))
        .collect_all()
        .await;
    assert!(!a.client.bulk_peers().await.contains(&b.peer));
    assert_eq!(store.calls.load(Ordering::Relaxed), calls);
}

#[tokio::test]
async fn t50_server_with_another_peer_id_is_refused() {
    let chunks = random_chunks(8, 2000, 15);
    let store = Arc::new(MapProvider::with(&chunks));
    let a = node_with(config(quick_bulk()), Arc::new(MapProvider::default()), None).await;
    // B has no bulk endpoint; C's answers at the address A is given for B.
    let b = node_with(
        config(BulkConfig {
            enabled: false,
            ..BulkConfig::default()
        }),
        store.clone(),
        None,
    )
    .await;
    let c = plain_node().await;
    make_members(&[&a, &b, &c]).await;
    a.client
        .add_bulk_address(b.peer, c.client.bulk_stats().local_addr.unwrap());
    eventually("the refused dial", || async {
        a.client.bulk_stats().connect_failures >= 1
    })
    .await;
    assert!(!a.client.bulk_peers().await.contains(&b.peer));
    assert_eq!(c.client.bulk_stats().served_requests, 0);

    // B's chunks still come, over libp2p-stream.
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], hashes(&chunks)))
        .collect_all()
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(got.len(), chunks.len());
    let s = a.client.bulk_stats();
    assert_eq!((s.chunks_bulk, s.requests_bulk), (0, 0), "{s:?}");
    assert!(s.requests_libp2p >= 1);
    assert_eq!(b.client.bulk_stats().local_addr, None);
}

#[tokio::test]
async fn t60_closed_bulk_port_falls_back_to_libp2p() {
    let chunks = random_chunks(40, 16 * 1024, 16);
    let store = Arc::new(MapProvider::with(&chunks));
    let a = node_with(config(quick_bulk()), Arc::new(MapProvider::default()), None).await;
    // B announces a port nothing listens on.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let b = node_with(
        config(BulkConfig {
            advertise_port: Some(closed),
            ..BulkConfig::default()
        }),
        store.clone(),
        None,
    )
    .await;
    assert_eq!(b.client.bulk_stats().advertised_port, Some(closed));
    make_members(&[&a, &b]).await;
    a.client.raft_request(b.peer, b"w".to_vec()).await.unwrap();

    // The fetch does not wait for the bulk dial.
    let want = hashes(&chunks);
    let t0 = Instant::now();
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want.iter().copied()))
        .collect_all()
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(got.len(), chunks.len());
    assert!(t0.elapsed() < Duration::from_secs(5));
    eventually("the failed bulk dial", || async {
        a.client.bulk_stats().connect_failures >= 1
    })
    .await;
    // And keeps working while the dial backs off and is retried.
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], want.iter().copied()))
        .collect_all()
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(got.len(), chunks.len());
    let s = a.client.bulk_stats();
    assert_eq!(s.chunks_bulk, 0, "{s:?}");
    assert!(s.requests_libp2p >= 2, "{s:?}");
    assert!(a.client.bulk_peers().await.is_empty());
}

#[tokio::test]
async fn t70_shutdown_closes_the_bulk_endpoint() {
    let chunks = random_chunks(4, 1000, 17);
    let a = plain_node().await;
    let b = node(test_limits(), Arc::new(MapProvider::with(&chunks)), None).await;
    make_members(&[&a, &b]).await;
    bulk_up(&a, &b).await;
    b.client.shutdown().await;
    eventually("a's bulk connection closed", || async {
        !a.client.bulk_peers().await.contains(&b.peer)
    })
    .await;
}
