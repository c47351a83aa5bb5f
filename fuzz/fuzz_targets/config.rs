//! Arbitrary bytes as the config file of `processcontrol up`, read the way `up` reads it
//! (`config::load` of a file on disk). Fails on a panic, on an error whose line and column are
//! not inside the file, and on a file that passes but that `up` would then refuse to build:
//! every process spec valid, its log ring and core machine constructible from what the host
//! gives them, and the start order naming every process exactly once.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use processcontrol_adapters::config;
use processcontrol_adapters::logs::{LogRing, RingConfig};
use processcontrol_core::Machine;

/// One file per fuzzing process, rewritten for every input, in a private directory (relative
/// paths in the file resolve against it).
fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pc-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir.join("processcontrol.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).expect("the config file is written");
    match config::load(path) {
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result without errors");
            let text = String::from_utf8_lossy(data);
            let lines: Vec<&str> = text.split('\n').collect();
            for e in &errors {
                assert_eq!(&e.file, path, "{e}");
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
                assert!(
                    (1..=lines.len()).contains(&e.line),
                    "line {} outside a file of {} lines: {e}",
                    e.line,
                    lines.len()
                );
                let width = lines[e.line - 1].chars().count();
                assert!(
                    (1..=width + 1).contains(&e.column),
                    "column {} outside line {} of {} characters: {e}",
                    e.column,
                    e.line,
                    width
                );
            }
        }
        Ok(config) => {
            assert!(std::str::from_utf8(data).is_ok(), "a non-UTF-8 file passed");
            // A file that passes is a valid group: the group machine takes it as it is.
            let order = config
                .start_order()
                .unwrap_or_else(|e| panic!("a passing file the group machine refuses: {e}"));
            let mut seen: Vec<&str> = order.iter().flatten().map(String::as_str).collect();
            seen.sort_unstable();
            let mut names: Vec<&str> = config.processes.iter().map(|p| p.spec.name.as_str()).collect();
            names.sort_unstable();
            assert_eq!(seen, names, "the start order does not hold every process once");
            names.dedup();
            assert_eq!(names.len(), config.processes.len(), "two processes of one name");
            for entry in &config.processes {
                // What `up` changes before handing the spec over (see src/cli/up.rs `members`).
                let mut spec = entry.spec.clone();
                spec.policy.seed = entry.fingerprint;
                if let Err(e) = spec.validate() {
                    panic!("a passing file with an invalid spec: {e:?}");
                }
                if let Err(e) = LogRing::new(RingConfig {
                    max_lines: spec.logs.ring_lines,
                    max_bytes: spec.logs.ring_bytes,
                    ..RingConfig::default()
                }) {
                    panic!("a passing file whose log ring cannot be built: {e:?}");
                }
                if let Err(e) = Machine::new(spec.effective_policy()) {
                    panic!("a passing file whose policy the core refuses: {e:?}");
                }
                for (dependency, _) in &entry.depends_on {
                    assert!(config.process(dependency).is_some(), "unknown dependency {dependency}");
                }
            }
        }
    }
});
