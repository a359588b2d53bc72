# shellcheck shell=bash
# Shared helpers of the chaos scripts (sourced, not run).
#
# Two targets, chosen by FSD_TARGET:
#   netns    (default) nodes started by netns.sh/run.sh, one network
#            namespace each (fsd1..fsdN, eth0 = 10.77.0.N/24 on bridge fsdbr0)
#   compose  the containers of deploy/docker-compose.yml (project FSD_PROJECT,
#            default filesyncd); faults enter a container's network
#            namespace with nsenter, so the image needs no tools.
#
# Every iptables rule a fault adds carries the comment "fsd-chaos-<kind>" and
# lives in the node's own network namespace; heal removes exactly those.

set -euo pipefail

FSD_TARGET=${FSD_TARGET:-netns}
FSD_CHAOS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FSD_REPO=$(cd "$FSD_CHAOS_DIR/../.." && pwd)
FSD_STATE=${FSD_STATE:-/tmp/filesyncd-chaos}   # netns: node dirs, logs, pids
FSD_PREFIX=${FSD_PREFIX:-fsd}                  # netns names, interface names
FSD_SUBNET=${FSD_SUBNET:-10.77.0}              # netns addresses
# shellcheck disable=SC2034  # used by the scripts that source this file
FSD_BRIDGE=${FSD_PREFIX}br0
FSD_PORT=${FSD_PORT:-7400}
FSD_API=127.0.0.1:7401                          # inside each node's namespace
FSD_PROJECT=${FSD_PROJECT:-filesyncd}
FSD_NET=${FSD_NET:-172.28.77}                   # compose addresses .11 .12 .13
FSD_COMMENT=fsd-chaos

die() { echo "${0##*/}: $*" >&2; exit 1; }
usage_die() { echo "${0##*/}: $*" >&2; exit 2; }
need_root() { [[ $(id -u) == 0 ]] || usage_die "needs root (network namespaces, iptables)"; }

# The filesyncd binary used for netns nodes and for CLI calls on the host.
fsd_bin() {
  if [[ -n ${FSD_BIN:-} ]]; then echo "$FSD_BIN"; return; fi
  local c
  for c in "$FSD_REPO/target/release/filesyncd" \
           "$FSD_REPO/target-static/x86_64-unknown-linux-gnu/release/filesyncd" \
           "$FSD_REPO/target/debug/filesyncd"; do
    [[ -x $c ]] && { echo "$c"; return; }
  done
  command -v filesyncd || die "no filesyncd binary: build it or set FSD_BIN"
}

check_index() { [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= 200)) || usage_die "bad node index '$1'"; }

# Node indices, ascending.
fsd_nodes() {
  if [[ $FSD_TARGET == compose ]]; then
    docker ps -a --filter "label=com.docker.compose.project=$FSD_PROJECT" \
      --format '{{.Label "com.docker.compose.service"}}' | sed -n 's/^node\([0-9]\+\)$/\1/p' | sort -n
  else
    [[ -f $FSD_STATE/nodes ]] && cat "$FSD_STATE/nodes" || true
  fi
}

fsd_addr() {
  if [[ $FSD_TARGET == compose ]]; then echo "$FSD_NET.$((10 + $1))"; else echo "$FSD_SUBNET.$1"; fi
}

fsd_ns() { echo "$FSD_PREFIX$1"; }

# netns: node i's data directory, on a tmpfs of its own (netns.sh up mounts
# FSD_STATE/ni/dfs, FSD_DATA_SIZE) so that disk.sh fill-data can fill it.
fsd_data() { echo "$FSD_STATE/n$1/dfs/data"; }

fsd_cid() {
  docker ps -aq --filter "label=com.docker.compose.project=$FSD_PROJECT" \
    --filter "label=com.docker.compose.service=node$1" | head -n1
}

# PID of node i's daemon (empty when it does not run).
fsd_pid() {
  if [[ $FSD_TARGET == compose ]]; then
    local id; id=$(fsd_cid "$1"); [[ -n $id ]] || return 0
    local p; p=$(docker inspect -f '{{.State.Pid}}' "$id")
    [[ $p != 0 ]] && echo "$p" || true
  else
    local f=$FSD_STATE/n$1/pid
    [[ -f $f ]] || return 0
    local p; p=$(cat "$f")
    kill -0 "$p" 2>/dev/null && [[ $(cat "/proc/$p/comm" 2>/dev/null) == filesyncd ]] && echo "$p" || true
  fi
}

# Runs a host command inside node i's network namespace.
in_net() {
  local i=$1; shift
  if [[ $FSD_TARGET == compose ]]; then
    local p; p=$(fsd_pid "$i"); [[ -n $p ]] || die "node$i has no running container"
    nsenter -t "$p" -n "$@"
  else
    ip netns exec "$(fsd_ns "$i")" "$@"
  fi
}

# `filesyncd ARGS` against node i's control API.
fsd_cli() {
  local i=$1; shift
  if [[ $FSD_TARGET == compose ]]; then
    docker exec "$(fsd_cid "$i")" /filesyncd "$@"
  else
    ip netns exec "$(fsd_ns "$i")" env FILESYNCD_DATA="$(fsd_data "$i")" "$(fsd_bin)" "$@" --api "$FSD_API"
  fi
}

# A JSON field of node i's status (empty when unreachable).
status_field() {
  fsd_cli "$1" status --json 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin).get(sys.argv[1])
except Exception:
    v = None
print("" if v is None else v)' "$2" || true
}

# Index of the node that the first answering node names as leader.
fsd_leader() {
  local i leader="" id
  for i in $(fsd_nodes); do
    leader=$(status_field "$i" leader)
    [[ -n $leader ]] && break
  done
  [[ -n $leader ]] || return 1
  for i in $(fsd_nodes); do
    id=$(status_field "$i" node_id)
    [[ $id == "$leader" ]] && { echo "$i"; return 0; }
  done
  return 1
}

# --- iptables in a node's namespace -------------------------------------
# Rules drop on the receiver's INPUT only: the sender's packets vanish as on
# a real network (a DROP in OUTPUT would fail the sender's sendmsg with
# EPERM instead). Each rule is also written to FSD_STATE/rules so that
# proc.sh can put it back after a compose container restart (a restarted
# container gets a new network namespace; netns namespaces persist).

ledger() { mkdir -p "$FSD_STATE"; echo "$FSD_STATE/rules"; }

# ipt_add i kind CHAIN SPEC...: inserts "SPEC -m comment --comment fsd-chaos-kind" once.
ipt_add() {
  local i=$1 kind=$2; shift 2
  local chain=$1; shift
  local tag=(-m comment --comment "$FSD_COMMENT-$kind") l
  l=$(ledger)
  grep -qxF "$i $kind $chain $*" "$l" 2>/dev/null || echo "$i $kind $chain $*" >>"$l"
  if ! node_exists "$i"; then
    echo "${0##*/}: node $i is down: its rule is applied when proc.sh restarts it" >&2
    return 0
  fi
  in_net "$i" iptables -w -C "$chain" "$@" "${tag[@]}" 2>/dev/null \
    || in_net "$i" iptables -w -I "$chain" 1 "$@" "${tag[@]}"
}

# ipt_clear i [kind]: removes this kit's rules (of one kind, or all) from node i.
ipt_clear() {
  local i=$1 kind=${2:-} line l
  l=$(ledger)
  if [[ -f $l ]]; then
    awk -v i="$i" -v k="$kind" '!($1 == i && (k == "" || $2 == k))' "$l" >"$l.new" && mv "$l.new" "$l"
  fi
  node_exists "$i" || return 0
  while IFS= read -r line; do
    [[ -z $line ]] && continue
    # `iptables -S` prints "-A CHAIN spec"; our comments have no spaces, so
    # plain word splitting gives back the words -D needs.
    # shellcheck disable=SC2086
    in_net "$i" iptables -w -D ${line#-A }
  done < <(in_net "$i" iptables -w -S 2>/dev/null | grep '^-A ' | grep -e "--comment $FSD_COMMENT-$kind" || true)
}

# ipt_clear_about i kind ADDR: removes node i's rules of that kind matching "-s ADDR/32".
ipt_clear_about() {
  local i=$1 kind=$2 addr=$3 l line
  l=$(ledger)
  if [[ -f $l ]]; then
    awk -v i="$i" -v k="$kind" -v a="-s $addr/32 " '!($1 == i && $2 == k && index($0 " ", a))' "$l" >"$l.new" && mv "$l.new" "$l"
  fi
  node_exists "$i" || return 0
  while IFS= read -r line; do
    [[ -z $line ]] && continue
    # shellcheck disable=SC2086
    in_net "$i" iptables -w -D ${line#-A }
  done < <(in_net "$i" iptables -w -S 2>/dev/null | grep '^-A ' | grep -e "-s $addr/32 " | grep -e "--comment $FSD_COMMENT-$kind" || true)
}

# ipt_reapply i: puts node i's recorded rules back (after a container restart).
ipt_reapply() {
  local i=$1 l ri kind chain rest
  l=$(ledger)
  [[ -f $l ]] || return 0
  while read -r ri kind chain rest; do
    [[ $ri == "$i" ]] || continue
    # shellcheck disable=SC2086
    ipt_add "$i" "$kind" "$chain" $rest
  done < <(cat "$l")
}

# block FROM TO: FROM's packets never reach TO (dropped on TO's input).
block() {
  ipt_add "$2" part INPUT -i eth0 -s "$(fsd_addr "$1")/32" -j DROP
}

cut_pair() { block "$1" "$2"; block "$2" "$1"; }

# Whether node i's namespace is reachable at all.
node_exists() {
  if [[ $FSD_TARGET == compose ]]; then [[ -n $(fsd_pid "$1") ]]
  else ip netns list | awk '{print $1}' | grep -qx "$(fsd_ns "$1")"; fi
}
