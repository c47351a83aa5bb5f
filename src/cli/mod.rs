//! The `processcontrol` command: argument parsing and the subcommands.

mod args;
mod exit;
mod run;

use clap::Parser;

pub use args::{Cli, Command, LogFormat};

/// Parses the command line and runs the subcommand; returns the process exit status.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    exit::USAGE
                } else {
                    0
                };
            }
            // One line, naming the flag: clap's first line without its "error: " prefix, and
            // the possible values when clap lists them.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let mut line = first.trim_start_matches("error: ").to_string();
            if let Some(values) = rendered
                .lines()
                .find_map(|l| l.trim().strip_prefix("[possible values: "))
            {
                line.push_str(&format!(
                    "; possible values: {}",
                    values.trim_end_matches(']')
                ));
            }
            return exit::usage(&line);
        }
    };
    init_logging(cli.log_format);
    match cli.command {
        Command::Run(args) => run::run(*args),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROCESSCONTROL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
