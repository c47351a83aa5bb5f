//! Creating a child and turning it into the program: `clone(CLONE_VM | CLONE_VFORK)` and the
//! child's few steps before `execve`.
//!
//! Why not `fork`: a forked child gets a copy of the supervisor's page tables, and until it
//! execs, every page either side writes is copied. Profiling 500 starts showed most of the
//! spawner's time there (page-table copy, copy-on-write faults, then tearing the copy down at
//! `exec`). A `CLONE_VM` child borrows the parent's memory instead, on a stack of its own,
//! and `CLONE_VFORK` suspends the calling thread (only it: the runtime's threads go on)
//! until the child has exec'd or exited. This is what `posix_spawn` does; it cannot be used
//! directly because it has no `setsid` before glibc 2.26, no parent-death signal, no cgroup
//! join, and reports errors less precisely.
//!
//! What the shared memory demands of the child, besides allocating nothing and taking no
//! lock: it writes only its own stack and [`Context::errno`]; it changes credentials with raw
//! system calls, because glibc's `setuid` family in a multi-threaded process signals every
//! *thread of the process* to switch too, which here would be the supervisor's own threads;
//! and no signal handler may run in it, since handlers would run the supervisor's code on
//! shared data. So the spawning thread blocks every signal around the clone, and the child
//! resets every caught signal to its default action before unblocking.
//!
//! Requirements and edges:
//! - glibc 2.24 or later (2016): before that, its `clone` wrapper wrote the child's pid into
//!   the calling thread's control block when `CLONE_VM` was set, which the shared memory
//!   would keep.
//! - Linux on x86_64 or aarch64: the raw `rt_sigaction` structure below is laid out for
//!   them (other targets do not compile).
//! - Joining a cgroup happens while the child still shares the supervisor's memory: if that
//!   cgroup's cpuset confines memory to other NUMA nodes with `memory_migrate` on, the kernel
//!   may move the shared pages, the supervisor's own. Instance cgroups are created by the
//!   supervisor without cpuset limits, so this takes a cpuset set on them from outside.

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!("the process adapter's clone-based spawner supports Linux on x86_64 and aarch64");

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_int, c_void};
use nix::unistd::{Gid, Pid, Uid};

use super::image::Image;

/// Credentials to switch to, resolved before the clone (lookups allocate and read files,
/// which the child must not do).
pub(crate) struct Credentials {
    pub(crate) uid: Option<Uid>,
    pub(crate) gid: Gid,
    pub(crate) groups: Vec<Gid>,
}

/// What the child does before `exec`, besides its standard descriptors and signals.
pub(crate) struct Setup {
    /// `cgroup.procs` of each hierarchy of the instance's cgroup.
    pub(crate) cgroup_procs: Vec<CString>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) cwd: Option<CString>,
    /// The supervisor, which the child must still be a child of once its death signal is set.
    pub(crate) parent: Pid,
}

/// Everything the child reads, and the one word it writes.
struct Context<'a> {
    image: &'a Image,
    /// The child's fds 0, 1 and 2 (close-on-exec in the parent; `dup2` clears that).
    stdio: &'a [BorrowedFd<'a>; 3],
    setup: &'a Setup,
    /// The OS error number of the step that failed; stays 0 when `exec` succeeds.
    errno: AtomicI32,
}

/// The child's stack: mapped once per spawner thread and reused, because the calling thread
/// is suspended until the child has left it (by `exec` or `_exit`). A guard page below it
/// turns an overflow into a crash of the child rather than a write into the supervisor.
pub(crate) struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is owned by the value and used by one thread at a time (the spawner,
// through the children it suspends for); moving that ownership to another thread is sound.
unsafe impl Send for ChildStack {}

/// Ample for the child's few frames (no allocation, no formatting).
const STACK_LEN: usize = 64 * 1024;

impl ChildStack {
    pub(crate) fn new() -> io::Result<Self> {
        let page = page_size();
        let len = STACK_LEN + page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the top, 16-byte aligned (the mapping is page-aligned).
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is what a downward stack starts at.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing uses any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Starts a child that becomes `image`. Returns its pid once it has exec'd, or the OS error
/// number of the step that failed (the child has then exited with 127 and must be reaped).
/// `Err((None, errno))` means no child was created.
pub(crate) fn start(
    stack: &mut ChildStack,
    image: &Image,
    stdio: &[BorrowedFd<'_>; 3],
    setup: &Setup,
) -> Result<Pid, (Option<Pid>, i32)> {
    let context = Context {
        image,
        stdio,
        setup,
        errno: AtomicI32::new(0),
    };
    let blocked = SignalsBlocked::new();
    // SAFETY: `child` runs on `stack`, which nothing else uses while this thread is suspended
    // (CLONE_VFORK); it reads `context`, which outlives the call because this thread cannot
    // resume before the child has exec'd or exited; and it follows the rules of the module
    // documentation.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            ptr::from_ref(&context).cast_mut().cast(),
        )
    };
    // Before the mask is restored, which may set errno.
    let clone_errno = last_errno();
    drop(blocked);
    if pid < 0 {
        return Err((None, clone_errno));
    }
    let pid = Pid::from_raw(pid);
    match context.errno.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => Err((Some(pid), errno)),
    }
}

/// Blocks every signal on the calling thread until dropped, so that the child starts with
/// all of them blocked and no handler of the supervisor can run in it. With the raw system
/// call: the C library's `sigfillset` leaves out its own reserved signals, whose handlers
/// must not run in the child either.
struct SignalsBlocked {
    old: u64,
}

/// The kernel's signal set: one bit per signal, 64 signals on Linux.
const SIGSET_SIZE: usize = std::mem::size_of::<u64>();

impl SignalsBlocked {
    fn new() -> Self {
        let all = u64::MAX;
        let mut old = 0u64;
        // SAFETY: rt_sigprocmask with valid pointers to kernel-sized sets on the stack.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all,
                &mut old,
                SIGSET_SIZE,
            )
        };
        SignalsBlocked { old }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.old,
                ptr::null_mut::<u64>(),
                SIGSET_SIZE,
            )
        };
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// The child's entry point. Never returns: it execs, or records why not and exits.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Context` that `start` passed, alive while its thread waits.
    let context = unsafe { &*arg.cast::<Context<'_>>() };
    let errno = match prepare(context.stdio, context.setup) {
        Ok(()) => context.image.exec(),
        Err(errno) => errno,
    };
    context.errno.store(errno, Ordering::Release);
    // SAFETY: ends the child without running anything of the parent's (no atexit handlers,
    // no destructors, no stdio flush).
    unsafe { libc::_exit(127) }
}

/// The child's steps before `exec`, in order; returns the OS error number of the first that
/// failed. Only async-signal-safe system calls on data prepared before the clone.
fn prepare(stdio: &[BorrowedFd<'_>; 3], setup: &Setup) -> Result<(), i32> {
    reset_signals();
    for (target, fd) in (0..).zip(stdio) {
        let fd = fd.as_raw_fd();
        // SAFETY: fcntl and dup2 on descriptor numbers; the target is replaced atomically.
        let done = unsafe {
            if fd == target {
                // dup2 onto itself would keep close-on-exec.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if done < 0 {
            return Err(last_errno());
        }
    }
    // First, while we still have the supervisor's privileges to move ourselves, and before
    // the program can fork: every process of the instance is born inside its cgroup.
    for procs in &setup.cgroup_procs {
        join_cgroup(procs)?;
    }
    if let Some(creds) = &setup.credentials {
        switch_credentials(creds)?;
    }
    if let Some(cwd) = &setup.cwd {
        // SAFETY: a NUL-terminated path that outlives the call.
        check(unsafe { libc::chdir(cwd.as_ptr()) })?;
    }
    // After the credential change, which would clear it.
    // SAFETY: plain prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
    // If the supervisor died before the line above, the signal will never come: we were
    // already reparented, so give up instead of running unsupervised.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != setup.parent.as_raw() {
        return Err(libc::ESRCH);
    }
    // Own session and process group: the instance can be signalled as a whole, and a
    // terminal's job control signals never reach it.
    // SAFETY: setsid has no preconditions.
    check(unsafe { libc::setsid() })?;
    // The program starts with no signal blocked.
    let none = 0u64;
    // SAFETY: rt_sigprocmask with a kernel-sized empty set on the stack.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none,
            ptr::null_mut::<u64>(),
            SIGSET_SIZE,
        )
    })?;
    Ok(())
}

fn check(result: c_int) -> Result<(), i32> {
    if result < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction` (the same on x86_64 and aarch64, both
/// of which have `sa_restorer`); raw, because the C library refuses to touch its own reserved
/// signals, which must not stay ignored in the program either.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Every caught signal back to its default action (a handler of the supervisor must never
/// run here, and `exec` would reset it anyway), and SIGPIPE and the C library's reserved
/// real-time signals too: the Rust runtime ignores SIGPIPE, and an ignored signal stays
/// ignored across `exec`. Other ignored signals are inherited, as `nohup` intends. Runs while
/// every signal is still blocked.
fn reset_signals() {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let size = std::mem::size_of::<u64>();
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut current = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction with a valid out-pointer and the kernel's sigset size.
        let queried = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                ptr::null::<KernelSigaction>(),
                &mut current,
                size,
            )
        };
        if queried != 0 {
            continue;
        }
        let caught = current.handler != libc::SIG_DFL && current.handler != libc::SIG_IGN;
        let reserved = (32..libc::SIGRTMIN()).contains(&signal);
        if caught || reserved || signal == libc::SIGPIPE {
            // SAFETY: as above, setting the default disposition.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &default,
                    ptr::null_mut::<KernelSigaction>(),
                    size,
                )
            };
        }
    }
}

/// Groups, then group, then user, with raw system calls (see the module documentation).
fn switch_credentials(creds: &Credentials) -> Result<(), i32> {
    let groups: &[Gid] = &creds.groups;
    // SAFETY: `Gid` is a transparent wrapper of `gid_t`, so the slice is an array of
    // `groups.len()` gids; the other calls take integers.
    unsafe {
        check_long(libc::syscall(
            libc::SYS_setgroups,
            groups.len(),
            groups.as_ptr(),
        ))?;
        check_long(libc::syscall(libc::SYS_setgid, creds.gid.as_raw()))?;
        if let Some(uid) = creds.uid {
            check_long(libc::syscall(libc::SYS_setuid, uid.as_raw()))?;
        }
    }
    Ok(())
}

fn check_long(result: libc::c_long) -> Result<(), i32> {
    if result < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` ("0" names the
/// writer), with raw `openat`, `write` and `close`: the C library's are cancellation points,
/// which touch the spawning thread's state, shared with the child.
fn join_cgroup(procs: &CStr) -> Result<(), i32> {
    // SAFETY: `procs` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            procs.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: writes one byte from a static buffer to the descriptor opened above.
    let written = unsafe { libc::syscall(libc::SYS_write, fd, b"0".as_ptr(), 1usize) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(last_errno())
    };
    // SAFETY: closes the descriptor opened above, which nothing else uses.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    result
}
