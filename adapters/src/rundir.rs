//! Where the supervisor keeps its sockets: a directory only its own user can write.
//!
//! A predictable path in a shared directory (`/tmp/processcontrol-<pid>`) can be created
//! first by another user, who then owns what is served inside it (notify sockets) or blocks
//! it (the control socket). So the base is, in order:
//!
//! 1. `$XDG_RUNTIME_DIR/processcontrol` when `XDG_RUNTIME_DIR` is set and absolute (a
//!    directory private to the user, by the XDG spec);
//! 2. `/run/processcontrol` for root (only root can write `/run`);
//! 3. otherwise a fresh `processcontrol-XXXXXX` made by `mkdtemp` in the temp directory, for
//!    this process only.
//!
//! Whatever was found or created is checked with `lstat`: a directory (not a symlink), owned
//! by the effective user, writable by nobody else. Directories are created `0711`: children
//! that dropped privileges can reach their own socket by its exact name, but nobody can list
//! the directory or add anything to it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of directories created here: traversable, not listable, writable only by us.
const DIR_MODE: u32 = 0o711;

/// The base directory for this process's sockets (see the module doc), created if needed
/// and checked. `Err` says which path is unsafe and why.
pub fn base_dir() -> io::Result<PathBuf> {
    base().map(|b| match b {
        Base::Shared(dir) | Base::Fresh(dir) => dir,
    })
}

/// A directory of this process's own, for sockets that live as long as it does:
/// `<base>/<name>` under the XDG or root base (created 0711 and checked; one left by an
/// earlier process with the same pid is ours too and is reused), else the fresh `mkdtemp`
/// directory itself. The caller removes it when done.
pub fn own_dir(name: &str) -> io::Result<PathBuf> {
    match base()? {
        Base::Shared(base) => ensure_private(&base.join(name)),
        Base::Fresh(dir) => Ok(dir),
    }
}

enum Base {
    /// Used by every supervisor of this user.
    Shared(PathBuf),
    /// Made for this call alone.
    Fresh(PathBuf),
}

fn base() -> io::Result<Base> {
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return ensure_private(&xdg.join("processcontrol")).map(Base::Shared);
    }
    if nix::unistd::geteuid().is_root() {
        return ensure_private(Path::new("/run/processcontrol")).map(Base::Shared);
    }
    let template = std::env::temp_dir().join("processcontrol-XXXXXX");
    let dir = nix::unistd::mkdtemp(&template).map_err(io::Error::from)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    check_private(&dir)?;
    Ok(Base::Fresh(dir))
}

/// Creates `dir` (mode 0711) if it does not exist, then checks it like any found directory.
pub fn ensure_private(dir: &Path) -> io::Result<PathBuf> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ))
        }
    }
    check_private(dir)?;
    Ok(dir.to_path_buf())
}

/// `lstat` says: a real directory, ours, and writable by no one else.
pub fn check_private(dir: &Path) -> io::Result<()> {
    let unsafe_dir = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} {why}: refusing to use it for sockets (remove it, or set XDG_RUNTIME_DIR)",
                dir.display()
            ),
        )
    };
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "belongs to uid {}, not to us (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}
