#!/usr/bin/env bash
# Delay, jitter (reordering) and loss on one node's link, in user space.
#
#   delay.sh on i [--delay MS] [--jitter MS] [--reorder P] [--loss P]
#        Takes node i's host-side veth off its bridge and puts
#        udp_delay_proxy.py (link mode) between it and a new veth pair on the
#        same bridge. Every frame to and from node i then waits MS (default
#        100) +- jitter; both directions. Node addresses do not change.
#        Calling `on` again replaces the settings.
#   delay.sh heal [i|all]   stop the relay, plug the veth back into the bridge
#   delay.sh show
#
# Offloads: the relay sees frames as the veth carries them, so TX checksum
# offload and GSO/TSO are switched off (ethtool) on node i's eth0, the veth
# ends the relay uses, and every other node's eth0 (a GSO super-frame or a
# frame with a partial checksum would not survive the relay). They stay off.
# Works on netns and compose targets (the container veth is found by its
# peer index, its bridge by the veth's master).
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root

relay=$FSD_CHAOS_DIR/udp_delay_proxy.py

# Host-side veth of node i (peer of its eth0).
host_veth() {
  local i=$1 idx
  if [[ $FSD_TARGET == netns ]]; then echo "${FSD_PREFIX}v$i"; return; fi
  idx=$(in_net "$i" ip -o link show eth0 | sed -n 's/^[0-9]*: eth0@if\([0-9]*\):.*/\1/p')
  [[ -n $idx ]] || die "node $i: cannot find its eth0 peer"
  ip -o link | awk -F': ' -v idx="$idx" '$1 == idx { sub(/@.*/, "", $2); print $2 }'
}

no_offload() { ethtool -K "$1" tx off sg off tso off gso off gro off >/dev/null 2>&1 || true; }

on() {
  local i=$1; shift
  check_index "$i"
  # Only injecting needs ethtool; heal (run by heal.sh on every lab) does not.
  command -v ethtool >/dev/null || usage_die "needs ethtool (apt-get install ethtool)"
  local opts=() delay=100 jitter=0 reorder=0 loss=0
  while (($#)); do
    case $1 in
      --delay) delay=$2; shift 2 ;;
      --jitter) jitter=$2; shift 2 ;;
      --reorder) reorder=$2; shift 2 ;;
      --loss) loss=$2; shift 2 ;;
      *) usage_die "unknown option $1" ;;
    esac
  done
  opts=(--delay "$delay" --jitter "$jitter" --reorder "$reorder" --loss "$loss")
  node_exists "$i" || die "node $i is down"
  heal_one "$i" quiet
  local veth br a=${FSD_PREFIX}d$i b=${FSD_PREFIX}x$i st=$FSD_STATE/delay/$i
  veth=$(host_veth "$i")
  br=$(basename "$(readlink "/sys/class/net/$veth/master")")
  [[ -n $br && $br != . ]] || die "node $i: $veth is on no bridge"
  mkdir -p "$st"
  echo "$veth $br" >"$st/link"
  local j
  for j in $(fsd_nodes); do node_exists "$j" && in_net "$j" ethtool -K eth0 tx off sg off tso off gso off gro off >/dev/null 2>&1 || true; done
  ip link add "$a" type veth peer name "$b"
  no_offload "$a"; no_offload "$b"; no_offload "$veth"
  ip link set "$a" master "$br"
  ip link set "$a" up; ip link set "$b" up
  ip link set "$veth" nomaster
  ip link set "$veth" up
  setsid python3 "$relay" "${opts[@]}" link --a "$veth" --b "$b" </dev/null >"$st/log" 2>&1 &
  echo $! >"$st/pid"
  for _ in $(seq 100); do grep -q READY "$st/log" && break; sleep 0.05; done
  grep -q READY "$st/log" || { cat "$st/log" >&2; heal_one "$i" quiet; die "relay for node $i did not start"; }
  echo "delay: node $i ${opts[*]}"
}

heal_one() {
  local i=$1 quiet=${2:-} st=$FSD_STATE/delay/$1 veth br
  [[ -d $st ]] || return 0
  if [[ -f $st/pid ]]; then
    local p; p=$(cat "$st/pid")
    if kill -0 "$p" 2>/dev/null && grep -q udp_delay_proxy "/proc/$p/cmdline" 2>/dev/null; then
      kill -TERM "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
    fi
  fi
  ip link del "${FSD_PREFIX}d$i" 2>/dev/null || true
  if [[ -f $st/link ]]; then
    read -r veth br <"$st/link"
    if ip link show "$veth" >/dev/null 2>&1 && ip link show "$br" >/dev/null 2>&1; then
      ip link set "$veth" master "$br"
    fi
  fi
  rm -rf "$st"
  [[ -n $quiet ]] || echo "delay: node $i healed"
}

show() {
  local d i
  for d in "$FSD_STATE"/delay/*; do
    [[ -d $d ]] || continue
    i=${d##*/}
    echo "node $i: $(tr '\0' ' ' <"/proc/$(cat "$d/pid")/cmdline" 2>/dev/null | sed 's/.*udp_delay_proxy.py //')"
  done
}

case ${1:-} in
  on) shift; on "${1:?on needs a node}" "${@:2}" ;;
  heal)
    if [[ ${2:-all} == all ]]; then
      for d in "$FSD_STATE"/delay/*; do [[ -d $d ]] && heal_one "${d##*/}"; done; true
    else check_index "$2"; heal_one "$2"; fi ;;
  show) show ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
