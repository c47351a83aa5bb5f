# Shared by bench/run.sh and bench/status_latency.sh (sourced, not run).

# kill_marked ID: SIGKILLs every process except this shell whose environment holds
# PCBENCH_RUN=ID, looking again until none is left (5 rounds at most: a process may fork
# while its parent is being killed).
kill_marked() {
    local id=$1 pid env found
    for _ in 1 2 3 4 5; do
        found=
        for env in /proc/[0-9]*/environ; do
            pid=${env#/proc/}
            pid=${pid%/environ}
            [ "$pid" = "$$" ] && continue
            if grep -qzx "PCBENCH_RUN=$id" "$env" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
                found=1
            fi
        done
        [ -z "$found" ] && return 0
        sleep 0.2
    done
}
