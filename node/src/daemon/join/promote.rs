//! Promoting caught-up learners to voters while the cluster has fewer
//! voters than `max_voters` (the leader's setting).
//!
//! [`promote_learners`] runs on every member for the daemon's lifetime and
//! acts only while this node leads, so a leader change loses nothing: the
//! next leader promotes. [`pick_promotion`] is the decision, pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use filesyncd_raft::NodeId;
use tokio::time::Instant;

use crate::daemon::Node;

/// Pause after a failed promotion, and the re-check period without news.
const RETRY: Duration = Duration::from_secs(1);

/// The learner to promote now, if any: only while `voters` is below
/// `max_voters` and no membership change is in flight (`joint`), a learner
/// whose replicated index (`matched`, from the leader's replication
/// metrics) is within `lag` of the leader's last index; the most caught-up
/// first, then the smallest id.
pub fn pick_promotion(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    matched: &BTreeMap<NodeId, Option<u64>>,
    last_log_index: Option<u64>,
    joint: bool,
    max_voters: usize,
    lag: u64,
) -> Option<NodeId> {
    if joint || voters.len() >= max_voters {
        return None;
    }
    let last = last_log_index?;
    learners
        .iter()
        .filter_map(|id| {
            let m = (*matched.get(id)?)?;
            (m.saturating_add(lag) >= last).then_some((m, *id))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

/// Runs until Raft stops.
pub async fn promote_learners(node: Node, max_voters: usize) {
    let lag = node.config().replication_lag_threshold;
    let mut metrics = node.metrics_watch();
    let mut not_before = Instant::now();
    loop {
        let pick = {
            let m = metrics.borrow_and_update();
            if m.running_state.is_err() {
                return;
            }
            if m.current_leader != Some(node.id()) || Instant::now() < not_before {
                None
            } else {
                let mem = m.membership_config.membership();
                let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
                let learners: BTreeSet<NodeId> = mem.learner_ids().collect();
                let matched: BTreeMap<NodeId, Option<u64>> = m
                    .replication
                    .iter()
                    .flatten()
                    .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                    .collect();
                pick_promotion(
                    &voters,
                    &learners,
                    &matched,
                    m.last_log_index,
                    mem.get_joint_config().len() > 1,
                    max_voters,
                    lag,
                )
            }
        };
        if let Some(id) = pick {
            let node_hex = format!("{id:016x}");
            match node.promote(id).await {
                Ok(log_id) => {
                    tracing::info!(node = %node_hex, index = log_id.index, "learner promoted to voter")
                }
                Err(e) => {
                    tracing::warn!(node = %node_hex, error = %e, "promotion failed; will retry");
                    not_before = Instant::now() + RETRY;
                }
            }
            continue;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64) -> Option<u64> {
        Some(index)
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn promotes_the_most_caught_up_learner_below_the_voter_cap() {
        let voters = set(&[1, 2]);
        let learners = set(&[7, 8, 9]);
        let repl = BTreeMap::from([(7, at(90)), (8, at(100)), (9, None)]);
        let pick = |voters: &BTreeSet<NodeId>, joint, max, lag| {
            pick_promotion(voters, &learners, &repl, Some(100), joint, max, lag)
        };
        assert_eq!(pick(&voters, false, 5, 20), Some(8));
        // 7 is 10 behind: within a lag of 10, not of 5; 8 is ahead anyway.
        assert_eq!(
            pick_promotion(&voters, &set(&[7]), &repl, Some(100), false, 5, 10),
            Some(7)
        );
        assert_eq!(
            pick_promotion(&voters, &set(&[7]), &repl, Some(100), false, 5, 5),
            None
        );
        // A learner with nothing replicated yet is never promoted.
        assert_eq!(
            pick_promotion(&voters, &set(&[9]), &repl, Some(0), false, 5, 1000),
            None
        );
        // At the cap, or during a joint change: nobody.
        assert_eq!(pick(&set(&[1, 2, 3, 4, 5]), false, 5, 20), None);
        assert_eq!(pick(&voters, false, 2, 20), None);
        assert_eq!(pick(&voters, true, 5, 20), None);
        // Equally caught up: the smallest id.
        let repl2 = BTreeMap::from([(7, at(100)), (8, at(100))]);
        assert_eq!(
            pick_promotion(&voters, &set(&[7, 8]), &repl2, Some(100), false, 5, 0),
            Some(7)
        );
    }
}
