//! In-memory transport for tests: nodes of one process talk through a
//! [`MemRouter`] that can drop, delay and partition traffic.
//!
//! Model:
//! - A node is reachable once its handler is [`MemRouter::register`]ed and
//!   until it is [`MemRouter::unregister`]ed (a crashed or stopped node).
//! - A link `a → b` is cut by [`MemRouter::block`] (one-way),
//!   [`MemRouter::partition`] (both ways between two groups) or
//!   [`MemRouter::isolate`] (every link of a node); [`MemRouter::heal`] restores
//!   all links. A cut request link fails at once with `Unreachable`; a cut
//!   response link (`b → a`) means `b` processed the request but `a` times out.
//! - Each delivered request waits a delay drawn from `[min, max]`, and so does
//!   its response. With probability `p` a request is lost (`Timeout`, handler
//!   not called), and with probability `p` a response is lost (`Timeout`,
//!   handler called) — the latter is how a retried, already-applied request is
//!   produced. [`MemRouter::lose_next_replies`] does the same deterministically
//!   for the next replies of one RPC kind.
//! - The handler runs in its own task, as on a remote machine: a caller that
//!   gives up does not cancel it.
//!
//! Determinism: every random choice comes from one `StdRng` seeded by the
//! caller, drawn under the router's lock in call order. With the same seed and
//! the same call order, the same messages are dropped and delayed (task
//! scheduling can still reorder calls between runs).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{RaftTransport, RpcHandler, RpcKind, TransportError, HARD_MAX_RPC_BYTES};
use crate::types::{NodeId, NodeInfo};

/// Counters of what the router did, for test assertions and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Requests handed to a handler.
    pub delivered: u64,
    /// Requests or responses lost on purpose (drop probability).
    pub dropped: u64,
    /// Requests or responses stopped by a cut link or a missing node.
    pub blocked: u64,
    /// Payloads refused for size.
    pub too_large: u64,
}

struct State {
    handlers: HashMap<NodeId, Arc<dyn RpcHandler>>,
    blocked: HashSet<(NodeId, NodeId)>,
    isolated: HashSet<NodeId>,
    lose_replies: HashMap<RpcKind, u64>,
    drop_probability: f64,
    delay_min: Duration,
    delay_max: Duration,
    max_payload: usize,
    rng: StdRng,
    stats: MemStats,
}

impl State {
    fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.isolated.contains(&from)
            && !self.isolated.contains(&to)
            && !self.blocked.contains(&(from, to))
    }

    fn draw_delay(&mut self) -> Duration {
        if self.delay_max <= self.delay_min {
            self.delay_min
        } else {
            self.rng.gen_range(self.delay_min..=self.delay_max)
        }
    }

    fn draw_drop(&mut self) -> bool {
        self.drop_probability > 0.0 && self.rng.gen_bool(self.drop_probability)
    }
}

/// The shared switchboard of an in-process cluster. Cheap to clone.
#[derive(Clone)]
pub struct MemRouter {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemRouter").finish_non_exhaustive()
    }
}

impl MemRouter {
    /// A router with no loss, no delay and all links up; `seed` drives every
    /// random choice.
    pub fn new(seed: u64) -> MemRouter {
        MemRouter {
            state: Arc::new(Mutex::new(State {
                handlers: HashMap::new(),
                blocked: HashSet::new(),
                isolated: HashSet::new(),
                lose_replies: HashMap::new(),
                drop_probability: 0.0,
                delay_min: Duration::ZERO,
                delay_max: Duration::ZERO,
                max_payload: HARD_MAX_RPC_BYTES,
                rng: StdRng::seed_from_u64(seed),
                stats: MemStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a test bug; the
        // state stays usable, so ignore poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport node `from` sends with.
    pub fn transport(&self, from: NodeId) -> MemTransport {
        MemTransport {
            from,
            router: self.clone(),
        }
    }

    /// Make `id` reachable, answering with `handler`.
    pub fn register(&self, id: NodeId, handler: Arc<dyn RpcHandler>) {
        self.lock().handlers.insert(id, handler);
    }

    /// Make `id` unreachable (node stopped or crashed).
    pub fn unregister(&self, id: NodeId) {
        self.lock().handlers.remove(&id);
    }

    /// Lose each request and each response with probability `p` (clamped to [0, 1]).
    pub fn set_drop_probability(&self, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.lock().drop_probability = p;
    }

    /// Delay each request and each response by a uniform draw in `[min, max]`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        let mut s = self.lock();
        s.delay_min = min;
        s.delay_max = max.max(min);
    }

    /// Refuse payloads above `max` bytes (at most [`HARD_MAX_RPC_BYTES`]).
    pub fn set_max_payload(&self, max: usize) {
        self.lock().max_payload = max.min(HARD_MAX_RPC_BYTES);
    }

    /// Lose the replies of the next `count` delivered requests of `kind`
    /// (the handler runs, the caller times out): a deterministic way to make
    /// a caller retry something that already happened.
    pub fn lose_next_replies(&self, kind: RpcKind, count: u64) {
        self.lock().lose_replies.insert(kind, count);
    }

    /// Cut the link `from → to` only.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Cut every link between group `a` and group `b`, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut s = self.lock();
        for &x in a {
            for &y in b {
                s.blocked.insert((x, y));
                s.blocked.insert((y, x));
            }
        }
    }

    /// Cut every link to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Restore every link (loss and delay settings are kept).
    pub fn heal(&self) {
        let mut s = self.lock();
        s.blocked.clear();
        s.isolated.clear();
    }

    /// Whether `from → to` is currently up (ignoring loss).
    pub fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().link_up(from, to)
    }

    /// What the router did so far.
    pub fn stats(&self) -> MemStats {
        self.lock().stats
    }

    async fn route(
        &self,
        from: NodeId,
        target: NodeId,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.to_string(),
        };
        // Plan the whole exchange under one lock so the draws are in call order.
        let (request_delay, lose_request, lose_response, response_delay) = {
            let mut s = self.lock();
            if payload.len() > s.max_payload {
                s.stats.too_large += 1;
                return Err(TransportError::PayloadTooLarge {
                    size: payload.len(),
                    max: s.max_payload,
                });
            }
            if !s.link_up(from, target) || !s.handlers.contains_key(&target) {
                s.stats.blocked += 1;
                return Err(unreachable("link down or node not running"));
            }
            let a = s.draw_delay();
            let b = s.draw_drop();
            let c = s.draw_drop();
            let d = s.draw_delay();
            (a, b, c, d)
        };

        if !request_delay.is_zero() {
            tokio::time::sleep(request_delay).await;
        }
        let handler = {
            let mut s = self.lock();
            let handler = match s.handlers.get(&target) {
                Some(h) if s.link_up(from, target) => Arc::clone(h),
                _ => {
                    s.stats.blocked += 1;
                    return Err(unreachable("link went down in flight"));
                }
            };
            if lose_request {
                s.stats.dropped += 1;
                return Err(TransportError::Timeout { target });
            }
            s.stats.delivered += 1;
            handler
        };

        let response = tokio::spawn(async move { handler.handle(kind, payload).await })
            .await
            .map_err(|e| TransportError::Network {
                target,
                reason: format!("handler task failed: {e}"),
            })?;

        if !response_delay.is_zero() {
            tokio::time::sleep(response_delay).await;
        }
        let mut s = self.lock();
        if response.len() > s.max_payload {
            s.stats.too_large += 1;
            return Err(TransportError::PayloadTooLarge {
                size: response.len(),
                max: s.max_payload,
            });
        }
        if !s.link_up(target, from) {
            s.stats.blocked += 1;
            return Err(TransportError::Timeout { target });
        }
        let targeted = match s.lose_replies.get_mut(&kind) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if lose_response || targeted {
            s.stats.dropped += 1;
            return Err(TransportError::Timeout { target });
        }
        Ok(response)
    }
}

/// One node's handle on a [`MemRouter`].
#[derive(Clone, Debug)]
pub struct MemTransport {
    from: NodeId,
    router: MemRouter,
}

impl MemTransport {
    /// The node this transport sends from.
    pub fn node_id(&self) -> NodeId {
        self.from
    }

    /// The router behind this transport.
    pub fn router(&self) -> &MemRouter {
        &self.router
    }
}

impl RaftTransport for MemTransport {
    async fn call(
        &self,
        target: NodeId,
        _target_info: &NodeInfo,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        self.router.route(self.from, target, kind, payload).await
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;

    /// Echoes the payload with the kind byte appended, and counts calls.
    struct Echo(Arc<Mutex<u64>>);

    impl RpcHandler for Echo {
        fn handle(&self, kind: RpcKind, mut payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
            if let Ok(mut n) = self.0.lock() {
                *n += 1;
            }
            payload.push(kind.as_u8());
            Box::pin(async move { payload })
        }
    }

    fn cluster(seed: u64) -> (MemRouter, Arc<Mutex<u64>>) {
        let router = MemRouter::new(seed);
        let calls = Arc::new(Mutex::new(0));
        for id in 1..=3 {
            router.register(id, Arc::new(Echo(calls.clone())));
        }
        (router, calls)
    }

    async fn ping(r: &MemRouter, from: NodeId, to: NodeId) -> Result<Vec<u8>, TransportError> {
        r.transport(from)
            .call(to, &NodeInfo::default(), RpcKind::Vote, vec![7])
            .await
    }

    #[tokio::test]
    async fn delivers_and_partitions() {
        let (r, calls) = cluster(1);
        assert_eq!(ping(&r, 1, 2).await, Ok(vec![7, 2]));
        r.partition(&[1], &[2, 3]);
        assert!(matches!(
            ping(&r, 1, 2).await,
            Err(TransportError::Unreachable { .. })
        ));
        assert!(matches!(
            ping(&r, 3, 1).await,
            Err(TransportError::Unreachable { .. })
        ));
        assert_eq!(ping(&r, 2, 3).await, Ok(vec![7, 2]));
        r.heal();
        assert_eq!(ping(&r, 1, 3).await, Ok(vec![7, 2]));
        r.isolate(2);
        assert!(ping(&r, 1, 2).await.is_err());
        assert!(ping(&r, 2, 3).await.is_err());
        assert!(ping(&r, 1, 3).await.is_ok());
        r.unregister(3);
        assert!(matches!(
            ping(&r, 1, 3).await,
            Err(TransportError::Unreachable { .. })
        ));
        let handled = *calls.lock().unwrap();
        assert_eq!(handled, 4);
        assert_eq!(r.stats().delivered, 4);
    }

    #[tokio::test]
    async fn one_way_cut_loses_only_the_answer() {
        let (r, calls) = cluster(2);
        r.block(2, 1);
        // 1 → 2 is up: 2 handles the request, but its answer cannot come back.
        assert_eq!(
            ping(&r, 1, 2).await,
            Err(TransportError::Timeout { target: 2 })
        );
        assert_eq!(*calls.lock().unwrap(), 1);
        // 2 → 1 is down: refused before delivery.
        assert!(matches!(
            ping(&r, 2, 1).await,
            Err(TransportError::Unreachable { .. })
        ));
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn refuses_oversized_payloads() {
        let (r, _) = cluster(3);
        r.set_max_payload(4);
        let big = r
            .transport(1)
            .call(2, &NodeInfo::default(), RpcKind::AppendEntries, vec![0; 5])
            .await;
        assert_eq!(
            big,
            Err(TransportError::PayloadTooLarge { size: 5, max: 4 })
        );
        assert_eq!(r.stats().too_large, 1);
    }

    async fn loss_pattern(seed: u64) -> Vec<bool> {
        let (r, _) = cluster(seed);
        r.set_drop_probability(0.3);
        let mut out = Vec::new();
        for _ in 0..64 {
            out.push(ping(&r, 1, 2).await.is_ok());
        }
        out
    }

    #[tokio::test]
    async fn loss_is_seeded() {
        let a = loss_pattern(42).await;
        assert_eq!(a, loss_pattern(42).await);
        let ok = a.iter().filter(|x| **x).count();
        // Both directions lose 30%: about half survive; never all, never none.
        assert!(ok > 0 && ok < a.len(), "ok = {ok}");
        assert_ne!(a, loss_pattern(43).await);
    }

    #[tokio::test]
    async fn delays_both_ways() {
        let (r, _) = cluster(5);
        r.set_delay(Duration::from_millis(100), Duration::from_millis(100));
        let t0 = tokio::time::Instant::now();
        assert!(ping(&r, 1, 2).await.is_ok());
        // A sleep never ends early: request and response each waited 100 ms.
        assert!(t0.elapsed() >= Duration::from_millis(200));
    }
}
