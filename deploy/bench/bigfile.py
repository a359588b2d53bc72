#!/usr/bin/env python3
"""One file much larger than each daemon's memory, synced with bounded memory.

Started by bigfile.sh (which picks the binary, makes the temp root and cleans
up after a killed run); see the "Big file, bounded memory" section of
deploy/bench/README.md.

Each of the 3 daemons runs in a memory cgroup of its own whose limit
(--mem MiB) is far below the file (--size MiB), swap off. Page cache is
charged to the cgroup too but is reclaimable: a daemon that streams the file
fits, one that holds it (or a large part of it) in memory is OOM-killed.

Layout under ROOT (a fresh temporary directory):
  n1/ n2/ n3/    {dir, data, log} of the three nodes (n1 forms the cluster)
  stage/         the random file, written here, then renamed into n1/dir
  pids           every process started (bigfile.sh's trap kills what is left)
  cgroups        every cgroup made, parents first (the trap removes them)

Exit: 0 synced within the bounds; 1 a daemon died or was OOM-killed, the
file differs, the sync timed out or a VmHWM is over --rss-bound (the temp
root is kept); 2 no usable memory cgroup, too little disk, bad usage.
"""

import argparse
import errno
import os
import shutil
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402  (bench.py is the sibling harness)
    MIB, BenchError, Node, Procs, describe, nbytes, proc_times, sha256_file, tail,
    write_random)


class UsageError(Exception):
    """The run cannot take place here (exit 2): no cgroup, no disk."""


def log(msg):
    print(f"[bigfile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def read(path):
    with open(path) as f:
        return f.read()


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def mib(v):
    return "n/a" if v is None else f"{v / MIB:.1f} MiB"


def proc_kib(pid, key):
    """A `key:  N kB` line of /proc/<pid>/status in bytes, None when gone."""
    try:
        for line in read(f"/proc/{pid}/status").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- cgroups


def mounts():
    """(mount point, fs type, super options) of every cgroup mount."""
    out = []
    for line in read("/proc/self/mountinfo").splitlines():
        pre, post = line.split(" - ", 1)
        fstype, _src, sopts = post.split(" ", 2)
        if fstype in ("cgroup", "cgroup2"):
            out.append((pre.split(" ")[4], fstype, sopts.strip().split(",")))
    return out


class Cgroups:
    """One memory cgroup per daemon under a parent group of this run.

    cgroup v2 (preferred): the parent is made at the top of the cgroup2
    mount with `+memory` in its subtree_control (a non-root group that holds
    processes could not delegate it); each child gets memory.max and
    memory.swap.max = 0. Read back: memory.peak, memory.events (oom,
    oom_kill), memory.stat (anon, file).

    cgroup v1, only when no cgroup2 mount has the memory controller (a
    hybrid host, where it is bound to the v1 hierarchy): the parent is made
    inside this process's own v1 memory group (nested: whatever limits the
    caller already has still hold), each child gets memory.limit_in_bytes
    and memory.memsw.limit_in_bytes (no swap) equal to it. Read back:
    memory.max_usage_in_bytes (the peak), memory.oom_control (oom_kill),
    memory.stat (rss, cache).
    Neither: UsageError, the run does not start."""

    def __init__(self, root, tag, names, limit):
        self.record = os.path.join(root, "cgroups")
        self.limit = limit
        self.made = []
        v2 = [m for m in mounts() if m[1] == "cgroup2"]
        v2mem = [m[0] for m in v2
                 if "memory" in read(os.path.join(m[0], "cgroup.controllers")).split()]
        v1mem = [m[0] for m in mounts() if m[1] == "cgroup" and "memory" in m[2]]
        if v2mem:
            self.version, top = 2, v2mem[0]
        elif v1mem:
            self.version = 1
            own = next((ln.split(":", 2)[2] for ln in read("/proc/self/cgroup").splitlines()
                        if "memory" in ln.split(":", 2)[1].split(",")), "/")
            top = v1mem[0] + own.rstrip("/")
        else:
            where = ", ".join(f"{m[0]} ({m[1]})" for m in mounts()) or "none"
            raise UsageError(
                "no memory cgroup: no cgroup2 mount offers the memory controller and no v1 "
                f"memory hierarchy is mounted (cgroup mounts: {where})")
        if not os.access(top, os.W_OK):
            raise UsageError(f"cgroup v{self.version} directory {top} is not writable "
                             f"(run as root, or delegate it to this user)")
        self.where = top
        self.parent = os.path.join(top, tag)
        try:
            self.mkdir(self.parent)
            if self.version == 2:
                ctl = os.path.join(top, "cgroup.subtree_control")
                if "memory" not in read(ctl).split():
                    write(ctl, "+memory")
                write(os.path.join(self.parent, "cgroup.subtree_control"), "+memory")
            self.paths = {}
            for n in names:
                p = os.path.join(self.parent, n)
                self.mkdir(p)
                self.set_limit(p)
                self.paths[n] = p
        except OSError as e:
            self.remove()
            raise UsageError(f"cannot set up memory cgroups under {top}: {e}")

    def mkdir(self, p):
        os.mkdir(p)
        self.made.append(p)
        with open(self.record, "a") as f:
            f.write(p + "\n")

    def set_limit(self, p):
        if self.version == 2:
            write(os.path.join(p, "memory.max"), self.limit)
            if os.path.exists(os.path.join(p, "memory.swap.max")):
                write(os.path.join(p, "memory.swap.max"), 0)
            got = read(os.path.join(p, "memory.max")).strip()
        else:
            write(os.path.join(p, "memory.limit_in_bytes"), self.limit)
            if os.path.exists(os.path.join(p, "memory.memsw.limit_in_bytes")):
                write(os.path.join(p, "memory.memsw.limit_in_bytes"), self.limit)
            got = read(os.path.join(p, "memory.limit_in_bytes")).strip()
        if int(got) != self.limit:
            raise OSError(errno.EINVAL, f"{p}: limit reads {got}, not {self.limit}")

    def label(self):
        if self.version == 2:
            return f"cgroup v2 under {self.where}: memory.max, memory.swap.max = 0"
        return (f"cgroup v1 memory controller, nested in this process's group {self.where} "
                f"(no cgroup2 mount has the memory controller): memory.limit_in_bytes, "
                f"memory.memsw.limit_in_bytes = the same (no swap)")

    def joiner(self, name):
        """A preexec_fn: the child joins the group before it execs, so that
        the daemon never allocates outside it."""
        procs = os.path.join(self.paths[name], "cgroup.procs")

        def join():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        return join

    def holds(self, name, pid):
        try:
            return str(pid) in read(os.path.join(self.paths[name], "cgroup.procs")).split()
        except OSError:
            return False

    def stat(self, name):
        """{anon, file} bytes charged now."""
        keys = {"anon": "anon", "file": "file"} if self.version == 2 else {
            "anon": "rss", "file": "cache"}
        got = {}
        try:
            for line in read(os.path.join(self.paths[name], "memory.stat")).splitlines():
                k, v = line.split()
                for mine, theirs in keys.items():
                    if k == theirs:
                        got[mine] = int(v)
        except OSError:
            pass
        return got

    def usage(self, name):
        f = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        try:
            return int(read(os.path.join(self.paths[name], f)))
        except OSError:
            return None

    def figures(self, name):
        """(peak bytes or None, oom events, oom kills, limit hits or None)."""
        p = self.paths[name]
        peak = oom = kills = hits = None
        try:
            if self.version == 2:
                if os.path.exists(os.path.join(p, "memory.peak")):
                    peak = int(read(os.path.join(p, "memory.peak")))
                ev = dict(ln.split() for ln in read(os.path.join(p, "memory.events")).splitlines())
                oom, kills, hits = int(ev.get("oom", 0)), int(ev.get("oom_kill", 0)), int(
                    ev.get("max", 0))
            else:
                peak = int(read(os.path.join(p, "memory.max_usage_in_bytes")))
                oc = dict(ln.split() for ln in read(os.path.join(p, "memory.oom_control"))
                          .splitlines())
                kills = int(oc.get("oom_kill", 0))
                # No hits: v1's memory.failcnt stayed 0 on kernel 6.18 while
                # `cat` of 600 MB through a 64 MiB group peaked at the limit.
        except (OSError, ValueError):
            pass
        return peak, oom, kills, hits

    def remove(self):
        """rmdir, children first; a group whose last process just exited
        can stay busy for a moment."""
        left = []
        for p in reversed(self.made):
            end = time.monotonic() + 10
            while os.path.isdir(p):
                try:
                    os.rmdir(p)
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > end:
                        left.append(f"{p}: {e}")
                        break
                    time.sleep(0.2)
        self.made = []
        if not left:
            try:
                os.remove(self.record)
            except OSError:
                pass
        return left


class CgroupSpawner:
    """What Node.start calls to spawn: Procs.spawn with the daemon joining
    its cgroup between fork and exec."""

    def __init__(self, procs, cgroups, name):
        self.procs, self.cg, self.name = procs, cgroups, name

    def spawn(self, argv, logpath, env=None):
        import subprocess
        logf = open(logpath, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, env=env,
                             preexec_fn=self.cg.joiner(self.name))
        logf.close()
        self.procs.procs.append(p)
        with open(self.procs.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p


# ---------------------------------------------------------------- the run


class Run:
    def __init__(self, a):
        self.a = a
        self.root = a.root
        self.size = a.size * MIB
        self.procs = Procs(self.root)
        self.names = ["n1", "n2", "n3"]
        self.cg = Cgroups(self.root, f"fsd-bigfile-{os.getpid()}", self.names, a.mem * MIB)
        self.nodes = []
        for n in self.names:
            x = Node(self.root, n, a.binary, CgroupSpawner(self.procs, self.cg, n))
            self.nodes.append(x)
        self.samples = {n: {"rss": 0, "anon": 0, "file": 0, "usage": 0} for n in self.names}
        self.dead = {}
        self.idle = {}
        self.cpu = None
        self.log_marks = {}

    # -- watching

    def sample(self):
        for x in self.nodes:
            s = self.samples[x.name]
            if x.proc is not None and x.proc.poll() is None:
                s["rss"] = max(s["rss"], proc_kib(x.proc.pid, "VmRSS") or 0)
            st = self.cg.stat(x.name)
            s["anon"] = max(s["anon"], st.get("anon", 0))
            s["file"] = max(s["file"], st.get("file", 0))
            s["usage"] = max(s["usage"], self.cg.usage(x.name) or 0)

    def check_alive(self):
        for x in self.nodes:
            if x.proc is not None and x.proc.poll() is not None and x.name not in self.dead:
                rc = x.proc.returncode
                why = f"killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
                self.dead[x.name] = why
                raise BenchError(f"{x.name} {why} (cgroup oom_kill count "
                                 f"{self.cg.figures(x.name)[2]}); log tail:\n{tail(x.log, 15)}")

    def statuses(self):
        self.check_alive()
        self.sample()
        return [x.status() for x in self.nodes]

    @staticmethod
    def ok(s, root=None):
        return (s is not None and s.get("in_sync") is True
                and s.get("local_root") == s.get("cluster_root")
                and (root is None or s.get("cluster_root") == root)
                and len(s.get("members") or []) == 3)

    def timeout(self, what, secs):
        lines = [f"timed out after {secs}s waiting for {what}"]
        for x in self.nodes:
            lines.append(f"  {x.name}: {describe(x.status())}")
        for x in self.nodes:
            lines.append(f"--- {x.log} (tail) ---\n{tail(x.log, 15)}")
        return BenchError("\n".join(lines))

    # -- steps

    def start_cluster(self):
        n = self.nodes
        n[0].start()
        self.wait_healthy(n[0])
        for j in (1, 2):
            tok = n[0].token()
            n[j].start(join=(n[0].p2p, tok))
            self.wait_healthy(n[j])
        for x in n:
            if not self.cg.holds(x.name, x.proc.pid):
                raise BenchError(f"{x.name} (pid {x.proc.pid}) is not in its cgroup "
                                 f"{self.cg.paths[x.name]}")
        end = time.monotonic() + 180
        while True:
            sts = self.statuses()
            if all(self.ok(s) for s in sts) and len({s["cluster_root"] for s in sts}) == 1:
                self.root0 = sts[0]["cluster_root"]
                break
            if time.monotonic() > end:
                raise self.timeout("the 3-node cluster to form", 180)
            time.sleep(0.25)
        log("cluster up: " + ", ".join(
            f"{x.name} pid {x.proc.pid} p2p {x.p2p} api {x.api}" for x in n))
        self.idle = {x.name: proc_kib(x.proc.pid, "VmHWM") for x in n}
        # WARN/ERROR lines are counted from here on (joins log some on the way).
        self.log_marks = {x.name: file_size(x.log) for x in n}

    def wait_healthy(self, x):
        end = time.monotonic() + 180
        while True:
            self.check_alive()
            try:
                if x.get("/healthz", timeout=2).startswith(b"ok"):
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise BenchError(f"{x.name} /healthz not ok after 180s; log tail:\n{tail(x.log)}")
            time.sleep(0.2)

    def stage(self):
        """The random file, written outside the synced dirs, flushed, and
        dropped from the page cache: n1 then reads it from disk, in its
        cgroup, instead of finding it cached and charged to this harness."""
        d = os.path.join(self.root, "stage")
        os.makedirs(d)
        path = os.path.join(d, "big.bin")
        log(f"writing {self.a.size} MiB of random data to {path}")
        t0 = time.monotonic()
        self.sha = write_random([path], self.size)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        log(f"written in {time.monotonic() - t0:.1f} s, sha256 {self.sha[:16]}...")
        return path

    def sync_file(self, staged):
        n1 = self.nodes[0]
        target = os.path.join(n1.dir, "big.bin")
        self.cpu0 = {x.name: proc_times(x.proc.pid)[0] for x in self.nodes}
        t0 = time.monotonic()
        os.rename(staged, target)
        log("renamed into n1/dir; waiting for both peers")
        done, root = {}, None
        next_note = t0 + 30
        while len(done) < 2:
            sts = self.statuses()
            s0 = sts[0]
            if root is None and s0 and s0.get("cluster_root") != self.root0 and self.ok(s0):
                root = s0["cluster_root"]
                self.t_commit = time.monotonic() - t0
                log(f"n1 committed the new root after {self.t_commit:.1f} s")
            if root is not None:
                for j in (1, 2):
                    x = self.nodes[j]
                    if x.name not in done and self.ok(sts[j], root) and file_size(
                            os.path.join(x.dir, "big.bin")) == self.size:
                        done[x.name] = time.monotonic() - t0
                        log(f"{x.name} in sync on the new root after {done[x.name]:.1f} s")
            now = time.monotonic()
            if now - t0 > self.a.timeout:
                raise self.timeout(f"big.bin on both peers (done: {sorted(done)})",
                                   self.a.timeout)
            if now > next_note:
                next_note = now + 30
                log(f"{now - t0:.0f} s: " + "; ".join(
                    f"{x.name} rss {mib(proc_kib(x.proc.pid, 'VmRSS'))} cg "
                    f"{mib(self.cg.usage(x.name))} {describe(s)[:90]}"
                    for x, s in zip(self.nodes, sts)))
            time.sleep(0.2)
        self.t_done = done
        self.cpu = {x.name: proc_times(x.proc.pid)[0] - self.cpu0[x.name] for x in self.nodes}
        for x in self.nodes[1:]:
            log(f"sha256 of {x.name}/dir/big.bin")
            got = sha256_file(os.path.join(x.dir, "big.bin"))
            if got != self.sha:
                raise BenchError(f"{x.name}: big.bin differs from the source (sha256 {got} "
                                 f"!= {self.sha}) although it reports the new root in sync")
        self.check_alive()

    # -- report

    def report(self, error=None):
        a = self.a
        bound = a.rss_bound * MIB
        rows = []
        over = []
        for x in self.nodes:
            pid = x.proc.pid if x.proc else None
            alive = x.proc is not None and x.proc.poll() is None
            hwm = proc_kib(pid, "VmHWM") if alive else None
            peak, oom, kills, hits = self.cg.figures(x.name)
            s = self.samples[x.name]
            if hwm is not None and hwm > bound:
                over.append(f"{x.name} VmHWM {mib(hwm)} > --rss-bound {a.rss_bound} MiB")
            if kills:
                over.append(f"{x.name}: {kills} OOM kill(s) in its cgroup")
            if not alive and x.proc is not None:
                over.append(f"{x.name} is not running: {self.dead.get(x.name) or 'exited'}")
            rows.append((
                x.name, "origin" if x is self.nodes[0] else "peer",
                "yes" if alive else "NO", mib(hwm), mib(self.idle.get(x.name)),
                mib(peak), mib(s["anon"]), mib(s["file"]),
                "n/a" if oom is None else str(oom), "n/a" if kills is None else str(kills),
                "n/a" if hits is None else f"{hits:,}",
                f"{self.cpu[x.name]:.1f}" if self.cpu else "n/a"))
        head = ("node", "role", "alive", "VmHWM", "VmHWM before the file", "cgroup peak",
                "max anon (sampled)", "max page cache (sampled)", "oom", "oom_kill",
                "limit hits", "CPU-s")
        lines = [f"filesyncd: one {a.size} MiB random file, 3 daemons on loopback, each in a "
                 f"memory cgroup limited to {a.mem} MiB ({self.cg.label()}); "
                 f"bound checked: VmHWM <= {a.rss_bound} MiB per daemon.", ""]
        if hasattr(self, "t_done") and len(self.t_done) == 2:
            both = max(self.t_done.values())
            lines.append(f"- n1 committed the new root after {self.t_commit:.1f} s; "
                         + ", ".join(f"{k} in sync after {v:.1f} s"
                                     for k, v in sorted(self.t_done.items()))
                         + f"; {a.size / both:.1f} MiB/s to both peers; sha256 equal on both.")
        lines += ["", table(head, rows), ""]
        lines.append(
            "VmHWM: peak RSS of the daemon since it started (/proc/PID/status; file-backed "
            "pages of the binary included); cgroup peak: "
            + ("memory.peak" if self.cg.version == 2 else "memory.max_usage_in_bytes")
            + " (page cache included, so it sits near the limit when the cache fills it); "
            "max anon / page cache: largest values of the cgroup's memory.stat seen every "
            "~0.2 s; limit hits: "
            + ("memory.events max (reclaim at the limit, not a failure)" if self.cg.version == 2
               else "n/a in v1 (memory.failcnt does not count on this kernel); oom: n/a in v1, "
                    "which counts only kills")
            + ".")
        if self.log_marks:
            lines.append("")
        for x in self.nodes:
            if x.name in self.log_marks:
                lines.append(f"- {x.name} log after the cluster formed: "
                             f"{log_problems(x.log, self.log_marks[x.name])}")
        if error:
            lines += ["", f"FAILED: {error}"]
        elif over:
            lines += ["", "FAILED: " + "; ".join(over)]
        else:
            lines += ["", f"PASSED: the file synced with every daemon's VmHWM under "
                          f"{a.rss_bound} MiB and no OOM kill."]
        text = "\n".join(lines) + "\n"
        return text, bool(error or over)

    def close(self):
        self.procs.stop_all()
        left = self.cg.remove()
        for x in left:
            log(f"WARNING: cgroup not removed: {x}")
        try:
            os.remove(self.procs.pidfile)
        except OSError:
            pass


def log_problems(path, start):
    """How many WARN/ERROR/panic lines `path` has after byte `start`, and the first."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            bad = [ln for ln in f.read().decode("utf-8", "replace").splitlines()
                   if " WARN " in ln or " ERROR " in ln or "panicked" in ln]
    except OSError as e:
        return f"unreadable ({e})"
    return f"{len(bad)} WARN/ERROR lines, first: {bad[0][:200]}" if bad else "no WARN/ERROR lines"


def file_size(p):
    try:
        return os.stat(p).st_size
    except OSError:
        return -1


def table(head, rows):
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|",
                      *map(fmt, rows)])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--size", type=int, default=3072, help="file size, MiB")
    ap.add_argument("--mem", type=int, default=256, help="memory limit of each daemon's cgroup, MiB")
    ap.add_argument("--rss-bound", type=int, default=200, help="max VmHWM per daemon, MiB")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds for the sync")
    ap.add_argument("--out", help="also write the report here")
    ap.add_argument("--command", default="", help="the command line, for the report")
    a = ap.parse_args()
    if a.size <= 0 or a.mem <= 0 or a.rss_bound <= 0:
        ap.error("--size, --mem and --rss-bound must be positive")
    if a.size < 4 * a.mem:
        log(f"WARNING: --size {a.size} MiB is not much larger than --mem {a.mem} MiB")
    free = shutil.disk_usage(a.root).free
    if free < 4 * a.size * MIB:
        print(f"bigfile: {nbytes(free)} free under {a.root}, need about 4 x --size "
              f"({4 * a.size} MiB): the staged file, the peers' copies and the chunk stores",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        r = Run(a)
    except UsageError as e:
        print(f"bigfile: {e}", file=sys.stderr)
        return 2
    error = None
    t0 = time.monotonic()
    try:
        r.start_cluster()
        staged = r.stage()
        r.sync_file(staged)
    except BenchError as e:
        error = str(e)
        log(f"FAILED: {error}")
    try:
        r.sample()
        text, failed = r.report(error.splitlines()[0] if error else None)
    finally:
        r.close()
    head = (f"command: `{a.command}`\n" if a.command else "") + (
        f"binary: {a.binary}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; total "
        f"{time.monotonic() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.2f}\n\n")
    text = head + text
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    if error:
        print(error, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
