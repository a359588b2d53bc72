//! A misbehaving member, for the multi-process tests only: compiled into
//! builds with the `failpoints` feature (the test builds), never into a
//! release build.
//!
//! With `FILESYNCD_TEST_ROGUE_OFFERS=1`, every offer this node makes as an
//! origin is followed by an offer of two **tree bombs** to every other
//! voter: a few KB of Merkle nodes made of repeated subtrees (legal shapes:
//! a file of repeated content has them) that claim
//! - 2^56 bytes (64 PiB) in 2^32 chunks: a peer must refuse it from the
//!   offered size alone (`--max-file-size`), fetching nothing;
//! - 16 MiB in 2^24 one-byte chunks (under any max file size): a peer
//!   fetches its four nodes, then must refuse it from the root's claimed
//!   chunk count before expanding anything
//!   ([`MAX_EXPANDED_CHUNKS`](filesyncd_merkle::file_tree::MAX_EXPANDED_CHUNKS)).
//!
//! Their nodes go into this node's node store, so it serves them like any
//! tree. The answers are logged (`rogue: tree bombs answered`) for the test
//! to read; the honest offer goes on as usual.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use filesyncd_merkle::{ChunkEntry, FileChild, Hash, MemNodeStore, Node, NodeStore};

use super::ctl::{OfferItem, OfferState};
use super::offer::Offerer;
use super::ports::members;

/// The environment variable that turns it on.
pub const ENV: &str = "FILESYNCD_TEST_ROGUE_OFFERS";

fn enabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "1")
}

fn put(s: &mut MemNodeStore, node: Node) -> FileChild {
    let (bytes, chunks) = match &node {
        Node::FileLeaf(entries) => (
            entries.iter().map(|e| u64::from(e.len)).sum(),
            entries.len() as u64,
        ),
        Node::FileInterior { children, .. } => (
            children.iter().map(|c| c.bytes).sum(),
            children.iter().map(|c| c.chunks).sum(),
        ),
        _ => unreachable!("only file nodes are built here"),
    };
    let (hash, enc) = node.seal();
    s.put_node(hash, enc);
    FileChild {
        hash,
        bytes,
        chunks,
    }
}

/// A tree of `levels` interior levels over one leaf of 256 chunks of `len`
/// bytes, every level repeating one child 256 times: 256^(levels+1) chunks.
fn bomb(s: &mut MemNodeStore, len: u32, levels: u8) -> OfferItem {
    // Never a node boundary: nodes are cut at 256 entries.
    let same = ChunkEntry {
        hash: Hash([1; 32]),
        len,
    };
    let mut child = put(s, Node::FileLeaf(vec![same; 256]));
    for level in 1..=levels {
        child = put(
            s,
            Node::FileInterior {
                level,
                children: vec![child; 256],
            },
        );
    }
    OfferItem {
        root: child.hash,
        size: child.bytes,
    }
}

/// Offers the bombs to every other voter and logs the answers (see the
/// module doc); a no-op unless [`ENV`] is `1`.
pub async fn offer_bombs(o: &Offerer) {
    // The first three offers of the process carry them (enough for a test).
    static SENT: AtomicU32 = AtomicU32::new(0);
    if !enabled() || SENT.fetch_add(1, Ordering::Relaxed) >= 3 {
        return;
    }
    let bombs = {
        let mut nodes = o.nodes.lock().unwrap_or_else(|p| p.into_inner());
        vec![bomb(&mut nodes, 1 << 24, 3), bomb(&mut nodes, 1, 2)]
    };
    let (peers, voters) = members(&o.node);
    let me = o.node.id();
    for v in voters.iter().filter(|v| **v != me) {
        let Some(peer) = peers.get(v).copied() else {
            continue;
        };
        // Asked until every answer is final (a refusal after the tree fetch
        // comes with a later answer; a pull that failed on a connection
        // lost at start is asked again), for at most twenty seconds.
        let settled = |answers: &[OfferState]| {
            answers.iter().all(|s| match s {
                OfferState::Failed(e) => e.contains("larger than") || e.contains("tree refused"),
                OfferState::Durable => true,
                OfferState::Pending => false,
            })
        };
        let mut answers = Vec::new();
        for _ in 0..40 {
            answers = match tokio::time::timeout(Duration::from_secs(3), o.ask(peer, &bombs)).await
            {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => vec![OfferState::Failed(format!("not answered: {e}"))],
                Err(_) => vec![OfferState::Failed("not answered in time".into())],
            };
            if settled(&answers) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::warn!(
            node = format!("{v:016x}"),
            ?bombs,
            ?answers,
            "rogue: tree bombs answered"
        );
    }
}
