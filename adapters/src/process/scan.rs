//! Reading `/proc`: the stat, marker and children of one process, the supervisor's own
//! children, and walks of process trees; plus the full scan of every process, kept for
//! kernels without `children` files and for [`find_stale_processes`].
//!
//! Only used when an event makes it necessary (a signal is being sent, or a reap left an
//! instance's group empty): never on a timer.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::sync::OnceLock;

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
    /// Threads in the process; each has its own list of children.
    pub(crate) num_threads: i64,
    /// Start time in clock ticks since boot, to tell a reused pid from the original.
    pub(crate) starttime: u64,
}

impl ProcStat {
    /// Whether the process can still run code (and so still needs to be killed). A main
    /// thread that exited while other threads run shows as a zombie with several threads.
    pub(crate) fn is_live(&self) -> bool {
        (self.state != b'Z' && self.state != b'X') || self.num_threads > 1
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
    // utime, stime, cutime, cstime, priority, nice, then num_threads (the 15th, index 14),
    // itrealvalue and starttime.
    let num_threads = fields.nth(14)?.parse().ok()?;
    let starttime = fields.nth(1)?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgid,
        num_threads,
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
    match read_mark(pid) {
        Mark::Marked(marker) => Some(marker),
        Mark::Unmarked | Mark::Unreadable | Mark::Gone => None,
    }
}

/// What the environment of a process says about its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mark {
    /// It carries this marker value.
    Marked(String),
    /// It carries no marker, or is a zombie.
    Unmarked,
    /// Its environment cannot be read (a non-root supervisor and a non-dumpable process).
    Unreadable,
    /// It no longer exists.
    Gone,
}

/// Like [`read_marker`], but tells an unreadable environment and a vanished process from
/// one without a marker.
pub(crate) fn read_mark(pid: i32) -> Mark {
    let path = format!("/proc/{pid}/environ");
    for pause in EMPTY_ENVIRON_BACKOFF_MS {
        let environ = match fs::read(&path) {
            Ok(environ) => environ,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Mark::Gone
            }
            Err(_) => return Mark::Unreadable,
        };
        if !environ.is_empty() {
            return marker_in_environ(&environ).map_or(Mark::Unmarked, Mark::Marked);
        }
        match read_stat(pid) {
            None => return Mark::Gone,
            Some(stat) if !stat.is_live() => return Mark::Unmarked,
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(pause)),
        }
    }
    // Still empty: most likely a slow exec on a loaded machine. Nobody can tell yet.
    Mark::Unreadable
}

/// The pids in one `children` file (`/proc/<pid>/task/<tid>/children`): the live and
/// zombie children that thread forked or was given as a reaper.
fn thread_children(pid: i32, tid: i32, into: &mut Vec<i32>) -> io::Result<()> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))?;
    into.extend(
        text.split_ascii_whitespace()
            .filter_map(|p| p.parse::<i32>().ok()),
    );
    Ok(())
}

/// The thread ids of `pid`.
fn threads(pid: i32) -> io::Result<Vec<i32>> {
    Ok(fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect())
}

/// The children of every thread of `pid`; a thread that exits while being read hands its
/// children to a sibling (maybe one already read), so the thread list is read again after
/// and any change makes this fail with `EAGAIN`.
fn all_children(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids = threads(pid)?;
    let mut children = Vec::new();
    for tid in &tids {
        match thread_children(pid, *tid, &mut children) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut after = threads(pid)?;
    tids.sort_unstable();
    after.sort_unstable();
    if tids != after {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    Ok(children)
}

/// Whether this kernel has `children` files (`CONFIG_PROC_CHILDREN`, Linux 3.5+ and set by
/// every mainstream distribution). Checked once; without them, finding an instance's
/// processes falls back to scanning all of `/proc`, which is said once in the log.
pub(crate) fn children_files_exist(supervisor: i32) -> bool {
    static EXIST: OnceLock<bool> = OnceLock::new();
    *EXIST.get_or_init(|| {
        let exist = fs::metadata(format!("/proc/{supervisor}/task/{supervisor}/children")).is_ok();
        if !exist {
            tracing::warn!(
                "this kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN): \
                 every signal and exit check scans all of /proc instead"
            );
        }
        exist
    })
}

/// The supervisor's direct children: leaders, and orphans reparented to it as subreaper.
/// `None` if they cannot be listed. Its thread set changes now and then (tokio's blocking
/// pool starts and retires threads), which only means reading again.
pub(crate) fn supervisor_children(supervisor: i32) -> Option<Vec<i32>> {
    let mut attempts = 0;
    loop {
        match all_children(supervisor) {
            Ok(children) => return Some(children),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && attempts < 4 => attempts += 1,
            Err(error) => {
                tracing::debug!(%error, "cannot list the supervisor's children");
                return None;
            }
        }
    }
}

/// Walks the process trees under `roots` (pairs of a pid and the parent it is expected to
/// have), adding every process met, live or zombie, to `found`, and the pids met dead or
/// gone to `dead`.
///
/// Returns false when a process died or changed parent during the walk. Its children then
/// moved to a subreaper (the supervisor, or one inside the tree) where this walk may not
/// look again, so the caller walks again. A process that is visited and confirmed alive
/// after its children were read had those children at that moment: its later forks come
/// from a process already found, and its later death is detected at its children. A process
/// in `known_dead` was already dead at an earlier walk, so its children had moved before
/// that walk's successor started: it does not make this walk incomplete.
pub(crate) fn walk(
    roots: &[(i32, i32)],
    found: &mut HashMap<i32, ProcStat>,
    known_dead: &std::collections::HashSet<i32>,
    dead: &mut Vec<i32>,
) -> bool {
    let mut complete = true;
    let mut stack: Vec<(i32, i32)> = roots.to_vec();
    let mut visited = std::collections::HashSet::new();
    let mut children = Vec::new();
    while let Some((pid, parent)) = stack.pop() {
        if !visited.insert(pid) {
            continue;
        }
        children.clear();
        // The children first, then the stat: a process still alive (and still the child
        // of `parent`) at the stat was alive while its children were read.
        let listed = thread_children(pid, pid, &mut children);
        let Some(stat) = read_stat(pid) else {
            complete &= known_dead.contains(&pid);
            dead.push(pid);
            continue;
        };
        if stat.ppid != parent {
            // Reparented (its parent died after listing it) or a reused pid.
            complete = false;
            continue;
        }
        let listed = if stat.num_threads > 1 {
            children.clear();
            all_children(pid).map(|all| children = all)
        } else {
            listed
        };
        if listed.is_err() {
            complete = false;
        }
        if !stat.is_live() {
            complete &= known_dead.contains(&pid);
            dead.push(pid);
        }
        found.insert(pid, stat);
        stack.extend(children.iter().map(|child| (*child, pid)));
    }
    complete
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
///
/// The full scan: the stat of every process on the machine. Only used where the kernel has
/// no `children` files, and to confirm that nothing is left when walks of an instance's
/// trees kept being disturbed by processes dying under them.
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
///
/// Only processes of the caller's own PID namespace are considered: a marker names its
/// supervisor's pid as seen in *its* namespace, which means nothing in ours (a container's
/// supervisor would look dead from the host).
pub fn find_stale_processes() -> Vec<StaleProcess> {
    let stats = all_stats();
    let me = std::process::id();
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let ours = namespace("self");
    stats
        .values()
        .filter(|stat| stat.is_live())
        .filter(|stat| ours.is_some() && namespace(&stat.pid.to_string()) == ours)
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

/// Kills (SIGKILL) one process [`find_stale_processes`] returned, if it is still the same
/// process: it is pinned with a pidfd and its marker read again before the signal, so a pid
/// reused meanwhile is never hit.
pub fn kill_stale_process(stale: &StaleProcess) -> Result<(), nix::errno::Errno> {
    let pid = i32::try_from(stale.pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    let nix_pid = nix::unistd::Pid::from_raw(pid);
    match super::pidfd::open(nix_pid) {
        Ok(fd) => {
            if read_marker(pid).as_deref() != Some(stale.marker.as_str()) {
                return Err(nix::errno::Errno::ESRCH);
            }
            super::pidfd::send_signal(
                std::os::fd::AsFd::as_fd(&fd),
                nix::sys::signal::Signal::SIGKILL,
            )
        }
        // No pidfds (before Linux 5.3): the check and the kill are as close as they get.
        Err(nix::errno::Errno::ENOSYS) => {
            if read_marker(pid).as_deref() != Some(stale.marker.as_str()) {
                return Err(nix::errno::Errno::ESRCH);
            }
            nix::sys::signal::kill(nix_pid, nix::sys::signal::Signal::SIGKILL)
        }
        Err(e) => Err(e),
    }
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
        assert_eq!(stat.num_threads, 1);
        assert_eq!(stat.starttime, 98765);
        assert!(stat.is_live());
        let zombie = "9 (z) Z 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert!(!parse_stat(zombie).expect("parses").is_live());
        let exited_main = "9 (z) Z 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 5 0 0";
        assert!(parse_stat(exited_main).expect("parses").is_live());
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
