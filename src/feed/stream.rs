//! Redis streams (`redis_mode: stream`): the feed at least once.
//!
//! The publisher hands each message to a local outbox (an in-process [`Bus`] with its
//! spool, under the data directory) and a task of its own sends the outbox in order with
//! pipelined `XADD key MAXLEN ~ N * m JSON`, acknowledging it only once Redis took it:
//! while Redis is away the outbox keeps what comes (bounded by its spool) and sends it
//! when Redis is back; a `kill -9` loses nothing the outbox held.
//!
//! A durable subscriber reads through its consumer group (`XREADGROUP`, created at the
//! stream's end when missing), acknowledges (`XACK`) what its consumer made durable, and
//! every few seconds takes over entries another consumer of the group left pending too
//! long (`XAUTOCLAIM`): a dead recorder's work goes to a live one. Delivery is at least
//! once (a batch sent again after a broken connection, a claimed entry); consumers are
//! idempotent (the store upserts by transaction). A plain subscriber reads with `XREAD`
//! from the stream's end.
//!
//! What Redis itself keeps across a restart is Redis's promise: with `appendonly yes` and
//! `appendfsync always`, nothing it acknowledged; without persistence, a restart empties
//! the stream. `MAXLEN` bounds the stream: a group more than that far behind loses the
//! oldest entries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::bus::Bus;
use super::spool::{Cursor, SpoolConfig};
use super::{Feed, FeedError, FeedStats, Mark, Publisher, Received, Subscription};
use crate::redis_link::{Backoff, Commands, Endpoint};
use crate::traffic::TrafficMessage;

/// Entries a stream keeps by default (`MAXLEN ~`).
pub const DEFAULT_MAXLEN: u64 = 1_000_000;
/// Entries per XADD pipeline and per XREADGROUP.
const BATCH: usize = 512;
/// How long one XREADGROUP waits for entries.
const BLOCK: Duration = Duration::from_millis(1000);
/// Answers may take this long (beyond a blocking read's wait).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// An entry pending this long with its consumer is taken over by another.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// How often a consumer looks for entries to take over.
const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// The consumer the outbox's cursor is kept under.
const OUTBOX_CONSUMER: &str = "redis-stream";

/// Publishes to a Redis stream through a local outbox.
pub struct StreamPublisher {
    outbox: Bus,
    counters: Arc<SendCounters>,
}

#[derive(Default)]
struct SendCounters {
    sent: AtomicU64,
    outages: AtomicU64,
}

impl StreamPublisher {
    /// Connects now (a Redis that is not there at startup is an error at once), opens the
    /// outbox in `outbox_dir`, and starts sending.
    pub async fn connect(
        endpoint: &Endpoint,
        key: &str,
        maxlen: u64,
        outbox_dir: std::path::PathBuf,
    ) -> Result<Self, FeedError> {
        let commands = Commands::connect(endpoint, RESPONSE_TIMEOUT).await?;
        let outbox = Bus::with_spool(BATCH, SpoolConfig::new(outbox_dir))?;
        let sub = outbox.subscribe_durable(OUTBOX_CONSUMER).await?;
        let counters = Arc::new(SendCounters::default());
        let sender = Sender {
            commands,
            key: key.to_owned(),
            maxlen,
            sub,
            counters: counters.clone(),
        };
        tokio::spawn(sender.run());
        Ok(Self { outbox, counters })
    }
}

impl Publisher for StreamPublisher {
    fn publish(&self, msg: Arc<TrafficMessage>) {
        self.outbox.publish(msg);
    }

    fn stats(&self) -> FeedStats {
        let outbox = self.outbox.stats();
        let spool = outbox.spool.unwrap_or_default();
        FeedStats {
            published: self.counters.sent.load(Ordering::Relaxed),
            dropped: spool.full + spool.failed,
            spool: outbox.spool,
        }
    }

    fn reset_stats(&self) {
        self.outbox.reset_stats();
        self.counters.sent.store(0, Ordering::Relaxed);
    }
}

/// Sends the outbox to the stream, in order, acknowledging what Redis took.
struct Sender {
    commands: Commands,
    key: String,
    maxlen: u64,
    sub: Box<dyn Subscription>,
    counters: Arc<SendCounters>,
}

impl Sender {
    async fn run(mut self) {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut backoff = Backoff::new();
        let mut down = false;
        loop {
            if batch.is_empty() {
                match self.sub.recv().await {
                    Ok(r) => self.take(r, &mut batch),
                    Err(_) => return, // the publisher is gone
                }
                while batch.len() < BATCH {
                    match self.sub.try_recv() {
                        Some(r) => self.take(r, &mut batch),
                        None => break,
                    }
                }
            }
            let mark = self.sub.mark();
            let mut pipe = redis::pipe();
            for payload in &batch {
                pipe.cmd("XADD")
                    .arg(&self.key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.maxlen)
                    .arg("*")
                    .arg("m")
                    .arg(payload.as_slice())
                    .ignore();
            }
            match self.commands.query::<()>(&pipe).await {
                Ok(()) => {
                    self.counters
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    if let Err(e) = self.sub.ack(mark).await {
                        tracing::warn!(error = %e, "cannot acknowledge the outbox; its messages go again after a restart");
                    }
                    if std::mem::take(&mut down) {
                        tracing::info!(stream = %self.key, "Redis takes the stream again; the outbox is being sent");
                    }
                    backoff.reset();
                }
                Err(e) => {
                    // Kept: the same batch goes again (entries Redis took before the break
                    // are then in the stream twice; consumers store them once).
                    if !std::mem::replace(&mut down, true) {
                        self.counters.outages.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(stream = %self.key, error = %e, "cannot add to the Redis stream; traffic waits in the outbox until Redis is back");
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn take(&self, r: Received, batch: &mut Vec<Vec<u8>>) {
        if let Received::Message(msg) = r {
            match serde_json::to_vec(msg.as_ref()) {
                Ok(json) => batch.push(json),
                Err(e) => tracing::error!(error = %e, "a traffic message cannot be encoded"),
            }
        }
    }
}

/// A Redis stream to read.
pub struct StreamFeed {
    endpoint: Endpoint,
    key: String,
    claim_idle: Duration,
}

impl StreamFeed {
    pub fn new(endpoint: &Endpoint, key: &str) -> Self {
        Self {
            endpoint: endpoint.clone(),
            key: key.to_owned(),
            claim_idle: CLAIM_IDLE,
        }
    }

    /// Sets how long another consumer's entry must be pending before this one takes it.
    pub fn with_claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// A connection of the subscriber's own: its blocking reads would hold up a shared one.
    async fn connect(&self) -> Result<Commands, FeedError> {
        Ok(Commands::connect(&self.endpoint, RESPONSE_TIMEOUT + BLOCK).await?)
    }
}

#[async_trait]
impl Feed for StreamFeed {
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, FeedError> {
        let reads = self.connect().await?;
        Ok(Box::new(StreamSubscription::start(
            reads,
            None,
            &self.key,
            None,
            self.claim_idle,
        )))
    }

    async fn subscribe_durable(&self, consumer: &str) -> Result<Box<dyn Subscription>, FeedError> {
        let reads = self.connect().await?;
        let acks = Commands::connect(&self.endpoint, RESPONSE_TIMEOUT).await?;
        let group = Group {
            name: consumer.to_owned(),
            // This process's own name in the group: a consumer that died stays pending
            // under its name until another takes its entries over.
            consumer: format!("{}-{}", hostname(), std::process::id()),
        };
        ensure_group(&reads, &self.key, &group.name, "$").await?;
        tracing::info!(stream = %self.key, group = %group.name, consumer = %group.consumer, "reading the Redis stream through its consumer group");
        Ok(Box::new(StreamSubscription::start(
            reads,
            Some(acks),
            &self.key,
            Some(group),
            self.claim_idle,
        )))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "heliosburn".into())
}

/// `XGROUP CREATE key group FROM MKSTREAM`; a group that exists already is fine. A new
/// group starts at the stream's end (`$`); one made again because Redis lost it starts
/// at its beginning (`0`): whatever is in the stream then came after the loss.
async fn ensure_group(
    commands: &Commands,
    key: &str,
    group: &str,
    from: &str,
) -> Result<(), FeedError> {
    let created = commands
        .query::<()>(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(group)
                .arg(from)
                .arg("MKSTREAM"),
        )
        .await;
    match created {
        Err(e) if e.source.code() == Some("BUSYGROUP") => Ok(()),
        other => Ok(other?),
    }
}

#[derive(Clone)]
struct Group {
    name: String,
    consumer: String,
}

/// An entry read: its id and what it carried.
type Entry = (String, Received);

/// Reads in a task of its own, so that a reader's `recv` can be dropped at any point (as
/// `select!` does) without losing entries Redis already handed over.
struct StreamSubscription {
    rx: tokio::sync::mpsc::Receiver<Entry>,
    reader: tokio::task::JoinHandle<()>,
    /// Acknowledges (durable only), on a connection the blocking reads do not hold up.
    acks: Option<Commands>,
    key: String,
    group: Option<Group>,
    /// Entry ids handed out and not acknowledged, numbered in the order handed out.
    delivered: VecDeque<(u64, String)>,
    handed: u64,
}

impl StreamSubscription {
    fn start(
        reads: Commands,
        acks: Option<Commands>,
        key: &str,
        group: Option<Group>,
        claim_idle: Duration,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2 * BATCH);
        let reader = Reader {
            commands: reads,
            key: key.to_owned(),
            group: group.clone(),
            last_id: "$".into(),
            claim_idle,
            next_claim: tokio::time::Instant::now(),
            backoff: Backoff::new(),
            down: false,
            invalid: 0,
        };
        Self {
            rx,
            reader: tokio::spawn(reader.run(tx)),
            acks,
            key: key.to_owned(),
            group,
            delivered: VecDeque::new(),
            handed: 0,
        }
    }

    fn hand(&mut self, (id, r): Entry) -> Received {
        if self.group.is_some() {
            self.handed += 1;
            self.delivered.push_back((self.handed, id));
        }
        r
    }
}

impl Drop for StreamSubscription {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait]
impl Subscription for StreamSubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        match self.rx.recv().await {
            Some(e) => Ok(self.hand(e)),
            None => Err(FeedError::Closed),
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        let e = self.rx.try_recv().ok()?;
        Some(self.hand(e))
    }

    fn durable(&self) -> bool {
        self.group.is_some()
    }

    fn mark(&self) -> Mark {
        Mark(Cursor {
            seq: self.handed,
            ..Cursor::default()
        })
    }

    async fn ack(&mut self, mark: Mark) -> Result<(), FeedError> {
        let (Some(acks), Some(g)) = (&self.acks, &self.group) else {
            return Ok(());
        };
        let upto = mark.0.seq;
        let mut ids = Vec::new();
        while self.delivered.front().is_some_and(|(n, _)| *n <= upto) {
            if let Some((_, id)) = self.delivered.pop_front() {
                ids.push(id);
            }
        }
        for chunk in ids.chunks(1000) {
            xack(acks, &self.key, &g.name, chunk).await?;
        }
        Ok(())
    }
}

async fn xack(
    commands: &Commands,
    key: &str,
    group: &str,
    ids: &[String],
) -> Result<(), FeedError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("XACK");
    cmd.arg(key).arg(group);
    for id in ids {
        cmd.arg(id);
    }
    commands.query::<()>(&cmd).await?;
    Ok(())
}

/// The reading task of a [`StreamSubscription`].
struct Reader {
    commands: Commands,
    key: String,
    group: Option<Group>,
    /// Where a plain subscriber reads next (`$`: from now on).
    last_id: String,
    claim_idle: Duration,
    next_claim: tokio::time::Instant,
    backoff: Backoff,
    down: bool,
    invalid: u64,
}

impl Reader {
    async fn run(mut self, tx: tokio::sync::mpsc::Sender<Entry>) {
        loop {
            match self.read().await {
                Ok(entries) => {
                    if std::mem::take(&mut self.down) {
                        tracing::info!(stream = %self.key, "reading the Redis stream again");
                    }
                    self.backoff.reset();
                    for e in entries {
                        if tx.send(e).await.is_err() {
                            return; // the subscription is gone; unacknowledged entries stay pending
                        }
                    }
                }
                Err(FeedError::Redis(e)) if e.source.code() == Some("NOGROUP") => {
                    // The stream or its group went (Redis restarted without them): made
                    // again, from the stream's end.
                    if let Some(g) = &self.group {
                        tracing::warn!(stream = %self.key, group = %g.name, "the consumer group is gone (Redis lost the stream?); making it again from the stream's beginning");
                        let _ = ensure_group(&self.commands, &self.key, &g.name, "0").await;
                    }
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.down, true) {
                        tracing::error!(stream = %self.key, error = %e, "cannot read the Redis stream; retrying (nothing is lost: entries wait in the stream)");
                    }
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// `cmd` (XREAD, or XREADGROUP with its group) for up to [`BATCH`] entries of the
    /// stream after `from`, waiting up to [`BLOCK`] for them.
    async fn blocking_read(
        &self,
        mut cmd: redis::Cmd,
        from: &str,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, FeedError> {
        cmd.arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(from);
        Ok(read_entries(self.commands.query(&cmd).await?))
    }

    /// The next entries (waiting up to [`BLOCK`] for them), parsed; entries that are no
    /// traffic message are acknowledged and skipped.
    async fn read(&mut self) -> Result<Vec<Entry>, FeedError> {
        let raw = match &self.group {
            Some(g) if tokio::time::Instant::now() >= self.next_claim => {
                self.next_claim = tokio::time::Instant::now() + CLAIM_EVERY.min(self.claim_idle);
                let reply: Value = self
                    .commands
                    .query(
                        redis::cmd("XAUTOCLAIM")
                            .arg(&self.key)
                            .arg(&g.name)
                            .arg(&g.consumer)
                            .arg(self.claim_idle.as_millis() as u64)
                            .arg("0-0")
                            .arg("COUNT")
                            .arg(BATCH),
                    )
                    .await?;
                let claimed = autoclaimed(reply);
                if !claimed.is_empty() {
                    tracing::warn!(stream = %self.key, group = %g.name, entries = claimed.len(), "took over entries another consumer left pending");
                }
                claimed
            }
            Some(g) => {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP").arg(&g.name).arg(&g.consumer);
                self.blocking_read(cmd, ">").await?
            }
            None => {
                let from = self.last_id.clone();
                self.blocking_read(redis::cmd("XREAD"), &from).await?
            }
        };
        let mut out = Vec::with_capacity(raw.len());
        for (id, payload) in raw {
            self.last_id.clone_from(&id);
            let msg = payload
                .as_deref()
                .and_then(|p| serde_json::from_slice::<TrafficMessage>(p).ok());
            match msg {
                Some(msg) => out.push((id, Received::Message(Arc::new(msg)))),
                None => {
                    self.invalid += 1;
                    if self.invalid == 1 || self.invalid.is_multiple_of(1000) {
                        tracing::warn!(stream = %self.key, id, invalid = self.invalid, "a stream entry is not a traffic message; skipped");
                    }
                    if let Some(g) = &self.group {
                        xack(&self.commands, &self.key, &g.name, &[id]).await?;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `(id, the "m" field)` of each entry in an XREAD/XREADGROUP reply (nil: none).
fn read_entries(reply: Value) -> Vec<(String, Option<Vec<u8>>)> {
    // [[key, [entry, ...]], ...] (RESP2) or {key: [entry, ...]} (RESP3).
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(map) => map.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(entries).collect()
}

/// The entries of an XAUTOCLAIM reply: `[next, [entry, ...], [deleted, ...]]`.
fn autoclaimed(reply: Value) -> Vec<(String, Option<Vec<u8>>)> {
    match reply {
        Value::Array(mut parts) if parts.len() >= 2 => entries(parts.swap_remove(1)),
        _ => Vec::new(),
    }
}

fn entries(list: Value) -> Vec<(String, Option<Vec<u8>>)> {
    let Value::Array(list) = list else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|entry| {
            let Value::Array(mut e) = entry else {
                return None;
            };
            if e.len() != 2 {
                return None;
            }
            let fields = e.pop()?;
            let id = text(e.pop()?)?;
            Some((id, field_m(fields)))
        })
        .collect()
}

fn field_m(fields: Value) -> Option<Vec<u8>> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        }
        Value::Map(map) => map,
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| match (k, v) {
        (Value::BulkString(k), Value::BulkString(v)) if k == b"m" => Some(v),
        _ => None,
    })
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_are_read_in_both_protocols_and_nil_is_none() {
        let entry = |id: &str, m: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("m"), bulk(m)])])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![entry("1-0", "a"), entry("2-0", "b")]),
        ])]);
        let got = read_entries(resp2);
        assert_eq!(
            got,
            [
                ("1-0".into(), Some(b"a".to_vec())),
                ("2-0".into(), Some(b"b".to_vec()))
            ]
        );
        let resp3 = Value::Map(vec![(bulk("k"), Value::Array(vec![entry("3-0", "c")]))]);
        assert_eq!(read_entries(resp3), [("3-0".into(), Some(b"c".to_vec()))]);
        assert!(read_entries(Value::Nil).is_empty());
        let claim = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry("4-0", "d")]),
            Value::Array(vec![]),
        ]);
        assert_eq!(autoclaimed(claim), [("4-0".into(), Some(b"d".to_vec()))]);
        // An entry without the field is kept (to be acknowledged and skipped).
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![bulk("x"), bulk("y")]),
            ])]),
        ])]);
        assert_eq!(read_entries(odd), [("5-0".into(), None)]);
    }
}
