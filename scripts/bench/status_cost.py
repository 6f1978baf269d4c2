#!/usr/bin/env python3
"""The cost of the status page and the nodes' alive reports (issue 13, item 6).

Runs `mosboot serve` (dhcp = "off", status page on, one open page: its live stream, and its
fetch of the page's live part every 5 s) in a
network namespace, measures its CPU and RSS while idle, then while N simulated nodes (one source
address each, in a second namespace) report every INTERVAL seconds over the TFTP report channel,
exactly as a node's init does. Prints one JSON object and a Markdown line; exit 0 unless the
harness itself fails. Every namespace and process it makes is removed by name/PID at the end.

Usage: status_cost.py --mosboot BIN [--nodes 254] [--interval 5] [--seconds 60] [--json FILE]
"""

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

SERVER = "10.77.1.254"
FIRST = ipaddress.IPv4Address("10.77.0.1")
STATUS = "127.0.0.1:8067"
TICK = os.sysconf("SC_CLK_TCK")


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, **kw)


def sample(pid):
    """(cpu seconds, RSS kB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return cpu, rss


def reporter(nodes, interval, seconds):
    """Inside the client namespace: node i (address FIRST+i, plan node i+2) reports every
    `interval` s, the nodes spread evenly over the interval; answers each DATA with its ACK."""
    socks = []
    for i in range(nodes):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((str(FIRST + i), 0))
        s.setblocking(False)
        socks.append(s)
    mac = lambda i: "02:00:00:00:%02x:%02x" % (i // 256, i % 256)
    start = time.monotonic()
    sent = acked = 0
    nxt = [start + i * interval / nodes for i in range(nodes)]
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        for i in range(nodes):
            if nxt[i] <= now:
                name = f"mosboot-report/alive/{i + 2}/n{i}/{mac(i)}/0.10/12345/{int(now - start)}/on"
                socks[i].sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", (SERVER, 69))
                sent += 1
                nxt[i] += interval
        wait = max(0.0, min(nxt) - time.monotonic())
        ready, _, _ = select.select(socks, [], [], min(wait, 0.05))
        for s in ready:
            try:
                data, peer = s.recvfrom(600)
            except BlockingIOError:
                continue
            if len(data) >= 4 and data[:2] == b"\x00\x03":
                s.sendto(b"\x00\x04" + data[2:4], peer)
                acked += 1
    print(json.dumps({"sent": sent, "answered": acked}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mosboot", required=True)
    ap.add_argument("--nodes", type=int, default=254)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json")
    ap.add_argument("--reporter", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.reporter:
        reporter(a.nodes, a.interval, a.seconds)
        return 0

    tag = str(os.getpid() % 100000)
    srv, cli = f"stc{tag}s", f"stc{tag}c"
    work = tempfile.mkdtemp(prefix="mosboot-status-cost.")
    os.chmod(work, 0o755)
    procs = []
    try:
        sh("ip", "netns", "add", srv)
        sh("ip", "netns", "add", cli)
        for ns in (srv, cli):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", srv, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", srv, "link", "set", "br0", "up")
        sh("ip", "-n", srv, "addr", "add", f"{SERVER}/23", "dev", "br0")
        sh("ip", "link", "add", "eth0", "netns", cli, "type", "veth", "peer", "name", "p0", "netns", srv)
        sh("ip", "-n", srv, "link", "set", "p0", "master", "br0", "up")
        sh("ip", "-n", cli, "link", "set", "eth0", "up")
        batch = "".join(f"addr add {FIRST + i}/23 dev eth0\n" for i in range(a.nodes))
        sh("ip", "-n", cli, "-batch", "-", input=batch.encode())

        os.makedirs(f"{work}/out/tftpboot")
        with open(f"{work}/out/tftpboot/pxelinux.0", "wb") as f:
            f.write(b"x" * 1000)
        with open(f"{work}/cluster.toml", "w") as f:
            f.write(
                f'[cluster]\nname = "bench-status"\ninterface = "br0"\nserver = "{SERVER}/23"\n'
                f'pool = "10.77.0.1-10.77.1.253"\nhostname = "mosix"\nlease_time = "1h"\ndhcp = "off"\n\n'
                f'[serve]\nstatus = "{STATUS}"\n'
            )
        log = open(f"{work}/serve.log", "wb")
        serve = subprocess.Popen(
            ["ip", "netns", "exec", srv, a.mosboot, "-c", f"{work}/cluster.toml", "serve",
             "--state", f"{work}/state", "--out", f"{work}/out"],
            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(serve)
        deadline = time.time() + 20
        while b"status page on" not in open(f"{work}/serve.log", "rb").read():
            if time.time() > deadline or serve.poll() is not None:
                sys.exit("status_cost: serve did not start: " + open(f"{work}/serve.log").read())
            time.sleep(0.1)
        stream = subprocess.Popen(
            ["ip", "netns", "exec", srv, "curl", "-sN", f"http://{STATUS}/api/stream"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        procs.append(stream)
        if os.environ.get("STATUS_COST_NO_PAGE") == "1":
            stream.terminate()
        # An open page: besides its stream, it fetches the live part every 5 s (its timer).
        page = subprocess.Popen(
            ["ip", "netns", "exec", srv, "sh", "-c",
             f"while :; do curl -s -o /dev/null http://{STATUS}/fragment; sleep 5; done"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        procs.append(page)
        if os.environ.get("STATUS_COST_NO_PAGE") == "1":
            page.terminate()

        time.sleep(3)
        idle_window = 20.0
        c0, r0 = sample(serve.pid)
        time.sleep(idle_window)
        c1, r_idle = sample(serve.pid)
        idle_cpu = (c1 - c0) / idle_window

        warm = 2 * a.interval
        rep = subprocess.Popen(
            ["ip", "netns", "exec", cli, sys.executable, os.path.abspath(__file__), "--mosboot", a.mosboot,
             "--reporter", "--nodes", str(a.nodes), "--interval", str(a.interval),
             "--seconds", str(warm + a.seconds)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        procs.append(rep)
        time.sleep(warm)
        c2, _ = sample(serve.pid)
        t2 = time.monotonic()
        rss_max = 0
        while time.monotonic() - t2 < a.seconds:
            time.sleep(1)
            rss_max = max(rss_max, sample(serve.pid)[1])
        c3, r_busy = sample(serve.pid)
        busy_cpu = (c3 - c2) / (time.monotonic() - t2)
        out, _ = rep.communicate(timeout=60)
        counts = json.loads(out.decode() or "{}")
        api = subprocess.run(["ip", "netns", "exec", srv, "curl", "-s", f"http://{STATUS}/api/nodes"],
                             capture_output=True, check=True).stdout
        up = sum(1 for r in json.loads(api) if r["state"] == "up" and r["role"] != "server")

        res = {
            "nodes": a.nodes, "interval_s": a.interval, "window_s": a.seconds,
            "idle_cpu_pct": round(100 * idle_cpu, 3), "busy_cpu_pct": round(100 * busy_cpu, 3),
            "extra_cpu_pct": round(100 * (busy_cpu - idle_cpu), 3),
            "rss_idle_kb": r_idle, "rss_busy_kb": r_busy, "rss_max_kb": rss_max,
            "extra_rss_kb": rss_max - r_idle, "reports_sent": counts.get("sent"),
            "reports_answered": counts.get("answered"), "nodes_up_on_page": up,
        }
        refused = [l for l in open(f"{work}/serve.log", errors="replace") if "refused" in l]
        res["refusal_log_lines"] = len(refused)
        for line in refused[-3:]:
            print("serve: " + line.rstrip(), file=sys.stderr)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
        ok = res["extra_cpu_pct"] < 1.0 and res["extra_rss_kb"] < 10 * 1024 and up == a.nodes
        print(f"| Status page + alive reports | {a.nodes} nodes every {a.interval:g} s | "
              f"{res['extra_cpu_pct']:.2f} % of a core extra, {res['extra_rss_kb'] / 1024:.1f} MB extra RSS "
              f"({up}/{a.nodes} up on the page) | goal < 1 %, < 10 MB: {'met' if ok else 'MISSED'} |")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        for ns in (srv, cli):
            sh("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)
        sh("rm", "-rf", work, check=False)


if __name__ == "__main__":
    sys.exit(main())
