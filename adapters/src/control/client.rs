//! The CLI's side: connects to the daemon's socket, sends requests and reads answers.
//!
//! No call here has a timeout of its own: a wedged daemon makes a call wait, and the CLI
//! decides how long it is willing to (`tokio::time::timeout`, or Ctrl-C).

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Frame, Request, Response};
use super::server::{peer_allowed, peer_credentials};

/// Longest line read from the daemon: a generous bound for answers such as a long log tail,
/// so that something else listening on the path cannot make the client buffer without end.
const MAX_RESPONSE_LINE: usize = 64 << 20;

/// Why a request got no answer from the daemon. The daemon's own refusals (an unknown
/// process, say) are not errors here but [`Response::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the path (no socket file, or a stale one): the daemon is not
    /// running, or runs with another socket path.
    #[error("no processcontrol daemon is listening on {} (is `processcontrol up` running?)", path.display())]
    NoDaemon {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket's mode shuts this user out: it belongs to another user's daemon.
    #[error("permission denied connecting to {}: the daemon there belongs to another user", path.display())]
    PermissionDenied {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The process listening on the path runs as another user, not as this one or root, so
    /// its answers cannot be trusted: anyone may create a socket in a shared directory such
    /// as `/tmp`. (Root too trusts only its own daemons.)
    #[error("the process listening on {} runs as uid {uid}, neither this user nor root; not talking to it", path.display())]
    UntrustedDaemon {
        /// The socket path.
        path: PathBuf,
        /// The listener's uid.
        uid: u32,
    },
    /// Connecting, sending or reading failed.
    #[error("the control connection to {} failed: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The daemon closed the connection before answering (it stopped, or crashed).
    #[error("the daemon closed the connection without answering")]
    Closed,
    /// The daemon sent a line that is not a valid answer here: a different program, or a
    /// different version of the protocol.
    #[error("the daemon sent something unexpected: {0}")]
    Protocol(String),
    /// The daemon answered with a stream where one answer was expected: the request needs
    /// [`request_stream`].
    #[error("the daemon answered with a stream; use request_stream for this request")]
    UnexpectedStream,
    /// The daemon cut a stream short, with this reason (say, it is shutting down).
    #[error("the daemon ended the stream: {0}")]
    StreamEnded(String),
}

/// Sends one request to the daemon on `path` and returns its answer. For requests that may
/// answer with a stream (`logs`/`events` with `follow`), use [`request_stream`].
pub async fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    Connection::connect(path).await?.request(req).await
}

/// Sends one request that may be answered with a stream.
pub async fn request_stream(path: &Path, req: &Request) -> Result<Streamed, ClientError> {
    Connection::connect(path).await?.request_stream(req).await
}

/// How the daemon answered a request sent with [`request_stream`].
#[derive(Debug)]
pub enum Streamed {
    /// One answer: an error (no such process, say), or a result for a request that does
    /// not stream.
    Response(Response),
    /// The request was accepted and its items follow.
    Stream(ResponseStream),
}

/// A connection to the daemon, for several requests in a row.
#[derive(Debug)]
pub struct Connection {
    path: PathBuf,
    stream: BufReader<UnixStream>,
    line: Vec<u8>,
}

impl Connection {
    /// Connects to the daemon on `path`, and checks (with `SO_PEERCRED`) that it runs as
    /// this user or as root.
    pub async fn connect(path: &Path) -> Result<Connection, ClientError> {
        let stream = match UnixStream::connect(path).await {
            Ok(stream) => stream,
            Err(e) => {
                return Err(match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        ClientError::NoDaemon { path: path.into() }
                    }
                    io::ErrorKind::PermissionDenied => {
                        ClientError::PermissionDenied { path: path.into() }
                    }
                    _ => ClientError::Io {
                        path: path.into(),
                        source: e,
                    },
                })
            }
        };
        let daemon = peer_credentials(&stream).map_err(|e| ClientError::Io {
            path: path.into(),
            source: e,
        })?;
        let me = nix::unistd::geteuid().as_raw();
        if !peer_allowed(daemon.uid, me) {
            return Err(ClientError::UntrustedDaemon {
                path: path.into(),
                uid: daemon.uid,
            });
        }
        Ok(Connection {
            path: path.into(),
            stream: BufReader::new(stream),
            line: Vec::new(),
        })
    }

    /// Sends one request and returns its answer; the connection stays usable.
    pub async fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        match self.exchange(req).await? {
            Frame::Result(v) => Ok(Response::Ok(v)),
            Frame::Error(e) => Ok(Response::Error(e)),
            Frame::StreamStart => Err(ClientError::UnexpectedStream),
            other => Err(ClientError::Protocol(format!(
                "expected an answer, got {}",
                other.to_value()
            ))),
        }
    }

    /// Sends one request that may be answered with a stream; a stream takes the connection.
    pub async fn request_stream(mut self, req: &Request) -> Result<Streamed, ClientError> {
        match self.exchange(req).await? {
            Frame::Result(v) => Ok(Streamed::Response(Response::Ok(v))),
            Frame::Error(e) => Ok(Streamed::Response(Response::Error(e))),
            Frame::StreamStart => Ok(Streamed::Stream(ResponseStream {
                conn: self,
                done: false,
            })),
            other => Err(ClientError::Protocol(format!(
                "expected an answer, got {}",
                other.to_value()
            ))),
        }
    }

    /// Sends a request and reads the first line of its answer. If sending fails because
    /// the daemon already closed the connection, its parting line (a refusal) is returned.
    async fn exchange(&mut self, req: &Request) -> Result<Frame, ClientError> {
        if let Err(e) = self.stream.get_mut().write_all(&req.to_line()).await {
            return match self.read_frame().await {
                Ok(frame @ Frame::Error(_)) => Ok(frame),
                _ => Err(self.io(e)),
            };
        }
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> Result<Frame, ClientError> {
        self.line.clear();
        let limit = MAX_RESPONSE_LINE as u64 + 1;
        let read = (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .await;
        if let Err(e) = read {
            return Err(self.io(e));
        }
        match self.line.last() {
            None => return Err(ClientError::Closed),
            Some(b'\n') => {
                self.line.pop();
            }
            Some(_) if self.line.len() > MAX_RESPONSE_LINE => {
                return Err(ClientError::Protocol(format!(
                    "a line longer than {MAX_RESPONSE_LINE} bytes"
                )))
            }
            Some(_) => return Err(ClientError::Closed),
        }
        let text = std::str::from_utf8(&self.line)
            .map_err(|_| ClientError::Protocol("a line that is not UTF-8".into()))?;
        Frame::parse(text).map_err(ClientError::Protocol)
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// The items of a stream, as the daemon sends them. Dropping it closes the connection,
/// which ends the stream on the daemon's side.
#[derive(Debug)]
pub struct ResponseStream {
    conn: Connection,
    done: bool,
}

impl ResponseStream {
    /// The next item; `None` once the daemon ended the stream. Fails if the daemon cut it
    /// short ([`ClientError::StreamEnded`]) or the connection broke.
    pub async fn next(&mut self) -> Result<Option<Value>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let frame = self.conn.read_frame().await;
        if !matches!(frame, Ok(Frame::Line(_))) {
            self.done = true;
        }
        match frame? {
            Frame::Line(v) => Ok(Some(v)),
            Frame::End => Ok(None),
            Frame::Error(e) => Err(ClientError::StreamEnded(e)),
            other => Err(ClientError::Protocol(format!(
                "expected a stream item, got {}",
                other.to_value()
            ))),
        }
    }
}
