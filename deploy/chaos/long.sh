#!/usr/bin/env bash
# The long chaos run: writers on every node under a cycle of faults
# (leader partitioned, leader killed, node isolated, packet loss, one-way
# partition, pause, follower killed), a concurrent-edit round every third
# fault; then heal, settle, check. Figures: the CHAOS-RESULT line.
#
#   long.sh [--minutes M (30)] [--nodes N (3)] [--seed S]
#
# See suite.sh for the environment and exit codes.
exec "$(dirname "$0")/suite.sh" long "$@"
