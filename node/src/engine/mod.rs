//! The sync engine (being written).

pub mod names;
pub mod plan;
mod plan_types;
pub mod types;

#[cfg(test)]
mod plan_tests;
