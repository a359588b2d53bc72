use crate::common::*;
use filesyncd_p2p::{FetchError, FetchPlan, Hash, Limits, Verified};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn random_chunks(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.gen::<u8>()).collect())
        .collect()
}

fn text_chunks(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!("line {i} of a very compressible file\n")
                .repeat(500)
                .into_bytes()
        })
        .collect()
}

#[tokio::test]
async fn chunks_fetched_verified_and_spread_over_holders() {
    let mut chunks = random_chunks(40, 64 * 1024, 1);
    chunks.extend(text_chunks(24));
    let b_store = Arc::new(MapProvider::with(&chunks));
    let c_store = Arc::new(MapProvider::with(&chunks));
    let a = plain_node().await;
    let b = node(test_limits(), b_store.clone(), None).await;
    let c = node(test_limits(), c_store.clone(), None).await;
    make_members(&[&a, &b, &c]).await;

    let hashes: Vec<Hash> = chunks.iter().map(|c| Hash::of_chunk(c)).collect();
    let missing = Hash::of_chunk(b"nobody has this");
    let mut plan = FetchPlan::from_all(&[b.peer, c.peer], hashes.iter().copied());
    plan.want(missing, [b.peer, c.peer]);
    let (got, failed) = a.client.fetch_chunks(plan).collect_all().await;

    let got: HashMap<Hash, Vec<u8>> = got.into_iter().map(Verified::into_parts).collect();
    assert_eq!(got.len(), chunks.len());
    for c in &chunks {
        assert_eq!(got.get(&Hash::of_chunk(c)), Some(c));
    }
    assert_eq!(failed, vec![(missing, FetchError::NoHolder)]);
    // Both holders served (64 chunks in batches of 32 over 2 peers).
    assert!(b_store.calls.load(Ordering::Relaxed) > 0);
    assert!(c_store.calls.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn lying_peer_is_charged_and_chunks_refetched_elsewhere() {
    let chunks = random_chunks(100, 4096, 2);
    let honest = Arc::new(MapProvider::with(&chunks));
    let limits = Limits {
        fetch_batch: 8,
        ..test_limits()
    };
    let a = node(limits, Arc::new(MapProvider::default()), None).await;
    let b = node(test_limits(), honest.clone(), None).await;
    let liar = node(test_limits(), Arc::new(LyingProvider), None).await;
    make_members(&[&a, &b, &liar]).await;

    let hashes: Vec<Hash> = chunks.iter().map(|c| Hash::of_chunk(c)).collect();
    // List the liar first so it is surely asked.
    let plan = FetchPlan::from_all(&[liar.peer, b.peer], hashes.iter().copied());
    let (got, failed) = a.client.fetch_chunks(plan).collect_all().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(got.len(), chunks.len());
    for c in &got {
        assert_eq!(Hash::of_chunk(c.bytes()), c.hash());
        assert!(hashes.contains(&c.hash()));
    }
    let (faults, banned) = a.client.peer_faults(&liar.peer);
    assert!(faults >= 1, "the liar was never charged");
    assert_eq!(a.client.peer_faults(&b.peer), (0, false));
    // A second fetch after the ban goes straight to the honest peer.
    if banned {
        let before = honest.calls.load(Ordering::Relaxed);
        let plan = FetchPlan::from_all(&[liar.peer, b.peer], hashes[..10].iter().copied());
        let (got, failed) = a.client.fetch_chunks(plan).collect_all().await;
        assert_eq!((got.len(), failed.len()), (10, 0));
        assert_eq!(honest.calls.load(Ordering::Relaxed) - before, 10);
    }
}

#[tokio::test]
async fn oversized_chunk_is_refused_and_connection_survives() {
    // B serves a 2 MiB chunk; A accepts at most 1 MiB per chunk.
    let big = random_chunks(1, 2 << 20, 3).remove(0);
    let small = random_chunks(1, 1000, 4).remove(0);
    let b = node(
        test_limits(),
        Arc::new(MapProvider::with(&[big.clone(), small.clone()])),
        None,
    )
    .await;
    let a = node(
        Limits {
            max_chunk_len: 1 << 20,
            ..test_limits()
        },
        Arc::new(MapProvider::default()),
        None,
    )
    .await;
    make_members(&[&a, &b]).await;
    assert_eq!(
        a.client.raft_request(b.peer, b"w".to_vec()).await.unwrap(),
        b"raft:w"
    );

    let fetch = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], [Hash::of_chunk(&big)]))
        .collect_all();
    let raft = a.client.raft_request(b.peer, b"heartbeat".to_vec());
    let ((got, failed), raft) = tokio::join!(fetch, raft);
    assert!(got.is_empty());
    assert_eq!(failed, vec![(Hash::of_chunk(&big), FetchError::NoHolder)]);
    assert_eq!(raft.unwrap(), b"raft:heartbeat");
    assert_eq!(a.client.peer_faults(&b.peer).0, 1);
    // Same connection still serves chunks that fit.
    let (got, failed) = a
        .client
        .fetch_chunks(FetchPlan::from_all(&[b.peer], [Hash::of_chunk(&small)]))
        .collect_all()
        .await;
    assert!(failed.is_empty());
    assert_eq!(got[0].bytes(), &small[..]);
}
