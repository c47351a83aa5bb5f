//! The HTTP probe: one GET per check, over an HTTP/1.1 connection kept between checks (or a
//! fresh connection per check when reuse is turned off).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::target::{parse_host_port, Phase, Target};
use super::{error_chain, Check, FailureReason, ProbeConfigError, ProbeOutcome};

/// How much of a healthy response's body is read. The body is drained (so a server that
/// stalls mid-body is caught as a timeout) but never kept; past this many bytes the check
/// passes without reading further, so large health pages cost nothing extra (the connection
/// is then not reused, since the rest of the body is still in it).
pub const MAX_BODY_READ: usize = 64 * 1024;

/// How long one kept connection serves checks: the first check starting this long (or
/// later) after the connection was opened closes it and connects anew. This bounds how long
/// a server that stops accepting new connections, while its open ones still work, can go
/// unnoticed by a probe that reuses its connection.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);

const USER_AGENT_VALUE: &str = concat!("processcontrol-probe/", env!("CARGO_PKG_VERSION"));

type Sender = SendRequest<Empty<Bytes>>;
type Driver = Connection<TokioIo<TcpStream>, Empty<Bytes>>;

/// An HTTP GET health check: healthy means a status in 200-399 (body read completely or up
/// to [`MAX_BODY_READ`]) within the timeout.
///
/// The URL is validated when the probe is built, so a configuration mistake surfaces once
/// as a [`ProbeConfigError`] rather than as a failure at every check.
///
/// # Connection reuse
///
/// By default (like Envoy's HTTP health checker) the probe keeps one HTTP/1.1 keep-alive
/// connection and sends each check over it, which saves a TCP handshake, the server's
/// accept and a teardown per check: on loopback, where the kernel does the server's side of
/// all that in the prober's time, close to half of a check's CPU cost. The rules:
///
/// - A check reuses the connection only if the last check passed on it, the whole body was
///   read, the server did not answer `Connection: close` (or with HTTP/1.0), the server has
///   not closed it since, and hyper says it is ready for a request. Otherwise, and after
///   any failed or timed-out check, the next check connects fresh: a failure is never
///   blamed on a stale connection, and a hung connection never poisons later checks.
/// - A connection serves checks for at most [`MAX_CONNECTION_AGE`] (30 s) after it was
///   opened. This is the trade-off of reuse: a server whose accept loop hangs while its
///   open connections still work is noticed only when the probe next connects, so within
///   30 s plus one period (then the failure threshold applies) instead of at the next
///   check.
/// - If a request on a reused connection fails before any response arrived because the
///   connection was closed or reset (the server's keep-alive idle timeout raced with the
///   check), it is retried once on a fresh connection, within the same timeout. A server
///   with a short idle timeout therefore produces no false failures.
/// - The timeout bounds the whole check, retry included; dropping the check future (or
///   the probe) closes its connection. Clones of a probe start without a connection.
///
/// With [`HttpProbe::reuse_connection`]`(false)` each check opens a new connection and
/// sends `Connection: close`, which also tests that the service accepts new clients at
/// every check, at a higher cost.
#[derive(Debug)]
pub struct HttpProbe {
    target: Target,
    /// The request, built once and copied into each check's request.
    template: Arc<Template>,
    timeout: Duration,
    reuse: bool,
    kept: Slot,
}

impl Clone for HttpProbe {
    /// The clone has the same configuration and no connection of its own yet.
    fn clone(&self) -> Self {
        HttpProbe {
            target: self.target.clone(),
            template: self.template.clone(),
            timeout: self.timeout,
            reuse: self.reuse,
            kept: Slot::default(),
        }
    }
}

impl HttpProbe {
    /// Validates `url` (only `http://host[:port][/path][?query]`, port not 0) and the
    /// optional `Host` header override (for virtual-hosted services probed by IP). The probe
    /// reuses its connection; see [`HttpProbe::reuse_connection`].
    pub fn new(
        url: &str,
        host_header: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ProbeConfigError> {
        if timeout.is_zero() {
            return Err(ProbeConfigError::ZeroTimeout);
        }
        let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
            ProbeConfigError::InvalidUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            }
        })?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => {}
            Some(s) => {
                return Err(ProbeConfigError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: s.to_owned(),
                })
            }
            None => {
                return Err(ProbeConfigError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "expected an absolute http:// URL".to_owned(),
                })
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ProbeConfigError::MissingHost {
                target: url.to_owned(),
            })?;
        if authority.as_str().contains('@') {
            return Err(ProbeConfigError::UserInfo {
                url: url.to_owned(),
            });
        }
        let target = parse_host_port(authority.as_str(), Some(80), url)?;

        // Origin-form request target: "/path?query" ("http://h?q" means "/?q").
        let request_target = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        let path_and_query: Uri =
            request_target
                .parse()
                .map_err(
                    |e: hyper::http::uri::InvalidUri| ProbeConfigError::InvalidUrl {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    },
                )?;

        let host_header = match host_header {
            // A Host value is an authority: no whitespace or control characters.
            Some(h) => HeaderValue::from_str(h)
                .ok()
                .filter(|v| !v.is_empty() && !v.as_bytes().iter().any(u8::is_ascii_whitespace))
                .ok_or_else(|| ProbeConfigError::InvalidHostHeader {
                    value: h.to_owned(),
                })?,
            None => HeaderValue::from_str(authority.as_str()).map_err(|_| {
                ProbeConfigError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "authority is not a valid Host header".to_owned(),
                }
            })?,
        };
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(HOST, host_header);
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));

        Ok(HttpProbe {
            target,
            template: Arc::new(Template {
                path_and_query,
                headers,
            }),
            timeout,
            reuse: true,
            kept: Slot::default(),
        })
    }

    /// Whether checks share one kept-alive connection (`true`, the default: see the type's
    /// documentation for the rules) or each check opens a new connection and sends
    /// `Connection: close` (`false`).
    #[must_use]
    pub fn reuse_connection(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        if reuse {
            Arc::make_mut(&mut self.template).headers.remove(CONNECTION);
        } else {
            Arc::make_mut(&mut self.template)
                .headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // A connection kept so far was opened under the other setting.
        self.kept = Slot::default();
        self
    }

    /// Whether checks share one kept-alive connection.
    pub fn reuses_connection(&self) -> bool {
        self.reuse
    }

    /// The bound on one whole check (resolve, connect, request, status and body, and the
    /// one retry on a fresh connection).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one check. Always returns within the timeout (plus scheduling latency): every
    /// step, including a server that accepts and never answers or trickles its body, is
    /// under one deadline, and dropping the future closes the connection.
    pub async fn check(&self) -> ProbeOutcome {
        let phase = AtomicU8::new(Phase::Resolving as u8);
        match tokio::time::timeout(self.timeout, settled(self.run(&phase))).await {
            Ok(outcome) => outcome,
            Err(_) => ProbeOutcome::failed(
                FailureReason::Timeout,
                format!(
                    "no healthy answer within {:?} (stuck {})",
                    self.timeout,
                    Phase::describe(&phase)
                ),
            ),
        }
    }

    async fn run(&self, phase: &AtomicU8) -> ProbeOutcome {
        if let Some(kept) = self.take_ready().await {
            Phase::AwaitingResponse.set(phase);
            match self.exchange(kept, phase).await {
                Exchanged::Done(outcome) => return outcome,
                // The server closed the kept connection as the request went out: retry
                // once, on a fresh connection (still under the check's one deadline).
                Exchanged::Closed(_) => {}
            }
        }
        let kept = match self.open(phase).await {
            Ok(kept) => kept,
            Err(outcome) => return outcome,
        };
        match self.exchange(kept, phase).await {
            Exchanged::Done(outcome) | Exchanged::Closed(outcome) => outcome,
        }
    }

    /// The kept connection if it may serve this check: not too old, not closed by the
    /// server since the last check, and ready for a request. Anything else is dropped
    /// (closing it) so the check connects fresh.
    async fn take_ready(&self) -> Option<Box<Kept>> {
        if !self.reuse {
            return None;
        }
        let mut kept = self.kept.take()?;
        if kept.opened.elapsed() >= MAX_CONNECTION_AGE || kept.sender.is_closed() {
            return None;
        }
        // Nothing polled the connection since the last check: let hyper see what arrived
        // meanwhile (the server's FIN, or stray bytes) and get ready for the next request.
        let ended = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut kept.driver).poll(cx)))
            .await
            .is_ready();
        (!ended && kept.sender.is_ready()).then_some(kept)
    }

    /// Connects and sets up HTTP/1.1 on the new connection.
    async fn open(&self, phase: &AtomicU8) -> Result<Box<Kept>, ProbeOutcome> {
        let stream = self.target.connect(phase).await?;
        let opened = Instant::now();
        // Probes are tiny request/response exchanges; don't let Nagle delay them.
        let _ = stream.set_nodelay(true);
        Phase::AwaitingResponse.set(phase);
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_failure("HTTP handshake", &e))?;
        Ok(Box::new(Kept {
            sender,
            driver,
            opened,
        }))
    }

    /// Sends the request on `conn` and judges the answer; a connection that may serve the
    /// next check is put back in the slot, any other is dropped (closed).
    async fn exchange(&self, mut conn: Box<Kept>, phase: &AtomicU8) -> Exchanged {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.template.path_and_query.clone();
        *request.headers_mut() = self.template.headers.clone();
        let Kept { sender, driver, .. } = &mut *conn;
        let exchange = async {
            let mut response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    let outcome = io_failure("HTTP request", &e);
                    return if connection_closed(&e) {
                        (Exchanged::Closed(outcome), false)
                    } else {
                        (Exchanged::Done(outcome), false)
                    };
                }
            };
            let status = response.status();
            if !(200..400).contains(&status.as_u16()) {
                let outcome = ProbeOutcome::failed(
                    FailureReason::Status(status.as_u16()),
                    format!(
                        "GET {} -> {} {}",
                        self.template.path_and_query,
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    )
                    .trim_end()
                    .to_owned(),
                );
                return (Exchanged::Done(outcome), false);
            }
            let keep_alive = self.reuse && keeps_alive(&response);
            Phase::ReadingBody.set(phase);
            let mut read = 0usize;
            let mut complete = false;
            while read < MAX_BODY_READ {
                match response.body_mut().frame().await {
                    None => {
                        complete = true;
                        break;
                    }
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            read += data.len();
                        }
                    }
                    Some(Err(e)) => {
                        return (Exchanged::Done(io_failure("reading the body", &e)), false)
                    }
                }
            }
            (
                Exchanged::Done(ProbeOutcome::Passed),
                keep_alive && complete,
            )
        };
        let ((result, reusable), driver_ended) = {
            let mut exchange = std::pin::pin!(exchange);
            tokio::select! {
                biased;
                r = &mut exchange => (r, false),
                _ = driver => {
                    // The connection ended (the server closed, or a protocol error). The
                    // exchange may still hold a fully received response, or will now fail
                    // with hyper's error: either way it resolves promptly.
                    (exchange.await, true)
                }
            }
        };
        if reusable && !driver_ended {
            self.kept.put(conn);
        }
        result
    }
}

impl Check for HttpProbe {
    fn check(&self) -> impl Future<Output = ProbeOutcome> + Send {
        HttpProbe::check(self)
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// What every request of a probe carries.
#[derive(Debug, Clone)]
struct Template {
    /// The origin-form target, `/path?query`.
    path_and_query: Uri,
    /// `Host`, `User-Agent`, `Accept` and, without reuse, `Connection: close`.
    headers: HeaderMap,
}

/// One open connection: the request handle, the future that drives its I/O (polled only
/// during checks: no task is spawned per connection) and when it was opened. Boxed where
/// it is kept, so the probe stays small and a check moves a pointer, not the connection.
struct Kept {
    sender: Sender,
    driver: Driver,
    opened: Instant,
}

/// The connection kept between checks. Taken out for the length of a check, so a check
/// that is dropped or fails takes its connection with it; put back only after a pass.
#[derive(Default)]
struct Slot(Mutex<Option<Box<Kept>>>);

impl Slot {
    fn take(&self) -> Option<Box<Kept>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn put(&self, kept: Box<Kept>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.try_lock().map(|k| k.is_some()).ok();
        f.debug_struct("Slot").field("kept", &kept).finish()
    }
}

/// Polls `fut` so that the wake-ups it causes itself while being polled are served by
/// polling it again at once rather than by rescheduling the task.
///
/// A check is one task driving both hyper's connection and the request: when the connection
/// reads the response it hands the head, then each body chunk, to the request future through
/// channels, waking this same task every time. tokio treats a task woken while it runs as a
/// yield: it is queued again and an idle worker thread is woken to look for work, which
/// it then does not find (a futex wake and two context switches per hand-over). Wakes from
/// elsewhere (the socket, a timer) still wake the task as usual.
async fn settled<F: Future>(fut: F) -> F::Output {
    /// After this many polls in a row, each of which woke the task again, let the scheduler
    /// run other tasks first (tokio's cooperative budget, when spent, wakes the task and
    /// returns `Pending`: this loop must not spin on that).
    const MAX_POLLS: usize = 16;
    let mut fut = std::pin::pin!(fut);
    let signal = Arc::new(SelfWake::default());
    let waker = Waker::from(signal.clone());
    std::future::poll_fn(move |cx| {
        signal.set_task(cx.waker());
        let mut inner = Context::from_waker(&waker);
        for _ in 0..MAX_POLLS {
            signal.state.store(POLLING, Ordering::SeqCst);
            let poll = fut.as_mut().poll(&mut inner);
            // From here on a wake wakes the task; one that came during the poll is seen here.
            let during = signal.state.swap(0, Ordering::SeqCst) & WOKEN != 0;
            if poll.is_ready() || !during {
                return poll;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// The waker [`settled`] gives the future: records a wake during a poll, forwards any
/// other to the task.
#[derive(Default)]
struct SelfWake {
    state: AtomicU8,
    task: Mutex<Option<Waker>>,
}

impl SelfWake {
    fn set_task(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if !task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::SeqCst) & POLLING == 0 {
            let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(task) = task.as_ref() {
                task.wake_by_ref();
            }
        }
    }
}

/// How one request went.
enum Exchanged {
    /// The check's outcome.
    Done(ProbeOutcome),
    /// The request failed, without any response, because the connection was closed or
    /// reset: on a kept connection this is worth one retry on a fresh one.
    Closed(ProbeOutcome),
}

/// Whether the server lets the connection stay open after this response.
fn keeps_alive(response: &Response<Incoming>) -> bool {
    response.version() == Version::HTTP_11
        && !response.headers().get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
}

/// Whether a request failed because the connection was closed under it (before or while
/// it was sent, or before any response arrived), as opposed to a bad answer.
fn connection_closed(err: &hyper::Error) -> bool {
    if err.is_canceled() || err.is_closed() || err.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

fn io_failure(what: &str, err: &(dyn std::error::Error + 'static)) -> ProbeOutcome {
    ProbeOutcome::failed(FailureReason::Io, format!("{what}: {}", error_chain(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// The task's waker: counts how often the task was woken.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Task>, Waker) {
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        (task, waker)
    }

    /// Wakes itself `n` times before it is ready with the number of polls it took.
    fn self_waking(n: usize) -> impl Future<Output = usize> {
        let (mut left, mut polls) = (n, 0);
        std::future::poll_fn(move |cx| {
            polls += 1;
            if left == 0 {
                return Poll::Ready(polls);
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[test]
    fn self_wakes_are_served_within_the_same_poll() {
        let (task, waker) = task();
        let mut fut = std::pin::pin!(settled(self_waking(3)));
        let poll = fut.as_mut().poll(&mut Context::from_waker(&waker));
        assert_eq!(poll, Poll::Ready(4));
        assert_eq!(task.0.load(Ordering::SeqCst), 0, "the task was rescheduled");
    }

    #[test]
    fn endless_self_wakes_hand_back_to_the_scheduler() {
        let (task, waker) = task();
        let mut fut = std::pin::pin!(settled(self_waking(usize::MAX)));
        let poll = fut.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(poll.is_pending());
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "must be polled again later"
        );
    }

    #[test]
    fn wakes_from_elsewhere_wake_the_task() {
        let (task, waker) = task();
        let ready = Arc::new(AtomicBool::new(false));
        let stored: Arc<Mutex<Option<Waker>>> = Arc::default();
        let fut = {
            let (ready, stored) = (ready.clone(), stored.clone());
            std::future::poll_fn(move |cx| {
                if ready.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                *stored.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            })
        };
        let mut fut = std::pin::pin!(settled(fut));
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        // The "socket" becomes ready after the poll: the task must hear of it.
        ready.store(true, Ordering::SeqCst);
        let inner = stored.lock().unwrap().take().unwrap();
        std::thread::spawn(move || inner.wake()).join().unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
