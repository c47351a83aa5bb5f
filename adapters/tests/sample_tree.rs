//! The sampling engine against real helper processes (python3 and sh children).
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use processcontrol_adapters::sample::{ProcSampler, SampleReport, Usage};

const BOUND: Duration = Duration::from_secs(20);

/// A helper child in its own process group (killed with all its descendants on drop),
/// driven by line commands on stdin and answering "ok" on stdout.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    lines: std_mpsc::Receiver<String>,
}

const HELPER: &str = r#"
import os, subprocess, sys, threading
keep = []
print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "alloc":
        keep.append(bytearray(b"\x01") * (int(args[0]) << 20))
    elif cmd == "open":
        keep.extend(open(os.devnull) for _ in range(int(args[0])))
    elif cmd == "threads":
        ev = threading.Event()
        keep.append(ev)
        for _ in range(int(args[0])):
            threading.Thread(target=ev.wait, daemon=True).start()
    elif cmd == "spawn":
        keep.append(subprocess.Popen(["sh", "-c", " ".join(args)]))
    print("ok", flush=True)
"#;

impl Helper {
    fn python() -> Helper {
        Self::start(Command::new("python3").args(["-c", HELPER]), true)
    }

    fn shell(script: &str) -> Helper {
        Self::start(Command::new("sh").args(["-c", script]), false)
    }

    fn start(command: &mut Command, wait_ready: bool) -> Helper {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn helper");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut helper = Helper {
            child,
            stdin,
            lines,
        };
        if wait_ready {
            helper.expect_line("ready");
        }
        helper
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn expect_line(&mut self, want: &str) {
        let line = self
            .lines
            .recv_timeout(BOUND)
            .expect("helper did not answer");
        assert_eq!(line, want);
    }

    fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.expect_line("ok");
    }

    fn kill(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sample_one(sampler: &mut ProcSampler) -> SampleReport {
    let mut out = Vec::new();
    sampler.sample(&mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    out.pop().unwrap()
}

fn usage(sampler: &mut ProcSampler) -> Usage {
    match sample_one(sampler) {
        SampleReport::Usage(u) => u,
        other => panic!("expected usage, got {other:?}"),
    }
}

/// Samples until `pred` holds (the helper's own children appear asynchronously).
fn usage_until(sampler: &mut ProcSampler, pred: impl Fn(&Usage) -> bool) -> Usage {
    let deadline = Instant::now() + BOUND;
    loop {
        let u = usage(sampler);
        if pred(&u) {
            return u;
        }
        assert!(
            Instant::now() < deadline,
            "condition never held; last {u:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rss_grows_when_the_child_touches_memory() {
    let mut helper = Helper::python();
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, helper.pid());
    let before = usage(&mut sampler);
    assert_eq!((before.tag, before.pid), (1, helper.pid()));
    assert!(before.rss_bytes > 1 << 20, "{before:?}");
    helper.command("alloc 64");
    let after = usage(&mut sampler);
    let grown = after.rss_bytes.saturating_sub(before.rss_bytes);
    assert!(
        grown >= 60 << 20,
        "grew by {grown} bytes: {before:?} -> {after:?}"
    );
}

#[test]
fn fd_count_follows_open_files() {
    let mut helper = Helper::python();
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, helper.pid());
    let before = usage(&mut sampler);
    assert!(before.fds_complete);
    assert!(before.open_fds >= 3, "{before:?}");
    helper.command("open 40");
    let after = usage(&mut sampler);
    assert_eq!(
        after.open_fds,
        before.open_fds + 40,
        "{before:?} -> {after:?}"
    );
}

#[test]
fn threads_are_counted() {
    let mut helper = Helper::python();
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, helper.pid());
    let before = usage(&mut sampler);
    helper.command("threads 5");
    let after = usage(&mut sampler);
    assert_eq!(after.threads, before.threads + 5, "{before:?} -> {after:?}");
    assert_eq!(after.processes, 1);
}

#[test]
fn descendants_are_included_down_to_grandchildren() {
    let mut helper = Helper::python();
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, helper.pid());
    let alone = usage(&mut sampler);
    assert_eq!(alone.processes, 1);
    // Spawned from a helper thread so children are listed under a non-main thread too.
    helper.command("threads 1");
    helper.command("spawn sleep 60 & sleep 60 & wait");
    helper.command("alloc 1");
    // python -> sh -> 2 x sleep
    let tree = usage_until(&mut sampler, |u| u.processes == 4);
    assert!(tree.threads >= 5, "{tree:?}");
    assert!(tree.rss_bytes > alone.rss_bytes, "{tree:?}");
    assert!(tree.open_fds > alone.open_fds, "{tree:?}");
}

#[test]
fn children_forked_by_a_secondary_thread_are_found() {
    // The child is listed only under the (still running) thread that forked it.
    let script = "import subprocess, threading, sys\n\
        ev = threading.Event()\n\
        def fork():\n    subprocess.Popen(['sleep', '60'])\n    print('ready', flush=True)\n    ev.wait()\n\
        threading.Thread(target=fork, daemon=True).start()\n\
        sys.stdin.read()";
    let helper = Helper::start(Command::new("python3").args(["-c", script]), true);
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, helper.pid());
    let u = usage(&mut sampler);
    assert_eq!((u.processes, u.threads), (2, 3), "{u:?}");
}

/// utime + stime of one process, read independently of the sampler.
fn cpu_ticks_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

#[test]
fn busy_descendant_cpu_is_measured_and_idle_tree_is_near_zero() {
    // The root shell idles in `wait`; its child spins. On an idle machine the tree uses
    // about one core; on a loaded one, less: so the figure is checked against the
    // spinner's own CPU counters over the same window, plus loose absolute bounds.
    let busy = Helper::shell("python3 -c 'while True: pass' & wait");
    let idle = Helper::shell("sleep 60 & wait");
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, busy.pid());
    sampler.watch(2, idle.pid());
    let deadline = Instant::now() + BOUND;
    loop {
        let mut out = Vec::new();
        sampler.sample(&mut out);
        let ready = out
            .iter()
            .all(|r| matches!(r, SampleReport::Usage(u) if u.processes == 2));
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "trees never formed: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spinner = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", busy.pid()))
        .unwrap()
        .trim()
        .parse::<u32>()
        .unwrap();
    // The last sample above is the baseline; measure over one second.
    let ticks_before = cpu_ticks_of(spinner);
    std::thread::sleep(Duration::from_secs(1));
    let mut out = Vec::new();
    sampler.sample(&mut out);
    let ticks_after = cpu_ticks_of(spinner);
    let [SampleReport::Usage(b), SampleReport::Usage(i)] = &out[..] else {
        panic!("{out:?}");
    };
    let busy_cpu = b.cpu_percent.expect("baseline exists");
    let idle_cpu = i.cpu_percent.expect("baseline exists");
    let window = b.interval.unwrap();
    assert!(window >= Duration::from_secs(1));
    let expected =
        (ticks_after - ticks_before) as f64 / clock_ticks_per_second() / window.as_secs_f64()
            * 100.0;
    // Counters advance in clock ticks (10 ms): allow a few ticks of skew either way.
    assert!(
        (busy_cpu - expected).abs() <= 5.0,
        "busy tree at {busy_cpu}%, its spinner at {expected}%"
    );
    assert!(
        (15.0..=110.0).contains(&busy_cpu),
        "busy tree at {busy_cpu}%"
    );
    assert!(idle_cpu < 5.0, "idle tree at {idle_cpu}%");
}

#[test]
fn first_sample_has_no_cpu_figure() {
    let helper = Helper::shell("sleep 60");
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(1, helper.pid());
    let first = usage(&mut sampler);
    assert_eq!((first.cpu_percent, first.interval), (None, None));
    let second = usage(&mut sampler);
    assert!(
        second.cpu_percent.is_some() && second.interval.is_some(),
        "{second:?}"
    );
}

#[test]
fn a_root_that_exits_is_reported_gone_once_then_dropped() {
    let mut helper = Helper::shell("sleep 60");
    let pid = helper.pid();
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(5, pid);
    assert!(matches!(sample_one(&mut sampler), SampleReport::Usage(_)));
    helper.kill();
    assert_eq!(sample_one(&mut sampler), SampleReport::Gone { tag: 5, pid });
    assert_eq!(sampler.watched(), 0);
    let mut out = Vec::new();
    sampler.sample(&mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_zombie_root_is_gone() {
    let mut helper = Helper::shell("exit 0");
    let pid = helper.pid();
    // Not reaped yet: the pid is a zombie once the shell has exited. Wait for that state
    // without reaping (waitid with WNOWAIT).
    nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
        nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
    )
    .unwrap();
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(3, pid);
    assert_eq!(sample_one(&mut sampler), SampleReport::Gone { tag: 3, pid });
    helper.kill();
}

#[test]
fn unknown_pid_is_gone_not_an_error() {
    let mut sampler = ProcSampler::new().unwrap();
    // Above the kernel's pid_max limit (at most 2^22), so it never exists.
    sampler.watch(9, 1 << 23);
    assert_eq!(
        sample_one(&mut sampler),
        SampleReport::Gone {
            tag: 9,
            pid: 1 << 23
        }
    );
}

#[test]
fn unwatch_stops_reports_and_several_roots_come_in_tag_order() {
    let a = Helper::shell("sleep 60");
    let b = Helper::shell("sleep 60");
    let mut sampler = ProcSampler::new().unwrap();
    sampler.watch(20, b.pid());
    sampler.watch(10, a.pid());
    let mut out = Vec::new();
    sampler.sample(&mut out);
    let tags: Vec<u64> = out
        .iter()
        .map(|r| match r {
            SampleReport::Usage(u) => u.tag,
            SampleReport::Gone { tag, .. } => *tag,
        })
        .collect();
    assert_eq!(tags, [10, 20]);
    assert!(sampler.unwatch(10));
    assert!(!sampler.unwatch(10));
    out.clear();
    sampler.sample(&mut out);
    assert!(matches!(&out[..], [SampleReport::Usage(u)] if u.tag == 20 && u.pid == b.pid()));
}
