use crate::common::*;
use filesyncd_p2p::{JoinError, RejectReason, Token};
use std::sync::Arc;
use std::time::Duration;

async fn member_with(verifier: Arc<TestVerifier>) -> Node {
    let a = node(
        test_limits(),
        Arc::new(MapProvider::default()),
        Some(verifier),
    )
    .await;
    a.client
        .set_members([a.peer].into_iter().collect())
        .await
        .unwrap();
    a
}

fn host_port(n: &Node) -> String {
    let mut ip = None;
    let mut port = None;
    for p in n.addr.iter() {
        match p {
            libp2p::multiaddr::Protocol::Ip4(a) => ip = Some(a),
            libp2p::multiaddr::Protocol::Udp(p) => port = Some(p),
            _ => {}
        }
    }
    format!("{}:{}", ip.unwrap(), port.unwrap())
}

#[tokio::test]
async fn valid_token_joins_then_becomes_a_full_member() {
    let verifier = Arc::new(TestVerifier::new(b"cluster-info"));
    let token = Token::generate();
    verifier.add(&token, Duration::from_secs(60));
    let a = member_with(verifier.clone()).await;
    let j = plain_node().await;

    // Oversized application info is refused before anything is sent.
    let big = vec![0u8; filesyncd_p2p::protocol::MAX_JOIN_INFO + 1];
    let err = j
        .client
        .join_with(&host_port(&a), &token, big)
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::Protocol(_)), "{err:?}");
    assert!(verifier.admitted.lock().unwrap().is_empty());

    let joined = j
        .client
        .join_with(&host_port(&a), &token, b"node-7".to_vec())
        .await
        .unwrap();
    assert_eq!(joined.member, a.peer);
    assert_eq!(joined.payload, b"cluster-info");
    let admitted = verifier.admitted.lock().unwrap().clone();
    assert_eq!(admitted.len(), 1);
    assert_eq!(admitted[0].peer, j.peer);
    assert_eq!(admitted[0].token_id, token.id());
    assert_eq!(admitted[0].info, b"node-7");
    assert!(admitted[0].listen_addrs.contains(&j.addr));

    // The app records the member (via Raft) on both sides: full rights.
    make_members(&[&a, &j]).await;
    assert_eq!(
        j.client.raft_request(a.peer, b"hi".to_vec()).await.unwrap(),
        b"raft:hi"
    );
    assert_eq!(
        a.client.raft_request(j.peer, b"yo".to_vec()).await.unwrap(),
        b"raft:yo"
    );
}

#[tokio::test]
async fn bad_expired_and_reused_tokens_are_refused() {
    let verifier = Arc::new(TestVerifier::new(b"info"));
    let good = Token::generate();
    let expired = Token::generate();
    verifier.add(&good, Duration::from_secs(60));
    verifier.add_expired(&expired);
    let a = member_with(verifier.clone()).await;
    let addr = host_port(&a);

    // Right id, wrong secret.
    let forged = Token::parse(&format!("{}.0000000000000000", good.id())).unwrap();
    let j1 = plain_node().await;
    let err = j1.client.join(&addr, &forged).await.unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Rejected {
                reason: RejectReason::BadToken,
                ..
            }
        ),
        "{err:?}"
    );
    // Unknown id: same answer, no oracle.
    let err = j1.client.join(&addr, &Token::generate()).await.unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Rejected {
                reason: RejectReason::BadToken,
                ..
            }
        ),
        "{err:?}"
    );

    let err = j1.client.join(&addr, &expired).await.unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Rejected {
                reason: RejectReason::Expired,
                ..
            }
        ),
        "{err:?}"
    );

    j1.client.join(&addr, &good).await.unwrap();
    let j2 = plain_node().await;
    let err = j2.client.join(&addr, &good).await.unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Rejected {
                reason: RejectReason::Used,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(verifier.admitted.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn node_without_verifier_answers_unavailable() {
    let a = plain_node().await;
    let j = plain_node().await;
    let err = j
        .client
        .join(&a.addr.to_string(), &Token::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Rejected {
                reason: RejectReason::Unavailable,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreachable_member_is_a_dial_error() {
    let j = plain_node().await;
    // A port nobody listens on (ours, closed): the dial must fail.
    let dead = plain_node().await;
    let addr = host_port(&dead);
    dead.client.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        j.client.join(&addr, &Token::generate()),
    )
    .await
    .expect("join gives up by itself")
    .unwrap_err();
    assert!(matches!(err, JoinError::Dial(_)), "{err:?}");
    let err = j
        .client
        .join("no port here", &Token::generate())
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::Address(_)), "{err:?}");
}

#[tokio::test]
async fn join_requests_are_rate_limited_per_source_address_whatever_the_peer_id() {
    let verifier = Arc::new(TestVerifier::new(b"info"));
    let limits = filesyncd_p2p::Limits {
        join_burst: 4,
        join_requests_per_sec: 0.0,
        ..test_limits()
    };
    let a = node(
        limits,
        Arc::new(MapProvider::default()),
        Some(verifier.clone()),
    )
    .await;
    a.client
        .set_members([a.peer].into_iter().collect())
        .await
        .unwrap();
    let bad = Token::generate(); // unknown: each attempt is Hello + Proof
    let mut answers = Vec::new();
    // Fresh identities from the same address: the PeerId ban does not see them.
    for _ in 0..6 {
        let j = plain_node().await;
        let err = j
            .client
            .join_with(&host_port(&a), &bad, b"x".to_vec())
            .await
            .unwrap_err();
        answers.push(err);
    }
    let limited = |e: &JoinError| {
        matches!(e, JoinError::Rejected { reason: RejectReason::Unavailable, hint }
            if String::from_utf8_lossy(hint).contains("too many join attempts"))
    };
    // Each attempt is two requests (Hello, then a Proof refused as
    // BadToken): two answers about the token, then the budget is spent.
    assert!(
        answers[..2].iter().all(|e| matches!(
            e,
            JoinError::Rejected {
                reason: RejectReason::BadToken,
                ..
            }
        )),
        "{answers:?}"
    );
    assert!(answers[2..].iter().all(limited), "{answers:?}");
    // A good token does not help once the budget is spent.
    let good = Token::generate();
    verifier.add(&good, Duration::from_secs(60));
    let j = plain_node().await;
    let err = j
        .client
        .join_with(&host_port(&a), &good, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(limited(&err), "{err:?}");
    assert!(verifier.admitted.lock().unwrap().is_empty());
}
