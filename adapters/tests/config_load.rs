//! Valid config files: what they turn into.

use std::path::{Path, PathBuf};
use std::time::Duration;

use processcontrol_adapters::config::{self, Condition, Config, ErrorKind};
use processcontrol_adapters::process::{EnvBase, Identity};
use processcontrol_adapters::supervise::CheckSpec;
use processcontrol_core::{Cooldown, LimitAction, Resource, RestartPolicy, Signal};

/// A fresh directory for one test, with an executable `srv/server` in it.
fn fixture(test: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("config_load")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("srv")).unwrap();
    let server = dir.join("srv/server");
    std::fs::write(&server, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn parse_in(dir: &Path, text: &str) -> Config {
    match config::parse(text, &dir.join("processcontrol.toml")) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

const FULL: &str = r#"
[supervisor]
socket = "run/pc.sock"
log_dir = "logs"
metrics = "127.0.0.1:9100"
shutdown_grace = "45s"

[processes.db]
command = "exec sleep 1000"
readiness = { tcp = "127.0.0.1:5432", period = "2s" }

[processes.web]
command = ["./server", "--port", "8080"]
env = { RUST_LOG = "info", PORT = "8080" }
cwd = "srv"
restart = "always"
exit_codes = { success = [0, 3], prevent_restart = [78], force_restart = [75] }
backoff = { initial = "200ms", max = "20s", factor = 1.5, jitter = 0.2, reset_after = "2m" }
breaker = { max_restarts = 7, window = "90s", cooldown = "never" }
stop = { signal = "SIGINT", grace = "15s" }
liveness = { http = "http://127.0.0.1:8080/healthz", host = "example.com", period = "5s", timeout = "2s", failure_threshold = 4, initial_delay = "3s" }
readiness = { tcp = "127.0.0.1:8080", success_threshold = 2 }
startup = { exec = ["sh", "-c", "true"], period = "1s", failure_threshold = 30 }
limits.memory = { max = "512MiB", for = "30s", action = "graceful-shutdown" }
limits.cpu = { max = "150%", action = "warn" }
limits.fds = { max = 1024 }
limits.grace = "10s"
depends_on = { db = "healthy" }
user = 1000
group = "www-data"
logs = { lines = 500, bytes = "64KiB", file = true, max_file_bytes = "1MiB", keep = 3 }
cgroup = { memory_max = "1GiB" }
"#;

#[test]
fn full_example_loads() {
    let dir = fixture("full_example_loads");
    let config = parse_in(&dir, FULL);
    let base = std::path::absolute(&dir).unwrap();

    let s = &config.supervisor;
    assert_eq!(
        s.socket.as_deref(),
        Some(base.join("run/pc.sock").as_path())
    );
    assert_eq!(s.log_dir.as_deref(), Some(base.join("logs").as_path()));
    assert_eq!(s.http, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(s.shutdown_grace, Duration::from_secs(45));

    let names: Vec<&str> = config
        .processes
        .iter()
        .map(|p| p.spec.name.as_str())
        .collect();
    assert_eq!(names, ["db", "web"]);

    let db = &config.process("db").unwrap().spec;
    assert_eq!(db.command.program, "/bin/sh");
    assert_eq!(db.command.args, ["-c", "exec sleep 1000"]);
    let readiness = db.probes.readiness.as_ref().unwrap();
    assert_eq!(
        readiness.check,
        CheckSpec::Tcp {
            addr: "127.0.0.1:5432".into(),
            reset: false,
        }
    );
    assert_eq!(readiness.period, Duration::from_secs(2));

    let entry = config.process("web").unwrap();
    assert_eq!(entry.depends_on, [("db".to_string(), Condition::Healthy)]);
    let web = &entry.spec;
    assert_eq!(web.command.program, "./server");
    assert_eq!(web.command.args, ["--port", "8080"]);
    assert_eq!(web.command.cwd.as_deref(), Some(base.join("srv").as_path()));
    // File order, not the tree's alphabetical order. Where uid 1000 has a passwd entry, its
    // HOME, USER, LOGNAME and SHELL come first (tests/deploy_cli.rs checks those).
    let from_file: Vec<(std::ffi::OsString, std::ffi::OsString)> = web
        .command
        .env
        .iter()
        .filter(|(k, _)| !["HOME", "USER", "LOGNAME", "SHELL"].iter().any(|a| k == a))
        .cloned()
        .collect();
    assert_eq!(
        from_file,
        [
            ("RUST_LOG".into(), "info".into()),
            ("PORT".into(), "8080".into())
        ]
    );
    assert_eq!(web.command.env_base, EnvBase::Inherit);
    assert_eq!(web.command.user, Some(Identity::Id(1000)));
    assert_eq!(web.command.group, Some(Identity::Name("www-data".into())));

    let p = &web.policy;
    assert_eq!(p.restart, RestartPolicy::Always);
    assert_eq!(p.exit_codes.success, [0, 3]);
    assert_eq!(p.exit_codes.prevent_restart, [78]);
    assert_eq!(p.exit_codes.force_restart, [75]);
    assert_eq!(p.backoff.initial, Duration::from_millis(200));
    assert_eq!(p.backoff.max, Duration::from_secs(20));
    assert_eq!(p.backoff.factor, 1.5);
    assert_eq!(p.backoff.jitter, 0.2);
    assert_eq!(p.backoff.reset_after, Duration::from_secs(120));
    assert_eq!(p.breaker.max_restarts, 7);
    assert_eq!(p.breaker.window, Duration::from_secs(90));
    assert_eq!(p.breaker.cooldown, Cooldown::Never);
    assert_eq!(p.stop.signal, Signal::Int);
    assert_eq!(p.stop.grace, Duration::from_secs(15));
    assert_eq!(p.limits.grace, Duration::from_secs(10));
    let rules: Vec<_> = p
        .limits
        .rules
        .iter()
        .map(|r| (r.resource, r.max, r.sustain, r.action))
        .collect();
    assert_eq!(
        rules,
        [
            (
                Resource::Memory,
                512 << 20,
                Duration::from_secs(30),
                LimitAction::GracefulShutdown
            ),
            (Resource::Cpu, 150, Duration::ZERO, LimitAction::Warn),
            (Resource::Fds, 1024, Duration::ZERO, LimitAction::Restart),
        ]
    );

    let liveness = web.probes.liveness.as_ref().unwrap();
    assert_eq!(
        liveness.check,
        CheckSpec::Http {
            url: "http://127.0.0.1:8080/healthz".into(),
            host: Some("example.com".into()),
            reuse_connection: true,
        }
    );
    assert_eq!(liveness.period, Duration::from_secs(5));
    assert_eq!(liveness.timeout, Duration::from_secs(2));
    assert_eq!(liveness.initial_delay, Duration::from_secs(3));
    assert_eq!(liveness.failure_threshold, 4);
    assert_eq!(web.probes.readiness.as_ref().unwrap().success_threshold, 2);
    let startup = web.probes.startup.as_ref().unwrap();
    assert_eq!(
        startup.check,
        CheckSpec::Exec {
            argv: vec!["sh".into(), "-c".into(), "true".into()]
        }
    );
    assert_eq!(startup.failure_threshold, 30);

    assert_eq!(web.logs.ring_lines, 500);
    assert_eq!(web.logs.ring_bytes, 64 << 10);
    assert_eq!(web.logs.dir.as_deref(), Some(base.join("logs").as_path()));
    assert_eq!(web.logs.file_max_bytes, 1 << 20);
    assert_eq!(web.logs.file_keep, 3);
    assert_eq!(web.cgroup.as_ref().unwrap().memory_max, Some(1 << 30));

    assert_eq!(config.start_order().unwrap(), [vec!["db"], vec!["web"]]);
}

#[test]
fn every_spec_passes_validate() {
    let dir = fixture("every_spec_passes_validate");
    for entry in parse_in(&dir, FULL).processes {
        entry.spec.validate().unwrap();
    }
}

#[test]
fn defaults_fill_absent_keys() {
    let dir = fixture("defaults_fill_absent_keys");
    let config = parse_in(&dir, "[processes.one]\ncommand = [\"sleep\", \"1\"]\n");
    assert_eq!(config.supervisor, config::SupervisorConfig::default());
    assert_eq!(config.supervisor.shutdown_grace, Duration::from_secs(30));
    let entry = &config.processes[0];
    assert!(entry.depends_on.is_empty());
    let spec = &entry.spec;
    let defaults = processcontrol_adapters::supervise::ProcessSpec::new("one", ["sleep", "1"]);
    assert_eq!(spec.policy, defaults.policy);
    assert_eq!(spec.logs.ring_lines, defaults.logs.ring_lines);
    assert!(spec.logs.dir.is_none());
    assert!(spec.cgroup.is_none());
    assert!(spec.probes.liveness.is_none() && spec.probes.readiness.is_none());
    // Without `cwd`, a process runs in the config file's directory.
    assert_eq!(
        spec.command.cwd.as_deref(),
        Some(std::path::absolute(&dir).unwrap().as_path())
    );
}

#[test]
fn processes_keep_file_order() {
    let dir = fixture("processes_keep_file_order");
    let text = "[processes.zeta]\ncommand = \"true\"\n[processes.alpha]\ncommand = \"true\"\n\
                [processes.mid]\ncommand = \"true\"\n";
    let config = parse_in(&dir, text);
    let names: Vec<&str> = config
        .processes
        .iter()
        .map(|p| p.spec.name.as_str())
        .collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    assert_eq!(
        config.start_order().unwrap(),
        [vec!["zeta", "alpha", "mid"]]
    );
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = fixture("load_reads_the_file");
    let path = dir.join("pc.toml");
    std::fs::write(
        &path,
        "[processes.web]\ncommand = [\"./server\"]\ncwd = \"srv\"\n",
    )
    .unwrap();
    let config = config::load(&path).unwrap();
    assert_eq!(
        config.processes[0].spec.command.cwd.as_deref(),
        Some(std::path::absolute(dir.join("srv")).unwrap().as_path())
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_load/does-not-exist.toml");
    let errors = config::load(&path).unwrap_err();
    assert_eq!(errors.len(), 1);
    let e = &errors.0[0];
    assert_eq!((e.kind, e.line, e.column), (ErrorKind::Io, 1, 1));
    assert!(errors
        .to_string()
        .starts_with(&format!("{}:1:1: cannot read", path.display())));
}

#[test]
fn depends_on_list_means_started() {
    let dir = fixture("depends_on_list_means_started");
    let text = "[processes.a]\ncommand = \"true\"\n[processes.b]\ncommand = \"true\"\n\
                [processes.c]\ncommand = \"true\"\ndepends_on = [\"b\", \"a\"]\n";
    let config = parse_in(&dir, text);
    assert_eq!(
        config.process("c").unwrap().depends_on,
        [
            ("b".to_string(), Condition::Started),
            ("a".to_string(), Condition::Started)
        ]
    );
    let completed = "[processes.migrate]\ncommand = \"true\"\nrestart = \"never\"\n\
                     [processes.app]\ncommand = \"true\"\ndepends_on = { migrate = \"completed\" }\n";
    let config = parse_in(&dir, completed);
    assert_eq!(
        config.process("app").unwrap().depends_on,
        [("migrate".to_string(), Condition::Completed)]
    );
}

#[test]
fn breaker_max_cooldown_defaults_to_a_long_cooldown() {
    let dir = fixture("breaker_max_cooldown");
    let text = "[processes.a]\ncommand = \"true\"\nbreaker = { cooldown = \"2h\" }\n\
                [processes.b]\ncommand = \"true\"\nbreaker = { cooldown = \"1m\", max_cooldown = \"10m\" }\n";
    let config = parse_in(&dir, text);
    let a = &config.process("a").unwrap().spec.policy.breaker;
    assert_eq!(a.cooldown, Cooldown::After(Duration::from_secs(7200)));
    assert_eq!(a.max_cooldown, Duration::from_secs(7200));
    let b = &config.process("b").unwrap().spec.policy.breaker;
    assert_eq!(b.max_cooldown, Duration::from_secs(600));
}

#[test]
fn relative_exec_probe_program_is_made_absolute() {
    let dir = fixture("relative_exec_probe");
    let text = "[processes.web]\ncommand = [\"./server\"]\ncwd = \"srv\"\n\
                liveness = { exec = [\"./server\", \"--check\"] }\n";
    let config = parse_in(&dir, text);
    let probe = config.processes[0].spec.probes.liveness.clone().unwrap();
    let expected = dir.join("srv/server");
    assert_eq!(
        probe.check,
        CheckSpec::Exec {
            argv: vec![expected.to_string_lossy().into_owned(), "--check".into()]
        }
    );
}

#[test]
fn shell_string_probe_and_small_forms() {
    let dir = fixture("small_forms");
    let text = r#"
[processes.w]
command = "sleep 1000"
clear_env = true
env = { PATH = "/usr/bin:/bin" }
user = "1001"
cgroup = true
liveness = { exec = "test -d /" }
limits.memory = { max = 1048576 }
limits.threads = { max = 64, action = "kill" }
"#;
    let config = parse_in(&dir, text);
    let spec = &config.processes[0].spec;
    assert_eq!(spec.command.env_base, EnvBase::Clear);
    assert_eq!(spec.command.user, Some(Identity::Id(1001)));
    assert_eq!(spec.cgroup, Some(Default::default()));
    assert_eq!(
        spec.probes.liveness.as_ref().unwrap().check,
        CheckSpec::Exec {
            argv: vec!["/bin/sh".into(), "-c".into(), "test -d /".into()]
        }
    );
    assert_eq!(spec.policy.limits.rules[0].max, 1 << 20);
    assert_eq!(spec.policy.limits.rules[1].action, LimitAction::Kill);
}

#[test]
fn http_probe_reuse_connection_defaults_to_true_and_can_be_turned_off() {
    let dir = fixture("http_probe_reuse_connection");
    let text = r#"
[processes.kept]
command = "sleep 1000"
liveness = { http = "http://127.0.0.1:8080/healthz" }
readiness = { http = "http://127.0.0.1:8080/ready", reuse_connection = true }

[processes.fresh]
command = "sleep 1000"
liveness = { http = "http://127.0.0.1:8081/healthz", host = "svc.example", reuse_connection = false }
"#;
    let config = parse_in(&dir, text);
    let probes = |i: usize| config.processes[i].spec.probes.clone();
    let kept = probes(0);
    assert_eq!(
        kept.liveness.unwrap().check,
        CheckSpec::Http {
            url: "http://127.0.0.1:8080/healthz".into(),
            host: None,
            reuse_connection: true,
        }
    );
    assert!(matches!(
        kept.readiness.unwrap().check,
        CheckSpec::Http {
            reuse_connection: true,
            ..
        }
    ));
    assert_eq!(
        probes(1).liveness.unwrap().check,
        CheckSpec::Http {
            url: "http://127.0.0.1:8081/healthz".into(),
            host: Some("svc.example".into()),
            reuse_connection: false,
        }
    );
    for entry in &config.processes {
        entry.spec.validate().unwrap();
    }
    // The spec's builder says the same as the file.
    let built = processcontrol_adapters::supervise::ProbeSpec::http("http://127.0.0.1:8081/")
        .reuse_connection(false);
    assert!(matches!(
        built.check,
        CheckSpec::Http {
            reuse_connection: false,
            ..
        }
    ));
}

fn fingerprints(dir: &Path, text: &str) -> Vec<u64> {
    parse_in(dir, text)
        .processes
        .iter()
        .map(|p| p.fingerprint)
        .collect()
}

#[test]
fn fingerprint_changes_only_with_the_process_itself() {
    let dir = fixture("fingerprint");
    let base = "[processes.a]\ncommand = \"sleep 1\"\nbreaker = { window = \"60s\" }\n\
                [processes.b]\ncommand = \"sleep 2\"\n";
    let f = fingerprints(&dir, base);
    assert_ne!(f[0], f[1]);

    // Comments, whitespace and equivalent spellings do not count.
    let cosmetic = "# the first\n[processes.a]\ncommand   =   \"sleep 1\"   # note\n\
                    breaker = { window = \"1m\" }\n\n[processes.b]\ncommand = \"sleep 2\"\n";
    assert_eq!(fingerprints(&dir, cosmetic), f);

    // Changing b changes b only.
    let b_changed = base.replace("sleep 2", "sleep 3");
    let g = fingerprints(&dir, &b_changed);
    assert_eq!(g[0], f[0]);
    assert_ne!(g[1], f[1]);

    // Changing a's policy changes a only.
    let a_changed = base.replace("\"60s\"", "\"61s\"");
    let h = fingerprints(&dir, &a_changed);
    assert_ne!(h[0], f[0]);
    assert_eq!(h[1], f[1]);

    // Order of the tables in the file does not count either.
    let swapped = "[processes.b]\ncommand = \"sleep 2\"\n[processes.a]\ncommand = \"sleep 1\"\n\
                   breaker = { window = \"60s\" }\n";
    assert_eq!(fingerprints(&dir, swapped), [f[1], f[0]]);

    // Dependencies are part of the process.
    let with_dep = format!("{base}depends_on = [\"a\"]\n");
    assert_ne!(fingerprints(&dir, &with_dep)[1], f[1]);
}
