//! Two engines on real temp directories sharing an in-memory committed log
//! and chunk network: changes flow both ways, renames transfer nothing,
//! concurrent edits keep both sides, nothing echoes, guards hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use filesyncd::engine::fs_real::RootFs;
use filesyncd::engine::plan::{PlanConfig, Scope, Verdict};
use filesyncd::engine::ports::{MemCommitted, MemFetcher};
use filesyncd::engine::sync::{Engine, StepReport};
use filesyncd_chunkstore::chunker::{Chunker, ChunkerParams};
use filesyncd_chunkstore::store::{ChunkStore, MemChunkStore};

const NOW: u64 = 1_735_689_599_000;

fn chunker() -> Chunker {
    ChunkerParams {
        min_size: 256,
        avg_size: 512,
        max_size: 1024,
        ..ChunkerParams::default()
    }
    .validate()
    .expect("params")
}

fn bytes(seed: u8, n: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Node {
    dir: tempfile::TempDir,
    engine: Engine<MemCommitted, MemFetcher>,
    store: Arc<MemChunkStore>,
}

impl Node {
    fn new(id: u64, committed: &MemCommitted, net: &MemFetcher) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".filesyncd-marker"), b"c1\n").expect("marker");
        let fs = Arc::new(RootFs::open(dir.path()).expect("root"));
        let mem = Arc::new(MemChunkStore::new(dir.path()));
        let store: Arc<dyn ChunkStore> = mem.clone();
        let engine = Engine::new(
            fs,
            store.clone(),
            chunker(),
            committed.clone(),
            net.clone(),
            PlanConfig::new("c1", id),
        );
        net.add(id, store, engine.nodes.clone());
        std::fs::write(dir.path().join(".filesyncd-tmp-crashed"), b"x").expect("temp");
        assert_eq!(engine.startup().expect("startup"), 1, "stale temp removed");
        Node {
            dir,
            engine,
            store: mem,
        }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }

    async fn step(&mut self) -> StepReport {
        let r = self.engine.step(Scope::Full, NOW).await.expect("step");
        assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
        r
    }
}

/// Every file, dir and link under `root` (minus the daemon's names) with content.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls") {
            let e = e.expect("entry");
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("under")
                .to_string_lossy()
                .into_owned();
            if rel.contains(".filesyncd") {
                continue;
            }
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(e.path());
            } else if ft.is_symlink() {
                let t = std::fs::read_link(e.path()).expect("readlink");
                out.insert(rel, t.to_string_lossy().as_bytes().to_vec());
            } else {
                out.insert(rel, std::fs::read(e.path()).expect("read"));
            }
        }
    }
    out
}

fn quiet(r: &StepReport) -> bool {
    r.proposed == 0 && r.written == 0 && r.deleted == 0 && r.conflicts == 0
}

#[tokio::test]
async fn changes_flow_between_two_nodes_without_echo() {
    let committed = MemCommitted::new();
    let net = MemFetcher::default();
    let mut a = Node::new(1, &committed, &net);
    let mut b = Node::new(2, &committed, &net);

    // ~300 chunks: a two-level tree, fetched level by level.
    a.write("docs/report.bin", &bytes(1, 200_000));
    a.write("empty", b"");
    let mut sparse = bytes(7, 3000);
    sparse.extend(vec![0u8; 200_000]);
    a.write("sparse.img", &sparse);
    std::os::unix::fs::symlink("docs/report.bin", a.path("link")).expect("symlink");
    let r = a.step().await;
    assert_eq!(
        r.proposed, 5,
        "docs, docs/report.bin, empty, link, sparse.img"
    );
    // Zero chunks are never fetched (written as holes): no fetch errors.
    let r = b.step().await;
    assert_eq!(r.written, 5);
    assert!(r.chunks_fetched > 0);
    assert_eq!(tree(a.dir.path()), tree(b.dir.path()));

    // No echo: neither side has anything to do now.
    assert!(quiet(&b.step().await));
    assert!(quiet(&a.step().await));

    // A rename on B transfers nothing to A (chunks are in A's live file).
    std::fs::rename(b.path("docs/report.bin"), b.path("docs/renamed.bin")).expect("rename");
    b.step().await;
    let served = net.served();
    let r = a.step().await;
    assert_eq!((r.written, r.deleted), (1, 1));
    assert_eq!(net.served(), served, "nothing fetched for a rename");
    assert_eq!(tree(a.dir.path()), tree(b.dir.path()));

    // A delete on A propagates.
    std::fs::remove_file(a.path("empty")).expect("rm");
    assert_eq!(a.step().await.proposed, 1);
    assert_eq!(b.step().await.deleted, 1);
    assert!(!b.path("empty").exists());
    assert_eq!(tree(a.dir.path()), tree(b.dir.path()));
}

#[tokio::test]
async fn a_full_chunk_store_fetches_nothing_and_says_so() {
    let committed = MemCommitted::new();
    let net = MemFetcher::default();
    let mut a = Node::new(1, &committed, &net);
    let mut b = Node::new(2, &committed, &net);
    a.write("big.bin", &bytes(3, 100_000));
    a.step().await;
    // B's disk has 1 MiB free: under the reserve, so the pull is refused
    // before any chunk moves; nothing is written.
    b.store.set_free_bytes(Some(1 << 20));
    let served = net.served();
    let r = b.engine.step(Scope::Full, NOW).await.expect("step");
    assert_eq!(r.written, 0);
    // The tree nodes (a few; they give the sizes), none of the ~200 chunks.
    assert!(
        net.served() - served < 10,
        "{} served",
        net.served() - served
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("not enough free space") && e.contains("100000 bytes to fetch")),
        "{:?}",
        r.errors
    );
    assert!(!b.path("big.bin").exists());
    // Space freed: the next step syncs.
    b.store.set_free_bytes(Some(1 << 30));
    let r = b.step().await;
    assert_eq!(r.written, 1);
    assert_eq!(tree(a.dir.path()), tree(b.dir.path()));
}

#[tokio::test]
async fn concurrent_edits_keep_both_versions() {
    let committed = MemCommitted::new();
    let net = MemFetcher::default();
    let mut a = Node::new(1, &committed, &net);
    let mut b = Node::new(2, &committed, &net);
    a.write("f.txt", b"base");
    a.step().await;
    b.step().await;

    a.write("f.txt", b"edit from a");
    b.write("f.txt", b"edit from b, longer");
    a.step().await;
    let r = b.step().await;
    assert_eq!(r.conflicts, 1);
    a.step().await;
    let ta = tree(a.dir.path());
    assert_eq!(ta, tree(b.dir.path()));
    assert_eq!(ta["f.txt"], b"edit from a");
    let copy = "f.sync-conflict-20241231-235959-2.txt";
    assert_eq!(ta[copy], b"edit from b, longer");
    assert!(quiet(&a.step().await) && quiet(&b.step().await));
}

#[tokio::test]
async fn a_missing_marker_halts_and_nothing_is_deleted() {
    let committed = MemCommitted::new();
    let net = MemFetcher::default();
    let mut a = Node::new(1, &committed, &net);
    let mut b = Node::new(2, &committed, &net);
    for i in 0..20 {
        a.write(&format!("f{i}"), &bytes(i, 100));
    }
    a.step().await;
    b.step().await;

    // "Unmounted": B's directory is emptied, marker included.
    for e in std::fs::read_dir(b.dir.path()).expect("ls") {
        std::fs::remove_file(e.expect("entry").path()).expect("rm");
    }
    let r = b.step().await;
    assert!(matches!(r.verdict, Some(Verdict::Halt(_))));
    assert_eq!(r.proposed, 0);
    // Marker back but still empty: halted too (unless confirmed).
    std::fs::write(b.path(".filesyncd-marker"), b"c1").expect("marker");
    assert!(matches!(b.step().await.verdict, Some(Verdict::Halt(_))));
    assert_eq!(committed.live_paths().len(), 20, "no delete was proposed");

    // Most files vanish at once on A: deletes are paused.
    for i in 0..15 {
        std::fs::remove_file(a.path(&format!("f{i}"))).expect("rm");
    }
    let r = a.step().await;
    assert!(matches!(r.verdict, Some(Verdict::Pause(_))));
    assert_eq!(committed.live_paths().len(), 20);
    a.engine.cfg.deletes_confirmed = true;
    a.step().await;
    assert_eq!(committed.live_paths().len(), 5);
}

/// A mass delete seen by a scoped step stays paused through later steps of
/// other scopes (it used to be forgotten by the next one, and the status
/// said nothing was held until the periodic rescan), and goes out once
/// confirmed.
#[tokio::test]
async fn a_paused_mass_delete_outlives_unrelated_scoped_steps() {
    let committed = MemCommitted::new();
    let net = MemFetcher::default();
    let mut a = Node::new(1, &committed, &net);
    for i in 0..20 {
        a.write(&format!("dir/f{i}"), &bytes(i, 100));
    }
    a.write("other/x", b"x0");
    a.step().await;
    assert_eq!(committed.live_paths().len(), 23, "2 dirs and 21 files");

    let before = committed.get("other/x").expect("committed").version;
    std::fs::remove_dir_all(a.path("dir")).expect("rm -rf dir");
    let scoped = |p: &str| Scope::Paths(vec![p.to_owned()]);
    let r = a.engine.step(scoped("dir"), NOW).await.expect("step");
    assert!(matches!(r.verdict, Some(Verdict::Pause(_))), "{r:?}");

    // An unrelated edit elsewhere goes out; the deletes stay held.
    a.write("other/x", b"x1");
    for _ in 0..2 {
        let r = a.engine.step(scoped("other/x"), NOW).await.expect("step");
        assert!(matches!(r.verdict, Some(Verdict::Pause(_))), "{r:?}");
    }
    assert_eq!(committed.live_paths().len(), 23, "no delete proposed");
    assert_ne!(
        committed.get("other/x").expect("committed").version,
        before,
        "the edit went out"
    );

    // The files come back: nothing is held any more.
    for i in 0..20 {
        a.write(&format!("dir/f{i}"), &bytes(i, 100));
    }
    let r = a.engine.step(scoped("other"), NOW).await.expect("step");
    assert_eq!(r.verdict, Some(Verdict::Proceed));
    assert_eq!(committed.live_paths().len(), 23);

    // Deleted again and confirmed: the deletes go out.
    std::fs::remove_dir_all(a.path("dir")).expect("rm -rf dir");
    let r = a.engine.step(scoped("dir"), NOW).await.expect("step");
    assert!(matches!(r.verdict, Some(Verdict::Pause(_))));
    a.engine.cfg.deletes_confirmed = true;
    a.engine.step(scoped("other"), NOW).await.expect("step");
    a.engine.cfg.deletes_confirmed = false;
    assert_eq!(committed.live_paths().len(), 2, "other/ and other/x");
}
