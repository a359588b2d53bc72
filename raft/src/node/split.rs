//! Proposals of any size: a change of many ops is committed as consecutive
//! log entries of bounded bytes, so that replication never meets the RPC
//! cap and one huge entry never holds the log (and heartbeats) up.
//!
//! The budget of one entry is chosen so that a full AppendEntries
//! (`max_payload_entries` entries) still fits in `max_rpc_bytes`, and never
//! exceeds [`MAX_ENTRY_BYTES`]. Entries are proposed one after another, in
//! order: ops of one change apply in the order they were given.

use super::{NodeError, RaftNode};
use crate::command::{Op, Outcome};
use crate::transport::RaftTransport;

/// Upper bound of one entry's encoded ops, whatever the RPC cap.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// What an entry carries beyond its ops (request id, clock, tags, log id,
/// vote, RPC framing): generous.
const ENTRY_OVERHEAD: usize = 4 * 1024;
/// The smallest budget, whatever the configuration.
const MIN_ENTRY_BYTES: usize = 16 * 1024;

/// A split proposal stopped at an entry that failed: the outcomes of the
/// ops committed before it, in order, and its error.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {} ops committed)", done.len())]
pub struct SplitError {
    pub done: Vec<Outcome>,
    #[source]
    pub error: NodeError,
}

/// The encoded size of one op (as it travels inside an entry).
pub fn op_bytes(op: &Op) -> usize {
    postcard::experimental::serialized_size(op).unwrap_or(usize::MAX)
}

/// Splits `ops` into groups of at most `budget` encoded bytes each, keeping
/// their order. An op larger than the budget travels alone (the RPC cap
/// still refuses it if it does not fit at all).
pub fn split_ops(ops: Vec<Op>, budget: usize) -> Vec<Vec<Op>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0usize;
    for op in ops {
        let n = op_bytes(&op);
        if !cur.is_empty() && bytes.saturating_add(n) > budget {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes = bytes.saturating_add(n);
        cur.push(op);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl<T: RaftTransport> RaftNode<T> {
    /// The byte budget of one entry's ops (see the module doc).
    pub fn entry_budget(&self) -> usize {
        let c = &self.inner.config;
        let per_entry =
            c.max_rpc_bytes / usize::try_from(c.max_payload_entries.max(1)).unwrap_or(1);
        per_entry
            .min(MAX_ENTRY_BYTES)
            .saturating_sub(ENTRY_OVERHEAD)
            .max(MIN_ENTRY_BYTES)
    }

    /// Commits `ops` as consecutive entries of at most
    /// [`RaftNode::entry_budget`] bytes; one outcome per op, in order.
    pub async fn propose_split(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, SplitError> {
        let budget = self.entry_budget();
        let mut done = Vec::with_capacity(ops.len());
        for entry in split_ops(ops, budget) {
            let n = entry.len();
            match self.propose(entry).await {
                Ok(p) => {
                    let o = p.response.outcomes();
                    if o.len() != n {
                        let error = NodeError::Fatal(format!(
                            "entry answered {} outcomes for {n} ops ({:?})",
                            o.len(),
                            p.response
                        ));
                        return Err(SplitError { done, error });
                    }
                    done.extend_from_slice(o);
                }
                Err(error) => return Err(SplitError { done, error }),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Version;

    fn del(path: String) -> Op {
        Op::Delete {
            path,
            base: Version::new(1, 0),
        }
    }

    #[test]
    fn groups_stay_within_the_budget_and_keep_order() {
        let ops: Vec<Op> = (0..5000)
            .map(|i| del(format!("dir{}/file-{i}", i % 97)))
            .collect();
        let budget = 8 * 1024;
        let groups = split_ops(ops.clone(), budget);
        assert!(groups.len() > 1);
        for g in &groups {
            assert!(!g.is_empty());
            let bytes: usize = g.iter().map(op_bytes).sum();
            assert!(bytes <= budget, "group of {bytes} bytes");
        }
        let flat: Vec<Op> = groups.into_iter().flatten().collect();
        assert_eq!(flat, ops);
    }

    #[test]
    fn an_op_over_the_budget_travels_alone() {
        let big = del("x".repeat(3000));
        let ops = vec![del("a".into()), big.clone(), del("b".into())];
        let groups = split_ops(ops, 1000);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[1], vec![big]);
        assert!(split_ops(Vec::new(), 1000).is_empty());
    }
}
