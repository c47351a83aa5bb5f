//! `processcontrol up` driven from a test: the real binary on a config file written to a
//! temporary directory, its control socket, bounded waits on what the clients answer.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");
/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    pub fn start(config: &str) -> Daemon {
        Daemon::spawn(config, false)
    }

    /// A daemon whose stderr (its narration) goes to a file, read by [`Daemon::narration`].
    pub fn start_narrating(config: &str) -> Daemon {
        Daemon::spawn(config, true)
    }

    /// What the daemon wrote on stderr so far (for [`Daemon::start_narrating`]).
    pub fn narration(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.stderr")).unwrap_or_default()
    }

    fn spawn(config: &str, narrating: bool) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pc.sock");
        let path = dir.path().join("processcontrol.toml");
        std::fs::write(&path, config).unwrap();
        let stderr = if narrating {
            Stdio::from(std::fs::File::create(dir.path().join("up.stderr")).unwrap())
        } else {
            Stdio::inherit()
        };
        let child = Command::new(BIN)
            .args(["up", "-c"])
            .arg(&path)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            dir,
            socket,
            config: path,
        };
        d.wait("the socket", |_| true);
        d
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("PROCESSCONTROL_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    pub fn status(&self) -> Option<Vec<Value>> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    }

    pub fn process(&self, name: &str) -> Option<Value> {
        self.status()?.into_iter().find(|p| p["name"] == name)
    }

    /// Polls `status` until `f` holds (the CLI has no push channel but `events -f`).
    pub fn wait(&self, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.status() {
                if f(&status) {
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        let status = self.wait(&format!("{name} {state}"), |s| {
            s.iter().any(|p| p["name"] == name && p["state"] == state)
        });
        status.into_iter().find(|p| p["name"] == name).unwrap()
    }

    pub fn events(&self) -> Vec<Value> {
        let out = self.cli(&["events"]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn stop(mut self) -> (i32, Vec<Value>) {
        let events = self.events();
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), events);
            }
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `f` holds for the file's contents (a missing file reads as empty): how a test
/// learns what a supervised shell script did. Bounded by [`WAIT`].
pub fn wait_file(path: &Path, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if f(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} in {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
