//! Command-line interface: run the proxy (the default), check the configuration, or talk
//! to a running proxy's management API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "heliosburn",
    version,
    about = "A reverse HTTP proxy that records the traffic passing through it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Management API address (the listener when running; the proxy to talk to otherwise).
    #[arg(long, global = true, value_name = "HOST:PORT", env = "HELIOSBURN_MGMT")]
    pub mgmt: Option<String>,
    /// Token of the management API: required from its clients when the proxy runs with
    /// one, and sent by the client commands.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "HELIOSBURN_MGMT_TOKEN",
        hide_env_values = true
    )]
    pub mgmt_token: Option<String>,
    /// Print JSON instead of tables (client commands).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Upstream service every request goes to, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Address the proxy listens on [default: 127.0.0.1:8880].
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<String>,
    /// Proxy settings file (YAML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Modules file (YAML, `pipeline:` and `support:`). Default: record on the embedded store.
    #[arg(long, value_name = "FILE")]
    pub modules: Option<PathBuf>,
    /// Directory of the embedded store [default: ./heliosburn-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds a connection may move no byte before it is closed [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
    /// Forward the client's Host header instead of the upstream's.
    #[arg(long)]
    pub preserve_host: bool,
    /// Log level or filter (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Worker threads [default: one per CPU the process may run on].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Validate the configuration, print every problem, and exit (2 when invalid).
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the proxy and its modules.
    Status {
        /// Only this module.
        #[arg(long)]
        module: Option<String>,
    },
    /// Manage recordings.
    #[command(subcommand)]
    Recording(RecordingCommand),
}

#[derive(Debug, Subcommand)]
pub enum RecordingCommand {
    /// List recordings.
    List,
    /// Create a recording.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one recording.
    Show { id: String },
    /// Start recording into it.
    Start { id: String },
    /// Stop it.
    Stop { id: String },
    /// Delete it and its traffic.
    Delete { id: String },
    /// Show its traffic.
    Traffic {
        id: String,
        /// Index of the first transaction.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// How many transactions.
        #[arg(long, default_value_t = 100)]
        offset: u64,
    },
    /// Write it as a HAR 1.2 file (browsers' network panels open it), streamed.
    Export {
        id: String,
        /// The file to write (default: standard output).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Create a recording from a HAR file (a browser's export, mitmproxy's, ours),
    /// streamed to the proxy.
    Import {
        /// The HAR file.
        file: std::path::PathBuf,
        /// The recording's name [default: the HAR's comment, or the tool that wrote it].
        #[arg(long)]
        name: Option<String>,
    },
}
