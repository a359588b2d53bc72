#!/usr/bin/env bash
# A private node behind a home router that speaks UPnP IGD (miniupnpd): does
# the node get its listen port mapped, does AutoNAT then find it public, and
# does its member record become the router's public address with that port?
#
#   upnp.sh [--net-only] [--pcp]
#
#   --pcp   the router speaks only PCP and NAT-PMP (miniupnpd with UPnP off):
#           the mapping must come from the node's PCP/NAT-PMP client
#
#          wan bridge fsdupwan 192.0.3.0/24 (host side: no address)
#     .10 pub                 .1 r (router, miniupnpd)
#     public member           MASQUERADE 10.9.0.0/24
#                             lan 10.9.0.1 -- a 10.9.0.2
#
# The router behaves as a home router: lan->wan forwarded and masqueraded,
# wan->lan and wan->router only as replies (conntrack ESTABLISHED,RELATED),
# except what miniupnpd opens (its MINIUPNPD chains, set up by the package's
# iptables_init.sh). The script proves before any node starts that a
# datagram from pub to the router's port 7400 reaches nothing.
#
# Nodes (namespaces fsdup-pub, fsdup-a; the router is fsdup-r; the common
# parts of this lab and nat.sh's are in natlab.sh):
#   pub  run --listen 192.0.3.10:7400              (founds)
#   a    run --listen 0.0.0.0:7400 --join 192.0.3.10:7400 --token <fresh>
#        (UPnP on: the default)
# Checks: miniupnpd answers on the lan; a joins; a's log says the router
# maps the listen port (the external address); the router's nat table has
# miniupnpd's DNAT for it; a's status says reachability public and pub's
# status records a at /ip4/<router>/udp/<mapped port>/quic-v1 (a timeline
# of both is printed); a file written on pub arrives on a; UDP datagrams
# from pub to <router>:<mapped port> reach a through the mapping (counters
# of the router's DNAT and filter rules, and a count rule in a's INPUT).
# Last line: "upnp: mapped <ext addr> after N s; record <addr>".
# Also reported (information only): whether miniupnpd answers NAT-PMP on
# the lan (libp2p speaks UPnP IGD only).
#
#   --net-only   build the lab, probe it and start miniupnpd; no node
#
# Exit: 0 every check passed (or skipped, with a "skipped:" line: not root,
# no `ip netns`, no legacy iptables in a namespace, miniupnpd cannot be
# installed or cannot run in a namespace); 1 a check failed, or a skip under
# FSD_CHAOS_REQUIRE=1; 2 usage or no binary. Everything created
# (namespaces, bridge, veths, the host FORWARD rule, miniupnpd's chains,
# processes incl. miniupnpd, the state dir) is removed on exit; after a
# failure the logs stay in the state dir and the relevant lines are printed.
#
# miniupnpd: Debian's miniupnpd-iptables (installed with apt-get when
# missing, with the miniupnpd package for the miniupnpd_functions.sh its
# iptables_init.sh sources; no service is started, and any miniupnpd the
# install started on the host is stopped). It is built on libiptc, so the
# router's rules all use iptables-legacy (its init scripts run with a PATH
# where `iptables` is iptables-legacy).
#
# Environment:
#   FSD_BIN              filesyncd (default: target/debug/filesyncd)
#   FSD_UPNP_STATE       state dir (default /tmp/filesyncd-upnp)
#   FSD_UPNP_PREFIX      the lab's name stem (default fsdup; at most 10 of
#                        [a-z0-9]): namespaces STEM-pub, -r, -a, bridge
#                        STEMwan, host veths STEMw-pub, -r, host FORWARD rule
#                        comment STEM-bridge (fsd-upnp-bridge for fsdup), so
#                        that a second lab can run beside this one
#   FSD_UPNP_WAN         first three octets of the wan /24 (default 192.0.3).
#                        Both miniupnpd 2.3.1 ("Reserved / private IP address
#                        ... Port forwarding is impossible") and libp2p-upnp
#                        (a gateway with a non-global external IP is "not
#                        routable") refuse a documentation, private or other
#                        reserved wan address (203.0.113.0/24 fails at the
#                        mapping), so the lab gives its wan a global /24. It
#                        stays isolated: the bridge has no uplink and no host
#                        address, and no namespace has a route off it, so
#                        every datagram goes to a host the test made.
#   FSD_UPNP_JOIN_WAIT   seconds for a node to start and join (default 60)
#   FSD_UPNP_MAP_WAIT    seconds from a's start for the mapping (default 60)
#   FSD_UPNP_PUBLIC_WAIT seconds from a's start for "public" and the record
#                        (default 90)
#   FSD_UPNP_FILE_WAIT   seconds for the file from pub to reach a (default 60)
#   FSD_UPNP_KEEP=1      keep the logs in the state dir after a pass too
#   RUST_LOG             node log filter (default: info, and debug for
#                        libp2p_upnp, libp2p_autonat and filesyncd_p2p on a)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/natlab.sh
source "$here/natlab.sh"
bin=${FSD_BIN:-$repo/target/debug/filesyncd}
state=${FSD_UPNP_STATE:-/tmp/filesyncd-upnp}
join_wait=${FSD_UPNP_JOIN_WAIT:-60}
map_wait=${FSD_UPNP_MAP_WAIT:-60}
public_wait=${FSD_UPNP_PUBLIC_WAIT:-90}
file_wait=${FSD_UPNP_FILE_WAIT:-60}
comm=$(basename "$bin" | cut -c1-15)   # a node's /proc/PID/comm

lab=upnp lab_tag=upnp skip_needs=""
lab_ns=(pub r a)
lab_nodes=(pub a)
# P (namespace prefix: fsdup-pub, fsdup-r, fsdup-a), BR (the wan bridge),
# HV (host ends of the wan veths: fsdupw-pub, fsdupw-r), COMMENT and
# fwd_rule (the host FORWARD rule).
lab_names FSD_UPNP_PREFIX fsdup fsd-upnp-bridge
WAN=${FSD_UPNP_WAN:-192.0.3}
PUB=$WAN.10
RWAN=$WAN.1
LAN=10.9.0
A=$LAN.2
PORT=7400
API=127.0.0.1:7401
PROBE_SPORT=7487          # pub's source port for the datagrams through the mapping
MUPNPD=/usr/sbin/miniupnpd
MUPNP_SCRIPTS=/etc/miniupnpd
UUID=6b1d7c2e-8f3a-4c55-9e21-0f5d3a7b9c10

net_only=0
proto=upnp
while (($#)); do
  case $1 in
    --net-only) net_only=1 ;;
    --pcp) proto=pcp ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "upnp.sh: unknown argument $1" >&2; sed -n '6p' "$0" >&2; exit 2 ;;
  esac
  shift
done
if [[ $proto == upnp ]]; then
  MAPPED='UPnP: the router maps the listen port'
else
  MAPPED='NAT-PMP/PCP: the router maps the listen port'
fi
lab_check_state FSD_UPNP_STATE
[[ $WAN =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ && $WAN != 10.9.0 ]] || { echo "upnp.sh: FSD_UPNP_WAN must be three octets (not the lan's 10.9.0)" >&2; exit 2; }

indent() { local l; while IFS= read -r l; do printf '  %s %s\n' "$1" "$l"; done; }

# --- can this machine run it? -----------------------------------------------
lab_need_root "needs root (not root)"
lab_need_tools ip iptables iptables-legacy python3 setsid sha256sum timeout which
lab_probe_netns "needs ip netns (ip netns add failed)" \
  "ip netns exec, iptables or iptables-legacy -t nat in a namespace failed" \
  "iptables -w -S" "iptables-legacy -w -t nat -S"

if ((!net_only)); then
  lab_need_bin
  lab_bin_has --no-upnp "the build has no UPnP"
fi

# miniupnpd pids outside our namespaces (the host's own or other labs').
host_miniupnpd() {
  local pid
  for pid in $(pgrep -x miniupnpd 2>/dev/null || true); do
    if [[ $(ip netns identify "$pid" 2>/dev/null) != "${P}r" ]]; then echo "$pid"; fi
  done
}

# miniupnpd-iptables (the daemon, iptables_init.sh) and miniupnpd (the
# miniupnpd_functions.sh the init scripts source; its service is disabled
# by default and never started here).
install_miniupnpd() {
  local before pkgs=() pid
  [[ -x $MUPNPD ]] || pkgs+=(miniupnpd-iptables)
  [[ -f $MUPNP_SCRIPTS/miniupnpd_functions.sh ]] || pkgs+=(miniupnpd)
  ((${#pkgs[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || skip "miniupnpd is not installed and there is no apt-get"
  before=$(host_miniupnpd | tr '\n' ' ')
  say "installing ${pkgs[*]} (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y "${pkgs[@]}" >"/tmp/fsdup-apt.$$.log" 2>&1; then
    if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 update >>"/tmp/fsdup-apt.$$.log" 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y "${pkgs[@]}" >>"/tmp/fsdup-apt.$$.log" 2>&1; }; then
      tail -n 5 "/tmp/fsdup-apt.$$.log" >&2
      rm -f "/tmp/fsdup-apt.$$.log"
      skip "apt-get install ${pkgs[*]} failed"
    fi
  fi
  rm -f "/tmp/fsdup-apt.$$.log"
  # Whatever miniupnpd the install started on the host goes (by its pid).
  for pid in $(host_miniupnpd); do
    [[ " $before " == *" $pid "* ]] && continue
    info "stopping the miniupnpd (pid $pid) the package install started on the host"
    kill -TERM "$pid" 2>/dev/null || true
  done
  [[ -x $MUPNPD && -x $MUPNP_SCRIPTS/iptables_init.sh && -f $MUPNP_SCRIPTS/miniupnpd_functions.sh ]] \
    || skip "the installed packages lack $MUPNPD or $MUPNP_SCRIPTS/iptables_init.sh"
}
install_miniupnpd
"$MUPNPD" --version 2>&1 | grep -q 'iptables' || skip "$MUPNPD is not the iptables build (miniupnpd-iptables)"

# The router's iptables (legacy: miniupnpd is built on libiptc).
rt() { nx r iptables-legacy -w "$@"; }
# The package's init scripts in the router, with iptables = iptables-legacy.
mupnp_script() { nx r env PATH="$state/shim:$PATH" sh "$MUPNP_SCRIPTS/$1" -i wan; }

# --- lab --------------------------------------------------------------------------
# shellcheck disable=SC2317  # called from the EXIT trap
stop_miniupnpd() {
  stop_pidfile "$state/r/miniupnpd.pid" miniupnpd
  if ip netns list | awk '{print $1}' | grep -qx "${P}r" && [[ -x $state/shim/iptables ]]; then
    mupnp_script iptables_removeall.sh >>"$state/r/iptables_init.log" 2>&1 || true
  fi
}

net_up() {
  bridge_up
  wan_link pub eth0 "$PUB"
  wan_link r wan "$RWAN"
  router r a "$LAN" iptables-legacy fsd-upnp-router
  # SSDP (239.255.255.250:1900) leaves on the lan (the default route would
  # too; this says so).
  ip -n "${P}a" route add 224.0.0.0/4 dev eth0
  say "lab up: pub $PUB, r $RWAN (lan $LAN.1, a $A) on $BR"
}

net_check() {
  local tmp seen spid got
  tmp=$(mktemp -d -p "$state" probe.XXXXXX)
  # a reaches pub, and pub's answers come back through the NAT.
  nx pub python3 "$here/nat_probe.py" whoami-server 7497 6 2>"$tmp/err" &
  spid=$!
  wait_ready "$tmp/err" || fail "probe server in pub did not start"
  seen=$(nx a python3 "$here/nat_probe.py" whoami 7497 "$PUB:7497") || fail "a -> pub: no answer through r's NAT"
  [[ ${seen%:*} == "$RWAN" ]] || fail "a -> pub: pub saw source $seen, want $RWAN (masqueraded by r)"
  pass "a -> pub and back through r's NAT; pub sees $A:7497 as $seen"
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  # Nothing unsolicited from the wan reaches a: not at its private address
  # (routed via r), not at r's public address on the port a will use.
  nx pub ip route add "$LAN.0/24" via "$RWAN"
  got=$(count_arrivals a "$PORT" 1.5 pub "$A:$PORT" "$RWAN:$PORT")
  nx pub ip route del "$LAN.0/24" via "$RWAN"
  ((got == 0)) || fail "pub -> a (routed via r, or r's public address, port $PORT): $got datagrams arrived before any mapping"
  pass "the lan is closed from the wan: unsolicited UDP from pub to $A:$PORT (routed via r) and to $RWAN:$PORT: 0 arrived"
  rm -rf "$tmp"
}

# --- miniupnpd ----------------------------------------------------------------------
start_miniupnpd() {
  local deadline log=$state/r/miniupnpd.log
  mkdir -p "$state/r" "$state/shim"
  ln -sf "$(command -v iptables-legacy)" "$state/shim/iptables"
  cat >"$state/r/miniupnpd.conf" <<EOF
# written by deploy/chaos/upnp.sh
ext_ifname=wan
listening_ip=lan
http_port=5000
enable_upnp=$([[ $proto == upnp ]] && echo yes || echo no)
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
ipv6_disable=yes
notify_interval=30
clean_ruleset_interval=600
lease_file=$state/r/upnp.leases
uuid=$UUID
friendly_name=fsdup router
allow 1024-65535 $LAN.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
  mupnp_script iptables_init.sh >"$state/r/iptables_init.log" 2>&1 \
    || { cat "$state/r/iptables_init.log" >&2; skip "miniupnpd's iptables_init.sh failed in a namespace"; }
  if ! { rt -t nat -S MINIUPNPD && rt -t filter -S MINIUPNPD; } >/dev/null 2>&1; then
    cat "$state/r/iptables_init.log" >&2
    skip "iptables_init.sh made no MINIUPNPD chains in the router"
  fi
  # setsid and ip netns exec exec it: $! is miniupnpd's pid.
  setsid ip netns exec "${P}r" "$MUPNPD" -f "$state/r/miniupnpd.conf" -d -P "$state/r/miniupnpd.pidfile" \
    </dev/null >"$log" 2>&1 &
  local mpid=$!
  echo "$mpid" >"$state/r/miniupnpd.pid"
  deadline=$((SECONDS + 10))
  local ready='HTTP listening on port'
  [[ $proto == pcp ]] && ready='Listening for NAT-PMP/PCP traffic'
  until grep -q "$ready" "$log" 2>/dev/null; do
    if ! kill -0 "$mpid" 2>/dev/null || ((SECONDS >= deadline)); then
      sed 's/^/  miniupnpd: /' "$log" >&2
      skip "miniupnpd did not start in a namespace"
    fi
    sleep 0.2
  done
  sleep 0.5
  kill -0 "$mpid" 2>/dev/null \
    || { sed 's/^/  miniupnpd: /' "$log" >&2; skip "miniupnpd exited right after starting in a namespace"; }
  pass "miniupnpd up in r (pid $mpid): $(grep -o 'HTTP listening on port [0-9]*' "$log" | head -1); $(grep -o 'Listening for NAT-PMP/PCP traffic on port [0-9]*' "$log" | head -1 || echo 'no NAT-PMP listener logged')"
  local w
  w=$(grep -E 'Reserved / private IP|Port forwarding is impossible|not public routable|Public IP address is required' "$log" || true)
  if [[ -n $w ]]; then
    info "miniupnpd says about the wan address $RWAN:"
    indent miniupnpd: <<<"$w"
  fi
}

# NAT-PMP from the lan (information only: libp2p speaks UPnP IGD only).
natpmp_check() {
  local got
  got=$(nx a python3 "$here/nat_probe.py" natpmp "$LAN.1" 2>&1) || true
  info "NAT-PMP public address request from a to $LAN.1:5351: $got"
}

# --- nodes ---------------------------------------------------------------------------
# q (natlab.sh) also answers reach (nat.reachability) and natline
# ("reachability observed=... relayed=N").
q_more='elif w == "reach": print((s.get("nat") or {}).get("reachability") or "<absent>")
elif w == "natline":
    n = s.get("nat") or {}
    print("%s observed=%s relayed=%d" % (n.get("reachability"), ",".join(n.get("observed") or []) or "-", len(n.get("relayed") or [])))'

# log_t LINE: seconds from a's start ($t0) to the time stamp LINE begins with.
log_t() {
  local ts
  ts=$(date -d "${1%%[[:space:]]*}" +%s.%N 2>/dev/null) || { echo "?"; return 0; }
  awk -v a="$t0" -v b="$ts" 'BEGIN { printf "%.1f", b - a }'
}

# The log lines that tell what UPnP, AutoNAT and the member record did.
explain() {
  local n
  echo "--- a's log: UPnP, AutoNAT, reachability, relay, member address" >&2
  grep -a -i -E 'upnp|igd|gateway|autonat|reachab|member address|relay reservation|reserving|not reachable directly' \
    "$state/a/log" 2>/dev/null | grep -v -i 'Outbound dial-back request returned response' | tail -n 40 >&2 || true
  echo "--- miniupnpd log ($state/r/miniupnpd.log), last lines" >&2
  tail -n 25 "$state/r/miniupnpd.log" >&2 2>/dev/null || true
  echo "--- router nat table (MINIUPNPD, PREROUTING, POSTROUTING)" >&2
  rt -t nat -S 2>/dev/null | grep -E 'MINIUPNPD|PREROUTING|POSTROUTING' >&2 || true
  for n in a pub; do
    echo "--- $n: $(q "$n" natline 2>/dev/null || echo 'no answer')" >&2
  done
}

# pkts of the router's rules in CHAIN of TABLE matching PATTERN (summed).
rt_pkts() {
  rt -t "$1" -L "$2" -v -n -x 2>/dev/null | awk -v p="$3" 'NR > 2 && $0 ~ p { s += $1 } END { print s + 0 }'
}
a_probe_pkts() {
  nx a iptables -w -L INPUT -v -n -x 2>/dev/null | awk '/fsd-upnp-probe/ { s += $1 } END { print s + 0 }'
}

# --- teardown ------------------------------------------------------------------------
# shellcheck disable=SC2317  # the EXIT trap
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if ((rc != 0)) && [[ -d $state ]]; then
    node_tails 12
    if [[ -f $state/r/miniupnpd.log ]]; then
      rt -t nat -S >"$state/r/nat.rules" 2>&1
      rt -t filter -S >"$state/r/filter.rules" 2>&1
    fi
  fi
  stop_nodes
  stop_miniupnpd
  net_down
  if [[ -d $state ]]; then
    rm -rf "$state"/probe.* "$state/shim"
    if ((rc != 0)) || [[ ${FSD_UPNP_KEEP:-0} == 1 ]]; then
      # Keep the evidence (logs, status, rules), not the synced data.
      drop_data
      say "lab down; logs kept in $state (exit $rc)"
    else
      rm -rf "$state"
      say "lab down (exit 0)"
    fi
  fi
  exit "$rc"
}

# --- run --------------------------------------------------------------------------------
# A lab left over by a killed run goes first (its miniupnpd, then the rest).
stop_pidfile "$state/r/miniupnpd.pid" miniupnpd 2>/dev/null || true
lab_fresh

net_up
# miniupnpd maps nothing while its wan address is reserved (it answers
# GetExternalIPAddress with nothing), and libp2p-upnp calls a gateway with a
# non-global external address "not routable": with a documentation wan
# (the default) the mapping checks below fail, by design of both.
if ! python3 -c 'import ipaddress, sys; sys.exit(0 if ipaddress.ip_address(sys.argv[1]).is_global else 1)' "$RWAN"; then
  info "the router's wan address $RWAN is not a global address: miniupnpd refuses port forwarding on it and libp2p-upnp ignores such a gateway (FSD_UPNP_WAN picks another /24 for the isolated lab)"
fi
net_check
start_miniupnpd
natpmp_check
if ((net_only)); then pass "network and miniupnpd only (--net-only)"; exit 0; fi

say "filesyncd $bin; state $state"
start_node pub "${RUST_LOG:-info}" --listen "$PUB:$PORT"
cid=$(wait_joined pub "")
pass "pub founded cluster $cid"
token=$(cli pub token create --ttl 10m 2>/dev/null) || token=""
[[ -n $token ]] || fail "pub handed out no join token"
t0=$(now)
start_node a "${RUST_LOG:-info,libp2p_upnp=debug,libp2p_autonat=debug,filesyncd_p2p=debug}" \
  --listen "0.0.0.0:$PORT" --join "$PUB:$PORT" --token "$token"
wait_joined a "$cid" >/dev/null
ida=$(q a node_id)
pass "a joined through r's NAT ($ida) after $(since "$t0") s"

# Timeline, sampled every 0.5 s once a answers (so the first samples come
# late; a's log gives the exact times after): the UPnP log line, the DNAT
# rule, a's reachability, and the address pub records for a.
ext="" mport="" t_map="" t_dnat="" t_public="" t_record="" dnat=""
last_reach="" last_rec="" want_rec=""
deadline_map=$((SECONDS + map_wait)) deadline_pub=$((SECONDS + public_wait))
say "timeline as sampled (seconds since a started):"
while :; do
  alive a || { explain; fail "node a exited"; }
  if [[ -z $ext ]]; then
    line=$(grep -a -m1 "$MAPPED" "$state/a/log" || true)
    if [[ -n $line ]]; then
      if [[ $proto == upnp ]]; then
        ext=$(grep -o -E 'external_addr=[^ ]+' <<<"$line" | head -1 | cut -d= -f2-)
      else
        ext=/ip4/$RWAN/udp/$(grep -o -E 'external_port=[0-9]+' <<<"$line" | head -1 | cut -d= -f2)/quic-v1
      fi
      t_map=$(since "$t0")
      say "  t+${t_map}s a: $MAPPED: $ext"
      mport=$(sed -n -E 's#^/ip4/[0-9.]+/udp/([0-9]+)/quic-v1.*#\1#p' <<<"$ext")
      [[ -n $mport ]] || { explain; fail "a's UPnP external address '$ext' is no /ip4/…/udp/PORT/quic-v1"; }
      [[ $ext == /ip4/$RWAN/* ]] || { explain; fail "a's UPnP external address $ext is not at the router's wan address $RWAN"; }
      want_rec=/ip4/$RWAN/udp/$mport/quic-v1
    elif [[ $proto == upnp ]] && grep -a -q -E 'UPnP: the gateway is not routable|UPnP: no gateway answered' "$state/a/log"; then
      line=$(grep -a -m1 -E 'UPnP: the gateway is not routable|UPnP: no gateway answered' "$state/a/log")
      say "  t+$(since "$t0")s a: ${line##*UPnP: }"
      explain
      fail "a's UPnP gave up: '${line##*UPnP: }' (libp2p-upnp searches for a gateway once per start; the router's wan address is $RWAN)"
    elif ((SECONDS >= deadline_map)); then
      explain
      fail "a's log says nothing of a mapping ('$MAPPED') after ${map_wait}s"
    fi
  fi
  if [[ -n $mport && -z $t_dnat ]]; then
    dnat=$(rt -t nat -S MINIUPNPD 2>/dev/null | grep -E -- "-p udp" | grep -E -- "--dport $mport( |$)" | grep -- DNAT || true)
    if [[ -n $dnat ]]; then
      t_dnat=$(since "$t0")
      # iptables-legacy may not print the DNAT target miniupnpd wrote
      # ("[unsupported revision]"): the -L form and the lease file say where.
      dnat_l=$(rt -t nat -L MINIUPNPD -n 2>/dev/null | grep -E "udp dpt:$mport( |\$)" | tr -s ' ' | head -1 || true)
      say "  t+${t_dnat}s r: nat MINIUPNPD: $dnat${dnat_l:+ | -L: $dnat_l}"
      [[ -s $state/r/upnp.leases ]] && say "  t+${t_dnat}s r: miniupnpd lease file: $(tr '\n' ' ' <"$state/r/upnp.leases")"
      grep -a -m1 -E '(AddPortMapping|AddAnyPortMapping): ext port' "$state/r/miniupnpd.log" 2>/dev/null | indent "miniupnpd:" || true
    fi
  fi
  reach=$(q a reach 2>/dev/null) || reach="?"
  if [[ $reach != "$last_reach" && $reach != "?" ]]; then
    say "  t+$(since "$t0")s a: reachability $reach ($(q a natline 2>/dev/null || echo '?'))"
    last_reach=$reach
    [[ $reach == public && -z $t_public ]] && t_public=$(since "$t0")
    [[ $reach != public ]] && t_public=""
  fi
  rec=$(q pub field "$ida" addr 2>/dev/null) || rec="?"
  if [[ $rec != "$last_rec" && $rec != "?" ]]; then
    say "  t+$(since "$t0")s pub records a at $rec"
    last_rec=$rec
    if [[ -n $want_rec && $rec == "$want_rec" ]]; then t_record=$(since "$t0"); else t_record=""; fi
  fi
  if [[ -n $want_rec && -z $t_record && $rec == "$want_rec" ]]; then t_record=$(since "$t0"); fi
  [[ -n $ext && -n $t_dnat && -n $t_public && -n $t_record ]] && break
  if ((SECONDS >= deadline_pub)); then
    explain
    missing=()
    [[ -n $t_dnat ]] || missing+=("no DNAT for udp ${mport:-?} in the router's nat table")
    [[ -n $t_public ]] || missing+=("a's reachability is '$last_reach', not public")
    [[ -n $t_record ]] || missing+=("pub records a at '$last_rec', not $want_rec")
    fail "after ${public_wait}s: $(printf '%s; ' "${missing[@]}")"
  fi
  sleep 0.5
done
# The same from a's own log, to the millisecond it stamps.
t_map_log=$(log_t "$(grep -a -m1 "$MAPPED" "$state/a/log")")
say "timeline from a's log (seconds since a started):"
grep -a -E 'admitted: catching up|UPnP: |NAT-PMP/PCP: |reachability \(AutoNAT|member address updated|relay reservation accepted|reserving a slot' "$state/a/log" \
  | head -n 20 | while IFS= read -r l; do
      say "  t+$(log_t "$l")s $(sed -E 's/^[^ ]+ +[A-Z]+ +[^ ]+: //' <<<"$l" | cut -c1-220)"
    done
pass "a's listen port is mapped: $ext (logged ${t_map_log}s after a started)"
pass "the router's nat table has miniupnpd's mapping: $dnat"
pass "a's status says reachability public (after ${t_public}s); AutoNAT: $(grep -a 'reachability (AutoNAT' "$state/a/log" | tail -1 | grep -o 'now=.*' || echo '?')"
pass "pub records a at $want_rec (after ${t_record}s)"
fwd=$(rt -t filter -S MINIUPNPD 2>/dev/null | grep -E -- "-d $A/32 .*-p udp .*--dport $PORT" || true)
[[ -n $fwd ]] && info "r's filter MINIUPNPD: $fwd"

# A file written on pub arrives on a.
head -c 65536 /dev/urandom >"$state/pub/tmp.f"
h=$(sha "$state/pub/tmp.f")
tf=$(now)
mv "$state/pub/tmp.f" "$state/pub/dir/from-pub.bin"
deadline=$((SECONDS + file_wait))
until [[ -f $state/a/dir/from-pub.bin && $(sha "$state/a/dir/from-pub.bin") == "$h" ]]; do
  ((SECONDS < deadline)) || { explain; fail "64 KiB file written on pub: not on a after ${file_wait}s"; }
  sleep 0.25
done
pass "64 KiB file written on pub is on a, identical, after $(since "$tf") s (path pub->a: $(q pub field "$ida" path 2>/dev/null || echo '?'))"

# The decisive one: unsolicited datagrams from pub to the mapped port reach
# a through the router (a new flow from a fresh source port).
nx a iptables -w -I INPUT -p udp -s "$PUB" --sport "$PROBE_SPORT" --dport "$PORT" -m comment --comment fsd-upnp-probe
n_dnat0=$(rt_pkts nat MINIUPNPD "dpt:$mport ")
# Flows the mapping carried before the probe (AutoNAT's dial-back comes
# from a new port of pub's): the router's conntrack entries DNATed to a.
flows=$(nx r cat /proc/net/nf_conntrack 2>/dev/null | awk -v r="$RWAN" -v p="$mport" -v a="$A" '
    $3 == "udp" { delete f
      for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2) { c[kv[1]]++; f[kv[1] c[kv[1]]] = kv[2] }
      delete c
      if (f["dst1"] == r && f["dport1"] == p && f["src2"] == a) printf "%s:%s ", f["src1"], f["sport1"] }' || true)
info "before the probe the DNAT rule had matched $n_dnat0 new flow(s); conntrack: flows from ${flows:-(none visible)}to $RWAN:$mport, DNATed to $A:$PORT"
n_fwd0=$(rt_pkts filter MINIUPNPD "dpt:$PORT( |\$)")
n_a0=$(a_probe_pkts)
count=5
nx pub python3 "$here/nat_probe.py" send-from "$PROBE_SPORT" "$RWAN:$mport" "$count"
sleep 0.5
n_dnat=$(( $(rt_pkts nat MINIUPNPD "dpt:$mport ") - n_dnat0 ))
n_fwd=$(( $(rt_pkts filter MINIUPNPD "dpt:$PORT( |\$)") - n_fwd0 ))
n_a=$(( $(a_probe_pkts) - n_a0 ))
say "probe pub:$PROBE_SPORT -> $RWAN:$mport x$count: router DNAT rule +$n_dnat (new flows), filter MINIUPNPD +$n_fwd (with a's QUIC traffic from the wan), a's INPUT (from $PUB:$PROBE_SPORT to :$PORT) +$n_a"
((n_dnat >= 1 && n_fwd >= count && n_a >= count)) \
  || { explain; fail "datagrams from pub to $RWAN:$mport did not all reach a through the mapping (DNAT +$n_dnat, forward +$n_fwd, arrived +$n_a of $count)"; }
pass "the router forwards what pub sends to $RWAN:$mport to a ($A:$PORT): $n_a/$count arrived"

# NAT-PMP/PCP requests miniupnpd saw: one is the script's own (above).
n_pmp=$(grep -a -c -E '(NAT-PMP|PCP) request received' "$state/r/miniupnpd.log" || true)
info "miniupnpd logged $n_pmp NAT-PMP/PCP request(s), 1 of them the script's own public-address request (libp2p-upnp speaks UPnP IGD only):"
grep -a -E 'NAT-PMP|PCP' "$state/r/miniupnpd.log" | grep -v -E 'Listening for NAT-PMP|starting NAT-PMP' | tail -n 4 | indent miniupnpd: || true
echo "upnp: mapped $ext after $t_map_log s; record $want_rec"
exit 0
