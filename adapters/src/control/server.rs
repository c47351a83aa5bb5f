//! The daemon's side: binds the control socket, checks every peer, reads requests, hands
//! them to a [`Handler`] and writes its replies back.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::protocol::{Frame, Request, MAX_REQUEST_LINE};

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 107;

/// How long a refusal line may take to write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long to wait before accepting again after `accept` failed (say, out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bytes of a [`Reply::List`] gathered before they are written: with one item, the most of
/// such an answer a connection holds at a time.
const LIST_CHUNK: usize = 16 * 1024;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A daemon already answers on the path: replacing its socket would cut it off from
    /// every client, so the second daemon must not start.
    #[error("another daemon is listening on {}", path.display())]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is at the path: it may be a user's file, which the
    /// daemon must not delete.
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The kernel cannot bind a path this long (a `sun_path` holds 107 bytes); the socket
    /// is bound under a sibling directory first, whose path must fit as well.
    #[error("control socket path {} is too long: a Unix socket path may have at most {MAX_SOCKET_PATH} bytes", path.display())]
    PathTooLong {
        /// The path that does not fit.
        path: PathBuf,
    },
    /// A file system operation needed to create the socket failed (permissions, a missing
    /// directory, a full disk...).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb phrase.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// What the daemon answers to one request.
#[derive(Debug)]
pub enum Reply {
    /// One answer: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
    Done(Result<Value, String>),
    /// A successful answer whose result is a JSON array, on the wire exactly as
    /// [`Reply::Done`] with that array, but written as its items are serialized: a client
    /// that reads slowly (or never) makes the connection hold one chunk of it, not the whole
    /// answer (megabytes for the status of thousands of processes). Its items are taken one
    /// at a time, on the connection's task.
    List(Items),
    /// A stream of items, each sent as `{"ok":true,"line":...}`. It ends, with
    /// `{"ok":true,"end":true}`, when every sender is dropped; when the client leaves or
    /// the server stops, the receiver is dropped, which the handler sees as a closed
    /// channel (`Sender::send` fails, `Sender::closed` completes).
    Stream(mpsc::Receiver<Value>),
}

impl Reply {
    /// A successful answer with `result` as its JSON (an error if it does not serialize).
    pub fn ok(result: impl Serialize) -> Reply {
        Reply::Done(serde_json::to_value(result).map_err(|e| format!("internal error: {e}")))
    }

    /// A failure, with a message for people.
    pub fn error(message: impl Display) -> Reply {
        Reply::Done(Err(message.to_string()))
    }

    /// A successful answer listing `items`, written as they are serialized (see
    /// [`Reply::List`]); the iterator should produce them lazily.
    pub fn list<I>(items: I) -> Reply
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Serialize,
    {
        Reply::List(Items(Box::new(items.into_iter().map(|item| {
            serde_json::to_value(item).map_err(|e| format!("internal error: {e}"))
        }))))
    }
}

/// The items of a [`Reply::List`]. Each is made a JSON value on its own (the bytes are then
/// those of the whole array made a value at once, as [`Reply::Done`] would send it).
pub struct Items(Box<dyn Iterator<Item = Result<Value, String>> + Send>);

impl std::fmt::Debug for Items {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Items(..)")
    }
}

/// What the daemon implements to answer requests.
///
/// `handle` runs in its own task for each request, so a slow request does not hold up other
/// clients, and a panic in it becomes an error answer instead of taking the server down.
/// It is not cancelled when the client leaves: a `stop --all` is carried out whole. It
/// should answer promptly; long work belongs after the answer (or in a stream).
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    async fn handle(&self, request: Request) -> Reply;
}

/// Limits of a [`Server`]; the defaults suit a CLI talking to its daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Longest request line in bytes, newline excluded; a longer one gets an error and
    /// the connection is closed. Default [`MAX_REQUEST_LINE`] (64 KiB).
    pub max_line: usize,
    /// How long a request may take to arrive whole, from its first byte to its newline;
    /// then it gets an error and the connection is closed. Default 5 s.
    pub request_timeout: Duration,
    /// How long a connection may sit without a request before it is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Most connections served at once; one more gets an error line and is closed.
    /// Default 128.
    pub max_connections: usize,
    /// On shutdown, how long connections may take to finish writing answers already being
    /// written before their tasks are aborted. Default 1 s.
    pub shutdown_grace: Duration,
    /// How long writing one answer (or one line of a stream) may take; a client that stops
    /// reading is then disconnected, so it cannot hold a connection slot and the answer's
    /// memory for ever. Default 10 s.
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_line: MAX_REQUEST_LINE,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 128,
            shutdown_grace: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Binds the control socket at `path` with the default limits, serves `handler` until
/// `shutdown` completes, then removes the socket. Fails only if the socket cannot be set
/// up; see [`Server`] to bind first and serve later.
pub async fn serve(
    path: &Path,
    handler: Arc<dyn Handler>,
    shutdown: impl Future,
) -> Result<(), ControlError> {
    Server::bind(path).await?.run(handler, shutdown).await;
    Ok(())
}

/// A bound control socket. [`Server::bind`] creates the socket (so a second daemon fails
/// early, before it starts any process); [`Server::run`] serves it. Connections made in
/// between wait in the kernel's backlog. Dropping the server removes the socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    socket: SocketFile,
    config: ServerConfig,
    uid: u32,
}

impl Server {
    /// Creates the socket at `path`, mode `0600`, listening.
    ///
    /// If a socket is already there and something answers on it, fails with
    /// [`ControlError::AlreadyRunning`]; a stale socket (nobody listening) is replaced;
    /// anything else at the path is left alone ([`ControlError::NotASocket`]).
    ///
    /// The socket is bound inside a fresh `0700` directory next to `path`, chmod-ed to
    /// `0600` there and renamed onto `path`, so it is never reachable by anyone else while
    /// its mode is wider: nobody else can enter the directory, and the rename is atomic (it
    /// also replaces a stale socket without a moment of absence). Setting the `umask`
    /// around `bind` would do the same, but the umask is process-wide: other threads of
    /// the daemon creating files at that moment (log files, say) would get it too.
    ///
    /// Two daemons starting at the same instant on the same path may both see it free;
    /// the later rename wins, and the earlier daemon keeps a socket nobody can reach.
    pub async fn bind(path: &Path) -> Result<Server, ControlError> {
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ControlError::PathTooLong { path: path.into() });
        }
        super::prepare_dir(path).map_err(|e| ControlError::Io {
            action: "prepare the directory of",
            path: path.into(),
            source: e,
        })?;
        check_existing(path).await?;
        let (listener, socket) = bind_private(path)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_error("listen on", path, e))?;
        let listener =
            UnixListener::from_std(listener).map_err(|e| io_error("listen on", path, e))?;
        tracing::debug!(path = %path.display(), "control socket bound");
        Ok(Server {
            listener,
            socket,
            config: ServerConfig::default(),
            uid: nix::unistd::geteuid().as_raw(),
        })
    }

    /// The same server with other limits.
    pub fn with_config(mut self, config: ServerConfig) -> Server {
        self.config = config;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Serves connections until `shutdown` completes, then stops accepting, removes the
    /// socket (new clients see no daemon at once), ends every stream with an error line,
    /// gives answers being written [`ServerConfig::shutdown_grace`] to finish, and aborts
    /// whatever connection is left. Requests being handled are not cancelled (their
    /// handler tasks run to completion on their own).
    pub async fn run(self, handler: Arc<dyn Handler>, shutdown: impl Future) {
        let Server {
            listener,
            mut socket,
            config,
            uid,
        } = self;
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let conn = Connection {
                                handler: handler.clone(),
                                config,
                                stopping: stop_rx.clone(),
                                uid,
                            };
                            tasks.spawn(async move {
                                conn.run(stream).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(
                                max = config.max_connections,
                                "too many control connections; refusing one"
                            );
                            let busy = Frame::Error(format!(
                                "too many connections ({}); try again later",
                                config.max_connections
                            ));
                            // A fresh socket's buffer takes one short line; if not, the
                            // client learns from the close alone.
                            let _ = stream.try_write(&busy.to_line());
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a control connection");
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        }
                    }
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a control connection task panicked");
                        }
                    }
                }
            }
        }
        drop(listener);
        socket.remove();
        let _ = stop_tx.send(true);
        let _ = timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.shutdown().await;
        tracing::debug!(path = %socket.path.display(), "control socket closed");
    }
}

/// The credentials of a socket's peer, as the kernel recorded them when it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Its process id (0 if it is in a pid namespace this process cannot see).
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// The peer credentials of a connected Unix socket (`SO_PEERCRED`): who connected, for a
/// server; who listens, for a client.
pub fn peer_credentials(socket: &impl AsFd) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let size = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let mut len = size;
    // SAFETY: the descriptor is borrowed for the call; `cred` and `len` outlive it, and
    // `len` holds the size of the buffer `cred` is.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_PEERCRED returned a short answer",
        ));
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Whether a peer with `peer_uid` may talk to a daemon running as `daemon_uid`: only the
/// same user, or root.
pub fn peer_allowed(peer_uid: u32, daemon_uid: u32) -> bool {
    peer_uid == daemon_uid || peer_uid == 0
}

/// One accepted connection's task.
struct Connection {
    handler: Arc<dyn Handler>,
    config: ServerConfig,
    stopping: watch::Receiver<bool>,
    uid: u32,
}

/// How reading one request line ended.
enum LineRead {
    /// A line is in the buffer (without its newline).
    Line,
    /// The line is longer than allowed.
    TooLong,
    /// Reading failed.
    Failed(io::Error),
}

impl Connection {
    async fn run(mut self, mut stream: UnixStream) {
        match peer_credentials(&stream) {
            Ok(peer) if peer_allowed(peer.uid, self.uid) => {}
            Ok(peer) => {
                tracing::warn!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "refused a control connection from another user"
                );
                let refusal = Frame::Error(format!(
                    "permission denied: uid {} may not control this daemon",
                    peer.uid
                ));
                let _ = timeout(REFUSAL_WRITE_TIMEOUT, stream.write_all(&refusal.to_line())).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a control connection's credentials");
                return;
            }
        }
        let (read, mut write) = stream.split();
        let mut reader = BufReader::with_capacity(8 * 1024, read);
        let mut buf = Vec::new();
        loop {
            // Wait for the first byte of the next request, then for the whole line.
            let waited = tokio::select! {
                _ = stopped(&mut self.stopping) => return,
                r = timeout(self.config.idle_timeout, reader.fill_buf()) => r.map(|r| r.map(|b| b.is_empty())),
            };
            match waited {
                Ok(Ok(false)) => {}
                // Idle too long, end of input or a broken connection: nothing to answer.
                Err(_) | Ok(Ok(true)) | Ok(Err(_)) => return,
            }
            buf.clear();
            let read = tokio::select! {
                _ = stopped(&mut self.stopping) => return,
                r = timeout(self.config.request_timeout, read_line(&mut reader, &mut buf, self.config.max_line)) => r,
            };
            let request = match read {
                Ok(LineRead::Line) => match parse_request(&buf) {
                    Ok(Some(request)) => request,
                    Ok(None) => continue,
                    Err(message) => {
                        tracing::debug!(%message, "bad control request");
                        if send(
                            &mut write,
                            self.config.write_timeout,
                            &Frame::Error(message),
                        )
                        .await
                        .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                },
                Ok(LineRead::TooLong) => {
                    tracing::debug!("control request line too long");
                    let message = format!(
                        "request line longer than {} bytes; closing the connection",
                        self.config.max_line
                    );
                    let _ = send(
                        &mut write,
                        self.config.write_timeout,
                        &Frame::Error(message),
                    )
                    .await;
                    return;
                }
                Ok(LineRead::Failed(e)) => {
                    tracing::debug!(error = %e, "control connection failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("control request incomplete");
                    let message = format!(
                        "incomplete request: no newline within {} ms; closing the connection",
                        self.config.request_timeout.as_millis()
                    );
                    let _ = send(
                        &mut write,
                        self.config.write_timeout,
                        &Frame::Error(message),
                    )
                    .await;
                    return;
                }
            };
            match self.answer(request).await {
                Reply::Done(result) => {
                    let frame = match result {
                        Ok(v) => Frame::Result(v),
                        Err(e) => Frame::Error(e),
                    };
                    if send(&mut write, self.config.write_timeout, &frame)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Reply::List(items) => {
                    if send_list(&mut write, self.config.write_timeout, items)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Reply::Stream(mut items) => {
                    if send(&mut write, self.config.write_timeout, &Frame::StreamStart)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut scratch = [0u8; 512];
                    loop {
                        tokio::select! {
                            // What the handler already sent goes out before a stop is
                            // heeded: a stream that ended before the server stopped ends
                            // whole (a `shutdown` client gets its last lines).
                            biased;
                            item = items.recv() => match item {
                                Some(v) => if send(&mut write, self.config.write_timeout, &Frame::Line(v)).await.is_err() {
                                    return;
                                },
                                None => {
                                    let _ = send(&mut write, self.config.write_timeout, &Frame::End).await;
                                    return;
                                }
                            },
                            // Whatever the client sends during a stream is ignored; its
                            // end (or a broken connection) ends the stream.
                            n = reader.read(&mut scratch) => if !matches!(n, Ok(n) if n > 0) {
                                return;
                            },
                            _ = stopped(&mut self.stopping) => {
                                let end = Frame::Error("the daemon is shutting down".into());
                                let _ = send(&mut write, self.config.write_timeout, &end).await;
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Runs the handler in its own task, so that a panic there is an error answer.
    async fn answer(&self, request: Request) -> Reply {
        let handler = self.handler.clone();
        match tokio::spawn(async move { handler.handle(request).await }).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, "the control handler failed");
                Reply::error("internal error: the daemon failed to handle the request")
            }
        }
    }
}

/// Completes once the server stops (or is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Reads one line into `buf` without its newline, at most `max` bytes. Input that ends
/// without a newline counts as a line.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> LineRead {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    match reader.take(limit).read_until(b'\n', buf).await {
        Err(e) => LineRead::Failed(e),
        Ok(_) if buf.last() == Some(&b'\n') => {
            buf.pop();
            LineRead::Line
        }
        Ok(_) if buf.len() > max => LineRead::TooLong,
        Ok(_) => LineRead::Line,
    }
}

/// The request on a line; `None` for a blank line; the error message otherwise.
fn parse_request(line: &[u8]) -> Result<Option<Request>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request is not valid UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Request::parse(text).map(Some)
}

async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    limit: Duration,
    frame: &Frame,
) -> io::Result<()> {
    write_within(write, limit, &frame.to_line()).await
}

/// Writes `bytes` whole, or fails once `limit` has passed: the client stopped reading.
async fn write_within<W: AsyncWrite + Unpin>(
    write: &mut W,
    limit: Duration,
    bytes: &[u8],
) -> io::Result<()> {
    match timeout(limit, write.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("a control client stopped reading; disconnected");
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

/// Writes a [`Reply::List`] as `{"ok":true,"result":[...]}` on one line, in chunks of about
/// [`LIST_CHUNK`] bytes, serializing the items as the client takes them. Each chunk gets the
/// write timeout, so a client must keep reading to keep the connection. An item that fails
/// to serialize once the line has begun cannot be turned into an error line: the connection
/// is closed, and the client sees its answer cut short.
async fn send_list<W: AsyncWrite + Unpin>(
    write: &mut W,
    limit: Duration,
    Items(items): Items,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(2 * LIST_CHUNK);
    buf.extend_from_slice(Frame::RESULT_HEAD);
    buf.push(b'[');
    for (i, item) in items.enumerate() {
        let item = item.map_err(|e| {
            tracing::error!(error = %e, "cannot serialize an answer; closing the connection");
            io::Error::other(e)
        })?;
        if i > 0 {
            buf.push(b',');
        }
        // Serializing a `Value` into a vector cannot fail: its map keys are strings.
        let _ = serde_json::to_writer(&mut buf, &item);
        if buf.len() >= LIST_CHUNK {
            write_within(write, limit, &buf).await?;
            buf.clear();
            // One huge item must not leave its buffer behind for the rest of the answer.
            buf.shrink_to(2 * LIST_CHUNK);
        }
    }
    buf.push(b']');
    buf.extend_from_slice(Frame::TAIL);
    write_within(write, limit, &buf).await
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> ControlError {
    ControlError::Io {
        action,
        path: path.into(),
        source,
    }
}

/// Fails if `path` holds a live socket or something that is not a socket.
async fn check_existing(path: &Path) -> Result<(), ControlError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("inspect", path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket { path: path.into() });
    }
    // Connecting is non-blocking: a listener whose backlog is full answers "would block",
    // which is as live as it gets. A listener that does not even answer that is taken as
    // live too: better to refuse to start than to steal a slow daemon's socket.
    match timeout(Duration::from_secs(2), UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale control socket");
            Ok(())
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => {
            Err(io_error("check the existing socket", path, e))
        }
        // Connected, busy, or too slow to say.
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => Err(ControlError::AlreadyRunning { path: path.into() }),
    }
}

/// Binds a listening socket in a private directory next to `path`, sets its mode to 0600
/// and renames it onto `path`.
fn bind_private(
    path: &Path,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), ControlError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".pc{:x}.{n:x}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(io_error("create a private directory in", parent, e)),
        }
    };
    let private = dir.join("s");
    let bound = (|| {
        if private.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ControlError::PathTooLong {
                path: private.clone(),
            });
        }
        let listener = std::os::unix::net::UnixListener::bind(&private)
            .map_err(|e| io_error("bind", &private, e))?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("set the mode of", &private, e))?;
        let meta =
            std::fs::symlink_metadata(&private).map_err(|e| io_error("inspect", &private, e))?;
        std::fs::rename(&private, path).map_err(|e| io_error("move the socket to", path, e))?;
        Ok((
            listener,
            SocketFile {
                path: path.into(),
                dev: meta.dev(),
                ino: meta.ino(),
                removed: false,
            },
        ))
    })();
    if bound.is_err() {
        let _ = std::fs::remove_file(&private);
    }
    let _ = std::fs::remove_dir(&dir);
    bound
}

/// The socket file this server created; removed once, and only if the file at the path
/// is still that one (a later daemon may have replaced a socket it took for stale).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    removed: bool,
}

impl SocketFile {
    fn remove(&mut self) {
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
                }
            }
            _ => {}
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}
