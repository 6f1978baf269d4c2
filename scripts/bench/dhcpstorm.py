#!/usr/bin/env python3
"""DHCP client swarm for `make bench`: many distinct MACs run full DORA from one interface.

Used where perfdhcp cannot say which client got which lease:
  * avalanche: N clients start at once (like a lab powering up); reports time to all bound and
    per-client latency;
  * load: clients start at a fixed rate and every ACK is appended (and flushed) to --acked as
    `mac ip`, so the harness can kill -9 the server mid-run and compare with its lease file.

Each client sets the broadcast flag, so every server answers to 255.255.255.255:68, which this
one socket (bound to port 68 on --iface) receives. A client retransmits after --retry seconds.
Prints one JSON object on stdout when done (or on SIGTERM).
"""

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

SO_BINDTODEVICE = 25
SO_RCVBUFFORCE = 33
MAGIC = b"\x63\x82\x53\x63"


def mac_of(base, i):
    return bytes([0x02, base, (i >> 24) & 0xFF, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def mac_text(mac):
    return ":".join(f"{b:02x}" for b in mac)


def packet(kind, xid, mac, requested=None, server=None):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                       b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, mac + b"\0" * 10,
                       b"\0" * 64, b"\0" * 128)
    opts = bytes([53, 1, kind]) + bytes([55, 5, 1, 3, 6, 12, 15]) + bytes([61, 7, 1]) + mac
    if requested:
        opts += bytes([50, 4]) + requested
    if server:
        opts += bytes([54, 4]) + server
    body = head + MAGIC + opts + b"\xff"
    return body + b"\0" * max(0, 300 - len(body))


def parse(data):
    """Returns (xid, msg type, yiaddr bytes, server id bytes) or None for anything odd."""
    if len(data) < 240 or data[0] != 2 or data[236:240] != MAGIC:
        return None
    xid = struct.unpack("!I", data[4:8])[0]
    yiaddr = data[16:20]
    kind, server = None, None
    i = 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        ln = data[i + 1]
        val = data[i + 2:i + 2 + ln]
        if code == 53 and ln == 1:
            kind = val[0]
        elif code == 54 and ln == 4:
            server = val
        i += 2 + ln
    return xid, kind, yiaddr, server


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--clients", type=int, default=250)
    ap.add_argument("--rate", type=float, default=0, help="client starts per second (0: all at once)")
    ap.add_argument("--duration", type=float, default=30, help="stop after this many seconds")
    ap.add_argument("--retry", type=float, default=1.0)
    ap.add_argument("--mac-base", type=lambda v: int(v, 0), default=0x42)
    ap.add_argument("--acked", help="append `mac ip` per ACK here (flushed at once)")
    a = ap.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, a.iface.encode())
    # A burst of 250 replies overflows the default buffer (rmem_max) before Python drains it;
    # the client, not the server, would then be the one dropping. FORCE needs root; fall back.
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    dest = ("255.255.255.255", 67)
    acked_out = open(a.acked, "a", buffering=1) if a.acked else None

    xid0 = random.randrange(1 << 20, 1 << 30)
    # per client: [state, start, last_send, yiaddr, server, tries]; state 0 idle 1 discover 2 request 3 bound
    st = [[0, 0.0, 0.0, None, None, 0] for _ in range(a.clients)]
    latencies = []
    counts = {"discover": 0, "request": 0, "offer": 0, "ack": 0, "nak": 0}
    timers = []  # (due, client)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))

    def send(i, now):
        s = st[i]
        mac = mac_of(a.mac_base, i)
        if s[0] == 1:
            pkt = packet(1, xid0 + i, mac)
            counts["discover"] += 1
        else:
            pkt = packet(3, xid0 + i, mac, s[3], s[4])
            counts["request"] += 1
        try:
            sock.sendto(pkt, dest)
        except (BlockingIOError, OSError):
            pass
        s[2] = now
        s[5] += 1
        heapq.heappush(timers, (now + a.retry, i, s[5]))

    t0 = time.monotonic()
    started = 0
    bound = 0
    last_ack = t0
    while not stop[0]:
        now = time.monotonic()
        if now - t0 > a.duration or bound == a.clients:
            break
        # start clients due by now
        due_starts = a.clients if a.rate <= 0 else min(a.clients, int((now - t0) * a.rate) + 1)
        while started < due_starts:
            st[started][0] = 1
            st[started][1] = now
            send(started, now)
            started += 1
        # retransmit clients whose timer fired without progress
        while timers and timers[0][0] <= now:
            _, i, tries = heapq.heappop(timers)
            s = st[i]
            if s[0] in (1, 2) and s[5] == tries:
                if s[0] == 2 and tries > 6:
                    s[0] = 1  # start over, as a real client does after a lost REQUEST exchange
                send(i, now)
        wait = 0.05
        if timers:
            wait = max(0.0, min(wait, timers[0][0] - now))
        if a.rate > 0 and started < a.clients:
            wait = min(wait, 1.0 / a.rate)
        r, _, _ = select.select([sock], [], [], wait)
        if not r:
            continue
        for _ in range(256):
            try:
                data = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                break
            p = parse(data)
            if not p:
                continue
            xid, kind, yiaddr, server = p
            i = xid - xid0
            if not 0 <= i < a.clients:
                continue
            s = st[i]
            now = time.monotonic()
            if kind == 2 and s[0] == 1:
                counts["offer"] += 1
                s[0], s[3], s[4] = 2, yiaddr, server
                send(i, now)
            elif kind == 5 and s[0] == 2:
                counts["ack"] += 1
                s[0] = 3
                bound += 1
                last_ack = now
                latencies.append(now - s[1])
                if acked_out:
                    acked_out.write(f"{mac_text(mac_of(a.mac_base, i))} {socket.inet_ntoa(yiaddr)}\n")
            elif kind == 6 and s[0] == 2:
                counts["nak"] += 1
                s[0] = 1
                send(i, now)
    latencies.sort()
    span = (last_ack - t0) if bound else 0.0
    out = {
        "clients": a.clients, "started": started, "bound": bound, "failed": started - bound,
        "seconds_to_last_ack": round(span, 3),
        "leases_per_s": round(bound / span, 1) if span > 0 else 0.0,
        "lat_avg_ms": round(1000 * sum(latencies) / len(latencies), 2) if latencies else None,
        "lat_p50_ms": round(1000 * latencies[len(latencies) // 2], 2) if latencies else None,
        "lat_max_ms": round(1000 * latencies[-1], 2) if latencies else None,
        **counts,
    }
    print(json.dumps(out))
    sys.stdout.flush()
    if acked_out:
        acked_out.close()


if __name__ == "__main__":
    main()
