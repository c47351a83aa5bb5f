"""What the benchmark scripts read of a process in /proc (shared by driver.py and
status_latency.py)."""

import os


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields after the command: state is index 0, utime index 11, stime index 12.
    return int(fields[11]) + int(fields[12])


def schedstat_ns(pid):
    """Sum of the run time of every thread, in ns (finer than ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def status_kib(pid, key):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM...), or None."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def loadavg():
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]
