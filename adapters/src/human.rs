//! Figures as people read them in narration, status and reasons: `200 ms`, `1.8 s`, `5 min`,
//! `73.1 MiB`, `12:26:05`. Scripts get the raw numbers in JSON instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration at a precision that suits its size: `0 ms`, `250 ms`, `1.8 s`, `10 s`,
/// `5 min`, `1 h 30 min`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 10_000 && ms % 1000 != 0 => format!("{:.1} s", d.as_secs_f64()),
        ms if ms < 120_000 => format!("{} s", d.as_secs()),
        _ => {
            let (h, min, s) = (
                d.as_secs() / 3600,
                d.as_secs() % 3600 / 60,
                d.as_secs() % 60,
            );
            match (h, s) {
                (0, 0) => format!("{min} min"),
                (0, s) => format!("{min} min {s} s"),
                (h, _) if min == 0 => format!("{h} h"),
                (h, _) => format!("{h} h {min} min"),
            }
        }
    }
}

/// A short elapsed time in seconds with one decimal, as summaries give it: `0.4 s`, `1.8 s`.
pub fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A byte count in binary units: `512 B`, `64 MiB`, `73.1 MiB`, `1.5 GiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut value = b as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if b % (1u64 << (10 * (unit + 1))) == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A wall-clock time of day in the local time zone, `HH:MM:SS` (UTC where the zone is
/// unknown).
pub fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    let mut tm: libc::tm = unsafe {
        // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
        std::mem::zeroed()
    };
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe and only
    // writes into `tm`.
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    if !ok {
        let day = secs.rem_euclid(86_400);
        return format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60);
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// [`clock`] of an RFC 3339 time, as events and status carry them.
pub fn clock_of(rfc3339: &str) -> Option<String> {
    crate::logs::time::parse_rfc3339(rfc3339).map(clock)
}

/// A signal number with its name where known: `signal 9 (SIGKILL)`.
pub fn signal(n: i32) -> String {
    match signal_name(n) {
        Some(name) => format!("signal {n} ({name})"),
        None => format!("signal {n}"),
    }
}

/// The name of a signal number (`SIGKILL`), if it is one.
pub fn signal_name(n: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(n)
        .ok()
        .map(|s| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(200)), "200 ms");
        assert_eq!(duration(Duration::from_millis(1800)), "1.8 s");
        assert_eq!(duration(Duration::from_secs(10)), "10 s");
        assert_eq!(duration(Duration::from_secs(60)), "60 s");
        assert_eq!(duration(Duration::from_secs(300)), "5 min");
        assert_eq!(duration(Duration::from_secs(330)), "5 min 30 s");
        assert_eq!(duration(Duration::from_secs(5400)), "1 h 30 min");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(76_665_241), "73.1 MiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(signal(9), "signal 9 (SIGKILL)");
        assert_eq!(signal(99), "signal 99");
    }
}
