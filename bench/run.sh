#!/usr/bin/env bash
# The "supervising real processes" benchmark: ProcessControl against supervisord, same
# scenarios, same machine, measured the same way from outside (see bench/driver.py).
#
#   bench/run.sh                 3 runs of every scenario (about 4.5 minutes plus the first
#                                build), markdown table on stdout, progress on stderr
#   bench/run.sh --runs 1        one run
#   bench/run.sh --only gap      some scenarios: idle,startstop,gap,grace
#
# Builds what it needs: bench/child.c with the machine's gcc, the `scenarios` bench of the
# root crate (benches/scenarios.rs), and supervisor from PyPI into a venv if no importable
# supervisord is around (PCBENCH_VENV, default ~/.cache/pcbench/venv). Every process it starts
# carries PCBENCH_RUN=<this run> in its environment and is killed on exit, even on failure or
# Ctrl-C; the whole run is capped at 12 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pcbench.XXXXXX")
export PCBENCH_ID="pcbench-$$-$(date +%s%N)"
DRIVER_PID=

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DRIVER_PID" 2>/dev/null || true
    fi
    kill_marked "$PCBENCH_ID"
    if [ "$rc" -eq 0 ] && [ -z "${PCBENCH_KEEP:-}" ]; then
        # Keep only the raw figures.
        find "$WORK" -mindepth 1 -maxdepth 1 ! -name results.json -exec rm -rf {} +
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# 1. The supervised program.
log "building bench/child.c"
gcc -O2 -static -o "$WORK/child" "$ROOT/bench/child.c" 2>/dev/null ||
    gcc -O2 -o "$WORK/child" "$ROOT/bench/child.c"

# 2. supervisord.
PY=
if command -v supervisord >/dev/null && python3 -c 'import supervisor' 2>/dev/null; then
    PY=python3
    SUPERVISORD=$(command -v supervisord)
else
    VENV=${PCBENCH_VENV:-$HOME/.cache/pcbench/venv}
    if ! "$VENV/bin/python" -c 'import supervisor' 2>/dev/null; then
        log "installing supervisor into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q supervisor
    fi
    PY=$VENV/bin/python
    SUPERVISORD=$VENV/bin/supervisord
fi
log "supervisord $("$SUPERVISORD" --version)"

# 3. ProcessControl's side: the `scenarios` bench target of the root crate.
cd "$ROOT"
log "building the scenarios bench (cargo bench --no-run)"
PC_BIN=$(cargo bench --bench scenarios --no-run --message-format=json |
    "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "scenarios" and m.get("executable"):
        print(m["executable"])')
[ -x "$PC_BIN" ] || { log "no scenarios binary"; exit 1; }

# 4. Measure.
log "measuring (load average now: $(cut -d' ' -f1-3 /proc/loadavg)); work dir $WORK"
timeout --kill-after=10 720 "$PY" "$ROOT/bench/driver.py" \
    --pc-bin "$PC_BIN" --child "$WORK/child" --supervisord "$SUPERVISORD" \
    --workdir "$WORK" "$@" &
DRIVER_PID=$!
wait "$DRIVER_PID"
