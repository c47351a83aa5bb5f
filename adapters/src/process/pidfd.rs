//! The two pidfd system calls, which libc exposes only as raw syscall numbers.
//!
//! A pidfd names one process for as long as the descriptor is open, so a signal sent
//! through it can never hit an unrelated process that reused the pid.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Opens a pidfd for `pid`. Fails with `ENOSYS` on kernels before 5.3 (callers fall back to
/// plain `kill`) and `ESRCH` when the process has been reaped.
pub(crate) fn open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open(pid_t pid, unsigned int flags) takes two integers and touches no
    // memory of ours; it returns a new descriptor or -1 with errno set.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(ret).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just created this descriptor for us; nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd`, like `kill` but immune to pid reuse.
pub(crate) fn send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned int flags):
    // a NULL info makes the kernel build the same siginfo as kill(2); the fd is borrowed and
    // stays open for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn opens_own_pidfd_and_sends_null_like_signal() {
        let me = Pid::this();
        match open(me) {
            Ok(fd) => {
                // SIGCONT to ourselves is harmless and proves the descriptor works.
                assert_eq!(send_signal(fd.as_fd(), Signal::SIGCONT), Ok(()));
            }
            Err(Errno::ENOSYS) => {} // old kernel: the fallback path is used instead
            Err(other) => panic!("unexpected pidfd_open error {other}"),
        }
    }
}
