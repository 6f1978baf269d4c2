#!/usr/bin/env python3
"""Writes BENCHMARKS.md from bench.py's results: intro.md (hand-written), the machine, the issue's
targets with where mosboot stands, and one table per series with ratios to the best peer.

Usage: report.py results.json BENCHMARKS.md
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def ratio(a, b, nd=2):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.{nd}f}×"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def best_peer(rows, key, pred, higher=True, exclude="mosboot"):
    vals = [r for r in rows if pred(r) and r.get("server") != exclude and r.get(key) is not None]
    if not vals:
        return None
    pick = max if higher else min
    return pick(vals, key=lambda r: r[key])


# ---- DHCP --------------------------------------------------------------------------------------
def rate_label(rate):
    return "max" if rate == 0 else rate


def clean_max(rows, server, limit=0.2):
    """The highest step at which every run of `server` left ≤ `limit` % of DISCOVERs without an
    ACK (repeated steps: one bad run disqualifies the step), as the mean leases/s of its runs."""
    by_rate = {}
    for r in rows:
        if r.get("server") == server:
            by_rate.setdefault(r["rate"], []).append(r)
    best = None
    for runs in by_rate.values():
        if all(r.get("drop_pct") is not None and r["drop_pct"] <= limit for r in runs):
            mean = sum(r["leases_per_s"] for r in runs) / len(runs)
            best = mean if best is None else max(best, mean)
    return best


def peak(rows, server):
    return max((r.get("leases_per_s") or 0 for r in rows if r.get("server") == server), default=None)


def dhcp_section(res):
    rows = res.get("dhcp") or []
    if not rows:
        return "_not run_\n", {}
    servers = list(dict.fromkeys(r["server"] for r in rows))
    out = []
    body = []
    # "max" (rate 0) last
    for rate in sorted({r["rate"] for r in rows}, key=lambda x: x or 10**9):
        at = [r for r in rows if r["rate"] == rate]
        best = best_peer(at, "leases_per_s", lambda r: True)
        for r in at:
            if "error" in r and "acks" not in r:
                body.append([rate_label(rate), r["server"], "error", "", "", "", "", "", "", "", "", r["error"][:80]])
                continue
            rat = ratio(r["leases_per_s"], best["leases_per_s"]) if r["server"] == "mosboot" and best else ""
            body.append([rate_label(rate), r["server"], fmt(r["leases_per_s"]), rat, fmt(r["drop_pct"], 2),
                         f'{fmt(r["do_avg_ms"], 2)} / {fmt(r["do_max_ms"], 1)}',
                         f'{fmt(r["ra_avg_ms"], 2)} / {fmt(r["ra_max_ms"], 1)}',
                         fmt(r.get("server_cpu_s"), 2),
                         f'{fmt(r.get("rcvbuf_drops"))} / {fmt(r.get("client_rcvbuf_drops"))}',
                         f'{fmt(r.get("offered_per_s"))}',
                         f'{fmt(r.get("load1"), 1)} / {fmt(r.get("fsync_ms_max"), 1)}',
                         "" if r.get("server_alive", True) else "server died"])
    out.append(table(["offered /s", "server", "leases/s (ACKs)", "vs best peer", "drop %",
                      "DISCOVER→OFFER avg / max ms", "REQUEST→ACK avg / max ms", "server CPU s",
                      "UDP buffer overflows server / client", "DISCOVERs sent /s",
                      "machine load / fsync max ms", "note"], body))
    summ = []
    for s in servers:
        summ.append([s, fmt(clean_max(rows, s)), fmt(peak(rows, s))])
    out.append("\n*max* is perfdhcp without `-r` (it starts exchanges as fast as it can); dnsmasq runs only "
               "the low steps (it fails the lowest one already). Best step per server (the highest "
               "leases/s of a step at which every run left ≤ 0.2 % of DISCOVERs without an ACK):\n\n")
    out.append(table(["server", "leases/s at ≤ 0.2 % drop", "peak leases/s"], summ))
    return "".join(out), {s: (clean_max(rows, s), peak(rows, s)) for s in servers}


def dhcp_disk_section(res):
    rows = res.get("dhcp-disk") or []
    if not rows:
        return "_not run_\n"
    body = []
    for r in rows:
        load = "fsync loop" if r.get("loaded") else "none"
        if r.get("loaded") and r.get("disk_load"):
            d = r["disk_load"]
            load += f' ({d.get("fsyncs")} fsyncs, max {fmt(d.get("fsync_ms_max"), 0)} ms)'
        if "error" in r and "acks" not in r:
            body.append([rate_label(r["rate"]), load, r["server"], "error", "", "", "", r["error"][:80]])
            continue
        body.append([rate_label(r["rate"]), load, r["server"], fmt(r["leases_per_s"]), fmt(r["drop_pct"], 2),
                     f'{fmt(r["do_avg_ms"], 2)} / {fmt(r.get("do_p99_ms"), 1)} / {fmt(r["do_max_ms"], 1)}',
                     f'{fmt(r["ra_avg_ms"], 2)} / {fmt(r.get("ra_p99_ms"), 1)} / {fmt(r["ra_max_ms"], 1)}',
                     fmt(r.get("load1"), 1)])
    return table(["offered /s", "disk load", "server", "leases/s", "drop %",
                  "DISCOVER→OFFER avg / p99 / max ms", "REQUEST→ACK avg / p99 / max ms", "machine load"],
                 body) + (
        "\nThe disk load is another process writing 64 KiB and calling `fsync` in a loop, in the "
        "filesystem that holds the lease files. OFFERs need no disk; mosboot's ACKs wait for their "
        "own fsync (Kea's do not fsync at all).\n")


def offer_latency_under_load(rows, server):
    """(OFFER p99 without, with disk load) over the disk series' steps, worst step."""
    def worst(loaded):
        v = [r.get("do_p99_ms") for r in rows if r.get("server") == server and bool(r.get("loaded")) == loaded]
        v = [x for x in v if x is not None]
        return max(v) if v else None
    return worst(False), worst(True)


def avalanche_section(res):
    rows = res.get("avalanche") or []
    if not rows:
        return "_not run_\n"
    best = best_peer(rows, "leases_per_s", lambda r: r.get("bound") == 250)
    body = []
    for r in rows:
        if "error" in r and "bound" not in r:
            body.append([r["server"], "error", "", "", "", "", r["error"][:80]])
            continue
        rat = ratio(best["seconds_to_last_ack"], r["seconds_to_last_ack"]) if (
            r["server"] == "mosboot" and best and r["seconds_to_last_ack"]) else ""
        body.append([r["server"], f'{r["bound"]}/{r["clients"]}', fmt(r["seconds_to_last_ack"], 2), rat,
                     fmt(r["leases_per_s"]), f'{fmt(r["lat_avg_ms"])} / {fmt(r["lat_p50_ms"])} / {fmt(r["lat_max_ms"])}',
                     f'{r.get("discover")} / {r.get("request")}',
                     f'{fmt(r.get("server_ns_rcvbuf_drops"))} / {fmt(r.get("client_ns_rcvbuf_drops"))}'])
    return table(["server", "bound", "s to last ACK", "speed vs best peer", "leases/s",
                  "latency avg / p50 / max ms", "DISCOVERs / REQUESTs sent",
                  "UDP buffer overflows server / client ns"], body) + (
        "\nKea (raw-socket mode) reads through a packet socket, so its drops do not show in the UDP "
        "counter; its retransmitted DISCOVERs show them.\n")


def loss_section(res):
    rows = res.get("loss") or []
    if not rows:
        return "_not run_\n", {}
    body = []
    agg = {}
    for s in dict.fromkeys(r["server"] for r in rows):
        mine = [r for r in rows if r["server"] == s and "acked" in r]
        acked = sum(r["acked"] for r in mine)
        lost = sum(r["lost"] for r in mine)
        worst = max((r["lost"] / r["acked"] * 100 for r in mine if r["acked"]), default=None)
        per = ", ".join(f'{r["lost"]}/{r["acked"]}' for r in mine)
        errs = len([r for r in rows if r["server"] == s and "error" in r])
        body.append([s, len(mine), acked, lost, fmt(100.0 * lost / acked if acked else None, 2),
                     fmt(worst, 1), per + (f" ({errs} errors)" if errs else "")])
        agg[s] = (acked, lost, len(mine))
    return table(["server", "trials", "ACKs seen by clients", "lost after kill -9", "lost %",
                  "worst trial %", "per trial lost/acked"], body), agg


# ---- TFTP --------------------------------------------------------------------------------------
def tftp_key(r):
    return (r["cond"], r.get("clients"), r.get("blksize"), r.get("client", "curl"))


def tftp_rows(res):
    """{step key: {server: row}} of the TFTP series (storm excluded), in run order."""
    out = {}
    for r in res.get("tftp") or []:
        if not r.get("cond", "").startswith("storm") and "clients" in r:
            out.setdefault(tftp_key(r), {})[r["server"]] = r
    return out


def tftp_peer(at):
    """The best peer row of a step (not mosboot, nor an older mosboot)."""
    return best_peer(list(at.values()), "mb_per_s", lambda r: not r["server"].startswith("mosboot"))


def spread(r, key, nd):
    lo, hi = r.get(key + "_min"), r.get(key + "_max")
    if lo is None or hi is None or r.get("reps", 1) < 2:
        return fmt(r.get(key), nd)
    return f"{fmt(r.get(key), nd)} ({fmt(lo, nd)}–{fmt(hi, nd)})"


def pair_range(vals):
    if not vals:
        return ""
    return f" [{min(vals):.2f}–{max(vals):.2f}]" if len(vals) > 1 else ""


def tftp_section(res):
    steps = tftp_rows(res)
    if not steps:
        return "_not run_\n"
    body = []
    for (cond, clients, blk, client), at in steps.items():
        label = f"{clients} ({client})" if client != "curl" else clients
        best = tftp_peer(at)
        for name, r in at.items():
            size = f'{(r.get("file_bytes") or 3 * 1024 * 1024) / 1048576:.0f} MiB'
            if "mb_per_s" not in r:
                body.append([cond, label, blk, size, name, "error", "", "", "", "", "", r.get("error", "")[:80]])
                continue
            mine = name.startswith("mosboot") and best
            rat = ratio(r["mb_per_s"], best["mb_per_s"]) if mine else ""
            cpu_rat = ratio(r.get("cpu_s_per_mb"), best.get("cpu_s_per_mb")) if mine else ""
            if name == "mosboot" and best:
                rat += pair_range(best.get("pair_speed"))
                cpu_rat += pair_range(best.get("pair_cpu"))
            body.append([cond, label, blk, size, name, spread(r, "mb_per_s", 2), rat, f'{r["failed"]}',
                         spread(r, "cpu_s_per_mb", 4), cpu_rat, r.get("reps", 1), fmt(r.get("load1"), 1)])
    return table(["link", "clients", "blksize", "file", "server", "MB/s median (min–max)",
                  "vs best peer [per repetition]", "failed", "server CPU s/MB median (min–max)",
                  "CPU/MB vs peer [per repetition]", "runs", "machine load"], body)


def tftp_goal(res):
    """Issue 14: mosboot ≥ the peer's MB/s in every row, at ≤ 0.8× its CPU per MB."""
    steps = tftp_rows(res)
    behind, costly, n = [], [], 0
    for (cond, clients, blk, client), at in steps.items():
        mo, best = at.get("mosboot"), tftp_peer(at)
        if not mo or "mb_per_s" not in mo or not best:
            continue
        n += 1
        label = f"{cond} {clients}{'' if client == 'curl' else ' ' + client} bs{blk}"
        if mo["mb_per_s"] < best["mb_per_s"] or mo.get("failed"):
            behind.append(f'{label} {mo["mb_per_s"] / best["mb_per_s"]:.2f}×' if best["mb_per_s"] else label)
        if best.get("cpu_s_per_mb") and (mo.get("cpu_s_per_mb") or 0) > 0.8 * best["cpu_s_per_mb"]:
            costly.append(f'{label} {mo["cpu_s_per_mb"] / best["cpu_s_per_mb"]:.2f}×')
    if not n:
        return None
    return [f"{n - len(behind)} of {n} rows ≥ peer; CPU/MB > 0.8× in {len(costly)}",
            "; ".join(["behind: " + ", ".join(behind)] if behind else []
                      + (["CPU/MB: " + ", ".join(costly)] if costly else [])) or "–",
            "met" if not behind and not costly else "not met"]


def http_section(res):
    """Issue 14: one 3 MiB fetch over the 1 ms link, HTTP (curl) against TFTP (curl, blksize 1468)."""
    rows = res.get("http") or []
    if not rows:
        return "_not run_\n"
    body = []
    for r in rows:
        if "median_s" not in r:
            body.append([r.get("proto"), "error", "", "", "", r.get("error", "")[:80]])
            continue
        goal = ""
        if r["proto"] == "http":
            goal = "met" if r["median_s"] <= 0.5 and r.get("complete") else "missed"
        body.append([r["proto"], r.get("link"), fmt(r.get("rtt_ms"), 2), f'{r["median_s"]:.3f}',
                     f'{r["min_s"]:.3f}–{r["max_s"]:.3f}', f'{r["trials"]}',
                     "yes" if r.get("complete") else "NO", goal])
    return table(["protocol", "link", "ping RTT ms", "median s", "range s", "trials", "all bytes",
                  "goal ≤ 0.5 s (HTTP)"], body)


def storm_section(res):
    rows = [r for r in (res.get("tftp") or []) if r.get("cond", "").startswith("storm")]
    if not rows:
        return "_not run_\n"
    body = []
    for r in rows:
        if "wall_s" not in r:
            body.append([r["server"], "error", "", "", "", "", r.get("error", "")[:80]])
            continue
        body.append([r["server"], r["clients"], fmt(r["wall_s"], 1), fmt(r.get("line_rate_bound_s"), 1),
                     fmt(r.get("vs_bound"), 3) + "×", r["failed"], fmt(r["mb_per_s"], 2)])
    return table(["server", "clients", "time s", "line-rate bound s", "time / bound", "failed",
                  "aggregate MB/s"], body)


def multicast_section(res):
    """Issue 14: 250 nodes through 100 and 10 Mbit/s, multicast vs unicast; goal ≤ 2× one alone."""
    rows = res.get("multicast") or []
    if not rows:
        return "_not run_\n"
    body = []
    for r in rows:
        if "wall_s" not in r:
            body.append([r.get("cond", ""), r.get("server", ""), "error", "", "", "", "", r.get("error", "")[:80],
                         "", "", "", "", ""])
            continue
        goal = ""
        if r.get("vs_single") is not None and r["server"] != "mosboot-unicast":
            goal = "met" if r["vs_single"] <= 2 and not r["failed"] else "not met"
        sends = fmt(r.get("mc_sends_per_block"), 3) if r.get("mc_sends_per_block") is not None else ""
        tail = ""
        if r.get("mc_done_ms") is not None and r.get("mc_last_data_ms") is not None:
            tail = fmt((r["mc_done_ms"] - r["mc_last_data_ms"]) / 1000, 2)
        cpu = fmt(r.get("clients_cpu_s"), 1) if r.get("clients_cpu_s") is not None else ""
        if cpu and r.get("single_clients_cpu_s") is not None:
            cpu += f" ({fmt(r['single_clients_cpu_s'], 2)})"
        body.append([r["cond"], r["server"], r["clients"], fmt(r["wall_s"], 1), fmt(r.get("single_s"), 2),
                     fmt(r.get("vs_single"), 2) + "×" if r.get("vs_single") is not None else "",
                     r["failed"], sends, goal, r.get("mc_turns", ""), tail, cpu,
                     fmt(r.get("server_cpu_s"), 1) if r.get("server_cpu_s") is not None else "",
                     r.get("rcvbuf_errors", "")])
    setup = res.get("multicast_setup_s")
    note = (f"\nOne namespace per atftp client (atftp binds the group's port without SO_REUSEADDR), all on one "
            f"bridge behind the server's tbf; setting up {rows[0].get('clients', '')} of them took "
            f"{fmt(setup, 1)} s. \"one alone\" is the same server and link with a single client. "
            "DATA/block: the session's DATA packets per file block (retransmissions and gap-filling "
            "passes included); unicast sends one copy per client. Unicast runs fewer clients (its time "
            "grows linearly with their number: 250 take ~250× one alone). All clients run on this "
            "machine's CPUs: with 250 receivers each DATA is copied to 250 namespaces and 250 atftp "
            "processes, so the multicast rows measure the emulation's CPU as much as the link. "
            "master turns and tail: filled only by a server that logs them (blank: not logged); "
            "tail: from the last DATA leaving the server to the last member done; clients' CPU: "
            "user + system time of all client processes (of the one alone in brackets), the kernel's "
            "work of copying each DATA into 250 namespaces lands mostly on the server's CPU; "
            "rcvbuf drops: DATA the clients' kernels dropped because an atftp was too slow to read.\n")
    return table(["link", "server", "clients", "time s", "one alone s", "time / one alone", "failed",
                  "DATA/block", "goal ≤ 2×", "master turns", "tail s", "clients' CPU s", "server CPU s",
                  "rcvbuf drops"], body) + note


def build_section(res):
    b = res.get("build")
    if not b:
        return "_not run_\n"
    body = []
    for k in ("cold", "warm"):
        if k in b:
            body.append([k, fmt(b[k]["mean"], 3), fmt(b[k]["stddev"], 3), fmt(b[k]["min"], 3), fmt(b[k]["max"], 3)])
        else:
            body.append([k, "error", "", "", b.get(k + "_error", "")[:80]])
    out = table(["mosboot build", "mean s", "stddev s", "min s", "max s"], body)
    sz = b.get("sizes", {})
    out += "\n" + table(["file", "bytes"], [[k, f"{v:,}"] for k, v in sz.items()])
    return out


def boot_section(res):
    rows = res.get("boot") or []
    if not rows:
        return "_not run_\n", {}
    body = []
    summary = {}
    for n in sorted({r["nodes"] for r in rows}):
        at = [r for r in rows if r["nodes"] == n]
        per = {}
        for s in dict.fromkeys(r["server"] for r in at):
            ts = [r["last_node_s"] for r in at if r["server"] == s and r.get("last_node_s") is not None]
            per[s] = (sum(ts) / len(ts)) if ts else None
        for s, v in per.items():
            fails = len([r for r in at if r["server"] == s and not r["ok"]])
            rat = ratio(v, per.get("dnsmasq")) if s == "mosboot" else ""
            body.append([n, s, fmt(v, 1), rat, fails])
        summary[n] = per
    return table(["nodes", "server", "power-on → last node joined s", "vs dnsmasq", "failed runs"], body), summary


def floppy_section(res):
    """Mean power-on-to-joined of the ISA floppy node and the PXE node of the same runs."""
    rows = res.get("floppy") or []
    if not isinstance(rows, list) or not rows:
        why = rows.get("skipped") if isinstance(rows, dict) else None
        return f"_not run{': ' + why if why else ''}_\n", None
    ok = [r for r in rows if r.get("floppy_s") is not None and r.get("pxe_s") is not None]
    fl = sum(r["floppy_s"] for r in ok) / len(ok) if ok else None
    px = sum(r["pxe_s"] for r in ok) / len(ok) if ok else None
    body = [["ISA NE2000 486, `mosboot floppy`", fmt(fl, 1), ratio(fl, px), len(rows) - len(ok)],
            ["PCI ne2k_pci 486, PXE (iPXE ROM)", fmt(px, 1), "", len(rows) - len(ok)]]
    return table(["node (16 MB, same run)", "power-on → joined s", "vs PXE", "failed runs"], body), (fl, px)


# ---- targets -----------------------------------------------------------------------------------
def targets(res, dhcp_sum, loss_agg, boot_sum):
    t = []
    # DHCP throughput vs Kea at <= 0.2 % drop
    m = dhcp_sum.get("mosboot")
    k = dhcp_sum.get("kea")
    if m and k:
        mc, kc = m[0], k[0]
        met = mc is not None and (kc is None or mc >= kc)
        t.append(["DHCP leases/s ≥ Kea (persist) at ≤ 0.2 % drops, fsync per ACK",
                  f"{fmt(mc)} (peak {fmt(m[1])})", f"Kea {fmt(kc)} (peak {fmt(k[1])})",
                  "met" if met else "not met"])
    else:
        t.append(["DHCP leases/s ≥ Kea (persist) at ≤ 0.2 % drops", "–", "–", "not measured"])
    t.extend(dhcp_issue14_targets(res, dhcp_sum))
    if "mosboot" in loss_agg:
        a, lost, n = loss_agg["mosboot"]
        t.append(["0 acknowledged leases lost after kill -9", f"{lost} of {a} lost ({n} trials)",
                  ", ".join(f"{s} {v[1]} of {v[0]}" for s, v in loss_agg.items() if s != "mosboot"),
                  "met" if lost == 0 and n > 0 and a > 0 else "not met"])
    else:
        t.append(["0 acknowledged leases lost after kill -9", "–", "–", "not measured"])
    tr = [r for r in (res.get("tftp") or []) if r.get("cond") == "clean" and r.get("clients") == 250
          and r.get("client", "curl") == "curl"]
    mo = next((r for r in tr if r["server"] == "mosboot" and "mb_per_s" in r), None)
    hp = next((r for r in tr if r["server"] == "tftpd-hpa" and "mb_per_s" in r), None)
    if mo and hp:
        cpu_ok = (mo.get("cpu_s_per_mb") or 0) <= 1.5 * (hp.get("cpu_s_per_mb") or 0)
        met = mo["mb_per_s"] >= hp["mb_per_s"] and mo["failed"] == 0 and cpu_ok
        t.append(["TFTP 250 clients: MB/s ≥ tftpd-hpa, 0 failures, CPU/MB ≤ 1.5× tftpd-hpa",
                  f'{fmt(mo["mb_per_s"], 2)} MB/s, {mo["failed"]} failed, {fmt(mo.get("cpu_s_per_mb"), 4)} s/MB',
                  f'{fmt(hp["mb_per_s"], 2)} MB/s, {hp["failed"]} failed, {fmt(hp.get("cpu_s_per_mb"), 4)} s/MB',
                  "met" if met else "not met"])
    else:
        t.append(["TFTP 250 clients vs tftpd-hpa", "–", "–", "not measured"])
    g = tftp_goal(res)
    t.append(["TFTP every row (issue 14): MB/s ≥ tftpd-hpa, CPU/MB ≤ 0.8× (medians)"] + (g or ["–", "–", "not measured"]))
    st = [r for r in (res.get("tftp") or []) if r.get("cond", "").startswith("storm")]
    ms = next((r for r in st if r["server"] == "mosboot" and r.get("vs_bound")), None)
    hs = next((r for r in st if r["server"] == "tftpd-hpa" and r.get("vs_bound")), None)
    if ms:
        t.append(["250-client storm at 100 Mbit/s ≤ 1.1× line-rate bound",
                  f'{fmt(ms["vs_bound"], 3)}× ({ms["failed"]} failed)',
                  f'tftpd-hpa {fmt(hs["vs_bound"], 3)}×' if hs else "–",
                  "met" if ms["vs_bound"] <= 1.1 and ms["failed"] == 0 else "not met"])
    else:
        t.append(["250-client storm ≤ 1.1× line-rate bound", "–", "–", "not measured"])
    b = res.get("build") or {}
    if "warm" in b:
        t.append(["warm `mosboot build` < 1 s", f'{fmt(b["warm"]["mean"], 3)} s', "–",
                  "met" if b["warm"]["mean"] < 1.0 else "not met"])
    else:
        t.append(["warm `mosboot build` < 1 s", "–", "–", "not measured"])
    if boot_sum:
        cells, ok = [], True
        peer = []
        for n, per in sorted(boot_sum.items()):
            mv, dv = per.get("mosboot"), per.get("dnsmasq")
            cells.append(f"{n} node(s): {fmt(mv, 1)} s ({ratio(mv, dv)})")
            peer.append(f"{n}: {fmt(dv, 1)} s")
            ok = ok and mv is not None and dv is not None and mv <= 1.05 * dv
        t.append(["boot time ≤ 1.05× dnsmasq-served", "; ".join(cells), "dnsmasq " + "; ".join(peer),
                  "met" if ok else "not met"])
    else:
        t.append(["boot time ≤ 1.05× dnsmasq-served", "–", "–", "not measured"])
    fl = floppy_section(res)[1]
    if fl and fl[0] is not None and fl[1] is not None:
        t.append(["ISA floppy node ≤ 1.5× PXE node (power-on → joined)", f"{fmt(fl[0], 1)} s ({ratio(*fl)})",
                  f"PXE {fmt(fl[1], 1)} s", "met" if fl[0] <= 1.5 * fl[1] else "not met"])
    else:
        t.append(["ISA floppy node ≤ 1.5× PXE node (power-on → joined)", "–", "–", "not measured"])
    return t


def dhcp_issue14_targets(res, dhcp_sum):
    """Issue 14's DHCP goals: 1.5× Kea's best clean rate, an avalanche without overflows and
    retransmits, OFFERs that do not wait for a busy disk."""
    t = []
    m, k = dhcp_sum.get("mosboot"), dhcp_sum.get("kea")
    if m and k and m[0] is not None and k[0]:
        t.append(["DHCP leases/s ≥ 1.5× Kea's best at ≤ 0.2 % drops, fsync before every ACK",
                  f"{fmt(m[0])} ({ratio(m[0], k[0])})", f"Kea {fmt(k[0])}",
                  "met" if m[0] >= 1.5 * k[0] else "not met"])
    else:
        t.append(["DHCP leases/s ≥ 1.5× Kea's best at ≤ 0.2 % drops", "–", "–", "not measured"])
    av = next((r for r in res.get("avalanche") or [] if r.get("server") == "mosboot" and "bound" in r), None)
    kv = next((r for r in res.get("avalanche") or [] if r.get("server") == "kea" and "bound" in r), None)
    if av:
        over = av.get("server_ns_rcvbuf_drops")
        met = av["bound"] == av["clients"] and over == 0 and (av.get("seconds_to_last_ack") or 9) < 0.5
        t.append(["avalanche: 0 UDP buffer overflows, all 250 bound < 0.5 s (before any retransmit)",
                  f'{av["bound"]}/{av["clients"]} in {fmt(av.get("seconds_to_last_ack"), 2)} s, {fmt(over)} overflows',
                  f'Kea {kv["bound"]}/{kv["clients"]} in {fmt(kv.get("seconds_to_last_ack"), 2)} s' if kv else "–",
                  "met" if met else "not met"])
    else:
        t.append(["avalanche: 0 overflows, all 250 bound < 0.5 s", "–", "–", "not measured"])
    rows = res.get("dhcp-disk") or []
    quiet, busy = offer_latency_under_load(rows, "mosboot")
    kq, kb = offer_latency_under_load(rows, "kea")
    if quiet is not None and busy is not None:
        # "unaffected": within 2× the quiet p99 or 5 ms of it (the machine is shared)
        met = busy <= max(2 * quiet, quiet + 5)
        t.append(["under disk load no OFFER waits for the disk (OFFER p99 as without load)",
                  f"p99 {fmt(quiet, 1)} → {fmt(busy, 1)} ms",
                  f"Kea p99 {fmt(kq, 1)} → {fmt(kb, 1)} ms", "met" if met else "not met"])
    else:
        t.append(["under disk load no OFFER waits for the disk", "–", "–", "not measured"])
    return t


def main():
    res = json.load(open(sys.argv[1]))
    dest = sys.argv[2]
    parts = []
    intro = os.path.join(HERE, "intro.md")
    if os.path.exists(intro):
        parts.append(open(intro).read().rstrip() + "\n\n")
    m = res.get("machine", {})
    parts.append("## This run\n\n")
    parts.append(f"- Date: {res.get('started')}; the whole run took {fmt(res.get('elapsed_s'), 0)} s "
                 f"(per series: {', '.join(f'{k} {v:.0f} s' for k, v in res.get('series_s', {}).items())}).\n")
    parts.append(f"- Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('mem')} RAM, Linux {m.get('kernel')}.\n")
    vers = m.get("versions", {})
    parts.append("- Peers: " + "; ".join(f"{k} {v}" for k, v in vers.items()) + ".\n")
    st = res.get("settings", {})
    parts.append(f"- Settings: DHCP steps {st.get('dhcp_period')} s each at {st.get('dhcp_rates')} offered/s, "
                 f"perfdhcp -R {st.get('dhcp_clients')} (mosboot's new-MAC flood limit raised to as many for the perfdhcp series), "
                 f"perfdhcp's socket buffers {'32 MiB (rcvbuf.c)' if st.get('client_rcvbuf_shim') else 'default'}; kill -9 trials {st.get('loss_trials')} per server "
                 f"at {st.get('loss_rate')} new clients/s; added delay {st.get('delay_us')} µs one way"
                 + (f" (measured ping RTT over that link: {fmt(res.get('delay_rtt_ms'), 2)} ms)"
                    if res.get("delay_rtt_ms") is not None else "") + ".\n")
    if res.get("errors"):
        parts.append("- Harness errors: " + "; ".join(f"{k}: {v}" for k, v in res["errors"].items()) + "\n")
    if res.get("skipped"):
        parts.append("- Skipped: " + "; ".join(res["skipped"]) + "\n")
    parts.append("\n")

    dhcp_txt, dhcp_sum = dhcp_section(res)
    loss_txt, loss_agg = loss_section(res)
    boot_txt, boot_sum = boot_section(res)
    parts.append("## Targets (issue 6)\n\n")
    parts.append(table(["target", "mosboot", "peer", "status"], targets(res, dhcp_sum, loss_agg, boot_sum)))
    notes = os.path.join(HERE, "notes.md")
    if os.path.exists(notes):
        parts.append("\n" + open(notes).read().rstrip() + "\n")
    parts.append("\n## DHCP: perfdhcp full DORA\n\n" + dhcp_txt)
    parts.append("\n## DHCP: 250-client avalanche (all clients start at once; retransmit after 1 s)\n\n"
                 + avalanche_section(res))
    parts.append("\n## DHCP: perfdhcp while another process fsyncs the same disk\n\n" + dhcp_disk_section(res))
    parts.append("\n## DHCP: lease loss after kill -9 under load\n\n" + loss_txt)
    parts.append("\n## TFTP: 3 MiB and 1 MiB files, repeated, interleaved\n\n"
                 "Each row is the median of its runs (min–max in brackets); the servers run side by side on "
                 "addresses of the same link and take turns, the order flipping every repetition. "
                 "[per repetition] is mosboot / peer for each pair of neighbouring runs.\n\n"
                 + tftp_section(res))
    parts.append("\n## TFTP: 250-client storm through a 100 Mbit/s limit (tbf on the server's link)\n\n"
                 + storm_section(res))
    parts.append("\n## TFTP: 250-node storm by multicast (RFC 2090) vs unicast, 100 and 10 Mbit/s\n\n"
                 + multicast_section(res))
    parts.append("\n## HTTP vs TFTP: one 3 MiB fetch at 1 ms one-way delay (`[serve] http`)\n\n"
                 + http_section(res))
    parts.append("\n## Build: `mosboot build` of the demo-like image (hyperfine)\n\n" + build_section(res))
    parts.append("\n## Boot: QEMU power-on to `joined`/`standalone` (486, ne2k_pci, 16 MB)\n\n" + boot_txt)
    parts.append("\n## Boot: ISA floppy node against a PXE node in the same run\n\n" + floppy_section(res)[0])
    with open(dest, "w") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    main()
