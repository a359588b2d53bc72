#!/usr/bin/env bash
# Network partitions with iptables in the nodes' own network namespaces.
#
#   partition.sh isolate i         node i cut off from every other node
#   partition.sh split A B         no traffic between groups A and B, e.g.
#                                  split 1,2 3,4,5 (nodes in neither group
#                                  keep talking to both)
#   partition.sh split-leader      majority/minority split with the current
#                                  leader in the minority (alone for 3 nodes,
#                                  with one follower for 5)
#   partition.sh oneway FROM TO    FROM's packets never reach TO; TO's still
#                                  reach FROM
#   partition.sh bridge [MID]      two halves that cannot talk to each other,
#                                  both talking to MID (default: the middle
#                                  node; with 5 nodes: {1,2} | 3 | {4,5})
#   partition.sh heal [i|all]      remove partition rules (default all)
#   partition.sh show              this kit's rules, per node
#
# Works on FSD_TARGET=netns (default) and FSD_TARGET=compose. Adding the
# same partition twice is a no-op; heal removes only rules this kit added.
# Prints the groups it made (the suite logs them as the fault).
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root

all_nodes() { fsd_nodes | tr '\n' ' '; }

parse_group() { tr ',' ' ' <<<"$1"; }

split() {
  local a b x y
  a=$(parse_group "$1"); b=$(parse_group "$2")
  for x in $a; do check_index "$x"; done
  for y in $b; do check_index "$y"; done
  for x in $a; do for y in $b; do
    [[ $x == "$y" ]] && usage_die "node $x is in both groups"
    cut_pair "$x" "$y"
  done; done
  echo "partition: {${1}} | {${2}}"
}

isolate() {
  local i=$1 others=() j
  check_index "$i"
  for j in $(fsd_nodes); do [[ $j == "$i" ]] || others+=("$j"); done
  ((${#others[@]})) || usage_die "no other nodes"
  split "$i" "$(IFS=,; echo "${others[*]}")"
}

split_leader() {
  local leader nodes=() n minority=() majority=() j
  leader=$(fsd_leader) || die "no node names a leader"
  read -r -a nodes <<<"$(all_nodes)"
  n=${#nodes[@]}
  ((n >= 3)) || usage_die "split-leader needs at least 3 nodes"
  minority=("$leader")
  for j in "${nodes[@]}"; do
    [[ $j == "$leader" ]] && continue
    if ((${#minority[@]} < (n - 1) / 2)); then minority+=("$j"); else majority+=("$j"); fi
  done
  echo "leader: node $leader"
  split "$(IFS=,; echo "${minority[*]}")" "$(IFS=,; echo "${majority[*]}")"
}

bridge() {
  local nodes=() n mid left=() right=() j k
  read -r -a nodes <<<"$(all_nodes)"
  n=${#nodes[@]}
  ((n >= 3)) || usage_die "bridge needs at least 3 nodes"
  mid=${1:-${nodes[$((n / 2))]}}
  check_index "$mid"
  k=0
  for j in "${nodes[@]}"; do
    [[ $j == "$mid" ]] && continue
    if ((k < (n - 1) / 2)); then left+=("$j"); else right+=("$j"); fi
    k=$((k + 1))
  done
  split "$(IFS=,; echo "${left[*]}")" "$(IFS=,; echo "${right[*]}")" >/dev/null
  echo "partition: bridge {$(IFS=,; echo "${left[*]}")} <-> $mid <-> {$(IFS=,; echo "${right[*]}")}"
}

heal() {
  local sel=${1:-all} i
  if [[ $sel == all ]]; then
    for i in $(fsd_nodes); do ipt_clear "$i" part; done
  else
    # Healing one node removes its own rules and every rule about it.
    check_index "$sel"
    ipt_clear "$sel" part
    for i in $(fsd_nodes); do
      [[ $i == "$sel" ]] || ipt_clear_about "$i" part "$(fsd_addr "$sel")"
    done
  fi
  echo "partition: healed ${sel}"
}

show() {
  local i
  for i in $(fsd_nodes); do
    echo "== node $i ($(fsd_addr "$i"))"
    node_exists "$i" || { echo "   (down)"; continue; }
    in_net "$i" iptables -w -S | grep -e "--comment $FSD_COMMENT" || echo "   (no rules)"
  done
}

case ${1:-} in
  isolate) isolate "${2:?isolate needs a node}" ;;
  split) split "${2:?split needs two groups}" "${3:?split needs two groups}" ;;
  split-leader) split_leader ;;
  oneway) check_index "${2:?}"; check_index "${3:?}"; block "$2" "$3"; echo "partition: $2 -/-> $3 (one way)" ;;
  bridge) bridge "${2:-}" ;;
  heal) heal "${2:-all}" ;;
  show) show ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
