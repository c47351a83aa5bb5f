//! The `processcontrol` command. See `processcontrol --help` and docs/cli.md.

mod cli;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cli::main())
}
