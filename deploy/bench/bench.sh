#!/usr/bin/env bash
# filesyncd against rsync on loopback, same data, same run: a 3-node
# filesyncd cluster and an rsync daemon with two modules ("peers"), both fed
# from one source, four scenarios, one table. See deploy/bench/README.md.
#
#   deploy/bench/bench.sh [--out FILE] [--keep] [--no-build] [bench.py options]
#
# bench.py options (defaults are the issue's figures): --big-mib 1024,
# --small-count 10000, --small-dirs 100, --small-kib 4, --tries 20,
# --timeout 600 (seconds per scenario), --try-timeout 60, --idle-secs 5,
# --quiet-secs 45 (after a failed filesyncd scenario), --no-iptables (no
# bytes-on-the-wire rows; needed when not root), --no-rsync-fsync (skip the
# `rsync --fsync` runs of scenarios 1-3 and their two columns; quicker).
#
# Environment: FILESYNCD_BIN (use this binary, skip the build),
# BENCH_TMP (parent of the temporary root, default /tmp), CARGO_TARGET_DIR.
# Needs: cargo, python3 >= 3.8, rsync (installed with apt-get when absent),
# iptables and root for the byte counters. Uses ~6 GiB of disk in BENCH_TMP.
#
# Exit: 0 table written; 3 table written but filesyncd failed a scenario
# (FAILED cells, reasons under the table); 1 the harness failed or timed out
# outside a scenario (message says which); 2 bad usage or missing tool. On 1
# and 3 the temporary root with every node's log is kept.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=""
keep=0
build=1
py_args=()
while (($#)); do
  case $1 in
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) py_args+=("$1"); shift ;;
  esac
done

die() { echo "bench.sh: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 not found"
if ! command -v rsync >/dev/null; then
  echo "bench.sh: rsync not found, installing it with apt-get" >&2
  command -v apt-get >/dev/null || die "rsync missing and no apt-get to install it"
  if [[ $(id -u) == 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq rsync >&2 \
    || die "apt-get install rsync failed"
fi
if [[ " ${py_args[*]:-} " != *" --no-iptables "* ]]; then
  [[ $(id -u) == 0 ]] || die "the byte counters need root (iptables); run as root or pass --no-iptables"
  command -v iptables >/dev/null || die "iptables not found (or pass --no-iptables)"
fi

if [[ -n ${FILESYNCD_BIN:-} ]]; then
  bin=$FILESYNCD_BIN
else
  target=${CARGO_TARGET_DIR:-$repo/target}
  [[ $target == /* ]] || target=$repo/$target
  bin=$target/release/filesyncd
  if ((build)); then
    echo "bench.sh: cargo build --release -p filesyncd (nice 10)" >&2
    (cd "$repo" && nice -n 10 cargo build --release -p filesyncd --bin filesyncd) \
      || die "release build failed"
  fi
fi
[[ -x $bin ]] || die "no filesyncd binary at $bin"
if [[ -n ${FILESYNCD_BIN:-} ]]; then kind="given by FILESYNCD_BIN"; else kind="release build"; fi

root=$(mktemp -d "${BENCH_TMP:-/tmp}/filesyncd-bench.XXXXXX")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
if [[ -z $out ]]; then
  mkdir -p "$here/results"
  out=$here/results/$stamp.md
fi

status=1
interrupted=0
pypid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid chain i
  # bench.py stops its daemons and removes its iptables rules on SIGTERM.
  if [[ -n $pypid ]] && kill -0 "$pypid" 2>/dev/null; then
    kill -TERM "$pypid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pypid" 2>/dev/null || break; sleep 0.5; done
  fi
  # Processes bench.py started (it stops them itself; this covers a kill).
  if [[ -f $root/pids ]]; then
    while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$root/pids"
    sleep 1
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$root/pids"
  fi
  if [[ -f $root/iptables_chain ]]; then
    chain=$(cat "$root/iptables_chain")
    while iptables -w -D INPUT -j "$chain" 2>/dev/null; do :; done
    iptables -w -F "$chain" 2>/dev/null || true
    iptables -w -X "$chain" 2>/dev/null || true
  fi
  if (((status == 0 || interrupted) && !keep)); then
    rm -rf "$root"
  else
    echo "bench.sh: kept $root (node logs in n*/log, rsync in rsync/)" >&2
  fi
}
trap cleanup EXIT
trap 'interrupted=1; echo "bench.sh: interrupted, cleaning up" >&2; exit 130' INT
trap 'interrupted=1; echo "bench.sh: terminated, cleaning up" >&2; exit 143' TERM

rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$repo" status --porcelain -- node p2p raft chunkstore merkle 2>/dev/null) ]]; then
  rev="$rev + uncommitted changes"
fi
if [[ " ${py_args[*]:-} " == *" --no-rsync-fsync "* ]]; then
  fsync_line=""
else
  fsync_line="
- rsync --fsync (scenarios 1-3): the same with \`--fsync\` (the daemon's receiver fsyncs every
  file it writes), right after the plain run, into the same modules reset to the state the
  plain run found; in these scenarios the disk is synced (sync(2)) before each rsync timing."
fi
header="# filesyncd vs rsync, $stamp

- command: ${FILESYNCD_BIN:+FILESYNCD_BIN=$FILESYNCD_BIN }deploy/bench/bench.sh ${py_args[*]:-}
- filesyncd binary: $bin ($kind, built $(date -u -r "$bin" +%Y-%m-%dT%H:%M:%SZ)), HEAD at run time $rev
- machine: $(nproc) cores, $(uname -sr), load average at start $(cut -d' ' -f1-3 /proc/loadavg)
- filesyncd: 3 nodes on 127.0.0.1 (QUIC/UDP); data written on n0, measured on n1 and n2.
- rsync: \`rsync -a --stats <src>/ rsync://127.0.0.1:<port>/peerN/\` to two daemon modules,
  the two peers IN PARALLEL (whole source tree each time, default options, no fsync).$fsync_line
- times: from the rename of the staged data into place (or the write, for latency) until
  the peer holds it; filesyncd also requires n0 and the peer to report the new cluster
  root, in_sync on it (see the notes if this build's status lacks the sync view).
  Contents are checked (sha256 / byte compare) after each timing, outside it.
- bytes: IP packets on lo counted by an iptables rule on the filesyncd UDP ports (all
  3 nodes, any direction: data, Raft, QUIC) and on the rsync TCP port."

# In the background so that a signal to this script runs the trap at once.
python3 "$here/bench.py" --root "$root" --binary "$bin" --out "$out" \
  --header "$header" ${py_args[@]+"${py_args[@]}"} &
pypid=$!
wait "$pypid" && status=0 || status=$?
if ((status == 0 || status == 3)); then
  echo "bench.sh: table written to $out" >&2
fi
exit "$status"
