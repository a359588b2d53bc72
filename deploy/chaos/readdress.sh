#!/usr/bin/env bash
# A member's address changes under the running daemon; the cluster must
# find it again by itself (no restart, no operator command).
#
#   readdress.sh
#
# A lab of its own made by netns.sh/run.sh (3 nodes, namespaces fsdra1..3,
# 10.78.0.1..3 on bridge fsdrabr0, state /tmp/filesyncd-readdress); node 3
# listens on 0.0.0.0:7400 (run.sh FSD_LISTEN_ANY) so its listener survives
# the change. Steps: wait until all are in sync; note node 1's record of
# node 3's address; a file from node 1 reaches node 3; then node 3's eth0
# goes from 10.78.0.3 to 10.78.0.33 and a file is written on node 1. Within
# FSD_RA_WAIT (90 s) node 1's status must list node 3 at 10.78.0.33 and the
# file must be on node 3; then a file written on node 3 must reach nodes 1
# and 2, and all nodes report in_sync with 3 members; node 1's record of
# node 3, watched every 0.5 s until FSD_RA_SETTLE (60 s) after the change,
# must never go back from 10.78.0.33 (a record pointing at the dead address
# strands anyone who dials it), and a last file from node 1 must reach node
# 3. Prints the seconds from the re-address to the updated record and to the
# first file.
#
# Exit: 0 every check passed (or skipped: not root / no `ip netns`, with a
# "skipped:" line); 1 a check failed, or a skip under FSD_CHAOS_REQUIRE=1;
# 2 usage, no binary, or the lab did not come up. The lab is always torn
# down (netns.sh down); after a failure the node logs stay in the state dir
# and their tails are printed.
#
# Environment:
#   FSD_BIN        filesyncd (default: target/debug/filesyncd)
#   FSD_RA_STATE, FSD_RA_PREFIX, FSD_RA_SUBNET   the lab (defaults
#                  /tmp/filesyncd-readdress, fsdra, 10.78.0); the generic
#                  FSD_STATE/FSD_PREFIX/FSD_SUBNET are ignored, so a lab
#                  made by hand is never touched
#   FSD_RA_WAIT    seconds for the record and the first file (default 90)
#   FSD_RA_SYNC_WAIT  seconds for the other waits (default 60)
#   FSD_RA_SETTLE  seconds after the change the record is watched (default 60)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

case ${1:-} in
  '') ;;
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  *) echo "readdress.sh: unknown argument $1" >&2; exit 2 ;;
esac

say() { printf '%s readdress: %s\n' "$(date +%H:%M:%S)" "$*"; }
pass() { say "PASS: $*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

skip() {
  if [[ ${FSD_CHAOS_REQUIRE:-0} == 1 ]]; then
    echo "readdress: cannot run: $* (FSD_CHAOS_REQUIRE=1)" >&2
    exit 1
  fi
  echo "readdress: skipped: needs root and ip netns ($*)"
  exit 0
}

[[ $(id -u) == 0 ]] || skip "not root"
nsprobe=fsdraprobe$$
ip netns add "$nsprobe" >/dev/null 2>&1 || skip "ip netns add failed"
ok=1
ip netns exec "$nsprobe" ip link set lo up >/dev/null 2>&1 || ok=0
ip netns del "$nsprobe" >/dev/null 2>&1 || true
((ok)) || skip "ip netns exec failed"
for t in iptables python3 setsid mountpoint sha256sum; do
  command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
done

export FSD_TARGET=netns
export FSD_STATE=${FSD_RA_STATE:-/tmp/filesyncd-readdress}
export FSD_PREFIX=${FSD_RA_PREFIX:-fsdra}
export FSD_SUBNET=${FSD_RA_SUBNET:-10.78.0}
export FSD_BIN=${FSD_BIN:-$repo/target/debug/filesyncd}
export FSD_LISTEN_ANY=3
wait_ra=${FSD_RA_WAIT:-90}
wait_sync=${FSD_RA_SYNC_WAIT:-60}
settle=${FSD_RA_SETTLE:-60}
[[ -x $FSD_BIN ]] || { echo "readdress.sh: no filesyncd binary at $FSD_BIN (build it or set FSD_BIN)" >&2; exit 2; }
# shellcheck source=lib.sh
source "$here/lib.sh"

old=$FSD_SUBNET.3
new=$FSD_SUBNET.33
ns3=$(fsd_ns 3)

# q NODE QUERY [ID KEY]: a field of NODE's `status --json` (exit 1: no
# answer). in_sync | count | node_id | field ID KEY (member ID's KEY,
# "<absent>" / "<no member>") | ip ID (the IPv4 address in member ID's addr)
q_py='
import json, re, sys
s = json.load(sys.stdin)
w = sys.argv[1]
def member(i):
    m = [m for m in s.get("members") or [] if m.get("id") == i]
    return m[0] if m else None
if w == "in_sync": print(str(s.get("in_sync")).lower())
elif w == "count": print(len(s.get("members") or []))
elif w == "field":
    m = member(sys.argv[2])
    v = m.get(sys.argv[3], "<absent>") if m else "<no member>"
    print("null" if v is None else str(v).lower() if isinstance(v, bool) else v)
elif w == "ip":
    m = member(sys.argv[2])
    a = re.search(r"(\d+\.\d+\.\d+\.\d+)", (m or {}).get("addr") or "")
    print(a.group(1) if a else "")
else: print(s.get(w) or "")
'
q() {
  local n=$1 j
  shift
  j=$(fsd_cli "$n" status --json 2>/dev/null) || return 1
  python3 -c "$q_py" "$@" <<<"$j"
}

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }
dir_of() { echo "$FSD_STATE/n$1/fs/dir"; }

# put NODE NAME: a 64 KiB random file written on NODE (made on the same
# tmpfs beside the synced dir, renamed in); prints its sha256.
put() {
  local t=$FSD_STATE/n$1/fs/tmp.$2 h
  head -c 65536 /dev/urandom >"$t"
  h=$(sha "$t")
  mv "$t" "$(dir_of "$1")/$2"
  echo "$h"
}

has() {
  local f; f=$(dir_of "$1")/$2
  [[ -f $f && $(sha "$f") == "$3" ]]
}

# wait_file SECONDS NAME SHA NODE...: prints the nodes still lacking it on timeout.
wait_file() {
  local secs=$1 name=$2 h=$3 deadline n lack
  shift 3
  deadline=$((SECONDS + secs))
  while :; do
    lack=()
    for n in "$@"; do has "$n" "$name" "$h" || lack+=("$n"); done
    ((${#lack[@]} == 0)) && return 0
    ((SECONDS < deadline)) || { echo "${lack[*]}"; return 1; }
    sleep 0.25
  done
}

# wait_sync SECONDS: all nodes in_sync with 3 members; prints the others on timeout.
wait_sync() {
  local deadline n bad
  deadline=$((SECONDS + $1))
  while :; do
    bad=()
    for n in 1 2 3; do
      [[ $(q "$n" in_sync 2>/dev/null) == true && $(q "$n" count 2>/dev/null) == 3 ]] || bad+=("$n")
    done
    ((${#bad[@]} == 0)) && return 0
    ((SECONDS < deadline)) || { echo "${bad[*]}"; return 1; }
    sleep 0.5
  done
}

# Node 1's record of node 3, each change as "SECONDS_SINCE_T0 IP" in
# FSD_STATE/record.log (background; bounded, and killed by the end/teardown).
monitor() {
  local last="" cur end=$((SECONDS + wait_ra + 3 * wait_sync + settle + 30))
  while ((SECONDS < end)); do
    cur=$(q 1 ip "$id3" 2>/dev/null) || cur=""
    if [[ -n $cur && $cur != "$last" ]]; then
      echo "$(since "$t0") $cur" >>"$FSD_STATE/record.log"
      last=$cur
    fi
    sleep 0.5
  done
}
mon_pid=""
stop_monitor() {
  [[ -n $mon_pid ]] || return 0
  kill "$mon_pid" 2>/dev/null || true
  wait "$mon_pid" 2>/dev/null || true
  mon_pid=""
}
history() { awk '{ printf "%s+%ss %s", (NR > 1 ? ", " : ""), $1, $2 }' "$FSD_STATE/record.log" 2>/dev/null; }

# shellcheck disable=SC2317  # the EXIT trap
teardown() {
  local rc=$? i
  trap - EXIT INT TERM
  set +e
  stop_monitor
  if ((rc != 0)) && [[ -s $FSD_STATE/record.log ]]; then
    say "node 1's record of node 3 after the change: $(history)"
  fi
  if ((rc != 0)) && [[ -d $FSD_STATE ]]; then
    for i in 1 2 3; do
      fsd_cli "$i" status --json >"$FSD_STATE/n$i/status.json" 2>&1
    done
    for i in 1 2 3; do
      [[ -f $FSD_STATE/n$i/log ]] || continue
      echo "--- last lines of $FSD_STATE/n$i/log" >&2
      tail -n 15 "$FSD_STATE/n$i/log" >&2
    done
    "$here/netns.sh" down --keep >/dev/null 2>&1
    say "lab down; logs and status kept in $FSD_STATE (exit $rc)"
  else
    "$here/netns.sh" down >/dev/null 2>&1
    say "lab down (exit $rc)"
  fi
  exit "$rc"
}

# A lab of this script left over by a killed run goes first.
"$here/netns.sh" down >/dev/null 2>&1 || true
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "filesyncd $FSD_BIN; lab $FSD_STATE (${FSD_PREFIX}1..3, $FSD_SUBNET.x; node 3 listens on 0.0.0.0)"
mkdir -p "$FSD_STATE"
if ! "$here/netns.sh" up 3 >"$FSD_STATE/up.log" 2>&1; then
  cat "$FSD_STATE/up.log" >&2
  say "FAIL: the lab did not come up" >&2
  exit 2
fi
if notsync=$(wait_sync "$wait_sync"); then
  pass "3 nodes in sync with 3 members"
else
  fail "not in sync with 3 members after ${wait_sync}s: node(s) $notsync"
fi

id3=$(q 3 node_id)
before=$(q 1 field "$id3" addr)
ip_before=$(q 1 ip "$id3")
say "node 1's record of node 3 ($id3): addr $before"
[[ $ip_before == "$old" ]] || fail "node 1 records node 3 at '$before', want $old (with --listen 0.0.0.0 the advertised address should be eth0's)"

h=$(put 1 before.bin)
wait_file "$wait_sync" before.bin "$h" 3 >/dev/null || fail "file written on node 1: not on node 3 after ${wait_sync}s"
pass "file written on node 1 is on node 3"

# --- the address change ---------------------------------------------------------------
say "re-addressing node 3: $old -> $new (no restart)"
t0=$(now)
ip -n "$ns3" addr del "$old/24" dev eth0
ip -n "$ns3" addr add "$new/24" dev eth0
h=$(put 1 after.bin)
monitor &
mon_pid=$!
t_rec="" t_file="" deadline=$((SECONDS + wait_ra))
while [[ -z $t_rec || -z $t_file ]]; do
  if [[ -z $t_rec && $(q 1 ip "$id3" 2>/dev/null) == "$new" ]]; then
    t_rec=$(since "$t0"); pass "node 1 records node 3 at $new after $t_rec s"
  fi
  if [[ -z $t_file ]] && has 3 after.bin "$h"; then
    t_file=$(since "$t0"); pass "file written on node 1 after the change is on node 3 after $t_file s"
  fi
  [[ -n $t_rec && -n $t_file ]] && break
  if ((SECONDS >= deadline)); then
    now_addr=$(q 1 field "$id3" addr 2>/dev/null || echo '?')
    reach=$(q 1 field "$id3" reachable 2>/dev/null || echo '?')
    n2_addr=$(q 2 field "$id3" addr 2>/dev/null || echo '?')
    [[ -n $t_rec ]] || say "FAIL: node 1 still records node 3 at '$now_addr' (reachable $reach; node 2: '$n2_addr') ${wait_ra}s after the change" >&2
    [[ -n $t_file ]] || say "FAIL: file written on node 1 after the change: not on node 3 after ${wait_ra}s" >&2
    exit 1
  fi
  sleep 0.25
done

h=$(put 3 from3.bin)
t1=$(now)
lacking=$(wait_file "$wait_sync" from3.bin "$h" 1 2) || fail "file written on node 3 after the change: not on node(s) $lacking after ${wait_sync}s"
pass "file written on node 3 is on nodes 1 and 2 after $(since "$t1") s"
if notsync=$(wait_sync "$wait_sync"); then
  pass "3 nodes in sync with 3 members after the change ($(since "$t0") s after it)"
else
  fail "not in sync with 3 members ${wait_sync}s after the file from node 3: node(s) $notsync"
fi
say "watching node 1's record of node 3 until ${settle}s after the change"
while awk -v a="$t0" -v b="$EPOCHREALTIME" -v s="$settle" 'BEGIN { exit !(b - a < s) }'; do sleep 0.5; done
stop_monitor
hist=$(history)
say "node 1's record of node 3 after the change: $hist"
[[ $(q 1 ip "$id3") == "$new" ]] || fail "node 1 no longer records node 3 at $new at the end (history: $hist)"
if awk -v o="$old" -v n="$new" '$2 == n { seen = 1 } seen && $2 == o { bad = 1 } END { exit !bad }' "$FSD_STATE/record.log"; then
  fail "node 1's record of node 3 went back to the old, dead address $old after showing $new (history: $hist)"
fi
pass "node 1's record of node 3 stayed at $new"
h=$(put 1 last.bin)
t1=$(now)
wait_file "$wait_sync" last.bin "$h" 3 >/dev/null || fail "file written on node 1 ${settle}s after the change: not on node 3 after ${wait_sync}s"
pass "file written on node 1 ${settle}s after the change is on node 3 after $(since "$t1") s"
say "node 2 records node 3 at $(q 2 field "$id3" addr || echo '?'); node 3 reports itself at $(q 3 field "$id3" addr || echo '?')"
echo "readdress: record updated after $t_rec s, first file after $t_file s"
exit 0
