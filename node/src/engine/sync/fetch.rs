//! Fetching what a write needs: unknown tree nodes (one round trip per tree
//! level, each node verified against its hash), then missing chunks (each
//! verified with blake3); all-zero chunks are never fetched.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use filesyncd_chunkstore::store::ChunkStore;
use filesyncd_merkle::file_tree::FileTree;
use filesyncd_merkle::{
    node_hash, read_node, ChunkEntry, Hash, MemNodeStore, Node, NodeSource, NodeStore,
};

use super::super::fs::Fs;
use super::super::plan::Missing;
use super::super::ports::{ChunkFetcher, Committed};
use super::super::stage::{stage_version, STAGE_MIN};
use super::super::types::NodeId;
use super::{Engine, StepReport};

/// Hashes of all-zero chunks by length: such chunks are never fetched (the
/// materializer writes them as holes).
///
/// The hashes are kept for the whole process ([`ZERO_HASHES`], at most
/// [`ZERO_HASHES_MAX`] lengths): content-defined chunks have nearly as many
/// lengths as chunks, and hashing a zero buffer per length on every pass
/// over a large file's chunk list (the plan, the staging) cost a hash of
/// the whole file's size in zeros each time.
#[derive(Default)]
pub struct ZeroChunks(RefCell<HashMap<u32, Hash>>);

/// The process-wide zero-chunk hashes ([`ZeroChunks`]).
static ZERO_HASHES: std::sync::LazyLock<Mutex<HashMap<u32, Hash>>> =
    std::sync::LazyLock::new(Default::default);
/// Lengths [`ZERO_HASHES`] keeps (36 bytes each); past it a length is hashed
/// per [`ZeroChunks`] value.
pub const ZERO_HASHES_MAX: usize = 1 << 18;

impl ZeroChunks {
    pub fn is_zero(&self, c: &ChunkEntry) -> bool {
        if let Some(h) = self.0.borrow().get(&c.len) {
            return *h == c.hash;
        }
        let known = ZERO_HASHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.len)
            .copied();
        let h = known.unwrap_or_else(|| {
            let h = Hash::of_chunk(&vec![0; c.len as usize]);
            let mut g = ZERO_HASHES.lock().unwrap_or_else(|p| p.into_inner());
            if g.len() < ZERO_HASHES_MAX {
                g.insert(c.len, h);
            }
            h
        });
        self.0.borrow_mut().insert(c.len, h);
        h == c.hash
    }
}

impl<C: Committed, F: ChunkFetcher> Engine<C, F> {
    /// Gets what a write needs: tree nodes first if unknown, then chunks.
    pub(super) async fn fetch(
        &mut self,
        path: &str,
        root: Hash,
        size: u64,
        holders: &[NodeId],
        missing: Missing,
        rep: &mut StepReport,
    ) -> Result<(), String> {
        if size >= STAGE_MIN {
            // Written once, into a staged file the write then takes.
            if matches!(missing, Missing::Tree) {
                fetch_tree(&self.nodes, &self.fetcher, &[root], holders).await?;
            }
            let list = {
                let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                FileTree { root, size }
                    .chunks(&*nodes)
                    .map_err(|e| e.to_string())?
            };
            let n = stage_version(
                self.fs.as_ref(),
                self.store.as_ref(),
                &self.fetcher,
                root,
                size,
                &list,
                holders,
                path,
            )
            .await?;
            rep.chunks_fetched += n;
            return Ok(());
        }
        let n = pull(
            self.store.as_ref(),
            &self.nodes,
            &self.fetcher,
            root,
            size,
            holders,
            missing,
            path,
        )
        .await?;
        rep.chunks_fetched += n;
        Ok(())
    }
}

/// Chunks asked for in one round of a pull: bounds the memory a pull holds
/// (a file larger than RAM streams through in rounds of at most this many
/// chunks) and sets how often its progress is reported.
pub const FETCH_ROUND: usize = 256;

/// Makes every chunk of the file tree `root` local: unknown tree nodes
/// first (see [`fetch_tree`]), then the chunks neither held nor all-zero,
/// each verified with blake3 and stored durably. Returns the chunks
/// fetched. Used by the engine's writes and by the daemon's offers.
#[allow(clippy::too_many_arguments)] // the engine's and the daemon's call sites differ in each
pub async fn pull<F: ChunkFetcher>(
    store: &dyn ChunkStore,
    nodes: &Mutex<MemNodeStore>,
    fetcher: &F,
    root: Hash,
    size: u64,
    holders: &[NodeId],
    missing: Missing,
    label: &str,
) -> Result<usize, String> {
    if matches!(missing, Missing::Tree) {
        fetch_tree(nodes, fetcher, &[root], holders).await?;
    }
    // The chunk list gives the lengths (the progress total) and, for an
    // unknown tree, the hashes to fetch.
    let list = {
        let nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
        FileTree { root, size }.chunks(&*nodes)
    };
    let hashes = match missing {
        Missing::Chunks(h) => h,
        Missing::Tree => {
            let list = list.as_ref().map_err(|e| e.to_string())?;
            let zeros = ZeroChunks::default();
            let mut seen = HashSet::new();
            list.iter()
                .filter(|c| !zeros.is_zero(c))
                .map(|c| c.hash)
                .filter(|h| seen.insert(*h) && !store.has(h).unwrap_or(false))
                .collect()
        }
    };
    if hashes.is_empty() {
        return Ok(0);
    }
    let lens: HashMap<Hash, u64> = list
        .map(|l| l.iter().map(|c| (c.hash, u64::from(c.len))).collect())
        .unwrap_or_default();
    check_space(
        store,
        hashes.iter().filter_map(|h| lens.get(h)).sum(),
        label,
    )?;
    fetch_rounds(store, fetcher, holders, &hashes, &lens, label).await
}

/// Free bytes a pull leaves on the chunk store's file system, for the index,
/// the Raft log and the file written from the chunks.
pub const SPACE_RESERVE: u64 = 64 << 20;

/// Refuses a pull of `need` bytes that would leave less than
/// [`SPACE_RESERVE`] free on the chunk store's file system: nothing is
/// fetched, the error says what is missing, and a later step retries (a
/// peer in that state does not acknowledge offers, so the content counts
/// on the others).
pub fn check_space(store: &dyn ChunkStore, need: u64, label: &str) -> Result<(), String> {
    let Some(free) = store.free_bytes() else {
        return Ok(());
    };
    if free >= need.saturating_add(SPACE_RESERVE) {
        return Ok(());
    }
    Err(format!(
        "{label}: not enough free space for the chunk store: {need} bytes to fetch, {free} free \
         ({} MiB kept in reserve); nothing fetched, retried once space is freed",
        SPACE_RESERVE >> 20
    ))
}

/// Fetches `hashes` in rounds of [`FETCH_ROUND`], storing each round's
/// verified chunks before the next; reports progress (`lens` gives the
/// lengths known). Fails if any chunk could not be fetched.
async fn fetch_rounds<F: ChunkFetcher>(
    store: &dyn ChunkStore,
    fetcher: &F,
    holders: &[NodeId],
    hashes: &[Hash],
    lens: &HashMap<Hash, u64>,
    label: &str,
) -> Result<usize, String> {
    let total: u64 = hashes.iter().filter_map(|h| lens.get(h)).sum();
    let mut done = 0u64;
    let mut stored = 0usize;
    fetcher.progress(label, 0, total, false);
    let result = async {
        for round in hashes.chunks(FETCH_ROUND) {
            let got = fetcher
                .fetch(holders, round)
                .await
                .map_err(|e| e.to_string())?;
            let verified: Vec<(Hash, &[u8])> = got
                .iter()
                .filter(|(h, d)| round.contains(h) && Hash::of_chunk(d) == *h)
                .map(|(h, d)| (*h, &d[..]))
                .collect();
            store.put_many(&verified).map_err(|e| e.to_string())?;
            stored += verified.len();
            done += verified.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
            fetcher.progress(label, done, total, false);
            if verified.len() < round.len() {
                return Err(format!(
                    "{} of {} chunks could not be fetched",
                    round.len() - verified.len(),
                    round.len()
                ));
            }
        }
        Ok(stored)
    }
    .await;
    fetcher.progress(label, done, total, true);
    result
}

/// Gets the tree nodes of the trees `roots` the node store lacks, one round
/// trip per tree level (all trees at once); every node is verified against
/// its hash. The node store's lock is held only between awaits.
pub async fn fetch_tree<F: ChunkFetcher>(
    nodes: &Mutex<MemNodeStore>,
    fetcher: &F,
    roots: &[Hash],
    holders: &[NodeId],
) -> Result<(), String> {
    let mut frontier = roots.to_vec();
    frontier.sort_unstable();
    frontier.dedup();
    while !frontier.is_empty() {
        let wanted: Vec<Hash> = {
            let nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
            frontier
                .iter()
                .copied()
                .filter(|h| !nodes.has_node(h))
                .collect()
        };
        if !wanted.is_empty() {
            let got = fetcher
                .fetch_nodes(holders, &wanted)
                .await
                .map_err(|e| e.to_string())?;
            let mut nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
            for (h, bytes) in got {
                if wanted.contains(&h) && node_hash(&bytes).ok() == Some(h) {
                    nodes.put_node(h, bytes);
                }
            }
        }
        let nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::new();
        for h in &frontier {
            match read_node(&*nodes, h).map_err(|e| e.to_string())? {
                Node::FileInterior { children, .. } => next.extend(children.iter().map(|c| c.hash)),
                Node::FileLeaf(_) => {}
                _ => return Err(format!("{h} is not a file tree node")),
            }
        }
        next.sort_unstable();
        next.dedup();
        frontier = next;
    }
    Ok(())
}

/// [`pull`] for many file trees at once (an offer of many small files):
/// one tree fetch over all roots, one chunk fetch for everything missing.
/// Returns, per `(root, size)`, `Ok` once every chunk is local, else why
/// not (a tree refused as invalid or too large, chunks still missing).
pub async fn pull_many<F: ChunkFetcher>(
    store: &dyn ChunkStore,
    nodes: &Mutex<MemNodeStore>,
    fetcher: &F,
    trees: &[(Hash, u64)],
    holders: &[NodeId],
    fs: Option<&dyn Fs>,
) -> Result<Vec<Result<(), String>>, String> {
    let roots: Vec<Hash> = trees.iter().map(|t| t.0).collect();
    fetch_tree(nodes, fetcher, &roots, holders).await?;
    let mut refused: Vec<Option<String>> = vec![None; trees.len()];
    let lists: Vec<Option<Vec<ChunkEntry>>> = {
        let nodes = nodes.lock().unwrap_or_else(|p| p.into_inner());
        trees
            .iter()
            .zip(refused.iter_mut())
            .map(|((root, size), refused)| {
                let tree = FileTree {
                    root: *root,
                    size: *size,
                };
                tree.chunks(&*nodes)
                    .inspect_err(|e| {
                        tracing::warn!(root = %root, size, error = %e, "offered version refused: its tree is invalid or too large");
                        *refused = Some(format!("tree refused: {e}"));
                    })
                    .ok()
            })
            .collect()
    };
    // Large versions are written once, into staged files (`engine::stage`).
    let mut staged: Vec<Option<Result<(), String>>> = vec![None; trees.len()];
    if let Some(fs) = fs {
        for (i, ((root, size), list)) in trees.iter().zip(&lists).enumerate() {
            let Some(list) = list else { continue };
            if *size < STAGE_MIN {
                continue;
            }
            let label = format!("offer: {}", &root.to_hex()[..12]);
            staged[i] = Some(
                stage_version(fs, store, fetcher, *root, *size, list, holders, &label)
                    .await
                    .map(|_| ()),
            );
        }
    }
    let zeros = ZeroChunks::default();
    let mut seen = HashSet::new();
    let missing: Vec<Hash> = lists
        .iter()
        .zip(&staged)
        .filter(|(_, st)| st.is_none())
        .flat_map(|(l, _)| l)
        .flatten()
        .filter(|c| !zeros.is_zero(c))
        .map(|c| c.hash)
        .filter(|h| seen.insert(*h) && !store.has(h).unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        let lens: HashMap<Hash, u64> = lists
            .iter()
            .flatten()
            .flatten()
            .map(|c| (c.hash, u64::from(c.len)))
            .collect();
        let label = format!(
            "offer: {} versions from {}",
            trees.len(),
            &trees[0].0.to_hex()[..12]
        );
        // A partial result is fine here: the answer per tree says what is
        // complete, and the origin offers the rest again. With too little
        // space nothing is fetched, so nothing is acknowledged.
        let need = missing.iter().filter_map(|h| lens.get(h)).sum();
        if let Err(e) = check_space(store, need, &label) {
            tracing::warn!(error = %e, "offer not pulled");
        } else if let Err(e) = fetch_rounds(store, fetcher, holders, &missing, &lens, &label).await
        {
            tracing::debug!(error = %e, "offered versions pulled in part");
        }
    }
    Ok(lists
        .iter()
        .zip(refused)
        .zip(staged)
        .map(|((l, refused), staged)| match (l, refused) {
            (_, Some(why)) => Err(why),
            _ if staged.is_some() => staged.unwrap_or(Ok(())),
            (None, None) => Err("tree not available".to_string()),
            (Some(l), None) => {
                if l.iter()
                    .all(|c| zeros.is_zero(c) || store.has(&c.hash).unwrap_or(false))
                {
                    Ok(())
                } else {
                    Err("chunks missing after the pull".to_string())
                }
            }
        })
        .collect())
}
