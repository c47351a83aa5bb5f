//! Invalid config files: every mistake reported at once, each at its line and column, with
//! what was expected and what was found.

use std::path::{Path, PathBuf};

use processcontrol_adapters::config::{self, ConfigError, ErrorKind};

fn dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_errors");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn origin() -> PathBuf {
    dir().join("pc.toml")
}

fn errors(text: &str) -> Vec<ConfigError> {
    match config::parse(text, &origin()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// The only error of `text`.
fn one(text: &str) -> ConfigError {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got:\n{all:#?}");
    all.remove(0)
}

/// 1-based line and column of the first occurrence of `needle` (after `skip` earlier ones).
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

fn at(e: &ConfigError) -> (usize, usize) {
    (e.line, e.column)
}

#[test]
fn display_is_file_line_column_message_expected_found() {
    let text = "[processes.web]\ncommand = \"true\"\nrestart = \"sometimes\"\n";
    let errors = config::parse(text, &origin()).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:3:11: processes.web.restart: unknown restart policy (expected one of `always`, \
             `on-failure` or `never`, found \"sometimes\")",
            origin().display()
        )
    );
}

#[test]
fn every_error_is_reported_at_once_in_file_order() {
    let text = r#"[supervisor]
shutdown_grace = 30
metrics = "127.0.0.1:0"

[processes.web]
command = ["nosuchprogram-xyz", "--port", "8080"]
restart = "sometimes"
backoff = { initial = "1m", factor = 0.5, jiter = 0.1 }
breaker = { max_restarts = -1, window = "0s", cooldown = "forever" }
stop = { signal = "SIGFOO", grace = "10" }
liveness = { http = "http://127.0.0.1:0/x", tcp = "x:1", failure_threshold = 0 }
readiness = { tcp = "localhost" }
limits.cpu = { max = 0, action = "explode" }
limits.memory = { max = "12 apples" }
depends_on = { ghost = "started", web = "ready" }
"#;
    let all = errors(text);
    let got: Vec<(usize, usize, ErrorKind)> =
        all.iter().map(|e| (e.line, e.column, e.kind)).collect();
    use ErrorKind::*;
    let want = vec![
        (pos(text, "30").0, pos(text, "30").1, WrongType),
        (3, pos(text, "\"127.0.0.1:0\"").1, InvalidValue),
        (6, pos(text, "\"nosuchprogram").1, ProgramNotFound),
        (7, 11, InvalidValue),
        // initial 1m > max 30s, factor < 1, a misspelt key.
        (8, pos(text, "\"1m\"").1, InvalidValue),
        (8, pos(text, "0.5").1, InvalidValue),
        (8, pos(text, "jiter").1, UnknownKey),
        (9, pos(text, "-1").1, InvalidValue),
        (9, pos(text, "\"0s\"").1, InvalidValue),
        (9, pos(text, "\"forever\"").1, InvalidValue),
        (10, pos(text, "\"SIGFOO\"").1, InvalidValue),
        (10, pos(text, "\"10\"").1, InvalidValue),
        (11, pos(text, "\"http://").1, InvalidValue),
        (11, pos(text, "tcp = \"x:1\"").1, Conflict),
        (11, pos(text, "0 }").1, InvalidValue),
        (12, pos(text, "\"localhost\"").1, InvalidValue),
        (13, pos(text, "0, action").1, InvalidValue),
        (13, pos(text, "\"explode\"").1, InvalidValue),
        (14, pos(text, "\"12 apples\"").1, InvalidValue),
        (15, pos(text, "ghost").1, UnknownDependency),
        (15, pos(text, "\"ready\"").1, InvalidValue),
    ];
    assert_eq!(got, want, "{}", config::ConfigErrors(all.clone()));
    // Every line of the display is one error.
    assert_eq!(
        config::ConfigErrors(all).to_string().lines().count(),
        want.len()
    );
}

#[test]
fn syntax_errors_point_at_the_place() {
    let text = "[processes.web]\ncommand = \"true\nrestart = \"always\"\n";
    let e = &errors(text)[0];
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(at(e), (2, 16));
    assert!(e.message.starts_with("invalid TOML"), "{e}");
    assert_eq!(e.found, "end of line");

    let e = one("[processes.web]\ncommand = \"true\"\ncommand = \"false\"\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::Syntax, (3, 1)));
    assert!(e.message.contains("duplicate key"), "{e}");
    assert_eq!(e.found, "\"command\"");

    let e = one("[processes.web]\ncommand = [\"a\"\n");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.expected, "`]`");
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let text = "[processes.web]\ncommand = \"true\"\nrestrat = \"always\"\nbogus = 1\n";
    let all = errors(text);
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].kind, at(&all[0])), (ErrorKind::UnknownKey, (3, 1)));
    assert_eq!(
        all[0].message,
        "processes.web: unknown key `restrat`; did you mean `restart`?"
    );
    assert!(all[0].expected.contains("`restart`"));
    assert_eq!(all[0].found, "`restrat`");
    assert_eq!(all[1].message, "processes.web: unknown key `bogus`");

    let e = one("[supervisor]\nsockett = \"x\"\n[processes.a]\ncommand = \"true\"\n");
    assert_eq!(
        e.message,
        "supervisor: unknown key `sockett`; did you mean `socket`?"
    );
    let e = one("[processes.a]\ncommand = \"true\"\n[extra]\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::UnknownKey, (3, 2)));
}

#[test]
fn wrong_types_say_what_was_found() {
    let cases = [
        ("restart = 1", "one of `always`", "integer 1"),
        ("env = [\"A=1\"]", "a table of strings", "an array"),
        ("env = { PORT = 8080 }", "a string", "integer 8080"),
        ("backoff = \"fast\"", "a table such as", "string \"fast\""),
        ("backoff = { factor = \"2\" }", "a number", "string \"2\""),
        ("stop = { grace = 10 }", "a duration string", "integer 10"),
        (
            "logs = { file = \"yes\" }",
            "true or false",
            "string \"yes\"",
        ),
        ("cgroup = 5", "true, false or a table", "integer 5"),
        (
            "depends_on = \"db\"",
            "a table such as { db = \"healthy\" }",
            "string \"db\"",
        ),
        (
            "exit_codes = { success = 0 }",
            "an array of exit codes",
            "integer 0",
        ),
        ("liveness = \"http://x:1/\"", "a probe table", "string"),
        (
            "limits.memory = \"512MiB\"",
            "a table such as { max",
            "string \"512MiB\"",
        ),
        ("user = true", "a user name or a numeric id", "boolean true"),
    ];
    for (line, expected, found) in cases {
        let text = format!("[processes.web]\ncommand = \"true\"\n{line}\n");
        let e = one(&text);
        assert_eq!(e.kind, ErrorKind::WrongType, "{line}: {e}");
        assert_eq!(e.line, 3, "{line}: {e}");
        assert!(e.expected.starts_with(expected), "{line}: {e}");
        assert!(e.found.starts_with(found), "{line}: {e}");
    }
    let e = one("[processes.web]\ncommand = [\"true\", 1]\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::WrongType, (2, 20)));
    assert_eq!(e.message, "processes.web.command[1]: wrong type");
    let e = one("processes = [1]\n");
    assert_eq!(e.kind, ErrorKind::WrongType);
}

#[test]
fn bad_units_names_and_ranges() {
    let cases = [
        (
            "backoff = { initial = \"100\" }",
            "unknown unit `(none)`",
            "a duration string",
        ),
        (
            "backoff = { reset_after = \"ten seconds\" }",
            "expected a number",
            "a duration string",
        ),
        (
            "backoff = { jitter = 1.5 }",
            "must be between 0 and 1",
            "a fraction from 0 to 1",
        ),
        (
            "backoff = { max = \"0s\" }",
            "must be longer than 0",
            "a duration longer than 0",
        ),
        (
            "breaker = { cooldown = \"5 lightyears\" }",
            "invalid cooldown",
            "a duration string such as \"5m\", or \"never\"",
        ),
        (
            "breaker = { max_cooldown = \"1m\" }",
            "shorter than breaker.cooldown (300s)",
            "a duration at least as long",
        ),
        (
            "stop = { signal = \"TERMINATE\" }",
            "unknown signal",
            "one of `SIGHUP`",
        ),
        (
            "restart = \"sometimes\"",
            "unknown restart policy",
            "one of `always`",
        ),
        (
            "limits.fds = { max = 10, action = \"nuke\" }",
            "unknown limit action",
            "one of `restart`",
        ),
        (
            "limits.memory = { max = \"12 apples\" }",
            "invalid size",
            "a size such as",
        ),
        (
            "limits.memory = { max = \"0MiB\" }",
            "must be more than 0 bytes",
            "a size of at least 1 byte",
        ),
        (
            "limits.cpu = { max = \"lots\" }",
            "invalid CPU percentage",
            "a percentage",
        ),
        (
            "cgroup = { memory_max = 0 }",
            "must be more than 0 bytes",
            "a size of at least 1 byte",
        ),
        (
            "exit_codes = { success = [0, 256] }",
            "must be at most 255",
            "an integer from 0 to 255",
        ),
        (
            "logs = { keep = 0 }",
            "must be at least 1",
            "an integer >= 1",
        ),
        (
            "logs = { lines = -5 }",
            "must be at least 1",
            "an integer >= 1",
        ),
        ("user = -1", "must be at least 0", "an integer from 0"),
        // (uid_t)-1 means "unchanged" to setuid(2).
        ("user = 4294967295", "4294967294", "an integer from 0"),
        (
            "user = \"4294967295\"",
            "user id out of range",
            "a user name or a numeric id",
        ),
        (
            "user = \"nosuchuser-pc\"",
            "unknown user",
            "a user of this system (see /etc/passwd)",
        ),
        (
            "group = \"nosuchgroup-pc\"",
            "unknown group",
            "a group of this system (see /etc/group)",
        ),
        (
            "depends_on = { db = \"ready\" }",
            "unknown condition",
            "one of `started`, `healthy` or `completed`",
        ),
        (
            "depends_on = { db = \"healty\" }",
            "unknown condition; did you mean `healthy`?",
            "one of `started`, `healthy` or `completed`",
        ),
    ];
    for (line, message, expected) in cases {
        let text = format!(
            "[processes.web]\ncommand = \"true\"\n{line}\n[processes.db]\ncommand = \"true\"\n"
        );
        let e = one(&text);
        assert_eq!(
            (e.kind, e.line),
            (ErrorKind::InvalidValue, 3),
            "{line}: {e}"
        );
        assert!(e.message.contains(message), "{line}: {e}");
        assert!(e.expected.starts_with(expected), "{line}: {e}");
    }
    let text =
        "[processes.web]\ncommand = \"true\"\nbackoff = { initial = \"1m\", max = \"10s\" }\n";
    let e = one(text);
    assert_eq!(at(&e), pos(text, "\"1m\""));
    assert_eq!(
        e.message,
        "processes.web.backoff.initial: backoff.initial (60s) is longer than backoff.max (10s)"
    );
    assert_eq!(e.found, "initial 60s > max 10s");
}

#[test]
fn zero_and_negative_thresholds() {
    let text = "[processes.web]\ncommand = \"true\"\n\
                liveness = { tcp = \"127.0.0.1:1\", failure_threshold = 0, success_threshold = -2, period = \"0s\", timeout = \"0ms\" }\n";
    let all = errors(text);
    let got: Vec<_> = all
        .iter()
        .map(|e| (at(e), e.message.as_str(), e.found.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                pos(text, "0, success"),
                "processes.web.liveness.failure_threshold: must be at least 1",
                "0"
            ),
            (
                pos(text, "-2"),
                "processes.web.liveness.success_threshold: must be at least 1",
                "-2"
            ),
            (
                pos(text, "\"0s\""),
                "processes.web.liveness.period: must be longer than 0",
                "\"0s\""
            ),
            (
                pos(text, "\"0ms\""),
                "processes.web.liveness.timeout: must be longer than 0",
                "\"0ms\""
            ),
        ]
    );
}

#[test]
fn probe_targets_are_checked() {
    let cases = [
        ("liveness = { http = \"not a url\" }", "invalid URL"),
        (
            "liveness = { http = \"https://127.0.0.1:8443/\" }",
            "unsupported scheme `https`",
        ),
        (
            "liveness = { http = \"http://127.0.0.1:0/healthz\" }",
            "invalid port",
        ),
        (
            "liveness = { http = \"http://user:pw@127.0.0.1:80/\" }",
            "credentials",
        ),
        ("readiness = { tcp = \"127.0.0.1:0\" }", "invalid port"),
        ("readiness = { tcp = \"127.0.0.1:99999\" }", "invalid port"),
        ("readiness = { tcp = \"127.0.0.1\" }", "invalid port"),
        ("startup = { tcp = \"\" }", "must not be empty"),
    ];
    for (line, message) in cases {
        let text = format!("[processes.web]\ncommand = \"true\"\n{line}\n");
        let e = one(&text);
        assert_eq!(e.kind, ErrorKind::InvalidValue, "{line}: {e}");
        assert_eq!(at(&e), (3, line.find('"').unwrap() + 1), "{line}: {e}");
        assert!(e.message.contains(message), "{line}: {e}");
    }
    let text = "[processes.web]\ncommand = \"true\"\nliveness = { http = \"http://127.0.0.1:80/\", host = \"a b\" }\n";
    let e = one(text);
    assert_eq!(at(&e), pos(text, "\"a b\""));
    assert!(e.message.contains("invalid Host header"), "{e}");
}

#[test]
fn a_probe_has_exactly_one_check() {
    let text = "[processes.web]\ncommand = \"true\"\n\
                liveness = { http = \"http://127.0.0.1:80/\", tcp = \"127.0.0.1:80\", exec = \"true\" }\n";
    let all = errors(text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        (all[0].kind, at(&all[0])),
        (ErrorKind::Conflict, pos(text, "tcp ="))
    );
    assert_eq!(all[0].found, "`http` and `tcp`");
    assert_eq!(all[0].expected, "exactly one of `http`, `tcp` or `exec`");
    assert_eq!(at(&all[1]), pos(text, "exec ="));

    let text = "[processes.web]\ncommand = \"true\"\nreadiness = { period = \"1s\" }\n";
    let e = one(text);
    assert_eq!((e.kind, at(&e)), (ErrorKind::MissingKey, (3, 1)));
    assert_eq!(e.message, "processes.web.readiness: no check");

    let text = "[processes.web]\ncommand = \"true\"\nreadiness = { tcp = \"127.0.0.1:80\", host = \"x\" }\n";
    let e = one(text);
    assert_eq!((e.kind, at(&e)), (ErrorKind::Conflict, pos(text, "host")));

    // Table form: the error points at the key in its header line.
    let text = "[processes.web]\ncommand = \"true\"\n[processes.web.startup]\nperiod = \"1s\"\n";
    let e = one(text);
    assert_eq!((e.kind, at(&e)), (ErrorKind::MissingKey, (3, 16)));
}

#[test]
fn missing_programs_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    std::fs::write(d.join("not-executable"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        d.join("not-executable"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("subdir")).unwrap();

    let text = "[processes.a]\ncommand = [\"no-such-program-42\"]\n";
    let e = one(text);
    assert_eq!((e.kind, at(&e)), (ErrorKind::ProgramNotFound, (2, 12)));
    assert_eq!(
        e.message,
        "processes.a.command[0]: program `no-such-program-42` not found or not executable"
    );
    assert_eq!(e.found, "none in PATH");

    let e = one("[processes.a]\ncommand = [\"./not-executable\"]\n");
    assert_eq!(e.kind, ErrorKind::ProgramNotFound);
    assert!(
        e.found.starts_with("a file without execute permission at"),
        "{e}"
    );

    let e = one("[processes.a]\ncommand = [\"./missing\", \"x\"]\n");
    assert_eq!(
        e.found,
        format!("nothing at {}", d.join("missing").display())
    );

    // A PATH set in `env` is the one searched; a directory is not a program.
    let all = errors("[processes.a]\ncommand = [\"sh\"]\nenv = { PATH = \"/nonexistent\" }\n[processes.b]\ncommand = [\"./subdir\"]\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        (all[0].kind, at(&all[0])),
        (ErrorKind::ProgramNotFound, (2, 12))
    );
    assert_eq!(
        (all[1].kind, at(&all[1])),
        (ErrorKind::ProgramNotFound, (5, 12))
    );
    assert_eq!(
        all[1].found,
        format!("a directory at {}", d.join("subdir").display())
    );

    // Relative to `cwd`, not to the config file's directory.
    let e = one("[processes.a]\ncommand = [\"./not-executable\"]\ncwd = \"subdir\"\n");
    assert!(e.found.starts_with("nothing at"), "{e}");

    // Exec probes too.
    let text =
        "[processes.a]\ncommand = \"true\"\nliveness = { exec = [\"no-such-check-42\", \"-v\"] }\n";
    let e = one(text);
    assert_eq!(
        (e.kind, at(&e)),
        (ErrorKind::ProgramNotFound, pos(text, "\"no-such-check"))
    );
    assert_eq!(
        e.message,
        "processes.a.liveness.exec[0]: program `no-such-check-42` not found or not executable"
    );
}

#[test]
fn structural_mistakes() {
    let e = one("[processes.web]\nrestart = \"always\"\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::MissingKey, (1, 12)));
    assert_eq!(e.message, "processes.web: missing key `command`");

    let e = one("[processes.\"my app\"]\ncommand = \"true\"\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::InvalidValue, (1, 12)));
    assert_eq!(e.message, "processes.\"my app\": invalid process name");

    let e = one("[supervisor]\nlog_dir = \"logs\"\n");
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::MissingKey, "no processes")
    );
    let e = one("[processes]\n");
    assert_eq!(e.kind, ErrorKind::MissingKey);

    let text = "[processes.web]\ncommand = \"true\"\nlogs = { file = true }\n";
    let e = one(text);
    assert_eq!(
        (e.kind, at(&e)),
        (ErrorKind::MissingKey, pos(text, "true }"))
    );
    assert_eq!(
        e.expected,
        "supervisor.log_dir to be set when logs.file = true"
    );

    let text = "[processes.web]\ncommand = \"true\"\ncwd = \"no/such/dir\"\n";
    let e = one(text);
    assert_eq!((e.kind, at(&e)), (ErrorKind::InvalidValue, (3, 7)));
    assert!(e.found.ends_with("no/such/dir does not exist"), "{e}");

    let e = one("[processes.web]\ncommand = []\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::InvalidValue, (2, 11)));
    let e = one("[processes.web]\ncommand = \"  \"\n");
    assert_eq!(e.message, "processes.web.command: the command is empty");
    let e = one("[processes.web]\ncommand = [\"\"]\n");
    assert_eq!(
        e.message,
        "processes.web.command[0]: the program name is empty"
    );

    let e = one("[processes.web]\ncommand = \"true\"\nenv = { \"A=B\" = \"x\" }\n");
    assert_eq!(
        e.message,
        "processes.web.env.\"A=B\": invalid variable name"
    );

    let e = one("[supervisor]\nmetrics = \"localhost\"\n[processes.a]\ncommand = \"true\"\n");
    assert_eq!((e.kind, at(&e)), (ErrorKind::InvalidValue, (2, 11)));
    assert_eq!(e.message, "supervisor.metrics: invalid address");

    let e = one("[processes.a]\ncommand = \"true\"\ndepends_on = [\"b\", \"b\"]\n[processes.b]\ncommand = \"true\"\n");
    assert_eq!(e.message, "processes.a.depends_on: `b` is listed twice");
}

#[test]
fn an_unreadable_origin_directory_is_reported_per_process() {
    let text = "[processes.a]\ncommand = \"true\"\n";
    let errors = config::parse(text, Path::new("/no/such/dir/pc.toml")).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors.0[0].file, Path::new("/no/such/dir/pc.toml"));
    assert_eq!(at(&errors.0[0]), (1, 12));
}
