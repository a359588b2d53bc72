//! The file routes over HTTP, against a real single-node Raft (on a p2p
//! swarm bound to loopback) and a sync handle whose "peers" are an
//! in-memory [`FakeRemote`]: the content of every committed version lives
//! only there until a restore fetches it.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use filesyncd_chunkstore::chunker::{chunk_and_hash_with, ChunkerParams};
use filesyncd_chunkstore::store::MemChunkStore;
use filesyncd_merkle::{build, ChunkEntry, Hash, MemNodeStore};
use filesyncd_p2p::{ChunkProvider, P2pClient, P2pConfig, Services};
use filesyncd_raft::command::{Op, Outcome, PutKind, Retention, Version};
use filesyncd_raft::config::RaftConfig;
use filesyncd_raft::node::RaftNode;
use filesyncd_raft::NodeInfo;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::types::*;
use crate::api::client::{self, ClientError};
use crate::api::types::Status;
use crate::api::ApiState;
use crate::daemon::sync::{RemoteChunks, SyncCommand, SyncHandle, SyncStatus};
use crate::daemon::transport::P2pTransport;
use crate::daemon::Node;

/// The holder every test version names.
const PEER: u64 = 99;

struct NoChunks;

impl ChunkProvider for NoChunks {
    fn get(&self, _: &Hash) -> Option<Vec<u8>> {
        None
    }
}

/// Peers holding chunks and tree nodes, answering like the network:
/// unverified (`corrupt` flips a byte of every chunk it sends).
#[derive(Default)]
struct FakeRemote {
    chunks: Mutex<HashMap<Hash, Vec<u8>>>,
    nodes: Mutex<HashMap<Hash, Vec<u8>>>,
    corrupt: AtomicBool,
    chunk_calls: AtomicUsize,
}

impl RemoteChunks for FakeRemote {
    fn chunks(
        &self,
        holders: Vec<u64>,
        hashes: Vec<Hash>,
    ) -> BoxFuture<'_, Result<Vec<(Hash, Vec<u8>)>, String>> {
        self.chunk_calls.fetch_add(1, Ordering::SeqCst);
        let corrupt = self.corrupt.load(Ordering::SeqCst);
        let map = self.chunks.lock().unwrap().clone();
        Box::pin(async move {
            if !holders.contains(&PEER) {
                return Err("no holder reachable".into());
            }
            Ok(hashes
                .into_iter()
                .filter_map(|h| {
                    let mut d = map.get(&h)?.clone();
                    if corrupt {
                        d[0] ^= 1;
                    }
                    Some((h, d))
                })
                .collect())
        })
    }

    fn nodes(
        &self,
        _holders: Vec<u64>,
        hashes: Vec<Hash>,
    ) -> BoxFuture<'_, Result<Vec<(Hash, Vec<u8>)>, String>> {
        let map = self.nodes.lock().unwrap().clone();
        Box::pin(async move {
            Ok(hashes
                .into_iter()
                .filter_map(|h| Some((h, map.get(&h)?.clone())))
                .collect())
        })
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    tmp: PathBuf,
    root: PathBuf,
    node: Node,
    client: P2pClient,
    remote: Arc<FakeRemote>,
    status: watch::Sender<SyncStatus>,
    /// Commands the sync task stand-in does not handle itself.
    commands: Option<mpsc::Receiver<SyncCommand>>,
    /// Effects the sync task stand-in ran.
    effects: Arc<AtomicU64>,
    api: String,
}

async fn start_node(data: &Path) -> (Node, P2pClient) {
    let (node_id, _) = filesyncd_raft::node_id::load_or_create(data).unwrap();
    let identity = filesyncd_p2p::load_or_create(data).unwrap();
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        ..P2pConfig::default()
    };
    let services = Services {
        chunks: Arc::new(NoChunks),
        join_verifier: None,
    };
    let (client, _events) = filesyncd_p2p::start(identity.keypair, config, services)
        .await
        .unwrap();
    let transport = Arc::new(P2pTransport::new(client.clone()));
    let node: Node = RaftNode::open(data.join("raft"), node_id, RaftConfig::default(), transport)
        .await
        .unwrap();
    node.initialize_single(NodeInfo {
        peer_id: identity.peer_id.to_string(),
        addr: "/ip4/127.0.0.1/udp/9/quic-v1".into(),
    })
    .await
    .unwrap();
    let mut m = node.metrics_watch();
    tokio::time::timeout(
        Duration::from_secs(120),
        m.wait_for(|m| m.current_leader == Some(node_id)),
    )
    .await
    .expect("no leader in time")
    .unwrap();
    let init = node
        .propose(vec![Op::InitCluster {
            cluster_id: "test-cluster".into(),
            chunker: ChunkerParams::default(),
            retention: Retention::default(),
        }])
        .await
        .unwrap();
    assert!(matches!(
        init.response.outcomes().first(),
        Some(Outcome::Applied { .. })
    ));
    (node, client)
}

/// The sync task's part: runs effects one at a time (counting them) and
/// hands every other command to the test.
fn sync_task(
    mut commands: mpsc::Receiver<SyncCommand>,
    effects: Arc<AtomicU64>,
) -> mpsc::Receiver<SyncCommand> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(c) = commands.recv().await {
            match c {
                SyncCommand::Effect(e) => {
                    effects.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::task::spawn_blocking(move || e.run()).await;
                }
                other => {
                    if tx.send(other).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

async fn serve(state: ApiState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(crate::api::serve(listener, state, std::future::pending()));
    addr
}

impl Fixture {
    async fn new() -> Fixture {
        let tmp_dir = tempfile::tempdir().unwrap();
        let tmp = tmp_dir.path().canonicalize().unwrap();
        let root = tmp.join("sync");
        std::fs::create_dir(&root).unwrap();
        let (node, client) = start_node(&tmp.join("data")).await;
        let remote = Arc::new(FakeRemote::default());
        let store = Arc::new(MemChunkStore::new(&root));
        let (status, status_rx) = watch::channel(SyncStatus::default());
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let effects = Arc::new(AtomicU64::new(0));
        let cmd_rx = sync_task(cmd_rx, effects.clone());
        let handle = SyncHandle {
            status: status_rx,
            commands: cmd_tx,
            root: root.clone(),
            store: store.clone(),
            nodes: Arc::new(Mutex::new(MemNodeStore::new())),
            remote: remote.clone(),
            transfers: Default::default(),
        };
        let state = ApiState::new(node.clone(), client.local_peer_id().to_string(), None)
            .with_sync(handle)
            .with_p2p(client.clone());
        let api = serve(state).await;
        Fixture {
            _tmp: tmp_dir,
            tmp,
            root,
            node,
            client,
            remote,
            status,
            commands: Some(cmd_rx),
            effects,
            api,
        }
    }

    /// Commits `content` at `path` (base `base`); its chunks and tree nodes
    /// are only on the fake peer. Returns the outcome.
    async fn put(&self, path: &str, content: &[u8], base: Option<Version>) -> Outcome {
        let chunker = ChunkerParams::default().validate().unwrap();
        let mut chunks: Vec<(Hash, Vec<u8>)> = Vec::new();
        let sink = |_: u64, e: &ChunkEntry, d: &[u8]| {
            chunks.push((e.hash, d.to_vec()));
            Ok::<(), std::convert::Infallible>(())
        };
        let fc =
            chunk_and_hash_with(std::io::Cursor::new(content.to_vec()), &chunker, sink).unwrap();
        let tree = build(&fc.entries);
        self.remote.chunks.lock().unwrap().extend(chunks);
        self.remote
            .nodes
            .lock()
            .unwrap()
            .extend(tree.nodes.iter().cloned());
        let p = self
            .node
            .propose(vec![Op::Put {
                path: path.into(),
                kind: PutKind::File,
                root: tree.root,
                size: tree.size,
                mode: 0o640,
                mtime_ns: 1_700_000_000_000_000_000,
                origin: self.node.id(),
                base,
                // The content is the remote's alone (this node's store lacks
                // it); this single voter is named too, as the apply wants a
                // majority of the voters among the holders.
                holders: vec![PEER, self.node.id()],
            }])
            .await
            .unwrap();
        p.response.outcomes()[0].clone()
    }

    async fn put_v(&self, path: &str, content: &[u8], base: Option<Version>) -> Version {
        match self.put(path, content, base).await {
            Outcome::Applied { version } => version,
            other => panic!("{other:?}"),
        }
    }

    /// One HTTP request; the body on 2xx, else the status and message.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<String, (u16, String)> {
        let (api, method, path) = (self.api.clone(), method.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || {
            client::call(&api, &method, &path, body.as_deref(), None)
        })
        .await
        .unwrap()
        .map_err(|e| match e {
            ClientError::Status { status, message } => (status, message),
            other => panic!("{other}"),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        serde_json::from_str(&self.call("GET", path, None).await.unwrap()).unwrap()
    }

    async fn restore(&self, req: RestoreRequest) -> Result<Restored, (u16, String)> {
        let body = serde_json::to_string(&req).unwrap();
        self.call("POST", "/restore", Some(body))
            .await
            .map(|b| serde_json::from_str(&b).unwrap())
    }

    async fn stop(self) {
        let _ = self.node.shutdown().await;
        self.client.shutdown().await;
    }
}

fn req(path: &str) -> RestoreRequest {
    RestoreRequest {
        path: path.into(),
        ..RestoreRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_history_and_restore() {
    let fx = Fixture::new().await;
    let a1 = b"first version of a\n".repeat(1000);
    let a2 = b"second version\n".repeat(5000);
    let v1 = fx.put_v("docs/a.txt", &a1, None).await;
    let v2 = fx.put_v("docs/a.txt", &a2, Some(v1)).await;
    fx.put_v("top.txt", b"top", None).await;

    // ls: an implicit directory, a file; a directory; a file lists itself.
    let root: LsAnswer = fx.get("/ls").await;
    let names: Vec<(&str, &str, bool)> = root
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.kind.as_str(), e.implicit))
        .collect();
    assert_eq!(names, [("docs", "dir", true), ("top.txt", "file", false)]);
    let docs: LsAnswer = fx.get("/ls?path=docs").await;
    assert_eq!(docs.entries.len(), 1);
    assert_eq!(docs.entries[0].path, "docs/a.txt");
    assert_eq!(docs.entries[0].size, a2.len() as u64);
    assert_eq!(docs.entries[0].index, Some(v2.index));
    let one: LsAnswer = fx.get("/ls?path=docs%2Fa.txt").await;
    assert_eq!(one.entries.len(), 1);
    let all: LsAnswer = fx.get("/ls?recursive=1").await;
    assert_eq!(all.entries.len(), 2);
    assert_eq!(
        fx.call("GET", "/ls?path=nope", None).await.unwrap_err().0,
        404
    );
    for bad in [
        "/ls?path=..%2Fx",
        "/ls?path=%2Fetc",
        "/ls?path=.filesyncd-marker",
    ] {
        assert_eq!(fx.call("GET", bad, None).await.unwrap_err().0, 400, "{bad}");
    }

    // history
    let h: HistoryAnswer = fx.get("/history?path=docs%2Fa.txt").await;
    let got: Vec<(u64, &str, bool)> = h
        .versions
        .iter()
        .map(|v| (v.index, v.state.as_str(), v.current))
        .collect();
    assert_eq!(
        got,
        [
            (v1.index, "committed", false),
            (v2.index, "committed", true)
        ]
    );
    assert_eq!(h.versions[0].size, Some(a1.len() as u64));
    assert_eq!(
        fx.call("GET", "/history?path=nope", None)
            .await
            .unwrap_err()
            .0,
        404
    );
    assert_eq!(
        fx.call("GET", "/history?path=a%2F..%2Fb", None)
            .await
            .unwrap_err()
            .0,
        400
    );

    // Restore the old version in place: fetched from the peer, verified.
    let r = fx
        .restore(RestoreRequest {
            version: Some(v1.index),
            ..req("docs/a.txt")
        })
        .await
        .unwrap();
    let file = fx.root.join("docs/a.txt");
    assert_eq!(std::fs::read(&file).unwrap(), a1);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(r.chunks_fetched > 0 && r.in_root && !r.unchanged && r.kept_as.is_none());
    assert_eq!((r.index, r.written.as_str()), (v1.index, "docs/a.txt"));
    assert_eq!(
        fx.effects.load(Ordering::SeqCst),
        1,
        "the restore ran on the sync task"
    );

    // The same again: nothing to do.
    let again = fx
        .restore(RestoreRequest {
            version: Some(v1.index),
            ..req("docs/a.txt")
        })
        .await
        .unwrap();
    assert!(again.unchanged);

    // Committed content on disk is replaced by the default (newest) version.
    let r = fx.restore(req("docs/a.txt")).await.unwrap();
    assert_eq!(r.index, v2.index);
    assert_eq!(std::fs::read(&file).unwrap(), a2);
    assert!(r.kept_as.is_none());
    // The committed content a restore replaces stays restorable from this
    // node alone (its chunks were put into the store before the rename).
    let f1 = b"fresh one\n".repeat(3000);
    let f2 = b"fresh two\n".repeat(3000);
    let w1 = fx.put_v("fresh.txt", &f1, None).await;
    fx.put_v("fresh.txt", &f2, Some(w1)).await;
    std::fs::write(fx.root.join("fresh.txt"), &f1).unwrap();
    let r = fx.restore(req("fresh.txt")).await.unwrap();
    assert!(r.kept_as.is_none(), "committed content is replaced");
    assert_eq!(std::fs::read(fx.root.join("fresh.txt")).unwrap(), f2);
    let held = std::mem::take(&mut *fx.remote.chunks.lock().unwrap());
    let back = fx
        .restore(RestoreRequest {
            version: Some(w1.index),
            to: Some("fresh-v1.txt".into()),
            ..req("fresh.txt")
        })
        .await
        .unwrap();
    assert_eq!(back.chunks_fetched, 0);
    assert_eq!(std::fs::read(fx.root.join("fresh-v1.txt")).unwrap(), f1);
    *fx.remote.chunks.lock().unwrap() = held;

    // Uncommitted local content is kept aside, never overwritten.
    std::fs::write(&file, b"my unsaved work").unwrap();
    let r = fx
        .restore(RestoreRequest {
            version: Some(v1.index),
            ..req("docs/a.txt")
        })
        .await
        .unwrap();
    let kept = r.kept_as.clone().expect("local content kept");
    assert!(
        kept.starts_with("docs/a.sync-conflict-") && kept.ends_with(".txt"),
        "{kept}"
    );
    assert_eq!(
        std::fs::read(fx.root.join(&kept)).unwrap(),
        b"my unsaved work"
    );
    assert_eq!(std::fs::read(&file).unwrap(), a1);

    // --to inside the root, never replacing.
    let to = RestoreRequest {
        to: Some("copies/a-v1.txt".into()),
        version: Some(v1.index),
        ..req("docs/a.txt")
    };
    let r = fx.restore(to.clone()).await.unwrap();
    assert_eq!(r.written, "copies/a-v1.txt");
    assert_eq!(std::fs::read(fx.root.join("copies/a-v1.txt")).unwrap(), a1);
    assert_eq!(fx.restore(to).await.unwrap_err().0, 409);

    // --to an absolute path outside the root; inside the root by its absolute path.
    let out_dir = fx.tmp.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("a.txt");
    let refused = fx
        .restore(RestoreRequest {
            to: Some(out.to_str().unwrap().into()),
            ..req("docs/a.txt")
        })
        .await
        .unwrap_err();
    assert_eq!(refused.0, 403, "{refused:?}");
    assert!(!out.exists());
    let r = fx
        .restore(RestoreRequest {
            to: Some(out.to_str().unwrap().into()),
            allow_outside: true,
            ..req("docs/a.txt")
        })
        .await
        .unwrap();
    assert!(!r.in_root);
    assert_eq!(std::fs::read(&out).unwrap(), a2);
    let abs_in = fx.root.join("copies/abs.txt");
    let r = fx
        .restore(RestoreRequest {
            to: Some(abs_in.to_str().unwrap().into()),
            ..req("top.txt")
        })
        .await
        .unwrap();
    assert!(r.in_root);
    assert_eq!(r.written, "copies/abs.txt");
    assert_eq!(std::fs::read(&abs_in).unwrap(), b"top");

    // Never through a symlink inside the root.
    let elsewhere = fx.tmp.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fx.root.join("link")).unwrap();
    let via_link = fx
        .restore(RestoreRequest {
            to: Some("link/x.txt".into()),
            ..req("top.txt")
        })
        .await;
    assert!(via_link.is_err(), "{via_link:?}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // Bad requests.
    for bad in [
        req("../x"),
        req("/etc/passwd"),
        req(".filesyncd-marker"),
        RestoreRequest {
            to: Some("../out".into()),
            ..req("top.txt")
        },
        RestoreRequest {
            to: Some("/tmp/../x".into()),
            ..req("top.txt")
        },
    ] {
        assert_eq!(fx.restore(bad.clone()).await.unwrap_err().0, 400, "{bad:?}");
    }
    assert_eq!(fx.restore(req("nope")).await.unwrap_err().0, 404);
    assert_eq!(
        fx.restore(RestoreRequest {
            version: Some(1),
            ..req("top.txt")
        })
        .await
        .unwrap_err()
        .0,
        404
    );

    // A peer sending bad bytes: refused, nothing written.
    fx.put_v("bad.bin", &b"x".repeat(200_000), None).await;
    fx.remote.corrupt.store(true, Ordering::SeqCst);
    let calls = fx.remote.chunk_calls.load(Ordering::SeqCst);
    let err = fx.restore(req("bad.bin")).await.unwrap_err();
    assert_eq!(err.0, 503, "{err:?}");
    assert!(fx.remote.chunk_calls.load(Ordering::SeqCst) > calls);
    assert!(!fx.root.join("bad.bin").exists());
    fx.remote.corrupt.store(false, Ordering::SeqCst);
    fx.restore(req("bad.bin")).await.unwrap();
    assert_eq!(
        std::fs::read(fx.root.join("bad.bin")).unwrap().len(),
        200_000
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_deletes_verify_adopt_status() {
    let mut fx = Fixture::new().await;
    // A stale put is committed as a conflict copy.
    let v1 = fx.put_v("c.txt", b"one", None).await;
    let Outcome::Conflict { conflict_path, .. } = fx.put("c.txt", b"two", None).await else {
        panic!("expected a conflict copy");
    };
    let h: HistoryAnswer = fx
        .get(&format!(
            "/history?path={}",
            super::query::encode(&conflict_path)
        ))
        .await;
    assert_eq!(h.versions[0].state, STATE_CONFLICT);
    // A deletion, and restoring what it deleted.
    fx.node
        .propose(vec![Op::Delete {
            path: "c.txt".into(),
            base: v1,
        }])
        .await
        .unwrap();
    let h: HistoryAnswer = fx.get("/history?path=c.txt").await;
    let states: Vec<&str> = h.versions.iter().map(|v| v.state.as_str()).collect();
    assert_eq!(states, [STATE_COMMITTED, STATE_DELETED]);
    let del = h.versions[1].index;
    assert_eq!(
        fx.restore(RestoreRequest {
            version: Some(del),
            ..req("c.txt")
        })
        .await
        .unwrap_err()
        .0,
        409
    );
    let r = fx.restore(req("c.txt")).await.unwrap();
    assert_eq!(r.index, v1.index);
    assert_eq!(std::fs::read(fx.root.join("c.txt")).unwrap(), b"one");

    // verify: restore the committed files, then spoil the disk.
    fx.put_v("a.txt", b"aaa", None).await;
    fx.put_v("gone.txt", b"ggg", None).await;
    fx.restore(req("a.txt")).await.unwrap();
    fx.restore(req(&conflict_path)).await.unwrap();
    std::fs::write(fx.root.join("extra.txt"), b"local").unwrap();
    std::fs::write(fx.root.join(".filesyncignore"), b"*.log\n").unwrap();
    std::fs::write(fx.root.join("x.log"), b"ignored").unwrap();
    std::fs::write(fx.root.join(".filesyncd-marker"), b"test-cluster\n").unwrap();
    std::fs::set_permissions(
        fx.root.join("a.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let v: VerifyAnswer =
        serde_json::from_str(&fx.call("POST", "/verify", Some("{}".into())).await.unwrap())
            .unwrap();
    let got: Vec<(&str, &str)> = v
        .differences
        .iter()
        .map(|d| (d.path.as_str(), d.problem.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (".filesyncignore", problem::UNTRACKED),
            ("a.txt", problem::MODE),
            ("c.txt", problem::UNTRACKED),
            ("extra.txt", problem::UNTRACKED),
            ("gone.txt", problem::MISSING),
        ]
    );
    assert_eq!(v.committed, 3);
    assert!(v.files_hashed >= 4);

    // adopt goes to the sync task and waits for its answer.
    let mut commands = fx.commands.take().unwrap();
    let answering = tokio::spawn(async move {
        if let Some(SyncCommand::Adopt { reply }) = commands.recv().await {
            let _ = reply.send(Ok(()));
        }
        commands
    });
    let a: Adopted =
        serde_json::from_str(&fx.call("POST", "/adopt", Some("{}".into())).await.unwrap()).unwrap();
    assert!(a.adopted);
    assert_eq!(a.dir, fx.root.display().to_string());
    drop(answering.await.unwrap());
    assert_eq!(
        fx.call("POST", "/adopt", Some("{}".into()))
            .await
            .unwrap_err()
            .0,
        503
    );

    // status and metrics carry the sync fields.
    let s: Status = fx.get("/status").await;
    assert!(s.sync.is_some() && !s.in_sync);
    assert_eq!(s.dir.as_deref(), Some(fx.root.to_str().unwrap()));
    assert_eq!(s.members[0].reachable, Some(true));
    fx.status.send_replace(SyncStatus {
        started: true,
        in_sync: true,
        local_root: Some(s.cluster_root.clone()),
        pending_remote: 3,
        ..SyncStatus::default()
    });
    let s: Status = fx.get("/status").await;
    assert!(s.in_sync);
    let m = fx.call("GET", "/metrics", None).await.unwrap();
    assert!(
        m.lines().any(|l| l == "filesyncd_sync_lag_versions 3"),
        "{m}"
    );
    assert!(m.lines().any(|l| l == "filesyncd_sync_in_sync 1"), "{m}");

    // Without the sync service: ls still answers, the rest is 503.
    let bare = serve(ApiState::new(fx.node.clone(), "p".into(), None)).await;
    let api = bare.clone();
    let (ls, verify) = tokio::task::spawn_blocking(move || {
        (
            client::call(&api, "GET", "/ls", None, None),
            client::call(&api, "POST", "/verify", Some("{}"), None),
        )
    })
    .await
    .unwrap();
    assert!(ls.is_ok());
    assert!(matches!(
        verify,
        Err(ClientError::Status { status: 503, .. })
    ));
    // Behind the API token like every other route.
    let guarded = serve(ApiState::new(
        fx.node.clone(),
        "p".into(),
        Some("s3cret".into()),
    ))
    .await;
    let (anon, authed) = tokio::task::spawn_blocking(move || {
        (
            client::call(&guarded, "GET", "/ls", None, None),
            client::call(&guarded, "GET", "/history?path=a.txt", None, Some("s3cret")),
        )
    })
    .await
    .unwrap();
    assert!(matches!(anon, Err(ClientError::Status { status: 401, .. })));
    assert!(authed.is_ok(), "{authed:?}");
    fx.stop().await;
}
