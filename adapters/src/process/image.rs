//! The program image of one instance: its resolved path, argument vector and environment,
//! built before the clone as C strings and pointer arrays, because the child of a
//! multi-threaded process must not allocate before it execs.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::ptr;

use libc::c_char;

use super::error::SpawnError;
use super::scan::MARKER_VAR;
use super::spec::{EnvBase, ProcessSpec};

/// Where a bare program name is looked for when neither the spec nor the supervisor has a
/// `PATH` (the list `execvp` falls back to, plus `/usr/local/bin`).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `execve`'s three arguments, ready to pass. The pointer arrays point into the strings
/// owned alongside them, so the image must outlive the clone; it never leaves the spawner
/// thread (the raw pointers make it `!Send`).
pub(crate) struct Image {
    path: CString,
    _args: Vec<CString>,
    argv: Vec<*const c_char>,
    _env: Vec<CString>,
    envp: Vec<*const c_char>,
}

impl Image {
    /// Resolves the program and builds the vectors. A program that cannot be found or run is
    /// reported here, before any child exists, with the error `execvp` would have given.
    pub(crate) fn build(spec: &ProcessSpec, marker: &str) -> Result<Self, SpawnError> {
        let env = environment(spec, marker);
        let search = env
            .get(OsStr::new("PATH"))
            .cloned()
            .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
        let path = resolve(&spec.program, &search, spec.cwd.as_deref()).map_err(|source| {
            SpawnError::Exec {
                program: spec.program.clone(),
                source,
            }
        })?;
        let nul = |what| move |_| SpawnError::InteriorNul { what };
        let path = CString::new(path.into_os_string().into_vec()).map_err(nul("program"))?;
        // argv[0] is the program as the user wrote it, as a shell would pass it.
        let args = std::iter::once(&spec.program)
            .chain(&spec.args)
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(nul("argument"))?;
        let env = env
            .into_iter()
            .map(|(key, value)| {
                let mut pair = key.into_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                CString::new(pair)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(nul("environment variable"))?;
        Ok(Image {
            argv: pointers(&args),
            envp: pointers(&env),
            path,
            _args: args,
            _env: env,
        })
    }

    /// Replaces the calling process with the program. Returns only on failure, with the OS
    /// error number. Async-signal-safe: one system call on data built before the clone.
    pub(crate) fn exec(&self) -> i32 {
        // SAFETY: the path and both arrays are NUL-terminated and point into strings owned by
        // `self`, which lives across the call.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    }
}

/// A NULL-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// The child's environment: the supervisor's (unless cleared), then the spec's overrides in
/// order (a later one wins), then the instance marker, which nothing may override.
fn environment(spec: &ProcessSpec, marker: &str) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = match spec.env_base {
        EnvBase::Inherit => std::env::vars_os().collect(),
        EnvBase::Clear => BTreeMap::new(),
    };
    for (key, value) in &spec.env {
        env.insert(key.clone(), value.clone());
    }
    env.insert(OsString::from(MARKER_VAR), OsString::from(marker));
    env
}

/// Finds the file to exec, the way `execvp` does: a name containing `/` is used as is,
/// otherwise each directory of `search` is tried in order (an empty entry is the current
/// directory). A relative directory is taken from the child's working directory, `cwd`
/// (relative to ours), as `execvp` after the `chdir` would, and the path found is made
/// absolute so that the `chdir` cannot change what it names. A candidate that exists but cannot be executed is skipped, and reported as
/// `PermissionDenied` if nothing better is found; nothing at all is `NotFound`.
///
/// Unlike `execvp`, a file without a `#!` line that the kernel refuses (`ENOEXEC`) is not
/// retried with `/bin/sh`: it is a failed start, named as such.
fn resolve(program: &OsStr, search: &OsStr, cwd: Option<&Path>) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let mut denied = false;
    for dir in search.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = if dir.is_relative() {
            std::env::current_dir()?
                .join(cwd.unwrap_or(Path::new(".")))
                .join(dir)
                .join(program)
        } else {
            dir.join(program)
        };
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate)
            }
            Ok(_) => denied = true,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_searched_in_order_and_paths_are_kept() {
        let found = resolve(
            OsStr::new("sh"),
            OsStr::new("/nonexistent:/bin:/usr/bin"),
            None,
        )
        .expect("sh is in /bin");
        assert_eq!(found, Path::new("/bin/sh"));
        let kept = resolve(OsStr::new("./x/y"), OsStr::new("/bin"), None).expect("kept");
        assert_eq!(kept, Path::new("./x/y"));
    }

    #[test]
    fn relative_directories_are_taken_from_the_childs_working_directory() {
        // `sh` is in /bin, so "bin" relative to "/" finds it, and the result is absolute.
        let found = resolve(OsStr::new("sh"), OsStr::new("bin"), Some(Path::new("/")))
            .expect("found from /");
        assert!(found.is_absolute(), "{found:?}");
        assert!(found.ends_with("bin/sh"), "{found:?}");
        // From a directory without a bin/, nothing is found.
        let missing = resolve(
            OsStr::new("sh"),
            OsStr::new("bin"),
            Some(Path::new("/proc")),
        );
        assert_eq!(missing.expect_err("none").kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_and_non_executable_names_get_execvp_errors() {
        let missing = resolve(
            OsStr::new("definitely-missing-xyz"),
            OsStr::new("/bin"),
            None,
        )
        .expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // /etc/passwd exists but is not executable.
        let denied = resolve(OsStr::new("passwd"), OsStr::new("/etc"), None).expect_err("denied");
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
        let empty = resolve(OsStr::new(""), OsStr::new("/bin"), None).expect_err("empty");
        assert_eq!(empty.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn overrides_win_and_the_marker_cannot_be_overridden() {
        let spec = ProcessSpec::new("true")
            .clear_env()
            .env("A", "1")
            .env("A", "2")
            .env(MARKER_VAR, "forged");
        let env = environment(&spec, "real");
        assert_eq!(env.get(OsStr::new("A")), Some(&OsString::from("2")));
        assert_eq!(
            env.get(OsStr::new(MARKER_VAR)),
            Some(&OsString::from("real"))
        );
        assert_eq!(env.len(), 2);
    }
}
