//! The sync service's part of `GET /status` and `GET /metrics`.

use std::collections::HashMap;

use filesyncd_p2p::{PeerPath, Reachability};

use crate::api::types::{Member, NatStatus};
use crate::api::ApiState;
use crate::daemon::sync::SyncStatus;

/// The sync fields of `/status`.
pub struct SyncView {
    pub sync: Option<SyncStatus>,
    /// The engine reports nothing pending, its local root equals the
    /// cluster root read now, and this node knows a leader (without one it
    /// cannot know what it misses: a restarted node that reaches no quorum
    /// is not in sync, whatever its files say).
    pub in_sync: bool,
    pub local_root: Option<String>,
    /// The synced directory.
    pub dir: Option<String>,
}

/// The sync fields of `/status`, against the cluster root `cluster_root`
/// (hex), `leader_known` as this node sees it.
pub fn sync_view(s: &ApiState, cluster_root: &str, leader_known: bool) -> SyncView {
    let Some(h) = &s.sync else {
        return SyncView {
            sync: None,
            in_sync: false,
            local_root: None,
            dir: None,
        };
    };
    let mut st = h.status.borrow().clone();
    st.transfers = h.transfers.snapshot();
    SyncView {
        in_sync: leader_known && in_sync(&st, cluster_root),
        local_root: st.local_root.clone(),
        dir: Some(h.root.display().to_string()),
        sync: Some(st),
    }
}

/// Whether a published sync status says "in sync" with `cluster_root`.
pub fn in_sync(st: &SyncStatus, cluster_root: &str) -> bool {
    st.started && st.in_sync && st.local_root.as_deref() == Some(cluster_root)
}

/// Marks each member reachable when this node is connected to it (itself:
/// always), with the path of that connection (direct or relayed). Unknown
/// without a p2p client.
pub async fn mark_reachable(s: &ApiState, members: &mut [Member]) {
    let Some(client) = &s.p2p else {
        return;
    };
    let Ok(paths) = client.peer_paths().await else {
        return;
    };
    let paths: HashMap<String, PeerPath> = paths
        .iter()
        .map(|(p, path)| (p.to_string(), *path))
        .collect();
    for m in members {
        let me = m.peer_id == s.peer_id;
        let path = paths.get(&m.peer_id);
        m.reachable = Some(me || path.is_some());
        m.path = path.filter(|_| !me).map(|p| p.as_str().to_owned());
    }
}

/// This node's reachability as the p2p layer sees it (`None` without one).
pub async fn nat_status(s: &ApiState) -> Option<NatStatus> {
    let view = s.p2p.as_ref()?.nat_view().await.ok()?;
    Some(NatStatus {
        reachability: match view.reachability {
            Reachability::Public(_) => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        }
        .to_owned(),
        observed: view.observed.iter().map(|(a, _)| a.to_string()).collect(),
        relayed: view.relayed.iter().map(|a| a.to_string()).collect(),
    })
}

/// Prometheus text for the sync service (empty without it).
pub fn metrics_text(st: Option<&SyncStatus>, in_sync: bool) -> String {
    let Some(st) = st else {
        return String::new();
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "filesyncd_sync_in_sync",
        "gauge",
        "1 if the files on disk equal the committed tree.",
        u64::from(in_sync),
    );
    metric(
        "filesyncd_sync_halted",
        "gauge",
        "1 if sync stopped (marker missing or foreign, root looks emptied).",
        u64::from(st.halted.is_some()),
    );
    metric(
        "filesyncd_sync_paused",
        "gauge",
        "1 if local changes are withheld until confirmed (mass delete or mass change).",
        u64::from(st.paused.is_some()),
    );
    metric(
        "filesyncd_sync_withheld_changes",
        "gauge",
        "Local changes (paths) withheld until `filesyncd confirm`.",
        st.withheld,
    );
    metric(
        "filesyncd_sync_held_back_files",
        "gauge",
        "Files larger than --max-file-size: held back here or not fetched.",
        st.held_back,
    );
    metric(
        "filesyncd_sync_applied_index",
        "gauge",
        "Log index the sync engine's view reflects.",
        st.applied,
    );
    metric(
        "filesyncd_sync_lag_versions",
        "gauge",
        "Committed versions not yet materialized here (sync lag).",
        st.pending_remote,
    );
    metric(
        "filesyncd_sync_pending_local",
        "gauge",
        "Local changes not yet committed.",
        st.pending_local,
    );
    metric(
        "filesyncd_sync_transfers",
        "gauge",
        "Files being fetched now.",
        st.transfers.len() as u64,
    );
    metric(
        "filesyncd_versions_committed_total",
        "counter",
        "Versions of local changes this node committed since start.",
        st.versions_proposed,
    );
    metric(
        "filesyncd_files_written_total",
        "counter",
        "Committed versions written to disk since start.",
        st.files_written,
    );
    metric(
        "filesyncd_files_deleted_total",
        "counter",
        "Committed deletions applied to disk since start.",
        st.files_deleted,
    );
    metric(
        "filesyncd_conflicts_total",
        "counter",
        "Conflict copies made since start.",
        st.conflicts,
    );
    metric(
        "filesyncd_chunks_fetched_total",
        "counter",
        "Chunks received from peers since start.",
        st.chunks_fetched,
    );
    metric(
        "filesyncd_bytes_received_total",
        "counter",
        "Chunk bytes received from peers since start.",
        st.bytes_fetched,
    );
    metric(
        "filesyncd_chunks_deduplicated_total",
        "counter",
        "Chunks a write found locally instead of fetching them, since start.",
        st.chunks_reused,
    );
    metric(
        "filesyncd_version_store_sweeps_total",
        "counter",
        "Sweeps of the version store (chunks no retained version needs) since start.",
        st.sweeps,
    );
    metric(
        "filesyncd_version_store_freed_bytes_total",
        "counter",
        "Bytes of stored chunks the sweeps removed since start.",
        st.blob_bytes_freed,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_sync_needs_the_cluster_root() {
        let st = SyncStatus {
            started: true,
            in_sync: true,
            local_root: Some("ab".into()),
            ..SyncStatus::default()
        };
        assert!(in_sync(&st, "ab"));
        assert!(!in_sync(&st, "cd"), "the cluster moved on");
        assert!(!in_sync(
            &SyncStatus {
                in_sync: false,
                ..st.clone()
            },
            "ab"
        ));
        assert!(!in_sync(&SyncStatus::default(), ""));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        assert_eq!(metrics_text(None, false), "");
        let st = SyncStatus {
            pending_remote: 7,
            bytes_fetched: 1234,
            chunks_reused: 5,
            ..SyncStatus::default()
        };
        let text = metrics_text(Some(&st), true);
        for line in [
            "filesyncd_sync_lag_versions 7",
            "filesyncd_bytes_received_total 1234",
            "filesyncd_chunks_deduplicated_total 5",
            "filesyncd_sync_in_sync 1",
            "# TYPE filesyncd_conflicts_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.split_once(' ').unwrap();
            assert!(name.starts_with("filesyncd_"), "{l}");
            value.parse::<u64>().unwrap();
        }
    }
}
