#!/usr/bin/env python3
"""Makes a status page that listens on loopback inside a lab namespace reachable on this
machine's loopback, for `DEMO_KEEP=1 make demo`: listens on 127.0.0.1:PORT of the machine's own
network namespace and connects each client to 127.0.0.1:PORT inside the namespace it was started
in. Loopback only on both sides; exits when the lab's namespace (/run/netns/NAME) is gone.

Usage (inside the lab namespace): statusfwd.py NAMESPACE PORT HOST_NETNS
(HOST_NETNS: /proc/<pid>/ns/net of a process in the machine's own namespace, e.g. the demo's.)
"""

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    name, port, host_ns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lab = os.open("/proc/self/ns/net", os.O_RDONLY)
    host = os.open(host_ns, os.O_RDONLY)
    setns(host)
    listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
    setns(lab)  # every socket made from here on lives in the lab
    listener.settimeout(1.0)
    while os.path.exists(f"/run/netns/{name}"):
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        try:
            inner = socket.create_connection(("127.0.0.1", port), timeout=5)
            inner.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, inner), (inner, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
