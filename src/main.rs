//! heliosburn: a reverse HTTP proxy that records the traffic passing through it.

mod app;
mod cli;
mod config;
mod control;
mod feed;
mod modules;
mod proxy;
mod recording;
mod store;
mod traffic;
mod window;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("heliosburn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(cmd) = cli.command {
        let mgmt = cli.mgmt.unwrap_or_else(|| "127.0.0.1:5150".into());
        return match runtime.block_on(control::client::run(&mgmt, cli.json, cmd)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("heliosburn: {e:#}");
                ExitCode::FAILURE
            }
        };
    }

    let loaded = match app::load(&cli.run, cli.mgmt.clone()) {
        Ok(l) => l,
        Err(e) => {
            eprint!("heliosburn: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.run.check_config {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(&loaded.settings.log_level, cli.run.log_level.is_some());
    match runtime.block_on(app::run(loaded, cli.run.modules.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("heliosburn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The flag wins, then RUST_LOG, then the settings file (or `info`).
fn init_logging(level: &str, from_flag: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !from_flag && !env.is_empty() => {
            EnvFilter::try_new(env).unwrap_or_else(|_| EnvFilter::new(level))
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
