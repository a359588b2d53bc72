#!/usr/bin/env bash
# CI smoke of the chaos suite (a few minutes): a 3-node cluster in network
# namespaces, writers on every node; the leader partitioned into the
# minority, a follower killed with SIGKILL and restarted, a data dir full
# for 5 s, one concurrent-edit round; heal, settle, check every invariant.
#
#   smoke.sh [--seed S] [--nodes N]
#
# Skips (exit 0, "skipped: needs root and ip netns") when not root or when
# network namespaces do not work; see suite.sh for the rest.
exec "$(dirname "$0")/suite.sh" smoke "$@"
