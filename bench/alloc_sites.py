#!/usr/bin/env python3
"""Where the proxy's per-request allocations come from.

  bench/alloc_sites.py [--h1] [--requests N] [--top K] [--dhat FILE]

Builds the budget bench (`cargo bench --bench budget --no-run`), runs it under
`valgrind --tool=dhat` (slow: keep N small, 2,000 by default), and groups the
heap blocks allocated on the proxy's thread (stacks that pass through
`budget::start_proxy`) by the first frames outside the allocator and the
standard library. Counts and bytes are divided by every request the bench
sent, warm-up included (N + N/10), so allocations made once at start-up show
as small fractions. `--dhat FILE` reads an existing dhat output instead.

The figures are dhat's: a reallocation counts as one more block. The bench's
own counts (`cargo bench --bench budget`) are the reference; this says where
they come from.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAD_MARK = "budget::start_proxy"
# Frames that say nothing about who allocated.
PLUMBING = re.compile(
    r"^(malloc|calloc|realloc|free|memalign|posix_memalign|aligned_alloc|(__rustc::)?__rust_\w+|__rdl_\w+"
    r"|<budget::Counting as .*>::\w+|budget::count|UnknownInlinedFun|\[root\])$"
)


def bench_executable():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "budget", "--no-run", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "budget" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("alloc_sites: could not find the budget bench executable")


def parse_frame(frame):
    """'0xADDR: function (file:line)' or '0xADDR: function (in object)' -> (function, where)."""
    m = re.match(r"^0x[0-9A-Fa-f]+: (.*?) \((.*)\)$", frame)
    if not m:
        return frame, ""
    return m.group(1), m.group(2)


# The standard library (Vec::with_capacity, Box::new, String::from, …) only
# says that something allocated; keep looking for who. Its frames come with
# paths under library/ or /rustc/ when inlined, and with qualified names or
# these bare ones (and bare file names) when not.
STD_QUALIFIED = re.compile(r"^<?(alloc|core|std)::")
STD_BARE = {
    "alloc", "alloc_impl", "alloc_impl_runtime", "allocate", "allocate_for_layout",
    "try_allocate_in", "with_capacity_in", "with_capacity", "to_vec", "to_vec_in", "to_owned",
    "finish_grow", "grow_amortized", "grow_one", "reserve", "do_reserve_and_handle",
    "append_elements", "spec_extend", "extend_from_slice", "box_new_uninit", "new_uninit_in",
    "to_os_string", "aligned_malloc",
}


def is_plumbing(function, where):
    if PLUMBING.match(function):
        return True
    if where.startswith("library/") or "/rustc/" in where:
        return True
    if STD_QUALIFIED.match(function):
        return True
    bare = function.split("<", 1)[0]
    return "::" not in bare and bare in STD_BARE


def label(function, where):
    if function == "UnknownInlinedFun" or not function:
        return where
    # `<T as Trait>::f` -> `T::f`, and generic arguments dropped, to keep
    # lines readable.
    while True:
        short = re.sub(r"<([^<>]*) as [^<>]*>", r"\1", function)
        short = re.sub(r"(?<=\w)<[^<>]*>", "", short)
        if short == function:
            break
        function = short
    return short if len(short) <= 90 else short[:89] + "…"


def sites(data, depth):
    frames = data["ftbl"]
    out = {}
    for pp in data["pps"]:
        stack = [frames[i] for i in pp["fs"]]
        if not any(THREAD_MARK in f for f in stack):
            continue
        chain = []
        for frame in stack:
            function, where = parse_frame(frame)
            if is_plumbing(function, where):
                continue
            name = label(function, where)
            if not chain or chain[-1] != name:
                chain.append(name)
            if len(chain) == depth:
                break
        key = " ← ".join(chain) or "(unknown)"
        blocks, total = out.get(key, (0, 0))
        out[key] = (blocks + pp["tbk"], total + pp["tb"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h1", action="store_true", help="HTTP/1.1 instead of HTTP/2")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests of the bench (default 2000)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--depth", type=int, default=3, help="frames shown per site (default 3)")
    parser.add_argument("--dhat", help="read this dhat output instead of running the bench")
    args = parser.parse_args()
    if args.dhat:
        path = Path(args.dhat)
    else:
        exe = bench_executable()
        out_dir = ROOT / "bench" / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"dhat-budget-{'h1' if args.h1 else 'h2'}.json"
        argv = ["valgrind", "--tool=dhat", "--num-callers=100", f"--dhat-out-file={path}", exe,
                "--requests", str(args.requests)] + (["--h1"] if args.h1 else [])
        print("running: " + " ".join(argv), file=sys.stderr)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            sys.exit(f"alloc_sites: the bench failed:\n{done.stderr[-2000:]}")
        print(done.stdout, file=sys.stderr)
    data = json.loads(path.read_text())
    handled = args.requests + max(args.requests // 10, 1)
    found = sites(data, args.depth)
    blocks = sum(b for b, _ in found.values())
    total = sum(t for _, t in found.values())
    print(f"Heap blocks allocated on the proxy's thread, per request ({handled} requests "
          f"including warm-up): {blocks / handled:.2f} blocks, {total / handled:,.0f} bytes")
    print()
    print(f"| blocks/request | bytes/request | allocated at (first {args.depth} frames outside std) |")
    print("|---:|---:|---|")
    ranked = sorted(found.items(), key=lambda kv: -kv[1][0])
    for key, (b, t) in ranked[:args.top]:
        print(f"| {b / handled:.2f} | {t / handled:,.0f} | {key.replace('|', '/')} |")
    print()
    print("By bytes:")
    print()
    print("| bytes/request | blocks/request | allocated at |")
    print("|---:|---:|---|")
    for key, (b, t) in sorted(found.items(), key=lambda kv: -kv[1][1])[:10]:
        print(f"| {t / handled:,.0f} | {b / handled:.2f} | {key.replace('|', '/')} |")


if __name__ == "__main__":
    main()
