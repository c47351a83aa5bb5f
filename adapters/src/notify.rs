//! sd_notify readiness sockets: one unix datagram socket per supervised instance.
//!
//! The socket's path goes into the child's `NOTIFY_SOCKET`; whatever the instance's
//! processes send there (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`,
//! `MAINPID=...`) is parsed and forwarded, tagged, to a channel. What a notification
//! means (ready, watchdog deadline extended, ...) is decided by the core.
//!
//! Senders are authenticated by the kernel: with `SO_PASSCRED` every datagram carries
//! the sender's pid (`SCM_CREDENTIALS`, which an unprivileged sender cannot forge), and
//! only pids the caller's membership check accepts are heard. Anything else, and anything
//! malformed, is dropped and counted, never fatal.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest datagram accepted, as systemd does (`NOTIFY_BUFFER_MAX`); longer ones are
/// dropped as oversized rather than parsed in part.
pub const MAX_DATAGRAM: usize = 4096;

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

/// Most file descriptors taken off one datagram (they are closed at once: fd passing is
/// not supported); the kernel discards any beyond what fits.
const MAX_PASSED_FDS: usize = 16;

/// One recognized sd_notify assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `READY=1`: the service finished starting up.
    Ready,
    /// `STOPPING=1`: the service is shutting down of its own accord.
    Stopping,
    /// `WATCHDOG=1`: the service is alive (a keep-alive ping).
    Watchdog,
    /// `STATUS=...`: free-form status text for operators.
    Status(String),
    /// `MAINPID=...`: the service's main process is now this pid (a forking daemon).
    MainPid(u32),
}

impl Notification {
    /// Parses one datagram: newline-separated `KEY=VALUE` assignments. Unknown keys,
    /// values other than `1` for the flag keys, and non-numeric or zero `MAINPID` are
    /// skipped (so the result may be empty). Fails only when the datagram as a whole is
    /// unusable.
    pub fn parse_datagram(datagram: &[u8]) -> Result<Vec<Notification>, Malformed> {
        if datagram.is_empty() {
            return Err(Malformed::Empty);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(Malformed::Oversized);
        }
        if datagram.contains(&0) {
            return Err(Malformed::NulByte);
        }
        let text = std::str::from_utf8(datagram).map_err(|_| Malformed::NotUtf8)?;
        let mut notes = Vec::new();
        for line in text.split('\n') {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let note = match (key, value) {
                ("READY", "1") => Notification::Ready,
                ("STOPPING", "1") => Notification::Stopping,
                ("WATCHDOG", "1") => Notification::Watchdog,
                ("STATUS", status) => Notification::Status(status.to_owned()),
                ("MAINPID", pid) => match pid.parse::<u32>() {
                    Ok(pid) if pid > 0 => Notification::MainPid(pid),
                    _ => continue,
                },
                _ => continue,
            };
            notes.push(note);
        }
        Ok(notes)
    }
}

/// Why a whole datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The datagram had no bytes.
    #[error("empty datagram")]
    Empty,
    /// The datagram exceeded [`MAX_DATAGRAM`] bytes.
    #[error("datagram longer than {MAX_DATAGRAM} bytes")]
    Oversized,
    /// The datagram contained a NUL byte, which the protocol never uses.
    #[error("datagram contains a NUL byte")]
    NulByte,
    /// The datagram was not valid UTF-8.
    #[error("datagram is not UTF-8")]
    NotUtf8,
}

/// The notifications of one datagram, with who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    /// The caller's tag given to [`NotifySocket::bind`].
    pub tag: u64,
    /// The sender's pid as the kernel reported it (in the supervisor's pid namespace).
    pub pid: u32,
    /// The recognized assignments, in datagram order (never empty).
    pub notes: Vec<Notification>,
}

/// Counters of what a socket received, for diagnostics ("the service says it is ready
/// but nothing happens": look at `rejected_sender`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// Datagrams forwarded to the channel.
    pub delivered: u64,
    /// Datagrams dropped because the sender is not a member of the instance.
    pub rejected_sender: u64,
    /// Datagrams dropped as malformed or oversized.
    pub malformed: u64,
    /// Well-formed datagrams dropped because they held no recognized assignment.
    pub unrecognized: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    rejected_sender: AtomicU64,
    malformed: AtomicU64,
    unrecognized: AtomicU64,
}

/// Why a notify socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The socket path would not fit in `sun_path`; use a shorter directory.
    #[error("notify socket path {path:?} is longer than {MAX_SOCKET_PATH} bytes")]
    PathTooLong {
        /// The path that was too long.
        path: PathBuf,
    },
    /// Something other than a socket already exists at the path; it is left alone.
    #[error("{path:?} exists and is not a socket")]
    PathOccupied {
        /// The occupied path.
        path: PathBuf,
    },
    /// Creating, binding or configuring the socket failed.
    #[error("cannot set up notify socket {path:?}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A bound notify socket serving one instance. Dropping it stops listening and removes
/// the socket file.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    /// Device and inode of the file we bound, so drop never removes a newer socket that
    /// another instance bound at the same path.
    identity: (u64, u64),
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl NotifySocket {
    /// Binds `<dir>/notify-<tag>.sock` and starts forwarding notifications from senders
    /// for which `is_member(pid)` holds (typically: pid is in the instance's process
    /// tree, as tracked by the caller) to `messages`.
    ///
    /// A stale socket left at that path by a previous run is replaced. The socket file is
    /// made writable by all users (children may drop privileges); access control is the
    /// directory's permissions plus the pid check. Must be called within a tokio runtime.
    pub fn bind<F>(
        dir: &Path,
        tag: u64,
        is_member: F,
        messages: mpsc::Sender<NotifyMessage>,
    ) -> Result<NotifySocket, NotifyError>
    where
        F: Fn(u32) -> bool + Send + Sync + 'static,
    {
        let path = dir.join(format!("notify-{tag}.sock"));
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(NotifyError::PathTooLong { path });
        }
        let io_err = |source| NotifyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(&path).map_err(io_err)?;
            }
            Ok(_) => return Err(NotifyError::PathOccupied { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let socket = UnixDatagram::bind(&path).map_err(io_err)?;
        let setup = || -> io::Result<(u64, u64)> {
            enable_passcred(socket.as_raw_fd())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
            let meta = std::fs::symlink_metadata(&path)?;
            Ok((meta.dev(), meta.ino()))
        };
        let identity = match setup() {
            Ok(identity) => identity,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(io_err(e));
            }
        };
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(serve(
            socket,
            tag,
            Box::new(is_member),
            messages,
            counters.clone(),
        ));
        Ok(NotifySocket {
            path,
            identity,
            counters,
            task,
        })
    }

    /// The socket path, to put in the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the socket has received so far.
    pub fn stats(&self) -> NotifyStats {
        let c = &self.counters;
        NotifyStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            rejected_sender: c.rejected_sender.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            unrecognized: c.unrecognized.load(Ordering::Relaxed),
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

type Membership = Box<dyn Fn(u32) -> bool + Send + Sync>;

async fn serve(
    socket: UnixDatagram,
    tag: u64,
    is_member: Membership,
    messages: mpsc::Sender<NotifyMessage>,
    counters: Arc<Counters>,
) {
    let fd = socket.as_raw_fd();
    // One byte more than the limit, so an oversized datagram is seen as such even where
    // the kernel does not report truncation.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let received = tokio::select! {
            biased;
            _ = messages.closed() => return,
            r = socket.async_io(Interest::READABLE, || recv_with_pid(fd, &mut buf)) => r,
        };
        let Datagram {
            len,
            truncated,
            pid,
        } = match received {
            Ok(d) => d,
            Err(e) => {
                // Not expected on a bound datagram socket; pause so that a persistent
                // error cannot become a busy loop.
                tracing::warn!(tag, error = %e, "notify socket receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(pid) = pid.filter(|&p| p > 0 && is_member(p)) else {
            counters.rejected_sender.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(tag, ?pid, "notify datagram from a non-member ignored");
            continue;
        };
        let parsed = if truncated || len > MAX_DATAGRAM {
            Err(Malformed::Oversized)
        } else {
            Notification::parse_datagram(&buf[..len])
        };
        match parsed {
            Err(why) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tag, pid, %why, "malformed notify datagram ignored");
            }
            Ok(notes) if notes.is_empty() => {
                counters.unrecognized.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tag, pid, "notify datagram without known assignments");
            }
            Ok(notes) => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                if messages
                    .send(NotifyMessage { tag, pid, notes })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn enable_passcred(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is a live socket owned by the caller; the option value points to a
    // c_int that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received datagram.
struct Datagram {
    len: usize,
    truncated: bool,
    /// The sender's pid from `SCM_CREDENTIALS`, if present.
    pid: Option<u32>,
}

/// Control buffer for one `ucred` plus up to [`MAX_PASSED_FDS`] passed fds, as u64s so
/// that it is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 16 + MAX_PASSED_FDS / 2;

/// `recvmsg` without blocking, collecting the sender's credentials and closing any fds
/// that came along.
fn recv_with_pid(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points to `iov` (covering `buf`) and `control`, which are live and
    // exclusively borrowed for the duration of the call, with their true lengths.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled in, bounded by
    // msg_controllen; each header is checked non-null before use and payloads are read
    // unaligned within the lengths the headers declare.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let payload = (header.cmsg_len as usize)
                .saturating_sub(data.offset_from(cmsg.cast::<u8>()) as usize);
            if header.cmsg_level == libc::SOL_SOCKET {
                if header.cmsg_type == libc::SCM_CREDENTIALS
                    && payload >= std::mem::size_of::<libc::ucred>()
                {
                    let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    pid = u32::try_from(cred.pid).ok();
                } else if header.cmsg_type == libc::SCM_RIGHTS {
                    let count = payload / std::mem::size_of::<libc::c_int>();
                    for i in 0..count {
                        let passed = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                        libc::close(passed);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let len = usize::try_from(n).unwrap_or(0);
    Ok(Datagram {
        len,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0 || len > buf.len(),
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_skips_the_rest() {
        let notes = Notification::parse_datagram(
            b"READY=1\nSTATUS=up: 3 workers\nMAINPID=42\nFOO=bar\nnonsense\nWATCHDOG=1\nSTOPPING=1\n",
        )
        .unwrap();
        assert_eq!(
            notes,
            [
                Notification::Ready,
                Notification::Status("up: 3 workers".into()),
                Notification::MainPid(42),
                Notification::Watchdog,
                Notification::Stopping,
            ]
        );
        let skipped = Notification::parse_datagram(
            b"READY=0\nWATCHDOG=trigger\nMAINPID=0\nMAINPID=-1\nMAINPID=x\n=\nSTATUS",
        )
        .unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            Notification::parse_datagram(b"STATUS=a=b").unwrap(),
            [Notification::Status("a=b".into())]
        );
    }

    #[test]
    fn rejects_unusable_datagrams() {
        assert_eq!(Notification::parse_datagram(b""), Err(Malformed::Empty));
        assert_eq!(
            Notification::parse_datagram(b"READY=1\0"),
            Err(Malformed::NulByte)
        );
        assert_eq!(
            Notification::parse_datagram(b"STATUS=\xff"),
            Err(Malformed::NotUtf8)
        );
        let big = vec![b'a'; MAX_DATAGRAM + 1];
        assert_eq!(
            Notification::parse_datagram(&big),
            Err(Malformed::Oversized)
        );
    }
}
