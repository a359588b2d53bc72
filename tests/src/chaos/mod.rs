//! Chaos workload and invariant checker for real filesyncd clusters.
//!
//! Goal: break a cluster on purpose (partitions, SIGKILL, pauses, loss,
//! full and lost disks, membership changes) while writers on every node
//! change files, then prove nothing was lost; and never pass by skipping:
//! every planned fault must be confirmed in place, every awaited condition
//! is a check that fails the run, and the cluster must settle within
//! [`report::CONVERGE_LIMIT`] of the final heal (the only timing asserted).
//! Non-goal: injecting faults itself (the `deploy/chaos/` scripts do that;
//! [`lab`] confirms them).
//!
//! Flow: [`workload`] writes self-describing files ([`content`]: id,
//! length, blake3 in a header line) into every node's synced directory and
//! records each in the [`ledger`]; pollers ask each node which versions it
//! reports committed (`history --json`, and `ls` for conflict copies) and
//! mark them acknowledged. The faults run meanwhile ([`scenario`] on the
//! namespace lab through [`lab`]; the loopback test kills processes
//! directly). After the heal, [`report::finish`] waits until the cluster
//! settles, sweeps the last acknowledgements, gathers each node's status,
//! committed tree, disk and `verify` ([`observe`]) and runs the pure
//! invariants of [`checker`].
//!
//! Used by two crates: the `fsd-chaos` binary (`src/bin/fsd-chaos.rs`,
//! driven by `deploy/chaos/smoke.sh` and `long.sh`) and the loopback test
//! `tests/chaos_smoke.rs`; each includes this directory with `#[path]`.

pub mod checker;
pub mod content;
pub mod lab;
pub mod ledger;
pub mod node;
pub mod observe;
pub mod report;
pub mod scenario;
pub mod workload;

#[cfg(test)]
mod checker_tests;
