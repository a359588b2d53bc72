#!/usr/bin/env python3
"""filesyncd at scale: many small files, 3 nodes on loopback, baselines in the same run.

Started by scale.sh (which builds the binary and installs rsync if missing);
see the "Scale bench" section of deploy/bench/README.md for what each figure
means. Can also be run on its own:

  python3 deploy/bench/scale.py --binary target/release/filesyncd [--files 2000] ...

Layout under ROOT (a fresh temporary directory under $BENCH_TMP, default /tmp):
  bin/filesyncd     a copy of --binary (a rebuild during the run cannot disturb it)
  stage/tree        the generated tree (renamed into each tool's source and back)
  n0/ n1/ n2/       {dir, data, log} of the three filesyncd nodes
  rsync-*/          the baselines' destination directories (removed after each)
  syncthing/        the three syncthing homes and folders (removed after it)
  pids              every process started (scale.sh's trap kills what is left)

Exit: 0 table written; 3 table written but filesyncd did not converge within
--timeout (root kept); 1 the harness failed (root kept); 2 bad usage;
130/143 interrupted (root removed unless --keep).
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from array import array

sys.dont_write_bytecode = True  # no __pycache__ left in deploy/bench
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Helpers shared with the small-scale bench (processes, nodes, log tails).
from bench import BenchError, Node, Procs, describe, free_port, pct, tail  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLK = os.sysconf("SC_CLK_TCK")
KIB = 1024
MIB = 1024 * 1024
FAILED = "FAILED"
# The sync service logs one debug line per engine step, with its scope and
# duration: how the rescan is timed.
STEP_TARGET = "filesyncd::daemon::sync::service"
STEP_RE = re.compile(r"sync step\b.*\bscope=full\b.*\bms=(\d+)")


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def now():
    return time.perf_counter()


# ---------------------------------------------------------------- the tree


class Tree:
    """N files of deterministic sizes and contents in `dirs` leaf directories,
    nested two levels (d0012/e034/). Nothing is kept in memory but the sizes:
    paths and contents are recomputed from the index."""

    def __init__(self, files, dirs, max_size, seed):
        self.n = files
        self.dirs = max(1, min(dirs, files or 1))
        self.fan = max(1, math.isqrt(self.dirs - 1) + 1)  # ceil(sqrt(dirs))
        self.seed = seed
        rng = random.Random(seed)
        self.sizes = array("I", (rng.randint(0, max_size) for _ in range(files)))
        self.total = sum(self.sizes)

    def leaf(self, j):
        return f"d{j // self.fan:04}/e{j % self.fan:03}"

    def rel(self, i):
        return f"{self.leaf(i % self.dirs)}/f{i:07}.bin"

    def content(self, i):
        n = self.sizes[i]
        return hashlib.shake_128(f"{self.seed}:{i}".encode()).digest(n) if n else b""

    def generate(self, base):
        for j in range(self.dirs):
            os.makedirs(os.path.join(base, self.leaf(j)))
        for i in range(self.n):
            with open(os.path.join(base, self.rel(i)), "wb") as f:
                f.write(self.content(i))

    def size_ok(self, base, i):
        try:
            return os.stat(os.path.join(base, self.rel(i))).st_size == self.sizes[i]
        except OSError:
            return False

    def scan_some(self, base, rem, budget):
        """Checks entries of `rem` (indexes not yet seen with their size) for
        at most `budget` seconds; returns the new list, unchecked ones first
        so that the next call goes on where this one stopped."""
        end = now() + budget
        keep = []
        k = 0
        while k < len(rem):
            if (k & 511) == 0 and k and now() > end:
                break
            i = rem[k]
            if not self.size_ok(base, i):
                keep.append(i)
            k += 1
        return rem[k:] + keep

    def verify(self, base, idxs):
        """Indexes whose file under `base` differs from the generated content
        (at most 5 named), and how many were checked."""
        bad = []
        for i in idxs:
            try:
                with open(os.path.join(base, self.rel(i)), "rb") as f:
                    ok = f.read() == self.content(i)
            except OSError:
                ok = False
            if not ok:
                bad.append(i)
        return bad


class Arrival:
    """Which files each destination holds with their size. While the tool
    works, short slices every 2 s drain the lists (the bench should not eat
    the CPU the tool needs); once the tool says it is done, check() goes
    through what is left."""

    def __init__(self, tree, bases):
        self.tree, self.bases = tree, bases
        self.rem = [list(range(tree.n)) for _ in bases]
        self.last = 0.0

    def background(self):
        if now() - self.last > 2:
            for k, b in enumerate(self.bases):
                self.rem[k] = self.tree.scan_some(b, self.rem[k], 0.1)
            self.last = now()

    def check(self):
        """True when every destination holds every file with its size."""
        for k, b in enumerate(self.bases):
            self.rem[k] = self.tree.scan_some(b, self.rem[k], float("inf"))
        return not any(self.rem)

    def missing(self):
        return "/".join(f"{len(r):,}" for r in self.rem)


def rm_tree(path):
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- /proc


class Leadership:
    """Terms and leaders the nodes report at each status poll: a term that
    moves means an election happened (even one too quick for a poll to see
    another leader)."""

    def __init__(self):
        self.terms = []
        self.leaders = []

    def see(self, sts):
        for s in sts:
            if s is None:
                continue
            t, l = s.get("term"), s.get("leader")
            if isinstance(t, int) and (not self.terms or t > self.terms[-1]):
                self.terms.append(t)
            if l and l not in self.leaders:
                self.leaders.append(l)

    def changes(self):
        return max(0, len(self.terms) - 1)

    def summary(self):
        if not self.terms:
            return "no term reported"
        ids = [l[:12] for l in self.leaders]
        return (f"term {self.terms[0]} at the start, {self.terms[-1]} at the end "
                f"({self.changes()} leadership change(s)); leaders seen in order: "
                f"{', '.join(ids) or 'none'}")


def poll_interval(elapsed):
    """Seconds between two status polls of a convergence `elapsed` s along:
    20 ms, or 0.1 % of the elapsed time when longer (at most 250 ms). The
    bound on the timing error stays 0.1 %, and a 10-minute run does not
    poll three daemons 50 times a second throughout (their /status answers
    and the harness's own CPU come out of the two cores being measured)."""
    return min(0.25, max(0.02, elapsed / 1000))


def proc_cpu(pid):
    """utime + stime of `pid` in seconds (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def proc_kib(pid, key):
    """A `VmXXX:` line of /proc/<pid>/status in KiB (None when gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children_of(pids):
    """`pids` and all their descendants (for tools that fork)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def fmt_kib(k):
    if k is None:
        return "n/a"
    return f"{k / 1024:.1f} MiB" if k >= 1024 else f"{k} KiB"


# ---------------------------------------------------------------- results


class Row:
    """One tool's row: converge seconds (or a string saying why not), CPU
    seconds, peak RSS of the largest process in KiB, and notes."""

    def __init__(self, tool, secs=None, cpu=None, rss_kib=None, why=None):
        self.tool, self.secs, self.cpu, self.rss_kib, self.why = tool, secs, cpu, rss_kib, why


# ---------------------------------------------------------------- syncthing


class Syncthing:
    """Three syncthing instances on 127.0.0.1 sharing one send-receive folder,
    everything outward-facing switched off in config.xml before the first
    start; devices and folder added through the REST config API on top of
    syncthing's own defaults."""

    FOLDER = "scale"

    def __init__(self, root, binary, procs):
        self.base = os.path.join(root, "syncthing")
        self.binary = binary
        self.procs = procs
        self.homes = [os.path.join(self.base, f"s{i}", "home") for i in range(3)]
        self.dirs = [os.path.join(self.base, f"s{i}", "dir") for i in range(3)]
        self.logs = [os.path.join(self.base, f"s{i}", "log") for i in range(3)]
        self.gui = [free_port(socket.SOCK_STREAM) for _ in range(3)]
        self.listen = [free_port(socket.SOCK_STREAM) for _ in range(3)]
        self.keys = [os.urandom(16).hex() for _ in range(3)]
        self.ids = []
        self.ps = []

    def run(self, argv, timeout=60):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
        return r.stdout

    def api(self, i, method, path, body=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gui[i]}{path}", data=data, method=method,
            headers={"X-API-Key": self.keys[i], "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def addr(self, i):
        return f"tcp://127.0.0.1:{self.listen[i]}"

    def version(self):
        try:
            return self.run([self.binary, "--version"], 20).strip()
        except (BenchError, OSError, subprocess.TimeoutExpired):
            return "syncthing ?"

    def setup(self):
        for i in range(3):
            os.makedirs(self.homes[i])
            os.makedirs(os.path.join(self.dirs[i], ".stfolder"))
            self.run([self.binary, "generate", "--home", self.homes[i], "--no-default-folder",
                      "--skip-port-probing"])
            self.ids.append(self.run([self.binary, "serve", "--home", self.homes[i],
                                      "--device-id"]).strip())
            self.edit_config(i)

    def edit_config(self, i):
        path = os.path.join(self.homes[i], "config.xml")
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        gui.set("enabled", "true")
        gui.set("tls", "false")
        gui.find("address").text = f"127.0.0.1:{self.gui[i]}"
        key = gui.find("apikey")
        if key is None:
            key = ET.SubElement(gui, "apikey")
        key.text = self.keys[i]
        opts = root.find("options")
        for el in opts.findall("listenAddress"):
            opts.remove(el)
        ET.SubElement(opts, "listenAddress").text = self.addr(i)
        for tag, val in (("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                         ("relaysEnabled", "false"), ("natEnabled", "false"),
                         ("startBrowser", "false"), ("urAccepted", "-1"),
                         ("autoUpgradeIntervalH", "0"), ("crashReportingEnabled", "false"),
                         ("announceLANAddresses", "false")):
            el = opts.find(tag)
            if el is None:
                el = ET.SubElement(opts, tag)
            el.text = val
        tree.write(path)

    def start(self, timeout):
        env = dict(os.environ, STNORESTART="1", STNOUPGRADE="1", STNODEFAULTFOLDER="1")
        for i in range(3):
            self.ps.append(self.procs.spawn(
                [self.binary, "serve", "--home", self.homes[i], "--no-browser", "--no-restart",
                 "--no-upgrade", "--logflags=3"], self.logs[i], env=env))
        for i in range(3):
            self.wait(lambda i=i: self.api(i, "GET", "/rest/system/ping").get("ping") == "pong",
                      60, f"syncthing s{i} REST")
        for i in range(3):
            for j in range(3):
                if i != j:
                    dev = self.api(i, "GET", "/rest/config/defaults/device")
                    dev.update({"deviceID": self.ids[j], "name": f"s{j}",
                                "addresses": [self.addr(j)]})
                    self.api(i, "POST", "/rest/config/devices", dev)
            fol = self.api(i, "GET", "/rest/config/defaults/folder")
            fol.update({"id": self.FOLDER, "label": self.FOLDER, "path": self.dirs[i],
                        "type": "sendreceive", "fsWatcherEnabled": True,
                        "devices": [{"deviceID": d} for d in self.ids]})
            self.api(i, "POST", "/rest/config/folders", fol)
        self.wait(self.connected, timeout, "syncthing devices to connect")
        self.wait(lambda: self.idle(0), timeout, "syncthing folders idle")

    def check_alive(self):
        for i, p in enumerate(self.ps):
            if p.poll() is not None:
                raise BenchError(f"syncthing s{i} exited with {p.returncode}; log tail:\n"
                                 f"{tail(self.logs[i], 15)}")

    def wait(self, cond, timeout, what):
        end = time.monotonic() + timeout
        last = None
        while True:
            self.check_alive()
            try:
                if cond():
                    return
            except (OSError, ValueError, KeyError) as e:
                last = e
            if time.monotonic() > end:
                raise BenchError(f"timed out after {timeout}s waiting for {what}"
                                 f"{f' (last error: {last})' if last else ''}")
            time.sleep(0.25)

    def connected(self):
        for i in range(3):
            conns = self.api(i, "GET", "/rest/system/connections")["connections"]
            if any(not conns.get(self.ids[j], {}).get("connected") for j in range(3) if j != i):
                return False
        return True

    def idle(self, files):
        for i in range(3):
            s = self.api(i, "GET", f"/rest/db/status?folder={self.FOLDER}", timeout=30)
            if (s.get("state") != "idle" or s.get("needTotalItems", 0) != 0
                    or s.get("localFiles") != files or s.get("globalFiles") != files):
                return False
        return True

    def pids(self):
        return children_of([p.pid for p in self.ps if p.poll() is None])

    def scan(self, i, timeout):
        """Asks instance i to scan its folder now (the call may return only
        once the scan is done: run it in a thread)."""
        try:
            self.api(i, "POST", f"/rest/db/scan?folder={self.FOLDER}", timeout=timeout)
        except (OSError, ValueError):
            pass

    def stop(self):
        for i, p in enumerate(self.ps):
            if p.poll() is None:
                try:
                    self.api(i, "POST", "/rest/system/shutdown", timeout=5)
                except (OSError, ValueError):
                    pass
        end = time.monotonic() + 20
        for p in self.ps:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---------------------------------------------------------------- the bench


class Scale:
    def __init__(self, a):
        self.a = a
        self.root = a.root
        self.procs = Procs(self.root)
        self.stage = os.path.join(self.root, "stage")
        self.src = os.path.join(self.stage, "tree")
        self.rows = {}
        self.lines = []  # rescan / restart / latency lines under the table
        self.notes = []
        self.failed = None  # why filesyncd did not converge
        self.nodes = []
        self.binary = os.path.join(self.root, "bin", "filesyncd")
        os.makedirs(os.path.dirname(self.binary))
        shutil.copy2(a.binary, self.binary)
        h = hashlib.sha256()
        with open(self.binary, "rb") as f:
            for b in iter(lambda: f.read(MIB), b""):
                h.update(b)
        self.bin_sha = h.hexdigest()[:16]
        self.bin_mtime = datetime.datetime.fromtimestamp(
            os.stat(a.binary).st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.tree = Tree(a.files, a.dirs, a.max_size, a.seed)
        if a.verify == "all" or int(a.verify) >= a.files:
            self.sample = range(a.files)
        else:
            self.sample = sorted(random.Random(a.seed + 7).sample(range(a.files), int(a.verify)))

    # -- generation

    def generate(self):
        t = self.tree
        log(f"generating {t.n:,} files ({t.total / MIB:.1f} MiB, sizes 0-{self.a.max_size} B) "
            f"in {t.dirs:,} dirs under {self.src}")
        t0 = now()
        t.generate(self.src)
        os.sync()
        self.notes.append(f"tree generated in {now() - t0:.1f} s (not measured): {t.n:,} files, "
                          f"{t.total:,} B, {t.dirs:,} leaf dirs under {-(-t.dirs // t.fan)} "
                          f"top dirs, seed {t.seed}")

    def verify(self, base, who):
        bad = self.tree.verify(base, self.sample)
        what = "all" if len(self.sample) == self.tree.n else f"a sample of {len(self.sample):,}"
        if bad:
            msg = (f"{who}: {len(bad)} of {what} files differ from the source "
                   f"(first: {', '.join(self.tree.rel(i) for i in bad[:5])})")
            log(msg)
            return msg
        log(f"{who}: contents verified ({what} files, byte for byte)")
        return None

    # -- rsync

    def rsync(self, name, extra):
        """rsync -a [extra] of the tree to two local destinations in parallel."""
        label = "rsync -a" + (" " + " ".join(extra) if extra else "")
        if not shutil.which("rsync"):
            self.rows[name] = Row(label, why="rsync: not installed")
            return
        if "--fsync" in extra:
            h = subprocess.run(["rsync", "--help"], capture_output=True, text=True, timeout=30)
            if "--fsync" not in h.stdout:
                self.rows[name] = Row(label, why="this rsync has no --fsync")
                return
        base = os.path.join(self.root, name)
        dsts = [os.path.join(base, f"dst{k}") for k in (1, 2)]
        for d in dsts:
            os.makedirs(d)
        log(f"{label}: tree to two destinations in parallel")
        # Peak RSS: not wait4's ru_maxrss, which also holds this (large) Python
        # process's high-water mark, inherited through fork + exec. GNU time
        # forks rsync from a small process and prints its %M; without it the
        # rsync processes' VmHWM is sampled every ~50 ms.
        gnu_time = os.path.exists("/usr/bin/time") and subprocess.run(
            ["/usr/bin/time", "--version"], capture_output=True, text=True,
            timeout=10).stderr.startswith("time (GNU")
        rss_files = [os.path.join(base, f"rss{k}") for k in (1, 2)]
        wrap = (lambda k: ["/usr/bin/time", "-f", "%M", "-o", rss_files[k]]) if gnu_time \
            else (lambda k: [])
        os.sync()
        t0 = now()
        ps = [self.procs.spawn([*wrap(k), "rsync", "-a", *extra, self.src + "/", d + "/"],
                               os.path.join(base, f"rsync{k + 1}.log"))
              for k, d in enumerate(dsts)]
        ends, rus = {}, {}
        hwm = {}
        timed_out = False
        last_sample = 0.0
        while len(ends) < 2:
            if not gnu_time and now() - last_sample > 0.05:
                last_sample = now()
                for pid in children_of([p.pid for k, p in enumerate(ps) if k not in ends]):
                    if proc_comm(pid) == "rsync":
                        hwm[pid] = max(hwm.get(pid, 0), proc_kib(pid, "VmHWM") or 0)
            for k, p in enumerate(ps):
                if k in ends:
                    continue
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    ends[k] = now() - t0
                    rus[k] = ru
                    p.returncode = os.waitstatus_to_exitcode(status)
            if len(ends) < 2 and now() - t0 > self.a.timeout:
                timed_out = True
                for k, p in enumerate(ps):
                    if k not in ends:
                        for pid in reversed(children_of([p.pid])):
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except OSError:
                                pass
                        _, status, ru = os.wait4(p.pid, 0)
                        p.returncode = os.waitstatus_to_exitcode(status)
                        ends[k], rus[k] = None, ru
                break
            time.sleep(0.005)
        if gnu_time:
            for f in rss_files:
                try:
                    with open(f) as fh:
                        hwm[f] = int(fh.read().split()[-1])
                except (OSError, ValueError, IndexError):
                    pass
        rss = max(hwm.values()) if hwm else None
        cpu = sum(ru.ru_utime + ru.ru_stime for ru in rus.values())
        if timed_out:
            self.rows[name] = Row(label, why=f"timeout after {self.a.timeout} s", cpu=cpu,
                                  rss_kib=rss)
        elif any(p.returncode != 0 for p in ps):
            errs = "; ".join(f"exit {p.returncode}: {tail(os.path.join(base, f'rsync{k}.log'), 3)}"
                             for k, p in zip((1, 2), ps) if p.returncode != 0)
            errs = " ".join(errs.split())[:300]
            self.rows[name] = Row(label, why=f"FAILED ({errs})", cpu=cpu, rss_kib=rss)
        else:
            secs = max(ends.values())
            log(f"{label}: both destinations in {secs:.2f} s (first {min(ends.values()):.2f} s), "
                f"CPU {cpu:.2f} s")
            bad = [m for m in (self.verify(d, f"{label} dst{k}") for k, d in zip((1, 2), dsts)) if m]
            self.rows[name] = Row(label, secs=secs, cpu=cpu, rss_kib=rss,
                                  why=f"FAILED: {bad[0]}" if bad else None)
            if bad:
                self.rows[name].secs = None
        log(f"{label}: removing the copies")
        rm_tree(base)
        os.sync()

    # -- syncthing

    def syncthing(self):
        label = "syncthing"
        binary = shutil.which("syncthing")
        if not binary:
            self.rows["syncthing"] = Row(label, why="syncthing: not installed")
            return
        st = Syncthing(self.root, binary, self.procs)
        ver = st.version()
        self.rows["syncthing"] = Row(f"syncthing ({ver.split()[1] if len(ver.split()) > 1 else '?'})")
        self.notes.append(f"syncthing: {ver}; 3 instances, TCP on 127.0.0.1, one send-receive "
                          f"folder, syncthing's defaults otherwise; a scan of s0 is requested "
                          f"through REST right after the rename (inside the timing)")
        moved = False
        try:
            log("syncthing: setting up 3 instances")
            st.setup()
            st.start(300)
            pids = st.pids()
            cpu0 = {p: proc_cpu(p) or 0.0 for p in pids}
            dst = os.path.join(st.dirs[0], "tree")
            peers = [os.path.join(st.dirs[k], "tree") for k in (1, 2)]
            arr = Arrival(self.tree, peers)
            log("syncthing: tree renamed into s0's folder")
            os.sync()
            t0 = now()
            os.rename(self.src, dst)
            moved = True
            threading.Thread(target=st.scan, args=(0, self.a.timeout), daemon=True).start()
            secs = None
            while True:
                st.check_alive()
                try:
                    idle = st.idle(self.tree.n)
                except (OSError, ValueError, KeyError):
                    idle = False
                if idle and arr.check():
                    secs = now() - t0
                    break
                if not idle:
                    arr.background()
                if now() - t0 > self.a.timeout:
                    break
                time.sleep(0.1)
            pids = st.pids()
            cpu = sum((proc_cpu(p) or 0.0) - cpu0.get(p, 0.0) for p in pids)
            rss = max((proc_kib(p, "VmHWM") or 0) for p in pids)
            row = self.rows["syncthing"]
            row.cpu, row.rss_kib = cpu, rss
            if secs is None:
                row.why = (f"timeout after {self.a.timeout} s (files missing on s1/s2: "
                           f"{arr.missing()})")
            else:
                row.secs = secs
                log(f"syncthing: converged in {secs:.2f} s, CPU {cpu:.2f} s")
                bad = [m for m in (self.verify(p, f"syncthing s{k}")
                                   for k, p in zip((1, 2), peers)) if m]
                if bad:
                    row.secs, row.why = None, f"FAILED: {bad[0]}"
        except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            log(f"syncthing FAILED: {e}")
            self.rows["syncthing"].why = f"FAILED: {str(e).splitlines()[0][:200]}"
            self.notes.append(f"syncthing failure: {e}")
        finally:
            st.stop()
            if moved:
                os.rename(os.path.join(st.dirs[0], "tree"), self.src)
            log("syncthing: removing its homes and copies")
            rm_tree(st.base)
            os.sync()

    # -- filesyncd

    def start_cluster(self):
        n = [Node(self.root, f"n{i}", self.binary, self.procs) for i in range(3)]
        self.nodes = n
        n[0].start()
        n[0].wait_healthy(120)
        self.joins = [None]
        for j in (1, 2):
            tok = n[0].token()
            self.joins.append((n[0].p2p, tok))
            n[j].start(join=self.joins[j])
            n[j].wait_healthy(180)
        # Formed: `status --json` (the /status body) of every node lists the
        # 3 members and says in_sync on one cluster root.
        end = time.monotonic() + 180
        while True:
            sts = [self.cli_status(x) for x in n]
            if self.settled(sts):
                break
            if time.monotonic() > end:
                raise self.timeout_error("the 3-node cluster to form (status --json)", 180)
            time.sleep(0.25)
        log("cluster up: " + ", ".join(f"{x.name} p2p {x.p2p} api {x.api}" for x in n))
        # WARN/ERROR lines are counted from here on (joins log some on the way).
        self.log_marks = {x.name: os.stat(x.log).st_size for x in n}

    def cli_status(self, x):
        x.check_alive()
        try:
            r = subprocess.run([self.binary, "status", "--api", x.api, "--json"],
                               capture_output=True, text=True, timeout=10)
            return json.loads(r.stdout) if r.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def statuses(self):
        for x in self.nodes:
            x.check_alive()
        return [x.status() for x in self.nodes]

    @staticmethod
    def node_ok(s, root=None):
        """In sync on its cluster root (and on `root` when given), 3 members."""
        return (s is not None and s.get("in_sync") is True
                and s.get("local_root") == s.get("cluster_root")
                and (root is None or s.get("cluster_root") == root)
                and len(s.get("members") or []) == 3)

    def settled(self, sts):
        return (all(self.node_ok(s) for s in sts)
                and len({s.get("cluster_root") for s in sts}) == 1)

    def wait_settled(self, what, timeout):
        end = time.monotonic() + timeout
        while True:
            sts = self.statuses()
            if self.settled(sts):
                return sts[0]["cluster_root"]
            if time.monotonic() > end:
                raise self.timeout_error(what, timeout)
            time.sleep(0.05)

    def timeout_error(self, what, timeout):
        return BenchError(self.timeout_report(f"timed out after {timeout}s waiting for {what}"))

    def timeout_report(self, head):
        sts = [x.status() for x in self.nodes]
        dump = os.path.join(self.root, f"status-{time.strftime('%H%M%S')}.json")
        with open(dump, "w") as f:
            json.dump({x.name: s for x, s in zip(self.nodes, sts)}, f, indent=1)
        lines = [f"{head} (full status: {dump})"]
        for x, s in zip(self.nodes, sts):
            lines.append(f"  {x.name}: {describe(s)}")
        for x in self.nodes:
            lines.append(f"--- {x.log} (tail) ---\n{tail(x.log, 15)}")
        return "\n".join(lines)

    def converge(self):
        """The staged tree renamed into n0's directory in one rename; done
        when n1 and n2 hold every file with its size and all three nodes say
        in_sync on one new cluster root. False when it timed out."""
        n = self.nodes
        t = self.tree
        before = self.wait_settled("the cluster to settle", 300)
        pids = [x.proc.pid for x in n]
        idle_rss = [proc_kib(p, "VmRSS") for p in pids]
        cpu0 = [proc_cpu(p) for p in pids]
        peers = [os.path.join(x.dir, "tree") for x in n[1:]]
        arr = Arrival(t, peers)
        log(f"filesyncd: tree renamed into {n[0].dir}")
        os.sync()
        t0 = now()
        os.rename(self.src, os.path.join(n[0].dir, "tree"))
        status_at = None
        last_log = t0
        lead = Leadership()
        while True:
            try:
                sts = self.statuses()
            except BenchError as e:  # a daemon exited
                self.failed = str(e)
                log(f"filesyncd FAILED: {e}")
                self.rows["filesyncd"] = Row("filesyncd", why="a daemon exited (see below)")
                return False
            lead.see(sts)
            done = self.settled(sts) and sts[0]["cluster_root"] != before
            if done:
                status_at = status_at or now() - t0
                if arr.check():
                    secs = now() - t0
                    break
            else:
                status_at = None
                arr.background()
            if now() - last_log > 30:
                last_log = now()
                log(f"filesyncd: {now() - t0:.0f} s, files not yet seen on n1/n2: "
                    f"{arr.missing()}; " +
                    "; ".join(f"{x.name} {describe(s)}" for x, s in zip(n, sts)))
            if now() - t0 > self.a.timeout:
                self.failed = self.timeout_report(
                    f"filesyncd did not converge within {self.a.timeout} s "
                    f"(files missing on n1/n2: {arr.missing()})")
                log(self.failed)
                self.rows["filesyncd"] = Row(
                    "filesyncd", why=f"did not converge in {self.a.timeout} s",
                    cpu=sum((proc_cpu(p) or 0) - (c or 0) for p, c in zip(pids, cpu0)),
                    rss_kib=max(proc_kib(p, "VmHWM") or 0 for p in pids))
                return False
            time.sleep(poll_interval(now() - t0) if not done else 0.2)
        cpu = [(proc_cpu(p) or 0) - (c or 0) for p, c in zip(pids, cpu0)]
        hwm = [proc_kib(p, "VmHWM") or 0 for p in pids]
        log(f"filesyncd: converged in {secs:.2f} s (all in_sync on the new root at "
            f"{status_at:.2f} s), CPU {sum(cpu):.2f} s")
        row = Row("filesyncd", secs=secs, cpu=sum(cpu), rss_kib=max(hwm))
        self.rows["filesyncd"] = row
        self.notes.append(
            "filesyncd per daemon (CPU-s over the convergence / peak RSS VmHWM since start / "
            "RSS of the idle cluster just before): " + "; ".join(
                f"{x.name} {c:.2f} s / {fmt_kib(h)} / {fmt_kib(r)}"
                for x, c, h, r in zip(n, cpu, hwm, idle_rss)))
        self.notes.append(f"filesyncd: all three in_sync on the new root first seen at "
                          f"{status_at:.2f} s; the check that n1 and n2 hold every file with "
                          f"its size ended at {secs:.2f} s, the figure in the table (status "
                          f"polled every 20 ms, or every 0.1 % of the time elapsed when "
                          f"that is longer, at most 250 ms; file sizes stat'ed 0.1 s per peer every 2 s "
                          f"while waiting, the rest once the status says done)")
        self.notes.append(f"filesyncd leadership over the convergence: {lead.summary()}")
        bad = [m for m in (self.verify(p, f"filesyncd {x.name}")
                           for x, p in zip(n[1:], peers)) if m]
        if bad:
            row.secs, row.why = None, f"FAILED: {bad[0]}"
            self.failed = bad[0]
            return False
        return True

    def rescan(self):
        """A full scan of the unchanged tree on n1: the sync service rescans
        everything on an event for the synced directory itself (a metadata
        change of the root: its times are set here); its debug log line
        `sync step scope=full ms=...` tells when the step ended."""
        x = self.nodes[1]
        root = self.wait_settled("the cluster to settle before the rescan", 300)
        pid = x.proc.pid
        off = os.stat(x.log).st_size
        cpu0 = proc_cpu(pid)
        t0 = now()
        os.utime(x.dir)
        step_ms = wall = None
        saw_running = False
        pos = off
        buf = b""
        while True:
            x.check_alive()
            with open(x.log, "rb") as f:
                f.seek(pos)
                chunk = f.read()
            pos += len(chunk)
            buf += chunk
            lines = buf.split(b"\n")
            buf = lines.pop()
            for ln in lines:
                m = STEP_RE.search(ln.decode("utf-8", "replace"))
                if m and wall is None:
                    wall = now() - t0
                    step_ms = int(m.group(1))
            if wall is not None:
                break
            s = x.status()
            if s is None or not s.get("in_sync"):
                saw_running = True  # a step runs (or the node is too busy to answer)
            waited = now() - t0
            if waited > self.a.timeout or (waited > 15 and not saw_running):
                self.lines.append(
                    f"rescan of the unchanged tree: n/a (no full step logged by n1 within "
                    f"{waited:.0f} s of setting the times of its synced directory; this build "
                    f"may not rescan on that event, or RUST_LOG hides {STEP_TARGET}=debug)")
                return
            time.sleep(0.02)
        cpu = (proc_cpu(pid) or 0) - (cpu0 or 0)
        try:
            after = self.wait_settled("the cluster to settle after the rescan", 300)
            same = "cluster root unchanged" if after == root else \
                "the cluster root CHANGED (the rescan proposed something)"
        except BenchError as e:
            same = f"cluster did not settle afterwards: {str(e).splitlines()[0]}"
        n = self.tree.n
        self.lines.append(
            f"rescan of the unchanged tree ({n:,} files, n1; a full scan triggered by setting the "
            f"times of its synced directory, which the watcher turns into a rescan): "
            f"{step_ms / 1000:.3f} s for the step (n1's own `sync step scope=full ms=` log line"
            f"{f'; {n / (step_ms / 1000):,.0f} files/s' if step_ms else ''}), {wall:.2f} s from "
            f"the trigger to that line, n1 CPU {cpu:.2f} s; {same}")
        log(self.lines[-1])

    def restart(self):
        """n1 stopped with SIGTERM and started again with the same arguments,
        until it reports in_sync on the cluster root again."""
        x = self.nodes[1]
        root = self.wait_settled("the cluster to settle before the restart", 300)
        p = x.proc
        t0 = now()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
            how = f"exit {p.returncode}"
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            how = "did not exit within 60 s of SIGTERM: killed"
        stopped = now() - t0
        t1 = now()
        x.start(join=self.joins[1])
        end = time.monotonic() + self.a.timeout
        while True:
            x.check_alive()
            s = x.status()
            if (self.node_ok(s, root) and (s.get("sync") or {}).get("started")):
                break
            if time.monotonic() > end:
                self.lines.append(f"restart of n1: did not report in_sync within "
                                  f"{self.a.timeout} s of its start ({describe(s)})")
                return
            time.sleep(0.02)
        up = now() - t1
        cpu = proc_cpu(x.proc.pid) or 0
        hwm = proc_kib(x.proc.pid, "VmHWM")
        self.lines.append(
            f"restart of n1 (SIGTERM, then started again with the same arguments): stopped in "
            f"{stopped:.2f} s ({how}); {up:.2f} s from the start to in_sync on the unchanged "
            f"cluster root (startup + full scan of {self.tree.n:,} files), CPU {cpu:.2f} s, "
            f"peak RSS {fmt_kib(hwm)}")
        log(self.lines[-1])

    def latency(self):
        """--tries one-file edits on n0 (temp file outside the tree, renamed
        over a random existing file); time until n1's copy has the bytes."""
        n0, n1 = self.nodes[0], self.nodes[1]
        rng = random.Random(self.a.seed + 1)
        tmp = os.path.join(self.stage, "latency.tmp")
        got = []
        for k in range(self.a.tries):
            self.wait_settled("the cluster to settle between latency tries", 300)
            i = rng.randrange(self.tree.n)
            rel = os.path.join("tree", self.tree.rel(i))
            data = rng.randbytes(rng.randint(1, 1024))
            target = os.path.join(n1.dir, rel)
            t0 = now()
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(n0.dir, rel))
            while True:
                try:
                    with open(target, "rb") as f:
                        if f.read() == data:
                            break
                except OSError:
                    pass
                if now() - t0 > self.a.try_timeout:
                    raise self.timeout_error(f"edit {k + 1} ({rel}) to reach n1",
                                             self.a.try_timeout)
                time.sleep(0.002)
            got.append(now() - t0)
            log(f"latency try {k + 1}/{self.a.tries}: {got[-1] * 1000:.1f} ms ({rel})")
        self.wait_settled("the cluster to settle after the latency tries", 300)
        ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
        self.lines.append(
            f"write-to-visible of a one-file edit inside the {self.tree.n:,}-file tree "
            f"(n0 -> n1, {len(got)} tries, 1-1024 B via temp + rename, n1 polled every 2 ms): "
            f"p50 {ms(pct(got, 50))}, p90 {ms(pct(got, 90))}, max {ms(max(got))}")
        log(self.lines[-1])

    def log_problems(self):
        for x in self.nodes:
            bad = []
            try:
                with open(x.log, "rb") as f:
                    f.seek(getattr(self, "log_marks", {}).get(x.name, 0))
                    for line in f.read().decode("utf-8", "replace").splitlines():
                        if re.search(r"\b(ERROR|WARN)\b|panicked", line):
                            bad.append(line)
            except OSError:
                continue
            first = f", first: {bad[0][:240]}" if bad else ""
            self.notes.append(f"{x.name} log after the cluster formed: {len(bad)} WARN/ERROR "
                              f"lines{first}")

    # -- the run

    def run(self):
        self.generate()
        for b in self.a.baselines:
            if b == "rsync":
                self.rsync("rsync", [])
            elif b == "rsync-fsync":
                self.rsync("rsync-fsync", ["--fsync"])
            elif b == "syncthing":
                self.syncthing()
        log("filesyncd: starting the 3-node cluster")
        self.start_cluster()
        if not self.converge():
            return
        # The restart goes last: the latency tries measure the steady state.
        steps = [("rescan", self.rescan) if "touch" in self.a.rescan else None,
                 ("write-to-visible", self.latency) if self.a.tries > 0 else None,
                 ("restart", self.restart) if "restart" in self.a.rescan else None]
        for name, step in filter(None, steps):
            # A filesyncd failure here is reported (exit 3), the rest still runs.
            try:
                step()
            except BenchError as e:
                msg = str(e)
                log(f"{name} FAILED: {msg}")
                self.lines.append(f"{name}: FAILED: {msg.splitlines()[0]}")
                self.failed = (self.failed + "\n\n" if self.failed else "") + msg

    def close(self):
        self.procs.stop_all()
        # Everything is stopped: nothing for scale.sh's trap to kill.
        try:
            os.remove(self.procs.pidfile)
        except OSError:
            pass

    # -- the report

    def table(self):
        n = self.tree.n

        def secs_of(key):
            r = self.rows.get(key)
            return r.secs if r is not None else None

        base_fsync, base_a = secs_of("rsync-fsync"), secs_of("rsync")
        head = ("tool", "converge s", "files/s", "ratio vs rsync --fsync", "ratio vs rsync -a",
                "CPU-s", "peak RSS per process (max)", "peak RSS per file")
        out = []
        order = ["filesyncd", "rsync-fsync", "rsync", "syncthing"]
        for key in order:
            r = self.rows.get(key)
            if r is None:
                if key != "filesyncd":
                    continue
                r = Row("filesyncd", why="not measured (see the notes)")
            ok = isinstance(r.secs, (int, float))

            def ratio(b):
                return f"{r.secs / b:.2f}" if ok and b else "n/a"

            out.append((
                r.tool,
                f"{r.secs:.2f}" if ok else (r.why or "n/a"),
                f"{n / r.secs:,.0f}" if ok and r.secs > 0 else "n/a",
                ratio(base_fsync), ratio(base_a),
                f"{r.cpu:.2f}" if r.cpu is not None else "n/a",
                fmt_kib(r.rss_kib),
                f"{r.rss_kib * 1024 / n:,.0f} B" if r.rss_kib and n else "n/a",
            ))
        w = [max(len(x[i]) for x in [head, *out]) for i in range(len(head))]
        fmt = lambda row: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(row)) + " |"  # noqa: E731
        return "\n".join([fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|",
                          *map(fmt, out)])

    def header(self, stamp):
        rev = "unknown"
        try:
            rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=20).stdout.strip() or rev
            dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "node",
                                    "p2p", "raft", "chunkstore", "merkle"],
                                   capture_output=True, text=True, timeout=20).stdout.strip()
            if dirty:
                rev += " + uncommitted changes"
        except (OSError, subprocess.SubprocessError):
            pass
        rs = "rsync: not installed"
        if shutil.which("rsync"):
            rs = " ".join(subprocess.run(["rsync", "--version"], capture_output=True, text=True,
                                         timeout=20).stdout.splitlines()[0].split())
        t = self.tree
        return "\n".join([
            f"# filesyncd scale bench, {stamp}",
            "",
            f"- command: {self.a.command}",
            f"- filesyncd binary: {self.a.binary} (built {self.bin_mtime}, sha256 "
            f"{self.bin_sha}..., run from a copy), HEAD at run time {rev}",
            f"- machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}, "
            f"load average at start {self.load0}",
            f"- tree: {t.n:,} files of 0-{self.a.max_size} B ({t.total:,} B in all), "
            f"{t.dirs:,} leaf dirs nested 2 levels, seed {t.seed}; {rs}",
            "- filesyncd: 3 nodes on 127.0.0.1; the staged tree renamed into n0's directory in "
            "one rename; done when n1 and n2 hold every file with its size and all three report "
            "in_sync with local_root = the same new cluster_root",
            "- rsync: `rsync -a [--fsync] <stage>/tree/ <dstN>/` to two local destinations IN "
            "PARALLEL; done when both exit",
            "- ratio = this tool's time / the baseline's time (above 1: slower). CPU-s: user + "
            "system seconds over the scenario, summed over the daemons (filesyncd, syncthing: "
            "/proc/<pid>/stat) or the rsync process trees (wait4 rusage). Peak RSS: the largest "
            "process (daemons: VmHWM since start; rsync: GNU time's %M, else its VmHWM sampled "
            "every 50 ms); per file = that / the file count",
            f"- contents verified byte for byte after each timing, outside it "
            f"({'all files' if len(self.sample) == t.n else f'{len(self.sample):,} sampled files'}"
            f" on each destination)",
        ])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the filesyncd binary (copied first)")
    ap.add_argument("--root", help="an empty temp directory to work in (default: a new one "
                                   "under $BENCH_TMP, default /tmp)")
    ap.add_argument("--out", help="report file (default deploy/bench/results/scale-<UTC>.md)")
    ap.add_argument("--files", type=int, default=100000)
    ap.add_argument("--max-size", type=int, default=4096, help="file sizes 0..this, bytes")
    ap.add_argument("--dirs", type=int, help="leaf directories (default files/100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tries", type=int, default=10, help="write-to-visible tries")
    ap.add_argument("--timeout", type=int, default=1800,
                    help="seconds for each convergence (filesyncd, each baseline), rescan, restart")
    ap.add_argument("--try-timeout", type=int, default=60, help="seconds per latency try")
    ap.add_argument("--baselines", default="rsync,rsync-fsync,syncthing",
                    help="comma list of rsync, rsync-fsync, syncthing ('' for none)")
    ap.add_argument("--rescan", default="touch,restart",
                    help="comma list: touch (full scan triggered on n1), restart (n1 restarted)")
    ap.add_argument("--verify", default=None,
                    help="'all' or how many files to compare byte for byte on each destination "
                         "(default: all up to 100,000 files, else a sample of 100,000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp root after a clean run")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.files < 1 or a.max_size < 0 or a.tries < 0 or a.timeout < 1:
        ap.error("--files >= 1, --max-size >= 0, --tries >= 0, --timeout >= 1")
    a.dirs = a.dirs if a.dirs else max(1, a.files // 100)
    a.baselines = [b for b in a.baselines.split(",") if b]
    if not set(a.baselines) <= {"rsync", "rsync-fsync", "syncthing"}:
        ap.error("--baselines: a comma list of rsync, rsync-fsync, syncthing")
    a.rescan = [b for b in a.rescan.split(",") if b]
    if not set(a.rescan) <= {"touch", "restart"}:
        ap.error("--rescan: a comma list of touch, restart")
    if a.verify is None:
        a.verify = "all" if a.files <= 100000 else "100000"
    if a.verify != "all" and not a.verify.isdigit():
        ap.error("--verify: 'all' or a number")
    if not os.access(a.binary, os.X_OK):
        ap.error(f"no executable filesyncd at {a.binary}")
    a.binary = os.path.abspath(a.binary)
    if a.command is None:
        a.command = "python3 deploy/bench/scale.py " + " ".join(sys.argv[1:])
    return a


def main():
    a = parse_args()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if a.root is None:
        tmp = os.environ.get("BENCH_TMP") or "/tmp"
        import tempfile
        a.root = tempfile.mkdtemp(prefix="filesyncd-scale.", dir=tmp)
    a.root = os.path.abspath(a.root)
    if a.out is None:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        a.out = os.path.join(HERE, "results", f"scale-{stamp}.md")
    # The rescan is timed by the sync service's debug line for each step.
    os.environ["RUST_LOG"] = (os.environ.get("RUST_LOG") or "info") + f",{STEP_TARGET}=debug"
    # SIGTERM (scale.sh's trap) unwinds like Ctrl-C: daemons stopped by pid.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    code = 1
    b = None
    t_start = time.monotonic()
    try:
        b = Scale(a)
        b.load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
        log(f"working in {a.root}")
        try:
            b.run()
            code = 3 if b.failed else 0
        except BenchError as e:
            log(f"FAILED: {e}")
            b.notes.append(f"the run stopped early: {str(e).splitlines()[0]}")
            code = 1
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            import traceback
            traceback.print_exc()
            b.notes.append(f"the run stopped early: {type(e).__name__}: {e}")
            code = 1
        finally:
            b.close()
        if b.nodes:
            b.log_problems()
        b.notes.append(f"total bench time {time.monotonic() - t_start:.0f} s; load average at "
                       f"the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        text = b.header(stamp) + "\n\n" + b.table() + "\n\n"
        text += "".join(f"- {ln}\n" for ln in b.lines) or "- (no rescan / latency figures)\n"
        if b.failed:
            text += f"\nfilesyncd FAILED:\n\n```\n{b.failed}\n```\n"
        text += "\nNotes:\n" + "".join(f"- {ln}\n" for ln in b.notes)
        with open(a.out, "w") as f:
            f.write(text)
        print(text)
        log(f"report written to {a.out}")
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        log(f"stopped (exit {code})")
    finally:
        if b is not None:
            b.close()
        if code in (0, 130, 143) and not a.keep:
            shutil.rmtree(a.root, ignore_errors=True)
        else:
            log(f"kept {a.root} (node logs in n*/log, statuses in status-*.json)")
    return code


if __name__ == "__main__":
    sys.exit(main())
