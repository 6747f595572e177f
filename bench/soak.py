#!/usr/bin/env python3
"""Bounded soak of linkpush: resident memory under sustained load.

Called by bench/soak.sh, which installs the programs, makes the certificate and
builds the binaries. Two runs, each against a freshly started linkpush in front
of the static nginx origin of bench/harness.py:

  plain  h2load -c 100 -m 10 -D SECONDS on /small.txt (100 bytes);
  reset  the same with 90 h2load connections, while `pushclient reset` holds
         the other 10 and cancels a random share of its streams with
         RST_STREAM(CANCEL) (after HEADERS, while waiting, after the response
         head, or mid-body), on /reset/100k.bin.

The proxy's VmRSS is sampled every second into a CSV. Results go to
bench/results/soak.md (and are printed), the samples to
bench/results/soak-<run>.csv, raw outputs to bench/out/soak/.

Everything listens on 127.0.0.1 only. Each load is bounded in time (h2load -D,
the reset client's --duration, and `timeout` around both); every server
started here is stopped here by PID.
"""

import argparse
import atexit
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the Server class, templates and /proc helpers)
from harness import OUT, Server, log, render  # noqa: E402

BENCH = harness.BENCH
SOAK_OUT = OUT / "soak"
RESULTS = BENCH / "results"
SMALL = "/small.txt"
RESET_PATH = "/reset/100k.bin"
RESET_SIZE = 100 * 1024

# What "flat" means: after the warm-up, RSS grows by at most this much in
# total (the larger of the two) and by at most this much per minute.
FLAT_TOTAL_KIB = 2048
FLAT_TOTAL_SHARE = 0.10
FLAT_SLOPE_KIB_PER_MIN = 1024


def proc_status_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Sampler(threading.Thread):
    """VmRSS and CPU time of one process, once a second, from t0 on."""

    def __init__(self, pid, t0, period=1.0):
        super().__init__(daemon=True)
        self.pid, self.t0, self.period = pid, t0, period
        self.samples = []  # (t_s, rss_kib, cpu_s)
        self.halt = threading.Event()

    def sample(self):
        rss = proc_status_kib(self.pid)
        if rss is not None:
            self.samples.append((time.monotonic() - self.t0, rss, harness.cpu_seconds(self.pid)))

    def run(self):
        # The t = 0 sample is taken by the caller, before the load starts.
        next_at = self.t0 + self.period
        while not self.halt.wait(max(0.0, next_at - time.monotonic())):
            self.sample()
            next_at += self.period

    def stop(self):
        self.halt.set()
        self.join(timeout=5)


def least_squares_slope(points):
    """Slope of y over x by least squares; None with fewer than two points."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def parse_h2load(text):
    out = {}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    if m:
        out["finished_s"], out["req_per_s"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
        out.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out.update({k: int(v) for k, v in zip(["2xx", "3xx", "4xx", "5xx"], m.groups())})
    return out


def scrape_metrics(port):
    """A few counters from linkpush's Prometheus page."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as e:
        return {"error": str(e)}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        for want in ("linkpush_connections_total", "linkpush_client_resets_total",
                     "linkpush_reset_floods_total", "linkpush_requests_total",
                     "linkpush_origin_errors_total", "linkpush_tls_handshake_failures_total"):
            if name.startswith(want):
                try:
                    out[name] = int(float(value))
                except ValueError:
                    pass
    return out


class Soak:
    def __init__(self, args):
        self.args = args
        self.seconds = args.seconds
        # The first samples are left out of "flat": buffers, pools and
        # tables fill up first. 10 s, or a third of a shorter run.
        self.warmup = args.warmup if args.warmup is not None else min(10.0, self.seconds / 3)
        base = args.port_base
        self.ports = {"origin": base, "proxy": base + 10, "metrics": base + 11}
        self.cert = Path(args.cert).resolve()
        self.key = Path(args.key).resolve()
        self.linkpush = Path(args.linkpush).resolve()
        self.pushclient = Path(args.pushclient).resolve()
        pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
        # As in bench/harness.py: the proxy on its own core, load and origin on the other.
        self.proxy_cpu = "1" if pin else None
        self.load_cpu = "0" if pin else None
        self.www = SOAK_OUT / "www"
        self.results = {"meta": {}, "runs": {}}

    def pinned(self, argv):
        return (["taskset", "-c", self.load_cpu] + argv) if self.load_cpu is not None else argv

    # ---- servers

    def make_docroot(self):
        (self.www / "reset").mkdir(parents=True, exist_ok=True)
        (self.www / "small.txt").write_bytes((b"soak " * 20)[:100])
        (self.www / "reset" / "100k.bin").write_bytes(bytes(i % 251 for i in range(RESET_SIZE)))

    def start_origin(self):
        run = SOAK_OUT / "run" / "origin"
        run.mkdir(parents=True, exist_ok=True)
        conf = render("origin-nginx.conf", run / "nginx.conf",
                      {"RUN": run, "PORT": self.ports["origin"], "DOCROOT": self.www})
        return Server("soak-origin", ["nginx", "-c", str(conf), "-p", str(run) + "/"],
                      self.ports["origin"], cpu=self.load_cpu).start()

    def start_proxy(self):
        run = SOAK_OUT / "run" / "linkpush"
        run.mkdir(parents=True, exist_ok=True)
        conf = render("linkpush.toml", run / "linkpush.toml", {
            "PORT": self.ports["proxy"], "CERT": self.cert, "KEY": self.key,
            "ORIGIN_URL": f"http://127.0.0.1:{self.ports['origin']}", "PUSH": "push"})
        with open(conf, "a") as f:
            f.write(f"\n[metrics]\nlisten = \"127.0.0.1:{self.ports['metrics']}\"\n")
        return Server("soak-linkpush", [str(self.linkpush), "run", "--config", str(conf)],
                      self.ports["proxy"], cpu=self.proxy_cpu).start()

    # ---- one run

    def h2load_argv(self, clients):
        url = f"https://127.0.0.1:{self.ports['proxy']}{SMALL}"
        argv = ["timeout", "-s", "KILL", str(int(self.seconds) + 30),
                "h2load", "-c", str(clients), "-m", "10", "-D", str(int(self.seconds))]
        argv += shlex.split(self.args.h2load_args) + [url]
        return self.pinned(argv)

    def reset_argv(self, clients):
        argv = [str(self.pushclient), "reset",
                "--connect", f"127.0.0.1:{self.ports['proxy']}",
                "--authority", f"127.0.0.1:{self.ports['proxy']}",
                "--cert", str(self.cert), "--path", RESET_PATH,
                "--stream-window", "65535",
                "-c", str(clients), "-m", "10",
                "--reset-fraction", str(self.args.reset_fraction),
                "--max-resets-per-s", str(self.args.max_resets_per_s),
                "--duration", str(self.seconds), "--seed", "20240601"]
        return self.pinned(["timeout", "-s", "KILL", str(int(self.seconds) + 30)] + argv)

    def check(self, proxy):
        """One short h2load run, so that the proxy, the origin and the
        certificate are known to work before the soak starts."""
        url = f"https://127.0.0.1:{self.ports['proxy']}{SMALL}"
        p = subprocess.run(["timeout", "-s", "KILL", "30", "h2load", "-c", "1", "-n", "100", url],
                           capture_output=True, text=True)
        got = parse_h2load(p.stdout)
        if got.get("succeeded") != 100:
            raise RuntimeError(f"check run through linkpush failed: {p.stdout[-600:]} {p.stderr[-300:]}")
        probe = subprocess.run(
            [str(self.pushclient), "reset", "--connect", f"127.0.0.1:{self.ports['proxy']}",
             "--cert", str(self.cert), "--path", RESET_PATH, "-c", "1", "-m", "1",
             "--reset-fraction", "0", "-n", "2", "--duration", "10"],
            capture_output=True, text=True, timeout=30)
        try:
            probe_json = json.loads(probe.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise RuntimeError(f"pushclient reset did not run: {probe.stderr[-400:]}")
        if probe_json.get("completed") != 2 or probe_json.get("completed_bytes") != 2 * RESET_SIZE:
            raise RuntimeError(f"pushclient could not fetch {RESET_PATH}: {probe_json}")

    def run_one(self, name, resetting):
        log(f"run {name}: starting linkpush")
        proxy = self.start_proxy()
        try:
            self.check(proxy)
            time.sleep(1.0)
            h2load_clients = 100 - resetting
            commands = {"h2load": self.h2load_argv(h2load_clients)}
            if resetting:
                commands["reset"] = self.reset_argv(resetting)
            raw = SOAK_OUT / name
            raw.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            sampler = Sampler(proxy.pid, t0)
            sampler.sample()  # t = 0: before any load
            procs = {}
            for key, argv in commands.items():
                procs[key] = subprocess.Popen(argv, stdout=open(raw / f"{key}.out", "w"),
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            sampler.start()
            log(f"run {name}: {' + '.join(commands)} for {self.seconds:g} s "
                f"({h2load_clients} h2load connections"
                + (f", {resetting} resetting" if resetting else "") + ")")
            codes = {}
            for key, p in procs.items():
                codes[key] = p.wait(timeout=self.seconds + 60)
            load_end = time.monotonic() - t0
            time.sleep(3.0)  # the clients are gone: what does the proxy keep?
            sampler.stop()
            after = proc_status_kib(proxy.pid)
            metrics = scrape_metrics(self.ports["metrics"])
        finally:
            proxy.stop()
        h2load_text = (raw / "h2load.out").read_text()
        h2 = parse_h2load(h2load_text)
        h2["exit_code"] = codes["h2load"]
        reset = None
        if resetting:
            text = (raw / "reset.out").read_text().strip().splitlines()
            try:
                reset = json.loads(text[-1])
            except (json.JSONDecodeError, IndexError):
                reset = {"fatal": "no JSON from pushclient reset", "output": text[-5:]}
            reset["exit_code"] = codes["reset"]
        samples = sampler.samples
        csv = RESULTS / f"soak-{name}.csv"
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(csv, "w") as f:
            f.write("t_s,rss_kib,proxy_cpu_s\n")
            for t, rss, cpu in samples:
                f.write(f"{t:.2f},{rss},{cpu:.2f}\n")
        under_load = [(t, rss) for t, rss, _ in samples if t <= load_end]
        warm = next(((t, rss) for t, rss in under_load if t >= self.warmup), None)
        steady = [(t, rss) for t, rss in under_load if warm and t >= warm[0]]
        slope = least_squares_slope(steady)
        cpu_used = [cpu for t, _, cpu in samples if t <= load_end]
        rss = {
            "start_kib": under_load[0][1] if under_load else None,
            "warm_t_s": round(warm[0], 1) if warm else None,
            "warm_kib": warm[1] if warm else None,
            "end_kib": under_load[-1][1] if under_load else None,
            "max_kib": max((r for _, r in under_load), default=None),
            "after_idle_kib": after,
            "growth_after_warm_kib": (under_load[-1][1] - warm[1]) if warm else None,
            "slope_kib_per_min": round(slope * 60, 1) if slope is not None else None,
            "samples": len(samples),
            "csv": str(csv.relative_to(harness.ROOT)),
        }
        proxy_cpu = (cpu_used[-1] - cpu_used[0]) / load_end if len(cpu_used) >= 2 and load_end > 0 else None
        self.results["runs"][name] = {
            "commands": {k: " ".join(v) for k, v in commands.items()},
            "seconds": self.seconds,
            "h2load": h2,
            "reset_client": reset,
            "rss": rss,
            "proxy_core_use": round(proxy_cpu, 2) if proxy_cpu is not None else None,
            "metrics": metrics,
        }
        log(f"run {name}: {h2.get('succeeded')} requests succeeded; RSS {rss}")

    # ---- verdicts and report

    def checks(self, name):
        run = self.results["runs"][name]
        h2, rss = run["h2load"], run["rss"]
        out = []
        bad = sum(h2.get(k, 0) or 0 for k in ("failed", "errored", "timeout"))
        errs = bad + (h2.get("4xx") or 0) + (h2.get("5xx") or 0)
        ok = "succeeded" in h2 and errs == 0 and h2.get("succeeded", 0) > 0
        out.append(("well-behaved clients (h2load) got no errors", ok,
                    f"{h2.get('failed')} failed, {h2.get('errored')} errored, {h2.get('timeout')} timeout, "
                    f"{h2.get('4xx')} 4xx, {h2.get('5xx')} 5xx"))
        growth, slope, warm = rss["growth_after_warm_kib"], rss["slope_kib_per_min"], rss["warm_kib"]
        if growth is None or slope is None:
            out.append(("RSS flat after warm-up", False, "too few samples"))
        else:
            limit = max(FLAT_TOTAL_KIB, FLAT_TOTAL_SHARE * warm)
            ok = growth <= limit and slope <= FLAT_SLOPE_KIB_PER_MIN
            out.append(("RSS flat after warm-up", ok,
                        f"end − warm = {growth:+,} KiB (limit {limit:,.0f}), "
                        f"slope {slope:+,.1f} KiB/min (limit {FLAT_SLOPE_KIB_PER_MIN:,})"))
        return out

    def report(self):
        m = self.results["meta"]
        lines = ["## Soak: resident memory under sustained load", "",
                 f"Generated by `bench/soak.sh` on {m['date']}; {m['machine']}. "
                 f"linkpush `{m['linkpush']}`, {m['h2load']}. Each run starts a fresh linkpush "
                 f"(`bench/templates/linkpush.toml`: one worker, defaults otherwise) in front of the "
                 f"static nginx origin, "
                 + ("pinned to CPU 1 with the load and the origin on CPU 0. " if self.proxy_cpu else "unpinned. ")
                 + f"VmRSS of the proxy is sampled every second; *warm* is the first sample after "
                 f"{self.warmup:g} s; *slope* is the least-squares slope of the samples from warm to the end "
                 f"of the load; *after* is 3 s after the clients left.", ""]
        lines += ["| run | requests done (h2load) | req/s | h2load failed / errored / timeout | 4xx / 5xx "
                  "| RSS start | warm | end | max | after | end − warm | slope | proxy core use |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

        def mib(kib):
            return "–" if kib is None else f"{kib / 1024:.1f} MiB"

        def num(value, spec=","):
            return "–" if value is None else format(value, spec)

        for name, run in self.results["runs"].items():
            h2, rss = run["h2load"], run["rss"]
            lines.append(
                f"| {name} | {num(h2.get('done'))} | {num(h2.get('req_per_s'), ',.0f')} | "
                f"{h2.get('failed')} / {h2.get('errored')} / {h2.get('timeout')} | "
                f"{h2.get('4xx')} / {h2.get('5xx')} | {mib(rss['start_kib'])} | {mib(rss['warm_kib'])} | "
                f"{mib(rss['end_kib'])} | {mib(rss['max_kib'])} | {mib(rss['after_idle_kib'])} | "
                f"{num(rss['growth_after_warm_kib'], '+,')} KiB | "
                f"{num(rss['slope_kib_per_min'], '+,.1f')} KiB/min | {run['proxy_core_use']} |")
        lines.append("")
        for name, run in self.results["runs"].items():
            lines.append(f"**{name}**")
            lines.append("")
            for key, cmd in run["commands"].items():
                lines.append(f"- `{key}`: `{cmd}`")
            reset = run.get("reset_client")
            if reset:
                if "fatal" in reset:
                    lines.append(f"- resetting client failed: {reset}")
                else:
                    lines.append(
                        f"- resetting client: {reset['streams_started']:,} streams on "
                        f"{reset['connections_opened']} connections ({reset['connections_closed_by_server']} closed "
                        f"by the server, {reset['goaway_enhance_your_calm']} ENHANCE_YOUR_CALM); "
                        f"{reset['completed']:,} completed, {reset['resets']:,} reset "
                        f"({reset['resets_per_s']:,.0f}/s: {reset['reset_after_headers']:,} right after HEADERS, "
                        f"{reset['reset_while_waiting']:,} while waiting, {reset['reset_after_head']:,} after the "
                        f"response head, {reset['reset_mid_body']:,} mid-body; {reset['reset_too_late']:,} too late), "
                        f"{reset['non_2xx']} non-2xx, {reset['errors']} errors"
                        + (f" (e.g. {reset['error_samples'][0]})" if reset.get("error_samples") else ""))
            metrics = run.get("metrics") or {}
            if metrics and "error" not in metrics:
                fivexx = sum(v for k, v in metrics.items() if k.startswith("linkpush_requests_total") and 'class="5xx"' in k)
                origin_errors = sum(v for k, v in metrics.items() if k.startswith("linkpush_origin_errors_total"))
                lines.append(
                    f"- proxy counters: {metrics.get('linkpush_connections_total', '–'):,} connections, "
                    f"{fivexx} 5xx answers, {origin_errors} origin errors, "
                    f"{metrics.get('linkpush_client_resets_total', '–'):,} streams reset by clients before the "
                    f"response, {metrics.get('linkpush_reset_floods_total', '–')} reset floods cut off")
            for label, ok, detail in self.checks(name):
                lines.append(f"- {'PASS' if ok else 'FAIL'}: {label}: {detail}")
            lines.append(f"- samples: `{run['rss']['csv']}`")
            lines.append("")
        return "\n".join(lines)

    def collect_meta(self):
        def ver(argv):
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                return (p.stdout or p.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "unknown"
        model = "unknown CPU"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        self.results["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPUs ({model})",
            "linkpush": ver([str(self.linkpush), "--version"]),
            "h2load": ver(["h2load", "--version"]),
            "seconds": self.seconds,
        }

    def run(self):
        SOAK_OUT.mkdir(parents=True, exist_ok=True)
        self.collect_meta()
        self.make_docroot()
        origin = self.start_origin()
        try:
            runs = [r for r in self.args.runs.split(",") if r]
            for name in runs:
                if name == "plain":
                    self.run_one("plain", resetting=0)
                elif name == "reset":
                    self.run_one("reset", resetting=self.args.resetting_clients)
                else:
                    raise SystemExit(f"unknown run {name!r}; known: plain, reset")
        finally:
            origin.stop()
        (SOAK_OUT / "results.json").write_text(json.dumps(self.results, indent=1))
        text = self.report()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "soak.md").write_text(text + "\n")
        print()
        print(text)
        failed = [label for name in self.results["runs"] for label, ok, _ in self.checks(name) if not ok]
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description="linkpush soak (see bench/README.md)")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "60")),
                    help="length of each run (default: $SOAK_SECONDS or 60)")
    ap.add_argument("--runs", default="plain,reset", help="comma-separated subset of plain,reset")
    ap.add_argument("--resetting-clients", type=int, default=10,
                    help="connections of the reset run held by the resetting client (of 100)")
    ap.add_argument("--reset-fraction", type=float, default=0.5,
                    help="share of the resetting client's streams it cancels")
    ap.add_argument("--max-resets-per-s", type=float, default=30.0,
                    help="resets per second per resetting connection (0: no cap); the proxy "
                         "cuts a connection off above 33/s sustained after a burst of 1,000")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds left out before the flatness figures (default 10, or a third of a shorter run)")
    ap.add_argument("--h2load-args", default="",
                    help="extra h2load options for the measured runs, e.g. --header-table-size=0")
    ap.add_argument("--port-base", type=int, default=18500)
    ap.add_argument("--cert", default=str(OUT / "tls" / "cert.pem"))
    ap.add_argument("--key", default=str(OUT / "tls" / "key.pem"))
    ap.add_argument("--pushclient", default=str(BENCH / "target" / "release" / "pushclient"))
    ap.add_argument("--linkpush", default=str(harness.ROOT / "target" / "release" / "linkpush"))
    ap.add_argument("--no-pin", action="store_true", help="do not pin the proxy and the load to separate cores")
    args = ap.parse_args()
    if not 1 <= args.seconds <= 3600:
        raise SystemExit("--seconds must be between 1 and 3600")
    if args.warmup is not None and not 0 <= args.warmup < args.seconds:
        raise SystemExit("--warmup must be at least 0 and less than --seconds")
    if not 0 <= args.resetting_clients < 100:
        raise SystemExit("--resetting-clients must be between 0 and 99")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    harness.become_subreaper()
    atexit.register(Server.stop_all)
    try:
        code = Soak(args).run()
    finally:
        Server.stop_all()
    sys.exit(code)


if __name__ == "__main__":
    main()
