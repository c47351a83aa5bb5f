//! How a leader ended, decoded from the raw `waitpid` status.

use std::fmt;

/// How the leader of an instance ended.
///
/// A small enum of our own (rather than std's or nix's) so that every raw status can be
/// represented, including real-time signals that `nix::sys::signal::Signal` cannot name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The process called `exit` with this code (0..=255).
    Exited(i32),
    /// The process was terminated by this signal number.
    Signaled {
        /// Raw signal number (e.g. 9 for SIGKILL).
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Whether the process reported success, the only status an exec probe accepts.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The exit code, for policies keyed on it (e.g. "exit 0 means done").
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(*code),
            ExitStatus::Signaled { .. } => None,
        }
    }

    /// The terminating signal, to tell a requested stop from a crash.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled { signal, .. } => Some(*signal),
        }
    }

    /// Decodes a raw status from `waitpid`; `None` for stop/continue reports, which the
    /// reaper never asks for.
    pub(crate) fn from_raw(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                write!(f, "killed by {name}")?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn decodes_exit_and_signal() {
        // Raw wait statuses as the kernel encodes them.
        assert_eq!(ExitStatus::from_raw(3 << 8), Some(ExitStatus::Exited(3)));
        assert_eq!(
            ExitStatus::from_raw(9),
            Some(ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            })
        );
        assert_eq!(
            ExitStatus::from_raw(0x80 | 11),
            Some(ExitStatus::Signaled {
                signal: 11,
                core_dumped: true
            })
        );
        // Stopped by SIGSTOP: not a termination.
        assert_eq!(ExitStatus::from_raw((19 << 8) | 0x7f), None);
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(ExitStatus::Exited(0).to_string(), "exited with code 0");
        assert_eq!(
            ExitStatus::Signaled {
                signal: 15,
                core_dumped: false
            }
            .to_string(),
            "killed by SIGTERM"
        );
    }
}
