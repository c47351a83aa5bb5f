//! Finding the program a command names, the way the spawner will: a name with a slash is a
//! path (relative ones from the working directory the program gets), a bare name is searched
//! in `PATH`. Checked at load time so a typo is reported with its line, not as a crash loop.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where `program` is found, or `None` when it is missing or not executable.
pub(crate) fn find_program(program: &str, cwd: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let path = resolve(program, cwd);
        return executable(&path).then_some(path);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// `program` made absolute against `cwd` if it is a relative path (`./` parts dropped, so
/// messages show a clean path; `..` is kept, as symbolic links make it meaningful).
pub(crate) fn resolve(program: &str, cwd: &Path) -> PathBuf {
    cwd.join(program).components().collect()
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
