//! The minority-waits path in-process: an engine whose proposals go
//! through the acknowledgement port ([`OfferFirst`] over [`MemAcks`]).
//! A put is proposed only once a majority of the voters (the origin
//! included) hold its content; with only a minority reachable the step
//! fails, nothing is committed and the change stays pending until a
//! quorum is back.

use std::sync::Arc;
use std::time::Duration;

use filesyncd::engine::acks::{Content, MemAcks, MemVoter, OfferFirst};
use filesyncd::engine::fs_real::RootFs;
use filesyncd::engine::plan::{PlanConfig, Scope};
use filesyncd::engine::ports::{MemCommitted, MemFetcher, PortError};
use filesyncd::engine::sync::{Engine, StepError};
use filesyncd_chunkstore::chunker::ChunkerParams;
use filesyncd_chunkstore::store::{ChunkStore, MemChunkStore};

const NOW: u64 = 1_735_689_599_000;

struct Origin {
    dir: tempfile::TempDir,
    committed: MemCommitted,
    acks: MemAcks,
    engine: Engine<OfferFirst<MemCommitted, MemAcks>, MemFetcher>,
}

/// Node 1 of the voters 1, 2, 3; the others answer offers as `acks` says.
fn origin() -> Origin {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".filesyncd-marker"), b"c1\n").expect("marker");
    let fs = Arc::new(RootFs::open(dir.path()).expect("root"));
    let store: Arc<dyn ChunkStore> = Arc::new(MemChunkStore::new(dir.path()));
    let committed = MemCommitted::new();
    let acks = MemAcks::new(1, [1, 2, 3]);
    acks.set_deadline(Duration::from_millis(300));
    let engine = Engine::new(
        fs,
        store,
        ChunkerParams::default().validate().expect("chunker"),
        OfferFirst {
            inner: committed.clone(),
            acks: acks.clone(),
        },
        MemFetcher::default(),
        PlanConfig::new("c1", 1),
    );
    Origin {
        dir,
        committed,
        acks,
        engine,
    }
}

#[tokio::test]
async fn a_minority_proposes_nothing_and_the_change_waits_for_a_quorum() {
    let mut o = origin();
    o.acks.set(2, MemVoter::DOWN);
    o.acks.set(3, MemVoter::DOWN);
    std::fs::write(o.dir.path().join("a.txt"), b"hello, quorum").expect("write");

    let res = o.engine.step(Scope::Full, NOW).await;
    assert!(
        matches!(res, Err(StepError::Port(PortError::Unavailable(_)))),
        "{res:?}"
    );
    assert_eq!(o.acks.offers().len(), 1, "the content was offered");
    assert_eq!(o.committed.get("a.txt"), None, "nothing proposed");
    assert!(o.committed.live_paths().is_empty());
    assert!(
        o.engine
            .local
            .get("a.txt")
            .is_none_or(|e| e.version.is_none()),
        "not recorded as committed: the next step proposes it again"
    );

    // Still a minority on the retry: still nothing.
    assert!(o.engine.step(Scope::Full, NOW).await.is_err());
    assert_eq!(o.committed.get("a.txt"), None);

    // One other voter is back: origin + it are a majority.
    o.acks.set(3, MemVoter::GOOD);
    let rep = o.engine.step(Scope::Full, NOW).await.expect("step");
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.proposed, 1);
    let rec = o.committed.get("a.txt").expect("committed");
    assert_eq!(
        rec.holders,
        vec![1, 3],
        "the origin and the voter that acked"
    );
    assert_eq!(
        o.acks.offers().last().expect("offered"),
        &vec![Content {
            root: rec.meta.root,
            size: rec.meta.size
        }]
    );
    assert_eq!(
        o.engine.local.get("a.txt").and_then(|e| e.version),
        Some(rec.version)
    );
    assert_eq!(o.engine.pending().0, 0);
}

#[tokio::test]
async fn changes_without_content_are_proposed_without_an_offer() {
    let mut o = origin();
    o.acks.set(2, MemVoter::DOWN);
    o.acks.set(3, MemVoter::DOWN);
    std::fs::create_dir(o.dir.path().join("d")).expect("mkdir");
    std::fs::write(o.dir.path().join("d/empty"), b"").expect("write");

    let rep = o.engine.step(Scope::Full, NOW).await.expect("step");
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(o.acks.offers().is_empty(), "nothing to hold: no offer");
    assert_eq!(o.committed.live_paths(), vec!["d", "d/empty"]);
}
