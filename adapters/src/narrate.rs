//! Narration: one plain line per decision, for the operator watching `run` or `up`
//! (`12:21:05 web: exited with 1 (unexpected), restart 2 in 200 ms`).
//!
//! The narrator only reads the event stream and says what the core decided; it decides
//! nothing. Its lines are formatted here and written by a [`Voice`], so the formatting can be
//! tested without a terminal and the writing mechanism can change without touching it.
//!
//! An exit is held back for a moment ([`HOLD`]) so that what follows from it (a restart after
//! a delay, the end of the process) can complete the same line; it is printed alone if
//! nothing follows in time.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use processcontrol_core::StateName;
use tokio::sync::broadcast;

use crate::human;
use crate::runtime::{Event, What};
use crate::supervise::Summary;

/// How long an exit line waits for what follows from it.
pub const HOLD: Duration = Duration::from_millis(500);

/// How narration is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Plain lines for people, with ANSI colours or without.
    Human {
        /// Whether to colour (a terminal, and no `NO_COLOR`).
        colour: bool,
    },
    /// The narrated events as JSON lines, for machines.
    Json,
    /// Nothing (`-q`).
    Quiet,
}

impl Form {
    /// Human lines, coloured when stderr is a terminal and `NO_COLOR` is not set.
    pub fn human_for_stderr() -> Form {
        Form::Human {
            colour: colour_for(std::io::stderr().is_terminal()),
        }
    }
}

/// Whether output to a terminal (or not) gets colours: only on a terminal, and never when the
/// `NO_COLOR` variable is set to anything but the empty string (<https://no-color.org>).
pub fn colour_for(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The kind of a line, which picks its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Routine: a start, a stop.
    Info,
    /// Good news: ready, a breaker closed.
    Good,
    /// Something to look at: a failing probe, a warning limit.
    Warn,
    /// A failure: an unexpected exit, giving up.
    Bad,
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

fn tone_colour(tone: Tone) -> Option<&'static str> {
    match tone {
        Tone::Info => None,
        Tone::Good => Some("\x1b[32m"),
        Tone::Warn => Some("\x1b[33m"),
        Tone::Bad => Some("\x1b[31m"),
    }
}

/// The colour of a process's name: the same name always gets the same one.
pub fn name_colour(name: &str) -> &'static str {
    const PALETTE: [&str; 6] = [
        "\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[32m", "\x1b[96m",
    ];
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// One narrated line: `12:21:05 web: ready`, or `12:21:05 3 processes up` without a process.
pub fn line(colour: bool, at: SystemTime, process: Option<&str>, text: &str, tone: Tone) -> String {
    let time = human::clock(at);
    if !colour {
        return match process {
            Some(p) => format!("{time} {p}: {text}"),
            None => format!("{time} {text}"),
        };
    }
    let text = match tone_colour(tone) {
        Some(c) => format!("{c}{text}{RESET}"),
        None => text.to_string(),
    };
    match process {
        Some(p) => format!("{DIM}{time}{RESET} {}{p}{RESET}: {text}", name_colour(p)),
        None => format!("{DIM}{time}{RESET} {text}"),
    }
}

/// Writes narration to stderr in one form. Cheap to copy; every line is queued whole for the
/// stderr writer thread, so it never interleaves with another writer's line and never waits
/// for a stalled stderr.
#[derive(Clone, Copy, Debug)]
pub struct Voice {
    form: Form,
}

impl Voice {
    /// A voice writing in `form`.
    pub fn new(form: Form) -> Voice {
        Voice { form }
    }

    /// The form it writes in.
    pub fn form(&self) -> Form {
        self.form
    }

    /// Says one line (about `process`, or about the whole supervisor). In the JSON form it is
    /// written as `{"time":…,"process":…,"message":…}`.
    pub fn say(&self, process: Option<&str>, text: &str, tone: Tone) {
        let line = match self.form {
            Form::Quiet => return,
            Form::Human { colour } => line(colour, SystemTime::now(), process, text, tone),
            Form::Json => serde_json::json!({
                "time": crate::runtime::now_rfc3339(),
                "process": process,
                "message": text,
            })
            .to_string(),
        };
        write_line(&line);
    }

    fn said(&self, said: &Said) {
        match self.form {
            Form::Quiet => {}
            Form::Human { colour } => write_line(&line(
                colour,
                said.at,
                Some(&said.process),
                &said.text,
                said.tone,
            )),
            Form::Json => {
                if let Some(event) = &said.event {
                    write_line(&event.to_json_line());
                }
            }
        }
    }
}

/// Queued for the stderr thread: narration is said from runtime workers, which must never
/// wait for a stalled stderr.
fn write_line(line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    crate::logs::write_stderr(bytes);
}

/// A line the narrator decided to say.
#[derive(Clone, Debug, PartialEq)]
pub struct Said {
    /// When what it tells happened.
    pub at: SystemTime,
    /// The process it is about.
    pub process: Arc<str>,
    /// The text, without time or name.
    pub text: String,
    /// Its kind.
    pub tone: Tone,
    /// The event it tells (the first, for a merged line), for the JSON form.
    pub event: Option<Arc<Event>>,
}

/// An exit line waiting for what follows from it.
#[derive(Debug)]
struct Held {
    said: Said,
    since: Instant,
}

/// Turns events into lines; keeps only the exit lines being held back.
#[derive(Debug, Default)]
pub struct Narrator {
    held: Vec<Held>,
}

impl Narrator {
    /// A narrator with nothing held.
    pub fn new() -> Narrator {
        Narrator::default()
    }

    /// The lines for one event, at `now` (held lines of its process come first).
    pub fn event(&mut self, event: &Arc<Event>, now: Instant) -> Vec<Said> {
        let mut out = Vec::new();
        let held = self
            .held
            .iter()
            .position(|h| h.said.process == event.process)
            .map(|i| self.held.remove(i));
        if let Some(mut held) = held {
            if let Some(tail) = completion(event) {
                held.said.text.push_str(&tail);
                out.push(held.said);
                return out;
            }
            out.push(held.said);
        }
        let Some((text, tone)) = text(event) else {
            return out;
        };
        let said = Said {
            at: crate::logs::time::parse_rfc3339(&event.time).unwrap_or_else(SystemTime::now),
            process: event.process.clone(),
            text,
            tone,
            event: Some(event.clone()),
        };
        if holds(event) {
            self.held.push(Held { said, since: now });
        } else {
            out.push(said);
        }
        out
    }

    /// The held lines whose time is up at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Said> {
        let (due, keep) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| now.saturating_duration_since(h.since) >= HOLD);
        self.held = keep;
        due.into_iter().map(|h: Held| h.said).collect()
    }

    /// When the next held line is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.since + HOLD).min()
    }

    /// Every held line, now (at the end).
    pub fn flush(&mut self) -> Vec<Said> {
        self.held.drain(..).map(|h| h.said).collect()
    }
}

/// Whether the event's line waits for what follows (an unplanned exit).
fn holds(event: &Event) -> bool {
    matches!(
        &event.what,
        What::Transition { cause, from, .. }
            if (*cause == "exited" || *cause == "oom_killed")
                && matches!(from, StateName::Running | StateName::Starting)
    )
}

/// What an event adds to a held exit line, if it is what follows from that exit.
fn completion(event: &Event) -> Option<String> {
    match &event.what {
        What::BackoffScheduled { delay_ms, restart } => Some(format!(
            ", restart {restart} in {}",
            human::duration(Duration::from_millis(*delay_ms))
        )),
        What::Transition {
            to: StateName::Exited,
            cause: "gone",
            ..
        } => Some(": done".into()),
        What::Transition {
            to: StateName::Failed,
            cause: "gone",
            ..
        } => Some(": not restarted (restart policy)".into()),
        What::Transition {
            from: StateName::Restarting,
            to: StateName::Starting | StateName::Running,
            cause: "spawned",
            ..
        } => Some(match event.pid {
            Some(pid) => format!(", restarted at once, pid {pid}"),
            None => ", restarted at once".into(),
        }),
        _ => None,
    }
}

/// The line an event gets on its own, if any.
fn text(event: &Event) -> Option<(String, Tone)> {
    let pid = |p: Option<u32>| p.map_or_else(String::new, |p| format!(", pid {p}"));
    Some(match &event.what {
        What::Transition {
            from,
            to,
            cause,
            reason,
            expected,
            next_trial,
            ..
        } => match (*cause, *to) {
            ("spawned", StateName::Running) => (format!("started{}", pid(event.pid)), Tone::Info),
            ("spawned", StateName::Starting) => (
                format!("started{}, waiting for its startup probe", pid(event.pid)),
                Tone::Info,
            ),
            ("startup_passed", _) => ("startup probe passed: running".into(), Tone::Good),
            ("exited" | "oom_killed", _)
                if matches!(from, StateName::Running | StateName::Starting) =>
            {
                let reason = reason.clone().unwrap_or_else(|| "exited".into());
                match expected {
                    Some(true) => (format!("{reason} (expected)"), Tone::Info),
                    _ => (format!("{reason} (unexpected)"), Tone::Bad),
                }
            }
            (_, StateName::BreakerOpen) => {
                let why = reason.as_deref().unwrap_or("too many restarts");
                let next = match next_trial.as_deref().and_then(human::clock_of) {
                    Some(at) => format!("next trial at {at}"),
                    None => "no further trial".into(),
                };
                (format!("gave up: {why}, breaker open, {next}"), Tone::Bad)
            }
            ("cooldown_elapsed", _) => {
                ("breaker cooldown over: one trial start".into(), Tone::Warn)
            }
            ("manual_restart", _) => ("restarting on request".into(), Tone::Info),
            ("reload", _) => ("restarting: its configuration changed".into(), Tone::Info),
            ("reset_breaker", _) => ("breaker reset".into(), Tone::Info),
            ("grace_elapsed", _) => (
                "still running after the stop grace period: killing its process group".into(),
                Tone::Warn,
            ),
            ("gone", StateName::Stopped) => ("stopped".into(), Tone::Info),
            ("gone", StateName::Killed) => ("killed".into(), Tone::Warn),
            ("gone", StateName::Exited) => ("finished".into(), Tone::Info),
            ("gone", StateName::Failed) => {
                ("failed: not restarted (restart policy)".into(), Tone::Bad)
            }
            _ => return None,
        },
        What::Ready { ready: true, .. } => ("ready".into(), Tone::Good),
        What::Ready {
            ready: false,
            reason: Some(reason),
        } => (format!("not ready: {reason}"), Tone::Warn),
        What::ProbeFailed {
            probe,
            consecutive,
            threshold,
            reason,
            ..
        } => {
            let reached = consecutive == threshold;
            match (*probe, reached) {
                ("liveness", false) => (
                    format!("liveness failed {consecutive}/{threshold}: {reason}"),
                    Tone::Warn,
                ),
                ("liveness" | "startup", true) => (
                    format!("{probe} failed {consecutive}/{threshold}: {reason}: restarting"),
                    Tone::Bad,
                ),
                _ => return None,
            }
        }
        What::LimitExceeded { action, reason, .. } => match *action {
            "warn" => (format!("{reason} (warning only)"), Tone::Warn),
            "restart" => (format!("{reason}: restarting"), Tone::Bad),
            "graceful-shutdown" => (format!("{reason}: stopping"), Tone::Bad),
            "kill" => (format!("{reason}: killing"), Tone::Bad),
            other => (format!("{reason}: {other}"), Tone::Bad),
        },
        What::SpawnFailed { reason, .. } => (format!("cannot start: {reason}"), Tone::Bad),
        What::BreakerClosed => (
            "breaker closed: the trial instance stayed up".into(),
            Tone::Good,
        ),
        What::BackoffScheduled { delay_ms, restart } => (
            format!(
                "restart {restart} in {}",
                human::duration(Duration::from_millis(*delay_ms))
            ),
            Tone::Info,
        ),
        _ => return None,
    })
}

/// Narrates every event of `events`, and the group's `summaries`, in `voice` (an `up`
/// daemon's narration task) until the streams close or `until` resolves; then tells what was
/// already published and the held lines, so a shutdown's last lines are not lost.
pub async fn narrate(
    mut events: broadcast::Receiver<Arc<Event>>,
    mut summaries: broadcast::Receiver<Arc<Summary>>,
    voice: Voice,
    until: impl std::future::Future<Output = ()>,
) {
    let mut narrator = Narrator::new();
    tokio::pin!(until);
    let mut summaries_open = true;
    loop {
        let due = narrator.next_due();
        let wake = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The events a summary sums up were published before it: they are told first.
            biased;
            event = events.recv() => match event {
                Ok(event) => {
                    for said in narrator.event(&event, Instant::now()) {
                        voice.said(&said);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    voice.say(None, &format!("narration fell behind: {n} events not told"), Tone::Warn);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            summary = summaries.recv(), if summaries_open => match summary {
                Ok(summary) => voice.say(None, &summary.text(), Tone::Info),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => summaries_open = false,
            },
            () = wake => {
                for said in narrator.due(Instant::now()) {
                    voice.said(&said);
                }
            }
            () = &mut until => {
                while let Ok(event) = events.try_recv() {
                    for said in narrator.event(&event, Instant::now()) {
                        voice.said(&said);
                    }
                }
                for said in narrator.flush() {
                    voice.said(&said);
                }
                while let Ok(summary) = summaries.try_recv() {
                    voice.say(None, &summary.text(), Tone::Info);
                }
                return;
            }
        }
    }
    for said in narrator.flush() {
        voice.said(&said);
    }
}

impl Voice {
    /// Tells lines the narrator decided on (for callers that drive a [`Narrator`] themselves).
    pub fn tell(&self, lines: &[Said]) {
        for said in lines {
            self.said(said);
        }
    }
}

/// The summary once a group's boot order is done: `3 processes up, web ready, in 1.8 s`.
pub fn start_summary(up: usize, ready: &[&str], took: Duration) -> String {
    let noun = if up == 1 { "process" } else { "processes" };
    let ready = if ready.is_empty() {
        String::new()
    } else {
        format!(", {} ready", ready.join(", "))
    };
    format!("{up} {noun} up{ready}, in {}", human::seconds(took))
}

/// The summary of a shutdown: `stopped worker, web, db in 0.4 s` (in the order they stopped).
pub fn shutdown_summary(stopped: &[&str], took: Duration) -> String {
    if stopped.is_empty() {
        return format!("nothing to stop, in {}", human::seconds(took));
    }
    format!("stopped {} in {}", stopped.join(", "), human::seconds(took))
}

/// The summary of a reload: `reloaded: started api; restarted web; stopped old; 2 unchanged`.
pub fn reload_summary(
    started: &[&str],
    restarted: &[&str],
    stopped: &[&str],
    unchanged: usize,
) -> String {
    let mut parts = Vec::new();
    for (verb, names) in [
        ("started", started),
        ("restarted", restarted),
        ("stopped", stopped),
    ] {
        if !names.is_empty() {
            parts.push(format!("{verb} {}", names.join(", ")));
        }
    }
    parts.push(format!("{unchanged} unchanged"));
    format!("reloaded: {}", parts.join("; "))
}

#[cfg(test)]
mod tests;
