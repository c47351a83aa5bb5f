//! The dependency graph: every `depends_on` must name a process of the file and no process
//! may wait for itself, directly or through others. Iterative walks only, so a huge generated
//! file cannot overflow the stack.

use std::collections::{HashMap, HashSet};

use super::error::{ErrorKind, Report};
use super::process::Dependency;
use super::value::{join, quote};

/// Unknown dependencies that get a "did you mean" (each costs a pass over every name).
const MAX_SUGGESTIONS: usize = 100;

/// One process's edges, for the checks.
pub(crate) struct Node<'a> {
    pub(crate) name: &'a str,
    pub(crate) deps: &'a [Dependency],
}

/// Reports unknown dependencies and every cycle a depth-first walk meets (each at the edge
/// that closes it). `all_names` also holds processes whose tables had errors, so that a
/// dependency on them is not reported as unknown too.
pub(crate) fn check(r: &mut Report<'_>, nodes: &[Node<'_>], all_names: &[&str]) {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    let known: HashSet<&str> = all_names.iter().copied().collect();
    // A suggestion costs an edit distance per name: bounded, so a generated file with
    // thousands of unknown names is still checked in a moment.
    let mut suggestions_left = MAX_SUGGESTIONS;
    for node in nodes {
        for dep in node.deps {
            if known.contains(dep.name.as_str()) {
                continue;
            }
            let near = if suggestions_left > 0 {
                suggestions_left -= 1;
                let others: Vec<&str> = all_names
                    .iter()
                    .filter(|n| **n != node.name)
                    .copied()
                    .collect();
                super::value::suggest(&dep.name, &others)
            } else {
                None
            };
            // One suggestion, never the whole list: a file may have thousands of processes.
            let message = match near {
                Some(near) => format!(
                    "{}: unknown process `{}`; did you mean `{near}`?",
                    join(&join("processes", node.name), "depends_on"),
                    dep.name
                ),
                None => format!(
                    "{}: unknown process `{}`",
                    join(&join("processes", node.name), "depends_on"),
                    dep.name
                ),
            };
            r.error(
                &dep.span,
                ErrorKind::UnknownDependency,
                message,
                "the name of another process in this file",
                quote(&dep.name),
            );
        }
    }

    // Edges as indices (unknown names dropped), in file order.
    let edges: Vec<Vec<(usize, usize)>> = nodes
        .iter()
        .map(|n| {
            n.deps
                .iter()
                .enumerate()
                .filter_map(|(d, dep)| index.get(dep.name.as_str()).map(|&to| (to, d)))
                .collect()
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; nodes.len()];
    for root in 0..nodes.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // The current path: (node, next edge to follow).
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(top) = path.last_mut() {
            let (node, next) = *top;
            let Some(&(to, dep)) = edges[node].get(next) else {
                mark[node] = Mark::Done;
                path.pop();
                continue;
            };
            top.1 += 1;
            match mark[to] {
                Mark::New => {
                    mark[to] = Mark::OnPath;
                    path.push((to, 0));
                }
                Mark::OnPath => {
                    let start = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                    let mut names: Vec<&str> =
                        path[start..].iter().map(|(n, _)| nodes[*n].name).collect();
                    names.push(nodes[to].name);
                    let found = match names.len() - 1 {
                        1 => "a process that waits for itself".to_string(),
                        n => format!("{n} processes that wait for each other"),
                    };
                    r.error(
                        &nodes[node].deps[dep].span,
                        ErrorKind::DependencyCycle,
                        format!("dependency cycle: {}", names.join(" -> ")),
                        "dependencies without cycles",
                        found,
                    );
                }
                Mark::Done => {}
            }
        }
    }
}
