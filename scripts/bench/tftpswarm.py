#!/usr/bin/env python3
"""TFTP client swarm for `make bench`: N curl (or atftp) processes fetch one file at once.

Runs inside the client namespace (one process tree, so starting 250 clients costs 250 forks and
no namespace switches). Prints one JSON object: wall time from the first start to the last exit,
successes, failures (non-zero exit or short file), bytes received.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--size", type=int, required=True, help="expected file size in bytes")
    ap.add_argument("--max-time", type=int, default=120)
    ap.add_argument("--client", choices=("curl", "atftp"), default="curl")
    ap.add_argument("--source-prefix", default="",
                    help="client i binds to PREFIX<i+1> (a lab of nodes has one address each; "
                         "servers limit transfers per source address)")
    ap.add_argument("--sources", type=int, default=250)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="tftpswarm.")
    if a.client == "curl":
        cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", str(a.max_time)]
        if a.blksize != 512:
            cmd += ["--tftp-blksize", str(a.blksize)]
        if a.source_prefix and a.clients > 1:
            cmds = [cmd + ["--interface", f"{a.source_prefix}{i % a.sources + 1}", a.url]
                    for i in range(a.clients)]
        else:
            cmds = [cmd + [a.url]] * a.clients
    else:
        # atftp has no overall time limit and cannot report the size: timeout(1) + a file each
        host, _, path = a.url[len("tftp://"):].partition("/")
        cmds = [["timeout", str(a.max_time), "atftp", "--get", "-r", path, "-l",
                 os.path.join(tmp, f"c{i}"), "--option", f"blksize {a.blksize}", host]
                for i in range(a.clients)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for c in cmds]
    ok = failed = 0
    got = 0
    errors = {}
    for i, p in enumerate(procs):
        out, _ = p.communicate()
        if a.client == "curl":
            try:
                n = int(out.decode().strip() or 0)
            except ValueError:
                n = 0
        else:
            f = os.path.join(tmp, f"c{i}")
            n = os.path.getsize(f) if os.path.exists(f) else 0
        if p.returncode == 0 and n == a.size:
            ok += 1
            got += n
        else:
            failed += 1
            key = f"rc{p.returncode}"
            errors[key] = errors.get(key, 0) + 1
    wall = time.monotonic() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"clients": a.clients, "ok": ok, "failed": failed, "bytes": got,
                      "wall_s": round(wall, 3),
                      "mb_per_s": round(got / 1e6 / wall, 2) if wall > 0 else 0.0,
                      "errors": errors}))


if __name__ == "__main__":
    main()
