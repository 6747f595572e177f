#!/usr/bin/env python3
"""Benchmark driver: linkpush and four peer proxies in front of the same origin.

Called by bench/run.sh, which installs the programs, makes the certificate and
builds the binaries. This script generates the document root, writes every
server's configuration from bench/templates/, starts and stops the servers by
PID, runs the four scenarios and writes bench/out/results.json, which
bench/report.py turns into docs/benchmarks.md.

Everything listens on 127.0.0.1 only. Every load is bounded in requests and in
time. Every server started here is stopped here (and run.sh kills any PID left
in bench/out/pids/ on exit).
"""

import argparse
import atexit
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
TEMPLATES = BENCH / "templates"

PROXIES = ["linkpush", "nghttpx", "h2o", "nginx", "apache"]
PEERS = [p for p in PROXIES if p != "linkpush"]
TEMPLATE_OF = {
    "linkpush": "linkpush.toml",
    "nghttpx": "nghttpx.conf",
    "h2o": "h2o.conf",
    "nginx": "nginx.conf",
    "apache": "apache2.conf",
}
# The word each configuration uses for push on / push off (Link still forwarded).
PUSH_WORDS = {
    "linkpush": ("push", "hint-only"),
    "nghttpx": ("no", "yes"),  # no-server-push=
    "h2o": ("ON", "OFF"),  # http2-push-preload:
    "nginx": ("on", "off"),  # http2_push_preload
    "apache": ("on", "off"),  # H2Push
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# Document root contents (sizes in bytes).
P4_PAGE = ("/p4/index.html", 5 * 1024)
P4_ASSETS = [  # path, size, as=
    ("/p4/a.css", 2 * 1024, "style"),
    ("/p4/b.js", 20 * 1024, "script"),
    ("/p4/c.js", 50 * 1024, "script"),
    ("/p4/d.png", 100 * 1024, "image"),
]
P6_PAGE_SIZE = 8 * 1024
P6_ASSETS = [
    ("/p6/1.css", 8 * 1024, "style"),
    ("/p6/2.css", 4 * 1024, "style"),
    ("/p6/3.js", 30 * 1024, "script"),
    ("/p6/4.js", 60 * 1024, "script"),
    ("/p6/5.js", 15 * 1024, "script"),
    ("/p6/6.jpg", 80 * 1024, "image"),
]
SMALL = ("/small.txt", 100)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------
# /proc helpers


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm may contain spaces: split after the last ')'
    return data[data.rindex(")") + 2:].split()


def process_tree(root):
    """PIDs of root and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root):
    """utime+stime of the tree, plus what reaped children of the root used."""
    ticks = 0
    for pid in process_tree(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # fields (1-based in proc(5)): 14 utime, 15 stime, 16 cutime, 17 cstime
        ticks += int(f[11]) + int(f[12])
        if pid == root:
            ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def thread_count(root):
    total = 0
    for pid in process_tree(root):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def rss_kib(root):
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def machine_busy_seconds():
    """CPU time spent by the whole machine (all cores, all processes) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class Meter:
    """CPU accounting around one measured run: the proxy's process tree, the
    origin's, the load client's (children of this process, once waited for),
    this process, and whatever else ran on the machine meanwhile."""

    def __init__(self, proxy_pid, origin_pid=None):
        self.proxy_pid, self.origin_pid = proxy_pid, origin_pid

    def _snap(self):
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "t": time.monotonic(),
            "machine": machine_busy_seconds(),
            "proxy": cpu_seconds(self.proxy_pid),
            "origin": cpu_seconds(self.origin_pid) if self.origin_pid else 0.0,
            "client": ch.ru_utime + ch.ru_stime,
            "self": me.ru_utime + me.ru_stime,
        }

    def __enter__(self):
        self.a = self._snap()
        return self

    def __exit__(self, *exc):
        b = self._snap()
        d = {k: b[k] - self.a[k] for k in b}
        self.wall_s = d["t"]
        self.proxy_s, self.origin_s, self.client_s = d["proxy"], d["origin"], d["client"]
        self.other_s = max(0.0, d["machine"] - d["proxy"] - d["origin"] - d["client"] - d["self"])
        return False

    def other_cores(self):
        """Average number of cores used by processes that are not part of the run."""
        return self.other_s / self.wall_s if self.wall_s > 0 else None


# --------------------------------------------------------------------------
# servers


class Server:
    running = []

    def __init__(self, name, argv, port, cpu=None, env=None, cwd=None):
        self.name, self.argv, self.port = name, argv, port
        self.cpu, self.env, self.cwd = cpu, env, cwd
        self.proc = None
        self.log_path = OUT / "logs" / f"{name}.log"

    def start(self, timeout=20.0):
        if port_in_use(self.port):
            raise RuntimeError(f"{self.name}: port 127.0.0.1:{self.port} is already in use")
        argv = list(self.argv)
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu)] + argv
        env = dict(os.environ)
        env.update(self.env or {})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        logf.write(f"\n=== {time.ctime()} {' '.join(argv)}\n".encode())
        logf.flush()
        self.log_offset = logf.tell()  # what this start prints begins here
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.cwd,
                                     start_new_session=True)
        logf.close()
        Server.running.append(self)
        pidfile = OUT / "pids" / f"{self.name}.pid"
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(str(self.proc.pid))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"{self.name} exited at start (code {code}): "
                                   f"{tail(self.log_path, offset=self.log_offset)}")
            if port_in_use(self.port):
                time.sleep(0.3)  # let worker processes come up
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout}s: "
                           f"{tail(self.log_path, offset=self.log_offset)}")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        tree = process_tree(self.proc.pid) if self.alive() else []
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        # Workers that outlived their parent are stopped by PID too; this
        # process is their subreaper, so they are reaped here as well.
        deadline = time.time() + 3
        for pid in tree:
            if pid == self.proc.pid:
                continue
            while is_running(pid) and time.time() < deadline:
                time.sleep(0.05)
            if is_running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reap(pid)
        if self in Server.running:
            Server.running.remove(self)
        try:
            (OUT / "pids" / f"{self.name}.pid").unlink()
        except FileNotFoundError:
            pass
        deadline = time.time() + 5
        while port_in_use(self.port) and time.time() < deadline:
            time.sleep(0.05)
        self.proc = None

    @classmethod
    def stop_all(cls):
        for s in list(cls.running):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                print(f"stopping {s.name}: {e}", file=sys.stderr)


def is_running(pid):
    """True while pid exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def reap(pid, timeout=1.0):
    """Collects the exit status of a (re-parented) child, waiting a little for it."""
    deadline = time.time() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.time() > deadline:
            return
        time.sleep(0.02)


def become_subreaper():
    """Orphaned workers of stopped servers get reparented here, to be reaped."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path, n=8, offset=0):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").strip().splitlines()
        if not lines:
            return "(no output)"
        return " / ".join(lines[-n:])
    except OSError:
        return "(no log)"


def render(template, dest, values):
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise RuntimeError(f"{template}: unfilled placeholders {sorted(set(left))}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


# --------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        base = args.port_base
        self.ports = {
            "origin-static": base,
            "origin-php": base + 1,
            "linkpush": base + 10,
            "nghttpx": base + 11,
            "h2o": base + 12,
            "nginx": base + 13,
            "apache": base + 14,
            "relay": base + 20,
        }
        self.cert = Path(args.cert).resolve()
        self.key = Path(args.key).resolve()
        self.pushclient = Path(args.pushclient).resolve()
        self.linkpush = Path(args.linkpush).resolve()
        ncpu = os.cpu_count() or 1
        pin = ncpu >= 2 and not args.no_pin
        # Proxy under test on its own core; load generator, relay and origin on the other.
        self.proxy_cpu = "1" if pin else None
        self.load_cpu = "0" if pin else None
        self.www = OUT / "www"
        self.results_path = OUT / "results.json"
        self.results = {"meta": {}, "skipped": {}, "throughput": {}, "push": {},
                        "memory": {}, "pageload": {}, "notes": []}
        self.proxies = [p for p in args.proxies.split(",") if p]
        for p in self.proxies:
            if p not in PROXIES:
                raise SystemExit(f"unknown proxy {p!r}; known: {','.join(PROXIES)}")
        self.scenarios = {int(s) for s in args.scenarios.split(",") if s}
        self.origins = {}

    # ---- settings that depend on --quick

    def settings(self):
        if self.quick:
            return dict(runs=1, h2load_duration=2, h2load_warmup=1, concurrency=[1, 10, 100],
                        push_duration=2, push_pages=20000, idle_conns=200, idle_hold=2,
                        rtts=[0, 50], loads=2)
        return dict(runs=3, h2load_duration=6, h2load_warmup=1, concurrency=[1, 10, 100],
                    push_duration=5, push_pages=200000, idle_conns=1000, idle_hold=4,
                    rtts=[0, 20, 50, 100], loads=5)

    def save(self):
        tmp = self.results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        tmp.replace(self.results_path)

    # ---- setup

    def make_docroot(self):
        rng = random.Random(20240601)
        www = self.www
        if www.exists():
            shutil.rmtree(www)
        (www / "p4").mkdir(parents=True)
        (www / "p6").mkdir(parents=True)

        def text_blob(size, line_start="", line_end="\n"):
            words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
                     "hotel", "india", "juliet", "kilo", "lima", "mike", "november"]
            out, n = [], 0
            while n < size:
                line = line_start + " ".join(rng.choice(words) for _ in range(10)) + line_end
                out.append(line)
                n += len(line)
            return "".join(out)

        def write_exact(path, head, size, filler_start="", filler_end="\n", tail_text=""):
            body = head
            need = size - len(head.encode()) - len(tail_text.encode())
            body += text_blob(need, filler_start, filler_end)[:need] if need > 0 else ""
            body += tail_text
            data = body.encode()[:size] if len(body.encode()) > size else body.encode()
            (www / path.lstrip("/")).write_bytes(data)

        def asset(path, size):
            full = www / path.lstrip("/")
            if path.endswith((".png", ".jpg")):
                full.write_bytes(bytes(rng.getrandbits(8) for _ in range(size)))
            elif path.endswith(".css"):
                write_exact(path, "/* stylesheet */\n", size, ".c { content: \"", "\" }\n")
            else:
                write_exact(path, "// script\n", size, "// ", "\n")

        def page(path, size, assets, title):
            refs = []
            for p, _, as_ in assets:
                if as_ == "style":
                    refs.append(f'<link rel="stylesheet" href="{p}">')
                elif as_ == "script":
                    refs.append(f'<script src="{p}" defer></script>')
                else:
                    refs.append(f'<img src="{p}" alt="">')
            head = ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
                    f"<title>{title}</title>\n" + "\n".join(r for r in refs if not r.startswith("<img"))
                    + "\n</head><body>\n" + "\n".join(r for r in refs if r.startswith("<img")) + "\n")
            write_exact(path, head, size, "<p>", "</p>\n", "</body></html>\n")

        (www / "small.txt").write_bytes((text_blob(SMALL[1]))[:SMALL[1]].encode())
        page(P4_PAGE[0], P4_PAGE[1], P4_ASSETS, "four preloads")
        for p, size, _ in P4_ASSETS:
            asset(p, size)
        page("/p6/page.html", P6_PAGE_SIZE, P6_ASSETS, "six subresources")
        for p, size, _ in P6_ASSETS:
            asset(p, size)
        (www / "p6" / "assets.txt").write_text("".join(f"{p} {a}\n" for p, _, a in P6_ASSETS))
        for f in ("page.inc.php", "link.php", "nolink.php"):
            shutil.copy(TEMPLATES / "php" / f, www / "p6" / f)
        shutil.copy(TEMPLATES / "php" / "x.php", www / "x.php")
        (www / "x.css").write_text("p { color: #333 }\n")
        sizes = {str(p.relative_to(www)): p.stat().st_size for p in sorted(www.rglob("*")) if p.is_file()}
        self.results["meta"]["docroot"] = sizes

    def start_origins(self):
        run = OUT / "run" / "origin-static"
        run.mkdir(parents=True, exist_ok=True)
        conf = render("origin-nginx.conf", run / "nginx.conf", {
            "RUN": run, "PORT": self.ports["origin-static"], "DOCROOT": self.www})
        self.origins["static"] = Server("origin-static", ["nginx", "-c", str(conf), "-p", str(run) + "/"],
                                        self.ports["origin-static"], cpu=self.load_cpu).start()
        self.origins["php"] = Server(
            "origin-php", ["php", "-S", f"127.0.0.1:{self.ports['origin-php']}", "-t", str(self.www)],
            self.ports["origin-php"], cpu=self.load_cpu,
            env={"PHP_CLI_SERVER_WORKERS": "4"}).start()
        self.check_origins()

    def check_origins(self):
        import http.client
        checks = {}
        for name, path in (("static", P4_PAGE[0]), ("php", "/p6/link.php"), ("php", "/p6/nolink.php")):
            c = http.client.HTTPConnection("127.0.0.1", self.ports[f"origin-{name}"], timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            links = [v for k, v in r.getheaders() if k.lower() == "link"]
            c.close()
            if r.status != 200:
                raise RuntimeError(f"origin {name} {path}: status {r.status}")
            checks[f"{name} {path}"] = {"status": r.status, "bytes": len(body), "link_headers": len(links)}
        self.results["meta"]["origin_checks"] = checks
        log(f"origins ok: {checks}")

    def start_proxy(self, name, origin="static", push=True):
        """Writes the configuration and starts one proxy; returns the Server."""
        if name == "linkpush" and not os.access(self.linkpush, os.X_OK):
            raise Unavailable("linkpush binary not available")
        run = OUT / "run" / name
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        origin_port = self.ports[f"origin-{origin}"]
        values = {
            "RUN": run, "PORT": self.ports[name], "CERT": self.cert, "KEY": self.key,
            "ORIGIN_URL": f"http://127.0.0.1:{origin_port}", "ORIGIN_HOST": "127.0.0.1",
            "ORIGIN_PORT": origin_port, "ORIGIN_HOSTPORT": f"127.0.0.1:{origin_port}",
            "PUSH": PUSH_WORDS[name][0 if push else 1],
        }
        conf = render(TEMPLATE_OF[name], run / TEMPLATE_OF[name], values)
        env = {}
        if name == "linkpush":
            argv = [str(self.linkpush), "run", "--config", str(conf)]
        elif name == "nghttpx":
            argv = ["nghttpx", f"--conf={conf}"]
        elif name == "h2o":
            os.chmod(run, 0o777)  # h2o writes its pid file after switching to "nobody"
            argv = ["h2o", "-c", str(conf)]
        elif name == "nginx":
            argv = ["nginx", "-c", str(conf), "-p", str(run) + "/"]
        elif name == "apache":
            if not shutil.which("apache2"):
                raise Unavailable("apache2 not installed")
            os.chmod(run, 0o755)
            argv = ["apache2", "-f", str(conf), "-DFOREGROUND"]
        if name != "linkpush" and not shutil.which(argv[0]):
            raise Unavailable(f"{argv[0]} not installed")
        try:
            return Server(name, argv, self.ports[name], cpu=self.proxy_cpu, env=env).start()
        except RuntimeError as e:
            # Recorded as skipped, with the reason; the other proxies still run.
            raise Unavailable(f"{name} failed to start: {e}")

    def skip(self, name, reason):
        self.results["skipped"][name] = reason
        log(f"{name}: skipped: {reason}")

    # ---- tools

    def pushclient_cmd(self, mode, port, path, extra, authority_port=None):
        argv = [str(self.pushclient), mode, "--connect", f"127.0.0.1:{port}",
                "--authority", f"127.0.0.1:{authority_port or port}", "--cert", str(self.cert),
                "--path", path] + [str(x) for x in extra]
        if self.load_cpu is not None:
            argv = ["taskset", "-c", self.load_cpu] + argv
        return argv

    def run_json(self, argv, timeout):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise RuntimeError(f"{argv[0]}: no JSON (exit {p.returncode}): {p.stderr[-400:]}")

    # ---- scenario 1: h2load throughput + latency

    def h2load(self, port, conc, duration=None, requests=None, time_limit=60, log_file=None):
        """h2load for `duration` seconds (-D) or for `requests` requests (-n), killed
        after time_limit seconds in any case."""
        url = f"https://127.0.0.1:{port}{SMALL[0]}"
        bound = ["-D", str(duration)] if duration else ["-n", str(requests)]
        argv = (["timeout", "-s", "KILL", str(time_limit), "h2load", "-c", str(conc), "-m", "10", "-t", "1"]
                + bound + (["--log-file", str(log_file)] if log_file else []) + [url])
        if self.load_cpu is not None:
            argv = ["taskset", "-c", self.load_cpu] + argv
        p = subprocess.run(argv, capture_output=True, text=True)
        return p.stdout + p.stderr, p.returncode

    def origin_accepts(self):
        """Connections the static origin has accepted so far (nginx stub_status)."""
        import urllib.request
        try:
            url = f"http://127.0.0.1:{self.ports['origin-static']}/_origin_status"
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            return int(text.splitlines()[2].split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def parse_h2load(text):
        r = {}
        m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
        if m:
            r["elapsed_s"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
            r["rps"] = float(m.group(3))
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        if m:
            keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
            r.update({k: int(v) for k, v in zip(keys, m.groups())})
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if m:
            r["status_2xx"] = int(m.group(1))
            r["status_non2xx"] = sum(int(x) for x in m.groups()[1:])
        m = re.search(r"TLS Protocol: (\S+)\s+Cipher: (\S+)", text)
        if m:
            r["tls"] = f"{m.group(1)} {m.group(2)}"
        m = re.search(r"Application protocol: (\S+)", text)
        if m:
            r["alpn"] = m.group(1)
        return r

    @staticmethod
    def latency_percentiles(log_file):
        durations = []
        try:
            with open(log_file) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1].startswith("2"):
                        durations.append(int(parts[2]))
        except OSError:
            return {}
        if not durations:
            return {}
        durations.sort()

        def pct(p):
            return durations[min(len(durations) - 1, int(round(p / 100 * (len(durations) - 1))))] / 1000.0

        return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "logged": len(durations)}

    def scenario_throughput(self):
        s = self.settings()
        log("scenario 1: throughput and latency, 100 B response, h2load -m 10")
        for name in self.proxies:
            if name in self.results["skipped"]:
                continue
            try:
                server = self.start_proxy(name)
            except Unavailable as e:
                self.skip(name, str(e))
                continue
            per = self.results["throughput"].setdefault(name, {})
            try:
                for conc in s["concurrency"]:
                    # Warm-up by time, which also sizes the measured runs: -n is set so
                    # that a run lasts about h2load_duration seconds at the warm-up's rate.
                    text, _ = self.h2load(self.ports[name], conc, duration=s["h2load_warmup"],
                                         time_limit=s["h2load_warmup"] + 20)
                    rate = self.parse_h2load(text).get("rps") or 1000.0
                    requests = int(min(max(rate * s["h2load_duration"], 1000, conc * 10), 1_000_000))
                    runs = []
                    for i in range(s["runs"]):
                        lf = OUT / "raw" / f"h2load-{name}-c{conc}-run{i + 1}.log"
                        lf.parent.mkdir(parents=True, exist_ok=True)
                        acc0 = self.origin_accepts()
                        with Meter(server.pid, self.origins["static"].pid) as meter:
                            text, rc = self.h2load(self.ports[name], conc, requests=requests,
                                                   time_limit=3 * s["h2load_duration"] + 10, log_file=lf)
                        acc1 = self.origin_accepts()
                        cpu0, cpu1 = 0.0, meter.proxy_s
                        (OUT / "raw" / f"h2load-{name}-c{conc}-run{i + 1}.txt").write_text(text)
                        r = self.parse_h2load(text)
                        r.update(self.latency_percentiles(lf))
                        lf.unlink(missing_ok=True)  # per-request logs are large
                        r["exit"] = rc
                        r["requests"] = requests
                        if rc != 0 and "rps" not in r:
                            r["errors_note"] = f"h2load exited with {rc} (killed after its time limit?)"
                        r["cpu_s"] = round(cpu1 - cpu0, 3)
                        ok = r.get("succeeded", 0)
                        r["cpu_s_per_10k"] = (cpu1 - cpu0) / ok * 10000 if ok else None
                        # Share of its core the proxy used: near 1.0 means the proxy was the bottleneck.
                        r["proxy_core_util"] = ((cpu1 - cpu0) / r["elapsed_s"]
                                                if r.get("elapsed_s") else None)
                        # The other core: origin + h2load. Near 1.0 means they were the bottleneck.
                        r["load_core_util"] = ((meter.origin_s + meter.client_s) / r["elapsed_s"]
                                               if r.get("elapsed_s") else None)
                        r["other_cores"] = meter.other_cores()
                        r["origin_connections"] = (acc1 - acc0 - 1) if None not in (acc0, acc1) else None
                        r["errors"] = (r.get("failed", 0) + r.get("errored", 0) + r.get("timeout", 0)
                                       + r.get("status_non2xx", 0))
                        runs.append(r)
                        log(f"  {name:8} c={conc:<3} run {i + 1}: {r.get('rps', 0):>9.0f} req/s "
                            f"p50 {r.get('p50_ms', float('nan')):.2f} ms p99 {r.get('p99_ms', float('nan')):.2f} ms "
                            f"cpu/10k {r['cpu_s_per_10k'] or float('nan'):.3f} s "
                            f"core use {r.get('proxy_core_util') or 0:.2f}/{r.get('load_core_util') or 0:.2f} "
                            f"other {r.get('other_cores') or 0:.2f} errors {r['errors']}")
                    per[str(conc)] = {"runs": runs, "median": median_of(runs, [
                        "rps", "p50_ms", "p99_ms", "cpu_s_per_10k", "proxy_core_util", "load_core_util",
                        "origin_connections", "other_cores", "errors", "succeeded"])}
                    self.save()
            finally:
                server.stop()

    # ---- scenario 2: push throughput

    def scenario_push(self):
        s = self.settings()
        log("scenario 2: page with 4 preloads, push-accepting client")
        variants = [("new-connection", 1), ("same-connection", 0)]
        for name in self.proxies:
            if name in self.results["skipped"]:
                continue
            try:
                server = self.start_proxy(name)
            except Unavailable as e:
                self.skip(name, str(e))
                continue
            per = self.results["push"].setdefault(name, {})
            try:
                for variant, per_conn in variants:
                    runs = []
                    for i in range(s["runs"]):
                        with Meter(server.pid, self.origins["static"].pid) as meter:
                            r = self.run_json(self.pushclient_cmd(
                                "push", self.ports[name], P4_PAGE[0],
                                ["-c", 10, "-m", per_conn, "-n", s["push_pages"],
                                 "--duration", s["push_duration"]]),
                                timeout=s["push_duration"] + 60)
                        cpu0, cpu1 = 0.0, meter.proxy_s
                        r["proxy_core_util"] = meter.proxy_s / meter.wall_s
                        r["load_core_util"] = (meter.origin_s + meter.client_s) / meter.wall_s
                        r["other_cores"] = meter.other_cores()
                        r["cpu_s"] = round(cpu1 - cpu0, 3)
                        r["cpu_s_per_1k_pages"] = (cpu1 - cpu0) / r["pages"] * 1000 if r.get("pages") else None
                        r["all_pushes_complete"] = (r.get("incomplete_pushes", 1) == 0 and r.get("errors", 1) == 0)
                        runs.append(r)
                        (OUT / "raw" / f"push-{name}-{variant}-run{i + 1}.json").write_text(json.dumps(r))
                        log(f"  {name:8} {variant:15} run {i + 1}: {r.get('pages_per_s', 0):8.0f} pages/s "
                            f"{r.get('pushes_per_page', 0):.2f} pushes/page, pushed {r.get('pushed_bytes', 0)} B, "
                            f"incomplete {r.get('incomplete_pushes')} errors {r.get('errors')}")
                    per[variant] = {"runs": runs, "median": median_of(runs, [
                        "pages_per_s", "pushes_per_page", "pushed_bytes", "pages", "cpu_s_per_1k_pages",
                        "proxy_core_util", "load_core_util", "other_cores"]),
                        "incomplete_pushes": sum(r.get("incomplete_pushes", 0) for r in runs),
                        "errors": sum(r.get("errors", 0) for r in runs),
                        "all_pushes_complete": all(r["all_pushes_complete"] for r in runs)}
                    self.save()
            finally:
                server.stop()

    # ---- scenario 3: memory per idle connection

    def scenario_memory(self):
        s = self.settings()
        n = s["idle_conns"]
        log(f"scenario 3: memory per idle TLS h2 connection ({n} connections)")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n * 2 + 200:
            raise RuntimeError(f"ulimit -n is {soft}: need at least {n * 2 + 200}")
        for name in self.proxies:
            if name in self.results["skipped"]:
                continue
            runs = []
            for i in range(s["runs"]):
                try:
                    server = self.start_proxy(name)
                except Unavailable as e:
                    self.skip(name, str(e))
                    break
                try:
                    # one warm request so lazily set-up state exists before the baseline
                    self.run_json(self.pushclient_cmd("idle", self.ports[name], SMALL[0],
                                                      ["-c", 1, "--hold", 0]), timeout=30)
                    time.sleep(0.5)
                    rest = rss_kib(server.pid)
                    ready = OUT / "run" / f"idle-{name}.ready"
                    ready.unlink(missing_ok=True)
                    argv = self.pushclient_cmd("idle", self.ports[name], SMALL[0],
                                               ["-c", n, "--hold", s["idle_hold"], "--ready-file", ready,
                                                "--timeout", 60])
                    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    deadline = time.time() + 90
                    while not ready.exists() and client.poll() is None and time.time() < deadline:
                        time.sleep(0.05)
                    time.sleep(1.0)  # let the proxy settle
                    loaded = rss_kib(server.pid)
                    nprocs = len(process_tree(server.pid))
                    nthreads = thread_count(server.pid)
                    try:
                        out, err = client.communicate(timeout=s["idle_hold"] + 60)
                    except subprocess.TimeoutExpired:
                        client.kill()
                        out, err = client.communicate()
                    try:
                        r = json.loads(out.strip().splitlines()[-1])
                    except (IndexError, json.JSONDecodeError):
                        r = {"fatal": err[-300:]}
                    opened = r.get("opened", 0)
                    r.update({"rss_rest_kib": rest, "rss_loaded_kib": loaded, "processes": nprocs, "threads": nthreads,
                              "kib_per_conn": (loaded - rest) / opened if opened else None})
                    runs.append(r)
                    log(f"  {name:8} run {i + 1}: rest {rest} KiB, with {opened} open {loaded} KiB "
                        f"-> {r['kib_per_conn'] or float('nan'):.1f} KiB/conn "
                        f"(failed {r.get('failed')}, closed early {r.get('closed_early')})")
                finally:
                    server.stop()
            if runs:
                self.results["memory"][name] = {"runs": runs, "median": median_of(
                    runs, ["kib_per_conn", "rss_rest_kib", "rss_loaded_kib", "opened", "failed", "closed_early"])}
                self.save()

    # ---- scenario 4: page load through an RTT relay

    def relay(self, upstream_port, rtt_ms):
        argv = [sys.executable, str(BENCH / "relay.py"), "--listen", f"127.0.0.1:{self.ports['relay']}",
                "--upstream", f"127.0.0.1:{upstream_port}", "--rtt-ms", str(rtt_ms),
                "--max-seconds", "600"]
        return Server("relay", argv, self.ports["relay"], cpu=self.load_cpu)

    def nghttp_check(self, name, path="/p6/link.php"):
        """Does `nghttp -a` use pushed responses, or request the assets again?"""
        url = f"https://127.0.0.1:{self.ports[name]}{path}"
        argv = ["timeout", "20", "nghttp", "-nav", url]
        if self.load_cpu is not None:
            argv = ["taskset", "-c", self.load_cpu] + argv
        p = subprocess.run(argv, capture_output=True, text=True)
        (OUT / "raw" / f"nghttp-a-{name}.txt").write_text(p.stdout + p.stderr)
        sent = re.findall(r"^\s+:path: (\S+)", p.stdout, re.M)
        pushed = re.findall(r"recv \(stream_id=\d+\) :path: (\S+)", p.stdout)
        r = {"requests_sent": sent, "pushed": pushed,
             "pushed_then_requested": sorted(set(sent) & set(pushed)), "exit": p.returncode}
        self.results.setdefault("nghttp_check", {})[name] = r
        log(f"  nghttp -a via {name}: sent {len(sent)} requests, received {len(pushed)} pushes, "
            f"re-requested pushed: {r['pushed_then_requested'] or 'none'}")
        return r

    def scenario_pageload(self):
        s = self.settings()
        log(f"scenario 4: page + 6 subresources through a relay at RTT {s['rtts']} ms")
        modes = [  # mode, proxy push switch, page
            ("no-hints", True, "/p6/nolink.php"),
            ("preload", False, "/p6/link.php"),
            ("push", True, "/p6/link.php"),
        ]
        for name in self.proxies:
            if name in self.results["skipped"]:
                continue
            per = self.results["pageload"].setdefault(name, {})
            for push_on in (True, False):
                try:
                    server = self.start_proxy(name, origin="php", push=push_on)
                except Unavailable as e:
                    self.skip(name, str(e))
                    break
                try:
                    if push_on:
                        self.nghttp_check(name)
                    for mode, mode_push, path in modes:
                        if mode_push != push_on:
                            continue
                        for rtt in s["rtts"]:
                            relay = self.relay(self.ports[name], rtt).start()
                            try:
                                runs = []
                                for i in range(s["runs"]):
                                    r = self.run_json(self.pushclient_cmd(
                                        "page-load", self.ports["relay"], path,
                                        ["-n", s["loads"], "--timeout", 20], authority_port=self.ports[name]),
                                        timeout=s["loads"] * 25 + 10)
                                    runs.append(r)
                                (OUT / "raw" / f"pageload-{name}-{mode}-rtt{rtt}.json").write_text(
                                    json.dumps(runs))
                            finally:
                                relay.stop()
                            meds = [r["median_total_ms"] for r in runs if r.get("loads")]
                            first = next((r["runs"][0] for r in runs if r.get("runs")), {})
                            entry = {
                                "median_ms": statistics.median(meds) if meds else None,
                                "run_medians_ms": meds,
                                "errors": sum(r.get("errors", 0) for r in runs),
                                "error_samples": [e for r in runs for e in r.get("error_samples", [])][:3],
                                "pushed_used": first.get("pushed_used"),
                                "pushed_unused": first.get("pushed_unused"),
                                "requested": first.get("requested"),
                                "bytes": first.get("bytes"),
                            }
                            per.setdefault(mode, {})[str(rtt)] = entry
                            log(f"  {name:8} {mode:8} RTT {rtt:>3} ms: {entry['median_ms'] or float('nan'):7.1f} ms "
                                f"(pushed {entry['pushed_used']}, requested {entry['requested']}, "
                                f"errors {entry['errors']})")
                            self.save()
                finally:
                    server.stop()

    # ---- metadata

    def collect_meta(self):
        meta = self.results["meta"]
        meta["quick"] = self.quick
        meta["settings"] = self.settings()
        meta["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        meta["nproc"] = os.cpu_count()
        meta["cpu_model"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                  if l.startswith("model name")), platform.processor() or "unknown")
        meta["mem_total"] = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo")
                                  if l.startswith("MemTotal")), "unknown")
        meta["kernel"] = platform.release()
        meta["os"] = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
                           if l.startswith("PRETTY_NAME")), "unknown")
        meta["pinning"] = ({"proxy_cpu": self.proxy_cpu, "load_cpu": self.load_cpu}
                           if self.proxy_cpu else None)
        meta["ports"] = self.ports

        def ver(argv, pattern=None):
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                text = (p.stdout + p.stderr).strip()
            except (OSError, subprocess.TimeoutExpired):
                return "not available"
            if pattern:
                m = re.search(pattern, text)
                return m.group(0) if m else text.splitlines()[0] if text else "unknown"
            return text.splitlines()[0] if text else "unknown"

        versions = {
            "linkpush": ver([str(self.linkpush), "--version"]) if os.access(self.linkpush, os.X_OK)
            else "not available",
            "nghttpx": ver(["nghttpx", "--version"]),
            "h2o": ver(["h2o", "--version"]),
            "nginx": ver(["nginx", "-v"]),
            "apache": ver(["apache2", "-v"], r"Apache/\S+"),
            "mod_http2": mod_http2_version(),
            "h2load": ver(["h2load", "--version"]),
            "php": ver(["php", "-v"]),
            "openssl": ver(["openssl", "version"]),
            "python": platform.python_version(),
            "pushclient": ver([str(self.pushclient), "--version"]),
            "rustc": ver(["rustc", "--version"]),
        }
        meta["versions"] = versions

    def run(self):
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "raw").mkdir(exist_ok=True)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        self.collect_meta()
        if not os.access(self.linkpush, os.X_OK) and "linkpush" in self.proxies:
            self.skip("linkpush", "linkpush binary not available")
        self.make_docroot()
        self.save()
        started = time.time()
        self.start_origins()
        try:
            steps = [(1, self.scenario_throughput), (2, self.scenario_push),
                     (3, self.scenario_memory), (4, self.scenario_pageload)]
            for number, step in steps:
                if number in self.scenarios:
                    t0 = time.time()
                    step()
                    self.results["meta"].setdefault("scenario_seconds", {})[str(number)] = round(time.time() - t0, 1)
                    self.save()
        finally:
            for o in self.origins.values():
                o.stop()
            self.results["meta"]["bench_seconds"] = round(time.time() - started, 1)
            self.save()
        log(f"results in {self.results_path}")


def mod_http2_version(path="/usr/lib/apache2/modules/mod_http2.so"):
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "not available"
    m = re.search(rb"\x00(2\.\d+\.\d+)\x00", data)
    return f"mod_http2 {m.group(1).decode()}" if m else "unknown"


class Unavailable(Exception):
    pass


def median_of(runs, keys):
    out = {}
    for k in keys:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        out[k] = statistics.median(vals) if vals else None
    return out


def main():
    ap = argparse.ArgumentParser(description="linkpush benchmark driver (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="short smoke run: 1 run each, short loads")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated subset of " + ",".join(PROXIES))
    ap.add_argument("--scenarios", default="1,2,3,4", help="comma-separated subset of 1,2,3,4")
    ap.add_argument("--port-base", type=int, default=18400)
    ap.add_argument("--cert", default=str(OUT / "tls" / "cert.pem"))
    ap.add_argument("--key", default=str(OUT / "tls" / "key.pem"))
    ap.add_argument("--pushclient", default=str(BENCH / "target" / "release" / "pushclient"))
    ap.add_argument("--linkpush", default=str(ROOT / "target" / "release" / "linkpush"))
    ap.add_argument("--no-pin", action="store_true", help="do not pin the proxy and the load to separate cores")
    args = ap.parse_args()

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    become_subreaper()
    atexit.register(Server.stop_all)
    try:
        Bench(args).run()
    finally:
        Server.stop_all()


if __name__ == "__main__":
    main()
