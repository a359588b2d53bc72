#!/usr/bin/env python3
"""UDP reachability probe used to verify that a fault is in place.

  udp_probe.py recv --port P [--timeout S] [--expect N]
                                               print one line per datagram
                                               ("<nonce> <seq>"); says READY
                                               on stderr once bound; exits
                                               after N datagrams or S seconds
  udp_probe.py send --to HOST:P [--to HOST:P ...] --nonce N [--count C] [--interval S]
  udp_probe.py echo --port P [--timeout S]     send every datagram back
  udp_probe.py rtt --to HOST:P [--count C] [--interval S]
                                               through an echo server: prints
                                               "sent= got= p50_ms= max_ms=
                                               reordered=" (reordered: replies
                                               that came after a later one)

Each datagram carries a nonce so stray traffic is never counted. Python 3
standard library only (runs in any namespace with the host's python3).
"""

import argparse
import select
import socket
import sys
import time


def recv(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", args.port))
    print("READY", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.timeout
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            break
        line = data.decode("ascii", "replace").strip()
        if line.startswith("fsdprobe "):
            print(line[len("fsdprobe "):], flush=True)
            got += 1
            if args.expect and got >= args.expect:
                break
    return 0 if got else 1


def send(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for seq in range(args.count):
        for to in args.to:
            host, _, port = to.rpartition(":")
            try:
                s.sendto(f"fsdprobe {args.nonce} {seq}".encode(), (host, int(port)))
            except OSError as e:  # an OUTPUT drop answers EPERM; keep going
                print(f"send {seq} to {to}: {e}", file=sys.stderr)
        time.sleep(args.interval)
    return 0


def echo(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", args.port))
    print("READY", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.timeout
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            break
        s.sendto(data, src)
    return 0


def rtt(args: argparse.Namespace) -> int:
    host, _, port = args.to.rpartition(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    s.setblocking(False)
    sent: dict = {}
    rtts: list = []
    order: list = []

    def drain() -> None:
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return
            seq = int(data.split()[1])
            if seq in sent and seq not in order:
                rtts.append(time.monotonic() - sent[seq])
                order.append(seq)

    def wait_until(t: float) -> None:
        while (left := t - time.monotonic()) > 0 and len(order) < args.count:
            if select.select([s], [], [], left)[0]:
                drain()

    for seq in range(args.count):
        sent[seq] = time.monotonic()
        s.send(f"rtt {seq}".encode())
        wait_until(sent[seq] + args.interval)
    wait_until(time.monotonic() + args.wait)
    rtts.sort()
    reordered = sum(1 for a, b in zip(order, order[1:]) if b < a)
    p50 = rtts[len(rtts) // 2] * 1000 if rtts else float("nan")
    mx = rtts[-1] * 1000 if rtts else float("nan")
    print(f"sent={args.count} got={len(order)} p50_ms={p50:.1f} max_ms={mx:.1f} reordered={reordered}")
    return 0 if order else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--timeout", type=float, default=2.0)
    r.add_argument("--expect", type=int, default=0)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True, action="append", help="repeat for several targets")
    s.add_argument("--nonce", required=True)
    s.add_argument("--count", type=int, default=5)
    s.add_argument("--interval", type=float, default=0.02)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--timeout", type=float, default=10.0)
    t = sub.add_parser("rtt")
    t.add_argument("--to", required=True)
    t.add_argument("--count", type=int, default=20)
    t.add_argument("--interval", type=float, default=0.01)
    t.add_argument("--wait", type=float, default=3.0)
    args = p.parse_args()
    return {"recv": recv, "send": send, "echo": echo, "rtt": rtt}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
