#!/usr/bin/env python3
"""`make bench`: mosboot side by side with Kea, dnsmasq and tftpd-hpa, in one run.

Every server and client runs inside network namespaces this script creates and deletes; every
process it starts is ended by its PID. Results go to a JSON file; report.py turns them into
BENCHMARKS.md. A series that cannot run is recorded as skipped with the reason: benchmarks
measure, they never fail the build (exit non-zero only when the harness itself breaks).

Usage: bench.py --mosboot BIN [--delayfwd BIN] [--out results.json] [--series dhcp,tftp,...]
"""

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SERVER_IP = "10.50.255.254"
CLIENT_IP = "10.50.255.253"
PREFIX = 16
POOL = ("10.50.0.1", "10.50.31.254")  # 8188 addresses, 32 map lines
SERVER_CPU = "0"
LOAD_CPU = "1"
TFTP_FILE = "bench3m.bin"
TFTP_SIZE = 3 * 1024 * 1024
# Where the http series' serve listens ([serve] http in run.sh's http.toml).
HTTP_PORT = 8080


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


class Harness:
    def __init__(self, args):
        self.args = args
        self.tag = f"mbb{os.getpid()}"
        self.srv = self.tag + "s"
        self.cli = self.tag + "c"
        self.tmp = tempfile.mkdtemp(prefix="mosboot-bench.")
        os.chmod(self.tmp, 0o755)
        self.procs = []  # Popen objects we started (killed by PID on cleanup)
        self.namespaces = []
        self.cgroups = set()
        self.fwd = None
        self.results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        atexit.register(self.cleanup)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum, _frame):
        log(f"signal {signum}: cleaning up")
        self.cleanup()
        os._exit(2)

    # ---- processes -------------------------------------------------------------------------
    def spawn(self, ns, cmd, name, cpu=None, env=None):
        """Starts cmd in namespace ns (pinned to cpu); its stdout/stderr go to tmp/name.log."""
        full = ["ip", "netns", "exec", ns]
        if cpu is not None:
            full += ["taskset", "-c", cpu]
        full += cmd
        out = open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)
        out.close()
        p.bench_name = name
        self.procs.append(p)
        p.cgroup = self.cgroup_for(name, p.pid)
        return p

    def cgroup_for(self, name, pid):
        """A cpuacct cgroup per server, so CPU time of forked children (tftpd-hpa forks per
        transfer and does not leave it in cutime) is counted too."""
        for base in ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"):
            if os.path.exists(os.path.join(base, "cpuacct.usage")):
                path = os.path.join(base, f"{self.tag}-{name}")
                try:
                    os.makedirs(path, exist_ok=True)
                    with open(os.path.join(path, "cgroup.procs"), "w") as f:
                        f.write(str(pid))
                except OSError:
                    return None
                self.cgroups.add(path)
                return path
        return None

    def stop(self, p, sig=signal.SIGTERM, grace=3.0):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)
        self.reap_cgroup(p)

    def reap_cgroup(self, p):
        """Ends what the server forked and left behind (tftpd-hpa's per-transfer children keep
        waiting for clients after the parent is gone), by PID, from the server's own cgroup."""
        cg = getattr(p, "cgroup", None)
        if not cg:
            return
        for _ in range(20):
            try:
                pids = [int(x) for x in open(os.path.join(cg, "cgroup.procs")).read().split()]
            except (OSError, ValueError):
                return
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def cleanup(self):
        for p in list(self.procs):
            try:
                self.stop(p, grace=2.0)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        if self.fwd is not None:
            self.stop(self.fwd, grace=1.0)
            self.fwd = None
        for ns in list(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self.namespaces.remove(ns)
        for cg in list(self.cgroups):
            try:
                os.rmdir(cg)
                self.cgroups.discard(cg)
            except OSError:
                pass
        if os.path.isdir(self.tmp) and not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def cpu_seconds(self, p):
        """CPU seconds of a server: its cgroup's total, else utime+stime(+reaped children)."""
        if getattr(p, "cgroup", None):
            try:
                with open(os.path.join(p.cgroup, "cpuacct.usage")) as f:
                    return int(f.read()) / 1e9
            except (OSError, ValueError):
                pass
        pid = p.pid
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick

    # ---- network ---------------------------------------------------------------------------
    def netns_up(self):
        for ns in (self.srv, self.cli):
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def link(self, kind):
        """(Re)creates the server<->client link: 'veth' (direct) or 'delay' (taps + forwarder)."""
        self.unlink()
        if kind == "veth":
            run(["ip", "-n", self.srv, "link", "add", "vs", "type", "veth", "peer", "name", "vc",
                 "netns", self.cli])
        else:
            run(["ip", "-n", self.srv, "tuntap", "add", "dev", "vs", "mode", "tap"])
            run(["ip", "-n", self.cli, "tuntap", "add", "dev", "vc", "mode", "tap"])
        run(["ip", "-n", self.srv, "addr", "add", f"{SERVER_IP}/{PREFIX}", "dev", "vs"])
        run(["ip", "-n", self.cli, "addr", "add", f"{CLIENT_IP}/{PREFIX}", "dev", "vc"])
        run(["ip", "-n", self.srv, "link", "set", "vs", "up"])
        run(["ip", "-n", self.cli, "link", "set", "vc", "up"])
        if kind == "delay":
            out = open(os.path.join(self.tmp, "delayfwd.log"), "ab")
            self.fwd = subprocess.Popen(
                ["taskset", "-c", LOAD_CPU, self.args.delayfwd, "--a", f"{self.srv}:vs",
                 "--b", f"{self.cli}:vc", "--delay-us", str(self.args.delay_us)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            out.close()
            time.sleep(0.5)
            if self.fwd.poll() is not None:
                raise RuntimeError("delay forwarder exited; see delayfwd.log")
        time.sleep(0.3)

    def unlink(self):
        if self.fwd is not None:
            self.stop(self.fwd, grace=1.0)
            self.fwd = None
        run(["ip", "-n", self.srv, "link", "del", "vs"], check=False)
        run(["ip", "-n", self.cli, "link", "del", "vc"], check=False)

    def loss(self, permille):
        for ns in (self.srv, self.cli):
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "mbbloss"],
                           capture_output=True)
            if permille:
                rules = ("table inet mbbloss {\n chain pre {\n"
                         "  type filter hook prerouting priority -300; policy accept;\n"
                         f"  meta l4proto udp numgen random mod 1000 < {permille} drop\n }}\n}}\n")
                subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                               check=True, capture_output=True)

    def rate_limit(self, rate):
        subprocess.run(["ip", "netns", "exec", self.srv, "tc", "qdisc", "del", "dev", "vs", "root"],
                       capture_output=True)
        if rate:
            run(["ip", "netns", "exec", self.srv, "tc", "qdisc", "add", "dev", "vs", "root", "tbf",
                 "rate", rate, "burst", "64kb", "latency", "400ms"])

    def wait_port(self, p, proto_port, timeout=10.0):
        """Waits until something in the server namespace listens on UDP port `proto_port`."""
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            if p.poll() is not None:
                return False
            out = subprocess.run(["ip", "netns", "exec", self.srv, "ss", "-uln"],
                                 capture_output=True, text=True).stdout
            if re.search(rf":{proto_port}\s", out):
                return True
            time.sleep(0.1)
        return False

    def tail(self, name, n=15):
        try:
            with open(os.path.join(self.tmp, name + ".log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# ---- servers -----------------------------------------------------------------------------------
class Server:
    """One server under test: start() in the server namespace, lease file for the loss test."""

    def __init__(self, h, kind, variant="", ip=SERVER_IP, binary=None):
        self.h, self.kind, self.variant = h, kind, variant
        self.name = kind + (f"-{variant}" if variant else "")
        self.dir = os.path.join(h.tmp, "srv-" + self.name)
        self.p = None
        self.ip = ip  # where its TFTP server listens (the DHCP series uses SERVER_IP only)
        self.binary = binary or h.args.mosboot

    def fresh(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o777)

    def start(self, dhcp=True, tftp=False, dhcp_toml=None):
        h = self.h
        if not os.path.isdir(self.dir):
            self.fresh()
        if self.kind == "mosboot":
            cfg = (dhcp_toml or h.args.dhcp_toml) if dhcp else h.args.tftp_toml
            if not dhcp and self.ip != SERVER_IP:
                # the same cluster served from another address of the link
                cfg = os.path.join(h.tmp, f"tftp-{self.name}.toml")
                with open(h.args.tftp_toml) as src, open(cfg, "w") as dst:
                    dst.write(src.read().replace(f'"{SERVER_IP}/', f'"{self.ip}/'))
            cmd = [self.binary, "-c", cfg, "serve", "--out", h.args.outtree, "--state",
                   os.path.join(self.dir, "state"), "--force"]
            self.p = h.spawn(h.srv, cmd, self.name, SERVER_CPU)
            port = 67 if dhcp else 69
        elif self.kind == "kea":
            conf = os.path.join(self.dir, "kea.json")
            with open(conf, "w") as f:
                json.dump(kea_config(self.dir), f)
            env = dict(os.environ, KEA_PIDFILE_DIR=self.dir, KEA_LOCKFILE_DIR=self.dir)
            self.p = h.spawn(h.srv, ["kea-dhcp4", "-c", conf], self.name, SERVER_CPU, env=env)
            port = 67
        elif self.kind == "dnsmasq":
            cmd = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=vs",
                   "--bind-interfaces", f"--dhcp-range={POOL[0]},{POOL[1]},255.255.0.0,12h",
                   f"--dhcp-leasefile={self.dir}/dnsmasq.leases", f"--pid-file={self.dir}/pid",
                   f"--log-facility={self.dir}/dnsmasq.log", "--user=root"]
            if self.variant == "tuned":
                # the default ping check stalls each OFFER and lease-max defaults to 1000
                cmd += ["--no-ping", "--dhcp-lease-max=100000"]
            self.p = h.spawn(h.srv, cmd, self.name, SERVER_CPU)
            port = 67
        elif self.kind == "tftpd-hpa":
            cmd = ["in.tftpd", "-L", "-s", h.args.tftproot, "-a", f"{self.ip}:69", "-u", "root"]
            self.p = h.spawn(h.srv, cmd, self.name, SERVER_CPU)
            port = 69
        else:
            raise ValueError(self.kind)
        if not h.wait_port(self.p, port, 15):
            msg = h.tail(self.name)
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {msg.strip()[-600:]}")
        if self.kind == "mosboot" and dhcp:
            time.sleep(0.3)

    def stop(self, sig=signal.SIGTERM):
        if self.p is not None:
            self.h.stop(self.p, sig)
            self.p = None

    def leases_on_disk(self):
        """{mac: ip} of bound leases in the server's own lease file."""
        out = {}
        if self.kind == "mosboot":
            path = os.path.join(self.dir, "state", "leases")
            if os.path.exists(path):
                for line in open(path, errors="replace"):
                    f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
                    if "mac" in f and "ip" in f:
                        if f.get("state") == "bound":
                            out[f["mac"].lower()] = f["ip"]
                        else:
                            out.pop(f["mac"].lower(), None)
        elif self.kind == "kea":
            for name in ("leases4.csv.2", "leases4.csv.1", "leases4.csv"):
                path = os.path.join(self.dir, name)
                if not os.path.exists(path):
                    continue
                for line in open(path, errors="replace"):
                    parts = line.strip().split(",")
                    if len(parts) > 9 and parts[0] != "address":
                        if parts[9] == "0" and parts[3] != "0":
                            out[parts[1].lower()] = parts[0]
        elif self.kind == "dnsmasq":
            path = os.path.join(self.dir, "dnsmasq.leases")
            if os.path.exists(path):
                for line in open(path, errors="replace"):
                    parts = line.split()
                    if len(parts) >= 3:
                        out[parts[1].lower()] = parts[2]
        return out


def kea_config(d):
    return {"Dhcp4": {
        "interfaces-config": {"interfaces": ["vs"], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": os.path.join(d, "leases4.csv")},
        "valid-lifetime": 43200,
        "subnet4": [{"id": 1, "subnet": f"10.50.0.0/{PREFIX}",
                     "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": os.path.join(d, "kea.log")}]}],
    }}


# ---- DHCP series -------------------------------------------------------------------------------
def perfdhcp_blocks(text, heading):
    """("DO" or "RA", text) for each exchange type's block under `***<heading>: ...***`."""
    for b in re.split(r"\*{3}" + heading + ": ", text)[1:]:
        key = "DO" if b.startswith("DISCOVER-OFFER") else "RA" if b.startswith("REQUEST-ACK") else None
        if key:
            yield key, b


def parse_perfdhcp(text):
    """Pulls the DO and RA exchange statistics out of perfdhcp's final report."""
    res = {}
    for key, b in perfdhcp_blocks(text, "Statistics for"):

        def num(label, cast=float):
            m = re.search(rf"{label}\s*:\s*([0-9.]+)", b)
            return cast(m.group(1)) if m else None
        res[key] = {"sent": num("sent packets", int), "received": num("received packets", int),
                    "drops": num("drops", int), "avg_ms": num("avg delay"), "max_ms": num("max delay"),
                    "min_ms": num("min delay")}
    m = re.search(r"[Rr]ate:\s*([0-9.]+)", text)
    if m:
        res["rate_line"] = float(m.group(1))
    return res


def environment(h):
    """What else the machine is doing right now: the 1-minute load average and the fsync latency
    of the filesystem holding the lease files (the machine is shared; both explain outliers)."""
    try:
        load1 = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        load1 = None
    path = os.path.join(h.tmp, "fsync-probe")
    lat = []
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        for _ in range(5):
            os.write(fd, b"x" * 128)
            t = time.monotonic()
            os.fsync(fd)
            lat.append((time.monotonic() - t) * 1000)
        os.close(fd)
    except OSError:
        pass
    return {"load1": load1, "fsync_ms_max": round(max(lat), 2) if lat else None,
            "fsync_ms_med": round(sorted(lat)[len(lat) // 2], 2) if lat else None}


def parse_rate(r):
    """A DHCP step's offered rate: a number, or "max" (perfdhcp without -r: as fast as it can)."""
    return 0 if r == "max" else int(r)


def perfdhcp_toml(h):
    """The DHCP cluster file with mosboot's new-MAC flood limit raised to perfdhcp's client
    count (`[serve] dhcp_new_mac_burst`/`dhcp_new_macs_per_second`): perfdhcp -R N is a lab of N
    PCs switched on at once, which a site of that size configures alike. With the default
    (256, then 20/s) a run with more clients would measure the limit, not the server; Kea and
    dnsmasq have no such limit. Written once; the avalanche and loss series keep the default."""
    path = os.path.join(h.tmp, "dhcp-perfdhcp.toml")
    if not os.path.exists(path):
        n = max(h.args.dhcp_clients, 256)
        keys = f"dhcp_new_mac_burst = {n}\ndhcp_new_macs_per_second = {n}\n"
        text = open(h.args.dhcp_toml).read()
        if re.search(r"^\[serve\]\s*$", text, re.M):
            text = re.sub(r"^\[serve\]\s*$", "[serve]\n" + keys.rstrip("\n"), text, count=1, flags=re.M)
        else:
            text += "\n[serve]\n" + keys
        with open(path, "w") as f:
            f.write(text)
    return path


def perfdhcp_step(h, s, rate, period, timers=False):
    """One perfdhcp run against server `s` (started fresh here, stopped after): a result row.
    `rate` 0 means no -r (perfdhcp initiates exchanges as fast as it can); `timers` asks perfdhcp
    for every exchange's times (-x t) and adds the 99th percentiles."""
    env = environment(h)
    s.fresh()
    try:
        s.start(dhcp=True, dhcp_toml=perfdhcp_toml(h))
    except RuntimeError as e:
        log(str(e))
        return {"server": s.name, "rate": rate, "error": str(e)[:300]}
    cpu0 = h.cpu_seconds(s.p)
    drops0 = (udp_rcvbuf_errors(h.srv), udp_rcvbuf_errors(h.cli))
    cmd = ["ip", "netns", "exec", h.cli, "taskset", "-c", LOAD_CPU, "perfdhcp", "-4", "-l", "vc",
           "-p", str(period), "-R", str(h.args.dhcp_clients), "-W", "1000000"]
    if rate:
        cmd += ["-r", str(rate)]
    if timers:
        cmd += ["-x", "t"]
    penv = dict(os.environ)
    if h.args.client_rcvbuf_shim:
        penv["LD_PRELOAD"] = h.args.client_rcvbuf_shim  # see scripts/bench/rcvbuf.c
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=period + 30, env=penv)
    wall = time.monotonic() - t0
    cpu1 = h.cpu_seconds(s.p)
    drops1 = (udp_rcvbuf_errors(h.srv), udp_rcvbuf_errors(h.cli))
    alive = s.p.poll() is None
    s.stop()
    with open(os.path.join(s.dir, f"perfdhcp-{rate or 'max'}.txt"), "w") as f:
        f.write(p.stdout + p.stderr)  # kept with --keep
    st = parse_perfdhcp(p.stdout)
    row = {"server": s.name, "rate": rate, "period_s": period, "wall_s": round(wall, 2),
           "server_alive": alive, **env}
    if None not in drops0 and None not in drops1:
        # the server's socket, and perfdhcp's (a starved client loses answers too)
        row["rcvbuf_drops"] = drops1[0] - drops0[0]
        row["client_rcvbuf_drops"] = drops1[1] - drops0[1]
    if "RA" in st and "DO" in st:
        do, ra = st["DO"], st["RA"]
        acks = ra["received"] or 0
        row.update({
            "discovers": do["sent"], "offers": do["received"], "requests": ra["sent"],
            "acks": acks, "leases_per_s": round(acks / period, 1),
            "offered_per_s": round((do["sent"] or 0) / period, 1),
            # drop % of the whole DORA: discovers that never ended in an ACK
            "drop_pct": round(100.0 * (1 - acks / do["sent"]), 2) if do["sent"] else None,
            "do_avg_ms": do["avg_ms"], "do_max_ms": do["max_ms"],
            "ra_avg_ms": ra["avg_ms"], "ra_max_ms": ra["max_ms"],
            "server_cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
        })
        if timers:
            row.update(exchange_percentiles(p.stdout))
    else:
        row["error"] = ("perfdhcp gave no statistics: " + (p.stderr or p.stdout)[-300:]).strip()
    shown = rate or "max"
    log(f"dhcp {s.name} @{shown}/s: {row.get('leases_per_s')} leases/s, drop {row.get('drop_pct')} %")
    return row


def exchange_percentiles(text):
    """p99 of the DISCOVER-OFFER and REQUEST-ACK times from perfdhcp's -x t listing (one line
    per exchange, `sent / received: S / R` in seconds, per exchange type)."""
    out = {}
    for key, b in perfdhcp_blocks(text, "Timestamps for packets"):
        key = key.lower()
        pairs = re.findall(r"sent / received:\s*([0-9.]+)\s*/\s*([0-9.]+)", b)
        delays = sorted((float(r) - float(t)) * 1000 for t, r in pairs)
        if delays:
            out[f"{key}_p99_ms"] = round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3)
            out[f"{key}_exchanges"] = len(delays)
    return out


def dhcp_series(h, servers):
    rates = [parse_rate(r) for r in h.args.dhcp_rates.split(",")]
    period = h.args.dhcp_period
    rows = []
    # rate outside, server inside: load from other users of the machine then hits every server
    # at about the same time instead of spoiling one server's whole curve
    for _ in range(h.args.dhcp_repeats):
        for rate in rates:
            for s in servers:
                if s.kind == "dnsmasq" and (rate == 0 or rate > h.args.dhcp_dnsmasq_max):
                    continue  # it fails at the lowest step already; higher ones only cost time
                rows.append(perfdhcp_step(h, s, rate, period))
    return rows


class DiskLoad:
    """Another process writing and fsyncing a file in the filesystem that holds the lease files,
    as fast as it can (a busy disk: every fsync forces a journal commit that other writers wait
    behind). Counts its fsyncs and their worst latency."""

    def __init__(self, h):
        self.h = h
        self.path = os.path.join(h.tmp, "disk-load")
        self.stats = os.path.join(h.tmp, "disk-load.json")
        code = ("import os,sys,time,json,signal\n"
                "p,st=sys.argv[1],sys.argv[2]\n"
                "fd=os.open(p,os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o600);n=0;worst=0.0;buf=b'x'*65536\n"
                "def end(*_):\n"
                " json.dump({'fsyncs':n,'fsync_ms_max':round(worst*1000,2)},open(st,'w'));os._exit(0)\n"
                "signal.signal(signal.SIGTERM,end)\n"
                "while True:\n"
                " os.write(fd,buf)\n"
                " t=time.monotonic();os.fsync(fd);worst=max(worst,time.monotonic()-t);n+=1\n"
                " if n%256==0: os.ftruncate(fd,0);os.lseek(fd,0,0)\n")
        self.cmd = ["python3", "-c", code, self.path, self.stats]
        self.p = None

    def __enter__(self):
        self.p = subprocess.Popen(self.cmd, start_new_session=True)
        self.h.procs.append(self.p)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.h.stop(self.p)
        self.p = None

    def result(self):
        try:
            return json.load(open(self.stats))
        except (OSError, ValueError):
            return {}


def dhcp_disk_series(h, servers):
    """The DHCP steps while another process fsyncs the same disk continuously: OFFERs must not
    wait for the disk (their latency stays as without load); ACKs wait for their own fsync."""
    rates = [parse_rate(r) for r in h.args.dhcp_disk_rates.split(",")]
    period = h.args.dhcp_disk_period
    rows = []
    for rate in rates:
        for loaded in (False, True):
            for s in servers:
                if loaded:
                    with DiskLoad(h) as load:
                        row = perfdhcp_step(h, s, rate, period, timers=True)
                    row["disk_load"] = load.result()
                else:
                    row = perfdhcp_step(h, s, rate, period, timers=True)
                row["loaded"] = loaded
                rows.append(row)
    return rows


def storm_client(h, clients, rate, duration, acked=None, mac_base=0x42):
    cmd = ["ip", "netns", "exec", h.cli, "taskset", "-c", LOAD_CPU, "python3",
           os.path.join(HERE, "dhcpstorm.py"), "--iface", "vc", "--clients", str(clients),
           "--rate", str(rate), "--duration", str(duration), "--mac-base", str(mac_base)]
    if acked:
        cmd += ["--acked", acked]
    return cmd


def udp_rcvbuf_errors(ns):
    """The namespace's UDP receive-buffer overflow counter (datagrams the kernel dropped because a
    socket's buffer was full)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], capture_output=True,
                         text=True).stdout
    lines = [l.split() for l in out.splitlines() if l.startswith("Udp:")]
    if len(lines) >= 2 and "RcvbufErrors" in lines[0]:
        try:
            return int(lines[1][lines[0].index("RcvbufErrors")])
        except (ValueError, IndexError):
            return None
    return None


def avalanche_series(h, servers):
    rows = []
    for s in servers:
        s.fresh()
        try:
            s.start(dhcp=True)
        except RuntimeError as e:
            rows.append({"server": s.name, "error": str(e)[:300]})
            continue
        drops0 = (udp_rcvbuf_errors(h.srv), udp_rcvbuf_errors(h.cli))
        p = subprocess.run(storm_client(h, 250, 0, h.args.avalanche_limit), capture_output=True,
                           text=True, timeout=h.args.avalanche_limit + 20)
        drops1 = (udp_rcvbuf_errors(h.srv), udp_rcvbuf_errors(h.cli))
        s.stop()
        try:
            row = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            row = {"error": "dhcpstorm: " + p.stderr[-300:]}
        row["server"] = s.name
        if None not in drops0 and None not in drops1:
            row["server_ns_rcvbuf_drops"] = drops1[0] - drops0[0]
            row["client_ns_rcvbuf_drops"] = drops1[1] - drops0[1]
        log(f"avalanche {s.name}: {row.get('bound')}/250 bound in {row.get('seconds_to_last_ack')} s")
        rows.append(row)
    return rows


def lease_loss_series(h, servers):
    """kill -9 under load: every ACK a client saw must be in the lease file after a restart."""
    rows = []
    for s in servers:
        for trial in range(h.args.loss_trials):
            s.fresh()
            acked = os.path.join(s.dir, "acked.txt")
            try:
                s.start(dhcp=True)
            except RuntimeError as e:
                rows.append({"server": s.name, "trial": trial + 1, "error": str(e)[:300]})
                continue
            load = subprocess.Popen(storm_client(h, 4000, h.args.loss_rate, 30, acked, 0x50 + trial),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    start_new_session=True)
            h.procs.append(load)
            time.sleep(h.args.loss_kill_after + 0.37 * trial)
            s.stop(signal.SIGKILL)
            time.sleep(1.0)  # replies already on the wire still reach the client
            load.send_signal(signal.SIGTERM)
            try:
                load.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                load.kill()
            if load in h.procs:
                h.procs.remove(load)
            # restart on the same files (proves they load), then read what the server kept
            restarted = True
            try:
                s.start(dhcp=True)
                time.sleep(0.5)
                s.stop()
            except RuntimeError:
                restarted = False
            disk = s.leases_on_disk()
            seen = {}
            if os.path.exists(acked):
                for line in open(acked):
                    parts = line.split()
                    if len(parts) == 2:
                        seen[parts[0]] = parts[1]
            lost = sum(1 for mac, ip in seen.items() if disk.get(mac) != ip)
            row = {"server": s.name, "trial": trial + 1, "acked": len(seen), "on_disk": len(disk),
                   "lost": lost, "restarted": restarted}
            log(f"lease-loss {s.name} #{trial + 1}: acked {len(seen)}, lost {lost}")
            rows.append(row)
    return rows


# ---- TFTP series -------------------------------------------------------------------------------
# Each TFTP server of the series listens on its own address of the server's link, all of them
# at once, so repetitions of a step can alternate between servers without restarts.
TFTP_IPS = ("10.50.255.254", "10.50.255.252", "10.50.255.251")
TFTP_CLIENTS = "10.50.254."  # + 1..250: one source address per simulated node
TFTP_SMALL = "bench1m.bin"  # the shorter file of the slow rows (written by the series)
TFTP_SMALL_SIZE = 1024 * 1024


def tftp_run(h, s, clients, blksize, max_time, client="curl", file=TFTP_FILE, size=TFTP_SIZE):
    cpu0 = h.cpu_seconds(s.p)
    cmd = ["ip", "netns", "exec", h.cli, "taskset", "-c", LOAD_CPU, "python3",
           os.path.join(HERE, "tftpswarm.py"), "--url", f"tftp://{s.ip}/{file}",
           "--clients", str(clients), "--blksize", str(blksize), "--size", str(size),
           "--max-time", str(max_time), "--client", client, "--source-prefix", TFTP_CLIENTS]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time + 60)
    time.sleep(0.3)  # let tftpd-hpa reap its children so their CPU time is counted
    cpu1 = h.cpu_seconds(s.p)
    try:
        row = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "tftpswarm: " + (p.stderr or "")[-300:]}
    if cpu0 is not None and cpu1 is not None:
        row["server_cpu_s"] = round(cpu1 - cpu0, 3)
        mb = row["bytes"] / 1e6
        row["cpu_s_per_mb"] = round((cpu1 - cpu0) / mb, 5) if mb > 0 else None
    return row


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def tftp_steps(cond, a):
    """(clients, blksize, client, file, size, repetitions) per step of a condition. The slow rows
    (delay, loss, and the client-bound 100/250 counts) use the 1 MiB file so that every row can
    be repeated within the time budget; the 1-client rows, where per-packet cost shows, more."""
    big, small = (TFTP_FILE, TFTP_SIZE), (TFTP_SMALL, TFTP_SMALL_SIZE)
    r = a.tftp_reps
    if cond == "clean":
        return ([(1, 512, "curl", *big, r + 2), (1, 1468, "curl", *big, r + 2)]
                + [(n, 1468, "curl", *big, r) for n in (10, 50)]
                + [(n, 1468, "curl", *small, r) for n in (100, 250)])
    if cond.startswith("delay"):
        return [(1, 512, "curl", *small, r), (1, 1468, "curl", *small, r),
                (10, 1468, "curl", *small, r), (50, 1468, "curl", *small, r)]
    # atftp too: under loss, how a transfer recovers depends on the client as well. curl asks
    # for a timeout of several seconds that tftpd-hpa grants, so tftpd-hpa's curl rows end at the
    # time limit whatever the repetition: run once.
    return [(1, 1468, "atftp", *small, r), (50, 1468, "curl", *small, 1)]


def tftp_summary(runs):
    """One row per server and step from its repetitions: medians, with min and max as spread."""
    ok = [x for x in runs if "mb_per_s" in x]
    if not ok:
        return {"error": (runs[0].get("error", "") if runs else "no runs")[:300]}
    mbs = [x["mb_per_s"] for x in ok]
    cpus = [x.get("cpu_s_per_mb") for x in ok if x.get("cpu_s_per_mb") is not None]
    return {"mb_per_s": median(mbs), "mb_per_s_min": min(mbs), "mb_per_s_max": max(mbs),
            "cpu_s_per_mb": median(cpus), "cpu_s_per_mb_min": min(cpus, default=None),
            "cpu_s_per_mb_max": max(cpus, default=None),
            "wall_s": median([x["wall_s"] for x in ok]),
            "failed": sum(x.get("failed", 0) for x in ok), "reps": len(runs),
            "errors": [x["error"][:200] for x in runs if "error" in x],
            "runs": [{k: x.get(k) for k in ("mb_per_s", "cpu_s_per_mb", "wall_s", "failed", "errors",
                                            "load1")} for x in runs]}


def tftp_link(h, kind):
    h.link(kind)
    for extra in TFTP_IPS[1:]:  # one address per TFTP server (see TFTP_IPS)
        run(["ip", "-n", h.srv, "addr", "add", f"{extra}/{PREFIX}", "dev", "vs"])
    # the clients' addresses: mosboot limits transfers per source (8), as a lab's nodes each
    # have their own address
    batch = "".join(f"addr add {TFTP_CLIENTS}{i}/{PREFIX} dev vc\n" for i in range(1, 251))
    subprocess.run(["ip", "-n", h.cli, "-batch", "-"], input=batch, text=True, check=True,
                   capture_output=True)


def tftp_series(h, servers):
    rows = []
    a = h.args
    small = os.path.join(a.tftproot, TFTP_SMALL)
    if not os.path.exists(small) or os.path.getsize(small) != TFTP_SMALL_SIZE:
        with open(small, "wb") as f:
            f.write(os.urandom(TFTP_SMALL_SIZE))
        os.chmod(small, 0o644)
    conds = [("clean", "veth", 0)]
    if a.delayfwd and os.path.exists(a.delayfwd):
        conds.append(("delay 1 ms", "delay", 0))
    else:
        h.results.setdefault("skipped", []).append("TFTP with delay: no delay forwarder binary")
    conds.append(("loss 1 %", "veth", 10))
    only = a.tftp_conds.split(",") if a.tftp_conds else None
    for cond, link, loss in conds:
        if only and cond.split()[0] not in only:
            continue
        tftp_link(h, link)
        h.loss(loss)
        if link == "delay":
            # what the link really adds: 2 × the set delay plus the forwarder's own cost
            out = subprocess.run(["ip", "netns", "exec", h.cli, "busybox", "ping", "-c", "5", "-q",
                                  SERVER_IP], capture_output=True, text=True).stdout
            m = re.search(r"= [0-9.]+/([0-9.]+)/", out)
            h.results["delay_rtt_ms"] = float(m.group(1)) if m else None
        up = []
        for s in servers:
            try:
                s.start(dhcp=False, tftp=True)
                up.append(s)
            except RuntimeError as e:
                rows.append({"server": s.name, "cond": cond, "error": str(e)[:300]})
        max_time = 120 if cond == "clean" else a.tftp_lossy_max_time
        for clients, blk, client, file, size, reps in tftp_steps(cond, a):
            runs = {s.name: [] for s in up}
            for rep in range(reps):
                # interleaved, and the order flips every repetition so drift hits both alike
                for s in (up if rep % 2 == 0 else up[::-1]):
                    env = environment(h)
                    r = tftp_run(h, s, clients, blk, max_time, client, file, size)
                    r.update(env)
                    runs[s.name].append(r)
                    log(f"tftp {cond} {s.name} x{clients} bs{blk} {client} #{rep + 1}: "
                        f"{r.get('mb_per_s')} MB/s, {r.get('failed')} failed, {r.get('cpu_s_per_mb')} s/MB")
            base = runs.get(up[0].name) if up else None
            for s in up:
                row = tftp_summary(runs[s.name])
                # per repetition: this server against the first (mosboot), paired in time
                if base is not None and s is not up[0]:
                    pairs = [(m, x) for m, x in zip(base, runs[s.name])
                             if m.get("mb_per_s") and x.get("mb_per_s")]
                    row["pair_speed"] = [round(m["mb_per_s"] / x["mb_per_s"], 3) for m, x in pairs]
                    row["pair_cpu"] = [round(m["cpu_s_per_mb"] / x["cpu_s_per_mb"], 3) for m, x in pairs
                                       if m.get("cpu_s_per_mb") and x.get("cpu_s_per_mb")]
                row.update({"server": s.name, "cond": cond, "clients": clients, "blksize": blk,
                            "client": client, "file_bytes": size,
                            "load1": median([x.get("load1") for x in runs[s.name]])})
                rows.append(row)
        for s in up:
            s.stop()
        h.loss(0)
    # storm through a 100 Mbit/s limit
    if only and "storm" not in only:
        return rows
    tftp_link(h, "veth")
    h.rate_limit("100mbit")
    for s in servers:
        try:
            s.start(dhcp=False, tftp=True)
        except RuntimeError as e:
            rows.append({"server": s.name, "cond": "storm 100 Mbit", "error": str(e)[:300]})
            continue
        row = tftp_run(h, s, a.storm_clients, 1468, a.storm_max_time)
        blocks = -(-TFTP_SIZE // 1468) + (1 if TFTP_SIZE % 1468 == 0 else 0)
        wire = a.storm_clients * (TFTP_SIZE + blocks * (4 + 8 + 20 + 14))
        bound = wire * 8 / 100e6
        row.update({"server": s.name, "cond": "storm 100 Mbit", "clients": a.storm_clients,
                    "blksize": 1468, "line_rate_bound_s": round(bound, 2),
                    "vs_bound": round(row.get("wall_s", 0) / bound, 3) if row.get("wall_s") else None})
        log(f"storm {s.name}: {row.get('wall_s')} s vs bound {bound:.1f} s, {row.get('failed')} failed")
        rows.append(row)
        s.stop()
    h.rate_limit(None)
    return rows


# ---- HTTP vs TFTP (issue 14) ----------------------------------------------------------------------
def http_series(h):
    """One 3 MiB fetch over the 1 ms link: curl over mosboot's HTTP against curl over its TFTP
    (blksize 1468, lockstep: one round trip per block). Median of a few trials each."""
    if not h.args.http_toml:
        h.results.setdefault("skipped", []).append("HTTP vs TFTP: no --http-toml")
        return []
    delay = bool(h.args.delayfwd and os.path.exists(h.args.delayfwd))
    h.link("delay" if delay else "veth")
    rtt = None
    if delay:
        out = subprocess.run(["ip", "netns", "exec", h.cli, "busybox", "ping", "-c", "5", "-q",
                              SERVER_IP], capture_output=True, text=True).stdout
        m = re.search(r"= [0-9.]+/([0-9.]+)/", out)
        rtt = float(m.group(1)) if m else None
    d = os.path.join(h.tmp, "srv-mosboot-http")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o777)
    p = h.spawn(h.srv, [h.args.mosboot, "-c", h.args.http_toml, "serve", "--out", h.args.outtree,
                        "--state", os.path.join(d, "state"), "--force"], "mosboot-http", SERVER_CPU)
    rows = []
    try:
        if not h.wait_port(p, 69, 15):
            raise RuntimeError("mosboot (http) did not start: " + h.tail("mosboot-http")[-400:])
        urls = [("http", f"http://{SERVER_IP}:{HTTP_PORT}/{TFTP_FILE}", []),
                ("tftp", f"tftp://{SERVER_IP}/{TFTP_FILE}", ["--tftp-blksize", "1468"])]
        for proto, url, extra in urls:
            times, sizes = [], []
            for _ in range(h.args.http_trials):
                r = subprocess.run(["ip", "netns", "exec", h.cli, "taskset", "-c", LOAD_CPU, "curl", "-sS",
                                    "--retry", "3", "--retry-connrefused", "--max-time", "60",
                                    "-o", "/dev/null", "-w", "%{time_total} %{size_download}", *extra, url],
                                   capture_output=True, text=True, timeout=90)
                try:
                    t, n = r.stdout.split()
                    times.append(float(t))
                    sizes.append(int(n))
                except ValueError:
                    rows.append({"proto": proto, "error": (r.stderr or r.stdout)[-300:]})
                    break
            if times:
                ok = all(n == TFTP_SIZE for n in sizes)
                row = {"proto": proto, "link": "delay 1 ms" if delay else "veth", "rtt_ms": rtt,
                       "trials": len(times), "median_s": round(statistics.median(times), 3),
                       "min_s": round(min(times), 3), "max_s": round(max(times), 3),
                       "bytes": sizes[0], "complete": ok}
                log(f"http series {proto}: median {row['median_s']} s over {len(times)} trials "
                    f"({'complete' if ok else 'SHORT'})")
                rows.append(row)
    finally:
        h.stop(p)
        h.unlink()
        h.link("veth")
    return rows


# ---- multicast storm -----------------------------------------------------------------------------
MC_GROUP = "239.255.69.1"


def atftpd_binary(h):
    """Debian's atftpd (the one RFC 2090 server among the peers). Its package conflicts with
    tftpd-hpa, which the TFTP series needs, so the .deb is fetched with apt-get download and
    unpacked into a cache instead of being installed."""
    found = shutil.which("atftpd") or (os.path.exists("/usr/sbin/atftpd") and "/usr/sbin/atftpd")
    if found:
        return found
    cache = "/var/cache/mosboot-kit/atftpd"
    binary = os.path.join(cache, "usr", "sbin", "atftpd")
    if not os.path.exists(binary):
        os.makedirs(cache, exist_ok=True)
        run(["apt-get", "download", "atftpd"], cwd=cache)
        debs = sorted(f for f in os.listdir(cache) if f.startswith("atftpd_") and f.endswith(".deb"))
        run(["dpkg-deb", "-x", os.path.join(cache, debs[-1]), cache])
    return binary


def machine_busy_s():
    """CPU seconds all CPUs spent not idle so far (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class McLab:
    """The server namespace's `vs` as a bridge (a hub) with one namespace per client: atftp binds
    the multicast port without SO_REUSEADDR, so two atftp clients cannot share a namespace."""

    def __init__(self, h, n):
        self.h, self.ns = h, []
        run(["ip", "-n", h.srv, "link", "add", "vs", "type", "bridge", "stp_state", "0",
             "forward_delay", "0", "mcast_snooping", "0"])
        run(["ip", "-n", h.srv, "addr", "add", f"{SERVER_IP}/{PREFIX}", "dev", "vs"])
        run(["ip", "-n", h.srv, "link", "set", "vs", "up"])
        run(["ip", "-n", h.srv, "route", "add", "224.0.0.0/4", "dev", "vs"])
        for i in range(n):
            ns = f"{h.tag}-m{i}"
            run(["ip", "netns", "add", ns])
            self.ns.append(ns)
            h.namespaces.append(ns)
            run(["ip", "-n", h.srv, "link", "add", f"m{i}", "type", "veth", "peer", "name", "eth0",
                 "netns", ns])
            run(["ip", "-n", h.srv, "link", "set", f"m{i}", "master", "vs", "up"])
            ip = f"10.50.{100 + i // 250}.{i % 250 + 1}"
            for cmd in (["addr", "add", f"{ip}/{PREFIX}", "dev", "eth0"], ["link", "set", "eth0", "up"],
                        ["link", "set", "lo", "up"], ["route", "add", "224.0.0.0/4", "dev", "eth0"]):
                run(["ip", "-n", ns] + cmd)
        time.sleep(0.5)

    def rate(self, rate):
        subprocess.run(["ip", "netns", "exec", self.h.srv, "tc", "qdisc", "del", "dev", "vs", "root"],
                       capture_output=True)
        if rate:
            run(["ip", "netns", "exec", self.h.srv, "tc", "qdisc", "add", "dev", "vs", "root", "tbf",
                 "rate", rate, "burst", "64kb", "latency", "400ms"])

    def swarm(self, n, max_time, multicast):
        """n clients, one per namespace (as n PCs; mosboot also limits transfers per address),
        each waiting on its stdin so all start within a few ms, like nodes powered on at once:
        atftp with `--option multicast`, or curl (unicast). Wall time from the start signal to
        the last exit; a client counts as ok with exit 0 and the whole file."""
        tmp = tempfile.mkdtemp(prefix="mcswarm.", dir=self.h.tmp)
        outs = [os.path.join(tmp, f"c{i}") for i in range(n)]
        url = f"tftp://{SERVER_IP}/{TFTP_FILE}"
        procs = []
        for i in range(n):
            if multicast:
                client = ["atftp", "--option", "multicast", "--option", "blksize 1468", "-g", "-r",
                          TFTP_FILE, "-l", outs[i], SERVER_IP]
            else:
                client = ["curl", "-s", "--tftp-blksize", "1468", "-o", outs[i], url]
            argv = ["ip", "netns", "exec", self.ns[i], "sh", "-c", 'read go; exec "$@"', "client",
                    "timeout", str(max_time)] + client
            procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        time.sleep(0.5 + n * 0.004)  # every shell is in its namespace, waiting
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0 = machine_busy_s()
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write(b"go\n")
            p.stdin.close()
        ok = 0
        for i, p in enumerate(procs):
            p.wait()
            if p.returncode == 0 and os.path.exists(outs[i]) and os.path.getsize(outs[i]) == TFTP_SIZE:
                ok += 1
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1 = machine_busy_s()
        shutil.rmtree(tmp, ignore_errors=True)
        # The clients' own CPU (user + system, their process start included; softirq work the
        # kernel does for them may land on other processes) and the whole machine's busy time.
        clients_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return {"clients": n, "ok": ok, "failed": n - ok, "wall_s": round(wall, 3),
                "clients_cpu_s": round(clients_cpu, 2),
                "machine_busy_s": round(busy1 - busy0, 2) if busy0 is not None and busy1 is not None else None,
                "mb_per_s": round(ok * TFTP_SIZE / 1e6 / wall, 2) if wall > 0 else 0.0}

    def rcvbuf_errors(self, n):
        """UDP datagrams the first n clients' kernels dropped for a full receive buffer (summed
        /proc/net/snmp RcvbufErrors): copies the clients were too slow to take."""
        script = 'for ns in "$@"; do ip netns exec "$ns" cat /proc/net/snmp; done'
        p = subprocess.run(["sh", "-c", script, "sh"] + self.ns[:n], capture_output=True, text=True)
        total, header = 0, None
        for line in p.stdout.splitlines():
            if not line.startswith("Udp: "):
                continue
            fields = line.split()[1:]
            if header is None or not fields[0].isdigit():
                header = fields
                continue
            row = dict(zip(header, fields))
            total += int(row.get("RcvbufErrors", 0))
            header = None
        return total

    def close(self):
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            if ns in self.h.namespaces:
                self.h.namespaces.remove(ns)
        subprocess.run(["ip", "-n", self.h.srv, "link", "del", "vs"], capture_output=True)


def multicast_series(h):
    """250 nodes fetch the 3 MiB file through 100 and 10 Mbit/s: mosboot multicast (RFC 2090,
    atftp clients), atftpd's multicast, mosboot unicast (curl); each as time / one client alone.
    Unicast time grows linearly with the clients (250 would need ~100 s at 100 Mbit/s, ~11 min at
    10), so it runs with --mc-unicast-fast / --mc-unicast-slow clients, to stay in the budget."""
    rows = []
    n = h.args.mc_clients
    t_setup = time.monotonic()
    lab = McLab(h, n)
    h.results["multicast_setup_s"] = round(time.monotonic() - t_setup, 1)
    mosboot = Server(h, "mosboot")  # for its state folder
    peer = h.args.mc_peer or atftpd_binary(h)
    try:
        rates = [r for r in (("100mbit", "100 Mbit"), ("10mbit", "10 Mbit")) if r[0] in h.args.mc_rates.split(",")]
        for rate, label in rates:
            lab.rate(rate)
            # mosboot multicast and atftpd multicast: 1 client, then n
            for name in [s for s in ("mosboot-mc", "atftpd-mc", "mosboot-unicast") if s in h.args.mc_servers.split(",")]:
                if name == "atftpd-mc":
                    cmd = [peer, "--daemon", "--no-fork", "--port", "69", "--bind-address", SERVER_IP,
                           "--mcast-port", "1758", "--mcast-addr", "239.255.70.0-255", "--mcast-ttl", "1",
                           "--maxthread", str(n + 50), "--user", "root", "--group", "root",
                           "--logfile", "/dev/null", "--verbose=1", h.args.tftproot]
                else:
                    if not os.path.isdir(mosboot.dir):
                        mosboot.fresh()
                    cmd = [h.args.mosboot, "-c", h.args.tftp_toml, "serve", "--out", h.args.outtree,
                           "--state", os.path.join(mosboot.dir, "state"), "--force"]
                    if name == "mosboot-mc":
                        cmd += ["--multicast", MC_GROUP, "-v"]  # -v: the session's counters line
                p = h.spawn(h.srv, cmd, name, SERVER_CPU)
                if not h.wait_port(p, 69, 15):
                    rows.append({"server": name, "cond": label, "error": h.tail(name)[-300:]})
                    h.stop(p)
                    continue
                unicast = name == "mosboot-unicast"
                many = n if not unicast else (h.args.mc_unicast_fast if rate == "100mbit"
                                              else h.args.mc_unicast_slow)
                one = lab.swarm(1, h.args.storm_max_time, not unicast)
                drops0 = lab.rcvbuf_errors(many) if not unicast else 0
                cpu0 = h.cpu_seconds(p)
                row = lab.swarm(many, h.args.storm_max_time, not unicast)
                cpu1 = h.cpu_seconds(p)
                if not unicast:
                    row["rcvbuf_errors"] = lab.rcvbuf_errors(many) - drops0
                row["single_clients_cpu_s"] = one.get("clients_cpu_s")
                if cpu0 is not None and cpu1 is not None:
                    row["server_cpu_s"] = round(cpu1 - cpu0, 2)
                h.stop(p)
                ratio = round(row["wall_s"] / one["wall_s"], 2) if one.get("wall_s") and row.get("wall_s") else None
                row.update({"server": name, "cond": label, "single_s": one.get("wall_s"),
                            "single_ok": one.get("ok"), "vs_single": ratio})
                if name == "mosboot-mc":
                    tail = h.tail(name, 50)
                    m = re.findall(r"\bblocks=(\d+) data_sent=(\d+)", tail)
                    if m:
                        b, d = (int(x) for x in m[-1])
                        row.update({"mc_blocks": b, "mc_data_sent": d, "mc_sends_per_block": round(d / b, 3)})
                    # The session's timeline (ms from its first request): master turns, passes
                    # with DATA, resends, when the last DATA left and when the last member was done.
                    for key in ("turns", "passes", "resent", "last_data_ms", "done_ms"):
                        v = re.findall(rf"\b{key}=(\d+)", tail)
                        if v:
                            row["mc_" + key] = int(v[-1])
                log(f"multicast {label} {name} x{many}: {row.get('wall_s')} s, one alone {one.get('wall_s')} s "
                    f"({ratio}x), {row.get('failed')} failed; " + ", ".join(
                        f"{k}={row[k]}" for k in ("mc_data_sent", "mc_turns", "mc_passes", "mc_resent", "mc_last_data_ms",
                                                  "mc_done_ms", "rcvbuf_errors", "clients_cpu_s", "single_clients_cpu_s",
                                                  "server_cpu_s", "machine_busy_s")
                        if k in row))
                rows.append(row)
    finally:
        lab.rate(None)
        lab.close()
    return rows


# ---- build and boot ------------------------------------------------------------------------------
def build_series(h):
    a = h.args
    row = {}
    outdir = os.path.join(h.tmp, "build-out")
    toml = a.demo_toml
    # cold: empty output tree each run; warm: the same tree again (unchanged inputs)
    cold_prep = f"rm -rf {outdir}"
    base = f"{a.mosboot} -c {toml} build --out {outdir}"
    hf = os.path.join(h.tmp, "hyperfine.json")
    p = subprocess.run(["hyperfine", "--shell=bash", "--runs", str(a.build_runs),
                        "--prepare", cold_prep, "--export-json", hf, "-n", "cold", base],
                       capture_output=True, text=True, timeout=600)
    if p.returncode == 0:
        r = json.load(open(hf))["results"][0]
        row["cold"] = {k: round(r[k], 3) for k in ("mean", "stddev", "min", "max")}
    else:
        row["cold_error"] = p.stderr[-300:]
    subprocess.run(base, shell=True, capture_output=True)
    p = subprocess.run(["hyperfine", "--shell=bash", "--warmup", "1", "--runs", str(a.build_runs * 2),
                        "--export-json", hf, "-n", "warm", base],
                       capture_output=True, text=True, timeout=600)
    if p.returncode == 0:
        r = json.load(open(hf))["results"][0]
        row["warm"] = {k: round(r[k], 3) for k in ("mean", "stddev", "min", "max")}
    else:
        row["warm_error"] = p.stderr[-300:]
    sizes = {}
    tb = os.path.join(outdir, "tftpboot")
    for name in ("initrd.gz", "vmlinuz", "pxelinux.0", "ldlinux.c32", "boot.ipxe"):
        path = os.path.join(tb, name)
        if os.path.exists(path):
            sizes[name] = os.path.getsize(path)
    total = 0
    for dp, _, fs in os.walk(outdir):
        for f in fs:
            total += os.path.getsize(os.path.join(dp, f))
    sizes["total_tree"] = total
    row["sizes"] = sizes
    log(f"build: cold {row.get('cold', {}).get('mean')} s, warm {row.get('warm', {}).get('mean')} s")
    return row


def boot_series(h):
    a = h.args
    lab = os.path.join(ROOT, "scripts", "lab", "lab.sh")
    rows = []
    macs = [f"52:54:00:be:00:{i + 1:02x}" for i in range(4)]
    hosts = [f"ws{i + 1:03d}" for i in range(4)]
    dns_hosts = " ".join(f"--dhcp-host={m},192.168.0.{i + 1},{hosts[i]}" for i, m in enumerate(macs))
    tftproot = os.path.join(a.demo_out, "tftpboot")
    servers = {
        "mosboot": f"{a.mosboot} -c {a.demo_toml} serve --out {a.demo_out} --state {h.tmp}/boot-state-$$ --force",
        "dnsmasq": (f"dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces "
                    f"--dhcp-range=192.168.0.1,192.168.0.253,255.255.255.0,1h {dns_hosts} "
                    f"--dhcp-leasefile={h.tmp}/boot-dnsmasq-$$.leases --enable-tftp --tftp-root={tftproot} "
                    "--dhcp-boot=pxelinux.0 --dhcp-userclass=set:ipxe,iPXE --dhcp-boot=tag:ipxe,boot.ipxe "
                    "--dhcp-option=3 --dhcp-option=6 --user=root --log-facility=-"),
    }
    # One boot first that is not counted: the very first QEMU start of the series reads the
    # emulator, its ROMs and the boot files from disk (seen: 11.6 s against 9.8 s for the same
    # server a minute later), which would land on whichever server goes first. Then the servers
    # take turns, the order flipping every trial, as in the TFTP series.
    plan = [(None, "mosboot", servers["mosboot"], 1)]
    for nodes in (1, 4):
        for trial in range(a.boot_trials):
            order = list(servers.items())
            if trial % 2:
                order.reverse()
            plan += [(trial, name, cmd, nodes) for name, cmd in order]
    for trial, name, cmd, nodes in plan:
        logdir = tempfile.mkdtemp(prefix="lab-", dir=h.tmp)
        args = [lab, "--server", cmd, "--timeout", str(a.boot_timeout), "--logdir", logdir,
                "--ns-prefix", h.tag + "lab"]
        for i in range(nodes):
            args += ["--node", f"cpu=486,nic=ne2k_pci,mem=16,mac={macs[i]},name={hosts[i]}"]
        env = dict(os.environ, KIT_QEMU_DIR=a.qemu_dir) if a.qemu_dir else None
        t0 = time.monotonic()
        p = subprocess.run(args, capture_output=True, text=True, timeout=a.boot_timeout + 60,
                           env=env)
        wall = time.monotonic() - t0
        took = [float(x) for x in re.findall(r"node \S+ done in ([0-9.]+) s", p.stdout + p.stderr)]
        if trial is None:
            log(f"boot {name} x{nodes} warm-up (not counted): {max(took, default=None)} s")
            continue
        row = {"server": name, "nodes": nodes, "trial": trial + 1, "ok": p.returncode == 0,
               "done": len(took), "per_node_s": took,
               "last_node_s": max(took) if len(took) == nodes else None,
               "wall_s": round(wall, 1)}
        if p.returncode != 0:
            row["error"] = (p.stdout + p.stderr)[-400:]
        log(f"boot {name} x{nodes}: {row['last_node_s']} s (ok={row['ok']})")
        rows.append(row)
    return rows


def floppy_series(h):
    """Power-on to joined for an ISA NE2000 486 booting `mosboot floppy` beside a PXE 486
    (ne2k_pci) in the same lab run, both 16 MB, served by mosboot (issue 10: goal <= 1.5x)."""
    a = h.args
    if not a.floppy_img:
        return {"skipped": "no floppy image (the kit's floppy kernel or stage-1 busybox is missing)"}
    lab = os.path.join(ROOT, "scripts", "lab", "lab.sh")
    rows = []
    for trial in range(a.boot_trials):
        logdir = tempfile.mkdtemp(prefix="lab-", dir=h.tmp)
        cmd = f"{a.mosboot} -c {a.demo_toml} serve --out {a.demo_out} --state {h.tmp}/floppy-state-$$ --force"
        args = [lab, "--server", cmd, "--timeout", str(a.boot_timeout), "--logdir", logdir,
                "--ns-prefix", h.tag + "fl",
                "--node", "name=pxe,cpu=486,nic=ne2k_pci,mem=16,mac=52:54:00:bf:00:01",
                "--node", f"name=floppy,cpu=486,nic=ne2k_isa,io=0x300,irq=9,mem=16,mac=52:54:00:bf:00:02,"
                          f"fda={a.floppy_img}"]
        env = dict(os.environ, KIT_QEMU_DIR=a.qemu_dir) if a.qemu_dir else None
        p = subprocess.run(args, capture_output=True, text=True, timeout=a.boot_timeout + 60, env=env)
        took = dict(re.findall(r"node (pxe|floppy) done in ([0-9.]+) s", p.stdout + p.stderr))
        row = {"trial": trial + 1, "ok": p.returncode == 0,
               "pxe_s": float(took["pxe"]) if "pxe" in took else None,
               "floppy_s": float(took["floppy"]) if "floppy" in took else None}
        if p.returncode != 0:
            row["error"] = (p.stdout + p.stderr)[-400:]
        log(f"floppy vs pxe: {row['floppy_s']} s vs {row['pxe_s']} s (ok={row['ok']})")
        rows.append(row)
    return rows


def machine():
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    vers = {}
    for name, cmd in (("kea-dhcp4", ["kea-dhcp4", "-v"]), ("dnsmasq", ["dnsmasq", "--version"]),
                      ("perfdhcp", ["perfdhcp", "-v"]), ("curl", ["curl", "--version"]),
                      ("tftpd-hpa", ["dpkg-query", "-W", "-f=${Version}", "tftpd-hpa"])):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            vers[name] = " ".join((out.stdout or out.stderr).strip().splitlines()[0].split()[:3])[:60]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            vers[name] = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "mem": mem, "kernel": os.uname().release,
            "versions": vers}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mosboot", required=True)
    ap.add_argument("--delayfwd", default="")
    ap.add_argument("--dhcp-toml", required=True)
    ap.add_argument("--tftp-toml", required=True)
    ap.add_argument("--demo-toml", required=True)
    ap.add_argument("--demo-out", required=True)
    ap.add_argument("--outtree", required=True, help="output tree `mosboot serve --out` uses")
    ap.add_argument("--tftproot", required=True)
    ap.add_argument("--qemu-dir", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--series", default="dhcp,avalanche,dhcp-disk,loss,tftp,multicast,http,build,boot,floppy")
    ap.add_argument("--dhcp-rates", default="500,1000,2000,3000,4000,6000,8000,12000,16000,max",
                    help="offered DISCOVERs/s per step; max: as fast as perfdhcp can")
    ap.add_argument("--dhcp-period", type=int, default=8)
    ap.add_argument("--dhcp-repeats", type=int, default=1, help="runs of the whole step list")
    ap.add_argument("--dhcp-dnsmasq-max", type=int, default=2000, help="highest step for dnsmasq")
    ap.add_argument("--dhcp-disk-rates", default="1000,4000")
    ap.add_argument("--dhcp-disk-period", type=int, default=8)
    ap.add_argument("--dhcp-clients", type=int, default=4000,
                    help="perfdhcp -R: distinct clients (mosboot's new-MAC flood limit is raised to it)")
    ap.add_argument("--client-rcvbuf-shim", default="",
                    help="LD_PRELOAD for perfdhcp that enlarges its socket buffers (rcvbuf.c)")
    ap.add_argument("--http-toml", default="", help="cluster file with [serve] http for the http series")
    ap.add_argument("--http-trials", type=int, default=3)
    ap.add_argument("--avalanche-limit", type=float, default=30)
    ap.add_argument("--loss-trials", type=int, default=5)
    ap.add_argument("--loss-rate", type=float, default=1000)
    ap.add_argument("--loss-kill-after", type=float, default=1.5)
    ap.add_argument("--delay-us", type=int, default=1000)
    ap.add_argument("--tftp-lossy-max-time", type=int, default=40)
    ap.add_argument("--tftp-reps", type=int, default=3, help="repetitions per TFTP step (1-client rows: +2)")
    ap.add_argument("--mosboot-before", default="",
                    help="an older mosboot binary, added to the TFTP series as server mosboot-before")
    ap.add_argument("--tftp-conds", default="", help="subset: clean,delay,loss,storm")
    ap.add_argument("--storm-clients", type=int, default=250)
    ap.add_argument("--storm-max-time", type=int, default=180)
    ap.add_argument("--mc-clients", type=int, default=250)
    ap.add_argument("--mc-unicast-fast", type=int, default=50,
                    help="unicast clients through 100 Mbit/s in the multicast series")
    ap.add_argument("--mc-unicast-slow", type=int, default=10,
                    help="unicast clients through 10 Mbit/s in the multicast series")
    ap.add_argument("--mc-servers", default="mosboot-mc,atftpd-mc,mosboot-unicast",
                    help="subset of the multicast series' servers")
    ap.add_argument("--mc-rates", default="100mbit,10mbit", help="subset of the multicast series' links")
    ap.add_argument("--mc-peer", default="", help="atftpd binary (default: found or unpacked)")
    ap.add_argument("--build-runs", type=int, default=3)
    ap.add_argument("--boot-trials", type=int, default=2)
    ap.add_argument("--boot-timeout", type=int, default=120)
    ap.add_argument("--floppy-img", default="", help="a `mosboot floppy` image for the floppy series")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    a = ap.parse_args()
    series = a.series.split(",")

    h = Harness(a)
    res = h.results
    res["machine"] = machine()
    res["settings"] = {k: v for k, v in vars(a).items() if k not in ("out",)}
    t_start = time.monotonic()

    def save():
        res["elapsed_s"] = round(time.monotonic() - t_start, 1)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    def attempt(name, fn):
        if name not in series:
            return
        t = time.monotonic()
        log(f"== {name}")
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - one broken series must not hide the others
            log(f"{name}: harness error: {e!r}")
            res.setdefault("errors", {})[name] = repr(e)[:500]
        res.setdefault("series_s", {})[name] = round(time.monotonic() - t, 1)
        save()

    h.netns_up()
    h.link("veth")
    dhcp_servers = [Server(h, "mosboot"), Server(h, "kea"), Server(h, "dnsmasq"),
                    Server(h, "dnsmasq", "tuned")]
    attempt("dhcp", lambda: dhcp_series(h, dhcp_servers))
    attempt("avalanche", lambda: avalanche_series(h, dhcp_servers))
    attempt("dhcp-disk", lambda: dhcp_disk_series(h, dhcp_servers[:2]))
    attempt("loss", lambda: lease_loss_series(h, [dhcp_servers[0], dhcp_servers[1], dhcp_servers[3]]))
    tftp_servers = [Server(h, "mosboot"), Server(h, "tftpd-hpa", ip=TFTP_IPS[1])]
    if a.mosboot_before:
        tftp_servers.append(Server(h, "mosboot", "before", ip=TFTP_IPS[2], binary=a.mosboot_before))
    attempt("tftp", lambda: tftp_series(h, tftp_servers))
    attempt("http", lambda: http_series(h))
    h.unlink()
    attempt("multicast", lambda: multicast_series(h))
    attempt("build", lambda: build_series(h))
    attempt("boot", lambda: boot_series(h))
    attempt("floppy", lambda: floppy_series(h))
    save()
    h.cleanup()
    log(f"done in {res['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
