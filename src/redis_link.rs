//! The one Redis layer: where a Redis is ([`Endpoint`]), the command connection every
//! user shares ([`Commands`]), and the self-healing subscription ([`subscribe`]).
//!
//! The traffic feed, the live window and the control channel are built on these, so
//! timeouts, reconnection, backoff and the rule that no credential reaches a log line
//! live here once.
//!
//! **Invariant:** an [`Endpoint`] prints (`Display`, `Debug`, errors, logs) without its
//! password; only [`Endpoint::url`] carries it, for connecting.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{MultiplexedConnection, PubSubStream};
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisError,
    RedisResult,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// How long connecting (and subscribing) may take before it counts as a failure.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Endpoint

/// Where a Redis is: a validated `redis://` or `rediss://` (TLS) URL.
///
/// Shown as `redis://host:port/db` — never with the user name or password. Two
/// endpoints are equal when they name the same server, database and credentials,
/// however they were written (`redis://h:6379` is `redis_host: h` with `redis_db: 0`).
#[derive(Clone)]
pub struct Endpoint {
    /// The URL as given, credentials included: only for connecting.
    url: String,
    /// `scheme://host:port/db`, for logs, errors and status.
    shown: String,
    /// `host:port`.
    addr: String,
    /// The server as compared: scheme, host, port, user and password (not shown).
    server: String,
    db: i64,
}

/// How a server is compared: never shown, as it holds the credentials.
fn server_key(scheme: &str, user: &str, password: &str, host: &str, port: u16) -> String {
    format!(
        "{scheme}://{user}:{password}@{}:{port}",
        host.to_ascii_lowercase()
    )
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.server == other.server && self.db == other.db
    }
}

impl Eq for Endpoint {}

impl std::hash::Hash for Endpoint {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.server.hash(h);
        self.db.hash(h);
    }
}

impl Endpoint {
    /// `redis://host:port/db` (an IPv6 address gets its brackets). No validation: a host
    /// that is not one makes connecting fail, with this endpoint named.
    pub fn from_parts(host: &str, port: u16, db: i64) -> Endpoint {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let url = format!("redis://{host}:{port}/{db}");
        Endpoint {
            shown: url.clone(),
            url,
            addr: format!("{host}:{port}"),
            server: server_key("redis", "", "", &host, port),
            db,
        }
    }

    /// The same server (scheme, host, port, credentials), whatever the database: what
    /// pub/sub sees, as channels span databases.
    pub fn same_server(&self, other: &Endpoint) -> bool {
        self.server == other.server
    }

    /// Checks `redis://[user:pass@]host[:port][/db]` or `rediss://…` without any I/O.
    /// The error says what is wrong and shows the URL without its credentials.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let shown_input = redact(url);
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err(format!(
                "`{shown_input}` is not a Redis URL: expected redis://[user:password@]host[:port][/db] \
                 or rediss://… (TLS)"
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| format!("`{shown_input}` is not a valid Redis URL: {}", detail(&e)))?;
        let (scheme, host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => ("redis", host.clone(), *port),
            ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host.clone(), *port),
            other => {
                return Err(format!(
                    "`{shown_input}`: expected a TCP address, found {other:?}"
                ))
            }
        };
        if host.is_empty() {
            return Err(format!("`{shown_input}`: the URL names no host"));
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let settings = info.redis_settings();
        let db = settings.db();
        let server = server_key(
            scheme,
            settings.username().unwrap_or_default(),
            settings.password().unwrap_or_default(),
            &host,
            port,
        );
        Ok(Endpoint {
            url: url.to_owned(),
            shown: format!("{scheme}://{host}:{port}/{db}"),
            addr: format!("{host}:{port}"),
            server,
            db,
        })
    }

    /// The URL with its credentials, for connecting. Never log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`, for logs.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether connections use TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.shown.starts_with("rediss://")
    }

    fn client(&self) -> Result<Client, RedisLinkError> {
        Client::open(self.url.as_str()).map_err(|e| self.error(e))
    }

    fn error(&self, source: RedisError) -> RedisLinkError {
        RedisLinkError {
            endpoint: Box::new(self.clone()),
            source,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.shown)
    }
}

/// A URL without the credentials between `://` and `@`, for logs and errors (also for
/// text that is not a valid URL).
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A Redis error's description without its kind's debug name where a detail exists.
fn detail(e: &RedisError) -> String {
    e.detail().map_or_else(|| e.to_string(), str::to_owned)
}

/// A failure talking to Redis, naming the endpoint (without credentials).
#[derive(Debug, thiserror::Error)]
#[error("redis {endpoint}: {source}")]
pub struct RedisLinkError {
    /// Boxed: errors are kept small (they travel in `Result`s on every path).
    pub endpoint: Box<Endpoint>,
    #[source]
    pub source: RedisError,
}

impl RedisLinkError {
    /// The connection broke or could not be made (as opposed to Redis refusing a command).
    pub fn is_connection_problem(&self) -> bool {
        is_connection_problem(&self.source)
    }
}

fn is_connection_problem(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// The connection broke since its last use (not: Redis refuses connections, or is slow).
fn went_stale(e: &RedisError) -> bool {
    (e.is_connection_dropped() || e.is_io_error()) && !e.is_connection_refusal() && !e.is_timeout()
}

/// A timeout as a Redis I/O error, so callers handle it like any lost connection.
fn timed_out(what: &str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")).into()
}

// ---------------------------------------------------------------------------------------
// Backoff

/// Capped exponential delays between reconnection attempts (100 ms doubling to 5 s).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self { next: Self::MIN }
    }

    /// The delay to wait now; the one after it is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

// ---------------------------------------------------------------------------------------
// Commands

/// What [`Commands::query`] sends: one command or a pipeline (possibly `MULTI`/`EXEC`).
#[derive(Clone, Copy)]
pub enum Query<'a> {
    Cmd(&'a ::redis::Cmd),
    Pipeline(&'a ::redis::Pipeline),
}

impl<'a> From<&'a ::redis::Cmd> for Query<'a> {
    fn from(c: &'a ::redis::Cmd) -> Self {
        Query::Cmd(c)
    }
}

impl<'a> From<&'a mut ::redis::Cmd> for Query<'a> {
    fn from(c: &'a mut ::redis::Cmd) -> Self {
        Query::Cmd(c)
    }
}

impl<'a> From<&'a ::redis::Pipeline> for Query<'a> {
    fn from(p: &'a ::redis::Pipeline) -> Self {
        Query::Pipeline(p)
    }
}

impl Query<'_> {
    async fn send<T: FromRedisValue>(self, conn: &mut MultiplexedConnection) -> RedisResult<T> {
        match self {
            Query::Cmd(c) => c.query_async(conn).await,
            Query::Pipeline(p) => p.query_async(conn).await,
        }
    }
}

/// The command connection: one multiplexed connection, shared by clones, made again
/// when it broke. A command during an outage fails (fast: connecting is bounded by
/// [`CONNECT_TIMEOUT`], answers by the response timeout); a later one reconnects.
#[derive(Clone)]
pub struct Commands {
    inner: Arc<CommandsInner>,
}

struct CommandsInner {
    endpoint: Endpoint,
    client: Client,
    config: AsyncConnectionConfig,
    /// The connection in use and its generation, so a failure only discards the
    /// connection it happened on, not one a concurrent caller already replaced it with.
    conn: tokio::sync::Mutex<(Option<MultiplexedConnection>, u64)>,
}

impl Commands {
    /// Connects now, so a Redis that is not there at startup is an error at once.
    /// `response_timeout` bounds every answer.
    pub async fn connect(
        endpoint: &Endpoint,
        response_timeout: Duration,
    ) -> Result<Commands, RedisLinkError> {
        let c = Self::lazy(endpoint, response_timeout)?;
        c.ensure_connected().await?;
        Ok(c)
    }

    /// Like [`connect`](Self::connect), but connects on first use.
    pub fn lazy(
        endpoint: &Endpoint,
        response_timeout: Duration,
    ) -> Result<Commands, RedisLinkError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        Ok(Commands {
            inner: Arc::new(CommandsInner {
                client: endpoint.client()?,
                endpoint: endpoint.clone(),
                config,
                conn: tokio::sync::Mutex::new((None, 0)),
            }),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Makes sure a connection is up (reconnecting if the last one broke).
    pub async fn ensure_connected(&self) -> Result<(), RedisLinkError> {
        self.current().await.map(|_| ())
    }

    async fn current(&self) -> Result<(MultiplexedConnection, u64), RedisLinkError> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(c) = &slot.0 {
            return Ok((c.clone(), slot.1));
        }
        let c = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&self.inner.config)
            .await
            .map_err(|e| self.inner.endpoint.error(e))?;
        slot.1 += 1;
        slot.0 = Some(c.clone());
        Ok((c, slot.1))
    }

    async fn discard(&self, generation: u64) {
        let mut slot = self.inner.conn.lock().await;
        if slot.1 == generation {
            slot.0 = None;
        }
    }

    /// Sends `q` once. A broken connection is dropped, so the next call reconnects.
    pub async fn query<'a, T: FromRedisValue>(
        &self,
        q: impl Into<Query<'a>>,
    ) -> Result<T, RedisLinkError> {
        let q = q.into();
        let (mut conn, generation) = self.current().await?;
        match q.send(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_connection_problem(&e) {
                    self.discard(generation).await;
                }
                Err(self.inner.endpoint.error(e))
            }
        }
    }

    /// [`query`](Self::query) for commands that may safely run twice: when the connection
    /// had gone stale since its last use (Redis restarted, say) the command is sent once
    /// more on a fresh one. Not when Redis refuses connections: it is down, and a retry
    /// would only wait.
    pub async fn query_idempotent<'a, T: FromRedisValue>(
        &self,
        q: impl Into<Query<'a>>,
    ) -> Result<T, RedisLinkError> {
        let q = q.into();
        match self.query(q).await {
            Err(e) if went_stale(&e.source) => self.query(q).await,
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subscription

/// What a [`Subscription`] yields next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A message's payload.
    Message(Vec<u8>),
    /// This many messages were dropped because the reader was behind (the local queue
    /// was full).
    Lost(u64),
    /// The subscription was cut off and has healed: what was published meanwhile is gone,
    /// how much Redis cannot say.
    Gap,
}

/// What the forwarding task tells the reader besides messages.
#[derive(Debug, Default)]
struct Shared {
    /// Messages dropped because the local queue was full, not yet reported.
    lost: AtomicU64,
    /// A gap not yet reported.
    gap: AtomicBool,
    /// Times the subscription was lost and healed, ever.
    gaps: AtomicU64,
}

/// A channel subscription that heals by itself: a bounded local queue filled by a
/// background task, which resubscribes with capped backoff after a lost connection.
/// Dropping it ends the task.
pub struct Subscription {
    rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
}

/// Subscribes to `channel` before returning (a bad setup fails at once); afterwards the
/// subscription heals by itself, logging one error per outage and one info when restored.
/// `capacity` messages wait for the reader before new ones are dropped (counted).
pub async fn subscribe(
    endpoint: &Endpoint,
    channel: &str,
    capacity: usize,
) -> Result<Subscription, RedisLinkError> {
    let client = endpoint.client()?;
    let stream = connect_subscriber(&client, channel)
        .await
        .map_err(|e| endpoint.error(e))?;
    // A zero capacity would make the channel panic; one slot is the least that works.
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    let task = ForwardTask {
        client,
        endpoint: endpoint.clone(),
        channel: channel.to_owned(),
        tx,
        shared: shared.clone(),
    };
    tokio::spawn(task.run(stream));
    Ok(Subscription { rx, shared })
}

impl Subscription {
    /// The next delivery; `None` when the subscription is gone for good.
    pub async fn recv(&mut self) -> Option<Delivery> {
        if let Some(d) = self.pending() {
            return Some(d);
        }
        self.rx.recv().await.map(Delivery::Message)
    }

    /// A delivery already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.pending()
            .or_else(|| self.rx.try_recv().ok().map(Delivery::Message))
    }

    /// Messages dropped (queue full) that [`recv`](Self::recv) has not reported yet.
    pub fn lost_unreported(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Times the subscription was cut off and healed, ever.
    pub fn gaps(&self) -> u64 {
        self.shared.gaps.load(Ordering::Relaxed)
    }

    /// A gap or a loss not yet reported (the gap first: it is the larger news).
    fn pending(&self) -> Option<Delivery> {
        if self.shared.gap.swap(false, Ordering::Relaxed) {
            return Some(Delivery::Gap);
        }
        match self.shared.lost.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(Delivery::Lost(n)),
        }
    }
}

/// Opens a dedicated pub/sub connection subscribed to `channel`. `get_async_pubsub` has
/// no timeout of its own, hence the explicit one.
async fn connect_subscriber(client: &Client, channel: &str) -> RedisResult<PubSubStream> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.into_on_message())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(timed_out("subscribing")))
}

/// Moves messages from the Redis subscription into the local queue and resubscribes
/// when the connection is lost. Ends when the reader is dropped.
struct ForwardTask {
    client: Client,
    endpoint: Endpoint,
    channel: String,
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl ForwardTask {
    async fn run(self, mut stream: PubSubStream) {
        loop {
            loop {
                let msg = tokio::select! {
                    _ = self.tx.closed() => return,
                    m = stream.next() => m,
                };
                match msg {
                    Some(m) => self.forward(m.get_payload_bytes()),
                    None => break,
                }
            }
            tracing::error!(
                endpoint = %self.endpoint,
                channel = %self.channel,
                "Redis subscription lost its connection; resubscribing"
            );
            let since = Instant::now();
            match self.resubscribe().await {
                Some(s) => stream = s,
                None => return,
            }
            self.shared.gaps.fetch_add(1, Ordering::Relaxed);
            self.shared.gap.store(true, Ordering::Relaxed);
            tracing::info!(
                endpoint = %self.endpoint,
                channel = %self.channel,
                outage_ms = since.elapsed().as_millis() as u64,
                "Redis subscription restored; messages published meanwhile were missed"
            );
        }
    }

    /// Tries until it is subscribed again (`None`: the reader went away meanwhile).
    async fn resubscribe(&self) -> Option<PubSubStream> {
        let mut backoff = Backoff::new();
        loop {
            tokio::select! {
                _ = self.tx.closed() => return None,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            let attempt = tokio::select! {
                _ = self.tx.closed() => return None,
                r = connect_subscriber(&self.client, &self.channel) => r,
            };
            match attempt {
                Ok(s) => return Some(s),
                Err(error) => {
                    tracing::debug!(endpoint = %self.endpoint, channel = %self.channel, %error, "Redis: resubscribe failed");
                }
            }
        }
    }

    fn forward(&self, payload: &[u8]) {
        // A full queue means the reader is behind: drop here (counted) rather than stop
        // reading, or Redis would buffer for us and then cut us off.
        match self.tx.try_reserve() {
            Ok(permit) => permit.send(payload.to_vec()),
            Err(mpsc::error::TrySendError::Full(())) => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_written_two_ways_are_one() {
        let url = Endpoint::parse("redis://127.0.0.1:6379").unwrap();
        let parts = Endpoint::from_parts("127.0.0.1", 6379, 0);
        assert_eq!(url, parts);
        assert_ne!(url, Endpoint::from_parts("127.0.0.1", 6379, 1));
        assert!(url.same_server(&Endpoint::from_parts("127.0.0.1", 6379, 1)));
        let with_password = Endpoint::parse("redis://:pw@127.0.0.1:6379/0").unwrap();
        assert_ne!(with_password, parts);
        assert!(!with_password.same_server(&parts));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn credentials_stay_out_of_redacted_text() {
        assert_eq!(redact("redis://:secret@host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact("redis://user:pw@h/"), "redis://h/");
        assert_eq!(redact("redis://host:6379/"), "redis://host:6379/");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn endpoints_parse_and_never_show_their_password() {
        let e = Endpoint::parse("redis://:s3cret@10.0.0.1:7000/2").unwrap();
        assert_eq!(e.to_string(), "redis://10.0.0.1:7000/2");
        assert_eq!(format!("{e:?}"), "Endpoint(redis://10.0.0.1:7000/2)");
        assert_eq!(e.addr(), "10.0.0.1:7000");
        assert_eq!(e.url(), "redis://:s3cret@10.0.0.1:7000/2");
        assert!(!e.is_tls());

        let e = Endpoint::parse("rediss://user:pw@cache.example:6380").unwrap();
        assert_eq!(e.to_string(), "rediss://cache.example:6380/0");
        assert!(e.is_tls());
        assert!(!format!("{e} {e:?}").contains("pw"));

        // Defaults: port 6379, database 0.
        let e = Endpoint::parse("redis://localhost").unwrap();
        assert_eq!(e.to_string(), "redis://localhost:6379/0");
        assert_eq!(
            Endpoint::parse("redis://[::1]:6390/3").unwrap().addr(),
            "[::1]:6390"
        );
    }

    #[test]
    fn a_bad_url_is_explained_without_its_credentials() {
        for bad in [
            "http://:hunter2@host:6379/0",
            "host:6379",
            "redis://:hunter2@host:notaport/0",
            "redis://:hunter2@host:6379/notadb",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("host"), "{e}");
        }
        let e = Endpoint::parse("http://h:1/").unwrap_err();
        assert!(e.contains("expected redis://"), "{e}");
        assert!(Endpoint::parse("redis:///0").is_err());
    }

    #[test]
    fn endpoints_from_parts() {
        let e = Endpoint::from_parts("127.0.0.1", 6380, 1);
        assert_eq!(e.url(), "redis://127.0.0.1:6380/1");
        assert_eq!(e.to_string(), "redis://127.0.0.1:6380/1");
        assert_eq!(e, Endpoint::parse("redis://127.0.0.1:6380/1").unwrap());
        assert_eq!(Endpoint::from_parts("::1", 1, 0).url(), "redis://[::1]:1/0");
    }

    #[tokio::test]
    async fn a_connection_error_names_the_endpoint_without_the_password() {
        // An unparseable host fails inside the redis crate, before any socket opens.
        let e = Endpoint::from_parts("bad host", 6379, 0);
        let err = Commands::lazy(&e, Duration::from_secs(1)).err().unwrap();
        assert!(err.to_string().contains("bad host"), "{err}");
    }
}
