#!/usr/bin/env bash
# Wall-clock offset on one node (netns target).
#
#   clock.sh offset i SECONDS   node i's CLOCK_REALTIME runs SECONDS ahead
#                               (negative: behind); monotonic time untouched
#   clock.sh heal [i|all]       offset back to 0
#   clock.sh show
#
# How: libfaketime (Debian package faketime) preloaded into node i, reading
# its offset from FSD_STATE/ni/faketime, re-read every second. The first
# `offset` on a node restarts it (SIGTERM, start) to load the library; later
# changes apply live. What does not work, measured on this kernel:
#   - `unshare --time` / time namespaces: they offset only CLOCK_MONOTONIC
#     and CLOCK_BOOTTIME, never CLOCK_REALTIME.
#   - `date -s` in a namespace: the wall clock is not namespaced; it would
#     move the whole host.
#   - LD_PRELOAD on the static binary (image build): nothing to preload into.
# So this needs the dynamic build (target/release/filesyncd or FSD_BIN), and
# compose nodes (static, FROM scratch) have no clock fault.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root
[[ $FSD_TARGET == netns ]] || usage_die "clock offsets work on netns nodes only (see the header)"

preloaded() {
  local p; p=$(fsd_pid "$1"); [[ -n $p ]] || return 1
  tr '\0' '\n' <"/proc/$p/environ" | grep -q '^LD_PRELOAD=.*faketime'
}

offset() {
  local i=$1 s=$2 f
  [[ $s =~ ^[+-]?[0-9]+$ ]] || usage_die "offset must be whole seconds, e.g. +3600 or -86400"
  [[ $s == [+-]* ]] || s=+$s
  local bin; bin=$(fsd_bin)
  file -L "$bin" | grep -q 'dynamically linked' \
    || die "$bin is static: LD_PRELOAD cannot reach it; build target/release/filesyncd or set FSD_BIN"
  f=$FSD_STATE/n$i/faketime
  echo "$s" >"$f"
  if ! preloaded "$i"; then
    "$FSD_CHAOS_DIR/run.sh" restart "$i" >/dev/null
  fi
  echo "clock: node $i offset ${s}s"
}

heal() {
  local sel=${1:-all} i
  for i in $(if [[ $sel == all ]]; then fsd_nodes; else echo "$sel"; fi); do
    [[ -f $FSD_STATE/n$i/faketime ]] && echo "+0" >"$FSD_STATE/n$i/faketime"
  done
  echo "clock: healed $sel"
}

show() {
  local i
  for i in $(fsd_nodes); do
    echo "node $i: offset $(cat "$FSD_STATE/n$i/faketime" 2>/dev/null || echo none)$(preloaded "$i" && echo ' (libfaketime loaded)')"
  done
}

case ${1:-} in
  offset) check_index "${2:?}"; offset "$2" "${3:?offset needs SECONDS}" ;;
  heal) heal "${2:-all}" ;;
  show) show ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
