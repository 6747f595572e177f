#!/usr/bin/env python3
"""Report of bench/budget.sh: raw outputs in bench/out/budget/LABEL/ -> markdown.

  budget_report.py --work DIR --out FILE     write the report (and print it)
  budget_report.py --check-h2load FILE N     exit 0 iff the h2load run in FILE
                                             completed N requests, all 2xx
"""

import argparse
import re
import statistics
import sys
from pathlib import Path

TOP = 25
NAME_WIDTH = 120


def parse_h2load(path):
    text = Path(path).read_text(errors="replace")
    r = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    if m:
        r["elapsed_s"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", text)
    if m:
        r["succeeded"] = int(m.group(4))
    m = re.search(r"status codes: (\d+) 2xx", text)
    if m:
        r["status_2xx"] = int(m.group(1))
    m = re.search(r"Application protocol: (\S+)", text)
    if m:
        r["alpn"] = m.group(1)
    return r


def check_h2load(path, n):
    r = parse_h2load(path)
    return r.get("succeeded") == n and r.get("status_2xx") == n


def read_results(work):
    out = {}
    for line in (work / "results.txt").read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def parse_strace(path):
    """strace -c table -> ({syscall: (calls, errors)}, total calls)."""
    rows, total = {}, None
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 5 or not re.match(r"^[\d.]+$", parts[0]):
            continue
        name = parts[-1]
        calls = int(parts[3])
        errors = int(parts[4]) if len(parts) == 6 else 0
        if name == "total":
            total = calls
        else:
            rows[name] = (calls, errors)
    if total is None:
        total = sum(c for c, _ in rows.values())
    return rows, total


def callgrind_total(path):
    for line in Path(path).read_text(errors="replace").splitlines():
        m = re.match(r"^(?:summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(1))
    return None


def parse_annotate(path):
    """callgrind_annotate output -> [(name, cost, percent)] in its order."""
    rows, started = [], False
    for line in Path(path).read_text(errors="replace").splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.+?)\s*$", line)
        if m:
            rows.append((m.group(3), int(m.group(1).replace(",", "")), float(m.group(2))))
        elif rows and line.startswith("---"):
            break
    return rows


def split_name(entry):
    """`file:function [object]` -> (function, object basename or None)."""
    obj = None
    m = re.search(r"\s+\[([^\]]*)\]$", entry)
    if m:
        obj = Path(m.group(1)).name
        entry = entry[:m.start()]
    m = re.match(r"^(\?\?\?|[^:]*\.[A-Za-z]+):(.*)$", entry)
    return (m.group(2) if m else entry), obj


def merge_functions(rows, how, total):
    """callgrind_annotate names a function once per source file its
    instructions come from (inlined code); merge them by function name:
    self costs add up, inclusive costs take the largest (the parts overlap)."""
    merged, objects = {}, {}
    for entry, cost, _ in rows:
        name, obj = split_name(entry)
        if obj:
            objects.setdefault(name, obj)
        if how == "sum":
            merged[name] = merged.get(name, 0) + cost
        else:
            merged[name] = max(merged.get(name, 0), cost)
    out = sorted(merged.items(), key=lambda kv: -kv[1])
    return [(name, cost, cost * 100.0 / total if total else 0.0, objects.get(name)) for name, cost in out]


def short(name, obj=None):
    """A function name cut to width, its object named when it is a library."""
    if len(name) > NAME_WIDTH:
        name = name[:NAME_WIDTH - 1] + "…"
    if obj and (".so" in obj):
        name += f" ({obj})"
    return name.replace("|", "\\|")


def fmt(x, digits=2):
    if x is None:
        return "n/a"
    if isinstance(x, int) or digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def protocol_figures(work, res, proto):
    f = {}
    runs = int(res.get("runs", "0") or 0)
    plain = []
    for i in range(1, runs + 1):
        path = work / f"{proto}-plain-{i}.txt"
        if not path.exists():
            continue
        r = parse_h2load(path)
        cpu = float(res.get(f"{proto}.plain.{i}.cpu_s", "nan"))
        ok = r.get("succeeded") or 0
        r["cpu_s_per_10k"] = cpu / ok * 10000 if ok else None
        r["core_use"] = cpu / r["elapsed_s"] if r.get("elapsed_s") else None
        plain.append(r)
    if plain:
        for key in ("rps", "cpu_s_per_10k", "core_use"):
            values = [r[key] for r in plain if r.get(key) is not None]
            f[key] = statistics.median(values) if values else None
            f[key + "_all"] = values
        f["alpn"] = plain[0].get("alpn")
    strace = work / f"{proto}-strace.txt"
    if strace.exists():
        rows, total = parse_strace(strace)
        h = parse_h2load(work / f"{proto}-strace-h2load.txt")
        n = h.get("succeeded") or 0
        f["strace_rows"], f["strace_total"], f["strace_n"] = rows, total, n
        f["strace_rps"] = h.get("rps")
    one, two = work / f"callgrind-{proto}-1.out", work / f"callgrind-{proto}-2.out"
    if one.exists() and two.exists():
        n = int(res.get(f"{proto}.vg_requests", "0"))
        i1, i2 = callgrind_total(one), callgrind_total(two)
        f["vg_n"], f["ir_1"], f["ir_2"] = n, i1, i2
        f["ir_per_request"] = (i2 - i1) / n if None not in (i1, i2) and n else None
        self2 = merge_functions(parse_annotate(work / f"callgrind-{proto}-2-inclusive-no.txt"), "sum", i2)
        self1 = {name: cost for name, cost, _, _ in
                 merge_functions(parse_annotate(work / f"callgrind-{proto}-1-inclusive-no.txt"), "sum", i1)}
        f["top_self"] = [(name, cost, pct, obj, (cost - self1.get(name, 0)) / n if n else None)
                         for name, cost, pct, obj in self2[:TOP]]
        f["top_inclusive"] = merge_functions(
            parse_annotate(work / f"callgrind-{proto}-2-inclusive-yes.txt"), "max", i2)[:TOP]
    return f


def report(work):
    res = read_results(work)
    protos = [p for p in ("h2", "h1") if (work / f"linkpush-{p}.log").exists()]
    figs = {p: protocol_figures(work, res, p) for p in protos}
    names = {"h2": "HTTP/2", "h1": "HTTP/1.1"}
    load = {"h2": "h2load -c 10 -m 10", "h1": "h2load --h1 -c 10 -m 1"}
    req = res.get("requests", "?")
    L = []
    L.append(f"# linkpush per-request budget: {res.get('label')}")
    L.append("")
    L.append(f"- binary: `{res.get('bin')}` ({res.get('bin_version') or 'version unknown'}"
             f"{', tree at ' + res['bin_commit'] if res.get('bin_commit') else ''})")
    L.append(f"- date: {res.get('date')}; CPU: {res.get('cpu_model')}; load average at start "
             f"{res.get('loadavg_start')}, at end {res.get('loadavg_end')}")
    L.append(f"- origin: {res.get('origin')}; {res.get('h2load_version')}; "
             f"{res.get('valgrind_version')}; {res.get('strace_version')}")
    L.append("- request: GET /small.txt over TLS, 100-byte response, no Link header; linkpush "
             "as templates/linkpush.toml (one worker, access log off) on CPU 1, h2load and the "
             "origin on CPU 0")
    L.append("")
    L.append("## Summary")
    L.append("")
    L.append("| figure | " + " | ".join(names[p] for p in protos) + " |")
    L.append("|---|" + "---|" * len(protos))

    def row(label, values):
        L.append(f"| {label} | " + " | ".join(values) + " |")

    row(f"req/s (`-n {req}`, median of {res.get('runs')})",
        [fmt(figs[p].get("rps"), 0) for p in protos])
    row("CPU s per 10k requests (utime+stime, median)",
        [fmt(figs[p].get("cpu_s_per_10k"), 3) for p in protos])
    row("proxy core use during the run (median)",
        [fmt(figs[p].get("core_use"), 2) for p in protos])
    row("CPU µs per request (= CPU s per 10k × 100)",
        [fmt(figs[p]["cpu_s_per_10k"] * 100, 1) if figs[p].get("cpu_s_per_10k") else "n/a" for p in protos])
    row("syscalls per request (strace -c)",
        [fmt(figs[p]["strace_total"] / figs[p]["strace_n"], 2) if figs[p].get("strace_n") else "n/a"
         for p in protos])
    row("instructions per request (callgrind, (I(2N) − I(N)) / N)",
        [fmt(figs[p].get("ir_per_request"), 0) for p in protos])
    row("N of the callgrind runs", [str(figs[p].get("vg_n", "n/a")) for p in protos])
    L.append("")
    L.append("Load: " + "; ".join(f"{names[p]}: `{load[p]} -t 1`" for p in protos)
             + ". Individual runs (req/s): "
             + "; ".join(f"{names[p]} " + ", ".join(fmt(v, 0) for v in figs[p].get("rps_all", []))
                         for p in protos) + ".")
    L.append("")

    if any(figs[p].get("strace_rows") is not None for p in protos):
        L.append(f"## Syscalls per request (`strace -c -f -p PID`, one run of `-n {req}`)")
        L.append("")
        L.append("Counted over the whole h2load run, TLS handshakes of its 10 connections "
                 "included; the traced proxy is slower, which can change how many requests "
                 "each read or wake-up covers (see the README).")
        L.append("")
        sp = [p for p in protos if figs[p].get("strace_rows") is not None]
        allnames = set()
        for p in sp:
            allnames |= set(figs[p]["strace_rows"])
        first = sp[0]
        order = sorted(allnames, key=lambda s: -figs[first]["strace_rows"].get(s, (0, 0))[0])
        L.append("| syscall | " + " | ".join(f"{names[p]} per request | {names[p]} calls (errors)"
                                           for p in sp) + " |")
        L.append("|---|" + "---:|---:|" * len(sp))
        for s in order:
            cells = []
            for p in sp:
                calls, errors = figs[p]["strace_rows"].get(s, (0, 0))
                n = figs[p]["strace_n"] or 1
                cells.append(f"{calls / n:.3f}")
                cells.append(f"{calls:,}" + (f" ({errors:,})" if errors else ""))
            L.append(f"| {s} | " + " | ".join(cells) + " |")
        cells = []
        for p in sp:
            n = figs[p]["strace_n"] or 1
            cells += [f"**{figs[p]['strace_total'] / n:.3f}**", f"{figs[p]['strace_total']:,}"]
        L.append("| **total** | " + " | ".join(cells) + " |")
        L.append("")
        L.append("req/s under strace: " + "; ".join(f"{names[p]} {fmt(figs[p].get('strace_rps'), 0)}"
                                                     for p in sp) + ".")
        L.append("")

    for p in protos:
        f = figs[p]
        if "top_self" not in f:
            continue
        n = f["vg_n"]
        L.append(f"## {names[p]}: instructions (callgrind)")
        L.append("")
        L.append(f"I(N) = {f['ir_1']:,} for N = {n:,} requests, I(2N) = {f['ir_2']:,}: "
                 f"**{fmt(f['ir_per_request'], 0)} instructions per request**. "
                 f"`{load[p].replace('-c 10', '-c 2')}` against the proxy under "
                 "`valgrind --tool=callgrind --cache-sim=no`.")
        L.append("")
        L.append(f"Top {TOP} functions of the 2N run by self cost (a function's parts "
                 "inlined from several source files added up). *Per request* is the "
                 "function's self cost in the 2N run minus that in the N run, divided by N "
                 "(start-up and handshakes cancel).")
        L.append("")
        L.append("| # | function | self Ir (2N run) | % | per request |")
        L.append("|---:|---|---:|---:|---:|")
        for i, (name, cost, pct, obj, per) in enumerate(f["top_self"], 1):
            L.append(f"| {i} | {short(name, obj)} | {cost:,} | {pct:.2f} | {fmt(per, 0)} |")
        L.append("")
        L.append(f"Top {TOP} by inclusive cost (2N run):")
        L.append("")
        L.append("| # | function | inclusive Ir | % |")
        L.append("|---:|---|---:|---:|")
        for i, (name, cost, pct, obj) in enumerate(f["top_inclusive"], 1):
            L.append(f"| {i} | {short(name, obj)} | {cost:,} | {pct:.2f} |")
        L.append("")
    L.append(f"Raw outputs: `bench/out/budget/{res.get('label')}/` (callgrind files open in "
             "`callgrind_annotate` or KCachegrind).")
    return "\n".join(L) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work")
    parser.add_argument("--out")
    parser.add_argument("--check-h2load", nargs=2, metavar=("FILE", "N"))
    args = parser.parse_args()
    if args.check_h2load:
        path, n = args.check_h2load
        sys.exit(0 if check_h2load(path, int(n)) else 1)
    if not args.work or not args.out:
        parser.error("--work and --out are required")
    text = report(Path(args.work))
    Path(args.out).write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
