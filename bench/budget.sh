#!/usr/bin/env bash
# Per-request budget of the linkpush binary: syscalls, instructions, CPU time.
#
#   bench/budget.sh [--bin PATH] [--label NAME] [--protocols h2,h1] ...
#
# For one plain GET of a 100-byte response (/small.txt, no Link header),
# over HTTP/2 and over HTTP/1.1, with linkpush as bench/templates/linkpush.toml
# configures it (one worker, access log off) pinned to CPU 1 and h2load and
# the origin (nginx with templates/origin-nginx.conf, or bench/tiny_origin.py
# when nginx is missing) on CPU 0:
#   - req/s and CPU seconds per 10k requests (utime+stime from /proc/PID/stat
#     around plain h2load runs; median of --runs);
#   - syscalls per request by name (strace -c -f -p PID around one h2load run);
#   - instructions per request (callgrind, no cache simulation): a fresh
#     proxy under valgrind serves N requests, another one 2N, and
#     (I(2N) - I(N)) / N cancels start-up, handshakes and shutdown; plus the
#     top functions of the 2N run by self and inclusive cost.
# Writes a markdown report to stdout and bench/out/budget-LABEL.md; raw
# outputs in bench/out/budget/LABEL/. See bench/README.md, "Per-request budget".
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
OUT="$BENCH/out"

BIN=""
LABEL=""
PROTOCOLS="h2,h1"
REQUESTS=50000
RUNS=3
VG_REQUESTS=""
PORT_BASE=18440
INSTALL=1
DO_STRACE=1
DO_CALLGRIND=1
ORIGIN_KIND=auto
ORIGIN_WHY="--origin python"

usage() {
    cat <<EOF
usage: bench/budget.sh [options]
  --bin PATH          linkpush binary to measure (default: target/release/linkpush,
                      built with 'cargo build --release' if missing)
  --label NAME        names the report: bench/out/budget-NAME.md (default: the
                      short commit of the tree the binary was built in, or "bin")
  --protocols LIST    h2, h1 or h2,h1 (default h2,h1)
  --requests N        requests per plain and strace'd h2load run (default 50000)
  --runs R            plain h2load runs, median reported (default 3)
  --vg-requests N     N of the callgrind runs, N and 2N requests (default 10000:
                      each valgrind run then takes under a minute on 2 cores)
  --origin KIND       nginx or python (default: nginx if installed, else python)
  --port-base P       proxy on P, origin on P+1 (default 18440)
  --no-strace         skip the syscall count
  --no-callgrind      skip the instruction count
  --no-install        do not apt-get what is missing (h2load, strace, valgrind, nginx)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift ;;
        --bin=*) BIN="${1#*=}" ;;
        --label) LABEL="$2"; shift ;;
        --label=*) LABEL="${1#*=}" ;;
        --protocols) PROTOCOLS="$2"; shift ;;
        --protocols=*) PROTOCOLS="${1#*=}" ;;
        --requests) REQUESTS="$2"; shift ;;
        --requests=*) REQUESTS="${1#*=}" ;;
        --runs) RUNS="$2"; shift ;;
        --runs=*) RUNS="${1#*=}" ;;
        --vg-requests) VG_REQUESTS="$2"; shift ;;
        --vg-requests=*) VG_REQUESTS="${1#*=}" ;;
        --origin) ORIGIN_KIND="$2"; shift ;;
        --origin=*) ORIGIN_KIND="${1#*=}" ;;
        --port-base) PORT_BASE="$2"; shift ;;
        --port-base=*) PORT_BASE="${1#*=}" ;;
        --no-strace) DO_STRACE=0 ;;
        --no-callgrind) DO_CALLGRIND=0 ;;
        --no-install) INSTALL=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "budget.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

for n in "$REQUESTS" "$RUNS" "$PORT_BASE" ${VG_REQUESTS:+"$VG_REQUESTS"}; do
    case "$n" in ''|*[!0-9]*) echo "budget.sh: not a number: $n" >&2; exit 2 ;; esac
done
IFS=, read -r -a PROTOS <<< "$PROTOCOLS"
for p in "${PROTOS[@]}"; do
    case "$p" in h2|h1) ;; *) echo "budget.sh: unknown protocol: $p" >&2; exit 2 ;; esac
done
case "$ORIGIN_KIND" in nginx|python|auto) ;; *) echo "budget.sh: --origin: nginx or python" >&2; exit 2 ;; esac
if [ "$(nproc)" -lt 2 ]; then
    echo "budget.sh: needs 2 CPUs (proxy on CPU 1, load and origin on CPU 0)" >&2
    exit 1
fi

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ tools
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "budget.sh: need root for: $*" >&2; return 1
    fi
}
MISSING=()
command -v h2load >/dev/null 2>&1 || MISSING+=(nghttp2-client)
[ "$DO_STRACE" -eq 0 ] || command -v strace >/dev/null 2>&1 || MISSING+=(strace)
[ "$DO_CALLGRIND" -eq 0 ] || command -v valgrind >/dev/null 2>&1 || MISSING+=(valgrind)
[ "$ORIGIN_KIND" != nginx ] || command -v nginx >/dev/null 2>&1 || MISSING+=(nginx)
command -v openssl >/dev/null 2>&1 || MISSING+=(openssl)
if [ "${#MISSING[@]}" -gt 0 ]; then
    if [ "$INSTALL" -eq 1 ]; then
        say "installing ${MISSING[*]} (apt-get)"
        as_root apt-get update -qq
        # Package scripts must not start nginx as a system service.
        POLICY=/usr/sbin/policy-rc.d
        MADE_POLICY=0
        if [ ! -e "$POLICY" ]; then
            as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
            MADE_POLICY=1
        fi
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
            "${MISSING[@]}" >/dev/null
        if [ "$MADE_POLICY" -eq 1 ]; then as_root rm -f "$POLICY"; fi
    else
        echo "budget.sh: missing: ${MISSING[*]} (run without --no-install, or apt-get install them)" >&2
        exit 1
    fi
fi
for tool in h2load taskset timeout python3 openssl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "budget.sh: $tool not found" >&2; exit 1; }
done
if [ "$ORIGIN_KIND" = auto ]; then
    if command -v nginx >/dev/null 2>&1; then ORIGIN_KIND=nginx; else ORIGIN_KIND=python; ORIGIN_WHY="nginx not installed"; fi
fi

# ----------------------------------------------------------------- binary
if [ -z "$BIN" ]; then
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/linkpush"
    if [ ! -x "$BIN" ]; then
        say "building linkpush (cargo build --release)"
        (cd "$ROOT" && cargo build --release) >&2
    fi
fi
[ -x "$BIN" ] || { echo "budget.sh: no executable at $BIN" >&2; exit 1; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
BIN_COMMIT="$(git -C "$(dirname "$BIN")" rev-parse --short HEAD 2>/dev/null || true)"
if [ -z "$LABEL" ]; then LABEL="${BIN_COMMIT:-bin}"; fi
case "$LABEL" in *[!A-Za-z0-9._-]*) echo "budget.sh: --label: letters, digits, . _ - only" >&2; exit 2 ;; esac

WORK="$OUT/budget/$LABEL"
rm -rf "$WORK"
mkdir -p "$WORK/www" "$WORK/origin" "$WORK/tls"
PROXY_PORT="$PORT_BASE"
ORIGIN_PORT=$((PORT_BASE + 1))
URL="https://127.0.0.1:$PROXY_PORT/small.txt"
RESULTS="$WORK/results.txt"
: > "$RESULTS"
record() { printf '%s=%s\n' "$1" "$2" >> "$RESULTS"; }

# --------------------------------------------------------- process control
PIDS=()
stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 ${2:-100}); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do stop_pid "$pid" 10; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # port, pid, seconds
    local i
    for i in $(seq 1 $(($3 * 10))); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
for port in "$PROXY_PORT" "$ORIGIN_PORT"; do
    if port_open "$port"; then
        echo "budget.sh: 127.0.0.1:$port is in use (choose another --port-base)" >&2
        exit 1
    fi
done

# ----------------------------------------------------- certificate, origin
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" >"$WORK/openssl.log" 2>&1

# 100 bytes of text, like the harness's /small.txt.
python3 -c 'import sys; sys.stdout.write(("small response for the budget, no Link header. " * 3)[:99] + "\n")' \
    > "$WORK/www/small.txt"

render() {  # template, destination, then KEY=VALUE pairs
    local template="$1" dest="$2" pair
    shift 2
    cp "$template" "$dest"
    for pair in "$@"; do
        python3 - "$dest" "${pair%%=*}" "${pair#*=}" <<'EOF'
import sys
path, key, value = sys.argv[1:]
text = open(path).read().replace("@@" + key + "@@", value)
open(path, "w").write(text)
EOF
    done
}

start_origin() {
    if [ "$ORIGIN_KIND" = nginx ]; then
        render "$BENCH/templates/origin-nginx.conf" "$WORK/origin/nginx.conf" \
            "RUN=$WORK/origin" "PORT=$ORIGIN_PORT" "DOCROOT=$WORK/www"
        taskset -c 0 nginx -c "$WORK/origin/nginx.conf" -p "$WORK/origin/" \
            >"$WORK/origin/stdout.log" 2>&1 &
        ORIGIN_DESC="nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), templates/origin-nginx.conf"
    else
        taskset -c 0 python3 "$BENCH/tiny_origin.py" --port "$ORIGIN_PORT" \
            --file "$WORK/www/small.txt" >"$WORK/origin/stdout.log" 2>&1 &
        ORIGIN_DESC="bench/tiny_origin.py ($ORIGIN_WHY)"
    fi
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    wait_port "$ORIGIN_PORT" "$ORIGIN_PID" 10 || { echo "budget.sh: the origin did not start" >&2; cat "$WORK/origin/stdout.log" >&2; exit 1; }
    local body
    body="$(python3 -c "import urllib.request; print(len(urllib.request.urlopen('http://127.0.0.1:$ORIGIN_PORT/small.txt', timeout=5).read()))")"
    [ "$body" = 100 ] || { echo "budget.sh: the origin answered $body bytes, not 100" >&2; exit 1; }
}

render "$BENCH/templates/linkpush.toml" "$WORK/linkpush.toml" \
    "PORT=$PROXY_PORT" "CERT=$WORK/tls/cert.pem" "KEY=$WORK/tls/key.pem" \
    "ORIGIN_URL=http://127.0.0.1:$ORIGIN_PORT" "PUSH=push"

# ------------------------------------------------------------------ proxy
PROXY_PID=""
start_proxy() {  # log name, then the command prefix (e.g. valgrind ...)
    local name="$1"
    shift
    taskset -c 1 "$@" "$BIN" run --config "$WORK/linkpush.toml" >"$WORK/$name.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    if ! wait_port "$PROXY_PORT" "$PROXY_PID" 60; then
        echo "budget.sh: linkpush did not start ($name):" >&2
        tail -20 "$WORK/$name.log" >&2
        exit 1
    fi
}
stop_proxy() {
    stop_pid "$PROXY_PID" 300
    PROXY_PID=""
}

# h2load for one protocol: h2 as scenario 1 (-m 10), h1 one request at a time.
h2load_run() {  # proto, connections, requests, output file
    local proto="$1" conns="$2" n="$3" out="$4" args
    if [ "$proto" = h2 ]; then args=(-m 10); else args=(--h1 -m 1); fi
    timeout -s KILL 600 taskset -c 0 h2load -c "$conns" -t 1 "${args[@]}" -n "$n" "$URL" >"$out" 2>&1 || true
    python3 "$BENCH/budget_report.py" --check-h2load "$out" "$n" || {
        echo "budget.sh: h2load run failed ($out):" >&2
        tail -15 "$out" >&2
        exit 1
    }
}

cpu_ticks() {  # utime + stime of a whole process (every thread), in ticks
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# ------------------------------------------------------------- measuring
say "label $LABEL, binary $BIN"
start_origin
say "origin: $ORIGIN_DESC on 127.0.0.1:$ORIGIN_PORT (CPU 0)"
record label "$LABEL"
record bin "$BIN"
record bin_commit "$BIN_COMMIT"
record bin_version "$("$BIN" --version 2>/dev/null | head -1 || true)"
record origin "$ORIGIN_DESC"
record requests "$REQUESTS"
record runs "$RUNS"
record h2load_version "$(h2load --version | head -1)"
record valgrind_version "$(valgrind --version 2>/dev/null || echo none)"
record strace_version "$(strace -V 2>/dev/null | head -1 || echo none)"
record date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
record cpu_model "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
record loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
CLK_TCK="$(getconf CLK_TCK)"

for proto in "${PROTOS[@]}"; do
    conns=10
    # ---- plain runs and strace, on one proxy process
    say "$proto: linkpush on CPU 1, warm-up"
    start_proxy "linkpush-$proto"
    h2load_run "$proto" "$conns" 5000 "$WORK/$proto-warmup.txt"
    for run in $(seq 1 "$RUNS"); do
        t0="$(cpu_ticks "$PROXY_PID")"
        h2load_run "$proto" "$conns" "$REQUESTS" "$WORK/$proto-plain-$run.txt"
        t1="$(cpu_ticks "$PROXY_PID")"
        record "$proto.plain.$run.cpu_s" "$(python3 -c "print(($t1 - $t0) / $CLK_TCK)")"
        say "$proto: plain run $run: $(grep -o 'finished in .*' "$WORK/$proto-plain-$run.txt"), CPU $(python3 -c "print(($t1 - $t0) / $CLK_TCK)") s"
    done
    if [ "$DO_STRACE" -eq 1 ]; then
        say "$proto: strace -c -f -p $PROXY_PID for $REQUESTS requests"
        strace -c -f -p "$PROXY_PID" -o "$WORK/$proto-strace.txt" 2>"$WORK/$proto-strace.log" &
        STRACE_PID=$!
        PIDS+=("$STRACE_PID")
        # Wait until every thread of the proxy is traced.
        for _ in $(seq 1 100); do
            untraced=0
            for status in /proc/"$PROXY_PID"/task/*/status; do
                if [ "$(awk '/^TracerPid:/ { print $2 }' "$status" 2>/dev/null || echo 0)" = 0 ]; then
                    untraced=1
                fi
            done
            [ "$untraced" -eq 0 ] && break
            sleep 0.1
        done
        h2load_run "$proto" "$conns" "$REQUESTS" "$WORK/$proto-strace-h2load.txt"
        kill -INT "$STRACE_PID" 2>/dev/null || true
        wait "$STRACE_PID" 2>/dev/null || true
    fi
    stop_proxy

    # ---- callgrind: N and 2N requests, each on a fresh proxy
    if [ "$DO_CALLGRIND" -eq 1 ]; then
        n="${VG_REQUESTS:-10000}"
        record "$proto.vg_requests" "$n"
        for k in 1 2; do
            requests=$((k * n))
            say "$proto: callgrind, $requests requests (h2load -c 2)"
            started=$(date +%s)
            start_proxy "callgrind-$proto-$k" valgrind --tool=callgrind --cache-sim=no \
                --callgrind-out-file="$WORK/callgrind-$proto-$k.out"
            h2load_run "$proto" 2 "$requests" "$WORK/$proto-callgrind-$k-h2load.txt"
            stop_proxy
            record "$proto.callgrind.$k.wall_s" "$(( $(date +%s) - started ))"
            [ -s "$WORK/callgrind-$proto-$k.out" ] || { echo "budget.sh: no callgrind output" >&2; exit 1; }
        done
        for kind in no yes; do
            callgrind_annotate --auto=no --threshold=100 --inclusive="$kind" "$WORK/callgrind-$proto-2.out" \
                > "$WORK/callgrind-$proto-2-inclusive-$kind.txt" 2>/dev/null
        done
        callgrind_annotate --auto=no --threshold=100 --inclusive=no "$WORK/callgrind-$proto-1.out" \
            > "$WORK/callgrind-$proto-1-inclusive-no.txt" 2>/dev/null
    fi
done
record loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

stop_pid "$ORIGIN_PID" 50
python3 "$BENCH/budget_report.py" --work "$WORK" --out "$OUT/budget-$LABEL.md"
say "report: bench/out/budget-$LABEL.md (raw outputs in bench/out/budget/$LABEL/)"
