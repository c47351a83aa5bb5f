#!/usr/bin/env python3
"""Driver of bench/status_latency.sh: `status --json` latency of `processcontrol up` with
500 processes, 50 of which crash-loop. See docs/benchmarks.md, "`up`: status latency under
load".

    status_latency.py run --bin PATH --work DIR --out FILE [--requests N] [--strace SECS]
        one run: fresh daemon, wait for the sleepers, measure, stop the daemon; JSON to FILE
    status_latency.py report FILE...
        markdown table of the medians over the runs' JSON files, on stdout
    status_latency.py diagnose --bin PATH --work DIR
        what slows the answers down (about 70 s; run with PCBENCH_RUN set, or clean up by
        hand if interrupted): crash-loop restarts/s alone, beside a CPU hog and beside a
        status loop; then status latency with the daemon's tokio workers at nice 0 and -15

Every process started here inherits PCBENCH_RUN from the caller (the shell script kills
whatever still carries it on exit).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

from procstat import cpu_ticks, loadavg, schedstat_ns, status_kib

SLEEPERS = 450  # --crashers N changes the split (500 in all)
CRASHERS = 50
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[status_latency] {msg}", file=sys.stderr, flush=True)


def write_config(path):
    lines = ["[supervisor]", 'shutdown_grace = "10s"', ""]
    for i in range(SLEEPERS):
        lines += [f"[processes.sleep{i:03}]", 'command = ["sleep", "100000"]', ""]
    for i in range(CRASHERS):
        lines += [
            f"[processes.crash{i:02}]",
            "command = \"sleep 0.05; exit 1\"",
            'restart = "always"',
            'backoff = { initial = "10ms", max = "100ms" }',
            'breaker = { max_restarts = 100000, window = "1s" }',
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# --- /proc ------------------------------------------------------------------------------

def machine_busy():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Sampler(threading.Thread):
    """Samples the daemon's RSS every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.rss = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.rss.append(status_kib(self.pid, "VmRSS"))
            except OSError:
                return
            self.stop.wait(0.1)


# --- clients ----------------------------------------------------------------------------

def raw_status(path, sock=None):
    """One `{"cmd":"status"}` round trip; returns (seconds, reply bytes, parsed reply).
    With `sock` (a (socket, file) pair) the connection is reused, else a fresh one is made
    and closed, as the CLI does."""
    t0 = time.perf_counter()
    if sock is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        f = s.makefile("rb")
    else:
        s, f = sock
    s.sendall(b'{"cmd":"status"}\n')
    line = f.readline()
    dt = time.perf_counter() - t0
    if sock is None:
        f.close()
        s.close()
    return dt, line


def cli_status(binary, path):
    t0 = time.perf_counter()
    p = subprocess.run([binary, "status", "--json", "--socket", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    return dt, p.returncode, p.stdout, p.stderr


def summary(xs):
    xs = sorted(xs)
    n = len(xs)

    def pct(p):  # nearest rank
        return xs[min(n - 1, max(0, int(-(-p * n // 100)) - 1))]

    return {"n": n, "min": xs[0], "median": statistics.median(xs), "p95": pct(95),
            "p99": pct(99), "max": xs[-1]}


def counts(reply):
    """(sleepers running, crashers' total restarts, crashers' breakers not closed, states)."""
    items = json.loads(reply)["result"]
    running = sum(1 for s in items if s["name"].startswith("sleep") and s["state"] == "running")
    restarts = sum(s["restarts"] for s in items if s["name"].startswith("crash"))
    open_ = sum(1 for s in items if s["name"].startswith("crash") and s["breaker"] != "closed")
    states = {}
    for s in items:
        if s["name"].startswith("crash"):
            states[s["state"]] = states.get(s["state"], 0) + 1
    return running, restarts, open_, states, len(items)


# --- one run ----------------------------------------------------------------------------

def run(args):
    os.makedirs(args.work, exist_ok=True)
    cfg = os.path.join(args.work, "processcontrol.toml")
    sock = os.path.join(args.work, "pc.sock")
    write_config(cfg)
    res = {"requests": args.requests, "sleepers": SLEEPERS, "crashers": CRASHERS,
           "load_before": loadavg()}
    errlog = open(os.path.join(args.work, "daemon.log"), "wb")
    t_start = time.perf_counter()
    daemon = subprocess.Popen([args.bin, "up", "-c", cfg, "--socket", sock],
                              stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog,
                              start_new_session=True)
    pid = daemon.pid
    res["daemon_pid"] = pid
    try:
        # Wait for the socket, then for all the sleepers to run.
        deadline = time.monotonic() + 60
        running = 0
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.returncode}")
            try:
                _, line = raw_status(sock)
                running, *_ = counts(line)
                if running == SLEEPERS:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"only {running}/{SLEEPERS} sleepers running after 60 s")
        res["all_running_s"] = time.perf_counter() - t_start
        log(f"pid {pid}: {SLEEPERS} sleepers running after {res['all_running_s']:.2f} s")

        # Let the crash loops reach their steady rhythm (backoff at its 100 ms max).
        time.sleep(2)
        sampler = Sampler(pid)
        sampler.start()

        # Idle window: crash loops only, no clients.
        _, line = raw_status(sock)
        r0 = counts(line)[1]
        c0, s0, w0, m0 = cpu_ticks(pid), schedstat_ns(pid), time.perf_counter(), machine_busy()
        time.sleep(3)
        c1, s1, w1, m1 = cpu_ticks(pid), schedstat_ns(pid), time.perf_counter(), machine_busy()
        _, line = raw_status(sock)
        r1 = counts(line)[1]
        res["idle"] = {
            "cpu_pct_ticks": 100 * (c1 - c0) / TICK / (w1 - w0),
            "cpu_pct_sched": 100 * (s1 - s0) / 1e9 / (w1 - w0),
            "restarts_per_s": (r1 - r0) / (w1 - w0),
            "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
        }
        log(f"crash loops alone: {res['idle']['restarts_per_s']:.0f} restarts/s, daemon "
            f"{res['idle']['cpu_pct_sched']:.1f}% of a core")

        # Measurement: CLI and raw requests interleaved, so both see the same conditions.
        cli, raw_new, raw_kept = [], [], []
        sizes, failures = [], []
        kept = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        kept.connect(sock)
        kept_pair = (kept, kept.makefile("rb"))
        _, line = raw_status(sock)
        r0 = counts(line)[1]
        c0, s0, w0, m0 = cpu_ticks(pid), schedstat_ns(pid), time.perf_counter(), machine_busy()
        for i in range(args.requests):
            dt, rc, out, err = cli_status(args.bin, sock)
            if rc != 0 or not out.startswith(b"["):
                failures.append({"i": i, "rc": rc, "stderr": err.decode(errors="replace")[:300]})
            else:
                cli.append(dt)
            dt, line = raw_status(sock)
            raw_new.append(dt)
            sizes.append(len(line))
            dt, line = raw_status(sock, kept_pair)
            raw_kept.append(dt)
            if not line.startswith(b'{"ok":true'):
                failures.append({"i": i, "raw": line[:300].decode(errors="replace")})
        c1, s1, w1, m1 = cpu_ticks(pid), schedstat_ns(pid), time.perf_counter(), machine_busy()
        _, line = raw_status(sock)
        running, r1, open_, states, n = counts(line)
        kept_pair[1].close()
        kept.close()
        sampler.stop.set()
        sampler.join()
        res["measure"] = {
            "seconds": w1 - w0,
            "cpu_pct_ticks": 100 * (c1 - c0) / TICK / (w1 - w0),
            "cpu_pct_sched": 100 * (s1 - s0) / 1e9 / (w1 - w0),
            "restarts_per_s": (r1 - r0) / (w1 - w0),
            "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
            "sleepers_running_after": running,
            "crashers_breaker_not_closed": open_,
            "crasher_states_after": states,
            "processes_in_reply": n,
        }
        res["cli"] = summary(cli) if cli else None
        res["raw_new"] = summary(raw_new)
        res["raw_kept"] = summary(raw_kept)
        res["reply_bytes"] = summary(sizes)
        res["failures"] = failures
        res["rss_kib"] = {"min": min(sampler.rss), "max": max(sampler.rss),
                          "hwm": status_kib(pid, "VmHWM")}
        res["threads"] = len(os.listdir(f"/proc/{pid}/task"))
        res["load_after"] = loadavg()

        # The daemon's CPU per request: back-to-back requests on the kept connection, minus
        # the crash loops' rate measured just before.
        kept = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        kept.connect(sock)
        kept_pair = (kept, kept.makefile("rb"))
        s0, w0 = schedstat_ns(pid), time.perf_counter()
        time.sleep(2)
        s1, w1 = schedstat_ns(pid), time.perf_counter()
        base = (s1 - s0) / (w1 - w0)
        for _ in range(200):
            raw_status(sock, kept_pair)
        s2, w2 = schedstat_ns(pid), time.perf_counter()
        kept_pair[1].close()
        kept.close()
        res["cpu_per_request_ms"] = ((s2 - s1) - base * (w2 - w1)) / 200 / 1e6
        res["cpu_per_request_raw_ms"] = (s2 - s1) / 200 / 1e6

        # The CLI's own floor: starting the binary (clap, no runtime, no socket).
        floor = []
        for _ in range(50):
            t0 = time.perf_counter()
            subprocess.run([args.bin, "--version"], stdout=subprocess.DEVNULL)
            floor.append(time.perf_counter() - t0)
        res["exec_floor"] = summary(floor)

        # Optional: where the daemon spends its system time, while raw requests run.
        if args.strace:
            out = os.path.join(args.work, "strace.txt")
            st = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out, "-p", str(pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            t_end = time.monotonic() + args.strace
            traced = []
            while time.monotonic() < t_end:
                dt, _ = raw_status(sock)
                traced.append(dt)
                time.sleep(0.01)
            st.send_signal(signal.SIGINT)
            try:
                st.wait(10)
            except subprocess.TimeoutExpired:
                st.kill()
                st.wait()
            res["strace_requests"] = len(traced)
            res["strace_raw_median_under_trace"] = statistics.median(traced) if traced else None
            try:
                with open(out) as f:
                    res["strace"] = f.read()
            except OSError:
                res["strace"] = None
    finally:
        t0 = time.perf_counter()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                log("daemon did not stop in 20 s; killing it")
                os.killpg(pid, signal.SIGKILL)
                daemon.wait()
        res["shutdown_s"] = time.perf_counter() - t0
        res["daemon_rc"] = daemon.returncode
        errlog.close()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"run done: CLI p99 {res['cli']['p99']*1e3:.1f} ms, raw p99 "
        f"{res['raw_new']['p99']*1e3:.1f} ms, {len(res['failures'])} failures")


# --- diagnose --------------------------------------------------------------------------

def diagnose(args):
    os.makedirs(args.work, exist_ok=True)
    cfg, sock = os.path.join(args.work, "processcontrol.toml"), os.path.join(args.work, "pc.sock")
    write_config(cfg)
    d = subprocess.Popen([args.bin, "up", "-c", cfg, "--socket", sock],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)

    def restarts():
        return counts(raw_status(sock)[1])[1]

    def window(label, secs=4):
        r0, s0, t0 = restarts(), schedstat_ns(d.pid), time.perf_counter()
        time.sleep(secs)
        r1, s1, t1 = restarts(), schedstat_ns(d.pid), time.perf_counter()
        print(f"{label:34} crash-loop restarts/s {(r1 - r0) / (t1 - t0):4.0f}, daemon "
              f"{100 * (s1 - s0) / 1e9 / (t1 - t0):3.0f}% of a core, load "
              f"{loadavg()[0]:.2f}", flush=True)

    def beside(label, work):
        stop = threading.Event()
        th = threading.Thread(target=lambda: [work() for _ in iter(stop.is_set, True)])
        th.start()
        window(label)
        stop.set()
        th.join()

    try:
        time.sleep(5)
        kept = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        kept.connect(sock)
        pair = (kept, kept.makefile("rb"))
        for _ in range(2):
            window("alone")
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            window("beside 1 CPU hog")
            hog.kill()
            hog.wait()
            beside("beside a status loop (raw)", lambda: raw_status(sock, pair))
            beside("beside a status --json loop (CLI)", lambda: cli_status(args.bin, sock))
        tasks = {t: open(f"/proc/{d.pid}/task/{t}/comm").read().strip()
                 for t in os.listdir(f"/proc/{d.pid}/task")}
        for _ in range(2):
            for nice in (0, -15):
                for t, comm in tasks.items():
                    os.setpriority(os.PRIO_PROCESS, int(t),
                                   nice if comm.startswith("tokio") else 0)
                r = summary([raw_status(sock, pair)[0] for _ in range(300)])
                print(f"tokio workers at nice {nice:3}: raw status (kept connection) " +
                      ", ".join(f"{k} {r[k] * 1e3:.1f} ms" for k in
                                ("min", "median", "p95", "p99", "max")) +
                      f"; load {loadavg()[0]:.2f}", flush=True)
    finally:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(d.pid, signal.SIGKILL)
            d.wait()


# --- report -----------------------------------------------------------------------------

def report(args):
    runs = []
    for path in args.files:
        with open(path) as f:
            runs.append(json.load(f))
    med = statistics.median

    def ms(key, stat):
        return f"{med(r[key][stat] for r in runs) * 1e3:.1f} ms"

    n = len(runs)
    print(f"Medians over {n} run(s) of {runs[0]['requests']} requests each.\n")
    print("| round trip | min | median | p95 | p99 | max | p99 of each run (ms) |")
    print("|---|---|---|---|---|---|---|")
    rows = [("`processcontrol status --json` (whole command)", "cli"),
            ("raw socket, new connection per request", "raw_new"),
            ("raw socket, one kept connection", "raw_kept"),
            ("`processcontrol --version` (exec floor, 50 runs)", "exec_floor")]
    for label, key in rows:
        cells = " | ".join(ms(key, s) for s in ("min", "median", "p95", "p99", "max"))
        per_run = ", ".join(f"{r[key]['p99'] * 1e3:.1f}" for r in runs)
        print(f"| {label} | {cells} | {per_run} |")
    print()
    m = lambda f: med(f(r) for r in runs)  # noqa: E731
    print(f"- reply size: {m(lambda r: r['reply_bytes']['median']) / 1024:.0f} KiB "
          f"({m(lambda r: r['measure']['processes_in_reply']):.0f} processes)")
    print(f"- daemon CPU, crash loops alone (3 s): "
          f"{m(lambda r: r['idle']['cpu_pct_sched']):.1f}% of a core; during the requests: "
          f"{m(lambda r: r['measure']['cpu_pct_sched']):.1f}% (schedstat; ticks: "
          f"{m(lambda r: r['idle']['cpu_pct_ticks']):.1f}% / "
          f"{m(lambda r: r['measure']['cpu_pct_ticks']):.1f}%)")
    print(f"- daemon CPU per status request (200 back-to-back on one connection, minus the "
          f"crash loops' rate): {m(lambda r: r['cpu_per_request_ms']):.2f} ms "
          f"({m(lambda r: r['cpu_per_request_raw_ms']):.2f} ms without the subtraction)")
    print(f"- crash-loop restarts/s: {m(lambda r: r['idle']['restarts_per_s']):.0f} alone, "
          f"{m(lambda r: r['measure']['restarts_per_s']):.0f} during the requests; breakers "
          f"not closed at the end: {m(lambda r: r['measure']['crashers_breaker_not_closed']):.0f}")
    print(f"- daemon RSS during the run: {m(lambda r: r['rss_kib']['min']) / 1024:.1f}–"
          f"{m(lambda r: r['rss_kib']['max']) / 1024:.1f} MiB (VmHWM "
          f"{m(lambda r: r['rss_kib']['hwm']) / 1024:.1f} MiB), "
          f"{m(lambda r: r['threads']):.0f} threads")
    print(f"- machine busy (both cores, /proc/stat): "
          f"{m(lambda r: r['idle']['machine_busy_pct']):.0f}% before the requests, "
          f"{m(lambda r: r['measure']['machine_busy_pct']):.0f}% during them")
    print("- load average (1/5/15 min) before each run: " +
          "; ".join("/".join(f"{x:.2f}" for x in r["load_before"]) for r in runs) +
          "; after: " + "; ".join("/".join(f"{x:.2f}" for x in r["load_after"]) for r in runs))
    print(f"- all {SLEEPERS} sleepers running after "
          f"{m(lambda r: r['all_running_s']):.2f} s; shutdown took "
          f"{m(lambda r: r['shutdown_s']):.2f} s; failed requests: "
          f"{sum(len(r['failures']) for r in runs)}")
    for r in runs:
        if r.get("strace"):
            print(f"\nstrace -c -f on the daemon ({r['strace_requests']} raw requests, median "
                  f"{r['strace_raw_median_under_trace'] * 1e3:.1f} ms under trace):\n")
            print("```")
            print("\n".join(r["strace"].strip().splitlines()[:14]))
            print("```")


def main():
    global SLEEPERS, CRASHERS
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--requests", type=int, default=500)
    r.add_argument("--strace", type=float, default=0)
    r.add_argument("--crashers", type=int, default=CRASHERS,
                   help="how many of the 500 crash-loop (for comparisons; default 50)")
    p = sub.add_parser("report")
    p.add_argument("files", nargs="+")
    g = sub.add_parser("diagnose")
    g.add_argument("--bin", required=True)
    g.add_argument("--work", required=True)
    args = ap.parse_args()
    if args.what == "run":
        SLEEPERS, CRASHERS = 500 - args.crashers, args.crashers
    {"run": run, "report": report, "diagnose": diagnose}[args.what](args)


if __name__ == "__main__":
    main()
