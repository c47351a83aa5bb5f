//! Where people deploy, end to end with the real binary: the HTTP endpoint (`/healthz`,
//! `/readyz`, `/metrics`) of `up` and `run`, the metrics by Prometheus's conventions, and the
//! listener's defences against a connection flood.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{free_port, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");

/// One HTTP exchange: the status code, the headers (lower-case names) and the body.
struct Answer {
    code: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// `GET path` on a new connection; `None` when nothing answers (yet).
fn get(port: u16, path: &str) -> Option<Answer> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Answer {
        code,
        headers,
        body: body.to_string(),
    })
}

/// Polls `GET path` until `f` holds.
fn wait_get(port: u16, path: &str, what: &str, f: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(answer) = get(port, path) {
            if f(&answer) {
                return answer;
            }
            last = Some((answer.code, answer.body));
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last answer {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `processcontrol up` with a config, a socket and `--http` in a temporary directory.
struct Up {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    port: u16,
}

impl Up {
    fn start(config: &str) -> Up {
        Self::start_with(config, &[])
    }

    /// `wrapper` runs the daemon (such as `prlimit --nofile=...`).
    fn start_with(config: &str, wrapper: &[&str]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pc.sock");
        let path = dir.path().join("processcontrol.toml");
        std::fs::write(
            &path,
            config.replace("DIR", &dir.path().display().to_string()),
        )
        .unwrap();
        let port = free_port();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["up", "-c"])
            .arg(&path)
            .arg("--socket")
            .arg(&socket)
            .args(["--http", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let up = Up {
            child,
            dir,
            socket,
            port,
        };
        wait_get(port, "/healthz", "the endpoint", |a| a.code == 200);
        up
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("PROCESSCONTROL_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    fn process(&self, name: &str) -> Value {
        let out = self.cli(&["status", "--json", name]);
        assert!(out.status.success(), "status failed: {out:?}");
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        all[0].clone()
    }

    fn wait_process(&self, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.process(name);
            if f(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {p}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status within `WAIT`.
    fn terminate(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn up_answers_healthz_readyz_metrics_and_404_elsewhere() {
    let up = Up::start(
        r#"
[processes.db]
command = "sleep 1000"

[processes.web]
command = "sleep 1000"
readiness = { exec = ["test", "-e", "DIR/ready"], period = "100ms" }
depends_on = ["db"]
"#,
    );
    let health = get(up.port, "/healthz").expect("an answer");
    assert_eq!(health.code, 200);
    assert!(health.body.starts_with("ok"), "{}", health.body);

    // `web` runs but its readiness probe fails: 503, naming it and why.
    let not_ready = wait_get(up.port, "/readyz", "web running, not ready", |a| {
        a.body.contains("readiness probe")
    });
    assert_eq!(not_ready.code, 503);
    assert_eq!(not_ready.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&not_ready.body).unwrap();
    assert_eq!(body["ready"], false);
    let listed = body["not_ready"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["process"], "web");
    assert_eq!(listed[0]["state"], "running");

    std::fs::write(up.dir.path().join("ready"), "").unwrap();
    let ready = wait_get(up.port, "/readyz", "ready", |a| a.code == 200);
    assert_eq!(
        serde_json::from_str::<Value>(&ready.body).unwrap(),
        serde_json::json!({ "ready": true })
    );

    for path in ["/", "/nope", "/metricsx", "/healthz/more"] {
        assert_eq!(get(up.port, path).expect("an answer").code, 404, "{path}");
    }
    let metrics = get(up.port, "/metrics").expect("an answer");
    assert_eq!(metrics.code, 200);
    assert_eq!(
        metrics.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    // A stopped process is not expected to be ready.
    assert!(up.cli(&["stop", "web"]).status.success());
    wait_get(up.port, "/readyz", "ready with web stopped", |a| {
        a.code == 200
    });
    assert!(up.terminate().success());
}

#[test]
fn readyz_names_what_is_not_ready_and_why() {
    let up = Up::start(
        r#"
[processes.crashy]
command = "exit 3"
restart = "always"
backoff = { initial = "10ms", max = "10ms" }
breaker = { max_restarts = 1, window = "60s", cooldown = "never" }

[processes.after]
command = "sleep 1000"
depends_on = { crashy = "completed" }
"#,
    );
    let answer = wait_get(up.port, "/readyz", "the breaker open", |a| {
        a.body.contains("circuit breaker")
    });
    assert_eq!(answer.code, 503);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    let reasons: BTreeMap<String, String> = body["not_ready"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["process"].as_str().unwrap().to_string(),
                p["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons["crashy"].contains("circuit breaker is open"),
        "{reasons:?}"
    );
    assert!(reasons["crashy"].contains("exited with 3"), "{reasons:?}");
    assert!(
        reasons["after"].contains("waiting for crashy"),
        "{reasons:?}"
    );
    assert!(up.terminate().success());
}

/// The scrape, parsed by a real Prometheus text-format parser.
fn scrape(port: u16) -> (String, prometheus_parse::Scrape) {
    let answer = get(port, "/metrics").expect("an answer");
    assert_eq!(answer.code, 200);
    let lines = answer.body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    (answer.body, parsed)
}

/// The value of one series: `name{labels}`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_follow_prometheus_conventions_for_every_process() {
    let up = Up::start(
        r#"
[processes.steady]
command = "sleep 1000"

[processes.crashy]
command = "exit 3"
restart = "always"
backoff = { initial = "10ms", max = "10ms" }
breaker = { max_restarts = 2, window = "60s", cooldown = "never" }
"#,
    );
    let crashy = up.wait_process("crashy", "the breaker open", |p| {
        p["state"] == "breaker_open"
    });
    up.wait_process("steady", "steady running", |p| p["state"] == "running");
    let (text, m) = scrape(up.port);
    let steady = [("process", "steady")];
    let crash = [("process", "crashy")];

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&m, "processcontrol_build_info", &[("version", version)]),
        Some(1.0)
    );
    assert_eq!(value(&m, "processcontrol_up", &steady), Some(1.0));
    assert_eq!(value(&m, "processcontrol_up", &crash), Some(0.0));
    assert_eq!(value(&m, "processcontrol_ready", &steady), Some(1.0));
    assert_eq!(value(&m, "processcontrol_ready", &crash), Some(0.0));
    // No limits configured: memory and CPU are there all the same, in base units.
    assert!(value(&m, "processcontrol_memory_rss_bytes", &steady).unwrap() > 100_000.0);
    assert!(value(&m, "processcontrol_cpu_seconds_total", &steady).unwrap() >= 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&m, "processcontrol_start_time_seconds", &steady).unwrap();
    assert!(started <= now && started > now - 60.0, "{started} vs {now}");
    assert_eq!(value(&m, "processcontrol_start_time_seconds", &crash), None);

    // Restarts by cause add up to what `status` shows, the breaker's trip included.
    let restarts = crashy["restarts"].as_u64().unwrap() as f64;
    assert!(restarts >= 2.0, "{crashy}");
    let total: f64 = m
        .samples
        .iter()
        .filter(|s| s.metric == "processcontrol_restarts_total")
        .filter(|s| s.labels.get("process") == Some("crashy"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => panic!("restarts_total is a counter"),
        })
        .sum();
    assert_eq!(total, restarts, "{text}");
    assert_eq!(
        value(
            &m,
            "processcontrol_restarts_total",
            &[("process", "crashy"), ("cause", "exited")]
        ),
        Some(restarts)
    );
    assert_eq!(
        value(
            &m,
            "processcontrol_restarts_total",
            &[("process", "steady"), ("cause", "exited")]
        ),
        Some(0.0)
    );
    // One-hot breaker state.
    for (state, v) in [("closed", 0.0), ("open", 1.0), ("half_open", 0.0)] {
        let labels = [("process", "crashy"), ("state", state)];
        assert_eq!(
            value(&m, "processcontrol_breaker_state", &labels),
            Some(v),
            "{state}"
        );
    }
    assert_eq!(
        value(&m, "processcontrol_last_exit_code", &crash),
        Some(3.0)
    );
    assert_eq!(value(&m, "processcontrol_last_exit_code", &steady), None);
    let limit = [("process", "steady"), ("resource", "memory")];
    assert_eq!(
        value(&m, "processcontrol_limit_exceeded_total", &limit),
        Some(0.0)
    );
    let probe = [("process", "steady"), ("probe", "liveness")];
    assert_eq!(
        value(&m, "processcontrol_probe_failures_total", &probe),
        Some(0.0)
    );
    // Gone: a percentage, and the half-open breaker as 0.5.
    assert!(!text.contains("cpu_percent"), "{text}");
    assert!(!text.contains("processcontrol_breaker_open"), "{text}");
    // Every family has HELP and TYPE, and counters end in _total.
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(text.contains(&format!("# HELP {} ", words[2])), "{line}");
        if words[3] == "counter" {
            assert!(words[2].ends_with("_total"), "{line}");
        }
    }
    promtool_check(&text);
    assert!(up.terminate().success());
}

/// `promtool check metrics`: Prometheus's own linter of the exposition format. scripts/test-all
/// installs it (Debian package `prometheus`); elsewhere the check says why it is skipped.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped the promtool check: cannot run promtool ({e}); install the Debian package `prometheus` (scripts/test-all does)");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_serves_the_same_endpoints() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["run", "--http", &format!(":{port}"), "--", "sleep", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_get(port, "/readyz", "ready", |a| a.code == 200);
    assert_eq!(ready.body.trim(), r#"{"ready":true}"#);
    assert_eq!(get(port, "/healthz").unwrap().code, 200);
    assert_eq!(get(port, "/elsewhere").unwrap().code, 404);
    let (_, m) = scrape(port);
    assert_eq!(
        value(&m, "processcontrol_up", &[("process", "sleep")]),
        Some(1.0)
    );
    terminate(&mut child);
}

#[test]
fn http_is_an_address_of_the_users_choice_and_metrics_its_alias() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pc.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[supervisor]\nhttp = \"0.0.0.0:{port}\"\n[processes.a]\ncommand = \"sleep 1000\"\n"
        ),
    )
    .unwrap();
    // Any address the user names, here every interface (reached through loopback).
    let mut child = Command::new(BIN)
        .args(["up", "-c"])
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_get(port, "/healthz", "the endpoint on 0.0.0.0", |a| {
        a.code == 200
    });
    assert!(terminate(&mut child).success());

    // --metrics is the older name of --http; a bare port means loopback.
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["up", "-c"])
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("t.sock"))
        .args(["--metrics", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_get(port, "/metrics", "metrics through --metrics", |a| {
        a.code == 200
    });
    assert!(terminate(&mut child).success());

    for (bad, why) in [
        ("localhost:80", "invalid address"),
        ("127.0.0.1:0", "port 0"),
    ] {
        let out = Command::new(BIN)
            .args(["run", "--http", bad, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--http") && err.contains(why), "{err}");
    }
}

/// Issue 14, point 6: any local user can connect. Before the cap, 300 idle connections took
/// the descriptors of a daemon limited to 128: `status` went unanswered, spawns failed, and the
/// accept loop spun on EMFILE.
#[test]
fn a_connection_flood_neither_starves_the_daemon_nor_lasts() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let up = Up::start_with(
        "[processes.a]\ncommand = \"sleep 1000\"\n",
        &["prlimit", "--nofile=128:128"],
    );
    let first = up.wait_process("a", "a running", |p| p["state"] == "running");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], up.port));
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
        .collect();
    assert!(held.len() >= 200, "only {} connections opened", held.len());
    // The daemon still answers on its control socket at once (before the cap, the answer
    // waited for the flood's connections to time out, 30 s) and can still spawn.
    let asked = Instant::now();
    assert!(
        up.cli(&["status"]).status.success(),
        "status during the flood"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "status took {:?}: the daemon ran out of descriptors",
        asked.elapsed()
    );
    assert!(
        up.cli(&["restart", "a"]).status.success(),
        "restart during the flood"
    );
    up.wait_process("a", "a restarted", |p| {
        p["state"] == "running" && p["pid"] != first["pid"]
    });
    // Idle connections are closed by the header timeout (5 s), not held for ever.
    let mut first_held = held.remove(0);
    first_held.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    match first_held.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("an idle connection was not closed: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "held for {:?}",
        started.elapsed()
    );
    drop(held);
    wait_get(up.port, "/healthz", "healthz after the flood", |a| {
        a.code == 200
    });
    assert!(up.terminate().success());
}
