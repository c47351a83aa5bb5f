//! Exit statuses of the `processcontrol` command. Scripts depend on them; docs/cli.md lists
//! them.

use processcontrol::ExitStatus;

/// The supervisor gave up: the circuit breaker opened with `--breaker-cooldown never`.
/// Chosen outside 0-2 and 126-255, where programs and shells put their own meanings.
pub const GAVE_UP: u8 = 125;

/// A usage or configuration error: one line on stderr naming the problem.
pub const USAGE: u8 = 2;

/// Prints a usage or configuration error as one line and returns [`USAGE`].
pub fn usage(message: &str) -> u8 {
    // In the order of the narration said before it (queued, never blocking a runtime worker).
    processcontrol::adapters::logs::write_stderr(
        format!("processcontrol: error: {message}\n").into_bytes(),
    );
    USAGE
}

/// The program's own exit status: its code, or 128 + the signal that ended it (an OOM kill
/// is a SIGKILL: 137).
pub fn from_status(status: ExitStatus) -> u8 {
    match status {
        ExitStatus::Code(code) => (code & 0xff) as u8,
        ExitStatus::Signal(signal) => 128u8.saturating_add((signal & 0x7f) as u8),
        ExitStatus::OomKilled => 137,
    }
}
