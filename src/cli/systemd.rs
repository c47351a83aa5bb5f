//! Telling systemd (or any service manager speaking its notify protocol) how the supervisor
//! itself is doing, when it runs us with `Type=notify`: `READY=1` once every process is
//! started and ready, `STATUS=` as that changes, `STOPPING=1` at shutdown, and `WATCHDOG=1`
//! every half `WATCHDOG_USEC`. Without `NOTIFY_SOCKET` all of it does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use processcontrol::adapters::http::not_ready;
use processcontrol::adapters::supervise::MemberStatus;

/// The service manager's notify socket, and what it was last told.
pub struct Systemd {
    socket: Arc<UnixDatagram>,
    addr: SocketAddr,
    ready_sent: bool,
    last_status: String,
    /// `WATCHDOG_USEC` when the watchdog is meant for this process.
    watchdog: Option<Duration>,
}

impl Systemd {
    /// From `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); `None` when unset
    /// or unusable (then said on stderr). The variables are taken out of the environment, so
    /// the supervised processes do not talk to the service manager in our name; call it
    /// before any thread starts.
    pub fn take_from_env() -> Option<Systemd> {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = watchdog_period();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        let path = path?;
        let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            None => SocketAddr::from_pathname(&path),
        };
        let opened = addr.and_then(|addr| {
            let socket = UnixDatagram::unbound()?;
            // A service manager that stopped reading must not block the supervisor.
            socket.set_nonblocking(true)?;
            Ok((socket, addr))
        });
        match opened {
            Ok((socket, addr)) => Some(Systemd {
                socket: Arc::new(socket),
                addr,
                ready_sent: false,
                last_status: String::new(),
                watchdog,
            }),
            Err(e) => {
                eprintln!("processcontrol: warning: cannot use NOTIFY_SOCKET={path:?}: {e}");
                None
            }
        }
    }

    /// Sends one message; a service manager that went away is not our problem.
    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            tracing::debug!("sd_notify {message:?}: {e}");
        }
    }

    /// Reports the processes' state: `STATUS=` when its text changed, and `READY=1` the first
    /// time nothing is left to wait for.
    pub fn update(&mut self, statuses: &[MemberStatus]) {
        let waiting: Vec<String> = statuses
            .iter()
            .filter_map(|s| not_ready(s).map(|why| format!("{}: {why}", s.status.name)))
            .collect();
        let status = if waiting.is_empty() {
            format!("{} process(es) ready", statuses.len())
        } else {
            format!(
                "{} of {} process(es) ready; {}",
                statuses.len() - waiting.len(),
                statuses.len(),
                waiting.join("; ")
            )
        };
        let ready_now = waiting.is_empty() && !self.ready_sent;
        if status != self.last_status || ready_now {
            let mut message = format!("STATUS={}", status.replace('\n', " "));
            if ready_now {
                message.push_str("\nREADY=1");
                self.ready_sent = true;
            }
            self.send(&message);
            self.last_status = status;
        }
    }

    /// The supervisor is stopping everything.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping every process");
    }

    /// A second handle on the same socket, for the shutdown message.
    pub fn handle(&self) -> Systemd {
        Systemd {
            socket: self.socket.clone(),
            addr: self.addr.clone(),
            ready_sent: self.ready_sent,
            last_status: self.last_status.clone(),
            watchdog: None,
        }
    }

    /// Pings the watchdog every half `WATCHDOG_USEC` for as long as the runtime runs.
    pub fn spawn_watchdog(&self) {
        let Some(usec) = self.watchdog else {
            return;
        };
        let (socket, addr) = (self.socket.clone(), self.addr.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(usec / 2);
            loop {
                ticks.tick().await;
                let _ = socket.send_to_addr(b"WATCHDOG=1", &addr);
            }
        });
    }
}

/// `WATCHDOG_USEC`, when the watchdog is meant for this process (`WATCHDOG_PID` unset or
/// ours).
fn watchdog_period() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|usec| *usec > 0)?;
    let ours = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    ours.then(|| Duration::from_micros(usec))
}
