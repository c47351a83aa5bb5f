#!/usr/bin/env python3
"""Runs the "supervising real processes" scenarios against ProcessControl and supervisord and
prints a markdown table of medians. Called by bench/run.sh (which builds what this needs);
run with the Python that has `supervisor` installed.

Both supervisors are measured the same way, from outside:
  * memory: VmRSS of the supervisor process in /proc/<pid>/status;
  * CPU: utime+stime of /proc/<pid>/stat (10 ms ticks) and, for resolution, the sum of
    /proc/<pid>/task/*/schedstat run times (ns);
  * "child dead": a pidfd per child, readable the moment the child terminates;
  * "child running": the first instruction of bench/child.c stamps CLOCK_MONOTONIC to a file;
  * supervisor-reported times (ProcessControl's Status, supervisord's XML-RPC replies) are
    given beside them.
Every child carries PCBENCH_RUN=<id> in its environment; cleanup() kills whatever still
carries it, so nothing survives a failed run.
"""

import argparse
import json
import os
import queue
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
import xmlrpc.client

import procstat

MARK = "PCBENCH_RUN"
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
LIVE = []  # supervisor Popen objects to stop on cleanup


def child_env():
    """The environment of every supervisor started here (and so of their children): only they
    carry the run's marker, so cleanup() never hits the driver, run.sh or anything else."""
    env = dict(os.environ)
    env[MARK] = os.environ["PCBENCH_ID"]
    return env


def now_ns():
    return time.monotonic_ns()


def loadavg():
    return procstat.loadavg()[0]


def rss_kb(pid):
    return procstat.status_kib(pid, "VmRSS")


def stamps(path):
    """(tag, ns, pid) per line of a bench/child.c stamp file."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append((parts[0], int(parts[1]), int(parts[2])))
    except FileNotFoundError:
        pass
    return out


def wait_until(pred, timeout, what, step=0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out ({timeout} s) waiting for {what}")


class DeathWatch(threading.Thread):
    """Opens a pidfd per pid now; records when the last of them has terminated."""

    def __init__(self, pids, timeout=60.0):
        super().__init__(daemon=True)
        self.fds = {}
        for pid in pids:
            try:
                self.fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                pass  # already dead: not counted
        self.timeout = timeout
        self.last_ns = None
        self.left = None

    def run(self):
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        pending = set(self.fds)
        deadline = time.monotonic() + self.timeout
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                if fd in pending:
                    pending.discard(fd)
                    poller.unregister(fd)
                    self.last_ns = now_ns()
        self.left = len(pending)
        for fd in self.fds:
            os.close(fd)


# ----- ProcessControl ---------------------------------------------------------------------


class PcProcess:
    """The bench/scenarios binary: one supervisor process speaking a line protocol."""

    def __init__(self, binary, args):
        self.p = subprocess.Popen(
            [binary] + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=child_env(),
        )
        LIVE.append(self.p)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.seen = {}

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, word, timeout=120.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"ProcessControl bench never said {word}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"ProcessControl bench ended before {word}: {self.seen}")
            if line.startswith("ERROR"):
                raise RuntimeError(f"ProcessControl bench: {line}")
            key, _, value = line.partition("=")
            self.seen[key] = value
            if key == word:
                return value

    def send(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def finish(self):
        try:
            self.expect("DONE", timeout=60)
            self.p.wait(timeout=10)
        finally:
            stop_process(self.p)


def pc_fleet(a, n, argv, grace_ms, idle_s, stamp_file=None):
    pc = PcProcess(a.pc_bin, ["fleet", str(n), str(grace_ms), "--"] + argv)
    try:
        pc.expect("READY")
        t0 = int(pc.seen["t0_ns"])
        r = {
            "start_sup_ms": (int(pc.seen["running_ns"]) - t0) / 1e6,
            "load": loadavg(),
            "rss_ready_kb": rss_kb(pc.p.pid),
        }
        pids = [int(x) for x in pc.seen["pids"].split(",") if x]
        if stamp_file:
            s = wait_until(
                lambda: (lambda st: st if len(st) >= n else None)(stamps(stamp_file)),
                30,
                "every child's start stamp",
            )
            r["start_exec_ms"] = (max(ns for _, ns, _ in s) - t0) / 1e6
        if idle_s:
            r.update(measure_idle(pc.p.pid, idle_s))
        watch = DeathWatch(pids)
        watch.start()
        pc.send("stop")
        pc.expect("stopped_ns")
        stop = int(pc.seen["stop_ns"])
        r["stop_sup_ms"] = (int(pc.seen["stopped_ns"]) - stop) / 1e6
        watch.join(70)
        r["stop_dead_ms"] = (watch.last_ns - stop) / 1e6 if watch.last_ns else None
        r["left_alive"] = watch.left
        pc.finish()
        return r
    finally:
        stop_process(pc.p)


def pc_gap(a, n, stamp_file):
    pc = PcProcess(a.pc_bin, ["gap", str(n), "--", a.child, "crash", stamp_file])
    try:
        pc.expect("restarts", timeout=a.gap_limit + 30)
        pc.finish()
    finally:
        stop_process(pc.p)
    return gap_stats(stamp_file)


def gap_stats(stamp_file):
    gaps, last_exit = [], None
    for tag, ns, _ in stamps(stamp_file):
        if tag == "S" and last_exit is not None:
            gaps.append((ns - last_exit) / 1e6)
        if tag == "E":
            last_exit = ns
    if not gaps:
        return {"gaps": 0}
    gaps.sort()
    return {
        "gaps": len(gaps),
        "gap_median_ms": statistics.median(gaps),
        "gap_p99_ms": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))],
        "gap_max_ms": gaps[-1],
        "load": loadavg(),
    }


# ----- supervisord ------------------------------------------------------------------------


class Supervisord:
    def __init__(self, a, workdir, programs):
        """programs: list of (name, argv, extra config lines)."""
        self.dir = workdir
        self.sock = os.path.join(workdir, "sv.sock")
        conf = os.path.join(workdir, "supervisord.conf")
        with open(conf, "w") as f:
            f.write(
                f"[unix_http_server]\nfile={self.sock}\n"
                f"[supervisord]\nnodaemon=true\nloglevel=warn\n"
                f"logfile={workdir}/supervisord.log\npidfile={workdir}/supervisord.pid\n"
                f"childlogdir={workdir}\nminfds=1024\nminprocs=200\n"
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            )
            for name, argv, extra in programs:
                f.write(
                    f"[program:{name}]\ncommand={' '.join(argv)}\nautostart=false\n"
                    # Output is piped and drained like ProcessControl's, but not written to files.
                    "stdout_logfile=NONE\nstderr_logfile=NONE\n"
                    + "".join(x + "\n" for x in extra)
                )
        self.p = subprocess.Popen(
            [a.supervisord, "-n", "-c", conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, "supervisord.stderr"), "w"),
            env=child_env(),
        )
        LIVE.append(self.p)
        self.connect()

        def up():
            if self.p.poll() is not None:
                raise RuntimeError("supervisord exited at start")
            if not os.path.exists(self.sock):
                return False
            try:
                return self.rpc.getState()["statename"] == "RUNNING"
            except Exception:
                # The transport keeps one connection, unusable after a failed request.
                self.connect()
                return False

        wait_until(up, 60, "supervisord to start", step=0.05)

    def connect(self):
        from supervisor.xmlrpc import SupervisorTransport

        self.rpc = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://" + self.sock)
        ).supervisor

    def close(self):
        try:
            self.rpc.shutdown()
            self.p.wait(timeout=60)
        except Exception:
            pass
        stop_process(self.p)


def sv_fleet(a, workdir, n, argv, grace_s, idle_s, stamp_file=None):
    extra = ["startsecs=0", "autorestart=unexpected", "stopsignal=TERM", f"stopwaitsecs={grace_s}"]
    sv = Supervisord(a, workdir, [(f"p{i}", argv, extra) for i in range(n)])
    try:
        t0 = now_ns()
        # startsecs=0: each process is RUNNING as soon as it is forked, so this returns once
        # all of them are (it is supervisord's "start all and wait").
        sv.rpc.startAllProcesses(True)
        r = {"start_sup_ms": (now_ns() - t0) / 1e6, "load": loadavg(), "rss_ready_kb": rss_kb(sv.p.pid)}
        info = sv.rpc.getAllProcessInfo()
        states = {i["statename"] for i in info}
        if states != {"RUNNING"}:
            raise RuntimeError(f"supervisord states after start: {states}")
        pids = [i["pid"] for i in info]
        if stamp_file:
            s = wait_until(
                lambda: (lambda st: st if len(st) >= n else None)(stamps(stamp_file)),
                30,
                "every child's start stamp",
            )
            r["start_exec_ms"] = (max(ns for _, ns, _ in s) - t0) / 1e6
        if idle_s:
            r.update(measure_idle(sv.p.pid, idle_s))
        watch = DeathWatch(pids)
        watch.start()
        stop = now_ns()
        if n == 1:
            sv.rpc.stopProcess("p0", True)
        else:
            sv.rpc.stopAllProcesses(True)
        r["stop_sup_ms"] = (now_ns() - stop) / 1e6
        watch.join(70)
        r["stop_dead_ms"] = (watch.last_ns - stop) / 1e6 if watch.last_ns else None
        r["left_alive"] = watch.left
        return r
    finally:
        sv.close()


def sv_gap(a, workdir, stamp_file):
    # startsecs=0 makes every exit one "from RUNNING", which supervisord restarts at once,
    # with no backoff (its backoff only applies to exits before startsecs).
    extra = ["startsecs=0", "autorestart=unexpected", "exitcodes=0", "startretries=1000000"]
    sv = Supervisord(a, workdir, [("crash", [a.child, "crash", stamp_file], extra)])
    try:
        sv.rpc.startProcess("crash", False)
        deadline = time.monotonic() + a.sv_gap_limit
        while time.monotonic() < deadline:
            if sum(1 for t, _, _ in stamps(stamp_file) if t == "S") > a.gap_n:
                break
            time.sleep(0.05)
    finally:
        sv.close()
    return gap_stats(stamp_file)


# ----- shared -----------------------------------------------------------------------------


def measure_idle(pid, seconds):
    time.sleep(2.0)  # let spawn-time work settle
    rss = rss_kb(pid)
    t0, s0, w0 = procstat.cpu_ticks(pid), procstat.schedstat_ns(pid), time.monotonic()
    time.sleep(seconds)
    t1, s1, w1 = procstat.cpu_ticks(pid), procstat.schedstat_ns(pid), time.monotonic()
    scale = seconds / (w1 - w0)  # normalise to exactly `seconds`
    return {
        "rss_kb": rss,
        "rss_after_kb": rss_kb(pid),
        "idle_cpu_ticks_ms": (t1 - t0) * TICK_MS * scale,
        "idle_cpu_sched_ms": (s1 - s0) / 1e6 * scale,
        "idle_load": loadavg(),
    }


def stop_process(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    if p in LIVE:
        LIVE.remove(p)


def cleanup():
    for p in list(LIVE):
        try:
            stop_process(p)
        except Exception:
            pass
    marker = f"{MARK}={os.environ['PCBENCH_ID']}".encode()
    for _ in range(3):
        found = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(d))
            except OSError:
                pass
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def fresh(workdir, name):
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    return d


def run_once(a, workdir, only):
    res = {"pc": {}, "sv": {}}
    sleep_argv = ["/bin/sleep", "100000"]
    if "idle" in only:
        print("  idle: 500 sleeping children, 20 s idle", file=sys.stderr, flush=True)
        res["pc"]["idle"] = pc_fleet(a, a.n, sleep_argv, 10_000, a.idle)
        res["sv"]["idle"] = sv_fleet(a, fresh(workdir, "sv-idle"), a.n, sleep_argv, 10, a.idle)
    if "startstop" in only:
        print("  start/stop 500 children", file=sys.stderr, flush=True)
        d = fresh(workdir, "pc-ss")
        argv = [a.child, "hold", f"{d}/stamps"]
        res["pc"]["startstop"] = pc_fleet(a, a.n, argv, 10_000, 0, f"{d}/stamps")
        d = fresh(workdir, "sv-ss")
        argv = [a.child, "hold", f"{d}/stamps"]
        res["sv"]["startstop"] = sv_fleet(a, d, a.n, argv, 10, 0, f"{d}/stamps")
    if "gap" in only:
        print("  crash-to-respawn gap", file=sys.stderr, flush=True)
        d = fresh(workdir, "pc-gap")
        res["pc"]["gap"] = pc_gap(a, a.gap_n, f"{d}/stamps")
        d = fresh(workdir, "sv-gap")
        res["sv"]["gap"] = sv_gap(a, d, f"{d}/stamps")
    if "grace" in only:
        print("  SIGTERM-ignoring child, 2 s grace", file=sys.stderr, flush=True)
        d = fresh(workdir, "pc-grace")
        argv = [a.child, "stubborn", f"{d}/stamps"]
        res["pc"]["grace"] = pc_fleet(a, 1, argv, 2000, 0, f"{d}/stamps")
        d = fresh(workdir, "sv-grace")
        argv = [a.child, "stubborn", f"{d}/stamps"]
        res["sv"]["grace"] = sv_fleet(a, d, 1, argv, 2, 0, f"{d}/stamps")
    return res


def med(runs, who, scenario, key):
    vals = [r[who][scenario][key] for r in runs if r[who].get(scenario, {}).get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "MB":
        return f"{v / 1024:.1f} MB"
    if unit == "ms" and v >= 100:
        return f"{v:.0f} ms"
    return f"{v:.2f} ms" if unit == "ms" else f"{v}"


def table(runs):
    rows = [
        # (label, scenario, key, unit, target)
        ("RSS, 1 child (baseline)", "grace", "rss_ready_kb", "MB", "—"),
        ("RSS, 500 sleeping children", "idle", "rss_kb", "MB", "≤ 8 MB"),
        ("idle CPU per 20 s, utime+stime (10 ms ticks)", "idle", "idle_cpu_ticks_ms", "ms", "≤ 5 ms"),
        ("idle CPU per 20 s, schedstat (ns)", "idle", "idle_cpu_sched_ms", "ms", "≤ 5 ms"),
        ("crash→respawn gap, median", "gap", "gap_median_ms", "ms", "≤ 1 ms"),
        ("crash→respawn gap, p99", "gap", "gap_p99_ms", "ms", "≤ 3 ms"),
        ("start 500: supervisor reports all running", "startstop", "start_sup_ms", "ms", "≤ 300 ms"),
        ("start 500: last child's first instruction", "startstop", "start_exec_ms", "ms", "—"),
        ("stop 500 (SIGTERM): last child dead (pidfd)", "startstop", "stop_dead_ms", "ms", "≤ 150 ms"),
        ("stop 500 (SIGTERM): supervisor reports all stopped", "startstop", "stop_sup_ms", "ms", "—"),
        ("SIGTERM-ignoring child, 2 s grace: dead (pidfd)", "grace", "stop_dead_ms", "ms", "≤ 2020 ms"),
        ("SIGTERM-ignoring child, 2 s grace: reported stopped", "grace", "stop_sup_ms", "ms", "—"),
    ]
    out = [
        "| scenario | target (ProcessControl) | ProcessControl | supervisord | PC : supervisord | load PC / sv |",
        "|---|---|---|---|---|---|",
    ]
    for label, scen, key, unit, target in rows:
        pc, sv = med(runs, "pc", scen, key), med(runs, "sv", scen, key)
        ratio = f"1 : {sv / pc:.1f}" if pc and sv else "n/a"
        if pc and sv and sv / pc < 0.95:
            ratio = f"{pc / sv:.1f} : 1"
        lk = "idle_load" if key.startswith("idle_cpu") or key == "rss_kb" else "load"
        lpc, lsv = med(runs, "pc", scen, lk), med(runs, "sv", scen, lk)
        loads = f"{lpc:.2f} / {lsv:.2f}" if lpc is not None and lsv is not None else "n/a"
        out.append(f"| {label} | {target} | {fmt(pc, unit)} | {fmt(sv, unit)} | {ratio} | {loads} |")
    n_pc = [r["pc"].get("gap", {}).get("gaps") for r in runs]
    n_sv = [r["sv"].get("gap", {}).get("gaps") for r in runs]
    out.append("")
    out.append(f"Gaps per run: ProcessControl {n_pc}, supervisord {n_sv}.")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pc-bin", required=True)
    ap.add_argument("--child", required=True)
    ap.add_argument("--supervisord", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--gap-n", type=int, default=500)
    ap.add_argument("--gap-limit", type=float, default=60.0)
    ap.add_argument("--sv-gap-limit", type=float, default=15.0)
    ap.add_argument("--only", default="idle,startstop,gap,grace")
    a = ap.parse_args()
    only = set(a.only.split(","))

    def on_signal(sig, _):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    runs = []
    try:
        for i in range(a.runs):
            print(f"run {i + 1}/{a.runs} (load {loadavg():.2f})", file=sys.stderr, flush=True)
            runs.append(run_once(a, a.workdir, only))
    finally:
        cleanup()
    loads = [v["load"] for r in runs for who in r.values() for v in who.values() if "load" in v]
    loads += [v["idle_load"] for r in runs for who in r.values() for v in who.values() if "idle_load" in v]
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump({"runs": runs, "loads": loads}, f, indent=1)
    print(table(runs))
    left = [(who, scen, v["left_alive"]) for r in runs for who in r for scen, v in r[who].items()
            if v.get("left_alive")]
    if left:
        print(f"\nWARNING: children still alive after a stop: {left}")
    if loads:
        print(
            f"\n1-min load average during the measurements: min {min(loads):.2f}, "
            f"median {statistics.median(loads):.2f}, max {max(loads):.2f} (2 cores); "
            f"{a.runs} runs, medians shown. Raw figures: {a.workdir}/results.json"
        )


if __name__ == "__main__":
    main()
