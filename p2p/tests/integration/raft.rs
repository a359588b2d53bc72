use futures::FutureExt;

use crate::common::*;

#[tokio::test]
async fn members_exchange_raft_and_ctl_bytes_both_ways() {
    let a = plain_node().await;
    let b = plain_node().await;
    make_members(&[&a, &b]).await;

    let resp = a
        .client
        .raft_request(b.peer, b"append".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, b"raft:append");
    let resp = b
        .client
        .raft_request(a.peer, b"vote".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, b"raft:vote");
    let resp = a
        .client
        .ctl_request(b.peer, b"offer".to_vec())
        .await
        .unwrap();
    assert_eq!(resp, b"ctl:offer");
    assert_eq!(b.received.lock().unwrap().as_slice(), &[a.peer, a.peer]);
}

#[tokio::test]
async fn many_concurrent_requests_all_answered() {
    let a = plain_node().await;
    let b = plain_node().await;
    make_members(&[&a, &b]).await;
    let reqs = (0..50u32).map(|i| {
        let c = a.client.clone();
        async move { c.raft_request(b.peer, i.to_le_bytes().to_vec()).await }
    });
    let out = futures::future::join_all(reqs).await;
    for (i, r) in out.into_iter().enumerate() {
        let mut want = b"raft:".to_vec();
        want.extend_from_slice(&(i as u32).to_le_bytes());
        assert_eq!(r.unwrap(), want);
    }
}

#[tokio::test]
async fn dial_by_host_and_port() {
    let a = plain_node().await;
    let b = plain_node().await;
    let port = b
        .addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    // A DNS name, resolved by the DNS transport (as compose service names are).
    let peer = a.client.dial(&format!("localhost:{port}")).await.unwrap();
    assert_eq!(peer, b.peer);
    let peer = a.client.dial(&format!("127.0.0.1:{port}")).await.unwrap();
    assert_eq!(peer, b.peer);
}

/// A member whose address book entry is a DNS name (a record written from
/// `--advertise nas.lan:7400`, or a compose service) is dialed by that name,
/// resolved at dial time, when a request goes to it.
#[tokio::test]
async fn a_member_known_by_a_dns_name_is_dialed_by_it() {
    let a = plain_node().await;
    let b = plain_node().await;
    let port = b
        .addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let set: std::collections::HashSet<_> = [a.peer, b.peer].into_iter().collect();
    a.client.set_members(set.clone()).await.unwrap();
    b.client.set_members(set).await.unwrap();
    let by_name: libp2p::Multiaddr = format!("/dns4/localhost/udp/{port}/quic-v1")
        .parse()
        .unwrap();
    a.client.add_addresses(b.peer, vec![by_name]).await.unwrap();
    assert!(a.client.connected_peers().await.unwrap().is_empty());
    let resp = a.client.raft_request(b.peer, b"hi".to_vec()).await.unwrap();
    assert_eq!(resp, b"raft:hi");
    let paths = a.client.peer_paths().await.unwrap();
    assert_eq!(paths.get(&b.peer), Some(&filesyncd_p2p::PeerPath::Direct));
}

/// Raft and ctl requests in flight together, to one peer: each answer goes
/// to its own caller. (Each request-response behaviour numbers its requests
/// from 1; keyed by id alone, a raft answer went to the ctl request with the
/// same id, and the raft caller saw "the p2p event loop has stopped".)
#[tokio::test]
async fn concurrent_raft_and_ctl_requests_with_equal_ids_are_kept_apart() {
    let a = plain_node().await;
    let b = plain_node().await;
    make_members(&[&a, &b]).await;
    let raft = (0..40u32).map(|i| {
        let c = a.client.clone();
        async move {
            (
                true,
                i,
                c.raft_request(b.peer, i.to_le_bytes().to_vec()).await,
            )
        }
        .boxed()
    });
    let ctl = (0..40u32).map(|i| {
        let c = a.client.clone();
        async move {
            (
                false,
                i,
                c.ctl_request(b.peer, i.to_le_bytes().to_vec()).await,
            )
        }
        .boxed()
    });
    let out = futures::future::join_all(raft.chain(ctl)).await;
    for (is_raft, i, r) in out {
        let mut want = if is_raft {
            b"raft:".to_vec()
        } else {
            b"ctl:".to_vec()
        };
        want.extend_from_slice(&i.to_le_bytes());
        assert_eq!(r.expect("answered"), want, "raft={is_raft} #{i}");
    }
}
