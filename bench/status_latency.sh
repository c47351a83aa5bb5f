#!/usr/bin/env bash
# `status --json` latency of `processcontrol up` with 500 processes, 50 of them crash-looping
# (the target: p99 under 50 ms). See docs/benchmarks.md, "`up`: status latency under load".
#
#   bench/status_latency.sh                 build, 3 runs, markdown on stdout, progress on stderr
#   bench/status_latency.sh --runs 1        one run
#   bench/status_latency.sh --requests 200  requests per run (default 500)
#   bench/status_latency.sh --strace 5      also `strace -c -f` the daemon for 5 s (first run)
#   bench/status_latency.sh --bin PATH      measure this binary instead of building one
#
# Each run (bench/status_latency.py): a config of 450 `sleep 100000` and 50
# `sh -c 'sleep 0.05; exit 1'` with restart = "always", backoff 10ms..100ms and a breaker
# that never opens (100000 restarts per 1 s); `up` on a socket in a temp dir; wait until the
# 450 sleepers run, 2 s of settling, 3 s of crash loops alone (daemon CPU), then N rounds of
# [`processcontrol status --json`, raw request on a new connection, raw request on one kept
# connection], timed from the client.
#
# Every process it starts carries PCBENCH_RUN=<id> and is killed on exit, even on failure or
# Ctrl-C. The whole script, build included, is capped at 290 s: a run that would not fit is
# not started (each takes about 60 s on a loaded 2-core machine; `cargo build --release`
# takes seconds when up to date, about 3 minutes from scratch, which leaves time for 1 run).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
REQUESTS=500
STRACE=0
BIN=
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --strace) STRACE=$2; shift 2 ;;
        --bin) BIN=$(realpath "$2"); shift 2 ;;
        *) echo "usage: $0 [--runs N] [--requests N] [--strace SECS] [--bin PATH]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pcstatus.XXXXXX")
export PCBENCH_RUN="pcstatus-$$-$(date +%s%N)"
DRIVER_PID=

log() { printf '[status_latency] %s\n' "$*" >&2; }

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null || true
    fi
    kill_marked "$PCBENCH_RUN"
    if [ -z "${PCBENCH_KEEP:-}" ]; then
        rm -rf "$WORK"
    else
        log "kept $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

START=$(date +%s)
CAP=290
if [ -z "$BIN" ]; then
    log "building the release binary"
    (cd "$ROOT" && timeout -k 5 $((CAP - 70)) cargo build --release --quiet --bin processcontrol)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/processcontrol
fi
# A private copy: a rebuild of target/ during the runs does not change what is measured.
cp "$BIN" "$WORK/processcontrol"
BIN=$WORK/processcontrol
log "binary: sha256 $(sha256sum "$BIN" | cut -c1-12)"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"

# Each driver gets whatever is left of the cap (and is killed, with its daemon, at the cap).
FILES=()
for i in $(seq "$RUNS"); do
    left=$((CAP - ($(date +%s) - START)))
    [ "$left" -gt 65 ] || { log "time cap: stopping after $((i - 1)) run(s)"; break; }
    extra=()
    [ "$i" = 1 ] && [ "$STRACE" != 0 ] && extra=(--strace "$STRACE")
    log "run $i/$RUNS"
    timeout -s TERM -k 5 "$left" python3 "$ROOT/bench/status_latency.py" run \
        --bin "$BIN" --work "$WORK/run$i" --out "$WORK/run$i.json" \
        --requests "$REQUESTS" "${extra[@]}" &
    DRIVER_PID=$!
    rc=0
    wait "$DRIVER_PID" || rc=$?
    DRIVER_PID=
    kill_marked "$PCBENCH_RUN"   # nothing should be left; if anything is, it does not leak into the next run
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        log "run $i failed (exit $rc$([ "$rc" = 124 ] && echo ': time cap')); reporting the runs before it"
        break
    fi
    FILES+=("$WORK/run$i.json")
done
[ "${#FILES[@]}" -gt 0 ] || { log "no run finished"; exit 1; }
python3 "$ROOT/bench/status_latency.py" report "${FILES[@]}"
exit "${FAILED:-0}"
