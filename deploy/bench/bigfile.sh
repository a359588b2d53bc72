#!/usr/bin/env bash
# One file much larger than each daemon's memory, synced by a 3-node cluster
# on loopback whose daemons each run in a memory cgroup of their own
# (memory.max = --mem, no swap). Passes when the file arrives intact on both
# peers, no daemon died or was OOM-killed and each daemon's peak RSS (VmHWM)
# stayed under --rss-bound. See "Big file, bounded memory" in
# deploy/bench/README.md.
#
#   deploy/bench/bigfile.sh [--size MiB] [--mem MiB] [--rss-bound MiB]
#                           [--timeout SECS] [--out FILE] [--keep]
#
# Defaults: --size 3072, --mem 256, --rss-bound 200, --timeout 1800.
# Environment: FILESYNCD_BIN (default target/release/filesyncd; no build is
# run), BENCH_TMP (parent of the temp root, default /tmp; needs about
# 4 x --size free). Needs root (or a delegated cgroup) for the cgroups.
# Exit: 0 passed; 1 failed (a daemon died / was OOM-killed, the file differs,
# a timeout, VmHWM over the bound; the temp root is kept); 2 no usable memory
# cgroup, too little disk, bad usage; 130/143 interrupted.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
keep=0
py_args=()
while (($#)); do
  case $1 in
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) py_args+=("$1"); shift ;;
  esac
done

die() { echo "bigfile.sh: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 not found"
bin=${FILESYNCD_BIN:-$repo/target/release/filesyncd}
[[ -x $bin ]] || die "no filesyncd binary at $bin (set FILESYNCD_BIN; this script does not build)"

root=$(mktemp -d "${BENCH_TMP:-/tmp}/filesyncd-bigfile.XXXXXX")
pypid=""
status=1
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid i cg
  # bigfile.py stops its daemons (by pid) and removes its cgroups on SIGTERM.
  if [[ -n $pypid ]] && kill -0 "$pypid" 2>/dev/null; then
    kill -TERM "$pypid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pypid" 2>/dev/null || break; sleep 0.5; done
  fi
  # bigfile.py removes $root/pids and $root/cgroups once it has stopped and
  # removed everything; if they are still there it was killed: stop what is
  # left, by pid and only processes whose command line names the temp root,
  # then remove the cgroups, children first.
  if [[ -f $root/pids ]]; then
    while read -r pid; do
      if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$root"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$root/pids"
    sleep 1
  fi
  if [[ -f $root/cgroups ]]; then
    tac "$root/cgroups" | while read -r cg; do
      [[ -d $cg ]] || continue
      for ((i = 0; i < 20; i++)); do rmdir "$cg" 2>/dev/null && break; sleep 0.5; done
      [[ -d $cg ]] && echo "bigfile.sh: could not remove cgroup $cg" >&2
    done
  fi
  # Kept after a failure (the logs) or with --keep; exit 2 leaves nothing to see.
  if ((status == 2 || (status == 0 && !keep))); then
    rm -rf "$root"
  else
    echo "bigfile.sh: kept $root (logs: $root/n*/log)" >&2
  fi
}
trap cleanup EXIT
trap 'echo "bigfile.sh: interrupted, cleaning up" >&2; status=130; exit 130' INT
trap 'echo "bigfile.sh: terminated, cleaning up" >&2; status=143; exit 143' TERM

cmd="FILESYNCD_BIN=$bin ${BENCH_TMP:+BENCH_TMP=$BENCH_TMP }bash deploy/bench/bigfile.sh"
if ((${#py_args[@]})); then
  printf -v quoted ' %q' "${py_args[@]}"
  cmd+=$quoted
fi
((keep)) && cmd+=" --keep"
# In the background so that a signal to this script runs the trap at once.
python3 "$here/bigfile.py" --root "$root" --binary "$bin" --command "$cmd" \
  ${py_args[@]+"${py_args[@]}"} &
pypid=$!
status=0
wait "$pypid" || status=$?
exit "$status"
