#!/usr/bin/env bash
# Process faults: kill -9 and restart, pause and resume.
#
#   proc.sh kill i       SIGKILL the daemon (netns: run.sh kill; compose:
#                        docker kill -s KILL, which also keeps the restart
#                        policy from starting it)
#   proc.sh restart i    start it again (compose: docker start, then the
#                        fault rules recorded for it are put back, because a
#                        restarted container has a fresh network namespace)
#   proc.sh crash i      kill, then restart
#   proc.sh pause i      SIGSTOP (the process stays, answers nothing)
#   proc.sh resume i     SIGCONT
#   proc.sh arm i SPEC   netns: restart the daemon with FAILPOINTS=SPEC (crash
#                        points, e.g. raft::applied=return: it aborts
#                        there; needs a build with the failpoints feature)
#   proc.sh disarm i     start it again without crash points
#   proc.sh heal [i|all] resume paused nodes and start the ones proc.sh killed
#                        or armed (disarmed)
#   proc.sh state i      running | paused | down
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root

state() {
  local p; p=$(fsd_pid "$1")
  [[ -n $p ]] || { echo down; return; }
  if grep -q '^State:.*T (stopped)' "/proc/$p/status" 2>/dev/null; then echo paused; else echo running; fi
}

kill_node() {
  if [[ $FSD_TARGET == compose ]]; then
    local id; id=$(fsd_cid "$1")
    [[ -n $id ]] || die "node$1 has no container"
    [[ $(state "$1") == down ]] || docker kill -s KILL "$id" >/dev/null
    echo "node $1 killed (SIGKILL)"
  else
    "$FSD_CHAOS_DIR/run.sh" kill "$1"
  fi
  mkdir -p "$FSD_STATE/killed"; touch "$FSD_STATE/killed/$1"
}

restart_node() {
  if [[ $FSD_TARGET == compose ]]; then
    local id; id=$(fsd_cid "$1")
    [[ -n $id ]] || die "node$1 has no container"
    if [[ $(state "$1") == down ]]; then docker start "$id" >/dev/null; fi
    ipt_reapply "$1"
    echo "node $1 started"
  else
    "$FSD_CHAOS_DIR/run.sh" start "$1" ${FSD_NO_WAIT:+--no-wait}
  fi
  rm -f "$FSD_STATE/killed/$1"
}

pause_node() {
  local p; p=$(fsd_pid "$1"); [[ -n $p ]] || die "node $1 is not running"
  kill -STOP "$p"; echo "node $1 paused (SIGSTOP)"
}

resume_node() {
  local p; p=$(fsd_pid "$1"); [[ -n $p ]] || { echo "node $1 is not running"; return 0; }
  kill -CONT "$p"; echo "node $1 resumed (SIGCONT)"
}

arm_node() {
  [[ $FSD_TARGET == netns ]] || die "arm: crash points only on the netns lab"
  [[ -n ${2:-} ]] || die "arm: no FAILPOINTS spec"
  [[ $(state "$1") == down ]] || kill_node "$1" >/dev/null
  printf '%s' "$2" >"$FSD_STATE/n$1/failpoints"
  # It may crash before its API answers: do not wait for it.
  "$FSD_CHAOS_DIR/run.sh" start "$1" --no-wait >/dev/null
  rm -f "$FSD_STATE/killed/$1"
  echo "node $1 armed: FAILPOINTS=$2"
}

disarm_node() {
  rm -f "$FSD_STATE/n$1/failpoints"
  [[ $(state "$1") == down ]] || kill_node "$1" >/dev/null
  restart_node "$1"
}

heal() {
  local sel=${1:-all} i
  for i in $(if [[ $sel == all ]]; then fsd_nodes; else echo "$sel"; fi); do
    if [[ -f $FSD_STATE/n$i/failpoints ]]; then disarm_node "$i"; continue; fi
    case $(state "$i") in
      paused) resume_node "$i" ;;
      down) if [[ -f $FSD_STATE/killed/$i ]]; then restart_node "$i"; fi ;;
    esac
  done
}

cmd=${1:-}
case $cmd in kill|restart|crash|pause|resume|state|arm|disarm) check_index "${2:-}" ;; esac
case $cmd in
  kill) kill_node "$2" ;;
  restart) restart_node "$2" ;;
  crash) kill_node "$2"; restart_node "$2" ;;
  pause) pause_node "$2" ;;
  resume) resume_node "$2" ;;
  arm) arm_node "$2" "${3:-}" ;;
  disarm) disarm_node "$2" ;;
  heal) heal "${2:-all}" ;;
  state) state "$2" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
