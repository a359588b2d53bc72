#!/usr/bin/env bash
# Start and stop filesyncd nodes in the namespaces made by netns.sh.
#
#   run.sh start  i|all [--no-wait]   start (no-op if running); waits until
#                                     the control API answers (FSD_WAIT, 90 s)
#   run.sh stop   i|all               SIGTERM, then SIGKILL after 30 s
#   run.sh kill   i                   SIGKILL (state is not flushed)
#   run.sh restart i                  stop + start
#   run.sh wait   i                   wait until the API answers
#   run.sh status i                   `filesyncd status` of node i
#   run.sh cli    i ARGS...           `filesyncd ARGS --api` inside node i's namespace
#   run.sh logs   i                   path of node i's log
#
# Node i: --dir FSD_STATE/ni/fs/dir --data FSD_STATE/ni/dfs/data
#         --listen 10.77.0.i:7400 --api 127.0.0.1:7401 (in its namespace).
# Node 1 founds the cluster. Any other node, until it has joined (marker
# FSD_STATE/ni/joined), starts with --join <member>:7400 --token <fresh
# token from that member>; afterwards it resumes from its state without
# --join. Node 1 joins too when marked FSD_STATE/n1/rejoin (member.sh wipe:
# its data dir is gone, it must not found a second cluster). A node marked
# FSD_STATE/ni/removed (member.sh remove) hands out no tokens. With
# FSD_STATE/solo (netns.sh up --solo) nobody joins.
# A node with FSD_STATE/ni/faketime runs under libfaketime (see clock.sh).
# FSD_LISTEN_ANY="i j ...": those nodes listen on 0.0.0.0:7400 instead of
# their own address (a listener that survives an address change, see
# readdress.sh); default empty.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
[[ $FSD_TARGET == netns ]] || usage_die "run.sh works on FSD_TARGET=netns only (compose: cluster.sh, proc.sh)"

wait_s=${FSD_WAIT:-90}

api_up() { fsd_cli "$1" status --json >/dev/null 2>&1; }

wait_api() {
  local i=$1 deadline=$((SECONDS + wait_s))
  until api_up "$i"; do
    if [[ -z $(fsd_pid "$i") ]]; then
      echo "run.sh: node $i exited; last log lines:" >&2
      tail -n 15 "$FSD_STATE/n$i/log" >&2 || true
      return 1
    fi
    ((SECONDS < deadline)) || { echo "run.sh: node $i: API not up after ${wait_s}s" >&2; return 1; }
    sleep 0.5
  done
}

# Prints "ADDR TOKEN J" from the first member J that hands out a token.
join_ticket() {
  local self=$1 j t
  for j in $(fsd_nodes); do
    [[ $j == "$self" ]] && continue
    if [[ $j == 1 ]]; then [[ ! -f $FSD_STATE/n1/rejoin ]] || continue
    else [[ -f $FSD_STATE/n$j/joined ]] || continue; fi
    [[ ! -f $FSD_STATE/n$j/removed ]] || continue
    [[ -n $(fsd_pid "$j") ]] || continue
    if t=$(fsd_cli "$j" token create --ttl 10m 2>/dev/null) && [[ -n $t ]]; then
      echo "$(fsd_addr "$j"):$FSD_PORT $t $j"
      return 0
    fi
  done
  return 1
}

start_one() {
  local i=$1 wait=$2
  check_index "$i"
  node_exists "$i" || die "namespace $(fsd_ns "$i") missing (netns.sh up first)"
  if [[ -n $(fsd_pid "$i") ]]; then echo "node $i already running"; return 0; fi
  local d=$FSD_STATE/n$i bin args env_pre=() joining=0 member=1 listen
  bin=$(fsd_bin)
  listen=$(fsd_addr "$i")
  if [[ " ${FSD_LISTEN_ANY:-} " == *" $i "* ]]; then listen=0.0.0.0; fi
  args=(run --dir "$d/fs/dir" --data "$(fsd_data "$i")" --listen "$listen:$FSD_PORT"
        --api "$FSD_API" --log-format "${FSD_LOG_FORMAT:-text}")
  # The workload rewrites each writer's files over and over: with a short
  # --gap-ms that is a mass change the guard would hold (by design) until a
  # `filesyncd confirm`; chaos checks consistency under faults, so it runs
  # without the guard (the guard has its own tests).
  args+=(--no-guard)
  if [[ ($i != 1 || -f $d/rejoin) && ! -f $FSD_STATE/solo && ! -f $d/joined ]]; then
    local ticket addr token
    ticket=$(join_ticket "$i") || die "node $i: no member handed out a join token"
    read -r addr token member <<<"$ticket"
    args+=(--join "$addr" --token "$token")
    joining=1
  fi
  if [[ -f $d/faketime ]]; then
    env_pre=(LD_PRELOAD="$(faketime_lib)" FAKETIME_TIMESTAMP_FILE="$d/faketime"
             FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_CACHE_DURATION=1)
  fi
  # proc.sh arm: crash points for this start.
  if [[ -f $d/failpoints ]]; then env_pre+=(FAILPOINTS="$(cat "$d/failpoints")"); fi
  mkdir -p "$(fsd_data "$i")"
  echo "=== $(date -Is) start ${args[*]}" | sed 's/--token [^ ]*/--token <redacted>/' >>"$d/log"
  # setsid: own session, so signals to the chaos scripts' group never reach
  # it; the shell's $! is the daemon itself (ip netns exec execs).
  setsid ip netns exec "$(fsd_ns "$i")" env RUST_LOG="${RUST_LOG:-info}" "${env_pre[@]}" \
    "$bin" "${args[@]}" </dev/null >>"$d/log" 2>&1 &
  local pid=$!
  echo "$pid" >"$d/pid"
  # Until `ip netns exec` and `env` have exec'd the daemon, its comm is
  # theirs; fsd_pid only trusts a pid whose comm is filesyncd.
  while kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) != filesyncd ]]; do sleep 0.02; done
  if ((wait)); then
    wait_api "$i" || return 1
    if ((joining)); then mark_joined "$i" "$member"; rm -f "$d/rejoin"; fi
  fi
  echo "node $i started (pid $(cat "$d/pid"), $(fsd_addr "$i"))"
}

# Records that node i is a member of member j's cluster (it then restarts
# without --join).
mark_joined() {
  local i=$1 j=$2 deadline=$((SECONDS + wait_s)) want got
  want=$(status_field "$j" cluster_id)
  while :; do
    got=$(status_field "$i" cluster_id)
    if [[ -n $got && $got == "$want" ]]; then touch "$FSD_STATE/n$i/joined"; return 0; fi
    ((SECONDS < deadline)) || { echo "run.sh: node $i did not report cluster $want (got '${got}')" >&2; return 1; }
    sleep 0.5
  done
}

faketime_lib() {
  local l
  for l in /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [[ -f $l ]] && { echo "$l"; return; }
  done
  die "libfaketime not installed (apt-get install faketime)"
}

stop_one() {
  local i=$1 p deadline
  p=$(fsd_pid "$i")
  [[ -n $p ]] || { rm -f "$FSD_STATE/n$i/pid"; return 0; }
  kill -CONT "$p" 2>/dev/null || true   # a paused node cannot handle SIGTERM
  kill -TERM "$p" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$p" 2>/dev/null; then
    echo "run.sh: node $i ignored SIGTERM for 30s, killing" >&2
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$FSD_STATE/n$i/pid"
  echo "node $i stopped"
}

kill_one() {
  local p; p=$(fsd_pid "$1")
  [[ -n $p ]] || { echo "node $1 not running"; return 0; }
  kill -KILL "$p"
  while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  rm -f "$FSD_STATE/n$1/pid"
  echo "node $1 killed (SIGKILL)"
}

targets() {
  if [[ $1 == all ]]; then fsd_nodes; else check_index "$1"; echo "$1"; fi
}

cmd=${1:-}; shift || true
case $cmd in
  start)
    sel=${1:?start needs i|all}; wait=1
    [[ ${2:-} == --no-wait ]] && wait=0
    need_root
    # Node 1 first: the others get their tokens from it.
    for i in $(targets "$sel"); do start_one "$i" "$wait"; done ;;
  stop) need_root; for i in $(targets "${1:?stop needs i|all}" | sort -rn); do stop_one "$i"; done ;;
  kill) need_root; check_index "${1:?}"; kill_one "$1" ;;
  restart) need_root; check_index "${1:?}"; stop_one "$1"; start_one "$1" 1 ;;
  wait) check_index "${1:?}"; wait_api "$1" ;;
  status) check_index "${1:?}"; fsd_cli "$1" status "${@:2}" ;;
  cli) check_index "${1:?}"; i=$1; shift; fsd_cli "$i" "$@" ;;
  logs) check_index "${1:?}"; echo "$FSD_STATE/n$1/log" ;;
  *) sed -n '2,26p' "$0"; exit 2 ;;
esac
