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
# The chaos smoke on network namespaces (a few minutes): partition the
# leader, kill -9 a follower, one concurrent-edit round, then every
# invariant of the checker (docs/CHAOS.md). It needs root and `ip netns`;
# without them it prints "skipped: ..." and passes (FSD_CHAOS_REQUIRE=1,
# which .ci/run sets, makes that a failure, as it does for sync.rs t80).
# It reuses the binaries `cargo test` just built.
bash deploy/chaos/smoke.sh
# Real networks (issue 17), each in its own namespaces, a few minutes in
# all: two private sites behind MASQUERADE routers and a public member
# (relay, hole punching; prints direct vs relayed throughput), and a member
# whose address changes under it (found again without operator help). Same
# skip rule as the smoke (FSD_CHAOS_REQUIRE=1 fails instead).
bash deploy/chaos/nat.sh --both
bash deploy/chaos/readdress.sh
# A router that maps ports (miniupnpd in a namespace): with UPnP IGD, then
# with only PCP/NAT-PMP; the node becomes public at the mapped port and
# records it.
bash deploy/chaos/upnp.sh
bash deploy/chaos/upnp.sh --pcp
# Restarts without election storms (issue 17): the compose cluster (an
# image built in seconds from this debug binary) where Docker runs, each
# node restarted in turn with `docker restart` while writers write: no
# leader change for a follower, at most one for the leader, nothing lost;
# then the netns equivalent with each node down 5 s, so a leader's restart
# goes through a real election.
bash deploy/chaos/restart.sh
FSD_RS_DOWN=5 bash deploy/chaos/restart.sh --netns
