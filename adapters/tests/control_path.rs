//! The default socket path. One test only: it changes environment variables, which must
//! not race with other tests of the same binary.

use std::path::PathBuf;

use processcontrol_adapters::control::default_socket_path;

/// Without a usable `XDG_RUNTIME_DIR`: a directory of the daemon's own, never a name in a
/// shared directory that someone else could take first.
fn fallback(uid: u32) -> PathBuf {
    if uid == 0 {
        PathBuf::from("/run/processcontrol/control.sock")
    } else {
        PathBuf::from(format!("/tmp/processcontrol-{uid}/control.sock"))
    }
}

#[test]
fn the_default_path_follows_the_environment() {
    let uid = nix::unistd::geteuid().as_raw();
    // SAFETY (of the environment changes): this test is alone in its binary, so no other
    // thread reads the environment meanwhile.
    std::env::set_var("PROCESSCONTROL_SOCKET", "/somewhere/pc.sock");
    std::env::set_var("XDG_RUNTIME_DIR", "/run/user/4242");
    assert_eq!(default_socket_path(), PathBuf::from("/somewhere/pc.sock"));

    std::env::set_var("PROCESSCONTROL_SOCKET", "");
    assert_eq!(
        default_socket_path(),
        PathBuf::from("/run/user/4242/processcontrol.sock")
    );

    std::env::remove_var("PROCESSCONTROL_SOCKET");
    assert_eq!(
        default_socket_path(),
        PathBuf::from("/run/user/4242/processcontrol.sock")
    );

    // A relative XDG_RUNTIME_DIR is ignored, as the XDG spec says; so is an empty one.
    for runtime in ["relative/dir", ""] {
        std::env::set_var("XDG_RUNTIME_DIR", runtime);
        assert_eq!(default_socket_path(), fallback(uid));
    }

    std::env::remove_var("XDG_RUNTIME_DIR");
    assert_eq!(default_socket_path(), fallback(uid));
}
