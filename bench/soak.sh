#!/usr/bin/env bash
# linkpush soak: does the proxy's resident memory stay flat under sustained
# load, with and without clients that cancel streams?
#
#   bench/soak.sh                    two runs of 60 s each (about 2.5 minutes in all)
#   SOAK_SECONDS=15 bench/soak.sh    a quick check
#
# Run 1: h2load -c 100 -m 10 -D 60 on a 100-byte file. Run 2: the same with
# 90 h2load connections, while `pushclient reset` holds 10 more and cancels
# half of its streams with RST_STREAM(CANCEL) at random points. Each run
# starts a fresh release linkpush in front of the static nginx origin of the
# benchmark harness; VmRSS is sampled every second. Results:
# bench/results/soak.md (printed too) and bench/results/soak-*.csv.
# Exit status: 0 when every check passed, 1 when one failed, 2 on a usage
# error. See bench/README.md.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
OUT="$BENCH/out"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

INSTALL=1
SOAK_ARGS=()

usage() {
    cat <<EOF
usage: bench/soak.sh [--no-install] [--runs=plain,reset] [--seconds=N]
  --no-install     do not call apt-get (h2load, nginx and taskset must be there)
  --runs=LIST      only these runs (plain, reset)
  --seconds=N      length of each run (default: \$SOAK_SECONDS, or 60)
Other options of bench/soak.py (--warmup, --h2load-args, --reset-fraction,
--max-resets-per-s, --resetting-clients, --port-base, --no-pin) are passed
through; write them as --name=value.
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0 ;;
        --runs=*) SOAK_ARGS+=(--runs "${1#*=}") ;;
        --seconds=*) SOAK_ARGS+=(--seconds "${1#*=}") ;;
        -h|--help) usage; exit 0 ;;
        --*) SOAK_ARGS+=("$1") ;;
        *) echo "soak.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

mkdir -p "$OUT/logs" "$OUT/pids" "$OUT/tls" "$OUT/soak"
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# The soak stops its servers itself; any soak PID still listed when this
# script exits (error, Ctrl-C, SIGTERM) is stopped here, by PID.
cleanup() {
    local f pid
    for f in "$OUT"/pids/soak-*.pid "$OUT"/pids/soak.pid; do
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
    else echo "soak.sh: need root for: $*" >&2; return 1
    fi
}

# ------------------------------------------------------------------ install
missing=()
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$INSTALL" -eq 0 ]; then
        echo "soak.sh: missing packages: ${missing[*]} (run without --no-install)" >&2
        exit 1
    fi
    say "installing ${missing[*]} (apt-get)"
    as_root apt-get update -qq
    # Package scripts must not start nginx as a system service.
    POLICY=/usr/sbin/policy-rc.d
    MADE_POLICY=0
    if [ ! -e "$POLICY" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
        MADE_POLICY=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        > "$OUT/logs/soak-apt-get.log" 2>&1 || { tail -20 "$OUT/logs/soak-apt-get.log"; exit 1; }
    if [ "$MADE_POLICY" -eq 1 ]; then as_root rm -f "$POLICY"; fi
fi
for tool in h2load nginx taskset openssl python3 cargo timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "soak.sh: $tool not found" >&2; exit 1; }
done
# 100 client connections plus origin connections, on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# -------------------------------------------------------------- certificate
if [ ! -s "$OUT/tls/cert.pem" ] || [ ! -s "$OUT/tls/key.pem" ]; then
    say "generating the self-signed benchmark certificate (bench/out/tls/)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=serverAuth" \
        -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" >"$OUT/logs/soak-openssl.log" 2>&1
    chmod 644 "$OUT/tls/cert.pem"
    chmod 600 "$OUT/tls/key.pem"
fi

# ------------------------------------------------------------------- builds
say "building bench/pushclient"
(cd "$BENCH/pushclient" && cargo build --release --quiet --target-dir "$BENCH/target")
LINKPUSH="$TARGET_DIR/release/linkpush"
if [ ! -x "$LINKPUSH" ]; then
    say "building linkpush (cargo build --release)"
    (cd "$ROOT" && cargo build --release) > "$OUT/logs/soak-linkpush-build.log" 2>&1 \
        || { tail -20 "$OUT/logs/soak-linkpush-build.log"; exit 1; }
fi
say "using $LINKPUSH ($("$LINKPUSH" --version))"

# --------------------------------------------------------------------- soak
python3 "$BENCH/soak.py" --cert "$OUT/tls/cert.pem" --key "$OUT/tls/key.pem" \
    --pushclient "$BENCH/target/release/pushclient" --linkpush "$LINKPUSH" \
    ${SOAK_ARGS[@]+"${SOAK_ARGS[@]}"} &
SOAK_PID=$!
echo "$SOAK_PID" > "$OUT/pids/soak.pid"
SOAK_RC=0
wait "$SOAK_PID" || SOAK_RC=$?
rm -f "$OUT/pids/soak.pid"
exit "$SOAK_RC"
