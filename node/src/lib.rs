//! The filesyncd daemon as a library, so that integration tests can drive
//! it in-process.
//!
//! Layers, each depending only on those below it (no cycles):
//! - [`api`]: the control API (HTTP) and its client; uses the daemon's
//!   handles.
//! - [`daemon`]: start-up, Raft and p2p wiring, the sync task; takes the
//!   control API as an argument of [`daemon::run`] (the binary passes
//!   [`api::serve_daemon`]).
//! - [`engine`]: the sync engine; sees Raft and the network only through
//!   its ports.
//! - [`config`]: flags → a validated configuration.
//! - [`credential`]: the control API's secret on disk (daemon and CLI).

pub mod api;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod engine;

/// Wall-clock milliseconds since the Unix epoch (0 before it, saturating
/// far after it): the time the daemon stamps entries and compares with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
