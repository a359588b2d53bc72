//! Bulk chunk exchange over `/filesyncd/chunks/1` (libp2p-stream).
//!
//! * [`wire`]: the byte layout and the compression choice.
//! * [`fetch`]: the fetching side: batches spread over every holder,
//!   bounded per peer and globally, every chunk verified before it is
//!   handed on, bad senders charged faults and routed around.
//! * [`serve`]: the serving side: members only, bounded per peer and
//!   globally, provider calls and compression on blocking threads.

pub mod faults;
pub mod fetch;
pub mod serve;
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
