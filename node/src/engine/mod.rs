//! The sync engine (being written).

pub mod fs;
pub mod fs_fake;
mod fs_fake_state;
pub mod fs_real;
pub mod ignore;
pub mod materialize;
pub mod names;
pub mod plan;
mod plan_types;
pub mod ports;
pub mod scan;
pub mod sync;
pub mod types;
pub mod watch;

#[cfg(test)]
mod materialize_tests;
#[cfg(test)]
mod plan_guard_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod scan_tests;
