#!/usr/bin/env bash
# The test command: unit, property, doc and integration tests of every crate.
# Benches are compiled by clippy in .ci/run but not run here (they are
# measurements, run by hand: see README.md). Dependencies are built with
# opt-level 3 even in the dev profile (Cargo.toml), so hashing runs near
# release speed.
set -euo pipefail
cd "$(dirname "$0")/.."
# `cargo test` builds target/debug/filesyncd for node's integration tests;
# the multi-process suites (tests/) run that same binary instead of
# building their own (which would rebuild libp2p with other features).
export FILESYNCD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/filesyncd"
cargo test --workspace --locked
# The chaos smoke on network namespaces (root): `bash deploy/chaos/smoke.sh`.
# Not run here yet: it passes, but after a kill -9 a node may settle only at
# its 10-minute backstop rescan, too close to the smoke's 600 s limit
# (docs/CHAOS.md, finding 3). The loopback chaos tests above run always.
