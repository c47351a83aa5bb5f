#!/usr/bin/env python3
"""Driver of bench/up_scale.sh: `processcontrol up` (and supervisord) with N processes that
only pause(). See docs/benchmarks.md, "`up` at scale: 500 to 5,000 processes".

    up_scale.py run --who pc|sv --n N --child PATH --work DIR --out FILE
                    [--bin PATH] [--supervisord PATH] [--idle SECS] [--requests K]
        one run: fresh supervisor, start N children, RSS, optional idle CPU and status
        latency, stop; JSON to FILE
    up_scale.py report FILE...
        markdown tables of the medians over the runs' JSON files, on stdout

Every process started here inherits PCBENCH_RUN from the caller (the shell script kills
whatever still carries it on exit, and `run` kills its supervisor's process group when
anything goes wrong).
"""

import argparse
import json
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import xmlrpc.client

from procstat import cpu_ticks, loadavg, schedstat_ns, status_kib

TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
POLL_GAP = 0.025  # between two status requests / two /proc scans while waiting


def log(msg):
    print(f"[up_scale] {msg}", file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def summary(xs):
    xs = sorted(xs)
    n = len(xs)

    def pct(p):  # nearest rank
        return xs[min(n - 1, max(0, int(-(-p * n // 100)) - 1))]

    return {"n": n, "min": xs[0], "median": statistics.median(xs), "p95": pct(95),
            "p99": pct(99), "max": xs[-1]}


# --- children, seen in /proc ------------------------------------------------------------

class ChildScan(threading.Thread):
    """Counts the supervisor's children that have exec'd the bench child (comm) and carry the
    run's marker, scanning /proc every POLL_GAP until `n` are there; `done_at` is the end of
    the scan that first saw all of them (an upper bound: the resolution is one scan).

    Confirmed pids are not read again (a paused child does not go away). Pids that are not
    the supervisor's children are cached too, but the cache is dropped when the count
    stalls for a second, in case a pid was reused by a new child."""

    def __init__(self, sup_pid, n, comm, marker, timeout):
        super().__init__(daemon=True)
        self.sup, self.n, self.comm = str(sup_pid), n, comm
        self.marker = marker.encode()
        self.timeout = timeout
        self.found = set()
        self.done_at = None
        self.scans = 0
        self.stop = threading.Event()

    def run(self):
        other = set()
        deadline = now() + self.timeout
        last_growth, last_count = now(), 0
        while not self.stop.is_set() and now() < deadline:
            for d in os.listdir("/proc"):
                if not d.isdigit() or d in self.found or d in other:
                    continue
                try:
                    with open(f"/proc/{d}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                comm = stat[stat.index(b"(") + 1:stat.rindex(b")")]
                ppid = stat[stat.rindex(b")") + 2:].split()[1].decode()
                if ppid != self.sup:
                    other.add(d)
                    continue
                if comm != self.comm:
                    continue  # forked, not exec'd yet: look again next scan
                try:
                    with open(f"/proc/{d}/environ", "rb") as f:
                        if self.marker not in f.read().split(b"\0"):
                            continue
                except OSError:
                    continue
                self.found.add(d)
            self.scans += 1
            if len(self.found) >= self.n:
                self.done_at = now()
                return
            if len(self.found) != last_count:
                last_growth, last_count = now(), len(self.found)
            elif now() - last_growth > 1.0:
                other.clear()
                last_growth = now()
            self.stop.wait(POLL_GAP)


class DeathWatch(threading.Thread):
    """Opens a pidfd per pid now; records when the last of them has terminated."""

    def __init__(self, pids, timeout):
        super().__init__(daemon=True)
        self.fds = {}
        for pid in pids:
            try:
                self.fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                pass  # already dead: not counted
        self.timeout = timeout
        self.last = None
        self.left = None

    def run(self):
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        pending = set(self.fds)
        deadline = now() + self.timeout
        while pending and now() < deadline:
            for fd, _ in poller.poll(100):
                if fd in pending:
                    pending.discard(fd)
                    poller.unregister(fd)
                    self.last = now()
        self.left = len(pending)
        for fd in self.fds:
            os.close(fd)


# --- ProcessControl's control socket ----------------------------------------------------

def raw_status(path):
    """One `{"cmd":"status"}` round trip on a new connection: (seconds, reply line)."""
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b'{"cmd":"status"}\n')
        with s.makefile("rb") as f:
            line = f.readline()
    return time.perf_counter() - t0, line


def all_running(line, n):
    """Whether the reply lists n processes, all "running" (counted on the bytes first: a
    5,000-process reply is about 1 MB, and parsing it at every poll would load the CPU)."""
    if line.count(b'"state":"running"') < n:
        return False
    items = json.loads(line)["result"]
    return len(items) == n and all(s["state"] == "running" for s in items)


def write_pc_config(path, n, child):
    lines = []
    for i in range(n):
        lines += [f"[processes.p{i:04}]", f'command = ["{child}", "pause"]', ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# --- supervisord ------------------------------------------------------------------------

def write_sv_config(path, work, sock, n, child):
    with open(path, "w") as f:
        f.write(
            f"[unix_http_server]\nfile={sock}\n"
            f"[supervisord]\nnodaemon=true\nloglevel=warn\n"
            f"logfile={work}/supervisord.log\npidfile={work}/supervisord.pid\n"
            f"childlogdir={work}\nminfds=1024\nminprocs=200\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        )
        for i in range(n):
            # As in bench/driver.py: started by startAllProcesses, RUNNING at fork
            # (startsecs=0), output piped and drained but not written to files.
            f.write(f"[program:p{i:04}]\ncommand={child} pause\nautostart=false\n"
                    "startsecs=0\nautorestart=unexpected\nstopsignal=TERM\nstopwaitsecs=10\n"
                    "stdout_logfile=NONE\nstderr_logfile=NONE\n")


def sv_rpc(sock):
    from supervisor.xmlrpc import SupervisorTransport

    return xmlrpc.client.ServerProxy(
        "http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://" + sock)
    ).supervisor


# --- one run ----------------------------------------------------------------------------

def run(a):
    os.makedirs(a.work, exist_ok=True)
    marker = "PCBENCH_RUN=" + os.environ["PCBENCH_RUN"]
    comm = os.path.basename(a.child)[:15].encode()
    sock = os.path.join(a.work, "ctl.sock")
    res = {"who": a.who, "n": a.n, "load_before": loadavg(),
           "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE))}
    errlog = open(os.path.join(a.work, "supervisor.log"), "wb")
    if a.who == "pc":
        cfg = os.path.join(a.work, "processcontrol.toml")
        write_pc_config(cfg, a.n, a.child)
        argv = [a.bin, "up", "-c", cfg, "--socket", sock]
    else:
        cfg = os.path.join(a.work, "supervisord.conf")
        write_sv_config(cfg, a.work, sock, a.n, a.child)
        argv = [a.supervisord, "-n", "-c", cfg]

    t0 = now()
    sup = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog,
                           start_new_session=True)
    pid = sup.pid
    scan = ChildScan(pid, a.n, comm, marker, timeout=a.wait)
    scan.start()
    try:
        deadline = t0 + a.wait
        if a.who == "pc":
            polls = 0
            while True:
                if sup.poll() is not None:
                    raise RuntimeError(f"up exited with {sup.returncode}")
                if now() > deadline:
                    raise RuntimeError(f"not all {a.n} running after {a.wait} s")
                try:
                    polls += 1
                    if all_running(raw_status(sock)[1], a.n):
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(POLL_GAP)
            res["start_reported_s"] = now() - t0
            res["status_polls"] = polls
        else:
            rpc = sv_rpc(sock)
            while True:
                if sup.poll() is not None:
                    raise RuntimeError(f"supervisord exited with {sup.returncode}")
                if now() > deadline:
                    raise RuntimeError("supervisord did not come up")
                try:
                    if os.path.exists(sock) and rpc.getState()["statename"] == "RUNNING":
                        break
                except Exception:
                    rpc = sv_rpc(sock)  # the transport is unusable after a failed request
                time.sleep(POLL_GAP)
            res["sv_ready_s"] = now() - t0
            t1 = now()
            rpc.startAllProcesses(True)
            res["sv_startall_s"] = now() - t1
            res["start_reported_s"] = now() - t0
            states = {i["statename"] for i in rpc.getAllProcessInfo()}
            if states != {"RUNNING"}:
                raise RuntimeError(f"supervisord states after start: {states}")
        scan.join(max(0.0, deadline - now()))
        if scan.done_at is None:
            raise RuntimeError(f"only {len(scan.found)}/{a.n} children seen in /proc")
        res["start_children_s"] = scan.done_at - t0
        res["child_scans"] = scan.scans
        log(f"{a.who} {a.n}: all running (reported) after {res['start_reported_s']:.2f} s, "
            f"all children exist after {res['start_children_s']:.2f} s")

        # RSS 2 s after all children run.
        time.sleep(2)
        res["rss_kib"] = status_kib(pid, "VmRSS")
        res["hwm_kib"] = status_kib(pid, "VmHWM")
        res["threads"] = len(os.listdir(f"/proc/{pid}/task"))
        res["fds"] = len(os.listdir(f"/proc/{pid}/fd"))

        if a.idle:
            t_0, s_0, w_0 = cpu_ticks(pid), schedstat_ns(pid), now()
            time.sleep(a.idle)
            t_1, s_1, w_1 = cpu_ticks(pid), schedstat_ns(pid), now()
            scale = a.idle / (w_1 - w_0)  # normalised to exactly `idle` seconds
            res["idle"] = {"seconds": a.idle, "ticks_ms": (t_1 - t_0) * TICK_MS * scale,
                           "sched_ms": (s_1 - s_0) / 1e6 * scale, "load": loadavg()}
            log(f"{a.who} {a.n}: idle CPU over {a.idle} s: {res['idle']['sched_ms']:.1f} ms "
                f"(schedstat), {res['idle']['ticks_ms']:.0f} ms (ticks)")

        if a.requests and a.who == "pc":
            cli, raw, sizes, failures = [], [], [], []
            for i in range(a.requests):
                t1 = time.perf_counter()
                p = subprocess.run([a.bin, "status", "--json", "--socket", sock],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                dt = time.perf_counter() - t1
                if p.returncode != 0 or not p.stdout.startswith(b"["):
                    failures.append({"i": i, "rc": p.returncode,
                                     "stderr": p.stderr.decode(errors="replace")[:300]})
                else:
                    cli.append(dt)
                dt, line = raw_status(sock)
                if not line.startswith(b'{"ok":true'):
                    failures.append({"i": i, "raw": line[:300].decode(errors="replace")})
                raw.append(dt)
                sizes.append(len(line))
            res["status"] = {"cli": summary(cli) if cli else None, "raw": summary(raw),
                             "reply_bytes": statistics.median(sizes), "failures": failures,
                             "load": loadavg()}
            log(f"{a.who} {a.n}: status --json p99 "
                f"{res['status']['cli']['p99'] * 1e3 if cli else float('nan'):.1f} ms, raw p99 "
                f"{res['status']['raw']['p99'] * 1e3:.1f} ms, {len(failures)} failures")

        # Stop.
        watch = DeathWatch([int(p) for p in scan.found], timeout=a.wait)
        res["watched"] = len(watch.fds)
        watch.start()
        res["load_stop"] = loadavg()
        t1 = now()
        if a.who == "pc":
            sup.send_signal(signal.SIGTERM)
            sup.wait(a.wait)
            res["stop_exit_s"] = now() - t1
            res["rc"] = sup.returncode
        else:
            rpc.stopAllProcesses(True)
            res["stop_exit_s"] = now() - t1  # here: stopAllProcesses returned
        watch.join(max(1.0, a.wait - (now() - t1)))
        res["children_left"] = watch.left
        if watch.left or watch.last is None:
            raise RuntimeError(f"{watch.left} children still alive after the stop")
        res["stop_children_s"] = watch.last - t1
        log(f"{a.who} {a.n}: stop: children gone after {res['stop_children_s']:.2f} s, "
            f"{'up exited' if a.who == 'pc' else 'stopAllProcesses returned'} after "
            f"{res['stop_exit_s']:.2f} s")
        res["load_after"] = loadavg()
    finally:
        scan.stop.set()
        if sup.poll() is None:
            try:
                if a.who == "sv":  # its children are gone or measured: no long wait
                    sup.send_signal(signal.SIGTERM)
                    sup.wait(5)
            except Exception:
                pass
            if sup.poll() is None:
                os.killpg(pid, signal.SIGKILL)
                sup.wait()
        errlog.close()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


# --- report -----------------------------------------------------------------------------

def report(a):
    runs = []
    for path in a.files:
        with open(path) as f:
            runs.append(json.load(f))
    med = statistics.median
    groups = {}
    for r in runs:
        groups.setdefault((r["who"], r["n"]), []).append(r)
    name = {"pc": "ProcessControl `up`", "sv": "supervisord 4.3"}

    def m(rs, f):
        vals = [f(r) for r in rs if f(r) is not None]
        return med(vals) if vals else None

    def ms(x):
        return "—" if x is None else f"{x * 1e3:,.0f} ms" if x >= 0.1 else f"{x * 1e3:.1f} ms"

    def us(x):
        return "—" if x is None else f"{x * 1e3:.1f} ms" if x >= 1e-3 else f"{x * 1e6:.0f} µs"

    nruns = max(len(v) for v in groups.values())
    print(f"Medians over {nruns} run(s) per row (runs per row in the last column). "
          f"Start is timed from the exec of the supervisor; stop from SIGTERM to `up` "
          f"(ProcessControl) or the stopAllProcesses call (supervisord).\n")
    print("| supervisor | N | RSS 2 s after start | start: all reported running | start: all "
          "children exist | start per process | stop: all children gone | stop: `up` exited "
          "/ stopAllProcesses returned | stop per process | 1-min load | runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    order = sorted(groups, key=lambda k: (k[0] != "pc", k[1]))
    for who, n in order:
        rs = groups[(who, n)]
        rss = m(rs, lambda r: r["rss_kib"])
        start_r = m(rs, lambda r: r["start_reported_s"])
        start_c = m(rs, lambda r: r["start_children_s"])
        stop_c = m(rs, lambda r: r["stop_children_s"])
        stop_e = m(rs, lambda r: r["stop_exit_s"])
        load = m(rs, lambda r: r["load_before"][0])
        print(f"| {name[who]} | {n:,} | {rss / 1024:.1f} MiB | {ms(start_r)} | {ms(start_c)} | "
              f"{us(max(start_r, start_c) / n)} | {ms(stop_c)} | {ms(stop_e)} | "
              f"{us(max(stop_c, stop_e) / n)} | {load:.1f} | {len(rs)} |")
    print()
    print("Per process = the later of the two ends, divided by N.\n")

    pcs = sorted(n for who, n in groups if who == "pc")
    if len(pcs) >= 2:
        lo, hi = pcs[0], pcs[-1]
        L, H = groups[("pc", lo)], groups[("pc", hi)]
        print(f"ProcessControl, per-process time at {hi:,} : at {lo:,}:\n")
        for label, key in [("start, all reported running", "start_reported_s"),
                           ("start, all children exist", "start_children_s"),
                           ("stop, all children gone", "stop_children_s"),
                           ("stop, `up` exited", "stop_exit_s")]:
            ratio = (m(H, lambda r: r[key]) / hi) / (m(L, lambda r: r[key]) / lo)
            print(f"- {label}: **{ratio:.2f}x** (per process {us(m(L, lambda r: r[key]) / lo)} "
                  f"→ {us(m(H, lambda r: r[key]) / hi)})")
        print()
    for (who, n), rs in sorted(groups.items()):
        idle = [r["idle"] for r in rs if r.get("idle")]
        if idle:
            print(f"- {name[who]}, {n:,} processes, idle CPU over {idle[0]['seconds']} s: "
                  f"**{med(i['sched_ms'] for i in idle):.1f} ms** (schedstat; each run: "
                  + ", ".join(f"{i['sched_ms']:.1f}" for i in idle) + " ms), "
                  f"{med(i['ticks_ms'] for i in idle):.0f} ms in utime+stime ticks (each run: "
                  + ", ".join(f"{i['ticks_ms']:.0f}" for i in idle) + " ms)")
        st = [r["status"] for r in rs if r.get("status")]
        if st:
            cli = [s["cli"] for s in st if s["cli"]]
            print(f"- {name[who]}, {n:,} processes, {st[0]['raw']['n']} requests per run: "
                  f"`processcontrol status --json` (whole command) p99 "
                  f"**{med(c['p99'] for c in cli) * 1e3:.1f} ms** (median "
                  f"{med(c['median'] for c in cli) * 1e3:.1f} ms; p99 of each run: "
                  + ", ".join(f"{c['p99'] * 1e3:.1f}" for c in cli) + " ms); raw "
                  f"`{{\"cmd\":\"status\"}}` on a new connection p99 "
                  f"{med(s['raw']['p99'] for s in st) * 1e3:.1f} ms (median "
                  f"{med(s['raw']['median'] for s in st) * 1e3:.1f} ms); reply "
                  f"{med(s['reply_bytes'] for s in st) / 1024:.0f} KiB; failed requests: "
                  f"{sum(len(s['failures']) for s in st)}")
    for (who, n), rs in sorted(groups.items()):
        print(f"- {name[who]}, {n:,}: threads {m(rs, lambda r: r['threads']):.0f}, open "
              f"descriptors {m(rs, lambda r: r['fds']):.0f}, VmHWM "
              f"{m(rs, lambda r: r['hwm_kib']) / 1024:.1f} MiB"
              + (f"; supervisord up after {ms(m(rs, lambda r: r['sv_ready_s']))}, "
                 f"startAllProcesses took {ms(m(rs, lambda r: r['sv_startall_s']))}"
                 if who == "sv" else ""))
    nofile = runs[0]["nofile"]
    print(f"- RLIMIT_NOFILE during the runs: soft {nofile[0]}, hard {nofile[1]}")
    print("- load average (1/5/15 min) before each run: " + "; ".join(
        f"{name[r['who']].split()[0]} {r['n']}: " + "/".join(f"{x:.1f}" for x in r["load_before"])
        for r in runs))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--who", choices=["pc", "sv"], required=True)
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--child", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--bin")
    r.add_argument("--supervisord")
    r.add_argument("--idle", type=float, default=0)
    r.add_argument("--requests", type=int, default=0)
    r.add_argument("--wait", type=float, default=300,
                   help="longest wait for any one step (start, stop), in seconds")
    p = sub.add_parser("report")
    p.add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.what == "run":
        if (a.who == "pc") != bool(a.bin) or (a.who == "sv") != bool(a.supervisord):
            ap.error("--who pc needs --bin, --who sv needs --supervisord")
        run(a)
    else:
        report(a)


if __name__ == "__main__":
    main()
