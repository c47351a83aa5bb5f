//! A process and its descendants as `status NAME` shows them, read from `/proc` when asked
//! (never on a timer).

use serde::Serialize;

/// The most processes a tree lists: a fork bomb's tree is not worth a huge answer.
pub const MAX_TREE: usize = 200;

/// The longest command line shown, in bytes.
const MAX_COMMAND: usize = 200;

/// One process of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TreeProcess {
    /// Its pid.
    pub pid: u32,
    /// Its parent's.
    pub ppid: u32,
    /// How far below the tree's root it is (0: the root).
    pub depth: u32,
    /// Its command line (its name in brackets when it has none, as `ps` shows kernel
    /// threads and zombies).
    pub command: String,
}

/// `pid` and its descendants, each parent before its children, at most [`MAX_TREE`].
/// Empty when `pid` is gone. Processes that moved away from the tree (double-forked daemons
/// adopted by a subreaper) are not in it.
pub fn process_tree(pid: u32) -> Vec<TreeProcess> {
    let mut tree = Vec::new();
    let mut stack = vec![(pid, 0u32, 0u32)];
    while let Some((pid, ppid, depth)) = stack.pop() {
        if tree.len() == MAX_TREE {
            break;
        }
        let Some(command) = command_line(pid) else {
            continue;
        };
        tree.push(TreeProcess {
            pid,
            ppid,
            depth,
            command,
        });
        let mut children = children(pid);
        // Popped in ascending pid order.
        children.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(children.into_iter().map(|c| (c, pid, depth + 1)));
    }
    tree
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            all.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// The command line of `pid`; `None` when it is gone.
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut line: String = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        line = format!("[{}]", comm.trim_end());
    }
    if line.len() > MAX_COMMAND {
        let mut end = MAX_COMMAND;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_of_this_process_starts_with_it() {
        let me = std::process::id();
        let tree = process_tree(me);
        assert_eq!(tree[0].pid, me);
        assert_eq!(tree[0].depth, 0);
        assert!(!tree[0].command.is_empty());
    }

    #[test]
    fn a_gone_process_has_no_tree() {
        // Pids never reach this on Linux (pid_max is at most 2^22).
        assert!(process_tree(u32::MAX - 1).is_empty());
    }
}
