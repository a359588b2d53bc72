#!/usr/bin/env bash
# Rolling restart under writes: each node of a 3-node cluster is restarted
# in turn (founder included) while a writer keeps adding files; the cluster
# must come back in sync every time, with no leader change for a follower's
# restart, at most one for the leader's, and no file lost.
#
#   restart.sh [--compose | --netns]
#
# Targets (default: compose when `docker info` answers and docker-compose
# is installed, else netns):
#   compose  deploy/docker-compose.yml under a project of its own
#            (FSD_RS_PROJECT, default fsdrestart) on a subnet of its own
#            (FSD_RS_NET, default 172.28.78), started by cluster.sh; a restart
#            is `docker restart -t 30 <container>`. The image FSD_IMAGE
#            (default filesyncd:ci) is built from FSD_BIN with
#            `build-image.sh --bin` (seconds; a dynamic debug build will do).
#   netns    a lab of its own made by netns.sh/run.sh (namespaces fsr1..3,
#            10.81.0.x, state /tmp/filesyncd-restart); a restart is SIGTERM
#            to the daemon, wait for its exit, `run.sh start i`.
# The generic FSD_PROJECT/FSD_NET/FSD_STATE/FSD_PREFIX/FSD_SUBNET are ignored,
# so a cluster or lab made by hand is never touched.
#
# Scenario: 3 nodes up and in sync; a writer adds a small random file every
# FSD_RS_WRITE_MS (200) ms, 3 of 5 on node 1 and 1 of 5 each on nodes 2 and
# 3 (a rename from a name in the daemon's namespace, so no half-written
# file is seen), sha256 in a manifest. Nodes 1, 2, 3 are restarted in turn
# (plus one follower if all three happened to be leaders). A monitor polls
# every node's `status --json` every 0.5 s (time, leader, term, in_sync,
# applied index, cluster root). After each restart: wait (FSD_RS_SYNC_WAIT,
# 120 s) until all report in_sync with the same leader and term and either
# the same cluster root or applied indices within FSD_RS_LAG (8) entries of
# each other (the writer keeps the root moving), the restarted node having
# applied at least what the others had when it was up again; then
# FSD_RS_SETTLE (5) s. At the end the writer stops and all three must
# report the same cluster root; every manifest file must be on every node
# with its sha256, and every node must list 3 voters.
#
# Checks per restart (window: from the restart to the next one): leader
# changes = changes along the leaders the surviving nodes report, ordered by
# term (the restarted node's own answers count again once it is back in
# sync); a follower's restart: 0 changes and no term rise; the leader's: at
# most 1 change (a term rise above FSD_RS_MAX_TERM_RISE, 2, is reported);
# never two leaders in one term. Reported, not failed: a daemon that SIGTERM
# did not stop within 30 s (SIGKILL) or that exited non-zero.
#
# The table: stop-s/exit = seconds from the restart to the old process's
# exit, and its exit code (netns: term, or kill); restart-s = until the
# restart command returned (netns: the API answers); in-sync-s = until the
# round that found all in sync; sync = how (root: same cluster root; lagN:
# applied indices N apart). Every node's leader/term timeline follows.
#
# Exit: 0 every check passed (or skipped: neither Docker nor root with
# `ip netns`, with a "skipped:" line); 1 a check failed, or a skip under
# FSD_CHAOS_REQUIRE=1; 2 usage, no binary/image, or the cluster did not come
# up. Everything it made is removed on exit (compose: containers, volumes,
# network; netns: the lab). Logs, the timeline, the manifest and the
# analysis stay in FSD_CHAOS_OUT (default target/chaos/restart-<target>-<time>);
# on failure the tails of the node logs are printed.
#
# Environment:
#   FSD_BIN      filesyncd (default FILESYNCD_BIN, else target/debug/filesyncd;
#                compose without a binary: the existing FSD_IMAGE)
#   FSD_IMAGE    compose image tag (default filesyncd:ci)
#   FSD_RS_PROJECT, FSD_RS_NET          compose project and subnet
#   FSD_RS_STATE, FSD_RS_PREFIX, FSD_RS_SUBNET   netns lab
#   FSD_RS_SYNC_WAIT, FSD_RS_SETTLE, FSD_RS_WRITE_MS, FSD_RS_LAG,
#   FSD_RS_MAX_TERM_RISE   see above
#   FSD_RS_DOWN  seconds a node stays down (default 0: `docker restart`, or
#                start right after the exit); longer than the election
#                timeout (1-2 s), it makes the leader's restart an election
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

want=auto
while (($#)); do
  case $1 in
    --compose) want=compose ;;
    --netns) want=netns ;;
    -h|--help) sed -n '2,70p' "$0"; exit 0 ;;
    *) echo "restart.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '%s restart: %s\n' "$(date +%H:%M:%S)" "$*"; }
setup_fail() { say "SETUP: $*" >&2; exit 2; }

skip() {
  if [[ ${FSD_CHAOS_REQUIRE:-0} == 1 ]]; then
    echo "restart: cannot run: $* (FSD_CHAOS_REQUIRE=1)" >&2
    exit 1
  fi
  echo "restart: skipped: needs Docker with docker-compose, or root with ip netns ($*)"
  exit 0
}

# --- which target can run here? -------------------------------------------
why_compose='' why_netns=''
compose_ok() {
  [[ $(id -u) == 0 ]] || { why_compose="not root (the writer writes into the volumes)"; return 1; }
  command -v docker >/dev/null 2>&1 || { why_compose="no docker CLI"; return 1; }
  docker info >/dev/null 2>&1 || { why_compose="docker info failed"; return 1; }
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 \
    || { why_compose="neither 'docker compose' nor docker-compose"; return 1; }
}
netns_ok() {
  [[ $(id -u) == 0 ]] || { why_netns="not root"; return 1; }
  local probe=fsrprobe$$ ok=1 t
  ip netns add "$probe" >/dev/null 2>&1 || { why_netns="ip netns add failed"; return 1; }
  ip netns exec "$probe" ip link set lo up >/dev/null 2>&1 || ok=0
  ip netns del "$probe" >/dev/null 2>&1 || true
  ((ok)) || { why_netns="ip netns exec failed"; return 1; }
  for t in iptables python3 setsid mountpoint; do
    command -v "$t" >/dev/null 2>&1 || { why_netns="$t not installed"; return 1; }
  done
}
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"
case $want in
  compose) compose_ok || skip "compose: $why_compose" ;;
  netns) netns_ok || skip "netns: $why_netns" ;;
  auto)
    if compose_ok; then want=compose
    elif netns_ok; then want=netns
    else skip "compose: $why_compose; netns: $why_netns"
    fi ;;
esac
target=$want

# --- configuration ------------------------------------------------------------
sync_wait=${FSD_RS_SYNC_WAIT:-120}
settle=${FSD_RS_SETTLE:-5}
write_ms=${FSD_RS_WRITE_MS:-200}
lag=${FSD_RS_LAG:-8}
max_term_rise=${FSD_RS_MAX_TERM_RISE:-2}
down_s=${FSD_RS_DOWN:-0}
[[ $down_s =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "restart.sh: FSD_RS_DOWN must be seconds" >&2; exit 2; }

if [[ -z ${FSD_BIN:-} ]]; then
  c=${FILESYNCD_BIN:-$repo/target/debug/filesyncd}
  [[ -x $c ]] && FSD_BIN=$c
fi

if [[ $target == compose ]]; then
  export FSD_TARGET=compose
  export FSD_PROJECT=${FSD_RS_PROJECT:-fsdrestart}
  export FSD_NET=${FSD_RS_NET:-172.28.78}
  export FSD_IMAGE=${FSD_IMAGE:-filesyncd:ci}
  export FSD_STATE=/tmp/filesyncd-restart-compose   # lib.sh's rule ledger; stays empty
else
  export FSD_TARGET=netns
  export FSD_STATE=${FSD_RS_STATE:-/tmp/filesyncd-restart}
  export FSD_PREFIX=${FSD_RS_PREFIX:-fsr}
  export FSD_SUBNET=${FSD_RS_SUBNET:-10.81.0}
  export FSD_DIR_SIZE=${FSD_DIR_SIZE:-128m} FSD_DATA_SIZE=${FSD_DATA_SIZE:-256m}
  [[ -n ${FSD_BIN:-} && -x $FSD_BIN ]] \
    || setup_fail "no filesyncd binary at '${FSD_BIN:-$repo/target/debug/filesyncd}' (build it or set FSD_BIN)"
  export FSD_BIN
fi
# shellcheck source=lib.sh
source "$here/lib.sh"

out=${FSD_CHAOS_OUT:-$repo/target/chaos/restart-$target-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
timeline=$out/timeline.jsonl     # the monitor's polls, one JSON object a line
events=$out/events.txt           # what this script did, and when
manifest=$out/manifest.txt       # NAME SHA256 ORIGIN TIME of every file written
tool=$out/restart.py
: >"$timeline"; : >"$events"; : >"$manifest"
rm -f "$out/stop-monitor" "$out/stop-writer"
nodes=(1 2 3)
node_list=1,2,3

now() { echo "$EPOCHREALTIME"; }

# --- the analysis and the monitor (Python, kept with the output) ------------
cat >"$tool" <<'PY'
"""Helpers of deploy/chaos/restart.sh: monitor, synced, analyze, verify."""
import collections, hashlib, json, os, subprocess, sys, threading, time


def poll(cmd, timeout):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout)
    except Exception:
        return None
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except Exception:
        return None


def monitor(cmdfile, timeline, stopfile, interval):
    """Every `interval` s, `status --json` of every node at once; one line per node."""
    cmds = json.load(open(cmdfile))
    rnd = 0
    with open(timeline, "a") as f:
        while not os.path.exists(stopfile):
            t0 = time.time()
            rnd += 1
            res = {}
            ths = [threading.Thread(target=lambda i=i: res.__setitem__(i, poll(cmds[i], 5))) for i in cmds]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            for i in sorted(cmds, key=int):
                s = res.get(i)
                rec = {"r": rnd, "t": round(t0, 3), "n": int(i), "ok": s is not None}
                if s is not None:
                    members = s.get("members") or []
                    rec.update(
                        id=s.get("node_id"), leader=s.get("leader"), term=s.get("term"),
                        state=s.get("state"), in_sync=bool(s.get("in_sync")),
                        applied=s.get("applied_index"), root=s.get("cluster_root"),
                        local=s.get("local_root"),
                        voters=sum(1 for m in members if m.get("role") == "voter"),
                        members=len(members))
                f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            dt = interval - (time.time() - t0)
            if dt > 0:
                time.sleep(dt)


def load(timeline):
    rounds = collections.OrderedDict()
    with open(timeline) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except Exception:
                continue  # a line being written
            rounds.setdefault(rec["r"], {})[rec["n"]] = rec
    return rounds


def ids_of(rounds):
    ids = {}
    for rnd in rounds.values():
        for n, rec in rnd.items():
            if rec["ok"] and rec.get("id"):
                ids[n] = rec["id"]
    return ids


def synced_mode(rnd, nodes, lag):
    recs = [rnd.get(n) for n in nodes]
    if any(r is None or not r["ok"] for r in recs):
        return None
    leaders = {r["leader"] for r in recs}
    terms = {r["term"] for r in recs}
    if len(leaders) != 1 or None in leaders or len(terms) != 1:
        return None
    if not all(r["in_sync"] for r in recs):
        return None
    if len({r["root"] for r in recs}) == 1:
        return "root"
    applied = [r["applied"] or 0 for r in recs]
    if lag >= 0 and max(applied) - min(applied) <= lag:
        return "lag%d" % (max(applied) - min(applied))
    return None


def synced(timeline, since, nodes, lag, restarted):
    """First round at/after `since` where all nodes are in sync: prints "T MODE".

    With a restarted node: it must also have applied at least what the
    others had applied in the first round at/after `since` (what was
    committed while it was down), so that its old state never passes for
    caught up."""
    nodes = [int(n) for n in nodes.split(",")]
    need = None
    for rnd in load(timeline).values():
        t = next(iter(rnd.values()))["t"]
        if t < since:
            continue
        if restarted and need is None:
            others = [r for n, r in rnd.items() if n != restarted and r["ok"] and r.get("applied") is not None]
            if not others:
                continue
            need = max(r["applied"] for r in others)
        mode = synced_mode(rnd, nodes, lag)
        if mode and restarted and (rnd[restarted].get("applied") or 0) < need:
            mode = None
        if mode:
            print("%.3f %s" % (t, mode))
            return


def short(ids, leader):
    if leader is None:
        return "-"
    for n, i in ids.items():
        if i == leader:
            return "n%d" % n
    return leader[:8]


def analyze(timeline, events, nodes, max_term_rise, report):
    rounds = load(timeline)
    nodes = [int(n) for n in nodes.split(",")]
    ids = ids_of(rounds)
    restarts, end = [], None
    for line in open(events):
        w = line.split()
        if w and w[0] == "restart":
            restarts.append(dict(k=int(w[1]), node=int(w[2]), begin=float(w[3]), up=float(w[4]),
                                 synced=float(w[5]), mode=w[6], stop=float(w[7]), how=w[8]))
        elif w and w[0] == "end":
            end = float(w[1])
    if end is None:
        end = time.time()
    allrecs = [rec for rnd in rounds.values() for rec in rnd.values()]
    failures, rows, details = [], [], []
    for idx, rs in enumerate(restarts):
        r, b = rs["node"], rs["begin"]
        wend = restarts[idx + 1]["begin"] if idx + 1 < len(restarts) else end
        # Baseline: the last round before the restart in which nodes name a leader.
        base = None
        for rnd in rounds.values():
            if next(iter(rnd.values()))["t"] >= b:
                break
            named = [rec for rec in rnd.values() if rec["ok"] and rec.get("leader")]
            if named:
                base = named
        if not base:
            failures.append("restart %d (n%d): no leader known before it" % (rs["k"], r))
            continue
        l0 = collections.Counter(rec["leader"] for rec in base).most_common(1)[0][0]
        t0 = max(rec["term"] for rec in base if rec["leader"] == l0)
        was_leader = ids.get(r) == l0
        win = [rec for rec in allrecs if b <= rec["t"] < wend and rec["ok"]]
        # The restarting node's own answers count once it is back in sync.
        obs = [rec for rec in win if rec.get("leader") and (rec["n"] != r or rec["t"] >= rs["synced"])]
        by_term = collections.defaultdict(dict)
        for rec in sorted(obs, key=lambda x: x["t"]):
            by_term[rec["term"]].setdefault(rec["leader"], (rec["t"], rec["n"]))
        seq, changes_at = [l0], []
        for term in sorted(by_term):
            if term < t0:
                continue
            leaders = by_term[term]
            if len(leaders) > 1:
                failures.append("restart %d (n%d): two leaders in term %d: %s" % (
                    rs["k"], r, term, ", ".join(short(ids, x) for x in leaders)))
            for ld, (t, n) in sorted(leaders.items(), key=lambda x: x[1]):
                if ld != seq[-1]:
                    changes_at.append((t - b, term, short(ids, seq[-1]), short(ids, ld), n))
                seq.append(ld)
        changes = len(changes_at)
        terms = [rec["term"] for rec in win if rec.get("term") is not None and (rec["n"] != r or rec["t"] >= rs["synced"])]
        t_after = max(terms + [t0])
        # Per observer, for the record: how often its own answer changed.
        per_obs = {}
        for n in nodes:
            last, c = l0, 0
            for rec in sorted((x for x in obs if x["n"] == n), key=lambda x: x["t"]):
                if last is not None and rec["leader"] != last:
                    c += 1
                last = rec["leader"]
            per_obs[n] = c
        verdict = []
        if was_leader:
            if changes > 1:
                verdict.append("%d leader changes (max 1)" % changes)
            if t_after - t0 > max_term_rise:
                verdict.append("term rose by %d (more than %d; reported, not failed)" % (t_after - t0, max_term_rise))
        else:
            if changes > 0:
                verdict.append("%d leader changes on a follower restart (max 0)" % changes)
            if t_after > t0:
                verdict.append("term rose %d->%d on a follower restart" % (t0, t_after))
        if rs["how"] not in ("0", "term"):
            verdict.append("stopped with %s, not by SIGTERM alone (reported, not failed)" % (
                "SIGKILL after 30 s" if rs["how"] in ("137", "kill") else "exit code " + rs["how"]))
        if rs["mode"] == "timeout":
            verdict.append("not back in sync within the wait")
        fatal = [v for v in verdict if "not failed" not in v]
        for v in fatal:
            failures.append("restart %d (n%d, %s): %s" % (rs["k"], r, "leader" if was_leader else "follower", v))
        stop = ("%.1f" % (rs["stop"] - b)) if rs["stop"] > 0 else "?"
        rows.append((rs["k"], "n%d" % r, "yes" if was_leader else "no", changes, "%d->%d" % (t0, t_after),
                     "%s %s" % (stop, rs["how"]), "%.1f" % (rs["up"] - b), "%.1f" % (rs["synced"] - b), rs["mode"],
                     "FAIL" if fatal else ("warn" if verdict else "ok")))
        # A compact timeline: each node's (up?, leader, term) whenever it changes.
        lines = ["restart %d: n%d (%s), leader before %s term %d; window %.1f s%s" % (
            rs["k"], r, "leader" if was_leader else "follower", short(ids, l0), t0, wend - b,
            "; " + "; ".join(verdict) if verdict else "")]
        for t, term, a, z, n in changes_at:
            lines.append("  leader change at +%.1f s: %s -> %s (term %d, first seen by n%d)" % (t, a, z, term, n))
        lines.append("  per-observer leader changes: " + ", ".join("n%d %d" % (n, c) for n, c in per_obs.items()))
        for n in nodes:
            segs, last = [], None
            for rec in sorted((x for x in allrecs if b - 1 <= x["t"] < wend and x["n"] == n), key=lambda x: x["t"]):
                key = (rec["ok"], rec.get("leader"), rec.get("term"), rec.get("state"))
                if key != last:
                    segs.append("%+.1f %s" % (rec["t"] - b, ("%s %s T%s" % (rec.get("state"), short(ids, rec.get("leader")), rec.get("term"))) if rec["ok"] else "no answer"))
                    last = key
            lines.append("  n%d: %s" % (n, " | ".join(segs)))
        details.append("\n".join(lines))
    hdr = ("#", "node", "was-leader", "leader-changes", "term", "stop-s/exit", "restart-s", "in-sync-s", "sync", "verdict")
    table = [hdr] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table)
    with open(report, "w") as f:
        f.write(text + "\n\n" + "\n\n".join(details) + "\n")
        if failures:
            f.write("\nFAILURES:\n" + "\n".join(failures) + "\n")
    print(text)
    print()
    print("\n\n".join(details))
    kinds = collections.Counter(row[2] for row in rows)
    print("\nrestarts: %d of a leader, %d of a follower" % (kinds["yes"], kinds["no"]))
    for fl in failures:
        print("FAIL: " + fl)
    return 1 if failures else 0


def verify(manifest, dirs):
    """Every manifest file on every node, same sha256; lists conflict copies."""
    entries = [l.split() for l in open(manifest) if l.strip()]
    bad = 0
    for n, d in enumerate(dirs, 1):
        missing, wrong = [], []
        for w in entries:
            p = os.path.join(d, w[0])
            try:
                h = hashlib.sha256(open(p, "rb").read()).hexdigest()
            except FileNotFoundError:
                missing.append(w[0])
                continue
            if h != w[1]:
                wrong.append(w[0])
        names = [x for x in os.listdir(d) if not x.startswith(".filesyncd")]
        conflicts = [x for x in names if ".sync-conflict-" in x]
        print("n%d: %d/%d files present and equal, %d missing, %d different, %d files in the dir, %d conflict copies" % (
            n, len(entries) - len(missing) - len(wrong), len(entries), len(missing), len(wrong), len(names), len(conflicts)))
        for x in missing[:10]:
            print("  missing: %s" % x)
        for x in wrong[:10]:
            print("  different: %s" % x)
        for x in conflicts[:10]:
            print("  conflict copy: %s" % x)
        bad += len(missing) + len(wrong)
    return 1 if bad or not entries else 0


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "monitor":
        monitor(a[0], a[1], a[2], float(a[3]))
    elif cmd == "synced":
        synced(a[0], float(a[1]), a[2], int(a[3]), int(a[4]))
    elif cmd == "analyze":
        sys.exit(analyze(a[0], a[1], a[2], int(a[3]), a[4]))
    elif cmd == "verify":
        sys.exit(verify(a[0], a[1:]))
    else:
        sys.exit("unknown command " + cmd)
PY

# --- target specifics -------------------------------------------------------------
# dir_of i: node i's synced directory, as seen from the host.
# restart_one i SINCE: restart node i; returns when the process runs again.
# Sets stop_t (when the old process exited) and stop_how (compose: its exit
# code; netns: term, or kill after 30 s of SIGTERM).
if [[ $target == compose ]]; then
  dir_of() { docker volume inspect -f '{{.Mountpoint}}' "${FSD_PROJECT}_node$1-sync"; }
  status_cmd() { printf '["docker", "exec", "%s", "/filesyncd", "status", "--json"]' "$(fsd_cid "$1")"; }
  restart_one() {
    local id die; id=$(fsd_cid "$1")
    [[ -n $id ]] || { say "node$1 has no container"; return 1; }
    if [[ $down_s == 0 ]]; then
      docker restart -t 30 "$id" >/dev/null
    else
      docker stop -t 30 "$id" >/dev/null
      sleep "$down_s"
      docker start "$id" >/dev/null
    fi
    # The "die" event of the old process: when, and its exit code (137:
    # SIGTERM was not enough within 30 s).
    die=$(docker events --since "$2" --until "$(date +%s.%N)" --filter "container=$id" --filter event=die \
            --format '{{.TimeNano}} {{index .Actor.Attributes "exitCode"}}' 2>/dev/null | head -n1)
    if [[ -n $die ]]; then
      stop_t=$(awk -v n="${die%% *}" 'BEGIN { printf "%.3f", n / 1e9 }')
      stop_how=${die#* }
    else
      stop_t=0 stop_how='?'
    fi
  }
else
  dir_of() { echo "$FSD_STATE/n$1/fs/dir"; }
  status_cmd() {
    printf '["ip", "netns", "exec", "%s", "env", "FILESYNCD_DATA=%s", "%s", "status", "--json", "--api", "%s"]' \
      "$(fsd_ns "$1")" "$(fsd_data "$1")" "$FSD_BIN" "$FSD_API"
  }
  # Whether process P still runs: an exited daemon stays a zombie until the
  # host's init reaps it, which may take a while.
  running() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
  restart_one() {
    local i=$1 p deadline
    p=$(fsd_pid "$i")
    [[ -n $p ]] || { say "node $i is not running"; return 1; }
    kill -TERM "$p"
    deadline=$((SECONDS + 30))
    while running "$p" && ((SECONDS < deadline)); do sleep 0.05; done
    stop_how="term"
    if running "$p"; then
      say "node $i ignored SIGTERM for 30 s: SIGKILL" >&2
      kill -KILL "$p" 2>/dev/null || true
      while running "$p"; do sleep 0.05; done
      stop_how="kill"
    fi
    stop_t=$(now)
    rm -f "$FSD_STATE/n$i/pid"
    [[ $down_s == 0 ]] || sleep "$down_s"
    "$here/run.sh" start "$i" >>"$out/run.log" 2>&1 || { tail -n 5 "$out/run.log" >&2; return 1; }
  }
fi

# shellcheck disable=SC2317  # called from the EXIT trap
save_logs() {
  local i id
  for i in "${nodes[@]}"; do
    if [[ $target == compose ]]; then
      id=$(fsd_cid "$i")
      [[ -n $id ]] && docker logs -t "$id" >"$out/node$i.log" 2>&1
    else
      [[ -f $FSD_STATE/n$i/log ]] && cp "$FSD_STATE/n$i/log" "$out/node$i.log"
    fi
  done
  return 0
}

# shellcheck disable=SC2317  # the EXIT trap
teardown() {
  local rc=$? i f n
  trap - EXIT INT TERM
  set +e
  touch "$out/stop-writer" "$out/stop-monitor"
  [[ -n ${writer_pid:-} ]] && kill "$writer_pid" 2>/dev/null
  [[ -n ${mon_pid:-} ]] && { sleep 0.6; kill "$mon_pid" 2>/dev/null; }
  wait 2>/dev/null
  if [[ $target == compose ]]; then
    if ((rc != 0)); then
      for i in "${nodes[@]}"; do
        [[ -n $(fsd_cid "$i") ]] && fsd_cli "$i" status --json >"$out/status-n$i.json" 2>&1
      done
    fi
    save_logs
    "$repo/deploy/cluster.sh" destroy >/dev/null 2>&1
    docker network rm "${FSD_PROJECT}_fsd" >/dev/null 2>&1
  else
    if ((rc != 0)) && [[ -d $FSD_STATE ]]; then
      for i in "${nodes[@]}"; do fsd_cli "$i" status --json >"$out/status-n$i.json" 2>&1; done
    fi
    "$here/netns.sh" down --keep >/dev/null 2>&1
    save_logs
    rm -rf "$FSD_STATE"
  fi
  # A SIGTERM that did not end the daemon (killed after 30 s) leaves a
  # "shutting down" without its "stopped" in the log.
  for f in "$out"/node*.log; do
    [[ -f $f ]] || continue
    i=$(grep -c 'filesyncd::daemon: shutting down' "$f")
    n=$(grep -c 'filesyncd::daemon: stopped' "$f")
    ((i <= n)) || say "note: ${f##*/}: $i 'shutting down' but $n 'stopped' (a shutdown that never finished: SIGKILL)" >&2
  done
  if ((rc != 0)) && grep -q '^restart ' "$events" 2>/dev/null; then
    echo "--- the restarts so far" >&2
    python3 "$tool" analyze "$timeline" "$events" "$node_list" "$max_term_rise" "$out/report.txt" >&2
  fi
  if ((rc != 0)); then
    for f in "$out"/node*.log; do
      [[ -f $f ]] || continue
      echo "--- last lines of $f" >&2
      tail -n 20 "$f" >&2
      echo "--- election lines of $f (last 15)" >&2
      grep -aiE 'elect|vote|leader|term' "$f" | tail -n 15 >&2
    done
  fi
  say "cluster down; logs, timeline, manifest and report in $out (exit $rc)"
  exit "$rc"
}

# --- bring the cluster up -----------------------------------------------------------
if [[ $target == compose ]]; then
  if [[ -n ${FSD_BIN:-} ]]; then
    say "image $FSD_IMAGE from $FSD_BIN (build-image.sh --bin)"
    old_image=$(docker image inspect -f '{{.Id}}' "$FSD_IMAGE" 2>/dev/null || true)
    "$repo/deploy/build-image.sh" --bin "$FSD_BIN" >"$out/build-image.log" 2>&1 \
      || { tail -n 20 "$out/build-image.log" >&2; setup_fail "build-image.sh --bin $FSD_BIN failed"; }
    # The image this tag named before, now untagged: not kept around.
    if [[ -n $old_image && $old_image != "$(docker image inspect -f '{{.Id}}' "$FSD_IMAGE")" ]]; then
      docker rmi "$old_image" >/dev/null 2>&1 || true
    fi
  elif docker image inspect "$FSD_IMAGE" >/dev/null 2>&1; then
    say "no FSD_BIN: using the existing image $FSD_IMAGE"
  else
    setup_fail "no image $FSD_IMAGE and no binary to build it from (set FSD_BIN)"
  fi
  # A cluster of this project left over by a killed run goes first.
  "$repo/deploy/cluster.sh" destroy >/dev/null 2>&1 || true
  docker network rm "${FSD_PROJECT}_fsd" >/dev/null 2>&1 || true
  for n in $(docker network ls -q); do
    if docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$n" 2>/dev/null | grep -qwF "$FSD_NET.0/24"; then
      setup_fail "subnet $FSD_NET.0/24 is used by docker network $(docker network inspect -f '{{.Name}}' "$n") (set FSD_RS_NET)"
    fi
  done
  trap teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  say "compose project $FSD_PROJECT on $FSD_NET.0/24, image $FSD_IMAGE; output $out"
  t_up=$SECONDS
  if ! FSD_WAIT=${FSD_WAIT:-120} "$repo/deploy/cluster.sh" up >"$out/up.log" 2>&1; then
    cat "$out/up.log" >&2
    say "SETUP: the cluster did not come up" >&2
    exit 2
  fi
else
  if ip -o addr show | grep -v " ${FSD_PREFIX}br0 " | grep -qF "inet $FSD_SUBNET."; then
    setup_fail "subnet $FSD_SUBNET.0/24 is in use on this host (set FSD_RS_SUBNET)"
  fi
  "$here/netns.sh" down >/dev/null 2>&1 || true
  trap teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  say "netns lab $FSD_STATE (${FSD_PREFIX}1..3, $FSD_SUBNET.x), filesyncd $FSD_BIN; output $out"
  t_up=$SECONDS
  mkdir -p "$FSD_STATE"
  if ! "$here/netns.sh" up 3 >"$out/up.log" 2>&1; then
    cat "$out/up.log" >&2
    say "SETUP: the lab did not come up" >&2
    exit 2
  fi
fi
say "3 nodes up in $((SECONDS - t_up)) s"

dirs=()
for i in "${nodes[@]}"; do
  d=$(dir_of "$i")
  [[ -d $d && -w $d ]] || setup_fail "node $i's synced dir '$d' is not writable here"
  dirs[i]=$d
done
{
  printf '{'
  for i in "${nodes[@]}"; do
    ((i > 1)) && printf ', '
    printf '"%s": %s' "$i" "$(status_cmd "$i")"
  done
  printf '}\n'
} >"$out/status-cmds.json"

python3 "$tool" monitor "$out/status-cmds.json" "$timeline" "$out/stop-monitor" 0.5 &
mon_pid=$!

# wait_synced SINCE SECONDS LAG [NODE]: prints "T MODE" of the first round
# at or after SINCE in which all nodes are in sync (LAG -1: same cluster
# root only); NODE, just restarted, must have applied what the others had.
wait_synced() {
  local since=$1 limit=$2 lag_ok=$3 restarted=${4:-0} deadline=$((SECONDS + $2)) res
  while ((SECONDS < deadline)); do
    res=$(python3 "$tool" synced "$timeline" "$since" "$node_list" "$lag_ok" "$restarted")
    [[ -n $res ]] && { echo "$res"; return 0; }
    kill -0 "$mon_pid" 2>/dev/null || { say "FAIL: the monitor died" >&2; return 1; }
    sleep 1
  done
  say "FAIL: not in sync within ${limit}s; the last polls:" >&2
  tail -n 6 "$timeline" >&2
  return 1
}

# Leader index (the node whose node_id most nodes name) of the last round.
leader_now() {
  python3 - "$timeline" <<'PY'
import collections, json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip().endswith("}")]
if recs:
    last = [r for r in recs if r["r"] == recs[-1]["r"]]
    ids = {r["id"]: r["n"] for r in recs if r["ok"] and r.get("id")}
    named = collections.Counter(r["leader"] for r in last if r["ok"] and r.get("leader"))
    if named:
        print(ids.get(named.most_common(1)[0][0], ""))
PY
}

t_sync=$SECONDS
res=$(wait_synced "$(now)" "$sync_wait" -1) || exit 1
first_leader=$(leader_now)
say "in sync after $((SECONDS - t_sync)) s (leader n${first_leader:-?}); $(python3 - "$timeline" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip().endswith("}")]
last = [r for r in recs if r["r"] == recs[-1]["r"]]
print(", ".join("n%d %s term %s voters %s" % (r["n"], r.get("state"), r.get("term"), r.get("voters")) for r in last))
PY
)"

# --- the writer ---------------------------------------------------------------------
# Writes under a name in the daemon's namespace (.filesyncd-*: never scanned)
# in the same directory, then renames: the daemon sees whole files only.
writer() {
  local k=0 o d tmp name h owner delay
  delay=$(awk -v m="$write_ms" 'BEGIN { printf "%.3f", m / 1000 }')
  while [[ ! -f $out/stop-writer ]]; do
    k=$((k + 1))
    case $((k % 5)) in 3) o=2 ;; 4) o=3 ;; *) o=1 ;; esac
    d=${dirs[o]}
    name=$(printf 'rs-%05d-n%d.bin' "$k" "$o")
    tmp=$d/.filesyncd-writer-$k
    head -c $((RANDOM % 4096 + 1)) /dev/urandom >"$tmp"
    if [[ $target == compose ]]; then
      owner=$(stat -c %u:%g "$d")
      chown "$owner" "$tmp"
    fi
    h=$(sha256sum <"$tmp")
    mv "$tmp" "$d/$name"
    echo "$name ${h%% *} $o $(now)" >>"$manifest"
    sleep "$delay"
  done
}
writer &
writer_pid=$!
echo "writer $(now)" >>"$events"
say "writer started (a file every ${write_ms} ms; 3/5 on node 1, 1/5 on nodes 2 and 3)"
sleep 5

# --- restart each node in turn --------------------------------------------------------------------
k=0
follower_done=0
do_restart() {
  local i=$1 lead b u res t mode
  k=$((k + 1))
  lead=$(leader_now)
  [[ $lead == "$i" ]] || follower_done=1
  b=$(now)
  say "restart $k: node $i ($([[ $lead == "$i" ]] && echo leader || echo "follower; leader n${lead:-?}"))"
  restart_one "$i" "$b" || { say "FAIL: restart of node $i failed" >&2; return 1; }
  u=$(now)
  if ! res=$(wait_synced "$u" "$sync_wait" "$lag" "$i"); then
    echo "restart $k $i $b $u $(now) timeout $stop_t $stop_how" >>"$events"
    return 1
  fi
  read -r t mode <<<"$res"
  echo "restart $k $i $b $u $t $mode $stop_t $stop_how" >>"$events"
  say "restart $k: node $i back, in sync after $(awk -v a="$b" -v z="$t" 'BEGIN { printf "%.1f", z - a }') s ($mode); settling ${settle}s"
  sleep "$settle"
}
for i in "${nodes[@]}"; do
  do_restart "$i" || exit 1
done
if ((!follower_done)); then
  # Every restart hit the leader of the moment: restart a follower too.
  lead=$(leader_now)
  for i in "${nodes[@]}"; do
    if [[ $i != "$lead" ]]; then do_restart "$i" || exit 1; break; fi
  done
fi

# --- stop writing; everything everywhere? ------------------------------------------------------
touch "$out/stop-writer"
wait "$writer_pid" || true
writer_pid=
say "writer stopped: $(wc -l <"$manifest") files ($(awk '{ c[$3]++ } END { printf "n1 %d, n2 %d, n3 %d", c[1], c[2], c[3] }' "$manifest"))"
t_final=$SECONDS
res=$(wait_synced "$(now)" "$sync_wait" -1) || exit 1
read -r t_end _ <<<"$res"
echo "end $t_end" >>"$events"
say "all nodes in sync (same cluster root) $((SECONDS - t_final)) s after the last write"
touch "$out/stop-monitor"
wait "$mon_pid" || true
mon_pid=

rc=0
say "nothing lost? every manifest file on every node with its sha256"
python3 "$tool" verify "$manifest" "${dirs[1]}" "${dirs[2]}" "${dirs[3]}" | tee "$out/verify.txt" || rc=1
voters=$(python3 - "$timeline" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip().endswith("}")]
last = [r for r in recs if r["r"] == recs[-1]["r"]]
print(" ".join("n%d:%s" % (r["n"], r.get("voters")) for r in last))
PY
)
[[ $voters == "n1:3 n2:3 n3:3" ]] || { say "FAIL: voters at the end: $voters (want 3 on every node)"; rc=1; }
echo
python3 "$tool" analyze "$timeline" "$events" "$node_list" "$max_term_rise" "$out/report.txt" || rc=1
echo
if ((rc == 0)); then
  say "PASS: $k restarts, $(wc -l <"$manifest") files, nothing lost, total $SECONDS s"
else
  say "FAIL (see above and $out/report.txt), total $SECONDS s" >&2
fi
exit "$rc"
