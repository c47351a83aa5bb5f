#!/usr/bin/env bash
# `processcontrol up` at scale: N processes that only pause(), through the release binary and
# a generated TOML file, the way a user meets it; supervisord 4.3 beside it. See
# docs/benchmarks.md, "`up` at scale: 500 to 5,000 processes".
#
#   bench/up_scale.sh                       build, 3 runs, markdown on stdout, progress on stderr
#   bench/up_scale.sh --runs 1              one run of every size
#   bench/up_scale.sh --sizes 500,2000,5000 ProcessControl's sizes (default)
#   bench/up_scale.sh --sv-sizes 500,2000   supervisord's sizes (default; "" for none)
#   bench/up_scale.sh --idle 20             idle-CPU window at the largest size, s (default 20)
#   bench/up_scale.sh --requests 100        status requests at the largest size (default 100)
#   bench/up_scale.sh --bin PATH            measure this binary instead of building one
#   bench/up_scale.sh --cap SECS            cap on the whole script, build included (default 1200)
#
# Each (supervisor, N) of each run is one `bench/up_scale.py run`: a fresh supervisor with N
# copies of `child pause` (bench/child.c, static), started from its exec until it reports all
# running and until every child exists, RSS 2 s later, then (ProcessControl at the largest
# size only) idle CPU and `status --json` latency, then stopped until every child is gone and
# until the supervisor exited.
#
# The soft RLIMIT_NOFILE is raised to the hard limit for the whole run (the supervisors and
# the driver's pidfds need about 3 descriptors per child). Every process it starts carries
# PCBENCH_RUN=<id> and is killed on exit, even on failure or Ctrl-C. The whole script, build
# included, is capped at 20 minutes (--cap): a step that would not fit is not started.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
CAP=1200
SIZES=500,2000,5000
SV_SIZES=500,2000
IDLE=20
REQUESTS=100
BIN=
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --sv-sizes) SV_SIZES=$2; shift 2 ;;
        --idle) IDLE=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --bin) BIN=$(realpath "$2"); shift 2 ;;
        --cap) CAP=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--sizes N,N..] [--sv-sizes N,N..] [--idle SECS]" \
                "[--requests N] [--bin PATH] [--cap SECS]" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pcupscale.XXXXXX")
export PCBENCH_RUN="pcupscale-$$-$(date +%s%N)"
DRIVER_PID=

log() { printf '[up_scale] %s\n' "$*" >&2; }

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
left() { echo $((CAP - ($(date +%s) - START))); }

HARD=$(ulimit -Hn)
ulimit -Sn "$HARD"
log "RLIMIT_NOFILE: soft limit raised to the hard limit, $(ulimit -Sn)"

# 1. The child: static, so its start-up is an exec and nothing else. Named pcchild: the driver
#    recognises exec'd children by that comm.
gcc -O2 -static -o "$WORK/pcchild" "$ROOT/bench/child.c" 2>/dev/null ||
    gcc -O2 -o "$WORK/pcchild" "$ROOT/bench/child.c"

# 2. supervisord (as bench/run.sh finds or installs it).
PY=python3
SUPERVISORD=
if [ -n "$SV_SIZES" ]; then
    if command -v supervisord >/dev/null && python3 -c 'import supervisor' 2>/dev/null; then
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
fi

# 3. ProcessControl, copied aside: a rebuild of target/ during the runs changes nothing.
if [ -z "$BIN" ]; then
    log "building the release binary"
    (cd "$ROOT" && timeout -k 5 $(($(left) - 120)) cargo build --release --quiet --bin processcontrol)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/processcontrol
fi
cp "$BIN" "$WORK/processcontrol"
BIN=$WORK/processcontrol
log "binary: sha256 $(sha256sum "$BIN" | cut -c1-12); load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"

# 4. Measure: per run, every size of each supervisor, smallest first.
IFS=, read -r -a PC_NS <<<"$SIZES"
IFS=, read -r -a SV_NS <<<"$SV_SIZES"
LARGEST=$(printf '%s\n' "${PC_NS[@]}" | sort -n | tail -1)
FILES=()
FAILED=
declare -A TOOK   # seconds the last run of each "who-n" took
one() { # who n run [extra args]
    local who=$1 n=$2 i=$3 rest=$((CAP - ($(date +%s) - START))) out began need
    shift 3
    # A step is started only if it fits: 1.5 times what it took in the run before, else
    # 60 s (plus the idle window) for a first one.
    need=$((60 + IDLE))
    local prev=${TOOK[$who-$n]:-}
    [ -n "$prev" ] && need=$((prev * 3 / 2 + 10))
    [ "$rest" -gt "$need" ] || { log "time cap: skipping $who $n (run $i)"; return 1; }
    began=$(date +%s)
    out=$WORK/$who-$n-$i.json
    log "run $i/$RUNS: $who, $n processes"
    local sup=(--bin "$BIN")
    [ "$who" = sv ] && sup=(--supervisord "$SUPERVISORD")
    timeout -s TERM -k 5 "$((rest - 10))" "$PY" "$ROOT/bench/up_scale.py" run --who "$who" \
        --n "$n" --child "$WORK/pcchild" --work "$WORK/$who-$n-$i" --out "$out" \
        --wait "$((rest - 15))" "${sup[@]}" "$@" &
    DRIVER_PID=$!
    local rc=0
    wait "$DRIVER_PID" || rc=$?
    DRIVER_PID=
    kill_marked "$PCBENCH_RUN"   # nothing should be left; if anything is, it does not leak on
    if [ "$rc" -ne 0 ]; then
        log "its supervisor's log: $WORK/$who-$n-$i/supervisor.log (PCBENCH_KEEP=1 keeps it)"
        FAILED=1
        log "$who $n (run $i) failed (exit $rc$([ "$rc" = 124 ] && echo ': time cap'))"
        return 1
    fi
    rm -rf "${WORK:?}/$who-$n-$i"
    TOOK[$who-$n]=$(($(date +%s) - began))
    FILES+=("$out")
}
for i in $(seq "$RUNS"); do
    for n in "${PC_NS[@]}"; do
        extra=()
        [ "$n" = "$LARGEST" ] && extra=(--idle "$IDLE" --requests "$REQUESTS")
        one pc "$n" "$i" "${extra[@]}" || true
    done
    for n in "${SV_NS[@]}"; do
        [ -n "$n" ] && { one sv "$n" "$i" || true; }
    done
    [ "$(left)" -gt 100 ] || break
done
[ "${#FILES[@]}" -gt 0 ] || { log "no run finished"; exit 1; }
"$PY" "$ROOT/bench/up_scale.py" report "${FILES[@]}"
echo
echo "RLIMIT_NOFILE: soft limit raised to the hard limit ($HARD) for the run."
exit "${FAILED:-0}"
