#!/usr/bin/env bash
# A cluster of filesyncd nodes in plain network namespaces (no Docker).
#
#   netns.sh up N [--solo] [--no-start]   N namespaces fsd1..fsdN, each with
#        eth0 = 10.77.0.i/24 on bridge fsdbr0 (host side 10.77.0.254), a
#        tmpfs of FSD_DIR_SIZE (default 1g) holding the synced dir, another
#        of FSD_DATA_SIZE (default 1g) holding the data dir, and a
#        node started by run.sh: node 1 creates the cluster, the others join
#        with tokens from a member. --solo: every node its own single-node
#        cluster (no --join). --no-start: network and directories only.
#   netns.sh down [--keep]   stop nodes and relays, remove namespaces, bridge,
#        mounts, the host FORWARD rule and (without --keep) FSD_STATE.
#   netns.sh status          namespaces, pids, addresses, API answers.
#
# Idempotent: `up` adds only what is missing, `down` removes what exists.
# State lives in FSD_STATE (default /tmp/filesyncd-chaos).
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

forward_rule=(FORWARD -i "$FSD_BRIDGE" -o "$FSD_BRIDGE" -m comment --comment "$FSD_COMMENT-bridge" -j ACCEPT)

up() {
  local n=${1:-} solo=0 start=1 i ns
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 200)) || usage_die "up needs a node count 1..200"
  shift
  for a in "$@"; do
    case $a in --solo) solo=1 ;; --no-start) start=0 ;; *) usage_die "unknown option $a" ;; esac
  done
  need_root
  mkdir -p "$FSD_STATE"
  seq 1 "$n" >"$FSD_STATE/nodes"
  if ((solo)); then touch "$FSD_STATE/solo"; else rm -f "$FSD_STATE/solo"; fi

  ip link show "$FSD_BRIDGE" >/dev/null 2>&1 || ip link add "$FSD_BRIDGE" type bridge
  ip addr show dev "$FSD_BRIDGE" | grep -q "inet $FSD_SUBNET.254/" \
    || ip addr add "$FSD_SUBNET.254/24" dev "$FSD_BRIDGE"
  ip link set "$FSD_BRIDGE" up
  # Docker sets FORWARD policy DROP and bridged frames pass iptables
  # (br_netfilter): let our bridge forward to itself.
  iptables -w -C "${forward_rule[@]}" 2>/dev/null || iptables -w -I "${forward_rule[@]}"

  for i in $(seq 1 "$n"); do
    ns=$(fsd_ns "$i")
    ip netns list | awk '{print $1}' | grep -qx "$ns" || ip netns add "$ns"
    if ! ip link show "${FSD_PREFIX}v$i" >/dev/null 2>&1; then
      ip link add "${FSD_PREFIX}v$i" type veth peer name eth0 netns "$ns"
    fi
    if [[ -d $FSD_STATE/delay/$i ]]; then
      ip link set "${FSD_PREFIX}v$i" up   # behind a delay relay (delay.sh), not on the bridge
    else
      ip link set "${FSD_PREFIX}v$i" master "$FSD_BRIDGE" up
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr show dev eth0 | grep -q "inet $(fsd_addr "$i")/" \
      || ip -n "$ns" addr add "$(fsd_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    mkdir -p "$FSD_STATE/n$i/fs" "$FSD_STATE/n$i/dfs"
    # A bounded file system for the synced dir: disk.sh fills it without
    # touching the host's disk. The ballast lives beside dir/, not in it.
    mountpoint -q "$FSD_STATE/n$i/fs" \
      || mount -t tmpfs -o "size=${FSD_DIR_SIZE:-1g},mode=0755" "fsd-n$i" "$FSD_STATE/n$i/fs"
    mkdir -p "$FSD_STATE/n$i/fs/dir"
    # The data dir (chunk store, Raft log, index) on its own bounded file
    # system too: disk.sh fill-data fills it.
    mountpoint -q "$FSD_STATE/n$i/dfs" \
      || mount -t tmpfs -o "size=${FSD_DATA_SIZE:-1g},mode=0700" "fsd-d$i" "$FSD_STATE/n$i/dfs"
    mkdir -p "$(fsd_data "$i")"
  done
  echo "netns: $n namespaces up ($(fsd_addr 1) .. $(fsd_addr "$n") on $FSD_BRIDGE)"
  if ((start)); then
    "$FSD_CHAOS_DIR/run.sh" start all
  fi
}

down() {
  local keep=0 i ns
  [[ ${1:-} == --keep ]] && keep=1
  need_root
  if [[ -d $FSD_STATE ]]; then
    "$FSD_CHAOS_DIR/delay.sh" heal all >/dev/null 2>&1 || true
    "$FSD_CHAOS_DIR/run.sh" stop all || true
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${FSD_PREFIX}[0-9]+$" || true); do
    i=${ns#"$FSD_PREFIX"}
    # Leftover processes in the namespace (probes, relays): only ours live there.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns"
    ip link del "${FSD_PREFIX}v$i" 2>/dev/null || true
  done
  ip link del "$FSD_BRIDGE" 2>/dev/null || true
  while iptables -w -C "${forward_rule[@]}" 2>/dev/null; do iptables -w -D "${forward_rule[@]}"; done
  if [[ -d $FSD_STATE ]]; then
    for m in "$FSD_STATE"/n*/fs/dir "$FSD_STATE"/n*/fs "$FSD_STATE"/n*/dfs; do
      while mountpoint -q "$m" 2>/dev/null; do umount "$m"; done
    done
    ((keep)) || rm -rf "$FSD_STATE"
  fi
  echo "netns: down"
}

status() {
  local i pid ns
  printf '%-5s %-8s %-12s %-8s %s\n' NODE NS ADDR PID API
  for i in $(fsd_nodes); do
    ns=$(fsd_ns "$i")
    pid=$(fsd_pid "$i")
    if node_exists "$i" && [[ -n $pid ]] && fsd_cli "$i" status --json >/dev/null 2>&1; then api=ok; else api=-; fi
    printf '%-5s %-8s %-12s %-8s %s\n' "$i" "$ns" "$(fsd_addr "$i")" "${pid:--}" "$api"
  done
}

[[ $FSD_TARGET == netns ]] || usage_die "netns.sh works on FSD_TARGET=netns only"
case ${1:-} in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  status) status ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
