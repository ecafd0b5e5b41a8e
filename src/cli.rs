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
    /// HTTP to the upstream: auto (ALPN over TLS; h2c for gRPC in plain HTTP), http1,
    /// h2, or h2c (HTTP/2 prior knowledge) [default: auto].
    #[arg(long, value_name = "PROTOCOL")]
    pub upstream_protocol: Option<String>,
    /// CA certificate (PEM) an https:// upstream's certificate must chain to, instead of
    /// the system's roots.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Accept any certificate from an https:// upstream (self-signed test services only).
    #[arg(long)]
    pub upstream_insecure: bool,
    /// Serve HTTPS on the proxy listener with this certificate chain (PEM), reloaded on
    /// SIGHUP; needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The listener certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
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
    /// What the management API answers.
    #[command(flatten)]
    Api(ApiCommand),
    /// Send a recording's requests again to a target, paced as recorded, and report how
    /// each answer differs from the recorded one.
    Replay(ReplayArgs),
    /// Answer requests from a recording, with no upstream: the recorded service as a
    /// mock (TrafficPlayback in one command).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The recording to answer from (in the store at --data-dir).
    pub recording: String,
    /// Address to answer on [default: 127.0.0.1:8880].
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<String>,
    /// Directory of the embedded store that holds the recording [default: ./heliosburn-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Proxy settings file (YAML), as for a run.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What a request the recording has no answer for gets: 404, 502, or forward (to
    /// --upstream).
    #[arg(long, value_name = "WHAT", default_value = "404")]
    pub on_miss: String,
    /// The service to forward misses to (with --on-miss forward).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Match request bodies too (JSON as data), not only method, path and query.
    #[arg(long)]
    pub match_body: bool,
    /// A request header whose value must match too (repeatable).
    #[arg(long = "match-header", value_name = "NAME")]
    pub match_headers: Vec<String>,
    /// Log level or filter (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The commands that are one request to a running proxy's management API.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
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

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording's id (read from the proxy at --mgmt).
    #[arg(required_unless_present = "har")]
    pub id: Option<String>,
    /// Replay a HAR file instead of a recording (no proxy needed).
    #[arg(long, value_name = "FILE", conflicts_with = "id")]
    pub har: Option<PathBuf>,
    /// Where to send the requests: http://HOST:PORT (a path prefix is kept).
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// Pace as recorded, this many times faster [default: 1].
    #[arg(long, value_name = "FACTOR", conflicts_with_all = ["rate", "as_fast_as_possible"])]
    pub speed: Option<f64>,
    /// Send at a fixed rate instead: N requests per second (`50` or `50/s`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate, conflicts_with = "as_fast_as_possible")]
    pub rate: Option<f64>,
    /// Send each request as soon as there is room (see --concurrency).
    #[arg(long)]
    pub as_fast_as_possible: bool,
    /// Requests in flight at once; 1 keeps each answer before the next request.
    #[arg(long, value_name = "C", default_value_t = 1)]
    pub concurrency: usize,
    /// Exit with 1 when an answer differs or a request fails (for CI).
    #[arg(long)]
    pub fail_on_diff: bool,
    /// A response header not to compare (repeatable; Date, Server, Age, Via and the
    /// framing headers are ignored already).
    #[arg(long = "ignore-header", value_name = "NAME")]
    pub ignore_headers: Vec<String>,
    /// A JSON path not to compare, e.g. `$.id` or `$.items[*].updatedAt` (repeatable).
    #[arg(long = "ignore-path", value_name = "PATH")]
    pub ignore_paths: Vec<String>,
    /// A regex whose matches are equal whatever they matched, in header and JSON
    /// values: ids, timestamps (repeatable).
    #[arg(long = "match", value_name = "REGEX")]
    pub matches: Vec<String>,
    /// Compare the headers ignored by default too.
    #[arg(long)]
    pub no_default_ignores: bool,
    /// Send the recorded Host header instead of the target's.
    #[arg(long)]
    pub keep_host: bool,
    /// Seconds a request may take, answer included.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub timeout: f64,
}

/// `50` or `50/s`: a positive number of requests per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    let n = text.trim().trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(r) if (0.001..=1e6).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{text}` is not a rate from 0.001 to 1000000 per second; write e.g. 50 or 50/s"
        )),
    }
}

/// Writes text to standard output; a reader that went away (`| head`) is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Text as a terminal may show it: control characters escaped, so a recorded name or
/// URL cannot move the cursor or recolour the screen.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
