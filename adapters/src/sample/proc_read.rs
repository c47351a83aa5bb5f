//! Minimal readers for the few /proc files the sampler needs. Hand-rolled rather than via
//! a general /proc library: each tick reads a handful of files per process, so avoiding
//! allocations and unneeded fields is most of the sampler's cost.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};

/// The fields of `/proc/<pid>/stat` the sampler uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// One-letter state; `Z` (zombie) and `X` (dead) mean the process has exited.
    pub(crate) state: u8,
    /// Parent pid, for the fallback tree discovery.
    pub(crate) ppid: u32,
    /// utime + stime, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Number of threads.
    pub(crate) threads: u64,
    /// Start time in clock ticks since boot: with the pid, identifies a process across
    /// pid reuse.
    pub(crate) start_ticks: u64,
    /// Resident set size in pages.
    pub(crate) rss_pages: u64,
}

impl Stat {
    /// Whether the process has already exited (only its table entry remains).
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(content: &[u8]) -> Option<Stat> {
    let close = content.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(content.get(close + 1..)?).ok()?;
    // Field n of proc(5) is at index n - 3 here (state is field 3).
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(9); // fields 5..=13
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(4); // fields 16..=19
    let threads = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(1); // field 21
    let start_ticks = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(1); // field 23 (vsize)
    let rss: i64 = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        cpu_ticks: utime.saturating_add(stime),
        threads,
        start_ticks,
        rss_pages: u64::try_from(rss).unwrap_or(0),
    })
}

/// Parses a `children` file: space-separated pids.
pub(crate) fn parse_pids(content: &[u8], out: &mut Vec<u32>) {
    if let Ok(text) = std::str::from_utf8(content) {
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
}

/// Reusable buffers so that reading hundreds of files per tick allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    path: String,
    buf: Vec<u8>,
}

impl Reader {
    /// Sets the path to `/proc/<pid>/<leaf>` or `/proc/<pid>/task/<tid>/<leaf>`.
    fn set_path(&mut self, pid: u32, tid: Option<u32>, leaf: &str) {
        self.path.clear();
        let _ = match tid {
            None => write!(self.path, "/proc/{pid}/{leaf}"),
            Some(tid) => write!(self.path, "/proc/{pid}/task/{tid}/{leaf}"),
        };
    }

    /// Reads the whole file at the current path into the internal buffer. `one_line`
    /// files (generated in one read and ending in a newline) skip the extra read that
    /// would only confirm EOF.
    fn read(&mut self, one_line: bool) -> io::Result<&[u8]> {
        let mut file = File::open(&self.path)?;
        self.buf.clear();
        loop {
            let len = self.buf.len();
            if self.buf.capacity() - len < 512 {
                self.buf.reserve(len.max(1024));
            }
            let cap = self.buf.capacity();
            self.buf.resize(cap, 0);
            match file.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    break;
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    if one_line && self.buf.last() == Some(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        }
        Ok(&self.buf)
    }

    /// Reads and parses `/proc/<pid>/stat`; `None` if the process is gone or unreadable.
    pub(crate) fn stat(&mut self, pid: u32) -> Option<Stat> {
        self.set_path(pid, None, "stat");
        self.read(true).ok().and_then(parse_stat)
    }

    /// Appends the children of every thread of `pid` (from `task/<tid>/children`; a child
    /// is listed under the thread that forked it). `threads` lets single-threaded
    /// processes skip listing the task directory. A vanished process has no children.
    pub(crate) fn children(&mut self, pid: u32, threads: u64, out: &mut Vec<u32>) {
        if threads <= 1 {
            self.set_path(pid, Some(pid), "children");
            if let Ok(content) = self.read(false) {
                parse_pids(content, out);
            }
            return;
        }
        self.set_path(pid, None, "task");
        let Ok(tasks) = std::fs::read_dir(&self.path) else {
            return;
        };
        let tids: Vec<u32> = tasks
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for tid in tids {
            self.set_path(pid, Some(tid), "children");
            if let Ok(content) = self.read(false) {
                parse_pids(content, out);
            }
        }
    }

    /// Counts open fds. Linux 6.2+ reports the count as the size of `/proc/<pid>/fd`
    /// (one syscall); older kernels report 0 there, and then the directory is listed.
    /// Fails with `PermissionDenied` for another user's process (without privileges) and
    /// `NotFound` if the process vanished.
    pub(crate) fn fd_count(&mut self, pid: u32) -> io::Result<u64> {
        self.set_path(pid, None, "fd");
        let meta = std::fs::metadata(&self.path)?;
        if meta.len() > 0 {
            return Ok(meta.len());
        }
        let entries = std::fs::read_dir(&self.path)?;
        Ok(entries.filter(|e| e.is_ok()).count() as u64)
    }
}

/// Seconds since boot (including suspend, like process start times), in clock ticks.
pub(crate) fn boot_ticks(clk_tck: u64) -> Option<u64> {
    let mut content = String::new();
    File::open("/proc/uptime")
        .ok()?
        .read_to_string(&mut content)
        .ok()?;
    let secs = content.split_ascii_whitespace().next()?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let whole: u64 = whole.parse().ok()?;
    let hundredths: u64 = format!("{frac:0<2}").get(..2)?.parse().ok()?;
    Some(whole * clk_tck + hundredths * clk_tck / 100)
}

/// Lists all pids in /proc (for the fallback tree discovery).
pub(crate) fn all_pids(out: &mut Vec<u32>) {
    if let Ok(entries) = std::fs::read_dir("/proc") {
        out.extend(entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()));
    }
}

/// Whether this kernel provides `task/<tid>/children` (CONFIG_PROC_CHILDREN).
pub(crate) fn children_files_available() -> bool {
    std::fs::metadata("/proc/thread-self/children").is_ok()
        || std::fs::metadata(format!("/proc/self/task/{}/children", std::process::id())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_names() {
        let line = b"9894 (a) b) c) R 9892 9892 2886 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 3 0 71517 3133440 413 18446744073709551615 0 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, b'R');
        assert_eq!(stat.ppid, 9892);
        assert_eq!(stat.cpu_ticks, 12);
        assert_eq!(stat.threads, 3);
        assert_eq!(stat.start_ticks, 71517);
        assert_eq!(stat.rss_pages, 413);
    }

    #[test]
    fn malformed_stat_is_none_not_a_panic() {
        for bad in [
            &b""[..],
            b"1 (x",
            b"1 (x) R",
            b"1 (x) R 1 2 3",
            b"\xff)\xff",
            b"1 (x) R a b c d e f g h i j k l m n o p q r s t u v w",
        ] {
            assert!(parse_stat(bad).is_none());
        }
    }

    #[test]
    fn parses_children_lists() {
        let mut out = Vec::new();
        parse_pids(b"12 34 ", &mut out);
        parse_pids(b"", &mut out);
        parse_pids(b"x 56", &mut out);
        assert_eq!(out, [12, 34, 56]);
    }

    #[test]
    fn reads_own_stat_and_uptime() {
        let mut reader = Reader::default();
        let stat = reader.stat(std::process::id()).unwrap();
        assert!(stat.threads >= 1);
        assert!(stat.rss_pages > 0);
        assert!(boot_ticks(100).unwrap() > 0);
        assert!(reader.fd_count(std::process::id()).unwrap() >= 3);
        assert!(reader.fd_count(u32::MAX).is_err());
        assert!(reader.stat(u32::MAX).is_none());
    }
}
