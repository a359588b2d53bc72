#!/usr/bin/env bash
# Self-test of the chaos kit: every fault is injected, verified with UDP
# probes (or /proc, df, findmnt, the node's log) and healed. It tests the
# kit, not filesyncd; the cluster suite runs on top of it.
#
#   selftest.sh            netns: builds its own lab of 5 namespaces
#                          (prefix fst, 10.78.0.x, FSD_STATE
#                          /tmp/filesyncd-chaos-selftest), single-node
#                          clusters (--solo), removes it at the end
#   FSD_TARGET=compose selftest.sh
#                          against the running compose cluster (cluster.sh up)
#
# Needs root and a filesyncd binary (FSD_BIN or the usual build paths). The
# clock check runs only with a dynamically linked binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${FSD_TARGET:-netns} == netns ]]; then
  export FSD_PREFIX=${FSD_PREFIX:-fst} FSD_SUBNET=${FSD_SUBNET:-10.78.0}
  export FSD_STATE=${FSD_STATE:-/tmp/filesyncd-chaos-selftest}
else
  export FSD_STATE=${FSD_STATE:-/tmp/filesyncd-chaos-compose}
fi
# shellcheck source=lib.sh
source "$here/lib.sh"
need_root

checks=0
fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
pass() { checks=$((checks + 1)); echo "ok $checks - $*"; }

nodes=()
# expect_matrix "a>b a>c ..." DESC: exactly these ordered pairs are blocked.
expect_matrix() {
  local want got
  want=$(tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort | tr '\n' ' ')
  got=$("$here/reach.sh" blocked | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' ')
  [[ $want == "$got" ]] || fail "$2: blocked pairs '${got}', want '${want}'"
  pass "$2"
}

api_ok() { fsd_cli "$1" status --json >/dev/null 2>&1; }

if [[ $FSD_TARGET == netns ]]; then
  trap '"$here/netns.sh" down >/dev/null 2>&1 || true' EXIT
  "$here/netns.sh" down >/dev/null 2>&1 || true
  "$here/netns.sh" up 5 --solo >/dev/null
fi
read -r -a nodes <<<"$(fsd_nodes | tr '\n' ' ')"
((${#nodes[@]} >= 3)) || fail "need at least 3 nodes, have ${#nodes[@]}"
last=${nodes[-1]}
for i in "${nodes[@]}"; do api_ok "$i" || fail "node $i API does not answer"; done
pass "${#nodes[@]} nodes answer on their control API"

expect_matrix "" "every node reaches every other"

"$FSD_CHAOS_DIR/partition.sh" isolate 2 >/dev/null
"$FSD_CHAOS_DIR/partition.sh" isolate 2 >/dev/null   # idempotent
iso=""; for j in "${nodes[@]}"; do [[ $j == 2 ]] || iso+=" 2>$j $j>2"; done
expect_matrix "$iso" "isolate 2 (applied twice)"
"$FSD_CHAOS_DIR/partition.sh" heal >/dev/null
expect_matrix "" "heal after isolate"

"$FSD_CHAOS_DIR/partition.sh" oneway 1 3 >/dev/null
expect_matrix "1>3" "one-way 1 -/-> 3"
"$FSD_CHAOS_DIR/partition.sh" heal 3 >/dev/null
expect_matrix "" "heal 3 removes the one-way rule"

out=$("$FSD_CHAOS_DIR/partition.sh" split-leader)
leader=$(sed -n 's/^leader: node //p' <<<"$out")
[[ -n $leader ]] || fail "split-leader named no leader: $out"
minority=$(sed -n 's/^partition: {\([0-9,]*\)} .*/\1/p' <<<"$out")
[[ ,$minority, == *",$leader,"* ]] || fail "leader $leader not in the minority {$minority}"
((${#nodes[@]} - $(tr ',' '\n' <<<"$minority" | wc -l) > $(tr ',' '\n' <<<"$minority" | wc -l))) \
  || fail "minority {$minority} is not a minority"
pass "split-leader puts leader $leader in minority {$minority}"
"$FSD_CHAOS_DIR/partition.sh" heal >/dev/null

if ((${#nodes[@]} == 5)); then
  "$FSD_CHAOS_DIR/partition.sh" bridge >/dev/null
  expect_matrix "1>4 1>5 2>4 2>5 4>1 5>1 4>2 5>2" "bridge {1,2} <-> 3 <-> {4,5}"
  "$FSD_CHAOS_DIR/partition.sh" heal >/dev/null
fi

"$FSD_CHAOS_DIR/loss.sh" on 2 0.5 >/dev/null
got=$("$here/reach.sh" 1 2 400 | awk '{split($3, a, "/"); print a[1]}')
((got >= 100 && got <= 300)) || fail "loss 0.5: $got of 400 arrived"
pass "loss 0.5 on node 2: $got of 400 datagrams arrived"
"$FSD_CHAOS_DIR/loss.sh" heal >/dev/null
got=$("$here/reach.sh" 1 2 100 | awk '{split($3, a, "/"); print a[1]}')
((got == 100)) || fail "after loss heal: $got of 100 arrived"
pass "loss healed: 100 of 100 arrived"

"$FSD_CHAOS_DIR/delay.sh" on 2 --delay 50 >/dev/null
r=$("$here/reach.sh" rtt 1 2 40)
p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$r")
# A lower bound only: a loaded machine can add time, never remove it.
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 100 else 1)' "$p50" \
  || fail "delay 50ms each way: round trip p50 $p50 ms < 100 ms ($r)"
pass "delay 50 ms on node 2: round trip $r"
"$FSD_CHAOS_DIR/delay.sh" on 2 --delay 20 --reorder 0.5 >/dev/null
r=$("$here/reach.sh" rtt 1 2 60)
reord=$(sed -n 's/.*reordered=\([0-9]*\).*/\1/p' <<<"$r")
((reord > 0)) || fail "reorder 0.5: nothing reordered ($r)"
pass "reorder 0.5 on node 2: $r"
api_ok 2 || fail "node 2 API down behind the relay"
"$FSD_CHAOS_DIR/delay.sh" heal all >/dev/null
[[ -z $(ip -o link show | grep -E ": ${FSD_PREFIX}[dx][0-9]+[@:]" || true) ]] || fail "relay veths left after heal"
expect_matrix "" "delay healed, veth back on its bridge"

"$FSD_CHAOS_DIR/proc.sh" kill 2 >/dev/null
[[ $("$FSD_CHAOS_DIR/proc.sh" state 2) == down ]] || fail "node 2 not down after kill"
api_ok 2 && fail "node 2 API answers after kill -9"
"$FSD_CHAOS_DIR/proc.sh" restart 2 >/dev/null
if [[ $FSD_TARGET == compose ]]; then
  deadline=$((SECONDS + 120)); until api_ok 2; do ((SECONDS < deadline)) || fail "node 2 API not back"; sleep 1; done
fi
api_ok 2 || fail "node 2 API not back after restart"
pass "kill -9 node 2, restart, API answers"
"$FSD_CHAOS_DIR/proc.sh" pause 3 >/dev/null
[[ $("$FSD_CHAOS_DIR/proc.sh" state 3) == paused ]] || fail "node 3 not paused"
"$FSD_CHAOS_DIR/proc.sh" heal >/dev/null
[[ $("$FSD_CHAOS_DIR/proc.sh" state 3) == running ]] || fail "node 3 not resumed by heal"
api_ok 3 || fail "node 3 API not answering after resume"
pass "SIGSTOP node 3, heal resumes it"

"$FSD_CHAOS_DIR/disk.sh" empty-root "$last" >/dev/null
"$FSD_CHAOS_DIR/disk.sh" show | grep -q "node $last: .*empty-root" || fail "empty root not mounted on node $last"
"$FSD_CHAOS_DIR/disk.sh" heal "$last" >/dev/null
"$FSD_CHAOS_DIR/disk.sh" show | grep -q "node $last: .*empty-root" && fail "empty root still mounted"
pass "empty root on node $last, healed"

if [[ $FSD_TARGET == netns ]]; then
  "$FSD_CHAOS_DIR/disk.sh" fill "$last" >/dev/null
  free=$(df --output=avail -B1 "$FSD_STATE/n$last/fs" | tail -n1 | tr -d ' ')
  ((free == 0)) || fail "disk fill left $free bytes"
  "$FSD_CHAOS_DIR/disk.sh" heal "$last" >/dev/null
  [[ ! -e $FSD_STATE/n$last/fs/ballast ]] || fail "ballast left after heal"
  pass "disk of node $last full (0 bytes free), healed"

  "$FSD_CHAOS_DIR/disk.sh" fill-data "$last" >/dev/null
  st=$("$FSD_CHAOS_DIR/disk.sh" state "$last")
  [[ $st == *" data_free=0 data_ballast=1"* ]] || fail "data dir fill: $st"
  "$FSD_CHAOS_DIR/disk.sh" heal "$last" >/dev/null
  st=$("$FSD_CHAOS_DIR/disk.sh" state "$last")
  [[ $st == *" data_ballast=0"* && $st != *" data_free=0 "* ]] || fail "data dir heal: $st"
  # The daemon may have exited on the full data dir: start it again.
  "$FSD_CHAOS_DIR/run.sh" start "$last" >/dev/null
  api_ok "$last" || fail "node $last API not answering after the data dir heal"
  pass "data dir of node $last full (0 bytes free), healed, node answers"

  if file -L "$(fsd_bin)" | grep -q 'dynamically linked'; then
    "$FSD_CHAOS_DIR/clock.sh" offset "$last" +864000 >/dev/null
    api_ok "$last" || fail "node $last API down after clock offset"
    # The daemon stamps its own log lines with its wall clock.
    ts=$(grep -o '^[0-9-]*T[0-9:.]*Z' "$FSD_STATE/n$last/log" | tail -n1)
    skew=$(( $(date -u -d "$ts" +%s) - $(date -u +%s) ))
    ((skew > 864000 - 3600 && skew < 864000 + 3600)) || fail "node $last log clock skew ${skew}s, want ~864000"
    "$FSD_CHAOS_DIR/clock.sh" heal "$last" >/dev/null
    pass "clock of node $last 10 days ahead (log skew ${skew}s), healed"
  else
    echo "skip - clock offset needs a dynamically linked filesyncd (FSD_BIN=$(fsd_bin) is static)"
  fi
fi

"$FSD_CHAOS_DIR/partition.sh" isolate 1 >/dev/null
"$FSD_CHAOS_DIR/loss.sh" on 3 0.2 both >/dev/null
"$FSD_CHAOS_DIR/heal.sh" >/dev/null
expect_matrix "" "heal.sh removes every fault"

if [[ $FSD_TARGET == netns ]]; then
  trap - EXIT
  "$here/netns.sh" down >/dev/null
  [[ -z $(ip netns list | grep -E "^${FSD_PREFIX}[0-9]+" || true) ]] || fail "namespaces left after down"
  ! ip link show "$FSD_BRIDGE" >/dev/null 2>&1 || fail "bridge left after down"
  ! iptables -w -S FORWARD | grep -q -- "-i $FSD_BRIDGE " || fail "FORWARD rule left after down"
  ! mount | grep -q "$FSD_STATE" || fail "mounts left after down"
  pass "netns.sh down leaves no namespace, bridge, rule or mount"
fi
echo "selftest: all $checks checks passed ($FSD_TARGET)"
