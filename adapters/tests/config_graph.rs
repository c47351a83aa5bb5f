//! Dependencies: unknown names, cycles (named), and the start layers.

use std::path::{Path, PathBuf};

use processcontrol_adapters::config::{self, Config, ConfigError, ErrorKind};

fn origin() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_graph");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("pc.toml")
}

/// A file with one process per `(name, depends_on)`.
fn file(processes: &[(&str, &str)]) -> String {
    processes
        .iter()
        .map(|(name, deps)| {
            format!("[processes.{name}]\ncommand = \"true\"\ndepends_on = [{deps}]\n")
        })
        .collect()
}

fn ok(processes: &[(&str, &str)]) -> Config {
    config::parse(&file(processes), &origin()).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(processes: &[(&str, &str)]) -> Vec<ConfigError> {
    config::parse(&file(processes), &origin()).unwrap_err().0
}

#[test]
fn unknown_dependency_is_reported_at_its_name() {
    let text = "[processes.web]\ncommand = \"true\"\ndepends_on = { dbb = \"healthy\" }\n\
                [processes.db]\ncommand = \"true\"\n";
    let all = config::parse(text, &origin()).unwrap_err().0;
    assert_eq!(all.len(), 1);
    let e = &all[0];
    assert_eq!(
        (e.kind, e.line, e.column),
        (ErrorKind::UnknownDependency, 3, 16)
    );
    assert_eq!(
        e.message,
        "processes.web.depends_on: unknown process `dbb`; did you mean `db`?"
    );
    assert_eq!(e.expected, "the name of another process in this file");
    assert_eq!(e.found, "\"dbb\"");
}

#[test]
fn a_dependency_on_a_broken_process_is_not_also_unknown() {
    let text = "[processes.web]\ncommand = \"true\"\ndepends_on = [\"db\"]\n\
                [processes.db]\ncommand = 5\n";
    let all = config::parse(text, &origin()).unwrap_err().0;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].kind, ErrorKind::WrongType);
}

#[test]
fn two_process_cycle_is_named() {
    let all = errors(&[("a", "\"b\""), ("b", "\"a\"")]);
    assert_eq!(all.len(), 1, "{all:#?}");
    let e = &all[0];
    assert_eq!(e.kind, ErrorKind::DependencyCycle);
    assert_eq!(e.message, "dependency cycle: a -> b -> a");
    // At the edge that closes the cycle: b's dependency on a.
    assert_eq!((e.line, e.column), (6, 15));
    assert_eq!(e.expected, "dependencies without cycles");
    assert_eq!(e.found, "2 processes that wait for each other");
}

#[test]
fn self_dependency_is_a_cycle() {
    let all = errors(&[("a", "\"a\"")]);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].message, "dependency cycle: a -> a");
    assert_eq!(all[0].found, "a process that waits for itself");
}

#[test]
fn longer_and_separate_cycles_are_all_reported() {
    let all = errors(&[
        ("ok", ""),
        ("a", "\"b\", \"ok\""),
        ("b", "\"c\""),
        ("c", "\"a\""),
        ("x", "\"y\""),
        ("y", "\"x\""),
    ]);
    let messages: Vec<&str> = all.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "dependency cycle: a -> b -> c -> a",
            "dependency cycle: x -> y -> x"
        ]
    );
    assert!(all.iter().all(|e| e.kind == ErrorKind::DependencyCycle));
}

#[test]
fn start_order_is_layered() {
    // A diamond plus an independent process.
    let config = ok(&[
        ("web", "\"api\", \"static\""),
        ("api", "\"db\""),
        ("static", ""),
        ("db", ""),
        ("worker", "\"db\""),
    ]);
    assert_eq!(
        config.start_order().unwrap(),
        [vec!["static", "db"], vec!["api", "worker"], vec!["web"]]
    );
    // Shutdown is the reverse.
    let mut shutdown = config.start_order().unwrap();
    shutdown.reverse();
    assert_eq!(shutdown[0], ["web"]);
}

#[test]
fn start_order_puts_each_process_after_its_deepest_dependency() {
    let config = ok(&[("c", "\"a\", \"b\""), ("b", "\"a\""), ("a", "")]);
    assert_eq!(
        config.start_order().unwrap(),
        [vec!["a"], vec!["b"], vec!["c"]]
    );
    let config = ok(&[("one", ""), ("two", ""), ("three", "")]);
    assert_eq!(config.start_order().unwrap(), [vec!["one", "two", "three"]]);
}

#[test]
fn start_order_of_a_hand_made_cyclic_config_names_the_cycle() {
    let mut config = ok(&[("a", ""), ("b", ""), ("c", "")]);
    config.processes[0].depends_on = vec![("b".into(), config::Condition::Started)];
    config.processes[1].depends_on = vec![("a".into(), config::Condition::Started)];
    let errors = config.start_order().unwrap_err();
    assert_eq!(
        errors.0,
        [processcontrol_core::GroupConfigError::Cycle(vec![
            "a".into(),
            "b".into()
        ])]
    );
}

#[test]
fn long_chains_do_not_overflow() {
    let names: Vec<String> = (0..3000).map(|i| format!("p{i}")).collect();
    let deps: Vec<String> = (0..3000)
        .map(|i| {
            if i == 0 {
                "\"p2999\"".to_string()
            } else {
                format!("\"p{}\"", i - 1)
            }
        })
        .collect();
    let processes: Vec<(&str, &str)> = names
        .iter()
        .zip(&deps)
        .map(|(n, d)| (n.as_str(), d.as_str()))
        .collect();
    let all = errors(&processes);
    assert_eq!(all.len(), 1);
    assert!(
        all[0]
            .message
            .starts_with("dependency cycle: p0 -> p2999 -> p2998"),
        "{}",
        &all[0].message[..60]
    );

    let mut processes = processes;
    processes[0].1 = "";
    let config = ok(&processes);
    let order = config.start_order().unwrap();
    assert_eq!(order.len(), 3000);
    assert_eq!(order[2999], ["p2999"]);
}
