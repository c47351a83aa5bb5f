//! The control plane of `processcontrol up`: a Unix socket on which the CLI asks the
//! running daemon for status, logs and events, and tells it to start, stop or shut down.
//!
//! This module is transport and protocol only. What a request *does* is decided by the
//! daemon, which implements [`Handler`]; [`Server`] (or [`serve`]) carries requests to it
//! and its replies back, and [`client`] is what the CLI uses to talk to it.
//!
//! # The socket
//!
//! * Path: [`default_socket_path`] — `$PROCESSCONTROL_SOCKET`, else
//!   `$XDG_RUNTIME_DIR/processcontrol.sock`, else `/run/processcontrol/control.sock` for root,
//!   else `/tmp/processcontrol-<uid>/control.sock`. The last two directories are created by
//!   the daemon (`0711`) and checked with `lstat` (a directory, not a symlink, ours, writable
//!   by nobody else): one prepared by another user is refused with an error, never used.
//! * Mode `0600`, with no window in which it is wider: the socket is bound inside a fresh
//!   private (`0700`) directory next to its final path, chmod-ed to `0600` there, and only
//!   then renamed into place (see [`Server::bind`] for why not `umask`).
//! * A live socket is never replaced ("another daemon is listening on PATH"); a stale one
//!   (a socket file nobody listens on) is. The socket is removed when the server stops,
//!   but only if the file at the path is still the one it created.
//! * Every connection's peer is checked with `SO_PEERCRED`: only the daemon's own uid and
//!   root may talk. Anyone else gets one error line, the connection is closed and a warning
//!   is logged. The `0600` mode already keeps other users out; the check is the second
//!   lock, for sockets reached through an inherited descriptor or a privileged peer.
//!
//! # Wire format
//!
//! Line-delimited JSON in UTF-8: every message is one JSON value on one line ending in
//! `\n`. The client sends one [`Request`] per line, tagged by `cmd` (snake_case); optional
//! fields and `false` flags may be left out:
//!
//! ```text
//! {"cmd":"status"}                          {"cmd":"status","name":"web"}
//! {"cmd":"start","name":"web"}              {"cmd":"start","all":true}
//! {"cmd":"stop","name":"web","grace_ms":500} {"cmd":"stop","all":true}
//! {"cmd":"restart","name":"web"}            {"cmd":"kill","name":"web"}
//! {"cmd":"reset","name":"web"}              {"cmd":"reload"}   {"cmd":"shutdown"}
//! {"cmd":"restart","all":true,"force":true} {"cmd":"signal","name":"web","signal":"HUP"}
//! {"cmd":"logs","name":"web","lines":100}   {"cmd":"logs","name":"web","follow":true}
//! {"cmd":"events","follow":true}            {"cmd":"restart","name":"web","wait_ms":30000}
//! ```
//!
//! A command (`start`, `stop`, `restart`, `kill`, `reset`, `reload`, `shutdown`) with
//! `wait_ms` is answered with a stream: one outcome per process as soon as the daemon sees it
//! (see [`crate::supervise::wait`]), at the latest after `wait_ms` (a timeout); `wait_ms: 0`
//! tells only what is known at once. Without `wait_ms` it is answered at once with the names
//! it concerns, `{"processes":["web"]}`. The CLI always sends `wait_ms`.
//!
//! The daemon answers every request with exactly one line ([`Frame`]):
//!
//! ```text
//! {"ok":true,"result":<any JSON>}           the request succeeded
//! {"ok":false,"error":"no process named web"}   it failed, or the line was not a request
//! ```
//!
//! A result that lists many items (the status of every process, log lines, events) is
//! written as its items are serialized ([`Reply::List`]), in chunks, each within
//! [`ServerConfig::write_timeout`]: the line is the same, but the daemon never holds it whole
//! for a client that reads slowly.
//!
//! Or, when the handler answers with a stream (follow modes), with a stream:
//!
//! ```text
//! {"ok":true,"stream":true}                 header: the request was accepted
//! {"ok":true,"line":<any JSON>}             one per item, as many as the handler sends
//! {"ok":true,"end":true}                    the handler ended the stream
//! ```
//!
//! A stream may instead end with `{"ok":false,"error":"..."}` (the daemon is shutting
//! down) or with the connection closing (the daemon died). The client ends a stream by
//! closing the connection, or its writing half: the daemon then drops the stream's
//! receiver, so the handler's sender sees it closed. A stream is the last exchange on its
//! connection; after plain answers the client may send further requests on the same
//! connection.
//!
//! Bad input never disturbs the daemon or other clients: a line that is not JSON, not a
//! request or not UTF-8 gets an error line and the connection carries on; a line over
//! [`MAX_REQUEST_LINE`] bytes, or a request whose newline does not arrive within
//! [`ServerConfig::request_timeout`] of its first byte, gets an error line and the
//! connection is closed. A connection idle for [`ServerConfig::idle_timeout`] is closed,
//! at most [`ServerConfig::max_connections`] are served at once, and every connection
//! task ends when its client leaves or the server stops.

pub mod client;
pub mod protocol;
pub mod server;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use client::{request, request_stream, ClientError, Connection, ResponseStream, Streamed};
pub use protocol::{Frame, Request, Response, MAX_REQUEST_LINE};
pub use server::{
    peer_allowed, peer_credentials, serve, ControlError, Handler, Items, PeerCredentials, Reply,
    Server, ServerConfig,
};

/// The environment variable that names the control socket.
pub const SOCKET_ENV: &str = "PROCESSCONTROL_SOCKET";

/// Where the daemon listens and the CLI connects, unless told otherwise:
/// `$PROCESSCONTROL_SOCKET`, else `$XDG_RUNTIME_DIR/processcontrol.sock`, else
/// `/run/processcontrol/control.sock` for root, else `/tmp/processcontrol-<uid>/control.sock`
/// (with the effective uid). Empty variables count as unset, and so does a relative
/// `XDG_RUNTIME_DIR` (the XDG spec says to ignore it).
pub fn default_socket_path() -> PathBuf {
    socket_path_from(
        std::env::var_os(SOCKET_ENV),
        std::env::var_os("XDG_RUNTIME_DIR"),
        nix::unistd::geteuid().as_raw(),
    )
}

/// The directory of the default socket when it is one the daemon must create and check
/// itself (not the user's `XDG_RUNTIME_DIR`).
fn fallback_dir(uid: u32) -> PathBuf {
    if uid == 0 {
        PathBuf::from("/run/processcontrol")
    } else {
        PathBuf::from(format!("/tmp/processcontrol-{uid}"))
    }
}

/// Creates and checks the socket's directory when it is the fallback one (see
/// [`default_socket_path`]); other directories are the user's choice and must exist.
pub(crate) fn prepare_dir(path: &Path) -> std::io::Result<()> {
    let fallback = fallback_dir(nix::unistd::geteuid().as_raw());
    if path.parent() == Some(fallback.as_path()) {
        crate::rundir::ensure_private(&fallback)?;
    }
    Ok(())
}

fn socket_path_from(socket: Option<OsString>, runtime: Option<OsString>, uid: u32) -> PathBuf {
    if let Some(path) = socket.filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(dir) = runtime.filter(|d| Path::new(d).is_absolute()) {
        return Path::new(&dir).join("processcontrol.sock");
    }
    fallback_dir(uid).join("control.sock")
}
