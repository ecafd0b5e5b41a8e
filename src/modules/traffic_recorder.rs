//! TrafficRecorder: subscribes to the feed and, while a recording runs, stores one
//! traffic document per transaction, written in batches.
//!
//! A batch is written when it holds `batch_size` documents or `batch_bytes` of bodies, or
//! `flush_ms` after its first message, whichever comes first. On a durable feed (the
//! spool) the recorder acknowledges what it read once the batch is written, so a kill -9
//! loses nothing (what was read and not acknowledged is read again, and stored once: the
//! store upserts by transaction), and while the store is down it stops reading and
//! retries the batch: the spool holds the backlog. On other feeds a kill -9 loses at most
//! the batch, and a failed write is kept and retried, up to `max_pending` documents and
//! `max_pending_bytes`, beyond which the oldest documents are dropped and counted as
//! failed. A full disk takes nothing more: the recordings of the batch are
//! stopped and marked failed with the reason (`Recordings::fail`), and its messages are
//! counted as failed. What the store would still not take when the recorder stops is
//! counted as failed too, and logged.
//!
//! The counters count messages: `received` = `recorded` + `ignored` (no recording
//! running) + `failed` + `pending`, and `received` + `lost` + `skipped` = what was
//! published (`skipped`: what a durable feed did not keep because no recording needed
//! it, such as request messages, whose responses carry the request again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::background::Background;
use super::factory::{Factory, Kind, ModuleConfig};
use super::kwargs::{
    control_host_claim, feed_endpoint, in_range, mongo_store, redis_endpoint, Port, RedisUrl,
    STORE_KEYS,
};
use super::{Built, ModuleError, SupportModule};
use crate::feed::{Feed, Mark, Received, Subscription};
use crate::proxy::metrics::ModuleHistogram;
use crate::recording::{FlushRequest, Recordings, Target, FLUSH_WAIT};
use crate::redis_link::Endpoint;
use crate::resources::{Claim, Claimed, FeedEndpoint, FeedUse, RedisMode, Resources, StoreSpec};
use crate::store::StoreError;
use crate::traffic::{Loss, TrafficDoc, TrafficMessage};

/// Stores the feed into recordings.
pub static FACTORY: Factory = Factory::new::<RecorderKwargs>("TrafficRecorder", Kind::Support);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderKwargs {
    /// `redis://[user:pass@]host[:port][/db]` (or `rediss://`); wins over the parts.
    pub redis_url: Option<RedisUrl>,
    pub redis_host: Option<String>,
    pub redis_port: Option<Port>,
    pub redis_db: Option<i64>,
    /// Channel to subscribe to (default `heliosburn.traffic`), or the stream's key in
    /// stream mode (default `heliosburn.traffic.stream`).
    pub redis_sub_queue: Option<String>,
    /// `pubsub` (the seed's, default) or `stream` (at least once, through a consumer
    /// group named after the module).
    pub redis_mode: Option<RedisMode>,
    /// Stream mode: ms an entry another recorder of the group read stays unacknowledged
    /// before this one takes it over (default 30000).
    pub redis_claim_idle_ms: Option<u64>,
    pub mongo_host: Option<String>,
    pub mongo_port: Option<Port>,
    pub mongo_db: Option<String>,
    pub mongo_collection: Option<String>,
    /// A full connection string (replica sets, clusters); wins over host and port.
    pub mongo_uri: Option<String>,
    /// Documents per write (default 1000).
    pub batch_size: Option<usize>,
    /// Longest a received message waits before it is written, in ms (default 20).
    pub flush_ms: Option<u64>,
    /// Documents kept for retry while the store is failing (default 100000).
    pub max_pending: Option<usize>,
    /// Bytes of bodies per write (default 8 MiB): large bodies make smaller batches.
    pub batch_bytes: Option<usize>,
    /// Bytes of bodies kept for retry while the store is failing (default 64 MiB).
    pub max_pending_bytes: Option<usize>,
}

impl RecorderKwargs {
    /// The feed it reads.
    fn source(&self) -> FeedEndpoint {
        feed_endpoint(self.redis(), &self.redis_sub_queue, self.redis_mode)
    }

    fn redis(&self) -> Option<Endpoint> {
        redis_endpoint(
            &self.redis_url,
            &self.redis_host,
            self.redis_port,
            self.redis_db,
        )
    }

    /// The store these kwargs name: MongoDB when any of `mongo_uri`, `mongo_host` and
    /// `mongo_port` is given, else the embedded one.
    pub fn store(&self) -> StoreSpec {
        mongo_store(
            &self.mongo_uri,
            &self.mongo_host,
            self.mongo_port,
            &self.mongo_db,
            &self.mongo_collection,
        )
        .unwrap_or(StoreSpec::Embedded)
    }
}

#[async_trait]
impl ModuleConfig for RecorderKwargs {
    fn validate(&self) -> Result<(), String> {
        in_range("batch_size", self.batch_size, 1..=100_000)?;
        in_range("flush_ms", self.flush_ms, 1..=60_000)?;
        in_range("max_pending", self.max_pending, 1..=10_000_000)?;
        in_range("batch_bytes", self.batch_bytes, 1..=1 << 30)?;
        in_range("max_pending_bytes", self.max_pending_bytes, 1..=1 << 34)?;
        in_range(
            "redis_claim_idle_ms",
            self.redis_claim_idle_ms,
            100..=86_400_000,
        )
    }

    fn claims(&self) -> Vec<Claimed> {
        let mut claims = vec![Claimed {
            claim: Claim::Store(self.store()),
            keys: STORE_KEYS,
        }];
        claims.extend(control_host_claim(self.redis()));
        claims
    }

    fn feed(&self) -> Option<FeedUse> {
        Some(FeedUse::Reads(self.source()))
    }

    async fn build(&self, resources: &Resources) -> Result<Built, ModuleError> {
        let claim_idle = self
            .redis_claim_idle_ms
            .map_or(crate::feed::stream::CLAIM_IDLE, Duration::from_millis);
        let feed = resources
            .feeds
            .subscriber_claiming(&self.source(), claim_idle);
        Ok(Built::Support(Arc::new(TrafficRecorder::new(
            feed,
            resources.recordings.clone(),
            self,
        ))))
    }
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    recorded: AtomicU64,
    ignored: AtomicU64,
    lost: AtomicU64,
    /// Messages a durable feed did not keep because no recording needed them.
    skipped: AtomicU64,
    /// Feed interruptions of unknown size (Redis went away and came back).
    gaps: AtomicU64,
    failed: AtomicU64,
    pending: AtomicU64,
}

#[derive(Serialize)]
struct CountersView {
    received: u64,
    recorded: u64,
    ignored: u64,
    lost: u64,
    skipped: u64,
    gaps: u64,
    failed: u64,
    pending: u64,
    store: String,
}

#[derive(Clone, Copy)]
struct Tuning {
    batch_size: usize,
    batch_bytes: usize,
    flush: Duration,
    max_pending: usize,
    max_pending_bytes: usize,
}

pub struct TrafficRecorder {
    feed: Arc<dyn Feed>,
    recordings: Arc<Recordings>,
    tuning: Tuning,
    counters: Arc<Counters>,
    /// How long each batch took to write.
    writes: ModuleHistogram,
    background: Background,
}

impl TrafficRecorder {
    pub fn new(feed: Arc<dyn Feed>, recordings: Arc<Recordings>, kwargs: &RecorderKwargs) -> Self {
        Self {
            feed,
            recordings,
            tuning: Tuning {
                batch_size: kwargs.batch_size.unwrap_or(1000).max(1),
                batch_bytes: kwargs.batch_bytes.unwrap_or(8 << 20).max(1),
                flush: Duration::from_millis(kwargs.flush_ms.unwrap_or(20).max(1)),
                max_pending: kwargs.max_pending.unwrap_or(100_000).max(1),
                max_pending_bytes: kwargs.max_pending_bytes.unwrap_or(64 << 20).max(1),
            },
            counters: Arc::default(),
            writes: ModuleHistogram::seconds(
                "store_write_seconds",
                "How long the recorder's batch writes to the store took",
            ),
            background: Background::default(),
        }
    }
}

#[async_trait]
impl SupportModule for TrafficRecorder {
    async fn start(&self) -> Result<(), ModuleError> {
        self.stop().await;
        let sub = self.feed.subscribe_durable(CONSUMER).await?;
        let (flush_tx, flush_rx) = mpsc::channel(4);
        self.recordings.set_recorder(Some(flush_tx));
        let worker = Worker {
            sub,
            recordings: self.recordings.clone(),
            counters: self.counters.clone(),
            writes: self.writes.histogram.clone(),
            tuning: self.tuning,
            grace: self.feed.delivery_grace(),
            batch: Batch::default(),
            in_flight: None,
            in_flight_messages: 0,
            in_flight_complete: Vec::new(),
            acked: Mark::default(),
            idle_ack: tokio::time::Instant::now(),
            store_down: false,
        };
        self.background.spawn(|cancel| worker.run(flush_rx, cancel));
        Ok(())
    }

    async fn stop(&self) {
        self.recordings.set_recorder(None);
        self.background.stop().await;
    }

    fn counters(&self) -> serde_json::Value {
        let c = &self.counters;
        let view = CountersView {
            received: c.received.load(Ordering::Relaxed),
            recorded: c.recorded.load(Ordering::Relaxed),
            ignored: c.ignored.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
            store: self.recordings.store().describe(),
        };
        serde_json::to_value(view).unwrap_or_default()
    }

    fn histograms(&self) -> Vec<ModuleHistogram> {
        vec![self.writes.clone()]
    }

    fn reset(&self) {
        let c = &self.counters;
        for n in [
            &c.received,
            &c.recorded,
            &c.ignored,
            &c.lost,
            &c.skipped,
            &c.gaps,
            &c.failed,
        ] {
            n.store(0, Ordering::Relaxed);
        }
    }
}

/// Documents waiting to be written, one per (recording, transaction): a response that
/// arrives while its request is still waiting completes it in place.
#[derive(Default)]
struct Batch {
    docs: Vec<TrafficDoc>,
    /// How many messages each document holds (1, or 2 for a request and its response):
    /// the counters count messages, so that received = recorded + ignored + failed + pending.
    messages: Vec<u64>,
    /// Whether each document holds the response event that completes its transaction
    /// (a WebSocket upgrade's later events, which add messages, complete nothing new).
    completes: Vec<bool>,
    index: HashMap<(String, String), usize>,
    /// Bytes of the bodies the documents hold (a completed document counts both of
    /// its versions: an upper bound).
    bytes: usize,
}

impl Batch {
    fn add(&mut self, recording: &str, msg: &TrafficMessage, started: DateTime<Utc>) {
        let completes = msg
            .response
            .as_ref()
            .is_some_and(|r| r.web_socket_messages.is_none());
        self.add_doc(
            TrafficDoc::from_message(recording, msg, started),
            1,
            completes,
        );
    }

    /// Adds a document, or completes the one of the same transaction: the document with
    /// a response (and the request body that comes with it) wins.
    fn add_doc(&mut self, doc: TrafficDoc, messages: u64, completes: bool) {
        self.bytes += doc.body_bytes();
        let key = (doc.recording_id.clone(), doc.transaction_id.clone());
        match self.index.get(&key) {
            Some(&i) => {
                self.messages[i] += messages;
                self.completes[i] |= completes;
                if doc.response.is_some() {
                    self.docs[i].request = doc.request;
                    self.docs[i].response = doc.response;
                }
            }
            None => {
                self.index.insert(key, self.docs.len());
                self.docs.push(doc);
                self.messages.push(messages);
                self.completes.push(completes);
            }
        }
    }

    /// The documents with what each holds, to be added to another batch.
    fn into_parts(self) -> impl Iterator<Item = (TrafficDoc, u64, bool)> {
        self.docs
            .into_iter()
            .zip(self.messages)
            .zip(self.completes)
            .map(|((doc, n), completes)| (doc, n, completes))
    }

    fn len(&self) -> usize {
        self.docs.len()
    }

    /// Lets the oldest documents go until at most `max_docs` documents and `max_bytes`
    /// of bodies are left; returns the messages they held, and them.
    fn shed(&mut self, max_docs: usize, max_bytes: usize) -> (u64, Batch) {
        let mut gone = Batch::default();
        if self.len() <= max_docs && self.bytes <= max_bytes {
            return (0, gone);
        }
        let (mut kept, mut bytes) = (0, 0);
        let keep_from = self
            .docs
            .iter()
            .rposition(|doc| {
                kept += 1;
                bytes += doc.body_bytes();
                kept > max_docs || bytes > max_bytes
            })
            .map_or(0, |i| i + 1);
        let old = std::mem::take(self);
        let mut lost = 0;
        for (i, (doc, n, completes)) in old.into_parts().enumerate() {
            if i < keep_from {
                lost += n;
                gone.add_doc(doc, n, completes);
            } else {
                self.add_doc(doc, n, completes);
            }
        }
        (lost, gone)
    }

    fn message_count(&self) -> u64 {
        self.messages.iter().sum()
    }
}

/// A batch being written, which comes back with the store's answer.
type Write = JoinHandle<(Batch, Result<u64, StoreError>)>;

/// How many complete transactions of each recording a batch holds.
fn complete_per_recording(batch: &Batch) -> Vec<(String, u64)> {
    let mut per_recording: HashMap<&str, u64> = HashMap::new();
    for (doc, _) in batch.docs.iter().zip(&batch.completes).filter(|(_, c)| **c) {
        *per_recording.entry(&doc.recording_id).or_default() += 1;
    }
    per_recording
        .into_iter()
        .map(|(r, n)| (r.to_owned(), n))
        .collect()
}

/// The write in flight, finished (pending while there is none).
async fn written(
    in_flight: &mut Option<(Write, Mark)>,
) -> Result<(Batch, Result<u64, StoreError>), tokio::task::JoinError> {
    match in_flight.as_mut() {
        Some((task, _)) => task.await,
        None => std::future::pending().await,
    }
}

/// The recorder's name on a durable feed (its cursor in the spool).
const CONSUMER: &str = "TrafficRecorder";

struct Worker {
    sub: Box<dyn Subscription>,
    recordings: Arc<Recordings>,
    counters: Arc<Counters>,
    writes: Histogram,
    tuning: Tuning,
    grace: Duration,
    batch: Batch,
    /// The batch being written, with its outcome, and how far the feed had been read
    /// when it was cut (acknowledged once it is written).
    in_flight: Option<(Write, Mark)>,
    /// Messages in the batch being written (counted as failed if its task dies).
    in_flight_messages: u64,
    /// Its complete transactions per recording (counted lost in them if its task dies).
    in_flight_complete: Vec<(String, u64)>,
    /// What was acknowledged last, and when a read with nothing to write last was.
    acked: Mark,
    idle_ack: tokio::time::Instant,
    store_down: bool,
}

impl Worker {
    async fn run(mut self, mut flush_rx: mpsc::Receiver<FlushRequest>, cancel: CancellationToken) {
        let mut target = self.recordings.watch();
        let mut tick = tokio::time::interval(self.tuning.flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // A durable feed keeps what is not read yet for the next start; any
                    // other loses it, so it is taken now.
                    if !self.sub.durable() {
                        let t = target.borrow().clone();
                        self.drain(&t).await;
                    }
                    self.flush_all().await;
                    self.give_up("stopping");
                    if let Some(b) = self.sub.backlog().filter(|b| b.messages > 0) {
                        tracing::warn!(
                            messages = b.messages,
                            bytes = b.bytes,
                            spool = %b.place,
                            "TrafficRecorder stops with messages it has not stored yet; they wait in the spool and are stored when it starts again"
                        );
                    }
                    break;
                }
                Some(ack) = flush_rx.recv() => {
                    self.catch_up(&mut target).await;
                    self.flush_all().await;
                    // A stop waits for what was captured: a failing store is retried
                    // as long as the stop waits.
                    let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
                    while self.store_down
                        && self.batch.len() > 0
                        && tokio::time::Instant::now() < deadline
                        && !cancel.is_cancelled()
                    {
                        self.flush_all().await;
                    }
                    let _ = ack.send(());
                }
                // While the store is down, a durable feed keeps what comes (the spool
                // is the backlog); the batch is retried alone instead of growing.
                received = self.sub.recv(), if !self.holding_back() => match received {
                    Ok(r) => {
                        self.take(r, &target.borrow());
                        if self.full() {
                            self.flush().await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TrafficRecorder: the feed ended");
                        self.flush_all().await;
                        self.give_up("the feed ended");
                        break;
                    }
                },
                result = written(&mut self.in_flight), if self.in_flight.is_some() => {
                    // Accounted (and acknowledged) as soon as it is written.
                    if let Some((_, mark)) = self.in_flight.take() {
                        self.account(result, mark).await;
                    }
                }
                _ = tick.tick() => self.flush().await,
            }
        }
    }

    fn take(&mut self, r: Received, target: &Target) {
        match r {
            Received::Message(msg) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                let started = msg.started_at().unwrap_or_else(Utc::now);
                match target.recording_for(started) {
                    Some(rec) => self.batch.add(rec, &msg, started),
                    None => {
                        self.counters.ignored.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // The feed was cut off and healed: how much was missed is not known.
            Received::Gap => {
                self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("TrafficRecorder: the feed was interrupted; messages published meanwhile were missed");
            }
            Received::Lost(n) => {
                self.counters.lost.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    lost = n,
                    "TrafficRecorder fell behind the feed; messages lost"
                );
            }
            Received::Skipped(n) => {
                self.counters.skipped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Takes everything already delivered (a durable feed's backlog included), writing
    /// batches as they fill.
    async fn drain(&mut self, target: &Target) {
        // A durable feed keeps what the store cannot take now: reading it into the batch
        // would only grow the batch until it sheds.
        while !self.holding_back() {
            let Some(r) = self.sub.try_recv() else {
                break;
            };
            self.take(r, target);
            if self.full() {
                self.flush().await;
            }
        }
    }

    /// The store is down and the feed keeps what is not read: reading waits.
    fn holding_back(&self) -> bool {
        self.store_down && self.sub.durable()
    }

    fn full(&self) -> bool {
        self.batch.len() >= self.tuning.batch_size || self.batch.bytes >= self.tuning.batch_bytes
    }

    /// Before a stop completes: what was published before it must be in the batch. For
    /// a remote feed, messages may still be on the way for `grace`.
    async fn catch_up(&mut self, target: &mut tokio::sync::watch::Receiver<Target>) {
        let t = target.borrow().clone();
        self.drain(&t).await;
        if self.grace.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        while !self.holding_back() {
            let Ok(Ok(r)) = tokio::time::timeout_at(deadline, self.sub.recv()).await else {
                break;
            };
            self.take(r, &t);
            if self.full() {
                self.flush().await;
            }
        }
    }

    /// Hands the batch to a writer task and returns, so receiving the next batch overlaps
    /// writing this one. At most one write is in flight.
    async fn flush(&mut self) {
        self.settle().await;
        if self.batch.len() == 0 {
            // Nothing to write, but what was read (messages of no recording) is done
            // with: acknowledged, so that it is not delivered again.
            // At most once a second: a durable feed syncs its cursor.
            let mark = self.sub.mark();
            if self.in_flight.is_none()
                && mark != self.acked
                && !self.store_down
                && self.idle_ack.elapsed() >= Duration::from_secs(1)
            {
                self.idle_ack = tokio::time::Instant::now();
                self.ack(mark).await;
            }
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.in_flight_messages = batch.message_count();
        self.in_flight_complete = complete_per_recording(&batch);
        let store = self.recordings.store().clone();
        let writes = self.writes.clone();
        let task = tokio::spawn(async move {
            let began = std::time::Instant::now();
            let result = store.write_traffic(&batch.docs).await;
            writes.observe(began.elapsed().as_secs_f64());
            (batch, result)
        });
        self.in_flight = Some((task, self.sub.mark()));
    }

    /// What was read up to `mark` is stored (or counted lost): the feed may let it go.
    async fn ack(&mut self, mark: Mark) {
        self.acked = mark;
        if let Err(e) = self.sub.ack(mark).await {
            // Not fatal: the messages come again after a restart, and are stored once.
            tracing::warn!(error = %e, "TrafficRecorder cannot acknowledge what it stored; it will be delivered again after a restart");
        }
    }

    /// The recorder ends with messages the store would not take: on a durable feed they
    /// were never acknowledged and come again at the next start; otherwise they are
    /// counted lost. Either way, said.
    fn give_up(&mut self, why: &str) {
        let left = self.batch.message_count();
        if left == 0 {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.counters.pending.store(0, Ordering::Relaxed);
        if self.sub.durable() {
            tracing::warn!(
                kept = left,
                store = %self.recordings.store().describe(),
                "TrafficRecorder {why} with messages the store would not take yet; they stay unacknowledged in the feed (the spool, or the stream) and are stored when the recorder starts again"
            );
            return;
        }
        self.counters.failed.fetch_add(left, Ordering::Relaxed);
        self.count_lost(&batch);
        tracing::error!(
            lost = left,
            store = %self.recordings.store().describe(),
            "TrafficRecorder {why} with messages the store would not take; they are lost"
        );
    }

    /// The transactions of `docs` are lost to their recordings (the store would not take
    /// them).
    fn count_lost(&self, batch: &Batch) {
        for (recording, n) in complete_per_recording(batch) {
            self.recordings.lost_in(&recording, Loss::Store, n);
        }
    }

    /// Writes everything received so far and waits for it (stop, flush requests).
    async fn flush_all(&mut self) {
        self.flush().await;
        self.settle().await;
    }

    /// Waits for the write in flight and accounts for it.
    async fn settle(&mut self) {
        if let Some((task, mark)) = self.in_flight.take() {
            let result = task.await;
            self.account(result, mark).await;
        }
    }

    /// Accounts for a finished write; a failed batch comes back in front of what arrived
    /// since, bounded by `max_pending`.
    async fn account(
        &mut self,
        result: Result<(Batch, Result<u64, StoreError>), tokio::task::JoinError>,
        mark: Mark,
    ) {
        let (failed, error) = match result {
            Ok((written, Ok(_))) => {
                self.ack(mark).await;
                self.counters
                    .recorded
                    .fetch_add(written.message_count(), Ordering::Relaxed);
                self.counters
                    .pending
                    .store(self.batch.message_count(), Ordering::Relaxed);
                if self.store_down {
                    tracing::info!(store = %self.recordings.store().describe(), "store is back; recording resumed");
                    self.store_down = false;
                }
                return;
            }
            // A full disk takes nothing more: the recordings stop, marked failed, and
            // their messages are counted as not stored rather than kept to retry.
            Ok((batch, Err(e))) if e.is_disk_full() => {
                let reason = format!("the store's disk is full: {e}");
                let mut per_recording: HashMap<String, u64> = HashMap::new();
                for (doc, n) in batch.docs.iter().zip(&batch.messages) {
                    *per_recording.entry(doc.recording_id.clone()).or_default() += n;
                }
                self.counters
                    .failed
                    .fetch_add(batch.message_count(), Ordering::Relaxed);
                self.count_lost(&batch);
                for (recording, lost) in per_recording {
                    self.recordings.fail(&recording, &reason, lost).await;
                }
                self.ack(mark).await;
                self.counters
                    .pending
                    .store(self.batch.message_count(), Ordering::Relaxed);
                return;
            }
            Ok((batch, Err(e))) => (batch, e.to_string()),
            Err(join) => {
                // The batch went down with the task: counted (in its recordings too) rather
                // than lost silently; a later acknowledgement goes past it.
                let lost = self.in_flight_messages;
                self.counters.failed.fetch_add(lost, Ordering::Relaxed);
                for (recording, n) in std::mem::take(&mut self.in_flight_complete) {
                    self.recordings.lost_in(&recording, Loss::Store, n);
                }
                tracing::error!(error = %join, lost, "the traffic writer failed");
                return;
            }
        };
        if !self.store_down {
            tracing::error!(error = %error, "cannot write traffic; keeping it to retry");
            self.store_down = true;
        }
        let newer = std::mem::replace(&mut self.batch, failed);
        for (doc, n, completes) in newer.into_parts() {
            self.batch.add_doc(doc, n, completes);
        }
        let (lost, shed) = self
            .batch
            .shed(self.tuning.max_pending, self.tuning.max_pending_bytes);
        self.counters.failed.fetch_add(lost, Ordering::Relaxed);
        self.count_lost(&shed);
        self.counters
            .pending
            .store(self.batch.message_count(), Ordering::Relaxed);
        // Don't hammer a store that is down.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::BodyCapture;

    fn doc(txn: &str, body: usize) -> TrafficDoc {
        let body = BodyCapture::from_bytes(&vec![b'x'; body], body as u64);
        TrafficDoc::from_message("r", &TrafficMessage::sample(txn, Some(body)), Utc::now())
    }

    #[test]
    fn a_batch_kept_for_retry_sheds_its_oldest_by_count_and_by_bytes() {
        let mut batch = Batch::default();
        for i in 0..10 {
            batch.add_doc(doc(&i.to_string(), 100), 2, true);
        }
        assert_eq!(batch.shed(10, 1000).0, 0, "within both bounds");
        let (lost, gone) = batch.shed(8, 10_000);
        assert_eq!((lost, gone.len()), (4, 2), "two documents of two messages");
        assert_eq!((batch.len(), batch.bytes), (8, 800));
        assert_eq!(batch.docs[0].transaction_id, "2", "the oldest went");
        assert_eq!(batch.shed(100, 350).0, 10);
        assert_eq!((batch.len(), batch.bytes), (3, 300));
        assert_eq!(batch.docs[0].transaction_id, "7");
        assert_eq!(batch.message_count(), 6);
    }
}
