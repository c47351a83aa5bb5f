//! Arbitrary bytes as request lines on a real control socket: the adapters' `Server`, bound
//! once per fuzzing process, with a handler that records every request it is given. The
//! handler is the only way a request reaches the daemon's state, so "state unchanged by an
//! invalid line" means: the handler is never called for one. Fails on a panic, on a line
//! without its one answer, on an invalid line that gets anything but an error answer or that
//! reaches the handler, and on a valid line that does not reach it as the request it says.
#![no_main]

use std::future::pending;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use processcontrol_adapters::control::{Frame, Handler, Reply, Request, Server, MAX_REQUEST_LINE};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;

/// The commands of the protocol (docs: adapters/src/control/mod.rs).
const COMMANDS: [&str; 10] = [
    "status", "start", "stop", "restart", "kill", "reset", "logs", "events", "reload",
    "shutdown",
];

#[derive(Default)]
struct Recorder(Mutex<Vec<Request>>);

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, request: Request) -> Reply {
        self.0.lock().unwrap().push(request);
        Reply::ok(Value::Null)
    }
}

struct Daemon {
    runtime: Runtime,
    socket: PathBuf,
    recorder: Arc<Recorder>,
}

fn daemon() -> &'static Daemon {
    static DAEMON: OnceLock<Daemon> = OnceLock::new();
    DAEMON.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = std::env::temp_dir().join(format!("pc-fuzz-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let socket = dir.join("control.sock");
        let recorder = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler> = recorder.clone();
        let server = runtime
            .block_on(Server::bind(&socket))
            .expect("the control socket binds");
        runtime.spawn(server.run(handler, pending::<()>()));
        Daemon {
            runtime,
            socket,
            recorder,
        }
    })
}

/// What the line must get, judged without the server's parser: `None` for a blank line
/// (no answer); `Some(false)` where it certainly is not a request (an error answer is due);
/// `Some(true)` where it may be one (the server decides; the answer is checked against the
/// handler's record).
fn expectation(line: &[u8]) -> Option<bool> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(false);
    };
    if text.trim().is_empty() {
        return None;
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text.trim()) else {
        return Some(false);
    };
    Some(matches!(map.get("cmd"), Some(Value::String(c)) if COMMANDS.contains(&c.as_str())))
}

fuzz_target!(|data: &[u8]| {
    // Longer inputs could hold a line over the limit, which closes the connection: that
    // path has its own tests; here every line is read.
    if data.len() > MAX_REQUEST_LINE {
        return;
    }
    let daemon = daemon();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if data.ends_with(b"\n") {
        lines.pop();
    }
    let before = daemon.recorder.0.lock().unwrap().len();
    let answers: Vec<Frame> = daemon.runtime.block_on(async {
        let mut stream = UnixStream::connect(&daemon.socket).await.expect("connects");
        stream.write_all(data).await.expect("writes");
        stream.shutdown().await.expect("half-closes");
        let mut answers = Vec::new();
        let mut reader = BufReader::new(stream).lines();
        while let Some(line) = reader.next_line().await.expect("reads the answers") {
            answers.push(Frame::parse(&line).expect("every answer is a frame"));
        }
        answers
    });
    let handled: Vec<Request> = daemon.recorder.0.lock().unwrap().drain(before..).collect();

    let mut answers = answers.into_iter();
    let mut handled = handled.into_iter();
    for line in lines {
        let Some(maybe_valid) = expectation(line) else {
            continue;
        };
        let answer = answers.next().unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(line)));
        match answer {
            Frame::Error(message) => assert!(!message.is_empty(), "an empty error message"),
            Frame::Result(Value::Null) => {
                assert!(maybe_valid, "{:?} is no request, yet it was handled", String::from_utf8_lossy(line));
                let request = handled.next().expect("a handled request was recorded");
                // The request is what the line says: every field it carries is in the line.
                let text = std::str::from_utf8(line).unwrap();
                let Value::Object(said) = serde_json::from_str::<Value>(text.trim()).unwrap() else {
                    unreachable!("checked by expectation")
                };
                let Value::Object(got) = serde_json::to_value(&request).unwrap() else {
                    panic!("a request serializes to an object")
                };
                for (key, value) in &got {
                    let given = said.get(key).unwrap_or(&Value::Null);
                    let implied = matches!(value, Value::Bool(false)) && given.is_null();
                    assert!(implied || given == value, "{key}: line says {given}, handler got {value}");
                }
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(answers.next().is_none(), "more answers than request lines");
    assert!(handled.next().is_none(), "the handler got more requests than were answered");
});
