#!/usr/bin/env bash
# linkpush benchmarks: one entry point.
#
#   bench/run.sh            full run (about 20 minutes on 2 cores, plus installs and builds)
#   bench/run.sh --quick    smoke run (a couple of minutes)
#
# Installs the peers (apt-get) and matplotlib (pip), generates one self-signed
# certificate, builds bench/pushclient and linkpush, runs bench/harness.py
# (which starts, measures and stops every server) and regenerates
# docs/benchmarks.md and docs/img/*.png with bench/report.py.
# Raw outputs and logs: bench/out/ (git-ignored). See bench/README.md.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
OUT="$BENCH/out"

QUICK=0
INSTALL=1
BUILD_LINKPUSH=1
HARNESS_ARGS=()

usage() {
    cat <<EOF
usage: bench/run.sh [--quick] [--no-install] [--no-linkpush-build]
                    [--proxies=linkpush,nghttpx,h2o,nginx,apache] [--scenarios=1,2,3,4]
  --quick              short smoke run: one run per measurement, short loads
  --no-install         do not call apt-get / pip (the programs must already be there)
  --no-linkpush-build  do not run 'cargo build --release' for linkpush
  --proxies=LIST       only these proxies
  --scenarios=LIST     only these scenarios (1 throughput, 2 push, 3 memory, 4 page load)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; HARNESS_ARGS+=(--quick) ;;
        --no-install) INSTALL=0 ;;
        --no-linkpush-build) BUILD_LINKPUSH=0 ;;
        --proxies=*) HARNESS_ARGS+=(--proxies "${1#*=}") ;;
        --scenarios=*) HARNESS_ARGS+=(--scenarios "${1#*=}") ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

mkdir -p "$OUT/logs" "$OUT/pids" "$OUT/tls" "$OUT/raw"
: > "$OUT/run.log"
exec > >(tee -a "$OUT/run.log") 2>&1

START=$(date +%s)
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Every server is stopped by the harness; whatever is still listed here when
# this script exits (error, Ctrl-C, SIGTERM) is stopped by PID.
cleanup() {
    local f pid
    for f in "$OUT"/pids/*.pid; do
        [ -e "$f" ] || continue
        pid="$(cat "$f" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "run.sh: need root for: $*" >&2; return 1
    fi
}

# ------------------------------------------------------------------ install
if [ "$INSTALL" -eq 1 ]; then
    say "installing the peers and tools (apt-get)"
    PKGS=(nghttp2-client nghttp2-proxy h2o nginx apache2 php-cli openssl libssl3 util-linux procps python3-pip)
    as_root apt-get update -qq
    # Package scripts must not start nginx/apache2/h2o as system services.
    POLICY=/usr/sbin/policy-rc.d
    MADE_POLICY=0
    if [ ! -e "$POLICY" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
        MADE_POLICY=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${PKGS[@]}" \
        > "$OUT/logs/apt-get.log" 2>&1 || { tail -20 "$OUT/logs/apt-get.log"; exit 1; }
    if [ "$MADE_POLICY" -eq 1 ]; then as_root rm -f "$POLICY"; fi
    if ! python3 -c 'import matplotlib' 2>/dev/null; then
        say "installing matplotlib (pip)"
        python3 -m pip install --quiet matplotlib 2>/dev/null \
            || python3 -m pip install --quiet --break-system-packages matplotlib \
            || as_root apt-get install -y -qq python3-matplotlib
    fi
fi
for tool in h2load nghttp nghttpx h2o nginx apache2 php openssl taskset python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: $tool not found" >&2; exit 1; }
done

# File descriptors: 1,000 idle connections need 2,000+ on the client and proxy side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "ulimit -n $(ulimit -n)"

# -------------------------------------------------------------- certificate
say "generating the self-signed certificate shared by every proxy"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" >"$OUT/logs/openssl.log" 2>&1
chmod 644 "$OUT/tls/cert.pem"
chmod 600 "$OUT/tls/key.pem"

# ------------------------------------------------------------------- builds
say "building bench/pushclient"
(cd "$BENCH/pushclient" && cargo build --release --quiet --target-dir "$BENCH/target")

if [ "$BUILD_LINKPUSH" -eq 1 ]; then
    say "building linkpush (cargo build --release)"
    if (cd "$ROOT" && cargo build --release) > "$OUT/logs/linkpush-build.log" 2>&1; then
        say "linkpush built"
    else
        say "linkpush did not build (see bench/out/logs/linkpush-build.log); its rows will be skipped"
    fi
fi
if [ ! -x "$ROOT/target/release/linkpush" ]; then
    say "linkpush binary not available: linkpush steps will be skipped"
fi

# -------------------------------------------------------------------- bench
say "running the scenarios"
python3 "$BENCH/harness.py" --cert "$OUT/tls/cert.pem" --key "$OUT/tls/key.pem" \
    --pushclient "$BENCH/target/release/pushclient" --linkpush "$ROOT/target/release/linkpush" \
    ${HARNESS_ARGS[@]+"${HARNESS_ARGS[@]}"} &
HARNESS_PID=$!
echo "$HARNESS_PID" > "$OUT/pids/harness.pid"
HARNESS_RC=0
wait "$HARNESS_PID" || HARNESS_RC=$?
rm -f "$OUT/pids/harness.pid"
if [ "$HARNESS_RC" -ne 0 ]; then
    say "the harness failed (exit $HARNESS_RC); writing the report from what it measured"
fi

say "writing docs/benchmarks.md"
python3 "$BENCH/report.py" --results "$OUT/results.json" --out "$ROOT/docs/benchmarks.md" \
    --img "$ROOT/docs/img"

say "done in $(( $(date +%s) - START )) s"
exit "$HARNESS_RC"
