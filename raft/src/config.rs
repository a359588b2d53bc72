//! Raft timing, batching and snapshot settings for filesyncd.
//!
//! openraft's defaults (50 ms heartbeat, 150–300 ms election timeout) assume a
//! quiet LAN and a dedicated core. filesyncd runs in containers on busy hosts
//! and in chaos tests where a scheduler hiccup of a few hundred milliseconds is
//! normal, so the defaults here are five to seven times slower: a 250 ms
//! heartbeat and a randomized 1000–2000 ms election timeout. Tests shrink them
//! with [`RaftConfig::fast_for_tests`].
//!
//! Invariants enforced by [`RaftConfig::validate`]:
//! - `heartbeat_interval < election_timeout_min < election_timeout_max`, and the
//!   minimum election timeout is at least twice the heartbeat (a single lost
//!   heartbeat must not start an election);
//! - every size and count is non-zero, and one snapshot chunk (plus framing)
//!   fits in one RPC payload (`snapshot_chunk_bytes + 64 KiB <= max_rpc_bytes`);
//! - forwarding and proposal deadlines are non-zero, and one forward attempt
//!   fits in the proposal deadline.
//!
//! Note that openraft uses `heartbeat_interval` as the deadline of one
//! AppendEntries RPC, so `max_payload_entries` must keep one batch small
//! enough to cross the network within a heartbeat.

use std::time::Duration;

use thiserror::Error;

/// Bytes reserved for framing around one snapshot chunk in an RPC payload.
pub const SNAPSHOT_CHUNK_OVERHEAD: u64 = 64 * 1024;

/// When openraft builds a snapshot of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Build a snapshot once this many entries were committed since the last one.
    LogsSinceLast(u64),
    /// Never build one on its own (only on an explicit trigger).
    Never,
}

/// Settings of one Raft node. Build with [`RaftConfig::default`] (production)
/// or [`RaftConfig::fast_for_tests`], adjust fields, then call
/// [`RaftConfig::validate`] (done again by `RaftNode::open`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// Name of the cluster, for logs only.
    pub cluster_name: String,
    /// Leader heartbeat period; also the deadline of one AppendEntries RPC.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// Deadline of one snapshot chunk RPC (send + install on the last chunk).
    pub install_snapshot_timeout: Duration,
    /// When to build snapshots.
    pub snapshot_policy: SnapshotPolicy,
    /// Log entries kept after a snapshot, so slightly lagging followers can
    /// catch up from the log instead of a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Lag (in entries) under which a learner counts as caught up.
    pub replication_lag_threshold: u64,
    /// Maximum entries in one AppendEntries RPC.
    pub max_payload_entries: u64,
    /// Size of one snapshot chunk on the wire.
    pub snapshot_chunk_bytes: u64,
    /// Cap on one RPC payload (request or response) in bytes; larger payloads
    /// are refused before sending and on receipt.
    pub max_rpc_bytes: usize,
    /// Deadline of one forwarded client write (follower → leader) attempt.
    pub forward_timeout: Duration,
    /// Total deadline of one `propose`, over all retries.
    pub propose_timeout: Duration,
    /// First retry delay of `propose` (doubles up to `retry_backoff_max`).
    pub retry_backoff_min: Duration,
    /// Largest retry delay of `propose`.
    pub retry_backoff_max: Duration,
    /// Delay between retries to an unreachable peer (openraft backoff).
    pub unreachable_backoff: Duration,
    /// Ask a quorum before starting an election (`node::prevote`): a voter
    /// that cannot win does not raise the term.
    pub pre_vote: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            cluster_name: "filesyncd".to_string(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            install_snapshot_timeout: Duration::from_secs(10),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            replication_lag_threshold: 1_000,
            max_payload_entries: 64,
            snapshot_chunk_bytes: 1024 * 1024,
            max_rpc_bytes: 32 * 1024 * 1024,
            forward_timeout: Duration::from_secs(5),
            propose_timeout: Duration::from_secs(30),
            retry_backoff_min: Duration::from_millis(50),
            retry_backoff_max: Duration::from_millis(1000),
            unreachable_backoff: Duration::from_millis(500),
            pre_vote: true,
        }
    }
}

/// A setting that [`RaftConfig::validate`] refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("heartbeat interval {heartbeat:?} must be > 0 and at most half of election_timeout_min {election_min:?}")]
    Heartbeat {
        heartbeat: Duration,
        election_min: Duration,
    },
    #[error("election_timeout_min {min:?} must be below election_timeout_max {max:?}")]
    ElectionRange { min: Duration, max: Duration },
    #[error("{0} must be non-zero")]
    Zero(&'static str),
    #[error("snapshot chunk of {chunk} bytes plus framing does not fit max_rpc_bytes {max}")]
    ChunkTooLarge { chunk: u64, max: usize },
    #[error("forward_timeout {forward:?} exceeds propose_timeout {propose:?}")]
    ForwardTimeout {
        forward: Duration,
        propose: Duration,
    },
    #[error("openraft refused the config: {0}")]
    OpenRaft(String),
}

impl RaftConfig {
    /// Short timeouts for in-process clusters in tests (heartbeat 50 ms,
    /// elections 300–600 ms), small batches and a low snapshot threshold.
    pub fn fast_for_tests() -> Self {
        RaftConfig {
            cluster_name: "filesyncd-test".to_string(),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            install_snapshot_timeout: Duration::from_secs(2),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 50,
            replication_lag_threshold: 50,
            max_payload_entries: 64,
            snapshot_chunk_bytes: 64 * 1024,
            max_rpc_bytes: 8 * 1024 * 1024,
            forward_timeout: Duration::from_millis(1500),
            propose_timeout: Duration::from_secs(15),
            retry_backoff_min: Duration::from_millis(20),
            retry_backoff_max: Duration::from_millis(200),
            unreachable_backoff: Duration::from_millis(100),
            pre_vote: true,
        }
    }

    /// Check the invariants listed in the module doc.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero()
            || self.heartbeat_interval * 2 > self.election_timeout_min
        {
            return Err(ConfigError::Heartbeat {
                heartbeat: self.heartbeat_interval,
                election_min: self.election_timeout_min,
            });
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError::ElectionRange {
                min: self.election_timeout_min,
                max: self.election_timeout_max,
            });
        }
        let zero_checks: [(bool, &'static str); 10] = [
            (
                self.install_snapshot_timeout.is_zero(),
                "install_snapshot_timeout",
            ),
            (self.max_payload_entries == 0, "max_payload_entries"),
            (self.snapshot_chunk_bytes == 0, "snapshot_chunk_bytes"),
            (self.max_rpc_bytes == 0, "max_rpc_bytes"),
            (self.forward_timeout.is_zero(), "forward_timeout"),
            (self.propose_timeout.is_zero(), "propose_timeout"),
            (self.retry_backoff_min.is_zero(), "retry_backoff_min"),
            (self.unreachable_backoff.is_zero(), "unreachable_backoff"),
            (
                matches!(self.snapshot_policy, SnapshotPolicy::LogsSinceLast(0)),
                "snapshot_policy threshold",
            ),
            (
                self.replication_lag_threshold == 0,
                "replication_lag_threshold",
            ),
        ];
        if let Some((_, name)) = zero_checks.iter().find(|(bad, _)| *bad) {
            return Err(ConfigError::Zero(name));
        }
        if self.retry_backoff_max < self.retry_backoff_min {
            return Err(ConfigError::Zero("retry_backoff_max - retry_backoff_min"));
        }
        let fits = self
            .snapshot_chunk_bytes
            .checked_add(SNAPSHOT_CHUNK_OVERHEAD)
            .is_some_and(|need| need <= self.max_rpc_bytes as u64);
        if !fits {
            return Err(ConfigError::ChunkTooLarge {
                chunk: self.snapshot_chunk_bytes,
                max: self.max_rpc_bytes,
            });
        }
        if self.forward_timeout > self.propose_timeout {
            return Err(ConfigError::ForwardTimeout {
                forward: self.forward_timeout,
                propose: self.propose_timeout,
            });
        }
        Ok(())
    }

    /// The openraft configuration these settings describe (validated by both
    /// this crate and openraft).
    pub fn to_openraft(&self) -> Result<openraft::Config, ConfigError> {
        self.validate()?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            install_snapshot_timeout: ms(self.install_snapshot_timeout),
            max_payload_entries: self.max_payload_entries,
            replication_lag_threshold: self.replication_lag_threshold,
            snapshot_policy: match self.snapshot_policy {
                SnapshotPolicy::LogsSinceLast(n) => openraft::SnapshotPolicy::LogsSinceLast(n),
                SnapshotPolicy::Never => openraft::SnapshotPolicy::Never,
            },
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            ..openraft::Config::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::OpenRaft(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_preset_are_valid() {
        RaftConfig::default().validate().unwrap();
        RaftConfig::fast_for_tests().validate().unwrap();
        let c = RaftConfig::default().to_openraft().unwrap();
        assert_eq!(c.heartbeat_interval, 250);
        assert_eq!(c.election_timeout_min, 1000);
        assert_eq!(c.election_timeout_max, 2000);
        assert_eq!(
            c.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(10_000)
        );
        assert_eq!(c.snapshot_max_chunk_size, 1024 * 1024);
    }

    #[test]
    fn refuses_bad_timing() {
        let c = RaftConfig {
            heartbeat_interval: Duration::from_millis(600),
            ..RaftConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Heartbeat { .. })));
        let mut c = RaftConfig::default();
        c.election_timeout_max = c.election_timeout_min;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionRange { .. })
        ));
        let mut c = RaftConfig::default();
        c.forward_timeout = c.propose_timeout + Duration::from_secs(1);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ForwardTimeout { .. })
        ));
    }

    #[test]
    fn refuses_zero_and_oversized_chunks() {
        let c = RaftConfig {
            max_payload_entries: 0,
            ..RaftConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("max_payload_entries")));
        let c = RaftConfig {
            snapshot_policy: SnapshotPolicy::LogsSinceLast(0),
            ..RaftConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Zero(_))));
        let mut c = RaftConfig::default();
        c.snapshot_chunk_bytes = c.max_rpc_bytes as u64;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ChunkTooLarge { .. })
        ));
        assert!(c.to_openraft().is_err());
    }
}
