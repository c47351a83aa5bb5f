//! The supervisor's own descriptors, put in order before anything starts.
//!
//! Whatever started the supervisor may have left descriptors open without close-on-exec (a
//! shell's redirections, a container runtime's sockets, a parent's leaked pipes). Every
//! child would inherit them: a service could then read or write what only the supervisor
//! was given. And a closed 0, 1 or 2 would make the next file we open take that number, so a
//! child's "stdout" could be some log file.

use std::os::fd::{AsRawFd, IntoRawFd};

/// Makes every descriptor above 2 close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`,
/// or one `fcntl` per open descriptor on kernels before 5.11), and opens `/dev/null` on any
/// of 0, 1, 2 that is closed. Call it first thing in `main`, before any thread starts.
pub fn seal_inherited_descriptors() {
    for fd in 0..=2 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // The lowest free number is `fd` itself, since the lower ones are open.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(fd == 0)
                .write(fd != 0)
                .open("/dev/null")
            {
                if null.as_raw_fd() == fd {
                    let _ = null.into_raw_fd();
                }
            }
        }
    }
    // SAFETY: close_range(2) takes three integers and touches no memory; with
    // CLOSE_RANGE_CLOEXEC it only sets a flag on descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(open) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = open
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}
