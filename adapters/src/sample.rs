//! Resource sampling of supervised process trees, from /proc.
//!
//! One sampler serves every watched root: each interval it walks each root's process tree
//! (the root and all its descendants) and reports a [`Usage`] per root. It only measures;
//! limits ("restart above 2 GiB") are the core's business.
//!
//! Cost is what matters at scale (hundreds of roots every second), so a tick reads only
//! `stat`, the `children` lists and the size of the `fd` directory of each member, with
//! reused buffers, on tokio's blocking pool so the async workers are not held up.

mod proc_read;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::proc_read::{Reader, Stat};

/// The resources one process tree used, as of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The caller's tag given to [`ProcSampler::watch`] / [`SamplerHandle::add`].
    pub tag: u64,
    /// The root pid of the tree.
    pub pid: u32,
    /// Sum of the resident set sizes of the tree's processes. Pages shared between them
    /// (after fork, shared libraries) are counted once per process, as `ps` does.
    pub rss_bytes: u64,
    /// CPU time the tree used over [`Usage::interval`], in percent of one core (200.0 is
    /// two cores fully busy). `None` on a root's first sample, which has no baseline.
    /// Processes that started and exited entirely within the interval are not seen.
    pub cpu_percent: Option<f64>,
    /// Wall time since this root's previous sample: the span `cpu_percent` covers.
    pub interval: Option<Duration>,
    /// CPU time (user and system) the processes now in the tree have used since each
    /// started. It drops when a member exits: a counter built on it must absorb that.
    pub cpu_time: Duration,
    /// Open file descriptors over the tree (sockets and pipes included).
    pub open_fds: u64,
    /// False when some member's fd table could not be read (a process of another user
    /// while the supervisor lacks privileges): `open_fds` is then a lower bound.
    pub fds_complete: bool,
    /// Threads over the tree (a single-threaded process counts 1).
    pub threads: u64,
    /// Processes in the tree, root included.
    pub processes: u64,
}

/// What the sampler says about one root in one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleReport {
    /// The root is alive: here is its tree's usage.
    Usage(Usage),
    /// The root has exited (or its pid now belongs to another process). Reported once,
    /// after which the root is no longer watched; it is a fact for the core, not an error.
    Gone {
        /// The caller's tag.
        tag: u64,
        /// The pid that was watched.
        pid: u32,
    },
}

/// Why sampling could not start or a command could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// A zero interval would sample in a busy loop.
    #[error("sampling interval must be greater than zero")]
    ZeroInterval,
    /// /proc is not mounted or not readable, so nothing can be measured.
    #[error("/proc is unavailable: {0}")]
    ProcUnavailable(String),
    /// The sampler task has ended (its report receiver was dropped).
    #[error("the sampler has stopped")]
    Stopped,
}

/// Per-root state kept between ticks.
#[derive(Debug)]
struct Root {
    pid: u32,
    /// The root's start time, learned at its first sample, to detect pid reuse.
    start_ticks: Option<u64>,
    /// When the root was last sampled (the CPU baseline).
    last: Option<Instant>,
}

/// What one tick knows about one pid, shared by every tree it belongs to.
#[derive(Debug)]
struct Entry {
    stat: Stat,
    /// Range in [`Snapshot::arena`] holding the pid's children (filled lazily).
    children: Option<(usize, usize)>,
}

/// One tick's view of /proc, filled on demand.
#[derive(Debug, Default)]
struct Snapshot {
    reader: Reader,
    entries: HashMap<u32, Option<Entry>>,
    arena: Vec<u32>,
    /// Fallback parent -> children map when the kernel lacks `children` files.
    scanned: Option<HashMap<u32, Vec<u32>>>,
}

impl Snapshot {
    fn clear(&mut self) {
        self.entries.clear();
        self.arena.clear();
        self.scanned = None;
    }

    fn stat(&mut self, pid: u32) -> Option<Stat> {
        let reader = &mut self.reader;
        self.entries
            .entry(pid)
            .or_insert_with(|| {
                reader.stat(pid).map(|stat| Entry {
                    stat,
                    children: None,
                })
            })
            .as_ref()
            .map(|e| e.stat)
    }

    /// Appends `pid`'s children to `out`.
    fn children(&mut self, pid: u32, use_children_files: bool, out: &mut Vec<u32>) {
        if !use_children_files {
            let map = self
                .scanned
                .get_or_insert_with(|| scan_parents(&mut self.reader));
            if let Some(kids) = map.get(&pid) {
                out.extend_from_slice(kids);
            }
            return;
        }
        let Some(Some(entry)) = self.entries.get_mut(&pid) else {
            return;
        };
        let (start, end) = match entry.children {
            Some(range) => range,
            None => {
                let start = self.arena.len();
                self.reader
                    .children(pid, entry.stat.threads, &mut self.arena);
                let range = (start, self.arena.len());
                entry.children = Some(range);
                range
            }
        };
        out.extend_from_slice(&self.arena[start..end]);
    }
}

/// Builds the parent -> children map by reading every process's stat (the slow path for
/// kernels built without CONFIG_PROC_CHILDREN; done at most once per tick).
fn scan_parents(reader: &mut Reader) -> HashMap<u32, Vec<u32>> {
    let mut pids = Vec::new();
    proc_read::all_pids(&mut pids);
    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in pids {
        if let Some(stat) = reader.stat(pid) {
            map.entry(stat.ppid).or_default().push(pid);
        }
    }
    map
}

/// The synchronous sampling engine: watch roots, then call [`ProcSampler::sample`] once
/// per interval. [`spawn`] drives it from a tokio task; use it directly to sample on
/// your own schedule (or in benchmarks).
#[derive(Debug)]
pub struct ProcSampler {
    roots: BTreeMap<u64, Root>,
    /// CPU ticks per (pid, start time) at the previous tick, for deltas.
    prev_ticks: HashMap<(u32, u64), u64>,
    next_ticks: HashMap<(u32, u64), u64>,
    /// Boot-relative time of the previous tick, in clock ticks: processes started after
    /// it are new, so all of their CPU time belongs to the interval.
    prev_boot_ticks: Option<u64>,
    snapshot: Snapshot,
    stack: Vec<u32>,
    visited: HashSet<u32>,
    clk_tck: u64,
    page_size: u64,
    use_children_files: bool,
}

impl ProcSampler {
    /// Checks that /proc is usable and learns the kernel's clock tick and page size.
    pub fn new() -> Result<Self, SampleError> {
        std::fs::metadata("/proc/self/stat")
            .map_err(|e| SampleError::ProcUnavailable(e.to_string()))?;
        Ok(ProcSampler {
            roots: BTreeMap::new(),
            prev_ticks: HashMap::new(),
            next_ticks: HashMap::new(),
            prev_boot_ticks: None,
            snapshot: Snapshot::default(),
            stack: Vec::new(),
            visited: HashSet::new(),
            clk_tck: sysconf(libc::_SC_CLK_TCK, 100),
            page_size: sysconf(libc::_SC_PAGESIZE, 4096),
            use_children_files: proc_read::children_files_available(),
        })
    }

    /// Starts (or restarts, with a new pid) watching the tree rooted at `pid` under `tag`.
    pub fn watch(&mut self, tag: u64, pid: u32) {
        self.roots.insert(
            tag,
            Root {
                pid,
                start_ticks: None,
                last: None,
            },
        );
    }

    /// Stops watching `tag`; returns whether it was watched.
    pub fn unwatch(&mut self, tag: u64) -> bool {
        self.roots.remove(&tag).is_some()
    }

    /// How many roots are watched.
    pub fn watched(&self) -> usize {
        self.roots.len()
    }

    /// Samples every watched root once, appending one report per root to `out` (in tag
    /// order). Roots found gone are reported as [`SampleReport::Gone`] and unwatched.
    pub fn sample(&mut self, out: &mut Vec<SampleReport>) {
        let now = Instant::now();
        let boot_ticks = proc_read::boot_ticks(self.clk_tck);
        self.snapshot.clear();
        self.next_ticks.clear();
        let mut gone = Vec::new();

        for (&tag, root) in self.roots.iter_mut() {
            let alive = self
                .snapshot
                .stat(root.pid)
                .filter(|s| !s.is_dead())
                .filter(|s| !matches!(root.start_ticks, Some(t) if t != s.start_ticks));
            let Some(root_stat) = alive else {
                gone.push(tag);
                out.push(SampleReport::Gone { tag, pid: root.pid });
                continue;
            };
            root.start_ticks = Some(root_stat.start_ticks);
            let baseline = root.last.map(|last| (now - last, self.prev_boot_ticks));

            let mut usage = Usage {
                tag,
                pid: root.pid,
                rss_bytes: 0,
                cpu_percent: None,
                interval: baseline.map(|(elapsed, _)| elapsed),
                cpu_time: Duration::ZERO,
                open_fds: 0,
                fds_complete: true,
                threads: 0,
                processes: 0,
            };
            let mut cpu_ticks = 0u64;
            let mut total_ticks = 0u64;
            self.stack.clear();
            self.visited.clear();
            self.stack.push(root.pid);
            while let Some(pid) = self.stack.pop() {
                if !self.visited.insert(pid) {
                    continue;
                }
                // A member may vanish at any point of the walk: it is then simply absent.
                let Some(stat) = self.snapshot.stat(pid) else {
                    continue;
                };
                usage.processes += 1;
                usage.threads += stat.threads;
                usage.rss_bytes = usage
                    .rss_bytes
                    .saturating_add(stat.rss_pages.saturating_mul(self.page_size));
                match self.snapshot.reader.fd_count(pid) {
                    Ok(n) => usage.open_fds += n,
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        usage.fds_complete = false;
                    }
                    Err(_) => {}
                }
                let key = (pid, stat.start_ticks);
                total_ticks = total_ticks.saturating_add(stat.cpu_ticks);
                self.next_ticks.insert(key, stat.cpu_ticks);
                if let Some((_, prev_boot)) = baseline {
                    if let Some(prev) = self.prev_ticks.get(&key) {
                        cpu_ticks += stat.cpu_ticks.saturating_sub(*prev);
                    } else if prev_boot.is_some_and(|b| stat.start_ticks >= b) {
                        // Born during the interval: all its CPU time is new.
                        cpu_ticks += stat.cpu_ticks;
                    }
                }
                self.snapshot
                    .children(pid, self.use_children_files, &mut self.stack);
            }
            if let Some((elapsed, _)) = baseline {
                let secs = elapsed.as_secs_f64();
                if secs > 0.0 {
                    usage.cpu_percent = Some(cpu_ticks as f64 / self.clk_tck as f64 / secs * 100.0);
                }
            }
            usage.cpu_time = Duration::from_secs_f64(total_ticks as f64 / self.clk_tck as f64);
            root.last = Some(now);
            out.push(SampleReport::Usage(usage));
        }

        for tag in gone {
            self.roots.remove(&tag);
        }
        std::mem::swap(&mut self.prev_ticks, &mut self.next_ticks);
        self.prev_boot_ticks = boot_ticks;
    }
}

/// Reads a sysconf value, with the Linux default if the query fails.
fn sysconf(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf only reads a system constant; it has no memory-safety preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

#[derive(Debug)]
enum Command {
    Add(u64, u32),
    Remove(u64),
}

/// Controls a sampler started with [`spawn`]. Dropping it stops the sampler.
#[derive(Debug)]
pub struct SamplerHandle {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl SamplerHandle {
    /// Watches the tree rooted at `pid` under `tag` from the next tick on (replacing any
    /// root already under `tag`). Its first report has no CPU figure (no baseline yet).
    pub fn add(&self, tag: u64, pid: u32) -> Result<(), SampleError> {
        self.commands
            .send(Command::Add(tag, pid))
            .map_err(|_| SampleError::Stopped)
    }

    /// Stops watching `tag`; unknown tags are ignored (the root may already be gone).
    pub fn remove(&self, tag: u64) -> Result<(), SampleError> {
        self.commands
            .send(Command::Remove(tag))
            .map_err(|_| SampleError::Stopped)
    }

    /// Whether the sampler task has ended (its report receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Resolves once the sampler task has ended, for callers that must know sampling
    /// stopped (for example before reusing tags).
    pub async fn stopped(&self) {
        self.commands.closed().await;
    }
}

impl Drop for SamplerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts one sampler task for all roots: every `interval` it samples each watched root
/// and sends the reports to `reports`. Ticks are skipped while nothing is watched; a
/// tick delayed by a slow receiver is not caught up with bursts.
///
/// Panics only as [`tokio::spawn`] does: when called outside a tokio runtime.
pub fn spawn(
    interval: Duration,
    reports: mpsc::Sender<SampleReport>,
) -> Result<SamplerHandle, SampleError> {
    if interval.is_zero() {
        return Err(SampleError::ZeroInterval);
    }
    let sampler = ProcSampler::new()?;
    let (commands, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(sampler, interval, rx, reports));
    Ok(SamplerHandle { commands, task })
}

async fn run(
    sampler: ProcSampler,
    interval: Duration,
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::Sender<SampleReport>,
) {
    let mut sampler = Some(Box::new(sampler));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => {
                let Some(s) = sampler.as_mut() else { return };
                match command {
                    Some(Command::Add(tag, pid)) => s.watch(tag, pid),
                    Some(Command::Remove(tag)) => {
                        s.unwatch(tag);
                    }
                    None => return,
                }
            }
            _ = reports.closed() => return,
            _ = ticker.tick() => {
                let Some(mut s) = sampler.take() else { return };
                if s.watched() == 0 {
                    sampler = Some(s);
                    continue;
                }
                // /proc reads are blocking syscalls; hundreds of them per tick would stall
                // an async worker, so the tick runs on the blocking pool.
                let mut batch = std::mem::take(&mut out);
                let joined = tokio::task::spawn_blocking(move || {
                    s.sample(&mut batch);
                    (s, batch)
                })
                .await;
                let Ok((s, mut batch)) = joined else {
                    tracing::warn!("resource sampler tick failed; sampler stopped");
                    return;
                };
                sampler = Some(s);
                for report in batch.drain(..) {
                    if reports.send(report).await.is_err() {
                        return;
                    }
                }
                out = batch;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of finding descendants see the same tree (the fallback scan is what
    /// kernels without CONFIG_PROC_CHILDREN get).
    #[test]
    #[allow(clippy::disallowed_types)] // a tree to sample, not supervised: no reaper of ours runs
    fn children_files_and_parent_scan_agree() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let mut counts = Vec::new();
        for use_children_files in [true, false] {
            let mut sampler = ProcSampler::new().unwrap();
            sampler.use_children_files = use_children_files;
            sampler.watch(1, child.id());
            sampler.watch(2, std::process::id());
            let mut out = Vec::new();
            sampler.sample(&mut out);
            let [SampleReport::Usage(leaf), SampleReport::Usage(me)] = &out[..] else {
                panic!("{out:?}");
            };
            assert_eq!(leaf.processes, 1);
            // This test process and at least the sleep child (other tests may add more).
            assert!(me.processes >= 2, "{me:?}");
            counts.push(leaf.processes);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(counts[0], counts[1]);
    }
}
