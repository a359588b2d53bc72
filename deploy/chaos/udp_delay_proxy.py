#!/usr/bin/env python3
"""Delay, reorder and drop packets in user space (this kernel has no netem).

Two modes share one scheduler:

  link --a IF_A --b IF_B   a transparent two-port relay: every Ethernet frame
                           received on IF_A is sent out of IF_B after its delay
                           and the other way round (AF_PACKET sockets, root).
                           delay.sh puts it between a node's veth and its
                           bridge, so nodes keep their addresses and peers'
                           membership records stay valid: this is what the
                           chaos suite uses.
  udp --listen H:P --upstream H:P
                           a plain UDP proxy: each client address gets its own
                           upstream socket; replies go back through the
                           listening socket. For tests that choose the
                           address a peer dials (no root needed).

Common options: --delay MS (base one-way delay), --jitter MS (uniform +-),
--reorder P (a packet is held back an extra 2*delay+jitter with
probability P, so later ones overtake it), --loss P (dropped with
probability P), --seed N. Jitter larger than the gap between packets
reorders as well. Delays are per direction.

Prints "READY" on stdout once its sockets are bound, and a counter line
("forwarded=N dropped=M") on SIGUSR1 and at exit. Standard library only.
"""

import argparse
import heapq
import itertools
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65536


class Scheduler:
    """Holds (due, seq, send, payload) entries; seq keeps ties in arrival order."""

    def __init__(self, args: argparse.Namespace):
        self.delay = args.delay / 1000.0
        self.jitter = args.jitter / 1000.0
        self.reorder = args.reorder
        self.loss = args.loss
        self.rng = random.Random(args.seed)
        self.heap: list = []
        self.seq = itertools.count()
        self.forwarded = 0
        self.dropped = 0

    def push(self, send, payload: bytes, now: float) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        d = self.delay
        if self.jitter:
            d += self.rng.uniform(-self.jitter, self.jitter)
        if self.reorder and self.rng.random() < self.reorder:
            d += 2 * self.delay + self.jitter
        heapq.heappush(self.heap, (now + max(d, 0.0), next(self.seq), send, payload))

    def timeout(self, now: float):
        if not self.heap:
            return None
        return max(self.heap[0][0] - now, 0.0)

    def flush(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now:
            _, _, send, payload = heapq.heappop(self.heap)
            try:
                send(payload)
                self.forwarded += 1
            except OSError:
                self.dropped += 1

    def counters(self) -> str:
        return f"forwarded={self.forwarded} dropped={self.dropped} queued={len(self.heap)}"


def packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def run_link(args: argparse.Namespace, sched: Scheduler) -> None:
    a = packet_socket(args.a)
    b = packet_socket(args.b)
    peer = {a: b, b: a}
    print("READY", flush=True)
    while True:
        now = time.monotonic()
        ready, _, _ = select.select([a, b], [], [], sched.timeout(now))
        now = time.monotonic()
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:  # our own transmissions
                    continue
                sched.push(peer[s].send, frame, now)
        sched.flush(time.monotonic())


def hostport(v: str):
    h, _, p = v.rpartition(":")
    return (h or "0.0.0.0", int(p))


def run_udp(args: argparse.Namespace, sched: Scheduler) -> None:
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(hostport(args.listen))
    front.setblocking(False)
    upstream = hostport(args.upstream)
    by_client: dict = {}
    client_of: dict = {}
    print("READY", flush=True)
    while True:
        now = time.monotonic()
        ready, _, _ = select.select([front, *client_of], [], [], sched.timeout(now))
        now = time.monotonic()
        for s in ready:
            while True:
                try:
                    data, src = s.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if s is front:
                    up = by_client.get(src)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.connect(upstream)
                        up.setblocking(False)
                        by_client[src] = up
                        client_of[up] = src
                    sched.push(up.send, data, now)
                else:
                    client = client_of[s]
                    sched.push(lambda d, c=client: front.sendto(d, c), data, now)
        sched.flush(time.monotonic())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay", type=float, default=100.0, help="one-way delay, ms")
    p.add_argument("--jitter", type=float, default=0.0, help="uniform +- ms")
    p.add_argument("--reorder", type=float, default=0.0, help="probability of an extra hold-back")
    p.add_argument("--loss", type=float, default=0.0, help="drop probability")
    p.add_argument("--seed", type=int, default=None)
    sub = p.add_subparsers(dest="mode", required=True)
    link = sub.add_parser("link")
    link.add_argument("--a", required=True, help="interface A")
    link.add_argument("--b", required=True, help="interface B")
    udp = sub.add_parser("udp")
    udp.add_argument("--listen", required=True)
    udp.add_argument("--upstream", required=True)
    args = p.parse_args()
    for name in ("reorder", "loss"):
        v = getattr(args, name)
        if not 0.0 <= v <= 1.0:
            p.error(f"--{name} must be within 0..1")
    if args.delay < 0 or args.jitter < 0:
        p.error("--delay and --jitter must not be negative")
    sched = Scheduler(args)
    signal.signal(signal.SIGUSR1, lambda *_: print(sched.counters(), flush=True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        (run_link if args.mode == "link" else run_udp)(args, sched)
    except KeyboardInterrupt:
        pass
    finally:
        print(sched.counters(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
