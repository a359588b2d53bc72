//! Helpers: start nodes, wire them as members, answer requests, test hooks.

use filesyncd_p2p::{
    start, ChunkProvider, Hash, JoinApplication, JoinVerifier, Keypair, Limits, Multiaddr,
    P2pClient, P2pConfig, P2pEvent, PeerId, RejectReason, Rejection, Services, TokenHash,
};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct Node {
    pub client: P2pClient,
    pub peer: PeerId,
    pub addr: Multiaddr,
    /// Raft/ctl requests this node received, by sender.
    pub received: Arc<Mutex<Vec<PeerId>>>,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn node(
    limits: Limits,
    chunks: Arc<dyn ChunkProvider>,
    verifier: Option<Arc<dyn JoinVerifier>>,
) -> Node {
    let config = P2pConfig {
        limits,
        ..loopback_config()
    };
    node_with(config, chunks, verifier).await
}

/// A default config listening on 127.0.0.1 (random port).
pub fn loopback_config() -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        ..P2pConfig::default()
    }
}

pub async fn node_with(
    config: P2pConfig,
    chunks: Arc<dyn ChunkProvider>,
    verifier: Option<Arc<dyn JoinVerifier>>,
) -> Node {
    init_tracing();
    let keypair = Keypair::generate_ed25519();
    let (client, events) = start(
        keypair,
        config,
        Services {
            chunks,
            join_verifier: verifier,
        },
    )
    .await
    .expect("node starts");
    let addr = client.listen_addrs().await.unwrap()[0].clone();
    let received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(answer(events, received.clone()));
    Node {
        peer: client.local_peer_id(),
        client,
        addr,
        received,
    }
}

pub async fn plain_node() -> Node {
    node(Limits::default(), Arc::new(MapProvider::default()), None).await
}

/// Answers every Raft request with `raft:` + bytes and ctl with `ctl:` + bytes.
async fn answer(mut events: mpsc::Receiver<P2pEvent>, received: Arc<Mutex<Vec<PeerId>>>) {
    while let Some(ev) = events.recv().await {
        match ev {
            P2pEvent::RaftRequest { peer, bytes, reply } => {
                received.lock().unwrap().push(peer);
                let mut out = b"raft:".to_vec();
                out.extend_from_slice(&bytes[..bytes.len().min(64)]);
                let _ = reply.send(out);
            }
            P2pEvent::CtlRequest { peer, bytes, reply } => {
                received.lock().unwrap().push(peer);
                let mut out = b"ctl:".to_vec();
                out.extend_from_slice(&bytes);
                let _ = reply.send(out);
            }
            _ => {}
        }
    }
}

/// Makes every node a member of every other and tells each where the others are.
pub async fn make_members(nodes: &[&Node]) {
    let set: HashSet<PeerId> = nodes.iter().map(|n| n.peer).collect();
    for n in nodes {
        n.client.set_members(set.clone()).await.unwrap();
        for m in nodes {
            if m.peer != n.peer {
                n.client
                    .add_addresses(m.peer, vec![m.addr.clone()])
                    .await
                    .unwrap();
            }
        }
    }
}

/// Serves chunks from a map.
#[derive(Default)]
pub struct MapProvider {
    pub chunks: Mutex<HashMap<Hash, Vec<u8>>>,
    pub calls: AtomicUsize,
}

impl MapProvider {
    pub fn with(chunks: &[Vec<u8>]) -> MapProvider {
        let p = MapProvider::default();
        for c in chunks {
            p.chunks
                .lock()
                .unwrap()
                .insert(Hash::of_chunk(c), c.clone());
        }
        p
    }
}

impl ChunkProvider for MapProvider {
    fn get(&self, hash: &Hash) -> Option<Vec<u8>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.chunks.lock().unwrap().get(hash).cloned()
    }
}

/// Claims to hold everything and serves garbage.
pub struct LyingProvider;

impl ChunkProvider for LyingProvider {
    fn get(&self, hash: &Hash) -> Option<Vec<u8>> {
        let mut junk = hash.as_bytes().to_vec();
        junk.extend_from_slice(b"not the chunk you asked for");
        Some(junk)
    }
}

/// A token store with expiry and single use, as the app would keep in Raft.
pub struct TestVerifier {
    tokens: Mutex<HashMap<String, (TokenHash, Instant, bool)>>,
    pub payload: Vec<u8>,
    pub admitted: Mutex<Vec<JoinApplication>>,
}

impl TestVerifier {
    pub fn new(payload: &[u8]) -> TestVerifier {
        TestVerifier {
            tokens: Mutex::new(HashMap::new()),
            payload: payload.to_vec(),
            admitted: Mutex::new(Vec::new()),
        }
    }

    pub fn add(&self, token: &filesyncd_p2p::Token, ttl: Duration) {
        self.tokens.lock().unwrap().insert(
            token.id().to_owned(),
            (token.hash(), Instant::now() + ttl, false),
        );
    }

    pub fn add_expired(&self, token: &filesyncd_p2p::Token) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.id().to_owned(), (token.hash(), Instant::now(), false));
    }
}

impl JoinVerifier for TestVerifier {
    fn token_hash(&self, token_id: &str) -> BoxFuture<'_, Result<TokenHash, Rejection>> {
        let found = self.tokens.lock().unwrap().get(token_id).map(|t| t.0);
        Box::pin(async move { found.ok_or(Rejection::new(RejectReason::BadToken)) })
    }

    fn admit(&self, joiner: JoinApplication) -> BoxFuture<'_, Result<Vec<u8>, Rejection>> {
        let verdict = {
            let mut tokens = self.tokens.lock().unwrap();
            match tokens.get_mut(&joiner.token_id) {
                None => Err(Rejection::new(RejectReason::BadToken)),
                Some((_, expiry, _)) if *expiry <= Instant::now() => {
                    Err(Rejection::new(RejectReason::Expired))
                }
                Some((_, _, used)) if *used => Err(Rejection::new(RejectReason::Used)),
                Some((_, _, used)) => {
                    *used = true;
                    Ok(self.payload.clone())
                }
            }
        };
        if verdict.is_ok() {
            self.admitted.lock().unwrap().push(joiner);
        }
        Box::pin(async move { verdict })
    }
}

/// Small limits so tests stay fast.
pub fn test_limits() -> Limits {
    Limits {
        raft_timeout: Duration::from_secs(10),
        chunk_io_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// Polls `f` every 50 ms for up to 15 s.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `from` has a bulk connection to `to`.
pub async fn bulk_up(from: &Node, to: &Node) {
    // A member connection carries identify, which announces the bulk port.
    from.client
        .raft_request(to.peer, b"hello".to_vec())
        .await
        .unwrap();
    eventually("a bulk connection", || async {
        from.client.bulk_peers().await.contains(&to.peer)
    })
    .await;
}
