//! The messages of the control protocol and their one-line JSON forms (see the module docs
//! of [`crate::control`] for the wire format).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest request line the daemon reads, in bytes, newline excluded. Requests are tiny;
/// the bound keeps a broken or hostile client from making the daemon buffer without end.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// One request of the CLI to the daemon: `{"cmd":"<kind>", ...fields}` on one line.
/// Optional fields may be left out or `null`; flags may be left out for `false`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The status of one process, or of all of them without a name.
    Status {
        /// The process; all of them if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Starts one process, or all of them with `all`.
    Start {
        /// The process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Every process (instead of `name`).
        #[serde(default)]
        all: bool,
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Stops one process, or all of them with `all`, gracefully.
    Stop {
        /// The process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Every process (instead of `name`).
        #[serde(default)]
        all: bool,
        /// The grace period before the kill, in milliseconds; the policy's if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_ms: Option<u64>,
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Replaces the running instance of one process, or restarts all of them with `all`
    /// (stopped dependents first, started in dependency order).
    Restart {
        /// The process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Every process (instead of `name`).
        #[serde(default)]
        all: bool,
        /// Close the breaker first (an operator's override of a full restart window).
        #[serde(default)]
        force: bool,
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Kills every process of a process's instance now.
    Kill {
        /// The process.
        name: String,
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Closes a process's circuit breaker.
    Reset {
        /// The process.
        name: String,
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Passes a signal to every process of a process's current instance.
    Signal {
        /// The process.
        name: String,
        /// The signal: `HUP`, `SIGHUP` or `hup`.
        signal: String,
    },
    /// The last lines of a process's output, and with `follow` every new one.
    Logs {
        /// The process.
        name: String,
        /// Keep sending new lines until the client leaves.
        #[serde(default)]
        follow: bool,
        /// How many past lines; the daemon's default if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<usize>,
    },
    /// Events: with `follow`, every new one until the client leaves.
    Events {
        /// Keep sending new events until the client leaves.
        #[serde(default)]
        follow: bool,
        /// How many recent events come first (all the daemon keeps if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<usize>,
    },
    /// Re-reads the configuration.
    Reload {
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Stops every process and the daemon.
    Shutdown {
        /// How to answer: see [`Request::waits`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
}

impl Request {
    /// Whether the request asks for a stream (`logs` or `events` with `follow`, a command
    /// that waits); the CLI uses [`request_stream`](super::request_stream) for these.
    pub fn follows(&self) -> bool {
        matches!(
            self,
            Request::Logs { follow: true, .. } | Request::Events { follow: true, .. }
        ) || self.waits().is_some()
    }

    /// How long the client waits for a command's outcome, in milliseconds, if it asked to.
    ///
    /// A command without `wait_ms` is answered once it is handed over, with the names it
    /// concerns. With `wait_ms`, the answer is a stream: one outcome per process as soon as
    /// it is known (the target state reached, or shown not to be reached: a breaker that
    /// opened, a failed spawn, an exit), each at the latest when `wait_ms` has passed (then a
    /// timeout); `wait_ms: 0` says only what is known at once. See docs/cli.md for the items.
    pub fn waits(&self) -> Option<u64> {
        match self {
            Request::Start { wait_ms, .. }
            | Request::Stop { wait_ms, .. }
            | Request::Restart { wait_ms, .. }
            | Request::Kill { wait_ms, .. }
            | Request::Reset { wait_ms, .. }
            | Request::Reload { wait_ms }
            | Request::Shutdown { wait_ms } => *wait_ms,
            _ => None,
        }
    }

    /// Reads one request line (without its newline), as the daemon does; the error is
    /// the message the client gets. Only JSON objects are requests (serde alone would also
    /// take `["status"]`).
    pub fn parse(line: &str) -> Result<Request, String> {
        if !line.trim_start().starts_with('{') {
            return Err("malformed request: expected a JSON object".into());
        }
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))
    }

    /// The request as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // A request holds only strings, numbers and flags: serializing it cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// The answer to one request that is not a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// `{"ok":true,"result":...}`: the request succeeded, with this result.
    Ok(Value),
    /// `{"ok":false,"error":"..."}`: it failed, for this reason (meant for people).
    Error(String),
}

impl Response {
    /// The result, or the daemon's error message.
    pub fn into_result(self) -> Result<Value, String> {
        match self {
            Response::Ok(v) => Ok(v),
            Response::Error(e) => Err(e),
        }
    }
}

impl From<Result<Value, String>> for Response {
    fn from(r: Result<Value, String>) -> Self {
        match r {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e),
        }
    }
}

/// One line the daemon sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// `{"ok":true,"result":<json>}`: a request succeeded.
    Result(Value),
    /// `{"ok":false,"error":"<message>"}`: a request failed, a line was not a request, the
    /// peer may not talk, or a stream was cut short.
    Error(String),
    /// `{"ok":true,"stream":true}`: the request was accepted and a stream follows.
    StreamStart,
    /// `{"ok":true,"line":<json>}`: one item of a stream.
    Line(Value),
    /// `{"ok":true,"end":true}`: the stream ended normally.
    End,
}

impl Frame {
    /// The start of a [`Frame::Result`] line, up to its value: an answer written as it is
    /// serialized begins with it.
    pub(crate) const RESULT_HEAD: &'static [u8] = br#"{"ok":true,"result":"#;
    /// The end of every line, after its value.
    pub(crate) const TAIL: &'static [u8] = b"}\n";

    /// The frame as a JSON object (for messages and tests; [`Frame::to_line`] is the wire
    /// form).
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        let ok = !matches!(self, Frame::Error(_));
        map.insert("ok".into(), Value::Bool(ok));
        let (key, value) = match self {
            Frame::Result(v) => ("result", v.clone()),
            Frame::Error(e) => ("error", Value::String(e.clone())),
            Frame::StreamStart => ("stream", Value::Bool(true)),
            Frame::Line(v) => ("line", v.clone()),
            Frame::End => ("end", Value::Bool(true)),
        };
        map.insert(key.into(), value);
        Value::Object(map)
    }

    /// The frame as one line of JSON, newline included, with `ok` first.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = Vec::new();
        let (head, value): (&[u8], Option<&Value>) = match self {
            Frame::Result(v) => (Frame::RESULT_HEAD, Some(v)),
            Frame::Error(e) => {
                line.extend_from_slice(br#"{"ok":false,"error":"#);
                // Serializing a string into a vector cannot fail.
                let _ = serde_json::to_writer(&mut line, e);
                line.extend_from_slice(Frame::TAIL);
                return line;
            }
            Frame::StreamStart => (br#"{"ok":true,"stream":true"#, None),
            Frame::Line(v) => (br#"{"ok":true,"line":"#, Some(v)),
            Frame::End => (br#"{"ok":true,"end":true"#, None),
        };
        line.extend_from_slice(head);
        if let Some(v) = value {
            // Serializing a `Value` into a vector cannot fail: its map keys are strings.
            let _ = serde_json::to_writer(&mut line, v);
        }
        line.extend_from_slice(Frame::TAIL);
        line
    }

    /// Reads one line (without its newline); the error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Frame, String> {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut map) = value else {
            return Err("not a JSON object".into());
        };
        match map.get("ok") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                return match map.remove("error") {
                    Some(Value::String(e)) => Ok(Frame::Error(e)),
                    _ => Err("an error without an \"error\" string".into()),
                };
            }
            _ => return Err("no boolean \"ok\"".into()),
        }
        if let Some(v) = map.remove("result") {
            Ok(Frame::Result(v))
        } else if let Some(v) = map.remove("line") {
            Ok(Frame::Line(v))
        } else if map.get("stream") == Some(&Value::Bool(true)) {
            Ok(Frame::StreamStart)
        } else if map.get("end") == Some(&Value::Bool(true)) {
            Ok(Frame::End)
        } else {
            Err("none of \"result\", \"line\", \"stream\" or \"end\"".into())
        }
    }
}
