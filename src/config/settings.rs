//! The proxy's own settings file (`--config`), validated into [`Settings`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{parse_yaml, read_file, yaml_kind, ConfigError, Problems};
use crate::redis_link::Endpoint;

/// The upstream service every request is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// `https://`: the connection is TLS, verified as [`UpstreamTls`] says.
    pub tls: bool,
}

impl Upstream {
    /// A plain-HTTP upstream.
    pub fn http(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: false,
        }
    }

    /// Accepts `http://host:port`, `https://host:port`, either without a port (80, 443)
    /// or `host:port` (plain HTTP).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tls, rest) = match text.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "`{text}`: an upstream is http:// or https://, not {scheme}://"
                ))
            }
            None => (false, text),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!(
                "`{text}`: an upstream is scheme://host:port, without a path"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("`{text}`: port `{p}` is not a number from 1 to 65535"))?;
                (h, port)
            }
            _ => (rest, if tls { 443 } else { 80 }),
        };
        if host.is_empty() || port == 0 {
            return Err(format!(
                "`{text}`: expected http://host:port or https://host:port"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Port 0 is `heliosburn serve`'s placeholder: no upstream at all.
        if self.port == 0 {
            return f.write_str("none");
        }
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Which HTTP the proxy speaks to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// Over TLS, what ALPN settles (h2 when the upstream offers it); in plain HTTP,
    /// HTTP/1.1, but h2c prior knowledge for gRPC (which needs HTTP/2).
    #[default]
    Auto,
    Http1,
    /// HTTP/2 over TLS (by ALPN); over plain HTTP, as h2c.
    H2,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
}

impl std::str::FromStr for UpstreamProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "http1" => Ok(Self::Http1),
            "h2" => Ok(Self::H2),
            "h2c" => Ok(Self::H2c),
            other => Err(format!(
                "`{other}` is not an upstream protocol (auto, http1, h2 or h2c)"
            )),
        }
    }
}

/// How an `https://` upstream's certificate is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust this CA file (PEM) instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Accept any certificate: for self-signed test services only.
    pub insecure: bool,
}

/// The listener's certificate and key (PEM files): the proxy serves HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long a control reply stays readable at its request's key, unless configured.
pub const DEFAULT_REPLY_TTL: Duration = Duration::from_secs(60);

/// Where the Redis control channel lives and what its channels are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlChannel {
    /// Shown without its password (`Display`, `Debug`).
    pub endpoint: Endpoint,
    pub request_channel: String,
    pub response_channel: String,
    /// How long each reply stays readable with `GET key` (it is also published).
    pub reply_ttl: Duration,
}

impl ControlChannel {
    /// The seed's channel names and the default reply expiry on `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            request_channel: "proxy_mgmt_request".into(),
            response_channel: "proxy_mgmt_response".into(),
            reply_ttl: DEFAULT_REPLY_TTL,
        }
    }
}

/// Default ring size of the in-process feed: messages a subscriber may fall behind before
/// it loses some. A message holds its captured bodies, so the ring is also what bounds the
/// memory a slow subscriber can pin: 8192 messages of small exchanges are a few tens of
/// MiB; with large bodies the ring's byte budget (`feed::DEFAULT_BYTE_BUDGET`, 64 MiB)
/// is what caps it.
pub const DEFAULT_BUS_CAPACITY: usize = 8_192;
/// The most `bus_capacity` may be: the ring is allocated up front, so a typo must not
/// take the host's memory.
pub const MAX_BUS_CAPACITY: usize = 1 << 20;
/// Bytes every capture in flight may hold together, unless configured: 32 exchanges in
/// flight capturing a whole default `body_limit` (1 MiB) each, or 256 with 64 KiB each way.
/// With it, 1,000 slow clients cost a debug build about 200 MiB.
pub const DEFAULT_CAPTURE_MEMORY: u64 = 32 << 20;
/// The most `capture_memory` may be: 64 GiB.
pub const MAX_CAPTURE_MEMORY: u64 = 64 << 30;
/// The head of a request or response may be this large, unless configured (as Node.js):
/// 16 KiB, also a connection's buffer each way, so 1,000 slow clients cost about 80 MiB.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;
/// `max_header_size` from 8 KiB (what hyper needs) to 1 MiB.
pub const MAX_HEADER_SIZE_RANGE: std::ops::RangeInclusive<usize> = 8 * 1024..=1 << 20;
/// The most `max_connections` may be (each costs a file descriptor and buffers).
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// The longest any timeout may be: a day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The spool's byte bound, unless configured: 1 GiB.
pub const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
/// `spool.max_bytes` from 1 MiB to 1 TiB.
pub const SPOOL_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1 << 20..=1 << 40;

/// When the spool's writes are synced to the disk itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Never by heliosburn: survives the process dying, not the machine.
    Never,
    /// Every 200 ms, beside the proxy path.
    #[default]
    Batch,
    /// After every message, on the proxy path.
    Always,
}

/// What a full spool does with new exchanges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFullPolicy {
    /// Serves them; what they would record is lost, counted (latency over completeness).
    #[default]
    Drop,
    /// Holds them until the recorder makes room (completeness over latency).
    Wait,
}

/// The in-process feed's spool: where the recorder's messages wait on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolSettings {
    pub enabled: bool,
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
    pub on_full: OnFullPolicy,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: DEFAULT_SPOOL_BYTES,
            fsync: FsyncPolicy::default(),
            on_full: OnFullPolicy::default(),
        }
    }
}

/// What bounds the connections a listener keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; beyond, new ones wait in the backlog.
    pub max_connections: usize,
    /// A connection that moves no byte this long is closed.
    pub idle_timeout: Duration,
    /// A request head must arrive within this (HTTP/1).
    pub header_read_timeout: Duration,
    /// A request's (or the upstream response's) head must fit in this many bytes; it is
    /// also what a connection buffers each way, so it bounds a slow client's cost.
    pub max_header_size: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
        }
    }
}

/// A secret from the configuration: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, to compare or send; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The log filter a level or filter directive (`info`, `heliosburn=debug,hyper=warn`)
/// makes, or `None` when it is not one. Directives are ASCII: anything else is refused
/// before tracing-subscriber sees it (its parser panics on some non-ASCII text, found by
/// the settings fuzz target).
pub fn log_filter(directives: &str) -> Option<tracing_subscriber::EnvFilter> {
    if !directives
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return None;
    }
    tracing_subscriber::EnvFilter::try_new(directives).ok()
}

/// Validated proxy settings: files, then flags over them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub upstream: Option<Upstream>,
    pub upstream_protocol: UpstreamProtocol,
    pub upstream_tls: UpstreamTls,
    /// The listener serves HTTPS with this certificate (plain HTTP without).
    pub tls: Option<ListenerTls>,
    pub mgmt: SocketAddr,
    /// Required as `Authorization: Bearer` on the management API when set.
    pub mgmt_token: Option<Secret>,
    /// Host names the management API answers to besides its own address.
    pub mgmt_hosts: Vec<String>,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub drain_timeout: Duration,
    /// How long a client may send nothing of its request body (then 408).
    pub client_body_timeout: Duration,
    /// What bounds the proxy's connections (cap, idle and header-read timeouts).
    pub limits: ConnectionLimits,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub control: Option<ControlChannel>,
    /// Messages the in-process feed holds for a subscriber that falls behind.
    pub bus_capacity: usize,
    /// Bytes all captures of exchanges in flight may hold together.
    pub capture_memory: usize,
    pub spool: SpoolSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8880)),
            upstream: None,
            upstream_protocol: UpstreamProtocol::Auto,
            upstream_tls: UpstreamTls::default(),
            tls: None,
            mgmt: SocketAddr::from(([127, 0, 0, 1], 5150)),
            mgmt_token: None,
            mgmt_hosts: Vec::new(),
            preserve_host: false,
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            client_body_timeout: Duration::from_secs(10),
            limits: Default::default(),
            data_dir: PathBuf::from("./heliosburn-data"),
            log_level: "info".into(),
            control: None,
            bus_capacity: DEFAULT_BUS_CAPACITY,
            capture_memory: DEFAULT_CAPTURE_MEMORY as usize,
            spool: SpoolSettings::default(),
        }
    }
}

/// The settings file as written. Every field is optional; defaults fill the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Proxy listener, `host:port` (an IP address).
    pub bind: Option<String>,
    /// Upstream service, `http://host:port` or `https://host:port`.
    pub upstream: Option<String>,
    /// `auto` (default), `http1`, `h2` or `h2c`.
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// CA certificate (PEM) an `https://` upstream's certificate must chain to, instead
    /// of the system's roots.
    pub upstream_ca: Option<PathBuf>,
    /// Accept any certificate from the upstream (self-signed test services only).
    pub upstream_insecure: Option<bool>,
    /// Serve HTTPS on the listener: `cert` and `key`, PEM files.
    pub tls: Option<TlsSection>,
    /// Management API listener, `host:port`.
    pub management: Option<String>,
    /// Bearer token the management API requires (prefer `HELIOSBURN_MGMT_TOKEN`).
    pub management_token: Option<String>,
    /// Host names (as clients write them in `Host:`) the management API answers to
    /// besides its own address, e.g. behind a reverse proxy.
    pub management_hosts: Option<Vec<String>>,
    /// Forward the client's Host header instead of the upstream's.
    pub preserve_host: Option<bool>,
    /// Seconds to wait for a TCP connection to the upstream.
    pub connect_timeout: Option<f64>,
    /// Seconds to wait for the upstream's response headers before answering 504, counted
    /// from the last piece of the request body the upstream took.
    pub upstream_timeout: Option<f64>,
    /// Seconds in-flight exchanges get to finish on shutdown.
    pub drain_timeout: Option<f64>,
    /// Seconds a client may send nothing of a request body before it is answered 408.
    pub client_body_timeout: Option<f64>,
    /// Seconds a connection may move no byte before it is closed (default 60).
    pub idle_timeout: Option<f64>,
    /// Seconds a client has to send a request's head (default 10).
    pub header_read_timeout: Option<f64>,
    /// Bytes a request's or response's head may take (default 16384); also the buffer a
    /// connection keeps each way.
    pub max_header_size: Option<usize>,
    /// Open connections at most (default 10000); beyond, new ones wait in the backlog.
    pub max_connections: Option<usize>,
    /// Directory of the embedded store.
    pub data_dir: Option<PathBuf>,
    /// Messages the in-process feed holds for a subscriber that falls behind.
    pub bus_capacity: Option<usize>,
    /// Bytes the captured bodies of every exchange in flight may hold together (default
    /// 32 MiB); a capture that finds it spent is recorded truncated, and counted.
    pub capture_memory: Option<u64>,
    pub log: Option<LogSection>,
    pub control: Option<ControlSection>,
    pub spool: Option<SpoolSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Keep the recorder's messages on disk under the data directory (default true).
    pub enabled: Option<bool>,
    /// Bytes the spool may hold (default 1 GiB); beyond, messages are lost and counted.
    pub max_bytes: Option<u64>,
    /// `never`, `batch` (default) or `always`.
    pub fsync: Option<FsyncPolicy>,
    /// `drop` (default) or `wait`.
    pub on_full: Option<OnFullPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS. Wins over
    /// `redis_host`/`redis_port`/`redis_db`; the only way to give a password.
    pub redis_url: Option<String>,
    /// Redis host of the control channel (default 127.0.0.1).
    pub redis_host: Option<String>,
    /// Redis port (default 6379).
    pub redis_port: Option<u16>,
    /// Redis database number (default 0).
    pub redis_db: Option<i64>,
    /// Channel the proxy reads requests from (default `proxy_mgmt_request`).
    pub request_channel: Option<String>,
    /// Channel the proxy answers on (default `proxy_mgmt_response`).
    pub response_channel: Option<String>,
    /// Seconds a reply stays readable with `GET key` after it is published (default 60).
    pub reply_ttl: Option<f64>,
}

const TOP_KEYS: &[&str] = &[
    "bind",
    "upstream",
    "upstream_protocol",
    "upstream_ca",
    "upstream_insecure",
    "tls",
    "management",
    "management_token",
    "management_hosts",
    "preserve_host",
    "connect_timeout",
    "upstream_timeout",
    "drain_timeout",
    "client_body_timeout",
    "idle_timeout",
    "header_read_timeout",
    "max_header_size",
    "max_connections",
    "data_dir",
    "bus_capacity",
    "capture_memory",
    "log",
    "control",
    "spool",
];

impl SettingsFile {
    /// Reads and checks a settings file, collecting every problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        Self::parse(&file, &read_file(path)?)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let value = parse_yaml(file, text, TOP_KEYS)?;
        let mut problems = Problems::new(file);
        let map = match value {
            yaml_serde::Value::Mapping(m) => m,
            yaml_serde::Value::Null => return Ok(Self::default()),
            other => {
                problems.add(
                    "",
                    format!(
                        "expected a mapping of settings, found {}",
                        yaml_kind(&other)
                    ),
                );
                return Err(ConfigError {
                    problems: problems.list,
                });
            }
        };
        let mut out = Self::default();
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                problems.add("", format!("keys must be strings, found {}", yaml_kind(&k)));
                continue;
            };
            match key {
                "bind" => out.bind = field(&mut problems, key, v, "an address like 127.0.0.1:8880"),
                "upstream" => out.upstream = field(&mut problems, key, v, "a URL like http://127.0.0.1:8080"),
                "upstream_protocol" => out.upstream_protocol = field(&mut problems, key, v, "auto, http1, h2 or h2c"),
                "upstream_ca" => out.upstream_ca = field(&mut problems, key, v, "a PEM file's path"),
                "upstream_insecure" => out.upstream_insecure = field(&mut problems, key, v, "true or false"),
                "tls" => out.tls = section(&mut problems, key, v, "a mapping of cert, key", TLS_FIELDS),
                "management" => out.management = field(&mut problems, key, v, "an address like 127.0.0.1:5150"),
                "management_token" => out.management_token = field(&mut problems, key, v, "a token (a string)"),
                "management_hosts" => out.management_hosts = field(&mut problems, key, v, "a list of host names"),
                "preserve_host" => out.preserve_host = field(&mut problems, key, v, "true or false"),
                "connect_timeout" => out.connect_timeout = field(&mut problems, key, v, "seconds, a number"),
                "upstream_timeout" => out.upstream_timeout = field(&mut problems, key, v, "seconds, a number"),
                "drain_timeout" => out.drain_timeout = field(&mut problems, key, v, "seconds, a number"),
                "client_body_timeout" => out.client_body_timeout = field(&mut problems, key, v, "seconds, a number"),
                "idle_timeout" => out.idle_timeout = field(&mut problems, key, v, "seconds, a number"),
                "header_read_timeout" => out.header_read_timeout = field(&mut problems, key, v, "seconds, a number"),
                "max_header_size" => out.max_header_size = field(&mut problems, key, v, "a number of bytes"),
                "max_connections" => out.max_connections = field(&mut problems, key, v, "a number of connections"),
                "data_dir" => out.data_dir = field(&mut problems, key, v, "a directory path"),
                "bus_capacity" => out.bus_capacity = field(&mut problems, key, v, "a number of messages"),
                "capture_memory" => out.capture_memory = field(&mut problems, key, v, "a number of bytes"),
                "log" => out.log = section(&mut problems, key, v, "a mapping with `level`", LOG_FIELDS),
                "spool" => {
                    out.spool = section(
                        &mut problems,
                        key,
                        v,
                        "a mapping of enabled, max_bytes, fsync, on_full",
                        SPOOL_FIELDS,
                    )
                }
                "control" => {
                    out.control = section(
                        &mut problems,
                        key,
                        v,
                        "a mapping of redis_url, redis_host, redis_port, redis_db, request_channel, response_channel, reply_ttl",
                        CONTROL_FIELDS,
                    )
                }
                other => problems.add(other, format!("unknown setting; known settings are: {}", TOP_KEYS.join(", "))),
            }
        }
        if problems.list.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError {
                problems: problems.list,
            })
        }
    }
}

/// Deserializes one key, recording a problem (with what was expected) when it fails.
fn field<T: DeserializeOwned>(
    problems: &mut Problems,
    key: &str,
    v: yaml_serde::Value,
    expected: &str,
) -> Option<T> {
    let kind = yaml_kind(&v);
    match yaml_serde::from_value::<Option<T>>(v) {
        Ok(t) => t,
        Err(e) => {
            let detail = e.to_string();
            if detail.starts_with("unknown field") {
                problems.add(key, detail);
            } else {
                problems.add(key, format!("expected {expected}, found {kind}"));
            }
            None
        }
    }
}

/// What each key of a section expects, for messages.
const TLS_FIELDS: &[(&str, &str)] = &[
    ("cert", "a PEM certificate file's path"),
    ("key", "a PEM private key file's path"),
];
const LOG_FIELDS: &[(&str, &str)] = &[("level", "a log level (error, warn, info, debug, trace)")];
const SPOOL_FIELDS: &[(&str, &str)] = &[
    ("enabled", "true or false"),
    ("max_bytes", "a number of bytes"),
    ("fsync", "never, batch or always"),
    ("on_full", "drop or wait"),
];
const CONTROL_FIELDS: &[(&str, &str)] = &[
    (
        "redis_url",
        "a URL like redis://[user:password@]host:port/db or rediss://…",
    ),
    ("redis_host", "a host name or address"),
    ("redis_port", "a port from 1 to 65535"),
    ("redis_db", "a database number"),
    ("request_channel", "a channel name"),
    ("response_channel", "a channel name"),
    ("reply_ttl", "seconds, a positive number"),
];

/// Deserializes a section (a mapping whose fields are all optional), naming the key inside
/// it that does not fit: every entry is checked alone, which an all-optional type allows.
fn section<T: DeserializeOwned>(
    problems: &mut Problems,
    key: &str,
    v: yaml_serde::Value,
    expected: &str,
    fields: &[(&str, &str)],
) -> Option<T> {
    if let yaml_serde::Value::Mapping(map) = &v {
        let mut bad = false;
        for (k, sub) in map {
            let one = yaml_serde::Mapping::from_iter([(k.clone(), sub.clone())]);
            if let Err(e) = yaml_serde::from_value::<T>(yaml_serde::Value::Mapping(one)) {
                bad = true;
                let name = k.as_str().unwrap_or("?");
                let message = match fields.iter().find(|(f, _)| *f == name) {
                    Some((_, exp)) => format!("expected {exp}, found {}", yaml_kind(sub)),
                    None => e.to_string(),
                };
                problems.add(format!("{key}.{name}"), message);
            }
        }
        if bad {
            return None;
        }
    }
    field(problems, key, v, expected)
}

/// Flags that override the files. `None` leaves the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub upstream: Option<String>,
    pub upstream_protocol: Option<String>,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_insecure: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub mgmt: Option<String>,
    pub mgmt_token: Option<String>,
    pub idle_timeout: Option<f64>,
    pub preserve_host: bool,
    pub data_dir: Option<PathBuf>,
    pub log_level: Option<String>,
}

impl Settings {
    /// Merges file and flags (flags win) and validates the result.
    pub fn build(
        file_name: &str,
        file: SettingsFile,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut problems = Problems::new(file_name);
        let mut s = Settings::default();
        let flag_problems = |key: &str| {
            if flags_name(key).is_empty() {
                key.to_owned()
            } else {
                flags_name(key)
            }
        };

        let bind = flags.bind.clone().or(file.bind);
        if let Some(b) = bind {
            match b.parse::<SocketAddr>() {
                Ok(a) => s.bind = a,
                Err(_) => problems.add(
                    flag_problems("bind"),
                    format!("`{b}` is not an address like 127.0.0.1:8880"),
                ),
            }
        }
        match flags.mgmt_token.clone().or(file.management_token) {
            Some(t) if t.trim().is_empty() => problems.add(
                flag_problems("management_token"),
                "the token is empty; set a long random one, or none",
            ),
            Some(t) => s.mgmt_token = Some(Secret(t)),
            None => {}
        }
        for h in file.management_hosts.unwrap_or_default() {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                problems.add(
                    "management_hosts",
                    format!("`{h}` is not a host name (write it as in `Host:`, e.g. hb.internal or hb.internal:5150)"),
                );
            } else {
                s.mgmt_hosts.push(h);
            }
        }
        let mgmt = flags.mgmt.clone().or(file.management);
        if let Some(m) = mgmt {
            match m.parse::<SocketAddr>() {
                Ok(a) => s.mgmt = a,
                Err(_) => problems.add(
                    flag_problems("management"),
                    format!("`{m}` is not an address like 127.0.0.1:5150"),
                ),
            }
        }
        if !s.mgmt.ip().is_loopback() && s.mgmt_token.is_none() {
            problems.add(
                flag_problems("management"),
                format!(
                    "the management API on {} would be reachable off this machine without a token; \
                     set one with --mgmt-token or HELIOSBURN_MGMT_TOKEN (or bind it to 127.0.0.1)",
                    s.mgmt
                ),
            );
        }
        if let Some(u) = flags.upstream.clone().or(file.upstream) {
            match Upstream::parse(&u) {
                Ok(up) => s.upstream = Some(up),
                Err(e) => problems.add(flag_problems("upstream"), e),
            }
        }
        let protocol = match &flags.upstream_protocol {
            Some(p) => p
                .parse()
                .map_err(|e| problems.add("--upstream-protocol", e))
                .ok(),
            None => file.upstream_protocol,
        };
        s.upstream_protocol = protocol.unwrap_or_default();
        s.upstream_tls = UpstreamTls {
            ca: flags.upstream_ca.clone().or(file.upstream_ca),
            insecure: flags.upstream_insecure || file.upstream_insecure.unwrap_or(false),
        };
        if s.upstream_tls.ca.is_some() && s.upstream_tls.insecure {
            problems.add(
                "upstream_insecure",
                "both upstream_ca (--upstream-ca) and upstream_insecure (--upstream-insecure) are set; \
                 a CA to verify against and no verification at all contradict each other: keep one",
            );
        }
        let (file_cert, file_key) = file.tls.map_or((None, None), |t| (t.cert, t.key));
        match (
            flags.tls_cert.clone().or(file_cert),
            flags.tls_key.clone().or(file_key),
        ) {
            (Some(cert), Some(key)) => s.tls = Some(ListenerTls { cert, key }),
            (None, None) => {}
            (Some(_), None) => problems.add(
                "tls.key",
                "a certificate without its key (--tls-key FILE, or tls.key)",
            ),
            (None, Some(_)) => problems.add(
                "tls.cert",
                "a key without its certificate (--tls-cert FILE, or tls.cert)",
            ),
        }
        s.preserve_host = flags.preserve_host || file.preserve_host.unwrap_or(false);
        for (key, value, slot) in [
            (
                "connect_timeout",
                file.connect_timeout,
                &mut s.connect_timeout,
            ),
            (
                "upstream_timeout",
                file.upstream_timeout,
                &mut s.upstream_timeout,
            ),
            ("drain_timeout", file.drain_timeout, &mut s.drain_timeout),
            (
                "client_body_timeout",
                file.client_body_timeout,
                &mut s.client_body_timeout,
            ),
            (
                "idle_timeout",
                flags.idle_timeout.or(file.idle_timeout),
                &mut s.limits.idle_timeout,
            ),
            (
                "header_read_timeout",
                file.header_read_timeout,
                &mut s.limits.header_read_timeout,
            ),
        ] {
            if let Some(secs) = value {
                match Duration::try_from_secs_f64(secs) {
                    Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => *slot = d,
                    _ => problems.add(
                        key,
                        format!(
                            "expected a number of seconds above 0 and at most {}, found {secs}",
                            MAX_TIMEOUT.as_secs()
                        ),
                    ),
                }
            }
        }
        if let Some(d) = flags.data_dir.clone().or(file.data_dir) {
            s.data_dir = d;
        }
        match file.max_connections {
            Some(n @ 1..=MAX_CONNECTIONS) => s.limits.max_connections = n,
            Some(n) => problems.add(
                "max_connections",
                format!("expected a number of connections from 1 to {MAX_CONNECTIONS}, found {n}"),
            ),
            None => {}
        }
        match file.max_header_size {
            Some(n) if MAX_HEADER_SIZE_RANGE.contains(&n) => s.limits.max_header_size = n,
            Some(n) => problems.add(
                "max_header_size",
                format!(
                    "expected a number of bytes from {} to {}, found {n}",
                    MAX_HEADER_SIZE_RANGE.start(),
                    MAX_HEADER_SIZE_RANGE.end()
                ),
            ),
            None => {}
        }
        match file.bus_capacity {
            Some(n @ 1..=MAX_BUS_CAPACITY) => s.bus_capacity = n,
            Some(n) => problems.add(
                "bus_capacity",
                format!("expected a number of messages from 1 to {MAX_BUS_CAPACITY}, found {n}"),
            ),
            None => {}
        }
        match file.capture_memory {
            Some(n @ 0..=MAX_CAPTURE_MEMORY) => match usize::try_from(n) {
                Ok(n) => s.capture_memory = n,
                Err(_) => problems.add(
                    "capture_memory",
                    format!("{n} bytes do not fit this machine's memory"),
                ),
            },
            Some(n) => problems.add(
                "capture_memory",
                format!(
                    "expected a number of bytes from 0 to {MAX_CAPTURE_MEMORY} (64 GiB), found {n}"
                ),
            ),
            None => {}
        }
        if let Some(sp) = file.spool {
            s.spool.enabled = sp.enabled.unwrap_or(true);
            s.spool.fsync = sp.fsync.unwrap_or_default();
            s.spool.on_full = sp.on_full.unwrap_or_default();
            match sp.max_bytes {
                Some(n) if SPOOL_BYTES_RANGE.contains(&n) => s.spool.max_bytes = n,
                Some(n) => problems.add(
                    "spool.max_bytes",
                    format!("expected a number of bytes from 1048576 (1 MiB) to 1099511627776 (1 TiB), found {n}"),
                ),
                None => {}
            }
        }
        if let Some(level) = flags.log_level.clone().or(file.log.and_then(|l| l.level)) {
            if log_filter(&level).is_none() {
                problems.add(
                    "log.level",
                    format!("`{level}` is not a log level (error, warn, info, debug, trace)"),
                );
            }
            s.log_level = level;
        }
        if let Some(c) = file.control {
            let endpoint = match &c.redis_url {
                // The URL wins over the parts; the error shows it without credentials.
                Some(url) => Endpoint::parse(url).unwrap_or_else(|e| {
                    problems.add("control.redis_url", e);
                    Endpoint::from_parts("127.0.0.1", 6379, 0)
                }),
                None => {
                    let host = c.redis_host.unwrap_or_else(|| "127.0.0.1".into());
                    if host.parse::<IpAddr>().is_err() && host.contains(['/', ' ', ':']) {
                        problems.add(
                            "control.redis_host",
                            format!("`{host}` is not a host name or address"),
                        );
                    }
                    Endpoint::from_parts(
                        &host,
                        c.redis_port.unwrap_or(6379),
                        c.redis_db.unwrap_or(0),
                    )
                }
            };
            let mut channel = ControlChannel::new(endpoint);
            if let Some(name) = c.request_channel {
                channel.request_channel = name;
            }
            if let Some(name) = c.response_channel {
                channel.response_channel = name;
            }
            if let Some(secs) = c.reply_ttl {
                match Duration::try_from_secs_f64(secs) {
                    // Redis expires by the millisecond: less than one would be no expiry.
                    Ok(d) if d >= Duration::from_millis(1) => channel.reply_ttl = d,
                    _ => problems.add(
                        "control.reply_ttl",
                        format!("expected a positive number of seconds, found {secs}"),
                    ),
                }
            }
            s.control = Some(channel);
        }
        if problems.list.is_empty() {
            Ok(s)
        } else {
            Err(ConfigError {
                problems: problems.list,
            })
        }
    }
}

/// Names the flag that set a key, for messages about flag values.
fn flags_name(key: &str) -> String {
    match key {
        "bind" => "bind (or --bind)".into(),
        "management" => "management (or --mgmt)".into(),
        "management_token" => "management_token (or --mgmt-token, HELIOSBURN_MGMT_TOKEN)".into(),
        "upstream" => "upstream (or --upstream)".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the settings fuzz target: tracing-subscriber's directive parser panicked
    /// on this `log.level`; it is refused as no log level instead.
    #[test]
    fn a_non_ascii_log_level_is_refused_not_a_panic() {
        let level = " each        z         \u{2c5a}[\u{2c5a}[[\\[[S[[[[              0";
        assert!(log_filter(level).is_none());
        let file = SettingsFile::parse("p.yaml", &format!("log:\n  level: {level:?}\n")).unwrap();
        let e = Settings::build("p.yaml", file, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("is not a log level"), "{e}");
        assert!(log_filter("heliosburn=debug,hyper=warn").is_some());
    }

    /// The fixture the "every setting passes" test loads names every setting there is.
    #[test]
    fn the_good_settings_fixture_has_every_setting() {
        let text = include_str!("../../tests/fixtures/good-settings.yaml");
        let file = SettingsFile::parse("good-settings.yaml", text).expect("the fixture is valid");
        let missing: Vec<&str> = TOP_KEYS
            .iter()
            .copied()
            .filter(|k| !text.lines().any(|l| l.starts_with(&format!("{k}:"))))
            .collect();
        assert!(missing.is_empty(), "good-settings.yaml lacks {missing:?}");
        assert_eq!(file.max_header_size, Some(32768));
    }

    #[test]
    fn upstream_forms() {
        assert_eq!(
            Upstream::parse("http://127.0.0.1:9000").unwrap(),
            Upstream::http("127.0.0.1", 9000)
        );
        assert_eq!(Upstream::parse("localhost:81").unwrap().port, 81);
        assert_eq!(Upstream::parse("http://example.com").unwrap().port, 80);
        let tls = Upstream::parse("https://api.example.com").unwrap();
        assert_eq!((tls.port, tls.tls), (443, true));
        assert_eq!(tls.to_string(), "https://api.example.com:443");
        assert!(Upstream::parse("ftp://x:1")
            .unwrap_err()
            .contains("http:// or https://"));
        assert!(Upstream::parse("http://x:99999").is_err());
        assert!(Upstream::parse("http://x:1/path").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = SettingsFile::parse("p.yaml", "bind: [1]\nupstrem: x\npreserve_host: maybe\n")
            .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["bind", "upstrem", "preserve_host"]);
        assert!(err.to_string().contains("p.yaml: upstrem: unknown setting"));
    }

    #[test]
    fn flags_override_the_file() {
        let file = SettingsFile::parse(
            "p.yaml",
            "bind: 127.0.0.1:1000\nupstream: http://127.0.0.1:2000\n",
        )
        .unwrap();
        let flags = Overrides {
            bind: Some("127.0.0.1:3000".into()),
            ..Default::default()
        };
        let s = Settings::build("p.yaml", file, &flags).unwrap();
        assert_eq!(s.bind.port(), 3000);
        assert_eq!(s.upstream.unwrap().port, 2000);
    }

    fn control(yaml: &str) -> Result<ControlChannel, ConfigError> {
        let file = SettingsFile::parse("p.yaml", yaml)?;
        Settings::build("p.yaml", file, &Overrides::default()).map(|s| s.control.unwrap())
    }

    #[test]
    fn the_control_section_takes_parts_or_a_url_and_a_reply_ttl() {
        let c =
            control("control: { redis_host: 10.1.2.3, redis_port: 7000, redis_db: 2 }\n").unwrap();
        assert_eq!(c.endpoint.url(), "redis://10.1.2.3:7000/2");
        assert_eq!(c.request_channel, "proxy_mgmt_request");
        assert_eq!(c.response_channel, "proxy_mgmt_response");
        assert_eq!(c.reply_ttl, DEFAULT_REPLY_TTL);

        // The URL wins over the parts, and keeps its password out of Debug.
        let c = control(
            "control:\n  redis_url: 'rediss://:pw123@cache:6380/1'\n  redis_port: 1\n  reply_ttl: 1.5\n",
        )
        .unwrap();
        assert_eq!(c.endpoint.url(), "rediss://:pw123@cache:6380/1");
        assert_eq!(c.reply_ttl, Duration::from_millis(1500));
        assert!(!format!("{c:?}").contains("pw123"), "{c:?}");
    }

    #[test]
    fn bad_control_values_are_named_without_the_password() {
        let err =
            control("control: { redis_url: 'http://:pw123@h:1/', reply_ttl: 0 }\n").unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["control.redis_url", "control.reply_ttl"], "{err}");
        assert!(!err.to_string().contains("pw123"), "{err}");
        assert!(
            err.to_string().contains("positive number of seconds"),
            "{err}"
        );
        let err = control("control: { reply_ttl: -3 }\n").unwrap_err();
        assert!(err.to_string().contains("control.reply_ttl"), "{err}");
        let err = control("control: { reply_ttl: soon }\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("control.reply_ttl: expected seconds"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let file = SettingsFile::parse("p.yaml", "bind: nowhere\nupstream_timeout: -1\n").unwrap();
        let err = Settings::build("p.yaml", file, &Overrides::default()).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.to_string().contains("`nowhere` is not an address"));
    }
}
