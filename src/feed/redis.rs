//! Redis pub/sub feed (the seed's setup): TrafficReader publishes each message as JSON on
//! a channel, TrafficRecorder and TrafficStreamer subscribe to it.
//!
//! Publishing never waits: `publish` only queues, and one background task sends whatever
//! has queued as one pipelined round trip of PUBLISHes. While Redis is away that task
//! keeps emptying the queue and counts every message as dropped, so memory stays bounded
//! (the queue by count and by the bytes its messages hold, [`DEFAULT_BYTE_BUDGET`]) and
//! the proxy path is untouched. Subscribing is [`redis_link::subscribe`]: it
//! SUBSCRIBEs before `subscribe` returns (a bad setup fails at once), then heals on its
//! own; this side parses the payloads and tells its reader about every loss and gap.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    ByteBudget, Feed, FeedCounters, FeedError, FeedStats, Publisher, Received, Subscription,
    Weighed, DEFAULT_BYTE_BUDGET,
};
use crate::redis_link::{self, Backoff, Commands, Delivery, Endpoint};
use crate::traffic::TrafficMessage;

/// Messages queued for publishing (or received and not yet read) before new ones drop.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// Most PUBLISHes in one round trip: large enough to amortise the round trip, small
/// enough that a failed batch costs little.
const MAX_BATCH: usize = 512;
/// A batch also ends at this many payload bytes, so captured bodies cannot make one
/// round trip outlast the response timeout.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long Redis may take to answer a batch before the connection is given up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pub/sub delivers after PUBLISH returns; a message published just now is usually
/// with its subscribers well within this.
pub const DELIVERY_GRACE: Duration = Duration::from_millis(200);
/// An unparseable message is logged the first time and then once per this many.
const INVALID_LOG_EVERY: u64 = 1000;

/// Publishes to a Redis channel from a background task; `publish` only queues.
///
/// Dropping the publisher closes the queue: the task sends what is still queued (or
/// counts it dropped while Redis is away) and ends.
pub struct RedisPublisher {
    tx: mpsc::Sender<Weighed>,
    counters: Arc<FeedCounters>,
    /// What the queued messages weigh: bounded by bytes as well as by count.
    bytes: Arc<ByteBudget>,
}

impl RedisPublisher {
    /// Connects now, so a Redis that is not there at startup is an error at once;
    /// `capacity` is the queue between `publish` and Redis (default 65536).
    pub async fn connect(
        endpoint: &Endpoint,
        channel: &str,
        capacity: Option<usize>,
    ) -> Result<Self, FeedError> {
        let commands = Commands::connect(endpoint, RESPONSE_TIMEOUT).await?;
        // A zero capacity would make the channel panic; one slot is the least that works.
        let (tx, rx) = mpsc::channel(capacity.unwrap_or(DEFAULT_CAPACITY).max(1));
        let counters = Arc::new(FeedCounters::default());
        let task = PublishTask {
            commands,
            channel: channel.to_owned(),
            rx,
            counters: counters.clone(),
        };
        tokio::spawn(task.run());
        Ok(Self {
            tx,
            counters,
            bytes: ByteBudget::new(DEFAULT_BYTE_BUDGET),
        })
    }

    /// The counters the background task shares (a test watches them outlive the task).
    pub fn counters(&self) -> Arc<FeedCounters> {
        self.counters.clone()
    }
}

impl Publisher for RedisPublisher {
    fn publish(&self, msg: Arc<TrafficMessage>) {
        // Full (Redis is slow or away) or closed (the task is gone): either way the
        // message cannot go, and the request must not wait for it.
        let admitted = self.bytes.admit(msg);
        if admitted.is_none_or(|m| self.tx.try_send(m).is_err()) {
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
    commands: Commands,
    channel: String,
    rx: mpsc::Receiver<Weighed>,
    counters: Arc<FeedCounters>,
}

impl PublishTask {
    async fn run(mut self) {
        let endpoint = self.commands.endpoint().clone();
        let mut connected = true;
        let mut outage: Option<Outage> = None;
        let mut backoff = Backoff::new();
        let mut dropped_at_success = 0;
        loop {
            if !connected {
                // Redis is away: wait, then try again, dropping what queues meanwhile.
                let wait = tokio::time::sleep(backoff.next_delay());
                if draining(&mut self.rx, &self.counters, wait).await.is_none() {
                    return;
                }
                let attempt = self.commands.ensure_connected();
                match draining(&mut self.rx, &self.counters, attempt).await {
                    None => return,
                    Some(Ok(())) => {
                        connected = true;
                        if let Some(o) = outage.take() {
                            tracing::info!(
                                %endpoint,
                                channel = %self.channel,
                                dropped = self.counters.dropped.load(Ordering::Relaxed).saturating_sub(o.dropped_before),
                                outage_ms = o.since.elapsed().as_millis() as u64,
                                "Redis feed publisher reconnected"
                            );
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "Redis feed publisher: reconnect failed");
                    }
                }
                continue;
            }
            let Some(first) = self.rx.recv().await else {
                return; // The publisher is gone and everything queued was handled.
            };
            let (pipe, n) = self.batch(first);
            if n == 0 {
                continue;
            }
            match self.commands.query::<()>(&pipe).await {
                Ok(()) => {
                    self.counters.published.fetch_add(n, Ordering::Relaxed);
                    dropped_at_success = self.counters.dropped.load(Ordering::Relaxed);
                    backoff.reset();
                }
                Err(error) => {
                    // Some of the batch may have gone out before the failure; the whole
                    // batch is counted dropped because none of it is known to have.
                    self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    connected = false;
                    if outage.is_none() {
                        tracing::error!(
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
    fn batch(&mut self, first: Weighed) -> (::redis::Pipeline, u64) {
        let mut pipe = ::redis::pipe();
        let (mut n, mut bytes) = (0u64, 0usize);
        let mut next = Some(first);
        // Each message gives its weight back once it is in the pipeline (whose bytes
        // are bounded on their own).
        while let Some(queued) = next.take() {
            let msg = &queued.msg;
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
    rx: &mut mpsc::Receiver<Weighed>,
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
    endpoint: Endpoint,
    channel: String,
    capacity: usize,
}

impl RedisFeed {
    pub fn new(endpoint: &Endpoint, channel: &str) -> Self {
        Self {
            endpoint: endpoint.clone(),
            channel: channel.into(),
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// Messages a subscriber may fall behind before it loses some (default 65536). No
    /// kwarg names it yet; the tests make it small.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// [`Feed::subscribe`] with the concrete type, whose counters tests read.
    pub async fn subscribe_redis(&self) -> Result<RedisSubscription, FeedError> {
        let inner = redis_link::subscribe(&self.endpoint, &self.channel, self.capacity).await?;
        Ok(RedisSubscription {
            inner,
            channel: self.channel.clone(),
            invalid: 0,
        })
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

/// The reading side: the shared self-healing subscription, its payloads parsed as
/// traffic messages.
pub struct RedisSubscription {
    inner: redis_link::Subscription,
    channel: String,
    invalid: u64,
}

impl RedisSubscription {
    /// Payloads that were not a traffic message, ever (skipped).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Messages dropped because this reader was behind, not yet reported by `recv`.
    pub fn lost_unreported(&self) -> u64 {
        self.inner.lost_unreported()
    }

    /// One delivery as the feed says it; `None` for a payload that is not a traffic
    /// message (counted, logged now and then).
    fn convert(&mut self, d: Delivery) -> Option<Received> {
        match d {
            Delivery::Gap => Some(Received::Gap),
            Delivery::Lost(n) => Some(Received::Lost(n)),
            Delivery::Message(payload) => {
                match serde_json::from_slice::<TrafficMessage>(&payload) {
                    Ok(m) => Some(Received::Message(Arc::new(m))),
                    Err(error) => {
                        self.invalid += 1;
                        let n = self.invalid;
                        if n == 1 || n.is_multiple_of(INVALID_LOG_EVERY) {
                            tracing::warn!(
                                channel = %self.channel,
                                invalid_total = n,
                                %error,
                                payload = %String::from_utf8_lossy(&payload[..payload.len().min(200)]),
                                "Redis feed: a message is not a traffic message; ignored"
                            );
                        }
                        None
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        loop {
            let d = self.inner.recv().await.ok_or(FeedError::Closed)?;
            if let Some(r) = self.convert(d) {
                return Ok(r);
            }
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        loop {
            let d = self.inner.try_recv()?;
            if let Some(r) = self.convert(d) {
                return Some(r);
            }
        }
    }
}
