//! Reading `/proc` to find the processes of an instance that left its process group.
//!
//! Only used when an event makes it necessary (a signal is being sent, or a reap left an
//! instance's group empty): never on a timer.

use std::collections::HashMap;
use std::fs;

/// Name of the environment variable that marks every process of an instance.
///
/// Its value is `<supervisor pid>:<launcher id>.<instance number>`; descendants inherit it
/// through `fork` and `exec`, so even a daemon that double-forks and calls `setsid` still
/// carries it unless it deliberately clears its environment.
pub const MARKER_VAR: &str = "PROCESSCONTROL_INSTANCE";

/// The fields of `/proc/<pid>/stat` this module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    /// One-letter state; `Z` (zombie) and `X` (dead) processes no longer run.
    pub(crate) state: u8,
    pub(crate) ppid: i32,
    pub(crate) pgid: i32,
    /// Start time in clock ticks since boot, to tell a reused pid from the original.
    pub(crate) starttime: u64,
}

impl ProcStat {
    /// Whether the process can still run code (and so still needs to be killed).
    pub(crate) fn is_live(&self) -> bool {
        self.state != b'Z' && self.state != b'X'
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name may contain spaces and parentheses,
/// so the fields are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let pid = line[..open].trim().parse().ok()?;
    let close = line.rfind(')')?;
    let mut fields = line.get(close + 1..)?.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    // Fields after pgrp: session, tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt,
    // utime, stime, cutime, cstime, priority, nice, num_threads, itrealvalue, then starttime
    // (the 17th, index 16).
    let starttime = fields.nth(16)?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgid,
        starttime,
    })
}

/// Reads one process's stat; `None` when it has gone (or is unreadable).
pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    let line = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&line)
}

/// Extracts the marker's value from a raw `environ` block (NUL-separated `KEY=value`).
pub(crate) fn marker_in_environ(environ: &[u8]) -> Option<String> {
    let prefix = format!("{MARKER_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Pauses between re-reads of an environment that read as empty: 1+2+4+8+16 ms at most.
const EMPTY_ENVIRON_BACKOFF_MS: [u64; 5] = [1, 2, 4, 8, 16];

/// Reads the marker of a process; `None` if it has none, has gone, is a zombie, or cannot be
/// read (a non-root supervisor cannot read the environment of a non-dumpable process).
///
/// A live process whose environment reads as *empty* is almost always inside `execve`: from
/// the switch to the new address space until the new image's stack is set up, the kernel
/// reports no environment at all. Missing a marker there would let `gone` resolve while a
/// daemon is merely exec'ing, so such a read is retried a few times with a short, bounded
/// backoff (no event exists for "exec finished"). Only a process that truly has an empty
/// environment (`env -i`) pays the full ~31 ms, and it carries no marker anyway.
pub(crate) fn read_marker(pid: i32) -> Option<String> {
    let path = format!("/proc/{pid}/environ");
    for pause in EMPTY_ENVIRON_BACKOFF_MS {
        let environ = fs::read(&path).ok()?;
        if !environ.is_empty() {
            return marker_in_environ(&environ);
        }
        if !read_stat(pid).is_some_and(|stat| stat.is_live()) {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(pause));
    }
    None
}

/// Every process currently listed in `/proc`, by pid.
fn all_stats() -> HashMap<i32, ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .map(|stat| (stat.pid, stat))
        .collect()
}

/// Whether `pid` has `ancestor` among its ancestors, following ppid links in `stats`.
fn is_descendant(pid: i32, ancestor: i32, stats: &HashMap<i32, ProcStat>) -> bool {
    let mut current = pid;
    // A ppid chain is at most as long as the number of processes; the bound only guards
    // against a cycle in a snapshot taken while processes were being reparented.
    for _ in 0..=stats.len() {
        let Some(stat) = stats.get(&current) else {
            return false;
        };
        if stat.ppid == ancestor {
            return true;
        }
        if stat.ppid <= 1 {
            return false;
        }
        current = stat.ppid;
    }
    false
}

/// A live descendant of the supervisor that carries an instance marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marked {
    pub(crate) pid: i32,
    pub(crate) pgid: i32,
    pub(crate) marker: String,
}

/// All live descendants of `supervisor` that carry a marker from `wanted` (any marker when
/// `wanted` is empty). Descent is checked so that a stray process that merely copied a
/// marker is never signalled.
pub(crate) fn marked_descendants(supervisor: i32, wanted: &[&str]) -> Vec<Marked> {
    let stats = all_stats();
    stats
        .values()
        .filter(|stat| stat.is_live() && is_descendant(stat.pid, supervisor, &stats))
        .filter_map(|stat| {
            let marker = read_marker(stat.pid)?;
            let matches = wanted.is_empty() || wanted.contains(&marker.as_str());
            matches.then_some(Marked {
                pid: stat.pid,
                pgid: stat.pgid,
                marker,
            })
        })
        .collect()
}

/// A live process carrying the marker of a supervisor that no longer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleProcess {
    /// Its pid.
    pub pid: u32,
    /// The marker value it carries, naming the dead supervisor's pid.
    pub marker: String,
}

/// Finds processes left behind by a supervisor that died (e.g. was SIGKILLed): children's
/// children are not covered by the parent-death signal, so they survive their supervisor and
/// are reparented to init. A marker is stale when the supervisor pid it names is no longer
/// running, or is now a process that started after the marked one (the pid was reused).
pub fn find_stale_processes() -> Vec<StaleProcess> {
    let stats = all_stats();
    let me = std::process::id();
    stats
        .values()
        .filter(|stat| stat.is_live())
        .filter_map(|stat| {
            let marker = read_marker(stat.pid)?;
            let owner: i32 = marker.split(':').next()?.parse().ok()?;
            let owner_alive = stats
                .get(&owner)
                .is_some_and(|o| o.is_live() && o.starttime <= stat.starttime);
            let pid = u32::try_from(stat.pid).ok()?;
            let stale = !owner_alive && u32::try_from(owner).ok() != Some(me);
            stale.then_some(StaleProcess { pid, marker })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat.pid, 1234);
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgid, 1234);
        assert_eq!(stat.starttime, 98765);
        assert!(stat.is_live());
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("12 (x) Z 1").is_none());
    }

    #[test]
    fn finds_marker_in_environ() {
        let env = b"A=1\0PROCESSCONTROL_INSTANCE=42:abc.1\0B=2\0";
        assert_eq!(marker_in_environ(env).as_deref(), Some("42:abc.1"));
        assert_eq!(marker_in_environ(b"A=1\0B=2\0"), None);
        assert_eq!(marker_in_environ(b""), None);
    }

    #[test]
    fn reads_own_stat() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        let stat = read_stat(me).expect("own stat");
        assert_eq!(stat.pid, me);
        assert!(stat.is_live());
        // Init started first: a wrong field index would compare unrelated numbers.
        let init = read_stat(1).expect("init's stat");
        assert!(init.starttime <= stat.starttime);
    }
}
