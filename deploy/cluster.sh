#!/usr/bin/env bash
# The local 3-node compose cluster.
#
#   deploy/cluster.sh up        build the image if missing, start node1, then
#                               node2 and node3 joining with tokens from node1
#   deploy/cluster.sh status    `filesyncd status` of every node (--json: raw JSON)
#   deploy/cluster.sh down      stop and remove the containers (volumes kept)
#   deploy/cluster.sh destroy   down and remove the volumes (all synced data!)
#   deploy/cluster.sh logs [nodeN] [-f]
#   deploy/cluster.sh exec nodeN ARGS...   run `filesyncd ARGS` inside nodeN
#
# Environment: FSD_PROJECT (compose project, default filesyncd), FSD_IMAGE,
# FSD_NET (subnet prefix, default 172.28.77), FSD_JOIN_ADDR (what joiners
# dial, default node1:7400, a compose service name), FSD_WAIT (seconds to
# wait for health, default 180). FSD_SOLO=1 starts node2 and node3 without
# --join (three single-node clusters: only for testing the network plumbing
# and the chaos scripts).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=${FSD_PROJECT:-filesyncd}
image=${FSD_IMAGE:-filesyncd:local}
join_addr=${FSD_JOIN_ADDR:-node1:7400}
wait_s=${FSD_WAIT:-180}
nodes=(node1 node2 node3)

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "cluster.sh: neither 'docker compose' nor 'docker-compose' found" >&2
  exit 2
fi
dc() { "${compose[@]}" -p "$project" -f "$here/docker-compose.yml" "$@"; }

# Container id of a service, empty if it has none.
cid() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

health() {
  local id; id=$(cid "$1")
  [[ -n $id ]] || { echo missing; return; }
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"
}

wait_healthy() {
  local svc=$1 deadline=$((SECONDS + wait_s)) h
  while :; do
    h=$(health "$svc")
    [[ $h == healthy ]] && return 0
    if ((SECONDS >= deadline)); then
      echo "cluster.sh: $svc not healthy after ${wait_s}s (state: $h); last log lines:" >&2
      dc logs --no-color --tail 20 "$svc" >&2 || true
      return 1
    fi
    sleep 1
  done
}

# `filesyncd ARGS` inside a running service (the image has no shell).
fsd() {
  local svc=$1 id; shift
  id=$(cid "$svc")
  [[ -n $id ]] || { echo "cluster.sh: no container for $svc (run: $0 up)" >&2; return 1; }
  docker exec "$id" /filesyncd "$@"
}

# Whether a service's data volume already holds a node's state: then it
# resumes (a `down` removed the container, not the volume) and must not be
# handed a join token; the token could not even be made while the other
# voters are still down (no quorum on node1). Root reads the volume itself;
# otherwise the volume's existence decides.
has_state() {
  local vol=${project}_$1-data mp
  mp=$(docker volume inspect -f '{{.Mountpoint}}' "$vol" 2>/dev/null) || return 1
  if [[ -r $mp ]]; then
    [[ -n $(ls -A "$mp" 2>/dev/null) ]]
  else
    return 0
  fi
}

up() {
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "cluster.sh: image $image missing, building it"
    FSD_IMAGE=$image "$here/build-image.sh"
  fi
  # Joiners take FILESYNCD_JOIN/TOKEN from this environment: never pass on
  # the caller's own.
  unset FILESYNCD_JOIN FILESYNCD_TOKEN
  dc up -d --no-recreate node1
  wait_healthy node1
  local svc token
  for svc in node2 node3; do
    if [[ -n $(cid "$svc") || ${FSD_SOLO:-0} == 1 ]] || has_state "$svc"; then
      # Created before (container or volume): it holds its state in its
      # volume and resumes.
      dc up -d --no-recreate "$svc"
    else
      token=$(fsd node1 token create --ttl 15m)
      FILESYNCD_JOIN=$join_addr FILESYNCD_TOKEN=$token dc up -d --no-recreate "$svc"
    fi
  done
  for svc in node2 node3; do wait_healthy "$svc"; done
  echo "cluster up: ${nodes[*]} healthy. Next: $0 status"
}

status() {
  local svc rc=0
  for svc in "${nodes[@]}"; do
    if [[ ${1:-} == --json ]]; then
      printf '{"service":"%s","health":"%s","status":' "$svc" "$(health "$svc")"
      fsd "$svc" status --json 2>/dev/null | tr -d '\n' || { printf 'null'; rc=1; }
      printf '}\n'
    else
      echo "== $svc ($(health "$svc"))"
      fsd "$svc" status || rc=1
    fi
  done
  return $rc
}

case ${1:-} in
  up) up ;;
  status) shift; status "$@" ;;
  down) dc down --remove-orphans ;;
  destroy) dc down --remove-orphans --volumes ;;
  logs) shift; dc logs "$@" ;;
  exec) shift; svc=${1:?exec needs a service}; shift; fsd "$svc" "$@" ;;
  health) for s in "${nodes[@]}"; do echo "$s $(health "$s")"; done ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
