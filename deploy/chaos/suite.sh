#!/usr/bin/env bash
# The chaos suites on a network-namespace lab: builds `fsd-chaos`, brings
# up a lab of its own, starts the cluster, runs the workload and checker
# under faults, always tears the lab down, exits with fsd-chaos's code.
#
#   suite.sh smoke [--nodes N] [--seed S]          (smoke.sh: CI, a few minutes)
#   suite.sh long --minutes M [--nodes N] [--seed S] [--kinds K1,K2]   (long.sh;
#                   --kinds: only those fault kinds of the cycle, e.g. crash-point)
#
# Exit: 0 every invariant held, every planned fault was injected and
# confirmed, every check passed and the cluster settled within 30 s of the
# heal (or skipped: not root / no `ip netns`, with a "skipped:" line;
# FSD_CHAOS_REQUIRE=1 turns a skip into exit 3); 1 any of those failed;
# 2 usage, lab or build error; 124 timeout.
#
# Environment:
#   FSD_BIN         the filesyncd binary the nodes run (smoke: FILESYNCD_BIN
#                   or target/debug/filesyncd; long: target/debug/filesyncd,
#                   which `cargo test --workspace` builds with the crash
#                   points the long run's crash-point fault needs; for a
#                   release build: cargo build --release -p filesyncd
#                   --features failpoints, then FSD_BIN=target/release/filesyncd)
#   FSD_CHAOS_BIN   a prebuilt fsd-chaos (default: built with cargo)
#   FSD_CHAOS_OUT   where the report, logs and evidence go (default
#                   target/chaos/<suite>-<time>)
#   FSD_STATE, FSD_PREFIX, FSD_SUBNET   the lab (defaults differ per suite,
#                   so a lab made by hand with netns.sh is left alone)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

suite=${1:-}
shift || true
case $suite in
  smoke) nodes=3 minutes=0 ;;
  long) nodes=3 minutes=30 ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
seed=$(( $(date +%s) % 100000 ))
while (($#)); do
  case $1 in
    --nodes) nodes=${2:?}; shift 2 ;;
    --minutes) minutes=${2:?}; shift 2 ;;
    --seed) seed=${2:?}; shift 2 ;;
    --kinds) kinds=${2:?}; shift 2 ;;
    *) echo "${0##*/}: unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$suite" "$*"; }

skip() {
  if [[ ${FSD_CHAOS_REQUIRE:-0} == 1 ]]; then
    echo "chaos $suite: cannot run: $* (FSD_CHAOS_REQUIRE=1)" >&2
    exit 3
  fi
  echo "chaos $suite: skipped: needs root and ip netns ($*)"
  exit 0
}

# --- can this machine run it? -------------------------------------------
[[ $(id -u) == 0 ]] || skip "not root"
probe=fsdprobe$$
if ! ip netns add "$probe" >/dev/null 2>&1; then skip "ip netns add failed"; fi
ok=1
ip netns exec "$probe" ip link set lo up >/dev/null 2>&1 || ok=0
ip netns del "$probe" >/dev/null 2>&1 || true
((ok)) || skip "ip netns exec failed"
for t in iptables python3 setsid mountpoint timeout; do
  command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
done

# --- the lab of this suite --------------------------------------------------
if [[ $suite == smoke ]]; then
  export FSD_PREFIX=${FSD_PREFIX:-fss} FSD_SUBNET=${FSD_SUBNET:-10.79.0}
else
  export FSD_PREFIX=${FSD_PREFIX:-fsl} FSD_SUBNET=${FSD_SUBNET:-10.80.0}
fi
export FSD_STATE=${FSD_STATE:-/tmp/filesyncd-chaos-$suite}
export FSD_TARGET=netns FSD_CHAOS_DIR=$here
# The tmpfs under each synced dir: disk.sh fill fills it (RAM, briefly);
# and the one under each data dir, which disk.sh fill-data fills (long run).
export FSD_DIR_SIZE=${FSD_DIR_SIZE:-256m} FSD_DATA_SIZE=${FSD_DATA_SIZE:-1g}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

if [[ -z ${FSD_BIN:-} ]]; then
  if [[ $suite == smoke ]]; then
    FSD_BIN=${FILESYNCD_BIN:-$target_dir/debug/filesyncd}
  else
    FSD_BIN=$target_dir/debug/filesyncd
  fi
fi
export FSD_BIN
out=${FSD_CHAOS_OUT:-$target_dir/chaos/$suite-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

# --- fsd-chaos and filesyncd --------------------------------------------------
# `cargo test --workspace` (tests/run.sh) builds both with the workspace's
# feature set; building the same way here reuses that build instead of
# compiling the node crate a second time with other features.
build() {
  (cd "$repo" && nice -n 10 cargo test --workspace --locked --no-run) >"$out/build.log" 2>&1 || {
    tail -n 30 "$out/build.log" >&2
    echo "chaos $suite: build failed (log: $out/build.log)" >&2
    exit 2
  }
}
chaos_bin=${FSD_CHAOS_BIN:-$target_dir/debug/fsd-chaos}
if [[ -z ${FSD_CHAOS_BIN:-} ]]; then
  say "building fsd-chaos (cargo test --workspace --no-run)"
  build
fi
[[ -x $chaos_bin ]] || { echo "chaos $suite: no fsd-chaos at $chaos_bin" >&2; exit 2; }
[[ -x ${FSD_BIN:-} ]] || { echo "chaos $suite: no filesyncd binary at '${FSD_BIN:-}'" >&2; exit 2; }
say "filesyncd $FSD_BIN; lab $FSD_STATE ($nodes nodes, ${FSD_PREFIX}1.., $FSD_SUBNET.x); output $out"

# --- up, run, always down ---------------------------------------------------------
# shellcheck disable=SC2317  # called from the EXIT trap
evidence() {
  local i
  for i in $(seq 1 "$nodes"); do
    "$here/run.sh" status "$i" --json >"$out/status-n$i.json" 2>&1 || true
    "$here/run.sh" cli "$i" members --json >"$out/members-n$i.json" 2>&1 || true
  done
  "$here/partition.sh" show >"$out/rules.txt" 2>&1 || true
  "$here/disk.sh" show >"$out/disks.txt" 2>&1 || true
}

# shellcheck disable=SC2317  # the EXIT trap
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n ${chaos_pid:-} ]] && kill -0 "$chaos_pid" 2>/dev/null; then kill "$chaos_pid" 2>/dev/null; fi
  if [[ -d $FSD_STATE ]]; then
    ((rc == 0)) || evidence
    "$here/netns.sh" down --keep >/dev/null 2>&1
    for d in "$FSD_STATE"/n*; do
      [[ -f $d/log ]] && cp "$d/log" "$out/${d##*/}.log"
    done
    rm -rf "$FSD_STATE"
  fi
  if ((rc != 0)); then
    for f in "$out"/n*.log; do
      [[ -f $f ]] || continue
      echo "--- last lines of $f" >&2
      tail -n 12 "$f" >&2
    done
  fi
  say "lab down; report, logs and evidence in $out (exit $rc)"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A lab of this suite left over by a killed run goes first.
"$here/netns.sh" down >/dev/null 2>&1 || true
say "netns.sh up $nodes"
if ! "$here/netns.sh" up "$nodes" >"$out/up.log" 2>&1; then
  cat "$out/up.log" >&2
  echo "chaos $suite: the lab did not come up" >&2
  exit 2
fi

args=("$suite" --seed "$seed")
if [[ $suite == long ]]; then
  args+=(--minutes "$minutes")
  if [[ -n ${kinds:-} ]]; then args+=(--kinds "$kinds"); fi
  limit=$((minutes * 60 + 1800))
else
  limit=1500
fi
say "fsd-chaos ${args[*]} (limit ${limit}s)"
set +e
timeout --kill-after=30 "$limit" "$chaos_bin" "${args[@]}" > >(tee "$out/report.txt") 2>&1 &
chaos_pid=$!
wait "$chaos_pid"
rc=$?
set -e
chaos_pid=
grep '^CHAOS-RESULT ' "$out/report.txt" >"$out/result.json.line" 2>/dev/null || true
exit "$rc"
