//! Random mutations of a valid file never panic, and whatever comes out is consistent: errors
//! point inside the file, accepted configs validate and order every process exactly once.
//! Deterministic (a fixed-seed generator), so a failure reproduces.

use std::path::{Path, PathBuf};

use processcontrol_adapters::config;

const VALID: &str = r#"# A valid file the mutations start from.
[supervisor]
log_dir = "logs"
metrics = "127.0.0.1:9100"
shutdown_grace = "20s"

[processes.db]
command = "exec sleep 1000"
readiness = { tcp = "127.0.0.1:5432", period = "2s" }

[processes.web]
command = ["./server", "--port", "8080"]
env = { RUST_LOG = "info" }
cwd = "srv"
restart = "on-failure"
exit_codes = { success = [0], prevent_restart = [78] }
backoff = { initial = "100ms", max = "30s", factor = 2.0, jitter = 0.1, reset_after = "60s" }
breaker = { max_restarts = 5, window = "60s", cooldown = "5m" }
stop = { signal = "SIGTERM", grace = "10s" }
liveness = { http = "http://127.0.0.1:8080/healthz", period = "5s", timeout = "1s", failure_threshold = 3 }
readiness = { tcp = "127.0.0.1:8080" }
startup = { exec = ["sh", "-c", "true"] }
limits.memory = { max = "512MiB", for = "30s", action = "restart" }
limits.cpu = { max = 150 }
depends_on = { db = "healthy" }
logs = { lines = 100, file = true, keep = 2 }
cgroup = { memory_max = "1GiB" }

[processes.worker]
command = ["sh", "-c", "sleep 1000"]
depends_on = ["db", "web"]
"#;

const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    "#",
    " ",
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "true",
    "\"0s\"",
    "\"never\"",
    "\"\"",
    "\"http://:0\"",
    "\"127.0.0.1:0\"",
    "99999999999999999999",
    "\"é\"",
    "\u{0}",
    "\u{feff}",
    "é",
    "\r\n",
    "\"\"\"",
    "'''",
    "[processes.x]\n",
    "[[processes]]\n",
    "depends_on = [\"web\"]\n",
    "depends_on = { x = \"healthy\" }\n",
    "command = \"true\"\n",
    "liveness = { exec = [] }\n",
    "limits.fds = { max = 0 }\n",
    "processes.db.depends_on = [\"worker\"]\n",
    "1979-05-27T07:32:00Z",
    "0x7fffffffffffffff",
    "[processes.\"a b\"]\n",
    "cwd = \"/\"\n",
    "user = 4294967296\n",
    "\"a\\nb\" = 1\n",
    "depends_on = [\"x\\ny\"]\n",
];

const KEYS: &[&str] = &[
    "command",
    "env",
    "cwd",
    "restart",
    "backoff",
    "breaker",
    "stop",
    "liveness",
    "readiness",
    "startup",
    "limits",
    "depends_on",
    "logs",
    "cgroup",
    "http",
    "tcp",
    "exec",
    "max",
    "for",
    "action",
    "period",
    "timeout",
    "initial",
    "factor",
    "jitter",
    "window",
    "cooldown",
    "signal",
    "grace",
    "file",
    "keep",
    "memory_max",
    "supervisor",
    "processes",
    "web",
    "db",
    "worker",
];

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixture() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_fuzz");
    std::fs::create_dir_all(dir.join("srv")).unwrap();
    let server = dir.join("srv/server");
    std::fs::write(&server, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A char boundary at or before `i`.
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, text: &mut String) {
    let len = text.len();
    match rng.below(7) {
        0 => {
            let start = boundary(text, rng.below(len + 1));
            let end = boundary(text, start + rng.below(12));
            text.replace_range(start..end.max(start), "");
        }
        1 | 2 => {
            let at = boundary(text, rng.below(len + 1));
            text.insert_str(at, TOKENS[rng.below(TOKENS.len())]);
        }
        3 => {
            // Replace a value: everything after an `=` up to the end of its line.
            let eqs: Vec<usize> = text.match_indices(" = ").map(|(i, _)| i + 3).collect();
            if let Some(&at) = eqs.get(rng.below(eqs.len())) {
                let end = text[at..].find('\n').map_or(text.len(), |e| at + e);
                text.replace_range(at..end, TOKENS[rng.below(TOKENS.len())]);
            }
        }
        4 => {
            // Rename a key.
            let key = KEYS[rng.below(KEYS.len())];
            let other = KEYS[rng.below(KEYS.len())];
            if let Some(i) = text.find(key) {
                text.replace_range(i..i + key.len(), other);
            }
        }
        5 => {
            // Duplicate or drop a line.
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            let i = rng.below(lines.len());
            let mut out: Vec<&str> = lines.clone();
            if rng.below(2) == 0 {
                out.insert(rng.below(lines.len() + 1), lines[i]);
            } else {
                out.remove(i);
            }
            *text = out.concat();
        }
        _ => {
            // Swap two lines.
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(a, b);
            *text = lines.concat();
        }
    }
}

fn check(text: &str, origin: &Path) {
    match config::parse(text, origin) {
        Ok(config) => {
            let mut seen: Vec<String> = config
                .start_order()
                .expect("a parsed config is a valid group")
                .concat();
            seen.sort();
            let mut names: Vec<String> = config
                .processes
                .iter()
                .map(|p| p.spec.name.clone())
                .collect();
            names.sort();
            assert_eq!(
                seen, names,
                "start_order must hold every process once:\n{text}"
            );
            for entry in &config.processes {
                if let Err(e) = entry.spec.validate() {
                    panic!("accepted spec fails validate: {e}\n{text}");
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = text.split('\n').count();
            for e in &errors {
                assert!(
                    e.line >= 1 && e.line <= lines,
                    "line {} of {lines}: {e}\n{text:?}",
                    e.line
                );
                assert!(e.column >= 1, "{e}");
                assert!(
                    !e.message.is_empty() && !e.expected.is_empty() && !e.found.is_empty(),
                    "{e:?}"
                );
            }
            // One error per line, whatever the file's keys and values hold.
            assert_eq!(
                errors.to_string().split('\n').count(),
                errors.len(),
                "{errors}"
            );
        }
    }
}

#[test]
fn the_valid_file_is_valid() {
    let origin = fixture().join("pc.toml");
    if let Err(e) = config::parse(VALID, &origin) {
        panic!("{e}");
    }
}

#[test]
fn random_mutations_never_panic() {
    let origin = fixture().join("pc.toml");
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut text = VALID.to_string();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut text);
        }
        check(&text, &origin);
        accepted += usize::from(config::parse(&text, &origin).is_ok());
    }
    // Some mutations are harmless (comments, whitespace): both paths are exercised.
    assert!(accepted > 0 && accepted < 3000, "accepted {accepted}");
}

#[test]
fn arbitrary_bytes_never_panic() {
    let origin = fixture().join("pc.toml");
    let mut rng = Rng(42);
    let alphabet: Vec<char> = "[]{}=\"',.#\n \t\r0123456789abcdefprocesses_-:/é\u{0}"
        .chars()
        .collect();
    for _ in 0..1500 {
        let len = rng.below(120);
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        check(&text, &origin);
    }
}
