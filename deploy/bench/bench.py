#!/usr/bin/env python3
"""filesyncd against rsync, same data, same run, on loopback.

Started by bench.sh (which builds the binary, installs rsync if missing and
cleans up on exit); see deploy/bench/README.md for what each row means.

Layout under ROOT (a fresh temporary directory):
  n0/ n1/ n2/       {dir, data, log} of the three filesyncd nodes
  rsync/src         the rsync source tree (same content as n0/dir)
  rsync/peer1,2     the two rsync daemon modules (the "peers"); the
                    `rsync --fsync` runs reuse them, reset to the state the
                    plain run found (see Bench.rsync_fsync)
  rsync/hold        scenario 3: hard links to the peers' old big.bin, the
                    basis given back to the `rsync --fsync` delta run
  stage/            data written before each scenario, renamed into place
  pids, iptables_chain   what bench.sh's trap cleans up
"""

import argparse
import hashlib
import resource
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

MIB = 1024 * 1024


FAILED = "FAILED"


class BenchError(Exception):
    """A step failed or timed out; the message says which and why."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_times(pid):
    """(CPU-seconds of `pid` itself, CPU-seconds of its children it has
    reaped), from /proc/<pid>/stat; (0, 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # After the command name: state is field 3, utime..cstime 14..17.
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st) / CLK_TCK, (cut + cst) / CLK_TCK


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def now():
    return time.perf_counter()


# ---------------------------------------------------------------- processes


class Procs:
    """Every child process, recorded in ROOT/pids for bench.sh's trap."""

    def __init__(self, root):
        self.pidfile = os.path.join(root, "pids")
        self.procs = []

    def spawn(self, argv, logpath, env=None):
        logf = open(logpath, "ab")
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env
        )
        logf.close()
        self.procs.append(p)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Node:
    def __init__(self, root, name, binary, procs):
        self.name = name
        self.base = os.path.join(root, name)
        self.dir = os.path.join(self.base, "dir")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "log")
        os.makedirs(self.dir)
        os.makedirs(self.data)
        self.p2p = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        self.api = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
        self.binary = binary
        self.procs = procs
        self.proc = None

    @property
    def p2p_port(self):
        return int(self.p2p.rsplit(":", 1)[1])

    def start(self, join=None):
        argv = [self.binary, "run", "--dir", self.dir, "--data", self.data,
                "--listen", self.p2p, "--api", self.api]
        if join:
            argv += ["--join", join[0], "--token", join[1]]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        # Every setting comes from the flags above: none from the caller's
        # environment (FILESYNCD_CONFIG, _JOIN, _TOKEN, _API_TOKEN, ...).
        for k in [k for k in env if k.startswith("FILESYNCD_")]:
            env.pop(k)
        self.proc = self.procs.spawn(argv, self.log, env)

    def get(self, path, timeout=5):
        # The API wants the node's bearer secret on every route but /healthz
        # (since c1a9fbb): the daemon keeps it in <data>/api-token.
        req = urllib.request.Request(f"http://{self.api}{path}")
        try:
            with open(os.path.join(self.data, "api-token")) as f:
                req.add_header("Authorization", f"Bearer {f.read().strip()}")
        except OSError:
            pass
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def status(self):
        """The node's /status, or None when it does not answer."""
        try:
            return json.loads(self.get("/status"))
        except (OSError, ValueError):
            return None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"filesyncd {self.name} exited with {self.proc.returncode}; "
                             f"log tail:\n{tail(self.log)}")

    def wait_healthy(self, timeout):
        end = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if self.get("/healthz", timeout=2).startswith(b"ok"):
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise BenchError(f"{self.name} /healthz not ok after {timeout}s; log tail:\n"
                                 f"{tail(self.log)}")
            time.sleep(0.2)

    def token(self):
        r = subprocess.run([self.binary, "token", "create", "--ttl", "10m", "--api", self.api],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BenchError(f"token create on {self.name}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout.strip()


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"(no log: {e})"


def sync_of(st):
    return (st or {}).get("sync") or {}


def describe(st):
    if st is None:
        return "no answer"
    s = sync_of(st)
    return (f"state={st.get('state')} applied={st.get('applied_index')} "
            f"in_sync={st.get('in_sync')} root={st.get('cluster_root', '')[:12]} "
            f"local={str(st.get('local_root'))[:12]} pending_local={s.get('pending_local')} "
            f"pending_remote={s.get('pending_remote')} transfers={len(s.get('transfers') or [])} "
            f"halted={s.get('halted')} last_error={s.get('last_error')}")


def udp_ports_of(node):
    """The node's swarm port and every other UDP port its process listens on."""
    ports = {node.p2p_port}
    pid = getattr(node.proc, "pid", None)
    if pid is None:
        return ports
    r = subprocess.run(["ss", "-Hulnp"], capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[3]
            try:
                ports.add(int(local.rsplit(":", 1)[1]))
            except (IndexError, ValueError):
                pass
    return ports


# ---------------------------------------------------------------- iptables


class Counters:
    """Byte counters of IP packets on loopback: one rule for the filesyncd
    UDP ports (either end), one for the rsync daemon's TCP port. Each packet
    on lo passes INPUT once, so nothing is counted twice."""

    def __init__(self, root, udp_ports, tcp_port):
        self.chain = f"FSDBENCH{os.getpid()}"
        with open(os.path.join(root, "iptables_chain"), "w") as f:
            f.write(self.chain + "\n")
        ports = ",".join(str(p) for p in udp_ports)
        self.ipt("-N", self.chain)
        self.ipt("-A", self.chain, "-p", "udp", "-m", "multiport", "--ports", ports, "-j", "RETURN")
        self.ipt("-A", self.chain, "-p", "tcp", "-m", "multiport", "--ports", str(tcp_port),
                 "-j", "RETURN")
        self.ipt("-I", "INPUT", "1", "-j", self.chain)
        self.installed = True

    @staticmethod
    def ipt(*args, check=True):
        r = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise BenchError(f"iptables {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def zero(self):
        self.ipt("-Z", self.chain)

    def read(self):
        """(filesyncd UDP bytes, rsync TCP bytes) since the last zero."""
        out = self.ipt("-L", self.chain, "-v", "-x", "-n", "--line-numbers")
        got = {}
        for line in out.splitlines():
            f = line.split()
            if f and f[0] in ("1", "2"):
                got[f[0]] = int(f[2])
        if set(got) != {"1", "2"}:
            raise BenchError(f"cannot read iptables counters:\n{out}")
        return got["1"], got["2"]

    def remove(self):
        if not self.installed:
            return
        self.ipt("-D", "INPUT", "-j", self.chain, check=False)
        self.ipt("-F", self.chain, check=False)
        self.ipt("-X", self.chain, check=False)
        self.installed = False


class NoCounters:
    def zero(self):
        pass

    def read(self):
        return None, None

    def remove(self):
        pass


# ---------------------------------------------------------------- rsync


class Rsync:
    def __init__(self, root, procs):
        self.base = os.path.join(root, "rsync")
        self.src = os.path.join(self.base, "src")
        self.peers = [os.path.join(self.base, p) for p in ("peer1", "peer2")]
        for d in [self.src, *self.peers]:
            os.makedirs(d)
        self.port = free_port(socket.SOCK_STREAM)
        conf = os.path.join(self.base, "rsyncd.conf")
        lines = [f"pid file = {self.base}/rsyncd.pid", f"log file = {self.base}/rsyncd.log",
                 f"lock file = {self.base}/rsyncd.lock",
                 "use chroot = no", "numeric ids = yes", "max connections = 8"]
        if os.geteuid() == 0:
            lines += ["uid = 0", "gid = 0"]
        for p in self.peers:
            lines += [f"[{os.path.basename(p)}]", f"    path = {p}", "    read only = no"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = procs.spawn(["rsync", "--daemon", "--no-detach", f"--config={conf}",
                                 f"--port={self.port}", "--address=127.0.0.1"],
                                os.path.join(self.base, "daemon.out"))
        end = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"rsync daemon exited with {self.proc.returncode}: "
                                 f"{tail(os.path.join(self.base, 'daemon.out'))}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise BenchError(f"rsync daemon not listening on {self.port} after 30s")
                time.sleep(0.1)

    def url(self, i):
        return f"rsync://127.0.0.1:{self.port}/{os.path.basename(self.peers[i])}/"

    def start(self, i, src=None, dest_sub="", extra=()):
        """`rsync -a --stats [extra]` of the source tree (or `src`) to peer i.
        With --fsync in `extra` the client passes it on to the daemon, whose
        receiver then fsyncs every file it writes (checked with strace)."""
        argv = ["rsync", "-a", "--stats", *extra, src or (self.src + "/"), self.url(i) + dest_sub]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def to_both(self, timeout, watch=None, t0=None, extra=()):
        """Both peers in parallel; returns (end time of each since `t0`, default
        now, and the --stats bytes summed). With `watch`, peer i's end is when
        `watch(i)` first holds (polled every 1 ms, for the latency rows); else
        it is the exit of its rsync. `extra`: more rsync options (--fsync)."""
        t0 = now() if t0 is None else t0
        cpu0 = children_cpu() + proc_times(self.proc.pid)[1]
        ps = [self.start(0, extra=extra), self.start(1, extra=extra)]
        ends = [None, None]
        while None in ends:
            for i, p in enumerate(ps):
                if ends[i] is None and ((watch and watch(i)) or (not watch and p.poll() is not None)):
                    ends[i] = now() - t0
                if ends[i] is None and p.poll() not in (None, 0):
                    _, err = p.communicate()
                    raise BenchError(f"rsync to peer{i + 1} exit {p.returncode}: {err.strip()}")
            if now() - t0 > timeout:
                for p in ps:
                    p.kill()
                raise BenchError(f"rsync to the peers did not finish within {timeout}s")
            time.sleep(0.001)
        total = 0
        for i, p in enumerate(ps):
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise BenchError(f"rsync to peer{i + 1} exit {p.returncode}: {err.strip()}")
            total += stats_bytes(out)
        # The daemon reaps its receivers right after the clients exit.
        time.sleep(0.3)
        self.last_cpu = children_cpu() + proc_times(self.proc.pid)[1] - cpu0
        return ends, total


def stats_bytes(out):
    """Total bytes sent + received from rsync --stats."""
    got = {}
    for k in ("sent", "received"):
        m = re.search(rf"Total bytes {k}:\s*([\d,.]+)", out)
        if not m:
            raise BenchError(f"no 'Total bytes {k}' in rsync --stats output:\n{out}")
        got[k] = int(re.sub(r"[,.]", "", m.group(1)))
    return got["sent"] + got["received"]


# ---------------------------------------------------------------- data


def write_random(paths, size):
    """Writes the same random bytes to every path; returns their sha256."""
    h = hashlib.sha256()
    fs = [open(p, "wb") for p in paths]
    left = size
    while left:
        b = os.urandom(min(left, 4 * MIB))
        h.update(b)
        for f in fs:
            f.write(b)
        left -= len(b)
    for f in fs:
        f.close()
    return h.hexdigest()


def write_insert(src, paths, at, byte):
    """Copies src with `byte` inserted at offset `at` into every path;
    returns the sha256 of the result."""
    h = hashlib.sha256()
    fs = [open(p, "wb") for p in paths]

    def put(b):
        h.update(b)
        for o in fs:
            o.write(b)

    with open(src, "rb") as f:
        left = at
        while left:
            b = f.read(min(left, 4 * MIB))
            if not b:
                raise BenchError(f"{src} is shorter than {at} bytes")
            put(b)
            left -= len(b)
        put(byte)
        while True:
            b = f.read(4 * MIB)
            if not b:
                break
            put(b)
    for o in fs:
        o.close()
    return h.hexdigest()


def small_tree(bases, dirs, per_dir, size):
    """The same tree of random files under every base; returns {relpath: bytes}."""
    want = {}
    for d in range(dirs):
        for b in bases:
            os.makedirs(os.path.join(b, f"d{d:03}"))
        for i in range(per_dir):
            rel = f"d{d:03}/f{i:04}.bin"
            data = os.urandom(size)
            want[rel] = data
            for b in bases:
                with open(os.path.join(b, rel), "wb") as f:
                    f.write(data)
    return want


def tree_sizes_ok(base, want):
    for rel, data in want.items():
        try:
            if os.stat(os.path.join(base, rel)).st_size != len(data):
                return False
        except OSError:
            return False
    return True


def tree_verify(base, want, who):
    for rel, data in want.items():
        with open(os.path.join(base, rel), "rb") as f:
            if f.read() != data:
                raise BenchError(f"{who}: {rel} differs from the source")


def file_is(path, data):
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


# ---------------------------------------------------------------- bench


class Bench:
    def __init__(self, args):
        self.a = args
        self.root = args.root
        self.procs = Procs(self.root)
        self.stage = os.path.join(self.root, "stage")
        os.makedirs(self.stage)
        # (scenario, filesyncd, rsync, rsync --fsync, ratio fsd/rsync,
        # ratio fsd/rsync --fsync); table() drops the --fsync columns when
        # the variant is off (--no-rsync-fsync)
        self.rows = []
        self.fsync_on = False  # set by run(): the `rsync --fsync` variant runs
        self.notes = []
        self.failures = []  # filesyncd scenarios that failed, with why
        self.big_ok = False
        self.fsd_cpu_used = None
        self.cpu_plain = self.cpu_fsync = None
        self.counters = NoCounters()

    # -- table

    def row(self, scenario, f, r, fmt, rf=None):
        """One table row: FAILED prints as such, None (a counter this run
        does not have, or `rf`, the `rsync --fsync` figure, where that variant
        is not measured) as n/a; a ratio only between two numbers."""
        def cell(v):
            if v is FAILED:
                return "FAILED"
            return "n/a" if v is None else fmt(v)

        def ratio(a, b):
            ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b != 0
            return f"{a / b:.2f}" if ok else "n/a"

        self.rows.append((scenario, cell(f), cell(r), cell(rf), ratio(f, r), ratio(f, rf)))

    # -- cluster

    def start_cluster(self):
        n = [Node(self.root, f"n{i}", self.a.binary, self.procs) for i in range(3)]
        self.nodes = n
        n[0].start()
        n[0].wait_healthy(120)
        for j in (1, 2):
            tok = n[0].token()
            n[j].start(join=(n[0].p2p, tok))
            n[j].wait_healthy(180)
        # A daemon whose API is not wired to the sync service answers
        # `sync: null` and never `in_sync`: fall back to the committed root
        # (every node applied the new version) plus the files on disk.
        sts = self.statuses()
        self.sync_view = all(s is not None and s.get("sync") is not None for s in sts)
        if not self.sync_view:
            self.notes.append(
                "status has no sync view (`sync: null`, in_sync never true) in this build: "
                "done = every node applied the new cluster root + the files on the peers "
                "(size, then content checked); local_root/in_sync NOT checked")
            log("WARNING: status has no sync view; using cluster_root + files on disk")
        self.wait_settled("the 3-node cluster to form", 180, members=3)
        log(f"cluster up: {', '.join(f'{x.name} p2p {x.p2p} api {x.api}' for x in n)}")

    def statuses(self):
        for x in self.nodes:
            x.check_alive()
        return [x.status() for x in self.nodes]

    def node_done(self, s, target):
        """Node status `s` shows the tree with cluster root `target` applied
        (and, with a sync view, materialized: in_sync on that root)."""
        if s is None or s.get("cluster_root") != target:
            return False
        return not self.sync_view or (s.get("in_sync") and s.get("local_root") == target)

    def settled(self, sts, members=None):
        if any(s is None for s in sts):
            return False
        if self.sync_view and any(not s.get("in_sync") for s in sts):
            return False
        if len({s.get("cluster_root") for s in sts}) != 1:
            return False
        if len({s.get("applied_index") for s in sts}) != 1:
            return False
        if members is not None and any(len(s.get("members") or []) != members for s in sts):
            return False
        return True

    def timeout_error(self, what, timeout):
        sts = [x.status() for x in self.nodes]
        # The full /status of each node, for the bug report.
        dump = os.path.join(self.root, f"status-{time.strftime('%H%M%S')}.json")
        with open(dump, "w") as f:
            json.dump({x.name: s for x, s in zip(self.nodes, sts)}, f, indent=1)
        lines = [f"timed out after {timeout}s waiting for {what} (full status: {dump})"]
        for x, s in zip(self.nodes, sts):
            lines.append(f"  {x.name}: {describe(s)}")
        for x in self.nodes:
            lines.append(f"--- {x.log} (tail) ---\n{tail(x.log, 15)}")
        return BenchError("\n".join(lines))

    def wait_settled(self, what, timeout, members=None):
        end = time.monotonic() + timeout
        while True:
            sts = self.statuses()
            if self.settled(sts, members):
                return sts
            if time.monotonic() > end:
                raise self.timeout_error(what, timeout)
            time.sleep(0.05)

    def fsd_wait(self, what, before_root, peer_has, timeout, poll=0.02):
        """Polls until n0 committed a new root and each peer holds it in sync
        and `peer_has(node)` (its files arrived). Returns each peer's time."""
        t0 = now()
        done = {}
        while len(done) < 2:
            sts = self.statuses()
            s0 = sts[0]
            target = None
            if s0 and s0.get("cluster_root") != before_root and self.node_done(
                    s0, s0["cluster_root"]):
                target = s0["cluster_root"]
            if target:
                for j in (1, 2):
                    if (j not in done and self.node_done(sts[j], target)
                            and peer_has(self.nodes[j])):
                        done[j] = now() - t0
            if now() - t0 > timeout:
                raise self.timeout_error(f"{what} (peers done: {sorted(done)})", timeout)
            time.sleep(poll)
        return [done[1], done[2]]

    def bytes_fetched(self):
        """Payload bytes the peers fetched (None without a sync view)."""
        if not self.sync_view:
            return None
        return sum(sync_of(x.status()).get("bytes_fetched") or 0 for x in self.nodes[1:])

    # -- scenarios
    #
    # Each scenario runs filesyncd, then rsync, on the same staged data. A
    # filesyncd failure (timeout, wrong content) does not end the run: it is
    # recorded, the change is undone on n0, the cluster must settle and stay
    # quiet for --quiet-secs (an in-flight offer of the failed change can take
    # that long to give up), and the next scenario starts. Errors of the
    # harness itself (rsync failing, disk) end the run.

    def fsd_try(self, label, run, undo):
        try:
            return run()
        except BenchError as e:
            msg = str(e)
            log(f"filesyncd FAILED: {msg}")
            short = [ln for ln in msg.splitlines() if not ln.startswith("---")][:4]
            self.failures.append(f"{label}: " + " / ".join(x.strip() for x in short))
            undo()
            self.wait_quiet(f"the cluster to settle after the failed '{label}'")
            return None

    def wait_quiet(self, what):
        """Settled, and still settled on the same root after --quiet-secs."""
        end = time.monotonic() + 300 + self.a.quiet_secs
        while True:
            root = self.wait_settled(what, 300)[0]["cluster_root"]
            time.sleep(self.a.quiet_secs)
            sts = self.statuses()
            if self.settled(sts) and sts[0]["cluster_root"] == root:
                return
            if time.monotonic() > end:
                raise self.timeout_error(what, 300 + self.a.quiet_secs)

    def fsd_cpu(self):
        """CPU-seconds the three daemons have used since they started."""
        return sum(proc_times(x.proc.pid)[0] for x in self.nodes)

    def cpu_row(self, label, fsd_cpu):
        """CPU-seconds of the scenario: the three daemons from the data's
        arrival until every node shows it, against the rsync clients plus the
        daemon's receivers (processes the rsync daemon reaped) of the plain
        and the --fsync run."""
        self.row(f"{label}: CPU-seconds (all processes)", fsd_cpu, self.cpu_plain, secs,
                 self.cpu_fsync)

    def rsync_plain(self, n):
        """The plain `rsync -a` of scenario n: the disk synced first (outside
        the timing, like before the --fsync run), the byte counter around it.
        Returns (ends, --stats bytes, wire bytes)."""
        os.sync()
        log(f"scenario {n}: rsync")
        self.counters.zero()
        ends, stats = self.rs.to_both(self.a.timeout)
        _, wire = self.counters.read()
        self.cpu_plain = self.rs.last_cpu
        return ends, stats, wire

    def rsync_fsync(self, n, reset, verify):
        """Scenario n again with `rsync --fsync`, run right after the plain
        rsync of the same source into the same two modules: `reset(peer)`
        first puts each module back into the state the plain run found (the
        new data removed; scenario 3: the old basis restored), the disk is
        synced (so that this run does not pay for the plain run's writeback),
        then the same transfer is timed and `verify(peer, who)` checks each
        module after it. Returns (ends, --stats bytes), or (None, None) when
        the variant is off."""
        self.cpu_fsync = None
        if not self.fsync_on:
            return None, None
        for p in self.rs.peers:
            reset(p)
        os.sync()
        log(f"scenario {n}: rsync --fsync")
        ends, stats = self.rs.to_both(self.a.timeout, extra=("--fsync",))
        self.cpu_fsync = self.rs.last_cpu
        for p in self.rs.peers:
            verify(p, f"rsync --fsync {p}")
        log(f"scenario {n}: rsync --fsync first peer {min(ends):.2f}s, both {max(ends):.2f}s")
        return ends, stats

    def fsync_stats_note(self, stats):
        """The --stats total of the --fsync run, for the notes (same work as
        the plain run: scenario 3 stays a delta transfer)."""
        return "" if stats is None else f"; rsync --fsync --stats total: {nbytes(stats)}"

    def big_new(self):
        size = self.a.big_mib * MIB
        label = f"{size_label(size)} new random file"
        log(f"scenario 1: {label}: writing the data")
        fsd_src, rs_src = os.path.join(self.stage, "fsd_big"), os.path.join(self.stage, "rs_big")
        self.big_sha = write_random([fsd_src, rs_src], size)
        os.sync()  # no writeback of the staged data during the timings
        self.big_size = size
        n0 = self.nodes[0]
        target = os.path.join(n0.dir, "big.bin")

        def run():
            before = self.wait_settled("the cluster to settle", 120)[0]["cluster_root"]
            fetched0 = self.bytes_fetched()
            self.counters.zero()
            log("scenario 1: filesyncd")
            cpu0 = self.fsd_cpu()
            os.rename(fsd_src, target)
            t = self.fsd_wait(label, before, lambda x: file_size(
                os.path.join(x.dir, "big.bin")) == size, self.a.timeout)
            self.fsd_cpu_used = self.fsd_cpu() - cpu0
            wire, _ = self.counters.read()
            fetched = None if fetched0 is None else self.bytes_fetched() - fetched0
            for x in self.nodes[1:]:
                if sha256_file(os.path.join(x.dir, "big.bin")) != self.big_sha:
                    raise BenchError(f"{x.name}: big.bin differs from the source although "
                                     f"the node reports the new root")
            log(f"scenario 1: filesyncd first peer {t[0]:.2f}s, both {max(t):.2f}s")
            return t, wire, fetched

        f = self.fsd_try(label, run, lambda: rm(target))
        self.big_ok = f is not None
        os.rename(rs_src, os.path.join(self.rs.src, "big.bin"))

        def verify(p, who):
            if sha256_file(os.path.join(p, "big.bin")) != self.big_sha:
                raise BenchError(f"{who}/big.bin differs from the source")

        ends, rs_stats, rs_wire = self.rsync_plain(1)
        for p in self.rs.peers:
            verify(p, f"rsync {p}")
        log(f"scenario 1: rsync first peer {min(ends):.2f}s, both {max(ends):.2f}s")
        # --fsync: the modules without big.bin again, as the plain run found them.
        fe, fs_stats = self.rsync_fsync(1, lambda p: rm(os.path.join(p, "big.bin")), verify)
        t, wire, fetched = f if f else (None, FAILED, None)
        self.row(f"{label}: verified on 1st peer", min(t) if t else FAILED, min(ends), secs,
                 min(fe) if fe else None)
        self.row(f"{label}: verified on both peers", max(t) if t else FAILED, max(ends), secs,
                 max(fe) if fe else None)
        self.row(f"{label}: throughput to both peers", size / max(t) / MIB if t else FAILED,
                 size / max(ends) / MIB, lambda v: f"{v:.1f} MiB/s",
                 size / max(fe) / MIB if fe else None)
        self.row(f"{label}: IP bytes on loopback", wire, rs_wire, nbytes)
        self.cpu_row(label, self.fsd_cpu_used if t else FAILED)
        self.notes.append(f"1: filesyncd payload fetched by the peers (sync.bytes_fetched): "
                          f"{'n/a' if fetched is None else nbytes(fetched)}; "
                          f"rsync --stats total: {nbytes(rs_stats)}"
                          f"{self.fsync_stats_note(fs_stats)}")

    def small_files(self):
        count, dirs = self.a.small_count, self.a.small_dirs
        per_dir = count // dirs
        fsize = self.a.small_kib * 1024
        label = f"{per_dir * dirs:,} x {self.a.small_kib} KiB files in {dirs} dirs"
        log(f"scenario 2: {label}: writing the data")
        fsd_src, rs_src = os.path.join(self.stage, "fsd_small"), os.path.join(self.stage, "rs_small")
        want = small_tree([fsd_src, rs_src], dirs, per_dir, fsize)
        os.sync()
        n0 = self.nodes[0]
        target = os.path.join(n0.dir, "small")

        def run():
            before = self.wait_settled("the cluster to settle", 120)[0]["cluster_root"]
            self.counters.zero()
            log("scenario 2: filesyncd")
            cpu0 = self.fsd_cpu()
            os.rename(fsd_src, target)
            t = self.fsd_wait(label, before, lambda x: tree_sizes_ok(
                os.path.join(x.dir, "small"), want), self.a.timeout, poll=0.02)
            self.fsd_cpu_used = self.fsd_cpu() - cpu0
            wire, _ = self.counters.read()
            for x in self.nodes[1:]:
                tree_verify(os.path.join(x.dir, "small"), want, x.name)
            log(f"scenario 2: filesyncd first peer {t[0]:.2f}s, both {max(t):.2f}s")
            return t, wire

        f = self.fsd_try(label, run, lambda: rm(target))
        os.rename(rs_src, os.path.join(self.rs.src, "small"))
        ends, rs_stats, rs_wire = self.rsync_plain(2)
        for p in self.rs.peers:
            tree_verify(os.path.join(p, "small"), want, f"rsync {p}")
        log(f"scenario 2: rsync first peer {min(ends):.2f}s, both {max(ends):.2f}s")
        # --fsync: the modules without small/ again, as the plain run found them.
        fe, fs_stats = self.rsync_fsync(
            2, lambda p: rm(os.path.join(p, "small")),
            lambda p, who: tree_verify(os.path.join(p, "small"), want, who))
        t, wire = f if f else (None, FAILED)
        n = per_dir * dirs
        self.row(f"{label}: verified on both peers", max(t) if t else FAILED, max(ends), secs,
                 max(fe) if fe else None)
        self.row(f"{label}: files/s to both peers", n / max(t) if t else FAILED, n / max(ends),
                 lambda v: f"{v:,.0f} files/s", n / max(fe) if fe else None)
        self.row(f"{label}: IP bytes on loopback", wire, rs_wire, nbytes)
        self.cpu_row(label, self.fsd_cpu_used if t else FAILED)
        self.notes.append(f"2: rsync --stats total: {nbytes(rs_stats)}"
                          f"{self.fsync_stats_note(fs_stats)}")
        order = self.a.scenarios.split(",")
        if f is None and order[-1] != "2":
            self.notes.append("2: filesyncd failed here, so from now on its tree lacks "
                              "small/ while rsync's source has it")

    def insert(self):
        if not hasattr(self, "big_size"):
            raise BenchError("scenario 3 needs scenario 1 before it (--scenarios)")
        size = self.big_size
        at = size // 2
        label = f"1-byte insert in the middle of the {size_label(size)} file"
        n0 = self.nodes[0]
        target = os.path.join(n0.dir, "big.bin")
        log(f"scenario 3: {label}: writing the data")
        fsd_src, rs_src = os.path.join(self.stage, "fsd_big2"), os.path.join(self.stage, "rs_big2")
        sha = write_insert(os.path.join(self.rs.src, "big.bin"), [fsd_src, rs_src], at, b"\xa5")
        os.sync()

        def run():
            before = self.wait_settled("the cluster to settle", 120)[0]["cluster_root"]
            # Background traffic of an idle cluster (Raft heartbeats, QUIC keep-alives).
            self.counters.zero()
            time.sleep(self.a.idle_secs)
            idle, _ = self.counters.read()
            fetched0 = self.bytes_fetched()
            self.counters.zero()
            log("scenario 3: filesyncd")
            cpu0 = self.fsd_cpu()
            os.rename(fsd_src, target)
            t = self.fsd_wait(label, before, lambda x: file_size(
                os.path.join(x.dir, "big.bin")) == size + 1, self.a.timeout)
            self.fsd_cpu_used = self.fsd_cpu() - cpu0
            wire, _ = self.counters.read()
            fetched = None if fetched0 is None else self.bytes_fetched() - fetched0
            for x in self.nodes[1:]:
                if sha256_file(os.path.join(x.dir, "big.bin")) != sha:
                    raise BenchError(f"{x.name}: big.bin differs from the source after the "
                                     f"insert although the node reports the new root")
            log(f"scenario 3: filesyncd both peers {max(t):.2f}s, {nbytes(wire or 0)}")
            return t, wire, fetched, idle

        if self.big_ok:
            # Undo: the insert stays uncommitted; restore the old content.
            f = self.fsd_try(label, run, lambda: shutil.copyfile(
                os.path.join(self.rs.peers[0], "big.bin"), target))
        else:
            f = None
            self.failures.append(f"{label}: skipped, scenario 1 failed")
        os.rename(rs_src, os.path.join(self.rs.src, "big.bin"))
        # The --fsync run must also be a delta against the old file: keep it
        # as a hard link outside the modules (no copy; rsync writes the new
        # file to a temporary name and renames it over, the old inode stays).
        hold = os.path.join(self.rs.base, "hold")
        held = {p: os.path.join(hold, os.path.basename(p) + ".big.bin") for p in self.rs.peers}
        if self.fsync_on:
            os.makedirs(hold, exist_ok=True)
            for p, h in held.items():
                rm(h)
                os.link(os.path.join(p, "big.bin"), h)

        def verify(p, who):
            if sha256_file(os.path.join(p, "big.bin")) != sha:
                raise BenchError(f"{who}/big.bin differs from the source after the insert")

        def restore(p):
            if file_size(held[p]) != size:
                raise BenchError(f"{held[p]}: the held old big.bin is not {size} bytes")
            os.replace(held[p], os.path.join(p, "big.bin"))

        ends, rs_stats, rs_wire = self.rsync_plain(3)
        for p in self.rs.peers:
            verify(p, f"rsync {p}")
        log(f"scenario 3: rsync both peers {max(ends):.2f}s, {nbytes(rs_wire or 0)}")
        # --fsync: the modules hold the old big.bin again, as the plain run found them.
        fe, fs_stats = self.rsync_fsync(3, restore, verify)
        rm(hold)
        t, wire, fetched, idle = f if f else (None, FAILED, FAILED, None)
        self.row(f"{label}: verified on both peers", max(t) if t else FAILED, max(ends), secs,
                 max(fe) if fe else None)
        self.row(f"{label}: IP bytes on loopback, both peers", wire, rs_wire, nbytes)
        self.cpu_row(label, self.fsd_cpu_used if t else FAILED)
        self.notes.append(
            f"3: payload: rsync --stats total {nbytes(rs_stats)}"
            f"{self.fsync_stats_note(fs_stats)}; filesyncd peers' "
            f"sync.bytes_fetched delta "
            f"{fetched if isinstance(fetched, str) else 'n/a' if fetched is None else nbytes(fetched)}"
            f" (payload only: the wire bytes above are the figure to compare)")
        if idle is not None:
            rate = idle / self.a.idle_secs
            self.notes.append(
                f"3: idle cluster background {nbytes(rate)}/s over {self.a.idle_secs}s; "
                f"of the filesyncd insert bytes about {nbytes(rate * max(t))} are that "
                f"background ({max(t):.2f}s x rate)")

    def latency(self):
        tries = self.a.tries
        fsize = 1024
        label = f"write-to-visible, {fsize} B file"
        n0 = self.nodes[0]

        def run():
            os.mkdir(os.path.join(n0.dir, "lat"))
            self.wait_settled("lat/ to reach the peers", 120)
            log(f"scenario 4: {label}, {tries} tries: filesyncd")
            got = [[], []]
            for i in range(tries):
                self.wait_settled("the cluster to settle between tries", 120)
                data = os.urandom(fsize)
                rel = os.path.join("lat", f"f{i:03}.bin")
                paths = [os.path.join(x.dir, rel) for x in self.nodes[1:]]
                seen = [None, None]
                t0 = now()
                with open(os.path.join(n0.dir, rel), "wb") as f:
                    f.write(data)
                while None in seen:
                    for j in (0, 1):
                        if seen[j] is None and file_is(paths[j], data):
                            seen[j] = now() - t0
                    if now() - t0 > self.a.try_timeout:
                        raise self.timeout_error(f"{rel} (try {i + 1}) to appear on the peers",
                                                 self.a.try_timeout)
                    time.sleep(0.001)
                got[0].append(min(seen))
                got[1].append(max(seen))
            return got

        fsd = self.fsd_try(label, run, lambda: rm(os.path.join(n0.dir, "lat")))
        log("scenario 4: rsync (whole tree, both peers in parallel)")
        os.mkdir(os.path.join(self.rs.src, "lat"))
        self.rs.to_both(self.a.timeout)
        rs = [[], []]
        for i in range(tries):
            data = os.urandom(fsize)
            rel = os.path.join("lat", f"f{i:03}.bin")
            paths = [os.path.join(p, rel) for p in self.rs.peers]
            t0 = now()
            with open(os.path.join(self.rs.src, rel), "wb") as f:
                f.write(data)
            ends, _ = self.rs.to_both(self.a.try_timeout, t0=t0,
                                      watch=lambda j, d=data, ps=paths: file_is(ps[j], d))
            rs[0].append(min(ends))
            rs[1].append(max(ends))
        log("scenario 4: rsync of the one new file only (no tree scan)")
        one = []
        for i in range(tries):
            data = os.urandom(fsize)
            name = f"g{i:03}.bin"
            src = os.path.join(self.rs.src, "lat", name)
            dst = os.path.join(self.rs.peers[0], "lat", name)
            t0 = now()
            with open(src, "wb") as f:
                f.write(data)
            p = self.rs.start(0, src=src, dest_sub="lat/")
            while not file_is(dst, data):
                if now() - t0 > self.a.try_timeout:
                    p.kill()
                    raise BenchError(f"rsync of {name} did not arrive in {self.a.try_timeout}s")
                time.sleep(0.001)
            one.append(now() - t0)
            _, err = p.communicate(timeout=self.a.try_timeout)
            if p.returncode != 0:
                raise BenchError(f"rsync of {name}: exit {p.returncode}: {err.strip()}")

        def ms(v):
            return f"{v * 1000:.1f} ms"

        for q, qn in ((50, "p50"), (99, "p99")):
            for k, who in ((0, "1st peer"), (1, "both peers")):
                self.row(f"{label}: {who}, {qn}", pct(fsd[k], q) if fsd else FAILED,
                         pct(rs[k], q), ms)
        self.notes.append(
            f"4: rsync of only the new file to one peer (no tree scan, best case for a "
            f"watcher-driven rsync): p50 {ms(pct(one, 50))}, p99 {ms(pct(one, 99))}; "
            f"p99 over {tries} tries is the nearest rank (the max for 20)")

    def mark_logs(self):
        """Remembers where each log ends: problems are counted after this."""
        self.log_marks = {x.name: file_size(x.log) for x in self.nodes}

    def log_problems(self):
        for x in self.nodes:
            bad = []
            with open(x.log, "rb") as f:
                f.seek(max(0, self.log_marks.get(x.name, 0)))
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if re.search(r"\b(ERROR|WARN)\b|panicked", line):
                        bad.append(line)
            if bad:
                first = "; ".join(b[:240] for b in bad[:3])
                self.notes.append(f"{x.name} log during the scenarios: {len(bad)} WARN/ERROR "
                                  f"lines, first: {first}")
            else:
                self.notes.append(f"{x.name} log during the scenarios: no WARN/ERROR lines")

    def run(self):
        self.start_cluster()
        self.rs = Rsync(self.root, self.procs)
        if not self.a.no_iptables:
            # Every UDP port the daemons listen on: the swarm's and the bulk
            # chunk endpoint's (swarm port + 1 when free, else ephemeral).
            udp = sorted({p for x in self.nodes for p in udp_ports_of(x)})
            self.notes.append(f"filesyncd UDP ports counted: {', '.join(map(str, udp))}")
            self.counters = Counters(self.root, udp, self.rs.port)
        self.fsync_on = not self.a.no_rsync_fsync
        if self.fsync_on:
            h = subprocess.run(["rsync", "--help"], capture_output=True, text=True, timeout=30)
            if "--fsync" not in h.stdout:
                self.fsync_on = False
                self.notes.append("rsync --fsync: this rsync has no --fsync (3.2.4 and later "
                                  "have it): that column is n/a")
                log("WARNING: this rsync has no --fsync; the rsync --fsync column stays n/a")
        if self.fsync_on:
            self.notes.append(
                "rsync --fsync: scenarios 1-3 only, each run right after the plain rsync of the "
                "same source into the same two modules, reset first to the state the plain run "
                "found (scenario 3: the old big file as its basis, so a delta transfer too); "
                "the disk synced before each rsync timing. Byte rows and write-to-visible "
                "latency rows: plain rsync only (n/a in that column)")
        self.mark_logs()
        steps = {"1": self.big_new, "2": self.small_files, "3": self.insert, "4": self.latency}
        for k in self.a.scenarios.split(","):
            steps[k]()
        self.log_problems()

    def close(self):
        self.counters.remove()
        self.procs.stop_all()


def rm(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def file_size(p):
    try:
        return os.stat(p).st_size
    except OSError:
        return -1


def pct(xs, q):
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(1, -(-q * len(s) // 100))
    return s[k - 1]


def secs(v):
    return f"{v:.2f} s"


def nbytes(v):
    v = float(v)
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= n:
            return f"{v / n:.2f} {unit} ({int(v):,} B)"
    return f"{int(v):,} B"


def size_label(n):
    return f"{n // (1 << 30)} GiB" if n % (1 << 30) == 0 else f"{n // MIB} MiB"


def table(rows, fsync=True):
    """The rows as a markdown table; without `fsync` (--no-rsync-fsync) the
    two `rsync --fsync` columns are left out."""
    head = ("scenario", "filesyncd", "rsync", "rsync --fsync", "ratio fsd/rsync",
            "ratio fsd/rsync --fsync")
    keep = (0, 1, 2, 3, 4, 5) if fsync else (0, 1, 2, 4)
    head = tuple(head[i] for i in keep)
    rows = [tuple(r[i] for i in keep) for r in rows]
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|",
                      *map(fmt, rows)])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--header", default="", help="text put above the table")
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small-count", type=int, default=10000)
    ap.add_argument("--small-dirs", type=int, default=100)
    ap.add_argument("--small-kib", type=int, default=4)
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=600, help="per scenario, seconds")
    ap.add_argument("--try-timeout", type=int, default=60, help="per latency try, seconds")
    ap.add_argument("--idle-secs", type=int, default=5)
    ap.add_argument("--quiet-secs", type=int, default=45,
                    help="after a failed filesyncd scenario: settled this long before going on")
    ap.add_argument("--no-iptables", action="store_true")
    ap.add_argument("--no-rsync-fsync", action="store_true",
                    help="skip the `rsync --fsync` runs of scenarios 1-3 (and its two columns)")
    ap.add_argument("--scenarios", default="1,3,4,2",
                    help="which scenarios, in this order (3 needs 1 before it); the many "
                         "small files go last by default so that a filesyncd failure there "
                         "cannot take the other rows with it")
    a = ap.parse_args()
    order = a.scenarios.split(",")
    if not set(order) <= {"1", "2", "3", "4"} or len(set(order)) != len(order) or (
            "3" in order and ("1" not in order or order.index("1") > order.index("3"))):
        ap.error("--scenarios: distinct numbers 1-4, with 1 before 3")
    # SIGTERM (bench.sh's trap) unwinds like an error: daemons stopped,
    # iptables rules removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    b = Bench(a)
    t0 = time.monotonic()
    try:
        b.run()
    except BenchError as e:
        print(f"\nbench FAILED: {e}", file=sys.stderr)
        text = f"{a.header}\n\nFAILED: {e}\n"
        if b.rows:
            tab = table(b.rows, fsync=not a.no_rsync_fsync)
            text += "\nrows measured before the failure:\n\n" + tab + "\n"
            print("rows measured before the failure:\n" + tab, file=sys.stderr)
        with open(a.out, "w") as f:
            f.write(text)
        print(f"failure report written to {a.out}", file=sys.stderr)
        return 1
    finally:
        b.close()
    rsync_v = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout
    b.notes.append(f"total bench time {time.monotonic() - t0:.0f} s; "
                   f"load average at the end {os.getloadavg()[0]:.2f}; "
                   f"{rsync_v.splitlines()[0] if rsync_v else 'rsync ?'}")
    text = a.header + "\n\n" + table(b.rows, fsync=not a.no_rsync_fsync) + "\n"
    if b.failures:
        text += "\nfilesyncd FAILURES:\n" + "\n".join(f"- {x}" for x in b.failures) + "\n"
    text += "\nNotes:\n" + "\n".join(f"- {n}" for n in b.notes) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    return 3 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
