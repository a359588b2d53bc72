//! The filesyncd daemon as a library: the sync engine and (later) the
//! daemon wiring, so that integration tests can drive them in-process.

pub mod api;
pub mod config;
pub mod daemon;
pub mod engine;
