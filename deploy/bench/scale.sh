#!/usr/bin/env bash
# filesyncd at scale: N small files (default 100,000 of 0-4 KiB in 1,000
# dirs) synced by a 3-node cluster on loopback, against rsync -a, rsync -a
# --fsync and syncthing (when installed) in the same run; plus a rescan of
# the unchanged tree, a restart, and write-to-visible of one-file edits.
# See the "Scale bench" section of deploy/bench/README.md.
#
#   deploy/bench/scale.sh [--no-build] [scale.py options]
#
# scale.py options: --files 100000, --max-size 4096, --dirs (files/100),
# --seed 1, --tries 10, --timeout 1800, --try-timeout 60,
# --baselines rsync,rsync-fsync,syncthing, --rescan touch,restart,
# --verify all|N, --out FILE (default deploy/bench/results/scale-<UTC>.md),
# --keep (keep the temp root after a clean run).
#
# Environment: FILESYNCD_BIN (use this binary, no cargo build), BENCH_TMP
# (parent of the temp root, default /tmp), CARGO_TARGET_DIR.
# Exit: 0 table written; 3 table written but filesyncd did not converge (or
# failed the rescan / latency steps), temp root kept; 1 the harness failed
# (temp root kept); 2 bad usage or missing tool; 130/143 interrupted.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=1
py_args=()
while (($#)); do
  case $1 in
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) py_args+=("$1"); shift ;;
  esac
done

die() { echo "scale.sh: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 not found"
if ! command -v rsync >/dev/null; then
  echo "scale.sh: rsync not found, installing it with apt-get" >&2
  if [[ $(id -u) == 0 ]]; then sudo=(); else sudo=(sudo); fi
  if command -v apt-get >/dev/null \
    && "${sudo[@]}" apt-get update -qq >&2 \
    && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq rsync >&2; then
    :
  else
    echo "scale.sh: could not install rsync; its rows will say 'not installed'" >&2
  fi
fi

if [[ -n ${FILESYNCD_BIN:-} ]]; then
  bin=$FILESYNCD_BIN
else
  target=${CARGO_TARGET_DIR:-$repo/target}
  [[ $target == /* ]] || target=$repo/$target
  bin=$target/release/filesyncd
  if ((build)); then
    echo "scale.sh: cargo build --release -p filesyncd (nice 10)" >&2
    (cd "$repo" && nice -n 10 cargo build --release -p filesyncd --bin filesyncd) \
      || die "release build failed"
  fi
fi
[[ -x $bin ]] || die "no filesyncd binary at $bin"

root=$(mktemp -d "${BENCH_TMP:-/tmp}/filesyncd-scale.XXXXXX")
pypid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid i
  # scale.py stops its daemons (by pid) and removes its temp root on SIGTERM.
  if [[ -n $pypid ]] && kill -0 "$pypid" 2>/dev/null; then
    kill -TERM "$pypid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pypid" 2>/dev/null || break; sleep 0.5; done
  fi
  # scale.py removes $root/pids once everything it started is stopped; if it
  # is still there, scale.py was killed: stop what is left, by pid, and only
  # processes whose command line names the temp root.
  if [[ -f $root/pids ]]; then
    while read -r pid; do
      if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$root"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$root/pids"
    echo "scale.sh: kept $root" >&2
  fi
}
trap cleanup EXIT
trap 'echo "scale.sh: interrupted, cleaning up" >&2; exit 130' INT
trap 'echo "scale.sh: terminated, cleaning up" >&2; exit 143' TERM

cmd="${FILESYNCD_BIN:+FILESYNCD_BIN=$FILESYNCD_BIN }${BENCH_TMP:+BENCH_TMP=$BENCH_TMP }bash deploy/bench/scale.sh"
((build)) || cmd+=" --no-build"
if ((${#py_args[@]})); then
  printf -v quoted ' %q' "${py_args[@]}"
  cmd+=$quoted
fi
# In the background so that a signal to this script runs the trap at once.
python3 "$here/scale.py" --root "$root" --binary "$bin" --command "$cmd" \
  ${py_args[@]+"${py_args[@]}"} &
pypid=$!
status=0
wait "$pypid" || status=$?
exit "$status"
