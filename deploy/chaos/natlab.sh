# shellcheck shell=bash
# shellcheck disable=SC2154  # the variables below are set by the script that sources this
# The NAT labs' common parts (sourced by nat.sh and upnp.sh, not run): a
# wan bridge with namespaces on it, routers that masquerade a lan and are
# closed from the wan, UDP probes, nodes and their status, clean-up.
#
# Defining functions is all that sourcing it does. The sourcing script sets:
#   lab        its name, as messages start: "nat", "upnp" ("$lab.sh: ...")
#   lab_tag    what say() prints after the time ("nat(punch)", "upnp")
#   skip_needs what a skip needs, printed around its reason
#              ("needs root and ip netns"; empty: the reason alone)
#   lab_ns     every namespace of the lab, without the prefix (pub r1 a ...)
#   lab_nodes  the nodes, founder first (pub a b)
#   here state bin comm API join_wait   the script's dir, its state dir, the
#              filesyncd binary and its /proc/PID/comm, the API address in
#              each namespace, the seconds wait_joined waits
#   P BR HV COMMENT fwd_rule   set by lab_names
# and defines teardown (run on EXIT by lab_fresh).

say() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$lab_tag" "$*"; }
pass() { say "PASS: $*"; }
info() { say "info: $*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

# skip REASON: exit 0 with a "skipped:" line, or 1 under FSD_CHAOS_REQUIRE=1.
skip() {
  if [[ ${FSD_CHAOS_REQUIRE:-0} == 1 ]]; then
    echo "$lab: cannot run: $* (FSD_CHAOS_REQUIRE=1)" >&2
    exit 1
  fi
  echo "$lab: skipped: ${skip_needs:+$skip_needs (}$*${skip_needs:+)}"
  exit 0
}

# lab_names ENV DEFAULT DEFAULT_COMMENT: the lab's names from the stem in
# $ENV (default DEFAULT, at most 10 characters so that every interface name
# stays within 15): namespaces STEM-<n> (prefix P), the wan bridge STEMwan
# (BR), the host ends of the wan veths STEMw-<n> (HV), and the comment of
# the host FORWARD rule (COMMENT: DEFAULT_COMMENT, or STEM-bridge for
# another stem). Exit 2 on a bad stem.
lab_names() {
  local env=$1 default=$2 stem
  stem=${!env:-$default}
  [[ $stem =~ ^[a-z][a-z0-9]{0,9}$ ]] \
    || { echo "$lab.sh: $env must be a letter and at most 9 more lower-case letters or digits" >&2; exit 2; }
  P=$stem- BR=${stem}wan HV=${stem}w- COMMENT=$3
  [[ $stem == "$default" ]] || COMMENT=$stem-bridge
  fwd_rule=(FORWARD -i "$BR" -o "$BR" -m comment --comment "$COMMENT" -j ACCEPT)
}

# lab_check_state ENV: exit 2 unless $state (set from $ENV) is an absolute
# path without spaces.
lab_check_state() {
  [[ $state == /?* && $state != *' '* ]] || { echo "$lab.sh: $1 must be an absolute path without spaces" >&2; exit 2; }
}

# --- can this machine run it? -----------------------------------------------
lab_need_root() { [[ $(id -u) == 0 ]] || skip "$1"; }

lab_need_tools() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || skip "$t not installed"; done
}

# lab_probe_netns WHY_ADD WHY CMD...: skips with WHY_ADD unless a scratch
# namespace can be made, and with WHY unless `ip link set lo up` and each
# CMD (a command line, split at blanks) succeed in it.
lab_probe_netns() {
  local why_add=$1 why=$2 ns=${P%-}probe$$ ok=1 c
  shift 2
  ip netns add "$ns" >/dev/null 2>&1 || skip "$why_add"
  for c in "ip link set lo up" "$@"; do
    # shellcheck disable=SC2086  # a command line, split on purpose
    ip netns exec "$ns" $c >/dev/null 2>&1 || ok=0
  done
  ip netns del "$ns" >/dev/null 2>&1 || true
  ((ok)) || skip "$why"
}

lab_need_bin() {
  [[ -x $bin ]] || { echo "$lab.sh: no filesyncd binary at $bin (build it or set FSD_BIN)" >&2; exit 2; }
}

# lab_bin_has FLAG WHY: exit 1 unless `filesyncd run --help` lists FLAG.
lab_bin_has() {
  if ! "$bin" run --help 2>/dev/null | grep -q -e "$1"; then
    echo "$lab.sh: FAIL: $bin has no 'run $1' ($2)" >&2
    exit 1
  fi
}

nx() { local n=$1; shift; ip netns exec "$P$n" "$@"; }

# --- lab ----------------------------------------------------------------------------
# stop_pidfile FILE COMM: TERM (KILL after 15 s) the process FILE names,
# if it still runs as COMM; FILE goes.
stop_pidfile() {
  local f=$1 want=$2 pid deadline
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$want" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# The nodes, the founder last.
stop_nodes() {
  local n
  for n in "${lab_nodes[@]:1}" "${lab_nodes[0]}"; do stop_pidfile "$state/$n/pid" "$comm"; done
}

net_down() {
  local ns pid v re
  re=$(IFS='|'; echo "${lab_ns[*]}")
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${P}($re)$" || true); do
    # Whatever still runs in our namespaces (nodes, miniupnpd, probes) is ours.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  done
  for v in "${lab_ns[@]}"; do ip link del "$HV$v" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  while iptables -w -C "${fwd_rule[@]}" 2>/dev/null; do iptables -w -D "${fwd_rule[@]}"; done
}

# The wan bridge and every namespace of the lab (lo up, nothing else).
bridge_up() {
  local n
  ip link add "$BR" type bridge
  ip link set "$BR" up
  # Docker's FORWARD policy is DROP and bridged frames pass iptables
  # (br_netfilter): let the wan bridge forward to itself.
  iptables -w -I "${fwd_rule[@]}"
  for n in "${lab_ns[@]}"; do
    ip netns add "$P$n"
    ip -n "$P$n" link set lo up
  done
}

# wan_link NS IFNAME ADDR: NS's interface IFNAME with ADDR/24 on the wan bridge.
wan_link() {
  local n=$1 ifname=$2 addr=$3
  ip link add "$HV$n" type veth peer name "$ifname" netns "$P$n"
  ip link set "$HV$n" master "$BR" up
  ip -n "$P$n" addr add "$addr/24" dev "$ifname"
  ip -n "$P$n" link set "$ifname" up
}

# router R HOST NET IPTABLES [COMMENT]: router R (its wan already linked)
# as a home router, with a lan veth to namespace HOST; NET is 10.X.0
# (router .1, host .2). IPTABLES is the router's iptables command; its rules
# carry COMMENT when given.
router() {
  local r=$1 h=$2 net=$3 ipt=$4 c=()
  [[ -n ${5:-} ]] && c=(-m comment --comment "$5")
  ip -n "$P$r" link add lan type veth peer name eth0 netns "$P$h"
  ip -n "$P$r" addr add "$net.1/24" dev lan
  ip -n "$P$r" link set lan up
  ip -n "$P$h" addr add "$net.2/24" dev eth0
  ip -n "$P$h" link set eth0 up
  ip -n "$P$h" route add default via "$net.1"
  nx "$r" sysctl -qw net.ipv4.ip_forward=1
  nx "$r" "$ipt" -w -t nat -A POSTROUTING -s "$net.0/24" -o wan "${c[@]}" -j MASQUERADE
  nx "$r" "$ipt" -w -P FORWARD DROP
  nx "$r" "$ipt" -w -A FORWARD -i lan -o wan "${c[@]}" -j ACCEPT
  nx "$r" "$ipt" -w -A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED "${c[@]}" -j ACCEPT
  # Unsolicited packets to the router itself vanish too. (Without this an
  # unsolicited datagram to the router's port 7400, e.g. the other site's
  # first hole-punch packet, is delivered locally and leaves a conntrack
  # entry that makes the router's own MASQUERADE pick another port.)
  nx "$r" "$ipt" -w -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED "${c[@]}" -j ACCEPT
  nx "$r" "$ipt" -w -A INPUT -i wan "${c[@]}" -j DROP
}

# --- UDP probes (udp_probe.py, nat_probe.py) -----------------------------------------
wait_ready() { local f=$1 _; for _ in $(seq 100); do grep -q READY "$f" 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# count_arrivals TO PORT SECONDS FROM DEST...: datagrams from FROM to each
# DEST that reach namespace TO's receiver on PORT. Send errors are
# reported as info lines on stderr.
count_arrivals() {
  local to=$1 port=$2 secs=$3 from=$4 nonce tmp rpid got dest probe=$here/udp_probe.py
  shift 4
  nonce=$from-$to-$$-$RANDOM
  tmp=$(mktemp -d -p "$state" probe.XXXXXX)
  nx "$to" python3 "$probe" recv --port "$port" --timeout "$secs" >"$tmp/out" 2>"$tmp/err" &
  rpid=$!
  wait_ready "$tmp/err" || true
  local targets=()
  for dest in "$@"; do targets+=(--to "$dest"); done
  nx "$from" python3 "$probe" send "${targets[@]}" --nonce "$nonce" --count 5 --interval 0.02 >/dev/null 2>"$tmp/send.err" || true
  wait "$rpid" 2>/dev/null || true
  got=$(grep -c "^$nonce " "$tmp/out" || true)
  if [[ -s $tmp/send.err ]]; then
    sed 's/^send [0-9]* to //' "$tmp/send.err" | sort -u | sed "s/^/  info: $from -> /" >&2
  fi
  rm -rf "$tmp"
  echo "$got"
}

# --- nodes ---------------------------------------------------------------------------
cli() { local n=$1; shift; nx "$n" env FILESYNCD_DATA="$state/$n/data" "$bin" "$@" --api "$API"; }

# q NODE QUERY [ID KEY]: a field of NODE's `status --json` (exit 1: no answer).
#   in_sync | count | node_id | cluster_id | field ID KEY (member ID's KEY;
#   "<absent>" when the member has no such key, "<no member>" when ID is not
#   a member) | the queries in the script's q_more (python `elif` clauses
#   on w, the query, and s, the status)
q() {
  local n=$1 j
  shift
  j=$(cli "$n" status --json 2>/dev/null) || return 1
  python3 -c '
import json, sys
s = json.load(sys.stdin)
w = sys.argv[1]
if w == "in_sync": print(str(s.get("in_sync")).lower())
elif w == "count": print(len(s.get("members") or []))
elif w == "field":
    m = [m for m in s.get("members") or [] if m.get("id") == sys.argv[2]]
    v = m[0].get(sys.argv[3], "<absent>") if m else "<no member>"
    print("null" if v is None else str(v).lower() if isinstance(v, bool) else v)
'"${q_more:-}"'
else: print(s.get(w) or "")
' "$@" <<<"$j"
}

# start_node NODE RUST_LOG ARGS...: `filesyncd run ARGS` in NODE's
# namespace, its synced dir, data and log in the state dir.
start_node() {
  local n=$1 log_filter=$2
  shift 2
  mkdir -p "$state/$n/dir" "$state/$n/data"
  echo "=== $(date -Is) start run $*" | sed 's/--token [^ ]*/--token <redacted>/' >>"$state/$n/log"
  setsid ip netns exec "$P$n" env RUST_LOG="$log_filter" "$bin" run \
    --dir "$state/$n/dir" --data "$state/$n/data" --api "$API" --log-format text "$@" \
    </dev/null >>"$state/$n/log" 2>&1 &
  echo $! >"$state/$n/pid"
}

alive() { kill -0 "$(cat "$state/$1/pid")" 2>/dev/null; }

# wait_joined NODE CLUSTER_ID: API answers and reports the cluster.
wait_joined() {
  local n=$1 want=$2 deadline=$((SECONDS + join_wait)) got=""
  while :; do
    alive "$n" || fail "node $n exited (see its log below)"
    got=$(q "$n" cluster_id 2>/dev/null) || got=""
    [[ -n $got && ( -z $want || $got == "$want" ) ]] && { echo "$got"; return 0; }
    ((SECONDS < deadline)) || fail "node $n: not in cluster '${want:-any}' after ${join_wait}s (reports '${got}')"
    sleep 0.5
  done
}

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }

# --- run and teardown ----------------------------------------------------------------
# lab_fresh: a lab left over by a killed run goes, the state dir is made
# anew, and the script's teardown runs on exit.
lab_fresh() {
  stop_nodes 2>/dev/null || true
  net_down
  rm -rf "$state"
  mkdir -p "$state"
  trap teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# node_tails LINES (after a failure): each node's status, as of now, in
# its status.json, and the last LINES of its log on stderr.
node_tails() {
  local n
  for n in "${lab_nodes[@]}"; do
    [[ -f $state/$n/log ]] || continue
    cli "$n" status --json >"$state/$n/status.json" 2>&1
    echo "--- last lines of $state/$n/log" >&2
    tail -n "$1" "$state/$n/log" >&2
  done
}

# Keep the evidence (logs, status), not the synced data.
drop_data() {
  local n
  for n in "${lab_nodes[@]}"; do rm -rf "$state/$n/dir" "$state/$n/data" "$state/$n"/tmp.*; done
}
