//! The deployment examples of docs/deploy.md (files in examples/deploy/), each checked: the
//! page shows them as they are, they parse, and what they run works: `run` and `up` as PID 1 of
//! a new PID namespace answer `/readyz` and stop within their grace on SIGTERM.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_page_shows_every_example_as_it_is() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy.md"))
            .unwrap();
    for name in [
        "Dockerfile.run",
        "Dockerfile.up",
        "processcontrol.toml",
        "pod.yaml",
        "processcontrol.service",
    ] {
        assert!(
            page.contains(example(name).trim_end()),
            "docs/deploy.md does not show examples/deploy/{name} as it is"
        );
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains("docs/deploy.md"),
        "README.md links docs/deploy.md"
    );
}

/// A Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, rest).
fn dockerfile(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        pending.push_str(line);
        let (instruction, rest) = pending.split_once(' ').expect("INSTRUCTION arguments");
        assert!(
            [
                "FROM",
                "COPY",
                "ADD",
                "RUN",
                "ENV",
                "EXPOSE",
                "ENTRYPOINT",
                "CMD",
                "WORKDIR",
                "USER",
                "STOPSIGNAL",
                "HEALTHCHECK",
            ]
            .contains(&instruction),
            "unknown instruction {instruction}"
        );
        out.push((instruction.to_string(), rest.trim().to_string()));
        pending.clear();
    }
    out
}

/// The exec-form (JSON array) arguments of an instruction.
fn exec_form(instructions: &[(String, String)], name: &str) -> Vec<String> {
    let (_, rest) = instructions
        .iter()
        .find(|(i, _)| i == name)
        .unwrap_or_else(|| panic!("no {name}"));
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{name} is not a JSON array: {e}"))
}

#[test]
fn the_dockerfiles_parse_and_use_the_flags_there_are() {
    for name in ["Dockerfile.run", "Dockerfile.up"] {
        let instructions = dockerfile(&example(name));
        assert_eq!(instructions[0].0, "FROM", "{name}");
        let entrypoint = exec_form(&instructions, "ENTRYPOINT");
        assert_eq!(entrypoint[0], "processcontrol", "{name}");
        // Every flag is one the command knows: clap rejects unknown ones with status 2.
        let mut args = entrypoint[1..].to_vec();
        args.retain(|a| a != "--");
        let help = Command::new(BIN)
            .args(&args[..1])
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(flag.as_str()),
                "{name}: {flag} is not a flag of {}",
                args[0]
            );
        }
    }
    let run = dockerfile(&example("Dockerfile.run"));
    assert!(!exec_form(&run, "CMD").is_empty());
}

#[test]
fn the_config_example_passes_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy/processcontrol.toml");
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The grace of the `run` example, from its `--stop-grace`.
fn run_grace() -> Duration {
    let entrypoint = exec_form(&dockerfile(&example("Dockerfile.run")), "ENTRYPOINT");
    let at = entrypoint.iter().position(|a| a == "--stop-grace").unwrap();
    let secs = entrypoint[at + 1]
        .strip_suffix('s')
        .unwrap()
        .parse()
        .unwrap();
    Duration::from_secs(secs)
}

#[test]
fn the_pod_manifest_probes_the_supervisor_within_its_grace() {
    let pod: Value = serde_yaml::from_str(&example("pod.yaml")).expect("pod.yaml parses");
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["kind"], "Pod");
    let container = &pod["spec"]["containers"][0];
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = ports[get["port"].as_str().unwrap()];
        // The port the supervisor of Dockerfile.run serves on.
        let entrypoint = exec_form(&dockerfile(&example("Dockerfile.run")), "ENTRYPOINT");
        let http = &entrypoint[entrypoint.iter().position(|a| a == "--http").unwrap() + 1];
        assert!(
            http.ends_with(&format!(":{port}")),
            "{probe} port {port} vs --http {http}"
        );
    }
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        Duration::from_secs(grace) > run_grace(),
        "the supervisor's grace must fit within the pod's"
    );
}

#[test]
fn the_systemd_unit_is_type_notify_with_reload_and_mixed_kill() {
    let unit = example("processcontrol.service");
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        keys.insert(format!("{section}.{k}"), v.to_string());
    }
    assert_eq!(keys["Service.Type"], "notify");
    assert_eq!(keys["Service.KillMode"], "mixed");
    assert!(keys["Service.ExecReload"].contains("-HUP $MAINPID"));
    assert!(keys["Service.ExecStart"].contains(" up "));
    assert!(keys.contains_key("Install.WantedBy"));
    // systemd's own parser, where it is installed.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("processcontrol.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/processcontrol", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `unshare --pid --fork`: the command as PID 1 of a new PID namespace. `None` (with the
/// reason printed) where that is not allowed.
fn as_pid_1(args: &[String]) -> Option<Child> {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "skipped: unshare --pid needs root (CI runs as root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped: cannot run unshare (util-linux): {e}");
            return None;
        }
    }
    Some(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--"])
            .arg(BIN)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The supervisor: the one child of `unshare`.
fn supervisor_of(unshare: &Child) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "unshare started nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn readyz(port: u16) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn wait_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + WAIT;
    while readyz(port) != Some(200) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited before ready: {status}");
        }
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the supervisor; how long until the namespace is gone, and its exit status.
fn terminate(unshare: &mut Child) -> (Duration, std::process::ExitStatus) {
    let pid = supervisor_of(unshare);
    let started = Instant::now();
    // SAFETY: kill(2) on a process of ours (the supervisor, in its own PID namespace).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    loop {
        if let Some(status) = unshare.try_wait().unwrap() {
            return (started.elapsed(), status);
        }
        assert!(started.elapsed() < WAIT, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The example's arguments with the port and grace a test can use.
fn replace(args: &[String], from: &str, to: &str) -> Vec<String> {
    args.iter().map(|a| a.replace(from, to)).collect()
}

#[test]
fn run_as_pid_1_answers_readyz_and_stops_within_its_grace() {
    let entrypoint = exec_form(&dockerfile(&example("Dockerfile.run")), "ENTRYPOINT");
    let port = free_port();
    let grace = Duration::from_secs(2);
    let mut args = replace(
        &entrypoint[1..],
        "0.0.0.0:9100",
        &format!("127.0.0.1:{port}"),
    );
    args = replace(&args, &format!("{}s", run_grace().as_secs()), "2s");
    // The program ignores SIGTERM: only the kill after the grace ends it.
    args.extend(["sh", "-c", "trap '' TERM; sleep 1000"].map(String::from));
    let Some(mut unshare) = as_pid_1(&args) else {
        return;
    };
    wait_ready(port, &mut unshare);
    let (took, status) = terminate(&mut unshare);
    assert!(took >= grace, "stopped after {took:?}, before the grace");
    assert!(
        took < grace + Duration::from_secs(5),
        "stopped after {took:?}"
    );
    // Killed after the grace: 128 + SIGKILL.
    assert_eq!(status.code(), Some(137));
}

#[test]
fn up_as_pid_1_answers_readyz_and_stops_within_its_grace() {
    let entrypoint = exec_form(&dockerfile(&example("Dockerfile.up")), "ENTRYPOINT");
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: the example's web process needs python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    let config = dir.path().join("processcontrol.toml");
    std::fs::write(
        &config,
        example("processcontrol.toml").replace("8080", &web.to_string()),
    )
    .unwrap();
    let port = free_port();
    let mut args = replace(
        &entrypoint[1..],
        "0.0.0.0:9100",
        &format!("127.0.0.1:{port}"),
    );
    args = replace(
        &args,
        "/etc/processcontrol/processcontrol.toml",
        config.to_str().unwrap(),
    );
    let socket: PathBuf = dir.path().join("pc.sock");
    args.extend(["--socket".to_string(), socket.display().to_string()]);
    let Some(mut unshare) = as_pid_1(&args) else {
        return;
    };
    wait_ready(port, &mut unshare);
    let (took, status) = terminate(&mut unshare);
    // The config's shutdown_grace.
    assert!(took < Duration::from_secs(25), "stopped after {took:?}");
    assert!(status.success(), "{status}");
}
