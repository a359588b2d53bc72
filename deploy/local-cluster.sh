#!/usr/bin/env bash
# A local 3-node filesyncd cluster on loopback, everything under one folder.
#
#   deploy/local-cluster.sh up [BASE]     build (release) and start; BASE defaults to /tmp/filesyncd-local
#   deploy/local-cluster.sh status [BASE] status of every node
#   deploy/local-cluster.sh down [BASE]   stop every node (SIGTERM), keep the files
#
# Node i (1..3) syncs BASE/n<i>/dir, keeps its state in BASE/n<i>/data, logs
# to BASE/n<i>/log, listens for peers on 127.0.0.1:74<i>0 (QUIC/UDP) and
# serves its control API on 127.0.0.1:74<i>1. Node 1 forms the cluster;
# nodes 2 and 3 join it with tokens from `filesyncd token create`.
# FILESYNCD_BIN overrides the binary (no build then).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-up}
base=${2:-/tmp/filesyncd-local}
bin=${FILESYNCD_BIN:-$repo/target/release/filesyncd}

api() { echo "127.0.0.1:74${1}1"; }
p2p() { echo "127.0.0.1:74${1}0"; }

start() { # start <i> [join args...]
  local i=$1
  shift
  local d=$base/n$i
  mkdir -p "$d/dir" "$d/data"
  if [[ -f $d/pid ]] && kill -0 "$(cat "$d/pid")" 2>/dev/null; then
    echo "n$i already runs (pid $(cat "$d/pid"))"
    return
  fi
  nohup "$bin" run --dir "$d/dir" --data "$d/data" --listen "$(p2p "$i")" --api "$(api "$i")" "$@" \
    >>"$d/log" 2>&1 &
  echo $! >"$d/pid"
  for _ in $(seq 1 100); do
    if "$bin" health --api "$(api "$i")" >/dev/null 2>&1; then
      echo "n$i up: dir $d/dir, api $(api "$i"), pid $(cat "$d/pid")"
      return
    fi
    if ! kill -0 "$(cat "$d/pid")" 2>/dev/null; then
      echo "n$i exited; its log ($d/log):" >&2
      tail -20 "$d/log" >&2
      exit 1
    fi
    sleep 0.3
  done
  echo "n$i did not become healthy; see $d/log" >&2
  exit 1
}

case $cmd in
  up)
    if [[ -z ${FILESYNCD_BIN:-} ]]; then
      if ! command -v cargo >/dev/null 2>&1; then
        if [[ -x $HOME/.cargo/bin/cargo ]]; then
          export PATH=$HOME/.cargo/bin:$PATH
        else
          echo "installing Rust from Debian packages" >&2
          apt-get update -qq && apt-get install -y -qq cargo rustc >/dev/null
        fi
      fi
      (cd "$repo" && cargo build --release --locked -p filesyncd)
    fi
    start 1
    for i in 2 3; do
      if [[ -d $base/n$i/data/raft ]] || [[ -n $(ls -A "$base/n$i/data" 2>/dev/null) ]]; then
        start "$i" # resumes with its state
      else
        token=$("$bin" token create --ttl 10m --api "$(api 1)")
        start "$i" --join "$(p2p 1)" --token "$token"
      fi
    done
    cat <<EOF

A 3-node cluster runs under $base. Put files into $base/n1/dir (or n2, n3):
they appear in the other two.
  watch it:   $bin status --watch --api $(api 1)
  all nodes:  $0 status $base
  stop it:    $0 down $base
EOF
    ;;
  status)
    for i in 1 2 3; do
      echo "== n$i ($(api "$i"))"
      "$bin" status --api "$(api "$i")" || true
    done
    ;;
  down)
    for i in 1 2 3; do
      f=$base/n$i/pid
      if [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null; then
        kill -TERM "$(cat "$f")"
        echo "n$i stopped"
      fi
      rm -f "$f"
    done
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
