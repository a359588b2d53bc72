//! Bulk chunk exchange: `/filesyncd/chunks/1` over libp2p-stream, and the
//! same requests and frames over the bulk endpoint (`crate::bulk`).
//!
//! * [`wire`]: the byte layout.
//! * [`compressor`]: which chunk goes to which peer as zstd, from measured
//!   link rates and zstd speeds ([`decide`], [`measure`], [`links`]), and
//!   the frames kept for every peer ([`frame_cache`]).
//! * `stream`: the stream a fetch batch runs on (bulk or libp2p).
//! * [`fetch`]: the fetching side: batches spread over every holder,
//!   bounded per peer and globally, every chunk verified (hashed once,
//!   [`wire::open_body`]) and handed on as a `filesyncd_merkle::Verified`,
//!   bad senders charged faults and routed around.
//! * [`serve`]: the serving side: members only, bounded per peer and
//!   globally, provider calls and compression on blocking threads.

pub mod compressor;
pub mod decide;
pub mod faults;
pub mod fetch;
pub mod frame_cache;
pub mod links;
pub mod measure;
pub mod serve;
pub(crate) mod stream;
pub mod wire;

use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// One semaphore per peer, created on first use.
#[derive(Debug)]
pub(crate) struct PerPeer {
    limit: usize,
    map: Mutex<HashMap<PeerId, Arc<Semaphore>>>,
}

impl PerPeer {
    pub(crate) fn new(limit: usize) -> PerPeer {
        PerPeer {
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, peer: PeerId) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
    }
}
