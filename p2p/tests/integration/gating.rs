use crate::common::*;
use filesyncd_p2p::{FetchError, FetchPlan, Hash, RequestError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn stranger_cannot_use_member_protocols() {
    let chunk = b"members only".to_vec();
    let a = node(
        test_limits(),
        Arc::new(MapProvider::with(std::slice::from_ref(&chunk))),
        None,
    )
    .await;
    let b = plain_node().await;
    make_members(&[&a, &b]).await;
    // The stranger believes A is a member; A does not list it.
    let s = plain_node().await;
    s.client
        .set_members([s.peer, a.peer].into_iter().collect())
        .await
        .unwrap();
    s.client
        .add_addresses(a.peer, vec![a.addr.clone()])
        .await
        .unwrap();

    let err = s
        .client
        .raft_request(a.peer, b"vote for me".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Refused), "{err:?}");
    let err = s
        .client
        .ctl_request(a.peer, b"hi".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Refused), "{err:?}");

    let (got, failed) = s
        .client
        .fetch_chunks(FetchPlan::from_all(&[a.peer], [Hash::of_chunk(&chunk)]))
        .collect_all()
        .await;
    assert!(got.is_empty());
    assert_eq!(failed, vec![(Hash::of_chunk(&chunk), FetchError::NoHolder)]);

    // Nothing reached A's application; members still work.
    assert!(a.received.lock().unwrap().is_empty());
    assert_eq!(
        b.client.raft_request(a.peer, b"x".to_vec()).await.unwrap(),
        b"raft:x"
    );
}

#[tokio::test]
async fn requests_to_non_members_fail_locally() {
    let a = plain_node().await;
    let b = plain_node().await;
    let err = a
        .client
        .raft_request(b.peer, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::NotMember(p) if p == b.peer),
        "{err:?}"
    );
}

#[tokio::test]
async fn removed_member_is_disconnected_and_refused() {
    let a = plain_node().await;
    let b = plain_node().await;
    make_members(&[&a, &b]).await;
    assert_eq!(
        b.client.raft_request(a.peer, b"1".to_vec()).await.unwrap(),
        b"raft:1"
    );

    a.client
        .set_members([a.peer].into_iter().collect::<HashSet<_>>())
        .await
        .unwrap();
    // A closed the connection: B sees it go.
    let mut gone = false;
    for _ in 0..100 {
        if !b.client.connected_peers().await.unwrap().contains(&a.peer) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "A did not disconnect the removed member");

    // B still thinks A is a member and redials: A refuses the connection.
    // (Depending on timing: the dial fails, or the handshake completes and A
    // closes the connection at once.)
    let err = b
        .client
        .raft_request(a.peer, b"2".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::DialFailure | RequestError::ConnectionClosed | RequestError::Io(_)
        ),
        "{err:?}"
    );
    assert_eq!(a.received.lock().unwrap().len(), 1);

    // Re-adding lets it back in.
    make_members(&[&a, &b]).await;
    let mut ok = false;
    for _ in 0..20 {
        if b.client.raft_request(a.peer, b"3".to_vec()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "re-added member cannot talk again");
}

#[tokio::test]
async fn oversized_request_fails_alone_other_streams_unharmed() {
    // A may send 32 MiB, B accepts only 1 MiB.
    let big_sender = filesyncd_p2p::Limits {
        max_raft_request: 32 << 20,
        ..test_limits()
    };
    let small_receiver = filesyncd_p2p::Limits {
        max_raft_request: 1 << 20,
        ..test_limits()
    };
    let a = node(big_sender, Arc::new(MapProvider::default()), None).await;
    let b = node(small_receiver, Arc::new(MapProvider::default()), None).await;
    make_members(&[&a, &b]).await;
    // Warm the connection so both requests share it.
    assert_eq!(
        a.client.raft_request(b.peer, b"w".to_vec()).await.unwrap(),
        b"raft:w"
    );
    let conns_before = a.client.connected_peers().await.unwrap();

    let big = a.client.raft_request(b.peer, vec![7u8; 4 << 20]);
    let small = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        a.client.raft_request(b.peer, b"heartbeat".to_vec()).await
    };
    let (big, small) = tokio::join!(big, small);
    assert!(big.is_err(), "an over-cap request must fail");
    assert_eq!(small.unwrap(), b"raft:heartbeat");
    // The connection survived: still connected, still usable.
    assert_eq!(a.client.connected_peers().await.unwrap(), conns_before);
    assert_eq!(
        a.client
            .raft_request(b.peer, b"after".to_vec())
            .await
            .unwrap(),
        b"raft:after"
    );
    // Local cap: refused before sending.
    let err = a
        .client
        .raft_request(b.peer, vec![0u8; 33 << 20])
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::TooLarge { .. }), "{err:?}");
}
