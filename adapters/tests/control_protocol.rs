//! The control protocol's messages and their one-line JSON forms, without sockets.

use processcontrol_adapters::control::{Frame, Request, Response};
use serde_json::{json, Value};

fn parse(line: &str) -> Result<Request, String> {
    Request::parse(line)
}

#[test]
fn requests_are_tagged_by_cmd_with_defaults() {
    let cases = [
        (r#"{"cmd":"status"}"#, Request::Status { name: None }),
        (
            r#"{"cmd":"status","name":"web"}"#,
            Request::Status {
                name: Some("web".into()),
            },
        ),
        (
            r#"{"cmd":"start","all":true}"#,
            Request::Start {
                name: None,
                all: true,
                wait_ms: None,
            },
        ),
        (
            r#"{"cmd":"stop","name":"web","grace_ms":500}"#,
            Request::Stop {
                name: Some("web".into()),
                all: false,
                grace_ms: Some(500),
                wait_ms: None,
            },
        ),
        (
            r#"{"cmd":"stop","name":null,"all":true,"grace_ms":null}"#,
            Request::Stop {
                name: None,
                all: true,
                grace_ms: None,
                wait_ms: None,
            },
        ),
        (
            r#"{"cmd":"restart","name":"web"}"#,
            Request::Restart {
                name: Some("web".into()),
                all: false,
                force: false,
                wait_ms: None,
            },
        ),
        (
            r#"{"cmd":"restart","all":true,"force":true,"wait_ms":30000}"#,
            Request::Restart {
                name: None,
                all: true,
                force: true,
                wait_ms: Some(30_000),
            },
        ),
        (
            r#"{"cmd":"kill","name":"web"}"#,
            Request::Kill {
                name: "web".into(),
                wait_ms: None,
            },
        ),
        (
            r#"{"cmd":"reset","name":"web","wait_ms":0}"#,
            Request::Reset {
                name: "web".into(),
                wait_ms: Some(0),
            },
        ),
        (
            r#"{"cmd":"signal","name":"web","signal":"HUP"}"#,
            Request::Signal {
                name: "web".into(),
                signal: "HUP".into(),
            },
        ),
        (
            r#"{"cmd":"logs","name":"web","lines":100}"#,
            Request::Logs {
                name: "web".into(),
                follow: false,
                lines: Some(100),
            },
        ),
        (
            r#"{"cmd":"logs","name":"web","follow":true}"#,
            Request::Logs {
                name: "web".into(),
                follow: true,
                lines: None,
            },
        ),
        (
            r#"{"cmd":"events","follow":true}"#,
            Request::Events {
                follow: true,
                lines: None,
            },
        ),
        (
            r#"{"cmd":"events"}"#,
            Request::Events {
                follow: false,
                lines: None,
            },
        ),
        (r#"{"cmd":"reload"}"#, Request::Reload { wait_ms: None }),
        (
            r#"{"cmd":"shutdown","wait_ms":5000}"#,
            Request::Shutdown {
                wait_ms: Some(5000),
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line).unwrap(), expected, "{line}");
        // And back: the same request, whatever the field order.
        let again = expected.to_line();
        assert_eq!(again.last(), Some(&b'\n'));
        let again = std::str::from_utf8(&again).unwrap().trim_end();
        assert!(again.starts_with(r#"{"cmd":""#), "{again}");
        assert_eq!(parse(again).unwrap(), expected);
    }
    assert_eq!(
        String::from_utf8(
            Request::Stop {
                name: Some("web".into()),
                all: false,
                grace_ms: None,
                wait_ms: None,
            }
            .to_line()
        )
        .unwrap(),
        "{\"cmd\":\"stop\",\"name\":\"web\",\"all\":false}\n"
    );
}

#[test]
fn bad_requests_are_refused() {
    for line in [
        r#"{"cmd":"explode"}"#,
        r#"{"name":"web"}"#,
        r#"{"cmd":"kill"}"#,
        r#"{"cmd":"signal","name":"web"}"#,
        r#"{"cmd":"logs","follow":true}"#,
        r#"{"cmd":"stop","grace_ms":-5}"#,
        r#"{"cmd":"start","all":"yes"}"#,
        r#"["status"]"#,
        r#"  ["restart", "web"]"#,
        "3",
        "",
    ] {
        let error = parse(line).expect_err(line);
        assert!(error.starts_with("malformed request: "), "{error}");
    }
}

#[test]
fn follows_says_which_requests_stream() {
    assert!(Request::Events {
        follow: true,
        lines: None
    }
    .follows());
    assert!(Request::Logs {
        name: "a".into(),
        follow: true,
        lines: None
    }
    .follows());
    assert!(!Request::Events {
        follow: false,
        lines: None
    }
    .follows());
    assert!(!Request::Status { name: None }.follows());
    // A command that waits answers with its outcomes as a stream.
    assert!(Request::Kill {
        name: "a".into(),
        wait_ms: Some(0)
    }
    .follows());
    assert!(!Request::Kill {
        name: "a".into(),
        wait_ms: None
    }
    .follows());
}

#[test]
fn frames_have_one_line_each_with_ok_first() {
    let cases = [
        (
            Frame::Result(json!({"a": [1, 2]})),
            r#"{"ok":true,"result":{"a":[1,2]}}"#,
        ),
        (Frame::Result(Value::Null), r#"{"ok":true,"result":null}"#),
        (
            Frame::Error("no process named \"web\"\nreally".into()),
            r#"{"ok":false,"error":"no process named \"web\"\nreally"}"#,
        ),
        (Frame::StreamStart, r#"{"ok":true,"stream":true}"#),
        (Frame::Line(json!("text")), r#"{"ok":true,"line":"text"}"#),
        (Frame::End, r#"{"ok":true,"end":true}"#),
    ];
    for (frame, line) in cases {
        let bytes = frame.to_line();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), format!("{line}\n"));
        assert_eq!(Frame::parse(line).unwrap(), frame);
        assert_eq!(
            serde_json::from_str::<Value>(line).unwrap(),
            frame.to_value()
        );
    }
}

#[test]
fn frames_that_make_no_sense_are_errors() {
    for line in [
        "",
        "nope",
        "[]",
        r#"{"result":1}"#,
        r#"{"ok":"yes","result":1}"#,
        r#"{"ok":false}"#,
        r#"{"ok":false,"error":3}"#,
        r#"{"ok":true}"#,
        r#"{"ok":true,"stream":false}"#,
    ] {
        assert!(Frame::parse(line).is_err(), "{line} was accepted");
    }
}

#[test]
fn responses_become_results() {
    assert_eq!(Response::Ok(json!(1)).into_result(), Ok(json!(1)));
    assert_eq!(
        Response::Error("no".into()).into_result(),
        Err("no".to_string())
    );
    assert_eq!(
        Response::from(Err("x".to_string())),
        Response::Error("x".into())
    );
}
