#!/usr/bin/env python3
"""Where the memory of an idle client connection goes.

  bench/idle_sites.py [--connections N] [--bin PATH] [--top K]

Runs the release binary (one worker, access log off) under
`valgrind --tool=dhat` in front of bench/tiny_origin.py, opens N TLS + HTTP/2
connections with `bench/pushclient idle` (one request each, then held open),
stops the proxy and reads dhat's record of the heap at its peak, which is
while every connection is open. The heap live at that moment is grouped by
the first frames outside the allocator and the standard library and divided
by N: bytes per idle connection, by who holds them. Heap only: the kernel's
socket buffers and the allocator's own overhead are not in it, which is why
the figure is below the RSS growth that scenario 3 of bench/run.sh reports.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUMBING = re.compile(
    r"^(malloc|calloc|realloc|free|memalign|posix_memalign|aligned_alloc|(__rustc::)?__rust_\w+"
    r"|__rdl_\w+|alloc::\S+|<alloc::\S+|core::\S+|<core::\S+|std::\S+|\[root\]|UnknownInlinedFun)"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def frame_name(frames, index):
    text = frames[index]
    # dhat frames look like "0x4A3B2C: function (file:line)".
    m = re.match(r"^0x[0-9A-Fa-f]+: (.*?)(?: \(.*\))?$", text)
    return m.group(1) if m else text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--bin", default=str(ROOT / "target/release/linkpush"))
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    pushclient = ROOT / "bench/pushclient/target/release/pushclient"
    if not pushclient.exists():
        subprocess.run(["cargo", "build", "--release", "--manifest-path",
                        str(ROOT / "bench/pushclient/Cargo.toml")], check=True)
    work = Path(tempfile.mkdtemp(prefix="idle-sites-"))
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    origin_port, proxy_port = free_port(), free_port()
    page = work / "small.txt"
    page.write_bytes(b"x" * 100)
    origin = subprocess.Popen([sys.executable, str(ROOT / "bench/tiny_origin.py"),
                               "--port", str(origin_port), "--file", str(page)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = work / "linkpush.toml"
    config.write_text(
        f'[[listen]]\naddress = "127.0.0.1:{proxy_port}"\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
        f'[origin]\nurl = "http://127.0.0.1:{origin_port}"\n'
        '[log]\nlevel = "warn"\naccess_log = false\n[server]\nworkers = 1\n')
    dhat_out = work / "dhat.json"
    proxy = subprocess.Popen(["valgrind", "--tool=dhat", "--num-callers=40",
                              f"--dhat-out-file={dhat_out}", args.bin, "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(origin_port)
        wait_port(proxy_port)
        client = subprocess.run(
            [str(pushclient), "idle", "--connect", f"127.0.0.1:{proxy_port}",
             "--authority", f"127.0.0.1:{proxy_port}", "--cert", str(cert), "--path", "/",
             "-c", str(args.connections), "--parallel", "16", "--hold", "3", "--timeout", "300"],
            capture_output=True, text=True, timeout=900)
        print(client.stdout.strip().splitlines()[-1] if client.stdout.strip() else client.stderr)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=300)
        origin.terminate()
    data = json.loads(dhat_out.read_text())
    frames = data["ftbl"]
    sites = {}
    total = 0
    for pp in data["pps"]:
        live = pp.get("gb", 0)
        if not live:
            continue
        total += live
        names = [frame_name(frames, i) for i in pp["fs"]]
        kept = [n for n in names if not PLUMBING.match(n)][:3]
        site = " ← ".join(kept) or names[0]
        sites[site] = sites.get(site, 0) + live
    n = args.connections
    print(f"\nheap live at the peak: {total / 1024:,.0f} KiB; "
          f"per connection (all of it / {n}): {total / n / 1024:.1f} KiB\n")
    print("| bytes / connection | held by (first 3 frames outside std) |")
    print("|---:|---|")
    for site, live in sorted(sites.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"| {live / n:,.0f} | {site[:200]} |")


if __name__ == "__main__":
    main()
