//! A group's membership, validated: unique names, every dependency a member, no cycle. Only a
//! [`GroupConfig`] can be applied to a [`Group`](super::Group), so the machine never meets an
//! unknown dependency or a cycle that would hold a start back forever.

use std::collections::BTreeMap;
use std::fmt;

use super::condition::Condition;

/// One member as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberConfig {
    /// Its name, unique in the group.
    pub name: String,
    /// What must hold before it starts, in the order they are awaited.
    pub depends_on: Vec<(String, Condition)>,
    /// Changes exactly when the member's configuration changes: a reload restarts it then.
    pub fingerprint: u64,
    /// Whether it has a readiness condition (a readiness probe, or `notify`); without one,
    /// running counts as ready for `healthy` dependents.
    pub has_readiness: bool,
}

/// A validated membership, in configuration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    members: Vec<MemberConfig>,
    /// For each member, the positions of its dependencies in `members`.
    deps: Vec<Vec<(usize, Condition)>>,
}

/// Why a membership cannot be applied. Every problem is reported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupConfigError {
    /// Two members share a name.
    #[error("two processes are named {0:?}")]
    Duplicate(String),
    /// A dependency names no member.
    #[error("{member}: depends on {dependency:?}, which is not a process of the group")]
    UnknownDependency {
        /// The member that depends.
        member: String,
        /// The name it gave.
        dependency: String,
    },
    /// Members wait for each other, directly or through others.
    #[error("dependency cycle among {}", .0.join(", "))]
    Cycle(Vec<String>),
}

/// Every problem of a membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfigErrors(pub Vec<GroupConfigError>);

impl fmt::Display for GroupConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GroupConfigErrors {}

impl GroupConfig {
    /// Validates `members`, reporting every problem at once.
    pub fn new(members: Vec<MemberConfig>) -> Result<GroupConfig, GroupConfigErrors> {
        let mut errors = Vec::new();
        let mut index = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            if index.insert(m.name.as_str(), i).is_some() {
                errors.push(GroupConfigError::Duplicate(m.name.clone()));
            }
        }
        let deps: Vec<Vec<(usize, Condition)>> = members
            .iter()
            .map(|m| {
                m.depends_on
                    .iter()
                    .filter_map(|(name, condition)| match index.get(name.as_str()) {
                        Some(&d) => Some((d, *condition)),
                        None => {
                            errors.push(GroupConfigError::UnknownDependency {
                                member: m.name.clone(),
                                dependency: name.clone(),
                            });
                            None
                        }
                    })
                    .collect()
            })
            .collect();
        let layer = layer_of(&deps);
        let cycle: Vec<String> = layer
            .iter()
            .zip(&members)
            .filter(|(l, _)| l.is_none())
            .map(|(_, m)| m.name.clone())
            .collect();
        if !cycle.is_empty() {
            errors.push(GroupConfigError::Cycle(cycle));
        }
        if errors.is_empty() {
            Ok(GroupConfig { members, deps })
        } else {
            Err(GroupConfigErrors(errors))
        }
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[MemberConfig] {
        &self.members
    }

    /// Start layers: each member after everything it depends on, members that do not depend
    /// on each other in the same layer, configuration order within a layer. Stopping goes
    /// through them backwards.
    pub fn layers(&self) -> Vec<Vec<&str>> {
        let layer = layer_of(&self.deps);
        let count = layer.iter().flatten().max().map_or(0, |m| m + 1);
        let mut layers = vec![Vec::new(); count];
        for (m, l) in self.members.iter().zip(&layer) {
            // Validation rejected cycles, so every member has a layer.
            if let Some(l) = l {
                layers[*l].push(m.name.as_str());
            }
        }
        layers
    }
}

/// Each member's layer (one more than its deepest dependency's), by Kahn's algorithm, without
/// recursion so a huge generated file cannot overflow the stack; `None` for members on or
/// behind a cycle.
fn layer_of(deps: &[Vec<(usize, Condition)>]) -> Vec<Option<usize>> {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    let mut waiting: Vec<usize> = vec![0; deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &(d, _) in ds {
            dependents[d].push(i);
            waiting[i] += 1;
        }
    }
    let mut layer = vec![None; deps.len()];
    let mut depth = vec![0usize; deps.len()];
    let mut queue: std::collections::VecDeque<usize> =
        (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = queue.pop_front() {
        layer[i] = Some(depth[i]);
        for &j in &dependents[i] {
            depth[j] = depth[j].max(depth[i] + 1);
            waiting[j] -= 1;
            if waiting[j] == 0 {
                queue.push_back(j);
            }
        }
    }
    layer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, deps: &[&str]) -> MemberConfig {
        MemberConfig {
            name: name.into(),
            depends_on: deps
                .iter()
                .map(|d| (d.to_string(), Condition::Started))
                .collect(),
            fingerprint: 0,
            has_readiness: false,
        }
    }

    #[test]
    fn layers_follow_dependencies_not_file_order() {
        let config = GroupConfig::new(vec![
            member("web", &["db"]),
            member("cache", &["web"]),
            member("db", &[]),
            member("worker", &[]),
        ])
        .unwrap();
        assert_eq!(
            config.layers(),
            vec![vec!["db", "worker"], vec!["web"], vec!["cache"]]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = GroupConfig::new(vec![
            member("a", &["b"]),
            member("b", &["a"]),
            member("c", &["nope"]),
            member("c", &[]),
        ])
        .unwrap_err();
        assert_eq!(
            errors.0,
            vec![
                GroupConfigError::Duplicate("c".into()),
                GroupConfigError::UnknownDependency {
                    member: "c".into(),
                    dependency: "nope".into()
                },
                GroupConfigError::Cycle(vec!["a".into(), "b".into()]),
            ]
        );
        assert_eq!(
            GroupConfig::new(vec![member("a", &["a"])]).unwrap_err().0,
            vec![GroupConfigError::Cycle(vec!["a".into()])]
        );
    }
}
