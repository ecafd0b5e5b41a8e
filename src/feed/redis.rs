//! Redis pub/sub feed (the seed's setup): TrafficReader publishes each message as JSON on
//! a channel, TrafficRecorder and TrafficStreamer subscribe to it.
//!
//! Publishing never waits: `publish` only queues, and one background task sends whatever
//! has queued as one pipelined round trip of PUBLISHes. While Redis is away that task
//! keeps emptying the queue and counts every message as dropped, so memory stays bounded
//! and the proxy path is untouched. Subscribing connects and SUBSCRIBEs before
//! `subscribe` returns (a bad setup fails at once), then heals on its own and tells its
//! reader about every gap.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use tokio::sync::mpsc;

use super::{Feed, FeedCounters, FeedError, FeedStats, Publisher, Received, Subscription};
use crate::traffic::TrafficMessage;

/// Messages queued for publishing (or received and not yet read) before new ones drop.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// Most PUBLISHes in one round trip: large enough to amortise the round trip, small
/// enough that a failed batch costs little.
const MAX_BATCH: usize = 512;
/// A batch also ends at this many payload bytes, so captured bodies cannot make one
/// round trip outlast the response timeout.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long connecting (and subscribing) may take before it counts as a failure.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer a batch before the connection is given up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pub/sub delivers after PUBLISH returns; a message published just now is usually
/// with its subscribers well within this.
pub const DELIVERY_GRACE: Duration = Duration::from_millis(200);
/// An unparseable message is logged the first time and then once per this many.
const INVALID_LOG_EVERY: u64 = 1000;

/// Capped exponential delays between reconnection attempts (100 ms doubling to 5 s).
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::MIN }
    }

    /// The delay to wait now; the one after it is twice as long, up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// The Redis URL without credentials, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Parses the URL; the address (host:port) is what logs and errors name.
pub(crate) fn open_client(url: &str) -> Result<(Client, String), (String, RedisError)> {
    match Client::open(url) {
        Ok(c) => {
            let addr = c.get_connection_info().addr().to_string();
            Ok((c, addr))
        }
        Err(e) => Err((redact(url), e)),
    }
}

/// A timeout as a Redis I/O error, so callers handle it like any lost connection.
pub(crate) fn timed_out(what: &str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")).into()
}

async fn connect_publisher(client: &Client) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Opens a dedicated pub/sub connection subscribed to `channel`. `get_async_pubsub` has
/// no timeout of its own, hence the explicit one.
pub(crate) async fn connect_subscriber(
    client: &Client,
    channel: &str,
) -> RedisResult<PubSubStream> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.into_on_message())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(timed_out("subscribing")))
}

/// Publishes to a Redis channel from a background task; `publish` only queues.
///
/// Dropping the publisher closes the queue: the task sends what is still queued (or
/// counts it dropped while Redis is away) and ends.
pub struct RedisPublisher {
    tx: mpsc::Sender<Arc<TrafficMessage>>,
    counters: Arc<FeedCounters>,
}

impl RedisPublisher {
    /// Connects now, so a Redis that is not there at startup is an error at once;
    /// `capacity` is the queue between `publish` and Redis (default 65536).
    pub async fn connect(
        url: &str,
        channel: &str,
        capacity: Option<usize>,
    ) -> Result<Self, FeedError> {
        let (client, addr) =
            open_client(url).map_err(|(addr, source)| FeedError::Redis { addr, source })?;
        let conn = connect_publisher(&client)
            .await
            .map_err(|source| FeedError::Redis {
                addr: addr.clone(),
                source,
            })?;
        // A zero capacity would make the channel panic; one slot is the least that works.
        let (tx, rx) = mpsc::channel(capacity.unwrap_or(DEFAULT_CAPACITY).max(1));
        let counters = Arc::new(FeedCounters::default());
        let task = PublishTask {
            client,
            addr,
            channel: channel.to_owned(),
            rx,
            counters: counters.clone(),
        };
        tokio::spawn(task.run(conn));
        Ok(Self { tx, counters })
    }
}

impl Publisher for RedisPublisher {
    fn publish(&self, msg: Arc<TrafficMessage>) {
        // Full (Redis is slow or away) or closed (the task is gone): either way the
        // message cannot go, and the request must not wait for it.
        if self.tx.try_send(msg).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> FeedStats {
        self.counters.snapshot()
    }

    fn reset_stats(&self) {
        self.counters.reset();
    }
}

/// When the current outage was noticed, and the drop count at the last batch Redis
/// accepted: messages that piled up (and dropped) before the failure showed belong to
/// the outage too.
struct Outage {
    since: Instant,
    dropped_before: u64,
}

/// The background side of [`RedisPublisher`].
struct PublishTask {
    client: Client,
    addr: String,
    channel: String,
    rx: mpsc::Receiver<Arc<TrafficMessage>>,
    counters: Arc<FeedCounters>,
}

impl PublishTask {
    async fn run(mut self, conn: MultiplexedConnection) {
        let mut conn = Some(conn);
        let mut outage: Option<Outage> = None;
        let mut backoff = Backoff::new();
        let mut dropped_at_success = 0;
        loop {
            let Some(c) = conn.as_mut() else {
                // Redis is away: wait, then try again, dropping what queues meanwhile.
                let wait = tokio::time::sleep(backoff.next_delay());
                if draining(&mut self.rx, &self.counters, wait).await.is_none() {
                    return;
                }
                let attempt = connect_publisher(&self.client);
                match draining(&mut self.rx, &self.counters, attempt).await {
                    None => return,
                    Some(Ok(c)) => {
                        conn = Some(c);
                        if let Some(o) = outage.take() {
                            tracing::info!(
                                addr = %self.addr,
                                channel = %self.channel,
                                dropped = self.counters.dropped.load(Ordering::Relaxed).saturating_sub(o.dropped_before),
                                outage_ms = o.since.elapsed().as_millis() as u64,
                                "Redis feed publisher reconnected"
                            );
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(addr = %self.addr, %error, "Redis feed publisher: reconnect failed");
                    }
                }
                continue;
            };
            let Some(first) = self.rx.recv().await else {
                return; // The publisher is gone and everything queued was handled.
            };
            let (pipe, n) = self.batch(first);
            if n == 0 {
                continue;
            }
            match pipe.query_async::<()>(c).await {
                Ok(()) => {
                    self.counters.published.fetch_add(n, Ordering::Relaxed);
                    dropped_at_success = self.counters.dropped.load(Ordering::Relaxed);
                    backoff.reset();
                }
                Err(error) => {
                    // Some of the batch may have gone out before the failure; the whole
                    // batch is counted dropped because none of it is known to have.
                    self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    conn = None;
                    if outage.is_none() {
                        tracing::error!(
                            addr = %self.addr,
                            channel = %self.channel,
                            %error,
                            "Redis feed publisher lost its connection; dropping traffic messages until it is back"
                        );
                        outage = Some(Outage {
                            since: Instant::now(),
                            dropped_before: dropped_at_success,
                        });
                    }
                }
            }
        }
    }

    /// One pipeline of PUBLISHes: `first` and whatever else is already queued, up to the
    /// batch limits. Returns the pipeline and how many messages it carries.
    fn batch(&mut self, first: Arc<TrafficMessage>) -> (redis::Pipeline, u64) {
        let mut pipe = redis::pipe();
        let (mut n, mut bytes) = (0u64, 0usize);
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match serde_json::to_vec(msg.as_ref()) {
                Ok(payload) => {
                    bytes += payload.len();
                    pipe.cmd("PUBLISH").arg(&self.channel).arg(payload).ignore();
                    n += 1;
                }
                Err(error) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(transaction_id = %msg.transaction_id, %error, "traffic message did not serialize; dropped");
                }
            }
            if n < MAX_BATCH as u64 && bytes < MAX_BATCH_BYTES {
                next = self.rx.try_recv().ok();
            }
        }
        (pipe, n)
    }
}

/// Drives `fut` while counting everything that queues meanwhile as dropped. `None` when
/// the publisher is gone and the queue is empty: there is nothing left to do.
async fn draining<F: Future>(
    rx: &mut mpsc::Receiver<Arc<TrafficMessage>>,
    counters: &FeedCounters,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            m = rx.recv() => match m {
                Some(_) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => return None,
            },
        }
    }
}

/// Subscribes to a Redis channel.
pub struct RedisFeed {
    url: String,
    channel: String,
    capacity: usize,
}

impl RedisFeed {
    pub fn new(url: &str, channel: &str) -> Self {
        Self {
            url: url.into(),
            channel: channel.into(),
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// Messages a subscriber may fall behind before it loses some (default 65536). Only
    /// the tests change it for now; no kwarg names it yet.
    #[cfg(test)]
    fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    async fn subscribe_redis(&self) -> Result<RedisSubscription, FeedError> {
        let (client, addr) =
            open_client(&self.url).map_err(|(addr, source)| FeedError::Redis { addr, source })?;
        let stream = connect_subscriber(&client, &self.channel)
            .await
            .map_err(|source| FeedError::Redis {
                addr: addr.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(self.capacity);
        let shared = Arc::new(SubShared::default());
        let task = ForwardTask {
            client,
            addr,
            channel: self.channel.clone(),
            tx,
            shared: shared.clone(),
        };
        tokio::spawn(task.run(stream));
        Ok(RedisSubscription { rx, shared })
    }
}

#[async_trait]
impl Feed for RedisFeed {
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, FeedError> {
        Ok(Box::new(self.subscribe_redis().await?))
    }

    fn delivery_grace(&self) -> Duration {
        DELIVERY_GRACE
    }
}

/// What the forwarding task tells the reader besides messages.
#[derive(Debug, Default)]
struct SubShared {
    /// Messages dropped because the local queue was full, not yet reported.
    lost: AtomicU64,
    /// The connection was lost and healed (messages published meanwhile are gone,
    /// uncountably), not yet reported.
    gap: AtomicBool,
    /// Payloads that were not a traffic message, ever.
    invalid: AtomicU64,
    /// Times the subscription was lost and healed, ever.
    gaps: AtomicU64,
}

/// The reading side: a bounded local queue filled by [`ForwardTask`].
struct RedisSubscription {
    rx: mpsc::Receiver<Arc<TrafficMessage>>,
    shared: Arc<SubShared>,
}

impl RedisSubscription {
    /// A loss not yet reported. A gap of unknown size is `Lost(0)`: the reader learns
    /// that the feed skipped, even though Redis cannot say by how much.
    fn pending_loss(&self) -> Option<Received> {
        let lost = self.shared.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            self.shared.gap.store(false, Ordering::Relaxed);
            return Some(Received::Lost(lost));
        }
        self.shared
            .gap
            .swap(false, Ordering::Relaxed)
            .then_some(Received::Lost(0))
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        if let Some(loss) = self.pending_loss() {
            return Ok(loss);
        }
        match self.rx.recv().await {
            Some(m) => Ok(Received::Message(m)),
            None => Err(FeedError::Closed),
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        self.pending_loss()
            .or_else(|| self.rx.try_recv().ok().map(Received::Message))
    }
}

/// Moves messages from the Redis subscription into the local queue, parsing them on the
/// way, and resubscribes when the connection is lost. Ends when the reader is dropped.
struct ForwardTask {
    client: Client,
    addr: String,
    channel: String,
    tx: mpsc::Sender<Arc<TrafficMessage>>,
    shared: Arc<SubShared>,
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
                addr = %self.addr,
                channel = %self.channel,
                "Redis feed subscription lost its connection; resubscribing"
            );
            let since = Instant::now();
            match self.resubscribe().await {
                Some(s) => stream = s,
                None => return,
            }
            self.shared.gaps.fetch_add(1, Ordering::Relaxed);
            self.shared.gap.store(true, Ordering::Relaxed);
            tracing::info!(
                addr = %self.addr,
                channel = %self.channel,
                outage_ms = since.elapsed().as_millis() as u64,
                "Redis feed subscription restored; messages published meanwhile were missed"
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
                    tracing::debug!(addr = %self.addr, %error, "Redis feed: resubscribe failed");
                }
            }
        }
    }

    fn forward(&self, payload: &[u8]) {
        // A full queue means the reader is behind: drop here (counted) rather than stop
        // reading, or Redis would buffer for us and then cut us off. Room is checked
        // before parsing, so a subscriber that is behind does not also parse what it drops.
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(())) => return,
        };
        match serde_json::from_slice::<TrafficMessage>(payload) {
            Ok(m) => permit.send(Arc::new(m)),
            Err(error) => {
                let n = self.shared.invalid.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(INVALID_LOG_EVERY) {
                    tracing::warn!(
                        channel = %self.channel,
                        invalid_total = n,
                        %error,
                        payload = %String::from_utf8_lossy(&payload[..payload.len().min(200)]),
                        "Redis feed: a message is not a traffic message; ignored"
                    );
                }
            }
        }
    }
}

/// A private `redis-server` a test can kill and restart.
#[cfg(test)]
pub(crate) mod testing {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The shared Redis the tests use when they need not disturb it.
    pub const SHARED_URL: &str = "redis://127.0.0.1:6379/";

    pub fn unique(prefix: &str) -> String {
        format!("heliosburn.test.{prefix}.{}", uuid::Uuid::new_v4())
    }

    /// A port nothing listens on (for now).
    pub fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    pub struct TestRedis {
        pub port: u16,
        child: Option<Child>,
    }

    impl TestRedis {
        pub async fn start() -> Self {
            let mut r = Self {
                port: free_port(),
                child: None,
            };
            r.restart().await;
            r
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        pub fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        /// (Re)starts the server on the same port and waits until it answers PING.
        pub async fn restart(&mut self) {
            self.kill();
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            self.child = Some(child);
            for _ in 0..100 {
                if self.ping().await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server on port {} did not start", self.port);
        }

        async fn ping(&self) -> bool {
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
                return false;
            };
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").await.is_ok()
                && s.read_exact(&mut buf).await.is_ok()
                && &buf == b"+PONG\r\n"
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::traffic::{MultiMap, RequestInfo, ResponseInfo};

    /// A message in the seed's shape: the response event, carrying its request.
    fn msg(i: usize) -> Arc<TrafficMessage> {
        let mut headers = MultiMap::new();
        headers.insert("host".into(), vec!["example.test".into()]);
        let mut args = MultiMap::new();
        args.insert("q".into(), vec![i.to_string(), "two".into()]);
        Arc::new(TrafficMessage {
            transaction_id: format!("transaction-{i}"),
            request_id: format!("request-{i}"),
            response_id: format!("response-{i}"),
            request: Arc::new(RequestInfo {
                created_at: "2015-03-11T00:00:00.000001Z".into(),
                client_protocol: "HTTP/1.1".into(),
                method: "GET".into(),
                uri: format!("/items?q={i}&q=two"),
                path: "/items".into(),
                args,
                headers: headers.clone(),
                body: None,
            }),
            response: Some(Arc::new(ResponseInfo {
                created_at: "2015-03-11T00:00:00.000002Z".into(),
                client_protocol: "HTTP/1.1".into(),
                status_code: 200,
                status_description: "OK".into(),
                headers,
                body: None,
            })),
        })
    }

    async fn next_message(sub: &mut dyn Subscription) -> Arc<TrafficMessage> {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("a message within 5 s")
            .unwrap()
        {
            Received::Message(m) => m,
            Received::Lost(n) => panic!("unexpected loss of {n}"),
        }
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
    fn credentials_stay_out_of_logs() {
        assert_eq!(redact("redis://:secret@host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact("redis://user:pw@h/"), "redis://h/");
        assert_eq!(redact("redis://host:6379/"), "redis://host:6379/");
        let (_, addr) = open_client("redis://:secret@10.0.0.1:7000/2").unwrap();
        assert_eq!(addr, "10.0.0.1:7000");
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..300 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test]
    async fn published_messages_reach_subscribers_as_the_seed_json() {
        let channel = unique("feed");
        let feed = RedisFeed::new(SHARED_URL, &channel);
        let mut sub = feed.subscribe().await.unwrap();
        let client = Client::open(SHARED_URL).unwrap();
        let mut raw = connect_subscriber(&client, &channel).await.unwrap();
        let publisher = RedisPublisher::connect(SHARED_URL, &channel, None)
            .await
            .unwrap();

        const N: usize = 1000;
        for i in 0..N {
            publisher.publish(msg(i));
        }
        for i in 0..N {
            assert_eq!(next_message(sub.as_mut()).await, msg(i));
            let m = tokio::time::timeout(Duration::from_secs(5), raw.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                m.get_payload_bytes(),
                serde_json::to_vec(msg(i).as_ref()).unwrap()
            );
        }
        wait_until("all are counted", || {
            publisher.stats().published == N as u64
        })
        .await;
        assert_eq!(publisher.stats().dropped, 0);
        assert!(sub.try_recv().is_none());
        assert_eq!(feed.delivery_grace(), DELIVERY_GRACE);
    }

    #[tokio::test]
    async fn absent_redis_fails_at_once() {
        let url = format!("redis://127.0.0.1:{}/", free_port());
        let started = Instant::now();
        let e = RedisPublisher::connect(&url, "c", None)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, FeedError::Redis { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:"), "{e}");
        let e = RedisFeed::new(&url, "c").subscribe().await.err().unwrap();
        assert!(matches!(e, FeedError::Redis { .. }), "{e}");
        assert!(started.elapsed() < CONNECT_TIMEOUT * 2);
        let e = RedisFeed::new("http://nope", "c")
            .subscribe()
            .await
            .err()
            .unwrap();
        assert!(matches!(e, FeedError::Redis { .. }), "{e}");
    }

    #[tokio::test]
    async fn foreign_payloads_are_counted_and_skipped() {
        let channel = unique("foreign");
        let mut sub = RedisFeed::new(SHARED_URL, &channel)
            .subscribe_redis()
            .await
            .unwrap();
        let mut conn = Client::open(SHARED_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let good = serde_json::to_vec(msg(7).as_ref()).unwrap();
        redis::pipe()
            .publish(&channel, "not json")
            .publish(&channel, r#"{"transaction_id": 5}"#)
            .publish(&channel, good)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert_eq!(next_message(&mut sub).await, msg(7));
        assert_eq!(sub.shared.invalid.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_many_it_lost() {
        let channel = unique("behind");
        let feed = RedisFeed::new(SHARED_URL, &channel).with_capacity(4);
        let mut sub = feed.subscribe().await.unwrap();
        let publisher = RedisPublisher::connect(SHARED_URL, &channel, None)
            .await
            .unwrap();
        for i in 0..10 {
            publisher.publish(msg(i));
        }
        wait_until("all are published", || publisher.stats().published == 10).await;
        tokio::time::sleep(DELIVERY_GRACE).await;
        match sub.recv().await.unwrap() {
            Received::Lost(n) => assert_eq!(n, 6),
            other => panic!("expected a loss, got {other:?}"),
        }
        for i in 0..4 {
            assert_eq!(next_message(sub.as_mut()).await, msg(i));
        }
        assert!(sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn dropping_the_publisher_ends_its_task() {
        let channel = unique("drop");
        let publisher = RedisPublisher::connect(SHARED_URL, &channel, None)
            .await
            .unwrap();
        publisher.publish(msg(1));
        let counters = publisher.counters.clone();
        drop(publisher);
        // The task holds the only other reference to the counters.
        wait_until("the task ends", || Arc::strong_count(&counters) == 1).await;
        assert_eq!(counters.snapshot().published, 1);
    }

    /// Redis goes away mid-run: publishing never waits, every message is accounted for as
    /// published or dropped, and both sides heal when Redis is back.
    /// Log lines written while the guard lives (tasks of a current-thread test runtime
    /// run on the test's thread, so they log here too).
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let logs = self.clone();
            tracing::subscriber::set_default(
                tracing_subscriber::fmt()
                    .with_writer(move || logs.clone())
                    .with_ansi(false)
                    .with_max_level(tracing::Level::INFO)
                    .finish(),
            )
        }

        fn lines_with(&self, text: &str) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(text))
                .map(str::to_owned)
                .collect()
        }
    }

    #[tokio::test]
    async fn an_outage_costs_counted_messages_never_a_wait() {
        let logs = Logs::default();
        let _guard = logs.capture();
        let mut server = TestRedis::start().await;
        let channel = unique("outage");
        let feed = RedisFeed::new(&server.url(), &channel);
        let mut sub = feed.subscribe().await.unwrap();
        let publisher = RedisPublisher::connect(&server.url(), &channel, Some(1000))
            .await
            .unwrap();
        let mut total = 0u64;
        for i in 0..10 {
            publisher.publish(msg(i));
            total += 1;
        }
        for i in 0..10 {
            assert_eq!(next_message(sub.as_mut()).await, msg(i));
        }

        server.kill();
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        let m = msg(0);
        for _ in 0..100_000 {
            let m = m.clone();
            let t = Instant::now();
            publisher.publish(m);
            slowest = slowest.max(t.elapsed());
            total += 1;
        }
        let elapsed = started.elapsed();
        println!("100000 publishes with Redis down: {elapsed:?}, slowest {slowest:?}");
        assert!(
            elapsed < Duration::from_secs(2),
            "publishing waited: {elapsed:?}"
        );
        wait_until("every message is accounted for", || {
            let s = publisher.stats();
            s.published + s.dropped == total
        })
        .await;
        assert!(publisher.stats().dropped >= 100_000 - 1000);

        server.restart().await;
        // Publish until the healed subscriber hears one: both sides back off on their own.
        let mut healed = false;
        let mut gap_seen = false;
        for _ in 0..200 {
            publisher.publish(msg(999_999));
            total += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Some(r) = sub.try_recv() {
                match r {
                    Received::Lost(_) => gap_seen = true,
                    Received::Message(m) => {
                        assert_eq!(m, msg(999_999));
                        healed = true;
                    }
                }
            }
            if healed {
                break;
            }
        }
        assert!(healed, "the feed did not heal");
        assert!(gap_seen, "the subscriber was not told about the gap");
        wait_until("every message is accounted for", || {
            let s = publisher.stats();
            s.published + s.dropped == total
        })
        .await;
        assert!(publisher.stats().published > 10);

        // One error when each side lost Redis, one info when it healed; no more.
        let lost = logs.lines_with("Redis feed publisher lost its connection");
        let back = logs.lines_with("Redis feed publisher reconnected");
        assert_eq!((lost.len(), back.len()), (1, 1), "{lost:?} {back:?}");
        assert!(lost[0].contains("ERROR"), "{lost:?}");
        // Everything dropped from the kill on, at `publish` or in the task, is reported.
        let dropped_since_kill = publisher.stats().dropped;
        assert!(
            back[0].contains(&format!("dropped={dropped_since_kill} ")),
            "{back:?} (dropped {dropped_since_kill})"
        );
        let lost = logs.lines_with("Redis feed subscription lost its connection");
        let back = logs.lines_with("Redis feed subscription restored");
        assert_eq!((lost.len(), back.len()), (1, 1), "{lost:?} {back:?}");
        println!("{}", logs.lines_with("Redis feed").join("\n"));
    }

    /// Not a pass/fail test: prints how fast one publisher gets messages into Redis
    /// (debug build, shared machine; a rough figure).
    #[tokio::test]
    async fn publish_throughput() {
        const N: usize = 100_000;
        let channel = unique("throughput");
        let publisher = RedisPublisher::connect(SHARED_URL, &channel, Some(N))
            .await
            .unwrap();
        let messages: Vec<_> = (0..N).map(msg).collect();
        let bytes = serde_json::to_vec(messages[0].as_ref()).unwrap().len();
        let started = Instant::now();
        for m in messages {
            publisher.publish(m);
        }
        let queued = started.elapsed();
        wait_until("all are handled", || {
            let s = publisher.stats();
            s.published + s.dropped == N as u64
        })
        .await;
        let elapsed = started.elapsed();
        let s = publisher.stats();
        println!(
            "publish throughput: {} messages of {bytes} bytes in {elapsed:?} = {:.0} messages/s \
             into Redis (publish() itself: {queued:?}; dropped {})",
            s.published,
            s.published as f64 / elapsed.as_secs_f64(),
            s.dropped
        );
    }
}
