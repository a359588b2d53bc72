#!/usr/bin/env bash
# The long chaos run: writers on every node under a cycle of faults
# (leader partitioned, leader killed, node isolated, packet loss, a disk
# loss, an empty root, a pause, a full data dir, one-way partition,
# follower killed, the leader removed and re-joined, a full disk), each
# confirmed in place, a concurrent-edit round every third fault; then heal,
# settle, check (docs/CHAOS.md). Figures: the CHAOS-RESULT line.
#
#   long.sh [--minutes M (30)] [--nodes N (3)] [--seed S]
#
# See suite.sh for the environment and exit codes.
exec "$(dirname "$0")/suite.sh" long "$@"
