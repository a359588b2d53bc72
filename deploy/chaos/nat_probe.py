#!/usr/bin/env python3
"""UDP helpers of the NAT labs (deploy/chaos/nat.sh, upnp.sh) that
udp_probe.py lacks: a fixed source port, what source a server sees, a
simultaneous open through two NATs, a NAT-PMP public-address request.

    nat_probe.py whoami-server PORT SECONDS
    nat_probe.py whoami LPORT HOST:PORT
    nat_probe.py punch PORT PEER_PUBLIC_IP SECONDS
    nat_probe.py send-from SPORT HOST:PORT COUNT
    nat_probe.py natpmp GATEWAY
"""
import socket, struct, sys, time
mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if mode == "whoami-server":      # PORT SECONDS: answer each datagram with its source
    s.bind(("0.0.0.0", int(sys.argv[2])))
    print("READY", file=sys.stderr, flush=True)
    end = time.monotonic() + float(sys.argv[3])
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            d, src = s.recvfrom(2048)
        except OSError:
            break
        s.sendto(("%s:%d" % src).encode(), src)
elif mode == "whoami":           # LPORT HOST:PORT: print the source the server saw
    s.bind(("0.0.0.0", int(sys.argv[2])))
    host, _, port = sys.argv[3].rpartition(":")
    s.settimeout(0.2)
    for _ in range(15):
        s.sendto(b"whoami", (host, int(port)))
        try:
            print(s.recvfrom(2048)[0].decode())
            sys.exit(0)
        except OSError:
            pass
    sys.exit(1)
elif mode == "punch":            # PORT PEER_PUBLIC_IP SECONDS: both sides send at once
    port, peer = int(sys.argv[2]), sys.argv[3]
    s.bind(("0.0.0.0", port))
    s.settimeout(0.05)
    got, src, end = 0, None, time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:
        try:
            s.sendto(b"fsdpunch", (peer, port))
        except OSError:
            pass
        try:
            d, a = s.recvfrom(2048)
            if d == b"fsdpunch":
                got, src = got + 1, a
        except OSError:
            pass
        time.sleep(0.01)
    print(got, "%s:%d" % src if src else "-")
elif mode == "send-from":        # SPORT HOST:PORT COUNT: datagrams from a fixed port
    s.bind(("0.0.0.0", int(sys.argv[2])))
    host, _, port = sys.argv[3].rpartition(":")
    for i in range(int(sys.argv[4])):
        s.sendto(b"fsdupnp %d" % i, (host, int(port)))
        time.sleep(0.02)
elif mode == "natpmp":           # GATEWAY: NAT-PMP public address request (RFC 6886)
    s.settimeout(0.25)
    for _ in range(8):
        s.sendto(b"\x00\x00", (sys.argv[2], 5351))
        try:
            d, _ = s.recvfrom(64)
        except OSError:
            continue
        if len(d) >= 12 and d[1] == 128:
            _, _, code, epoch = struct.unpack("!BBHI", d[:8])
            print("result %d, external address %s (epoch %d s)" % (code, socket.inet_ntoa(d[8:12]), epoch))
        else:
            print("an unexpected answer of %d bytes: %s" % (len(d), d.hex()))
        sys.exit(0)
    print("no answer")
    sys.exit(1)
else:
    sys.exit("nat_probe.py: unknown mode %s" % mode)
