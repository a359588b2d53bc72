#!/usr/bin/env bash
# Verifies faults with UDP probes between nodes' network namespaces.
#
#   reach.sh FROM TO [COUNT]   sends COUNT (default 5) datagrams from FROM's
#                              namespace to TO's address; prints
#                              "FROM->TO ok|blocked received/sent" and exits
#                              0 if any arrived, 1 if none
#   reach.sh matrix            every ordered pair at once; "." reachable,
#                              "X" blocked (nothing of 3 datagrams arrived)
#   reach.sh blocked           the blocked pairs as "FROM>TO ...", one line
#   reach.sh rtt FROM TO [COUNT]   round trips through an echo server in TO:
#                              "sent= got= p50_ms= max_ms= reordered="
#
# The probe uses UDP port FSD_PROBE_PORT (default 7499), not the nodes'
# port, so it never disturbs a running node.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root
port=${FSD_PROBE_PORT:-7499}
probe=$FSD_CHAOS_DIR/udp_probe.py

reach() {
  local from=$1 to=$2 count=${3:-5} nonce out rc got tmp
  nonce=$from-$to-$$-$RANDOM
  tmp=$(mktemp -d)
  in_net "$to" python3 "$probe" recv --port "$port" --timeout $((2 + count / 50)) --expect "$count" \
    >"$tmp/out" 2>"$tmp/err" &
  local rpid=$!
  # Wait until the receiver is bound.
  for _ in $(seq 100); do grep -q READY "$tmp/err" 2>/dev/null && break; sleep 0.05; done
  in_net "$from" python3 "$probe" send --to "$(fsd_addr "$to"):$port" --nonce "$nonce" \
    --count "$count" --interval 0.005 2>/dev/null
  rc=0; wait "$rpid" || rc=$?
  got=$(grep -c "^$nonce " "$tmp/out" || true)
  rm -rf "$tmp"
  if ((got > 0)); then echo "$from->$to ok $got/$count"; return 0; fi
  echo "$from->$to blocked 0/$count"; return 1
}

# All ordered pairs at once: one receiver per node, every node sends 3
# datagrams to every other with its own nonce. Prints "a>b" per blocked pair.
blocked_pairs() {
  local nodes=() a b tmp got out=() pids=() spids=() targets
  read -r -a nodes <<<"$(fsd_nodes | tr '\n' ' ')"
  tmp=$(mktemp -d)
  for b in "${nodes[@]}"; do
    in_net "$b" python3 "$probe" recv --port "$port" --timeout 60 >"$tmp/$b.out" 2>"$tmp/$b.err" &
    pids+=($!)
  done
  for b in "${nodes[@]}"; do
    for _ in $(seq 200); do grep -q READY "$tmp/$b.err" 2>/dev/null && break; sleep 0.05; done
  done
  for a in "${nodes[@]}"; do
    targets=()
    for b in "${nodes[@]}"; do [[ $a == "$b" ]] || targets+=(--to "$(fsd_addr "$b"):$port"); done
    in_net "$a" python3 "$probe" send "${targets[@]}" --nonce "m$$-$a" --count 3 --interval 0.01 2>/dev/null &
    spids+=($!)
  done
  wait "${spids[@]}" 2>/dev/null || true
  # Whatever has not arrived one second after the last send is blocked.
  sleep 1
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  for a in "${nodes[@]}"; do for b in "${nodes[@]}"; do
    [[ $a == "$b" ]] && continue
    got=$(grep -c "^m$$-$a " "$tmp/$b.out" || true)
    ((got > 0)) || out+=("$a>$b")
  done; done
  rm -rf "$tmp"
  echo "${out[*]}"
}

matrix() {
  local nodes blocked a b
  nodes=$(fsd_nodes)
  blocked=" $(blocked_pairs) "
  printf 'from\\to'; for b in $nodes; do printf ' %s' "$b"; done; echo
  for a in $nodes; do
    printf '%7s' "$a"
    for b in $nodes; do
      if [[ $a == "$b" ]]; then printf ' -'
      elif [[ $blocked == *" $a>$b "* ]]; then printf ' X'
      else printf ' .'; fi
    done
    echo
  done
}

rtt() {
  local from=$1 to=$2 count=${3:-50} tmp rc=0
  tmp=$(mktemp)
  in_net "$to" python3 "$probe" echo --port "$port" --timeout $((5 + count / 10)) 2>"$tmp" &
  local epid=$!
  for _ in $(seq 100); do grep -q READY "$tmp" 2>/dev/null && break; sleep 0.05; done
  in_net "$from" python3 "$probe" rtt --to "$(fsd_addr "$to"):$port" --count "$count" || rc=$?
  kill "$epid" 2>/dev/null || true; wait "$epid" 2>/dev/null || true
  rm -f "$tmp"
  return $rc
}

case ${1:-} in
  matrix) matrix ;;
  blocked) blocked_pairs ;;
  rtt) check_index "${2:?}"; check_index "${3:?}"; rtt "$2" "$3" "${4:-50}" ;;
  ''|-h|--help) sed -n '2,12p' "$0"; exit 2 ;;
  *) check_index "$1"; check_index "${2:?reach.sh FROM TO}"; reach "$1" "$2" "${3:-5}" ;;
esac
