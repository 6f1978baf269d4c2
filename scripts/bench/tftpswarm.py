#!/usr/bin/env python3
"""TFTP client swarm for `make bench`: N curl processes fetch one file at once.

Runs inside the client namespace (one process tree, so starting 250 clients costs 250 forks and
no namespace switches). Prints one JSON object: wall time from the first start to the last exit,
successes, failures (non-zero exit or short file), bytes received.
"""

import argparse
import json
import os
import subprocess
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--size", type=int, required=True, help="expected file size in bytes")
    ap.add_argument("--max-time", type=int, default=120)
    a = ap.parse_args()

    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", str(a.max_time)]
    if a.blksize != 512:
        cmd += ["--tftp-blksize", str(a.blksize)]
    cmd.append(a.url)
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for _ in range(a.clients)]
    ok = failed = 0
    got = 0
    errors = {}
    for p in procs:
        out, _ = p.communicate()
        try:
            n = int(out.decode().strip() or 0)
        except ValueError:
            n = 0
        if p.returncode == 0 and n == a.size:
            ok += 1
            got += n
        else:
            failed += 1
            key = f"rc{p.returncode}"
            errors[key] = errors.get(key, 0) + 1
    wall = time.monotonic() - t0
    print(json.dumps({"clients": a.clients, "ok": ok, "failed": failed, "bytes": got,
                      "wall_s": round(wall, 3),
                      "mb_per_s": round(got / 1e6 / wall, 2) if wall > 0 else 0.0,
                      "errors": errors}))


if __name__ == "__main__":
    main()
