//! The in-process feed: a bounded broadcast ring in memory and, behind it, the spool on
//! disk ([`super::spool`]).
//!
//! Every published message gets a sequence number. Subscribers read the ring; a plain
//! subscriber that falls a ring behind loses the oldest (counted), the publisher never
//! blocks and memory never grows past the ring. A durable subscriber (the recorder) reads
//! the ring while it keeps up and the spool when it does not (it fell behind, or it starts
//! after a restart from the cursor it acknowledged last), so it loses only what the spool
//! could not take, and that is counted where it happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::spool::{self, Cursor, Fsync, OnFull, Pos, Read, Reader, Refused, SpoolConfig, Writer};
use super::{
    Backlog, ByteBudget, Feed, FeedCounters, FeedError, FeedStats, Interest, Mark, Publisher,
    Ready, Received, Refusal, SpoolStats, Subscription, Weighed, DEFAULT_BYTE_BUDGET,
};
use crate::traffic::TrafficMessage;

/// A message in the ring. `msg` is `None` when the ring's byte budget would not take it
/// (a plain subscriber counts it lost; a durable one reads it from the spool).
struct Entry {
    seq: u64,
    msg: Option<Weighed>,
    /// Where the spool's next frame begins, when this message was spooled.
    end: Option<Pos>,
    /// Why the spool did not keep it, when it wanted to.
    refused: Option<Refusal>,
}

#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
}

struct Shared {
    /// A message leaves the ring's byte budget when every subscriber has read it, or it
    /// was overwritten.
    tx: broadcast::Sender<Arc<Entry>>,
    bytes: Arc<ByteBudget>,
    head: Mutex<Head>,
    counters: FeedCounters,
    spool: Option<SpoolSide>,
    interest: OnceLock<Arc<dyn Interest>>,
}

struct SpoolSide {
    dir: std::path::PathBuf,
    fsync: Fsync,
    /// Cursors the durable consumers of this run acknowledged: segments before the
    /// oldest are deleted. A consumer stays here when it stops, so its backlog is kept.
    consumers: Mutex<HashMap<String, Cursor>>,
    spooled: AtomicU64,
    full: AtomicU64,
    failed: AtomicU64,
    corrupt: AtomicU64,
    waited: AtomicU64,
    /// `on_full: wait`: exchanges wait for this, told when segments are deleted.
    wait_when_full: bool,
    room: tokio::sync::Notify,
    last_started: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the publisher holds its lock for: the order of sequence numbers, frames and ring
/// entries is one.
struct Head {
    next_seq: u64,
    writer: Option<Writer>,
    /// In an episode of refusals (logged once when it begins and once when it ends).
    refusing: Option<Refusal>,
}

impl Bus {
    /// A ring of `capacity` messages (the `bus_capacity` setting) without a spool.
    pub fn new(capacity: usize) -> Self {
        Self::ring(capacity, DEFAULT_BYTE_BUDGET)
    }

    /// A ring whose messages may hold `bytes` together, without a spool.
    pub fn ring(capacity: usize, bytes: usize) -> Self {
        Self::assemble(capacity, bytes, None)
    }

    /// A ring with the spool behind it, opened (or made) in `config.dir`.
    pub fn with_spool(capacity: usize, config: SpoolConfig) -> std::io::Result<Self> {
        let opened = Writer::open(config)?;
        let batch = opened.writer.fsync() == Fsync::Batch;
        let bus = Self::assemble(capacity, DEFAULT_BYTE_BUDGET, Some(opened));
        if batch {
            let weak = Arc::downgrade(&bus.shared);
            std::thread::Builder::new()
                .name("spool-sync".into())
                .spawn(move || sync_every_batch(weak))?;
        }
        Ok(bus)
    }

    fn assemble(capacity: usize, bytes: usize, opened: Option<spool::Opened>) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (writer, next_seq, spool) = match opened {
            Some(o) => {
                let side = SpoolSide {
                    dir: o.writer.dir().to_owned(),
                    fsync: o.writer.fsync(),
                    consumers: Mutex::default(),
                    spooled: AtomicU64::new(0),
                    full: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    corrupt: AtomicU64::new(0),
                    waited: AtomicU64::new(0),
                    wait_when_full: o.writer.on_full() == OnFull::Wait,
                    room: tokio::sync::Notify::new(),
                    last_started: o.last_started,
                };
                (Some(o.writer), o.next_seq, Some(side))
            }
            None => (None, 0, None),
        };
        Self {
            shared: Arc::new(Shared {
                tx,
                bytes: ByteBudget::new(bytes),
                head: Mutex::new(Head {
                    next_seq,
                    writer,
                    refusing: None,
                }),
                counters: FeedCounters::default(),
                spool,
                interest: OnceLock::new(),
            }),
        }
    }

    /// Tells the spool which messages to keep and whom to tell of those it cannot. Set
    /// once; without it every message is spooled.
    pub fn set_interest(&self, interest: Arc<dyn Interest>) {
        let _ = self.shared.interest.set(interest);
    }

    /// The latest start of a transaction the spool's last frames hold, from before this
    /// run.
    pub fn spool_last_started(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.shared.spool.as_ref().and_then(|s| s.last_started)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Head> {
        self.shared.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nearly_full(&self) -> bool {
        self.lock().writer.as_ref().is_some_and(Writer::nearly_full)
    }
}

/// `fsync: batch`: syncs the segment being written every [`spool::BATCH_INTERVAL`] when
/// something was written, outside the publisher's lock. Ends with the bus.
fn sync_every_batch(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(spool::BATCH_INTERVAL);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let file = {
            let mut head = shared.head.lock().unwrap_or_else(|p| p.into_inner());
            head.writer.as_mut().and_then(Writer::take_dirty)
        };
        if let Some(file) = file {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "cannot sync the spool to disk");
            }
        }
    }
}

impl Publisher for Bus {
    fn publish(&self, msg: Arc<TrafficMessage>) {
        let s = &*self.shared;
        let interest = s.interest.get();
        let keep = s.spool.is_some() && interest.is_none_or(|i| i.wants(&msg));
        let mut head = self.lock();
        let seq = head.next_seq;
        head.next_seq += 1;
        let (mut end, mut refused) = (None, None);
        if keep {
            match self.spool_one(&mut head, seq, &msg, interest) {
                Ok(pos) => end = pos,
                Err(why) => refused = Some(why),
            }
        }
        s.counters.published.fetch_add(1, Ordering::Relaxed);
        if s.tx.receiver_count() == 0 {
            // Nobody reads the ring: nothing was promised to anyone but the spool.
            return;
        }
        let weighed = s.bytes.admit(msg);
        if weighed.is_none() {
            // The ring is full by weight: a plain subscriber loses it (counted), a durable
            // one reads it from the spool.
            s.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let _ = s.tx.send(Arc::new(Entry {
            seq,
            msg: weighed,
            end,
            refused,
        }));
    }

    fn stats(&self) -> FeedStats {
        let mut stats = self.shared.counters.snapshot();
        if let Some(side) = &self.shared.spool {
            stats.spool = Some(SpoolStats {
                spooled: side.spooled.load(Ordering::Relaxed),
                full: side.full.load(Ordering::Relaxed),
                failed: side.failed.load(Ordering::Relaxed),
                bytes: self.lock().writer.as_ref().map_or(0, Writer::total),
                waited: side.waited.load(Ordering::Relaxed),
            });
        }
        stats
    }

    fn ready(&self) -> Option<Ready> {
        let side = self.shared.spool.as_ref()?;
        if !side.wait_when_full || !self.nearly_full() {
            return None;
        }
        side.waited.fetch_add(1, Ordering::Relaxed);
        let bus = self.clone();
        Some(Box::pin(async move {
            let mut said = false;
            loop {
                let Some(side) = bus.shared.spool.as_ref() else {
                    return;
                };
                let room = side.room.notified();
                if !bus.nearly_full() {
                    return;
                }
                if !std::mem::replace(&mut said, true) {
                    tracing::debug!("the spool is nearly full: an exchange waits for the recorder (on_full: wait)");
                }
                room.await;
            }
        }))
    }

    fn reset_stats(&self) {
        self.shared.counters.reset();
        if let Some(side) = &self.shared.spool {
            for n in [&side.spooled, &side.full, &side.failed, &side.waited] {
                n.store(0, Ordering::Relaxed);
            }
        }
    }
}

impl Bus {
    /// Writes one message to the spool; a refusal is counted, told to the interest, and
    /// logged once per episode.
    fn spool_one(
        &self,
        head: &mut Head,
        seq: u64,
        msg: &TrafficMessage,
        interest: Option<&Arc<dyn Interest>>,
    ) -> Result<Option<Pos>, Refusal> {
        let (Some(side), Some(writer)) = (self.shared.spool.as_ref(), head.writer.as_mut()) else {
            return Ok(None);
        };
        let refusal = match writer.append(seq, msg) {
            Ok(end) => {
                side.spooled.fetch_add(1, Ordering::Relaxed);
                if let Some(was) = head.refusing.take() {
                    tracing::info!(dir = %side.dir.display(), ?was, "the spool takes messages again");
                }
                return Ok(Some(end));
            }
            Err(e) => {
                let (refusal, counter) = match e {
                    Refused::Full { .. } => (Refusal::SpoolFull, &side.full),
                    Refused::Io(_) | Refused::Encode(_) => (Refusal::SpoolError, &side.failed),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if head.refusing != Some(refusal) {
                    tracing::error!(dir = %side.dir.display(), error = %e, "the spool cannot keep messages for the recorder: they are lost until it can (counted in the recording and in TrafficReader's spool counters)");
                    head.refusing = Some(refusal);
                }
                refusal
            }
        };
        if let Some(i) = interest {
            i.refused(msg, refusal);
        }
        Err(refusal)
    }
}

#[async_trait]
impl Feed for Bus {
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, FeedError> {
        Ok(Box::new(RingSubscription {
            rx: self.shared.tx.subscribe(),
        }))
    }

    async fn subscribe_durable(&self, consumer: &str) -> Result<Box<dyn Subscription>, FeedError> {
        let Some(side) = &self.shared.spool else {
            return self.subscribe().await;
        };
        // Under the lock: every message after the ring's first is in the ring or on disk.
        let head = self.lock();
        let rx = self.shared.tx.subscribe();
        let first = head.writer.as_ref().map(Writer::first).unwrap_or_default();
        let end = head.writer.as_ref().map(Writer::head).unwrap_or_default();
        let cursor = match spool::load_cursor(&side.dir, consumer) {
            // Past the end: the machine went down before the spool's last writes reached
            // the disk (they were synced after the cursor). Read on from the end.
            Some(c) if c.pos > end => {
                tracing::warn!(consumer, ?c, "the spool ends before where this consumer stopped (its last writes did not reach the disk); it resumes at the end");
                Cursor {
                    pos: end,
                    seq: c.seq,
                }
            }
            Some(c) if c.pos >= first => c,
            Some(c) => {
                tracing::warn!(consumer, ?c, "the spool no longer holds where this consumer stopped; it resumes at the oldest message kept");
                Cursor {
                    pos: first,
                    seq: c.seq,
                }
            }
            None => Cursor { pos: first, seq: 0 },
        };
        drop(head);
        side.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(consumer.to_owned(), cursor);
        Ok(Box::new(DurableSubscription {
            bus: self.clone(),
            consumer: consumer.to_owned(),
            rx,
            held: None,
            next: cursor,
            skipped: 0,
            acked: cursor,
            reader: Reader::new(&side.dir),
        }))
    }
}

struct RingSubscription {
    rx: broadcast::Receiver<Arc<Entry>>,
}

fn ring_message(e: &Entry) -> Received {
    match &e.msg {
        Some(w) => Received::Message(w.msg.clone()),
        None => Received::Lost(1),
    }
}

#[async_trait]
impl Subscription for RingSubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        match self.rx.recv().await {
            Ok(e) => Ok(ring_message(&e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Ok(Received::Lost(n)),
            Err(broadcast::error::RecvError::Closed) => Err(FeedError::Closed),
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(e) => Some(ring_message(&e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Lost(n)),
            Err(_) => None,
        }
    }
}

/// Reads the ring while it keeps up and the spool for what it did not see there.
struct DurableSubscription {
    bus: Bus,
    consumer: String,
    rx: broadcast::Receiver<Arc<Entry>>,
    /// A ring entry taken and not yet delivered (messages before it come from disk).
    held: Option<Arc<Entry>>,
    /// The next message wanted and the next frame to read.
    next: Cursor,
    /// Messages gone by that were neither in the ring nor kept on disk, not yet told.
    skipped: u64,
    /// Where it was when it last acknowledged.
    acked: Cursor,
    reader: Reader,
}

impl DurableSubscription {
    /// The next message without waiting: the held entry, or the spool for what comes
    /// before it. `Ok(None)` when there is nothing yet.
    fn next_now(&mut self) -> Result<Option<Received>, FeedError> {
        loop {
            if self.skipped > 0 {
                return Ok(Some(Received::Skipped(std::mem::take(&mut self.skipped))));
            }
            if self.held.is_none() {
                match self.rx.try_recv() {
                    Ok(e) => self.held = Some(e),
                    // What the ring overwrote is on disk (or was not kept, and counted).
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(broadcast::error::TryRecvError::Closed) => return Err(FeedError::Closed),
                    Err(broadcast::error::TryRecvError::Empty) => {}
                }
            }
            let bound = match &self.held {
                Some(e) => e.seq,
                None => {
                    // Under the publisher's lock every message before `next_seq` is in
                    // the ring already: one sent since the look above is not read from
                    // disk for nothing.
                    let head = self.bus.lock();
                    match self.rx.try_recv() {
                        Ok(e) => {
                            let seq = e.seq;
                            self.held = Some(e);
                            seq
                        }
                        Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                        Err(_) => head.next_seq,
                    }
                }
            };
            if self.next.seq < bound {
                // Messages before `bound` the ring did not give: any kept are on disk.
                let head = self.spool_head();
                if let Some(msg) = self.read_disk(bound, head)? {
                    return Ok(Some(Received::Message(Arc::new(msg))));
                }
                // The rest were not kept (no recording wanted them, or counted refused).
                self.skipped += bound - self.next.seq;
                self.next.seq = bound;
            }
            let Some(e) = self.held.take() else {
                return Ok(None);
            };
            if e.seq < self.next.seq {
                continue; // already read from disk
            }
            match (&e.msg, e.end) {
                (Some(w), end) => {
                    self.next.seq = e.seq + 1;
                    if let Some(end) = end {
                        self.next.pos = end;
                    }
                    if let (Some(why), Some(i)) = (e.refused, self.bus.shared.interest.get()) {
                        i.recovered(&w.msg, why);
                    }
                    return Ok(Some(Received::Message(w.msg.clone())));
                }
                // Too heavy for the ring, but on disk, where this subscriber is now.
                (None, Some(end)) => {
                    let msg = self.read_disk(e.seq + 1, end)?;
                    self.next.seq = e.seq + 1;
                    self.next.pos = self.next.pos.max(end);
                    if let Some(msg) = msg {
                        return Ok(Some(Received::Message(Arc::new(msg))));
                    }
                }
                (None, None) => {
                    self.skipped += 1;
                    self.next.seq = e.seq + 1;
                }
            }
        }
    }

    /// Where the spool's writer is: every frame before it is whole.
    fn spool_head(&self) -> Pos {
        self.bus
            .lock()
            .writer
            .as_ref()
            .map(Writer::head)
            .unwrap_or_default()
    }

    /// The next frame on disk with a sequence number below `bound`.
    fn read_disk(&mut self, bound: u64, head: Pos) -> Result<Option<TrafficMessage>, FeedError> {
        let side = self.bus.shared.spool.as_ref().ok_or(FeedError::Closed)?;
        loop {
            let mut pos = self.next.pos;
            let read = self.reader.read(&mut pos, head)?;
            match read {
                Read::Frame(f) => {
                    if f.seq >= bound {
                        self.next.pos = pos;
                        return Ok(None);
                    }
                    self.next.pos = f.end;
                    if f.seq < self.next.seq {
                        continue;
                    }
                    match spool::decode(f.payload) {
                        Ok(msg) => {
                            // Numbers between the last read and this frame were not kept.
                            self.skipped += f.seq - self.next.seq;
                            self.next.seq = f.seq + 1;
                            return Ok(Some(msg));
                        }
                        Err(e) => {
                            side.corrupt.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(consumer = %self.consumer, seq = f.seq, error = %e, "a spooled message cannot be read back; skipped");
                        }
                    }
                }
                Read::End => {
                    self.next.pos = pos;
                    return Ok(None);
                }
                Read::Corrupt(why) => {
                    self.next.pos = pos;
                    side.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(consumer = %self.consumer, %why, "the spool is damaged; the rest of that segment is skipped");
                }
            }
        }
    }
}

#[async_trait]
impl Subscription for DurableSubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        loop {
            if let Some(r) = self.next_now()? {
                return Ok(r);
            }
            match self.rx.recv().await {
                Ok(e) => self.held = Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        match self.next_now() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(consumer = %self.consumer, error = %e, "cannot read the spool");
                None
            }
        }
    }

    fn durable(&self) -> bool {
        true
    }

    fn mark(&self) -> Mark {
        Mark(self.next)
    }

    fn backlog(&self) -> Option<Backlog> {
        let side = self.bus.shared.spool.as_ref()?;
        let head = self.spool_head();
        match spool::count(&side.dir, self.acked.pos, head) {
            Ok((messages, bytes)) => Some(Backlog {
                messages,
                bytes,
                place: side.dir.display().to_string(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count what the spool keeps");
                None
            }
        }
    }

    async fn ack(&mut self, mark: Mark) -> Result<(), FeedError> {
        let Some(side) = &self.bus.shared.spool else {
            return Ok(());
        };
        let cursor = mark.0;
        // A sync can take the disk's time: not on the runtime's thread.
        let (dir, consumer, fsync) = (side.dir.clone(), self.consumer.clone(), side.fsync);
        tokio::task::spawn_blocking(move || spool::save_cursor(&dir, &consumer, &cursor, fsync))
            .await
            .map_err(|e| FeedError::Spool(std::io::Error::other(e)))??;
        self.acked = cursor;
        let oldest = {
            let mut consumers = side.consumers.lock().unwrap_or_else(|p| p.into_inner());
            consumers.insert(self.consumer.clone(), cursor);
            consumers.values().map(|c| c.pos).min()
        };
        if let Some(oldest) = oldest {
            let freed = self
                .bus
                .lock()
                .writer
                .as_mut()
                .map_or(0, |w| w.delete_before(oldest));
            if freed > 0 {
                side.room.notify_waiters();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Arc<TrafficMessage> {
        Arc::new(TrafficMessage::sample(&i.to_string(), None))
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_message() {
        let bus = Bus::new(8);
        let mut a = bus.subscribe().await.unwrap();
        let mut b = bus.subscribe().await.unwrap();
        bus.publish(msg(1));
        for s in [&mut a, &mut b] {
            match s.recv().await.unwrap() {
                Received::Message(m) => assert_eq!(m.transaction_id, "1"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_ring_full_by_weight_drops_and_counts_until_read() {
        let bus = Bus::ring(64, 3000);
        let mut sub = bus.subscribe().await.unwrap();
        for i in 0..5 {
            bus.publish(msg(i));
        }
        assert_eq!((bus.stats().published, bus.stats().dropped), (5, 3));
        let mut lost = 0;
        while let Some(r) = sub.try_recv() {
            if let Received::Lost(n) = r {
                lost += n;
            }
        }
        assert_eq!(lost, 3, "the subscriber is told of each");
        bus.publish(msg(9));
        assert_eq!(bus.stats().dropped, 3, "reading gave the weight back");
    }

    #[tokio::test]
    async fn slow_subscriber_loses_counted_messages_without_blocking() {
        let bus = Bus::new(4);
        let mut slow = bus.subscribe().await.unwrap();
        for i in 0..10 {
            bus.publish(msg(i));
        }
        match slow.recv().await.unwrap() {
            Received::Lost(n) => assert_eq!(n, 6),
            other => panic!("expected a loss, got {other:?}"),
        }
        assert_eq!(bus.stats().published, 10);
    }

    fn spool_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("hb-bus-{}", uuid::Uuid::new_v4()))
    }

    async fn ids(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match sub.recv().await.unwrap() {
                Received::Message(m) => out.push(m.transaction_id.clone()),
                other => panic!("a durable subscriber lost nothing, got {other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn a_durable_subscriber_that_falls_behind_the_ring_reads_the_spool() {
        let dir = spool_dir();
        let bus = Bus::with_spool(4, SpoolConfig::new(dir.clone())).unwrap();
        let mut sub = bus.subscribe_durable("r").await.unwrap();
        for i in 0..50 {
            bus.publish(msg(i));
        }
        let got = ids(&mut sub, 50).await;
        assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(sub.try_recv().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_durable_subscriber_resumes_after_what_it_acknowledged() {
        let dir = spool_dir();
        let bus = Bus::with_spool(64, SpoolConfig::new(dir.clone())).unwrap();
        let mut sub = bus.subscribe_durable("r").await.unwrap();
        for i in 0..10 {
            bus.publish(msg(i));
        }
        ids(&mut sub, 4).await;
        let mark = sub.mark();
        sub.ack(mark).await.unwrap();
        ids(&mut sub, 3).await; // read, never acknowledged: delivered again
        assert_eq!(sub.backlog().map(|b| b.messages), Some(6));
        drop((sub, bus));

        // As after kill -9: a new bus on the same directory.
        let bus = Bus::with_spool(64, SpoolConfig::new(dir.clone())).unwrap();
        assert!(bus.spool_last_started().is_some());
        let mut sub = bus.subscribe_durable("r").await.unwrap();
        bus.publish(msg(10));
        let got = ids(&mut sub, 7).await;
        assert_eq!(got, ["4", "5", "6", "7", "8", "9", "10"]);
        // Another consumer has no cursor: it starts from the oldest kept.
        let mut other = bus.subscribe_durable("other").await.unwrap();
        assert_eq!(ids(&mut other, 1).await, ["0"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn with_on_full_wait_a_new_exchange_waits_until_the_recorder_makes_room() {
        let dir = spool_dir();
        let bus = Bus::with_spool(
            64,
            SpoolConfig {
                max_bytes: 4_000,
                segment_bytes: 500,
                on_full: OnFull::Wait,
                ..SpoolConfig::new(dir.clone())
            },
        )
        .unwrap();
        let mut sub = bus.subscribe_durable("r").await.unwrap();
        assert!(bus.ready().is_none(), "empty");
        let mut n = 0;
        let ready = loop {
            match bus.ready() {
                None => bus.publish(msg(n)),
                Some(wait) => break wait,
            }
            n += 1;
        };
        let mut wait = tokio::spawn(ready);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut wait)
                .await
                .is_err(),
            "it waits while the spool is nearly full"
        );
        ids(&mut sub, n).await;
        let mark = sub.mark();
        sub.ack(mark).await.unwrap();
        wait.await.expect("it goes on once the recorder made room");
        let stats = bus.stats().spool.unwrap();
        assert_eq!((stats.full, stats.waited), (0, 1), "{stats:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    struct OnlyEven(AtomicU64);
    impl Interest for OnlyEven {
        fn wants(&self, msg: &TrafficMessage) -> bool {
            msg.transaction_id.parse::<u64>().is_ok_and(|n| n % 2 == 0)
        }
        fn refused(&self, _: &TrafficMessage, _: Refusal) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn recovered(&self, _: &TrafficMessage, _: Refusal) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn only_what_the_interest_wants_is_spooled_and_a_full_spool_is_told() {
        let dir = spool_dir();
        let bus = Bus::with_spool(
            2,
            SpoolConfig {
                max_bytes: 1_000,
                ..SpoolConfig::new(dir.clone())
            },
        )
        .unwrap();
        let interest = Arc::new(OnlyEven(AtomicU64::new(0)));
        bus.set_interest(interest.clone());
        let mut sub = bus.subscribe_durable("r").await.unwrap();
        for i in 0..20 {
            bus.publish(msg(i));
        }
        let stats = bus.stats().spool.unwrap();
        assert!(stats.spooled > 0 && stats.full > 0, "{stats:?}");
        assert_eq!(
            stats.spooled + stats.full,
            10,
            "odd ones were never meant to be kept"
        );
        assert_eq!(interest.0.load(Ordering::Relaxed), stats.full);
        let mut got = Vec::new();
        while let Some(r) = sub.try_recv() {
            if let Received::Message(m) = r {
                got.push(m.transaction_id.clone());
            }
        }
        // The spool held the first even ones it could; the ring the last two.
        assert_eq!(got.len() as u64, stats.spooled + 2, "{got:?}");
        assert_eq!(got[got.len() - 2..], ["18", "19"]);
        assert_eq!(got[0], "0");
        let _ = std::fs::remove_dir_all(dir);
    }
}
