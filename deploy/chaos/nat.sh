#!/usr/bin/env bash
# Two private sites behind NAT routers and one public member: do the sites
# join through their NATs, does a file get from one private site to the
# other, and how fast when only the two private sites hold it?
#
#   nat.sh [--relay-only] [--net-only]
#   nat.sh --both
#
#          wan bridge fsdnatwan 198.51.100.0/24 (host side: no address)
#     .10 pub            .1 r1 (router)               .2 r2 (router)
#     public member      MASQUERADE 10.1.0.0/24       MASQUERADE 10.2.0.0/24
#                        lan 10.1.0.1 -- a 10.1.0.2   lan 10.2.0.1 -- b 10.2.0.2
#
# The routers behave as home routers: lan->wan is forwarded and
# masqueraded, wan->lan and wan->router only as replies (conntrack
# ESTABLISHED,RELATED); nothing on the wan routes to 10.x. The script
# proves that with UDP probes before any node starts, and reports how r1
# maps a source port and whether a UDP simultaneous open between a and b
# gets through both NATs (the premise of hole punching).
#
# Nodes (namespaces fsdnat-pub, -a, -b; routers fsdnat-r1, -r2; the common
# parts of this lab and upnp.sh's are in natlab.sh):
#   pub  run --listen 198.51.100.10:7400 --max-file-size 1MiB   (founds)
#   a, b run --listen 0.0.0.0:7400 --join 198.51.100.10:7400 --token <fresh>
#        (--relay-only: also --no-hole-punch, so a<->b stays relayed)
# Checks: all three in sync with 3 members; a small file from a reaches b
# and pub, one from b reaches a; a big file written on a (held back on pub
# by its --max-file-size, so b must pull it from a, relayed through pub or
# over a punched direct connection) arrives identical on b: prints MB/s and
# the `path` a's and b's status give for each other. --relay-only fails
# unless a's status says "relayed" for b.
#
#   --net-only   build and probe the network, start no node
#   --both       run the scenario (in a fresh lab) with hole punching, then
#                with --relay-only; last line:
#                "nat: direct-or-punched X MB/s, relayed Y MB/s"
#
# Exit: 0 every check passed (or skipped: not root / no `ip netns`, with a
# "skipped:" line); 1 a check failed, or a skip under FSD_CHAOS_REQUIRE=1;
# 2 usage or no binary. Everything created (namespaces, bridge, veths, the
# host FORWARD rule, processes, the state dir) is removed on exit; after a
# failure the node logs stay in the state dir and their tails are printed.
#
# Environment:
#   FSD_BIN              filesyncd (default: target/debug/filesyncd)
#   FSD_NAT_STATE        state dir (default /tmp/filesyncd-nat)
#   FSD_NAT_PREFIX       the lab's name stem (default fsdnat; at most 10 of
#                        [a-z0-9]): namespaces STEM-pub ..., bridge STEMwan,
#                        host veths STEMw-pub ..., host FORWARD rule comment
#                        STEM-bridge (fsd-nat-bridge for fsdnat), so that a
#                        second lab can run beside this one
#   FSD_NAT_BIG_MIB      size of the big file (default 64)
#   FSD_NAT_JOIN_WAIT    seconds for a node to start and join (default 60)
#   FSD_NAT_SMALL_WAIT   seconds for small files and in-sync (default 60)
#   FSD_NAT_BIG_WAIT     seconds for the big file (default 120)
#   FSD_NAT_KEEP=1       keep the node logs in the state dir after a pass too
#   RUST_LOG             node log filter (default info)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/natlab.sh
source "$here/natlab.sh"
bin=${FSD_BIN:-$repo/target/debug/filesyncd}
state=${FSD_NAT_STATE:-/tmp/filesyncd-nat}
big_mib=${FSD_NAT_BIG_MIB:-64}
join_wait=${FSD_NAT_JOIN_WAIT:-60}
small_wait=${FSD_NAT_SMALL_WAIT:-60}
big_wait=${FSD_NAT_BIG_WAIT:-120}
comm=$(basename "$bin" | cut -c1-15)   # a node's /proc/PID/comm

lab=nat
skip_needs="needs root and ip netns"
lab_ns=(pub r1 r2 a b)
lab_nodes=(pub a b)
# P (namespace prefix), BR (the wan bridge), HV (host ends of the wan veths:
# fsdnatw-pub, -r1, -r2), COMMENT and fwd_rule (the host FORWARD rule).
lab_names FSD_NAT_PREFIX fsdnat fsd-nat-bridge
WAN=198.51.100
PUB=$WAN.10
PORT=7400
API=127.0.0.1:7401

mode=punch net_only=0 both=0
while (($#)); do
  case $1 in
    --relay-only) mode=relay ;;
    --net-only) net_only=1 ;;
    --both) both=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "nat.sh: unknown argument $1" >&2; sed -n '6,7p' "$0" >&2; exit 2 ;;
  esac
  shift
done
if ((both)) && [[ $mode == relay || $net_only == 1 ]]; then
  echo "nat.sh: --both runs both modes; it takes no other option" >&2; exit 2
fi
lab_check_state FSD_NAT_STATE
lab_tag="nat($mode)"

# --- can this machine run it? -----------------------------------------------
lab_need_root "not root"
lab_probe_netns "ip netns add failed" "ip netns exec or iptables -t nat in a namespace failed" \
  "iptables -w -t nat -S"
lab_need_tools iptables python3 setsid sha256sum timeout

# --- --both: each mode in a lab of its own (a child run of this script) ----------
if ((both)); then
  res=$(mktemp -d)
  trap 'rm -rf "$res"' EXIT
  rc_p=0; FSD_NAT_RESULT=$res/punch "$0" || rc_p=$?
  rc_r=0; FSD_NAT_RESULT=$res/relay "$0" --relay-only || rc_r=$?
  x=FAIL y=FAIL
  ((rc_p == 0)) && [[ -s $res/punch ]] && x=$(cat "$res/punch")
  ((rc_r == 0)) && [[ -s $res/relay ]] && y=$(cat "$res/relay")
  echo "nat: direct-or-punched $x MB/s, relayed $y MB/s"
  ((rc_p == 0 && rc_r == 0)) || exit 1
  exit 0
fi

if ((!net_only)); then
  lab_need_bin
  if [[ $mode == relay ]]; then lab_bin_has --no-hole-punch "the build lacks the relay-only switch"; fi
fi

# --- lab --------------------------------------------------------------------------
net_up() {
  bridge_up
  wan_link pub eth0 "$PUB"
  wan_link r1 wan "$WAN.1"
  wan_link r2 wan "$WAN.2"
  router r1 a 10.1.0 iptables
  router r2 b 10.2.0 iptables
  say "lab up: pub $PUB, r1 $WAN.1 (a 10.1.0.2), r2 $WAN.2 (b 10.2.0.2) on $BR"
}

net_check() {
  local tmp got spid n ip want seen r kept
  tmp=$(mktemp -d -p "$state" probe.XXXXXX)
  # 1. a and b reach pub, and pub's answers come back through the NAT.
  nx pub python3 "$here/nat_probe.py" whoami-server 7497 6 2>"$tmp/err" &
  spid=$!
  wait_ready "$tmp/err" || fail "probe server in pub did not start"
  for n in a:r1:1 b:r2:2; do
    IFS=: read -r n r ip <<<"$n"
    want=$WAN.$ip
    seen=$(nx "$n" python3 "$here/nat_probe.py" whoami 7497 "$PUB:7497") \
      || fail "$n -> pub: no answer through $r's NAT"
    [[ ${seen%:*} == "$want" ]] || fail "$n -> pub: pub saw source $seen, want $want (masqueraded by $r)"
    kept='source port kept'
    [[ ${seen##*:} == 7497 ]] || kept='source port CHANGED'
    pass "$n -> pub and back through $r's NAT; pub sees 10.${ip}.0.2:7497 as $seen ($kept)"
  done
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  # 2. Nothing from the wan reaches a private host: not to its private
  # address (no route on the wan; and with a route via the router, its
  # FORWARD drops it), not to the router's public address, not from the
  # other site.
  got=$(count_arrivals a 7499 1.5 pub "10.1.0.2:7499")
  ((got == 0)) || fail "pub -> 10.1.0.2 (no route): $got datagrams arrived"
  nx pub ip route add 10.1.0.0/24 via "$WAN.1"
  nx pub ip route add 10.2.0.0/24 via "$WAN.2"
  got=$(count_arrivals a 7499 1.5 pub "10.1.0.2:7499" "$WAN.1:7499")
  ((got == 0)) || fail "pub -> a (routed via r1, or r1's public address): $got datagrams arrived"
  got=$(count_arrivals b 7499 1.5 pub "10.2.0.2:7499" "$WAN.2:7499")
  ((got == 0)) || fail "pub -> b (routed via r2, or r2's public address): $got datagrams arrived"
  nx pub ip route del 10.1.0.0/24 via "$WAN.1"
  nx pub ip route del 10.2.0.0/24 via "$WAN.2"
  got=$(count_arrivals b 7499 1.5 a "10.2.0.2:7499" "$WAN.2:7499")
  ((got == 0)) || fail "a -> b unsolicited: $got datagrams arrived"
  pass "the private nets are closed from the wan: unsolicited UDP from pub (even routed via the routers) and from a to b: 0 arrived"
  # 3. Can a UDP simultaneous open get through both NATs? (The premise of
  # hole punching; information only: relaying works without it.)
  nx a python3 "$here/nat_probe.py" punch 7496 "$WAN.2" 2 >"$tmp/a" &
  local ap=$!
  nx b python3 "$here/nat_probe.py" punch 7496 "$WAN.1" 2 >"$tmp/b" &
  local bp=$!
  wait "$ap" "$bp" || true
  local ga gb
  read -r ga seen <"$tmp/a" || true
  read -r gb _ <"$tmp/b" || true
  if ((${ga:-0} > 0 && ${gb:-0} > 0)); then
    info "UDP simultaneous open a:7496 <-> b:7496 through both NATs: works (a got $ga from $seen, b got $gb)"
  else
    info "UDP simultaneous open a:7496 <-> b:7496 through both NATs: FAILED (a got ${ga:-0}, b got ${gb:-0}): hole punching cannot work here"
  fi
  info "r1 conntrack UDP timeouts: unreplied $(nx r1 cat /proc/sys/net/netfilter/nf_conntrack_udp_timeout 2>/dev/null || echo '?')s, stream $(nx r1 cat /proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream 2>/dev/null || echo '?')s"
  rm -rf "$tmp"
}

# --- nodes ---------------------------------------------------------------------------
# q (natlab.sh) also answers xfers ("N BYTES": pulls in flight, with their
# bytes done).
q_more='elif w == "xfers":
    t = (s.get("sync") or {}).get("transfers") or []
    print(len(t), sum(x.get("bytes_done", 0) for x in t))'

join() {
  local n=$1 cid=$2 token extra=()
  token=$(cli pub token create --ttl 10m 2>/dev/null) || token=""
  [[ -n $token ]] || fail "pub handed out no join token"
  [[ $mode == relay ]] && extra=(--no-hole-punch)
  start_node "$n" "${RUST_LOG:-info}" --listen "0.0.0.0:$PORT" --join "$PUB:$PORT" --token "$token" "${extra[@]}"
  wait_joined "$n" "$cid" >/dev/null
  pass "$n joined through its NAT ($(q "$n" node_id))"
}

# put NODE NAME SIZE_KIB: a random file written on NODE (made beside its
# synced dir, renamed in); prints its sha256.
put() {
  local n=$1 name=$2 kib=$3 t=$state/$1/tmp.$2
  head -c "$((kib * 1024))" /dev/urandom >"$t"
  local h; h=$(sha "$t")
  mv "$t" "$state/$n/dir/$name"
  echo "$h"
}

# has NODE NAME SHA SIZE: NODE's synced dir holds NAME with that content.
has() {
  local f=$state/$1/dir/$2
  [[ -f $f && $(stat -c %s "$f" 2>/dev/null) == "$4" && $(sha "$f") == "$3" ]]
}

# wait_file SECONDS NAME SHA SIZE NODE...: all NODEs hold it.
wait_file() {
  local secs=$1 name=$2 h=$3 size=$4 deadline n missing
  shift 4
  deadline=$((SECONDS + secs))
  while :; do
    missing=()
    for n in "$@"; do has "$n" "$name" "$h" "$size" || missing+=("$n"); done
    ((${#missing[@]} == 0)) && return 0
    ((SECONDS < deadline)) || { echo "${missing[*]}"; return 1; }
    sleep 0.25
  done
}

wait_sync() {
  local secs=$1 n bad deadline
  deadline=$((SECONDS + secs))
  while :; do
    bad=()
    for n in pub a b; do
      [[ $(q "$n" in_sync 2>/dev/null) == true && $(q "$n" count 2>/dev/null) == 3 ]] || bad+=("$n")
    done
    ((${#bad[@]} == 0)) && return 0
    ((SECONDS < deadline)) || { echo "${bad[*]}"; return 1; }
    sleep 0.5
  done
}

# --- teardown ------------------------------------------------------------------------
# shellcheck disable=SC2317  # the EXIT trap
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  # Status and log tails as of the failure, before the nodes stop.
  if ((rc != 0)) && [[ -d $state ]]; then node_tails 15; fi
  stop_nodes
  net_down
  if [[ -d $state ]]; then
    rm -rf "$state"/probe.*
    if ((rc != 0)); then
      drop_data
      say "lab down; logs and status kept in $state (exit $rc)"
    elif [[ ${FSD_NAT_KEEP:-0} == 1 ]]; then
      drop_data
      say "lab down; logs kept in $state (FSD_NAT_KEEP=1; exit 0)"
    else
      rm -rf "$state"
      say "lab down (exit 0)"
    fi
  fi
  exit "$rc"
}

# --- run --------------------------------------------------------------------------------
lab_fresh
net_up
net_check
if ((net_only)); then pass "network only (--net-only)"; exit 0; fi

say "filesyncd $bin; state $state"
start_node pub "${RUST_LOG:-info}" --listen "$PUB:$PORT" --max-file-size 1MiB
cid=$(wait_joined pub "")
pass "pub founded cluster $cid"
join a "$cid"
join b "$cid"
if notsync=$(wait_sync "$small_wait"); then
  pass "pub, a, b in sync with 3 members"
else
  fail "not in sync with 3 members after ${small_wait}s: $notsync"
fi
ida=$(q a node_id) idb=$(q b node_id)

# Small files: a -> b and pub, b -> a.
t0=$(now); h=$(put a small-a.bin 100)
lacking=$(wait_file "$small_wait" small-a.bin "$h" 102400 b pub) \
  || fail "100 KiB file written on a: not on [$lacking] after ${small_wait}s"
pass "100 KiB file written on a is on b and pub, identical, after $(since "$t0") s"
t0=$(now); h=$(put b small-b.bin 100)
lacking=$(wait_file "$small_wait" small-b.bin "$h" 102400 a) \
  || fail "100 KiB file written on b: not on a after ${small_wait}s"
pass "100 KiB file written on b is on a, identical, after $(since "$t0") s"

# The big file: pub holds it back (--max-file-size 1MiB), so b pulls it from a.
size=$((big_mib * 1048576))
say "writing a $big_mib MiB random file on a"
head -c "$size" /dev/urandom >"$state/a/tmp.big"
h=$(sha "$state/a/tmp.big")
t0=$(now)
mv "$state/a/tmp.big" "$state/a/dir/big.bin"
# Also when b's status first shows a pull in flight (`sync.transfers`, the
# only one then is big.bin's, as a path or as an offer of a): the time
# before that is finding a way to a (connection, relay slot, punch) and
# retry back-off.
deadline=$((SECONDS + big_wait)) t_flow="" xf="0 0"
until has b big.bin "$h" "$size"; do
  if [[ -z $t_flow ]]; then
    xf=$(q b xfers 2>/dev/null) || xf="0 0"
    if [[ ${xf%% *} != 0 ]]; then t_flow=$(now); fi
  fi
  if ((SECONDS >= deadline)); then
    xf=$(q b xfers 2>/dev/null) || xf="? ?"
    fail "$big_mib MiB file written on a: not complete on b after ${big_wait}s (b's pulls in flight: ${xf%% *}, ${xf#* } bytes done$([[ -n $t_flow ]] || echo '; none ever seen'); path a->b: $(q a field "$idb" path 2>/dev/null || echo '?'), b->a: $(q b field "$ida" path 2>/dev/null || echo '?'))"
  fi
  sleep 0.2
done
t_end=$(now)
secs=$(awk -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }')
mbps=$(awk -v b="$size" -v a="$t0" -v e="$t_end" 'BEGIN { s = e - a; printf "%.1f", b / 1e6 / (s > 0.05 ? s : 0.05) }')
pass "$big_mib MiB file written on a is on b, identical, after $secs s: $mbps MB/s"
if [[ -n $t_flow ]]; then
  flow=$(awk -v b="$size" -v a="$t_flow" -v e="$t_end" 'BEGIN { s = e - a; printf "%.1f", b / 1e6 / (s > 0.05 ? s : 0.05) }')
  info "b's pull in flight after $(awk -v a="$t0" -v f="$t_flow" 'BEGIN { printf "%.1f", f - a }') s; from then on about $flow MB/s"
else
  flow=""
  info "b's status never showed the pull in flight (over between two samples)"
fi
if [[ -e $state/pub/dir/big.bin ]]; then
  fail "pub fetched big.bin despite --max-file-size 1MiB: the figure is not a<->b"
fi
pass "pub held big.bin back (not in its dir): b pulled it from a"

path_ab=$(q a field "$idb" path) || path_ab='?'
path_ba=$(q b field "$ida" path) || path_ba='?'
reach_ab=$(q a field "$idb" reachable) || reach_ab='?'
say "path a->b: $path_ab (reachable $reach_ab), b->a: $path_ba"
if [[ $mode == relay ]]; then
  [[ $path_ab == "<absent>" ]] && fail "a's status has no 'path' for member b: the build lacks peer paths"
  [[ $path_ab == relayed ]] || fail "--relay-only: a's status says path '$path_ab' for b, want 'relayed'"
  pass "--relay-only: a reaches b relayed"
fi
label=$([[ $mode == relay ]] && echo relayed || echo direct-or-punched)
echo "nat: $label $mbps MB/s ($big_mib MiB a->b in $secs s${flow:+, about $flow MB/s once in flight}; path a->b $path_ab, b->a $path_ba)"
[[ -n ${FSD_NAT_RESULT:-} ]] && echo "$mbps" >"$FSD_NAT_RESULT"
exit 0
