//! The `processcontrol` command: argument parsing and the subcommands.

mod args;
mod client;
mod ending;
mod events_out;
mod exit;
mod run;
mod systemd;
mod up;

use std::io::IsTerminal;

use clap::Parser;
use processcontrol::adapters::narrate;

pub use args::{Cli, Command, LogFormat};

/// How long the end waits for a stdout or stderr that takes none of the last lines.
const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Parses the command line and runs the subcommand; returns the process exit status.
pub fn main() -> u8 {
    // Before anything else: no inherited descriptor may reach the children.
    processcontrol::adapters::process::seal_inherited_descriptors();
    let code = dispatch();
    // The last lines (the shutdown's summary, a process's last words) are still queued for
    // the writer threads.
    processcontrol::adapters::logs::drain_output(DRAIN_PATIENCE);
    code
}

/// Runs what the command line says.
fn dispatch() -> u8 {
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
            if line.ends_with(':') {
                // clap lists the missing arguments on the following lines.
                let rest: Vec<&str> = rendered
                    .lines()
                    .skip(1)
                    .map(str::trim)
                    .take_while(|l| !l.is_empty())
                    .collect();
                line = format!("{line} {}", rest.join(", "));
            }
            // clap's "did you mean": `tip: a similar argument exists: '--restart'`.
            for tip in rendered
                .lines()
                .filter_map(|l| l.trim().strip_prefix("tip: "))
            {
                line.push_str(&format!("; {tip}"));
            }
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
    let colour = narrate::colour_for(std::io::stderr().is_terminal());
    init_logging(cli.log_format, colour);
    let voice = narrate::Voice::new(match (cli.quiet, cli.log_format) {
        (true, _) => narrate::Form::Quiet,
        (false, LogFormat::Json) => narrate::Form::Json,
        (false, LogFormat::Human) => narrate::Form::Human { colour },
    });
    use processcontrol::adapters::control::{default_socket_path, Request};
    let socket = |s: args::SocketArg| s.socket.unwrap_or_else(default_socket_path);
    match cli.command {
        Command::Run(args) => run::run(*args, voice),
        Command::Up(args) => {
            let end = match (args.exit_code_from, args.exit_on_end) {
                (Some(name), _) => Some(ending::EndWhen::Process(name)),
                (None, true) => Some(ending::EndWhen::All),
                (None, false) => None,
            };
            up::up(
                args.config.file,
                args.socket.socket,
                args.http.addr,
                end,
                args.timestamps,
                voice,
            )
        }
        Command::Check(config) => match up::load(&config.file) {
            Ok(config) => {
                println!("ok: {} process(es)", config.processes.len());
                0
            }
            Err(code) => code,
        },
        Command::Status {
            name,
            json,
            socket: s,
        } => client::call(&socket(s), Request::Status { name }, json),
        Command::Start {
            target: t,
            wait,
            socket: s,
        } => {
            let request = Request::Start {
                name: t.name,
                all: t.all,
                wait_ms: Some(wait.wait_ms()),
            };
            client::command(&socket(s), request, &wait)
        }
        Command::Stop {
            target: t,
            grace,
            wait,
            socket: s,
        } => {
            let request = Request::Stop {
                name: t.name,
                all: t.all,
                grace_ms: grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
                wait_ms: Some(wait.wait_ms()),
            };
            client::command(&socket(s), request, &wait)
        }
        Command::Restart {
            target: t,
            force,
            wait,
            socket: s,
        } => {
            let request = Request::Restart {
                name: t.name,
                all: t.all,
                force,
                wait_ms: Some(wait.wait_ms()),
            };
            client::command(&socket(s), request, &wait)
        }
        Command::Kill(n) => {
            let request = Request::Kill {
                name: n.name,
                wait_ms: Some(n.wait.wait_ms()),
            };
            client::command(&socket(n.socket), request, &n.wait)
        }
        Command::Reset(n) => {
            let request = Request::Reset {
                name: n.name,
                wait_ms: Some(n.wait.wait_ms()),
            };
            client::command(&socket(n.socket), request, &n.wait)
        }
        Command::Signal {
            name,
            signal,
            json,
            socket: s,
        } => {
            let request = Request::Signal {
                name,
                signal: signal.name().to_string(),
            };
            let wait = args::WaitArgs {
                no_wait: true,
                timeout: std::time::Duration::ZERO,
                json,
            };
            client::command(&socket(s), request, &wait)
        }
        Command::Logs {
            name,
            follow,
            lines,
            json,
            socket: s,
        } => client::call(
            &socket(s),
            Request::Logs {
                name,
                follow,
                lines: Some(lines),
            },
            json,
        ),
        Command::Events {
            follow,
            lines,
            socket: s,
        } => client::call(&socket(s), Request::Events { follow, lines }, false),
        Command::Reload { wait, socket: s } => {
            let request = Request::Reload {
                wait_ms: Some(wait.wait_ms()),
            };
            client::command(&socket(s), request, &wait)
        }
        Command::Shutdown { wait, socket: s } => {
            let request = Request::Shutdown {
                wait_ms: Some(wait.wait_ms()),
            };
            client::command(&socket(s), request, &wait)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                shell,
                &mut command,
                "processcontrol",
                &mut std::io::stdout(),
            );
            0
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => exit::usage(&format!("cannot write the man page: {e}")),
            }
        }
    }
}

/// The supervisor's own log on stderr: ANSI colours only where narration gets them too.
fn init_logging(format: LogFormat, colour: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROCESSCONTROL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        // Warnings are logged from runtime workers: queued, never written there.
        .with_writer(processcontrol::adapters::logs::StderrLine::default);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
