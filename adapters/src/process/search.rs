//! Finding the processes of instances by walking their own process trees, from their leader
//! and from the supervisor's orphans that carry their marker (see "Finding an instance's
//! processes" in the module docs for why that is enough).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::reaper::Shared;
use super::scan::{self, Mark, ProcStat};

/// How many times the trees are walked again when processes moved during a walk.
const WALK_ROUNDS: usize = 4;
/// How many reaped pids the registry remembers, so that a mark read while its process was
/// being reaped is never cached for the pid's next owner.
const REAPED_LOG: usize = 1024;

/// One instance whose processes are looked for.
pub(crate) struct Wanted<'a> {
    pub(crate) marker: &'a str,
    /// Its leader while unreaped: the root of its tree.
    pub(crate) leader: Option<i32>,
}

/// What the registry remembers about the supervisor's orphans (direct children that are
/// not leaders): their marks, read once each. A child's pid cannot be reused before its
/// parent (us) reaps it, and the reaper forgets the pid then, so an entry always describes
/// the process that holds the pid.
#[derive(Default)]
pub(crate) struct Orphans {
    marks: HashMap<i32, Mark>,
    reaped: u64,
    reaped_log: VecDeque<i32>,
}

impl Orphans {
    /// Called by the reaper, under the registry lock, for every pid it reaps.
    pub(crate) fn reaped(&mut self, pid: i32) {
        self.marks.remove(&pid);
        self.reaped += 1;
        if self.reaped_log.len() == REAPED_LOG {
            self.reaped_log.pop_front();
        }
        self.reaped_log.push_back(pid);
    }

    /// The pids reaped since the count was `since`, or `None` if the log no longer holds
    /// them all.
    fn reaped_since(&self, since: u64) -> Option<Vec<i32>> {
        let n = usize::try_from(self.reaped - since).ok()?;
        (n <= self.reaped_log.len())
            .then(|| self.reaped_log.iter().rev().take(n).copied().collect())
    }
}

/// The supervisor's children, listed once for all the callers that asked before the listing
/// began. Listing costs a read of every thread's `children` file (and the kernel walks its
/// list of children for each): with thousands of instances being stopped at once, one listing
/// per signal made a stop of N processes cost N listings of N children. A listing that began
/// after a caller asked is as fresh for it as one it would take itself, so callers that queue
/// behind a listing in progress take the next one together.
#[derive(Default)]
pub(crate) struct Listings {
    /// Requests so far: each caller numbers its own before it waits.
    asked: AtomicU64,
    /// The newest listing: how many requests had been made when it began, the count of
    /// reaped pids at that moment, and the children.
    last: Mutex<Option<Listing>>,
}

#[derive(Clone)]
struct Listing {
    began_after: u64,
    reaped_before: u64,
    children: Arc<Vec<i32>>,
}

impl Listings {
    /// The children, from a listing that began after this call; `reaped` is read right
    /// before a new listing begins. Also the count of reaped pids taken then.
    fn children(
        &self,
        supervisor: i32,
        reaped: impl FnOnce() -> u64,
    ) -> Option<(u64, Arc<Vec<i32>>)> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = last.as_ref().filter(|l| l.began_after >= ticket) {
            return Some((l.reaped_before, l.children.clone()));
        }
        // Every request numbered up to here was made before this listing begins.
        let began_after = self.asked.load(Ordering::SeqCst);
        let reaped_before = reaped();
        let children = Arc::new(scan::supervisor_children(supervisor)?);
        *last = Some(Listing {
            began_after,
            reaped_before,
            children: children.clone(),
        });
        Some((reaped_before, children))
    }
}

/// Whether an orphan with this mark may belong to the instance with `marker`: it carries the
/// marker, or nobody can tell.
fn may_belong(mark: &Mark, marker: &str) -> bool {
    match mark {
        Mark::Marked(m) => m == marker,
        Mark::Unreadable => true,
        Mark::Unmarked | Mark::Gone => false,
    }
}

impl Shared {
    /// The orphans that may belong to each of the instances with `markers`, as roots of
    /// their trees. `None` when the supervisor's children cannot be listed, or, with
    /// `read_new` false, when an orphan's mark is not known yet (reading it may block).
    pub(crate) fn orphan_roots(&self, markers: &[&str], read_new: bool) -> Option<Vec<Vec<i32>>> {
        let supervisor = self.supervisor_pid.as_raw();
        if !scan::children_files_exist(supervisor) {
            return None;
        }
        // Taken before the listing: any listed pid reaped after it is in the log.
        let (since, listing) = self
            .listings
            .children(supervisor, || self.lock().orphans.reaped)?;
        let mut roots = vec![Vec::new(); markers.len()];
        let assign = |roots: &mut Vec<Vec<i32>>, pid: i32, mark: &Mark| {
            for (marker, roots) in markers.iter().zip(roots.iter_mut()) {
                if may_belong(mark, marker) {
                    roots.push(pid);
                }
            }
        };
        let unknown: Vec<i32> = {
            let reg = self.lock();
            listing
                .iter()
                .copied()
                .filter(|pid| !reg.leaders.contains_key(pid))
                .filter(|pid| match reg.orphans.marks.get(pid) {
                    Some(mark) => {
                        assign(&mut roots, *pid, mark);
                        false
                    }
                    None => true,
                })
                .collect()
        };
        if unknown.is_empty() {
            return Some(roots);
        }
        if !read_new {
            return None;
        }
        let read: Vec<(i32, Mark)> = unknown
            .into_iter()
            .map(|pid| (pid, scan::read_mark(pid)))
            .collect();
        let mut reg = self.lock();
        let reaped = reg.orphans.reaped_since(since);
        for (pid, mark) in read {
            assign(&mut roots, pid, &mark);
            // An unreadable mark may become readable (an exec finishing): read it again.
            let cacheable = !matches!(mark, Mark::Gone | Mark::Unreadable)
                && reaped.as_ref().is_some_and(|reaped| !reaped.contains(&pid));
            if cacheable {
                reg.orphans.marks.insert(pid, mark);
            }
        }
        Some(roots)
    }

    /// Every process (live or zombie) in the trees of each wanted instance: under its
    /// leader, and under the orphans that may be its. The flag says whether the last walk
    /// was complete (no process moved under it); if not, the union of all walks is returned.
    /// `None` when the kernel cannot list children: the caller scans all of `/proc`.
    pub(crate) fn trees(&self, wanted: &[Wanted<'_>]) -> Option<(Vec<Vec<ProcStat>>, bool)> {
        let supervisor = self.supervisor_pid.as_raw();
        let markers: Vec<&str> = wanted.iter().map(|w| w.marker).collect();
        let mut union: Vec<HashMap<i32, ProcStat>> = vec![HashMap::new(); wanted.len()];
        let mut known_dead = HashSet::new();
        for _ in 0..WALK_ROUNDS {
            let roots = self.orphan_roots(&markers, true)?;
            let mut found: Vec<HashMap<i32, ProcStat>> = vec![HashMap::new(); wanted.len()];
            let mut dead = Vec::new();
            let mut complete = true;
            for ((want, orphans), found) in wanted.iter().zip(roots).zip(found.iter_mut()) {
                let roots: Vec<(i32, i32)> = want
                    .leader
                    .into_iter()
                    .chain(orphans)
                    .map(|pid| (pid, supervisor))
                    .collect();
                complete &= scan::walk(&roots, found, &known_dead, &mut dead);
            }
            if complete {
                return Some((found.into_iter().map(into_values).collect(), true));
            }
            known_dead.extend(dead);
            for (union, found) in union.iter_mut().zip(found) {
                union.extend(found);
            }
        }
        Some((union.into_iter().map(into_values).collect(), false))
    }
}

fn into_values(map: HashMap<i32, ProcStat>) -> Vec<ProcStat> {
    map.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaped_log_tells_which_pids_were_reaped_since() {
        let mut orphans = Orphans::default();
        orphans.marks.insert(7, Mark::Unmarked);
        orphans.reaped(7);
        assert!(orphans.marks.is_empty());
        let since = orphans.reaped;
        assert_eq!(orphans.reaped_since(since), Some(vec![]));
        orphans.reaped(8);
        orphans.reaped(9);
        assert_eq!(orphans.reaped_since(since), Some(vec![9, 8]));
        for pid in 0..REAPED_LOG as i32 {
            orphans.reaped(100 + pid);
        }
        assert_eq!(orphans.reaped_since(since), None, "overflowed: unknown");
    }

    #[test]
    fn orphans_belong_by_marker_or_when_unreadable() {
        assert!(may_belong(&Mark::Marked("1:a.1".into()), "1:a.1"));
        assert!(!may_belong(&Mark::Marked("1:a.2".into()), "1:a.1"));
        assert!(may_belong(&Mark::Unreadable, "1:a.1"));
        assert!(!may_belong(&Mark::Unmarked, "1:a.1"));
    }
}
