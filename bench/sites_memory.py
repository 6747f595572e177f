#!/usr/bin/env python3
"""What sites, routes and upstream addresses cost in memory.

  bench/sites_memory.py [--bin PATH] [--sites N] [--routes M] [--upstreams K]

Starts the release binary (one worker, access log off, no origin needed:
nothing is requested) with four configurations and reads its resident
memory (VmRSS) once it listens and has settled:

  base       one site in front of origin.url
  sites      N sites, each with its own certificate (P-256, generated with
             openssl), all sent to one upstream
  routes     the same N sites with M routes each (N x M routes)
  upstreams  one site, K upstreams of one address each, one route per
             upstream (each address gets a connection pool per worker)

and prints the difference to `base` divided by the count: bytes per site,
per route and per upstream address. Each configuration runs three times
and the median RSS is used. Writes a markdown table to stdout.
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"linkpush exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def make_cert(directory, name):
    cert = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return cert, key


def head(port):
    return (
        f'[[listen]]\naddress = "127.0.0.1:{port}"\n\n'
        "[tls]\nself_signed = true\n\n"
        '[origin]\nurl = "http://127.0.0.1:9"\n\n'
        "[server]\nworkers = 1\n\n[log]\naccess_log = false\n\n"
    )


def config_base(port, _certs, _args):
    return head(port)


def config_sites(port, certs, args, routes=0):
    text = head(port)
    for i, (cert, key) in enumerate(certs[: args.sites]):
        text += (
            f'[[sites]]\nnames = ["site{i}.example", "www.site{i}.example"]\n'
            f'cert = "{cert}"\nkey = "{key}"\n'
        )
        for r in range(routes):
            text += f'[[sites.routes]]\npath = "/section{r}"\npush = {str(r % 2 == 0).lower()}\n'
    return text


def config_routes(port, certs, args):
    return config_sites(port, certs, args, routes=args.routes)


def config_upstreams(port, _certs, args):
    text = head(port)
    for u in range(args.upstreams):
        text += f'[upstreams.u{u}]\nservers = ["http://127.0.0.1:{10000 + u}"]\n'
    text += '[[sites]]\ndefault = true\n'
    for u in range(args.upstreams):
        text += f'[[sites.routes]]\npath = "/u{u}"\nupstream = "u{u}"\n'
    return text


def measure(binary, text, directory, runs=3):
    samples = []
    for _ in range(runs):
        port = free_port()
        text_now = text.replace("PORT", str(port))
        path = directory / "measure.toml"
        path.write_text(text_now)
        proc = subprocess.Popen(
            [binary, "--config", str(path), "--log-level", "warn"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(port, proc)
            time.sleep(1.0)
            samples.append(rss_kib(proc.pid))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=str(ROOT / "target/release/linkpush"))
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=10)
    parser.add_argument("--upstreams", type=int, default=1000)
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is not an executable; build with cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        certs = [make_cert(directory, f"site{i}.example") for i in range(args.sites)]
        results = {}
        for name, build in [
            ("base", config_base),
            ("sites", config_sites),
            ("routes", config_routes),
            ("upstreams", config_upstreams),
        ]:
            results[name] = measure(args.bin, build("PORT", certs, args), directory)
        base = results["base"]
        per_site = (results["sites"] - base) * 1024 / args.sites
        routes = args.sites * args.routes
        per_route = (results["routes"] - results["sites"]) * 1024 / routes
        per_upstream = (results["upstreams"] - base) * 1024 / args.upstreams
        print("| configuration | RSS | per item |")
        print("| --- | ---: | ---: |")
        print(f"| one site (base) | {base / 1024:.1f} MiB | |")
        print(
            f"| {args.sites} sites, own certificates | {results['sites'] / 1024:.1f} MiB "
            f"| {per_site / 1024:.2f} KiB per site |"
        )
        print(
            f"| {args.sites} sites × {args.routes} routes | {results['routes'] / 1024:.1f} MiB "
            f"| {per_route:.0f} bytes per route |"
        )
        print(
            f"| {args.upstreams} upstreams, one address each, a route to each "
            f"| {results['upstreams'] / 1024:.1f} MiB | {per_upstream / 1024:.2f} KiB per upstream address |"
        )


if __name__ == "__main__":
    main()
