#!/usr/bin/env bash
# Heals every fault this kit can inject, on every node: partitions, loss,
# delay relays, disk ballast and empty roots, clock offsets (netns), and
# paused or killed nodes (resumed / started). Idempotent.
#
#   heal.sh
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root
d=$FSD_CHAOS_DIR
"$d/partition.sh" heal all
"$d/loss.sh" heal all
"$d/delay.sh" heal all
"$d/disk.sh" heal all
[[ $FSD_TARGET == netns ]] && "$d/clock.sh" heal all
"$d/proc.sh" heal all
for i in $(fsd_nodes); do
  node_exists "$i" || continue
  left=$(in_net "$i" iptables -w -S | grep -c -e "--comment $FSD_COMMENT" || true)
  ((left == 0)) || die "node $i still has $left chaos rules"
done
echo "heal: all faults removed"
