#!/usr/bin/env bash
# Random packet loss with iptables' statistic match.
#
#   loss.sh on i P [in|both]   drop each packet to node i with probability P
#                              (in, the default), or to and from node i
#                              (both: the other nodes drop what i sends
#                              them with the same probability)
#   loss.sh heal [i|all]
#
# Drops happen on the receiving side's INPUT (see lib.sh). Loopback (the
# control API) is never touched. Works on netns and compose targets.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root

on() {
  local i=$1 p=$2 dir=${3:-in} j
  check_index "$i"
  python3 -c 'import sys; v=float(sys.argv[1]); sys.exit(0 if 0 < v <= 1 else 1)' "$p" 2>/dev/null \
    || usage_die "probability must be in (0, 1], got '$p'"
  ipt_clear "$i" loss
  ipt_add "$i" loss INPUT -i eth0 -m statistic --mode random --probability "$p" -j DROP
  if [[ $dir == both ]]; then
    for j in $(fsd_nodes); do
      [[ $j == "$i" ]] && continue
      ipt_add "$j" loss INPUT -i eth0 -s "$(fsd_addr "$i")/32" -m statistic --mode random --probability "$p" -j DROP
    done
  elif [[ $dir != in ]]; then usage_die "direction must be in or both"; fi
  echo "loss: node $i p=$p ($dir)"
}

heal() {
  local sel=${1:-all} j
  # Rules about node i may sit on other nodes (direction both): clear all
  # loss rules mentioning it, i.e. on every node when healing all.
  for j in $(fsd_nodes); do
    if [[ $sel == all || $j == "$sel" ]]; then ipt_clear "$j" loss; continue; fi
    ipt_clear_about "$j" loss "$(fsd_addr "$sel")"
  done
  echo "loss: healed $sel"
}

case ${1:-} in
  on) on "${2:?on needs a node}" "${3:?on needs a probability}" "${4:-in}" ;;
  heal) heal "${2:-all}" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
