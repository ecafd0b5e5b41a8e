//! The `heliosburn` binary: parses the command line, then runs the proxy or a client command.

use std::process::ExitCode;

use clap::Parser;
use heliosburn::{app, cli, control, replay};
use tracing_subscriber::EnvFilter;

// Per-exchange allocations are small and short-lived; mimalloc serves them faster than
// glibc's allocator (measured in bench/).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli_error(e),
    };
    let runtime = match runtime(cli.run.threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("heliosburn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(cmd) = cli.command {
        let mgmt = || cli.mgmt.clone().unwrap_or_else(|| "127.0.0.1:5150".into());
        let token = cli.mgmt_token.as_deref();
        return match cmd {
            cli::Command::Serve(args) => {
                serve(args, cli.mgmt.clone(), cli.mgmt_token.clone(), &runtime)
            }
            cli::Command::Replay(args) => {
                match runtime.block_on(replay::run(&mgmt(), token, cli.json, args)) {
                    Ok(false) => ExitCode::SUCCESS,
                    // --fail-on-diff, and something differed or failed: the report says what.
                    Ok(true) => ExitCode::from(1),
                    Err(e) => {
                        eprintln!("heliosburn: {e:#}");
                        ExitCode::from(2)
                    }
                }
            }
            cli::Command::Api(cmd) => {
                match runtime.block_on(control::client::run(&mgmt(), token, cli.json, cmd)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("heliosburn: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
        };
    }

    let loaded = match app::load(&cli.run, cli.mgmt.clone(), cli.mgmt_token.clone()) {
        Ok(l) => l,
        Err(e) => {
            eprint!("heliosburn: {e}");
            return ExitCode::from(2);
        }
    };
    run_proxy(loaded, &cli.run, &runtime)
}

/// `heliosburn serve`: the proxy with TrafficPlayback on a recording as its modules.
fn serve(
    args: cli::ServeArgs,
    mgmt: Option<String>,
    token: Option<String>,
    runtime: &tokio::runtime::Runtime,
) -> ExitCode {
    match app::load_serve(args, mgmt, token) {
        Ok((run, loaded)) => run_proxy(loaded, &run, runtime),
        Err(e) => {
            eprint!("heliosburn: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the proxy on a loaded configuration until a signal (or only checks it).
fn run_proxy(
    loaded: app::Loaded,
    run: &cli::RunArgs,
    runtime: &tokio::runtime::Runtime,
) -> ExitCode {
    if run.check_config {
        for w in &loaded.resources.warnings {
            eprintln!("heliosburn: warning: {w}");
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(&loaded.settings.log_level, run.log_level.is_some());
    match runtime.block_on(app::run(loaded, run.modules.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr where the log goes too; not also as a log line.
            eprintln!("heliosburn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's own message, except where a common slip deserves a pointer: `--check-config
/// FILE` reads FILE as a subcommand.
fn cli_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let checking = std::env::args_os().any(|a| a == "--check-config");
    if checking && e.kind() == ErrorKind::InvalidSubcommand {
        eprintln!(
            "heliosburn: --check-config takes no file; name the files with --config SETTINGS.yaml \
             and --modules MODULES.yaml, e.g. `heliosburn --check-config --modules modules.yaml`"
        );
        return ExitCode::from(2);
    }
    e.exit()
}

/// One worker thread per available CPU (as the affinity mask allows). On one CPU a
/// current-thread runtime does the same work without cross-thread scheduling.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// The flag wins, then RUST_LOG, then the settings file (or `info`).
fn init_logging(level: &str, from_flag: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !from_flag && !env.is_empty() => {
            heliosburn::config::settings::log_filter(&env).unwrap_or_else(|| EnvFilter::new(level))
        }
        _ => EnvFilter::new(level),
    };
    // Colour codes only for a person at a terminal; a pipe or file (systemd, docker, a
    // test) gets plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
