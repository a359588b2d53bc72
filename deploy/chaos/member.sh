#!/usr/bin/env bash
# Membership faults on netns nodes: a member removed, a node's disks lost,
# a node joining again.
#
#   member.sh remove ID [VIA]  remove the member with node id ID through the
#                              CLI (`filesyncd remove`) of node VIA, or of the
#                              first other running node that succeeds; marks
#                              the node that had ID as removed (it hands out
#                              no join tokens, see run.sh)
#   member.sh wipe i data|all  SIGKILL node i and delete its data dir (node id,
#                              p2p key, Raft log, chunk store, index); with
#                              `all` its synced dir's contents too (a lost
#                              disk). The node is marked to join again: the
#                              next start (member.sh rejoin, or proc.sh heal)
#                              joins through a member with a fresh token, as a
#                              new node (new node id and peer id: a node with
#                              Raft state cannot join, its --join is ignored)
#   member.sh rejoin i         start a wiped node; it joins (run.sh start)
#   member.sh state i          one line: "running=0|1 data_entries=N
#                              dir_entries=N" (what the suite reads to
#                              confirm a wipe)
#   member.sh members i        the node ids node i lists as members, one line
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root
[[ $FSD_TARGET == netns ]] || usage_die "member.sh works on FSD_TARGET=netns only"

# Index of the node whose status says node id ID (empty if none answers so).
node_of_id() {
  local id=$1 i
  for i in $(fsd_nodes); do
    if [[ $(status_field "$i" node_id) == "$id" ]]; then echo "$i"; return 0; fi
  done
  return 0
}

remove() {
  local id=$1 via=${2:-} who j out
  [[ $id =~ ^[0-9a-f]{16}$ ]] || usage_die "remove needs a node id (16 hex digits), got '$id'"
  who=$(node_of_id "$id")
  for j in ${via:-$(fsd_nodes)}; do
    [[ $j == "$who" && -z $via ]] && continue
    [[ -n $(fsd_pid "$j") ]] || continue
    if out=$(fsd_cli "$j" remove "$id" 2>&1); then
      [[ -n $who ]] && touch "$FSD_STATE/n$who/removed"
      echo "member: $id${who:+ (node $who)} removed through node $j: $(tr '\n' ' ' <<<"$out")"
      return 0
    fi
    echo "member.sh: node $j: remove $id: $out" >&2
  done
  die "no node removed member $id"
}

wipe() {
  local i=$1 what=$2 d dir
  check_index "$i"
  [[ $what == data || $what == all ]] || usage_die "wipe needs data or all"
  d=$FSD_STATE/n$i
  "$FSD_CHAOS_DIR/run.sh" kill "$i" >/dev/null
  # proc.sh heal (heal.sh) starts it again if the run stops before the rejoin.
  mkdir -p "$FSD_STATE/killed"; touch "$FSD_STATE/killed/$i"
  mountpoint -q "$d/dfs" || die "$d/dfs is not the node's data tmpfs (netns.sh up mounts it)"
  find "$(fsd_data "$i")" -mindepth 1 -delete
  if [[ $what == all ]]; then
    dir=$d/fs/dir
    [[ $(findmnt -n -o SOURCE "$dir" 2>/dev/null) == fsd-empty-root ]] && die "node $i has an empty root mounted"
    find "$dir" -mindepth 1 -delete
  fi
  rm -f "$d/joined" "$d/removed"
  touch "$d/rejoin"
  echo "member: node $i killed, $( [[ $what == all ]] && echo 'data dir and synced dir' || echo 'data dir') wiped"
}

rejoin() {
  local i=$1
  check_index "$i"
  [[ -f $FSD_STATE/n$i/rejoin ]] || die "node $i was not wiped (member.sh wipe first)"
  "$FSD_CHAOS_DIR/run.sh" start "$i"
  rm -f "$FSD_STATE/killed/$i"
  echo "member: node $i joined again as $(status_field "$i" node_id)"
}

state() {
  local i=$1 d
  check_index "$i"
  d=$FSD_STATE/n$i
  echo "running=$([[ -n $(fsd_pid "$i") ]] && echo 1 || echo 0)" \
    "data_entries=$(find "$(fsd_data "$i")" -mindepth 1 2>/dev/null | wc -l)" \
    "dir_entries=$(find "$d/fs/dir" -mindepth 1 2>/dev/null | wc -l)"
}

members() {
  fsd_cli "$1" members --json | python3 -c '
import json, sys
print(" ".join(m["id"] for m in json.load(sys.stdin)))'
}

case ${1:-} in
  remove) remove "${2:?remove needs a node id}" "${3:-}" ;;
  wipe) wipe "${2:?wipe needs a node}" "${3:?wipe needs data or all}" ;;
  rejoin) rejoin "${2:?rejoin needs a node}" ;;
  state) state "${2:?state needs a node}" ;;
  members) check_index "${2:?members needs a node}"; members "$2" ;;
  *) sed -n '2,23p' "$0"; exit 2 ;;
esac
