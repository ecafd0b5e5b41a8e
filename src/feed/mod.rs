//! The traffic feed: TrafficReader publishes, support modules subscribe.
//!
//! Two backends: the in-process bus (embedded default: a ring in memory, with the spool
//! on disk behind it for durable consumers) and Redis pub/sub.
//! **Invariant:** `publish` never waits on a consumer. A full feed drops the message and
//! counts it.

pub mod bus;
pub mod redis;
pub mod spool;
pub mod stream;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::traffic::TrafficMessage;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Redis(#[from] crate::redis_link::RedisLinkError),
    #[error("the feed is closed")]
    Closed,
    #[error("cannot read the spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// The channel (and, for the window, the key) of the seed.
pub const DEFAULT_CHANNEL: &str = "heliosburn.traffic";

/// Bytes the messages waiting in a feed's queue (the in-process ring, the queue in front
/// of Redis) may hold together: with large bodies this, not the message count, bounds
/// the memory.
pub const DEFAULT_BYTE_BUDGET: usize = 64 << 20;

/// What a message weighs in a queue: its captured bodies and a nominal 1 KiB.
pub fn weight(msg: &TrafficMessage) -> usize {
    1024 + msg.body_bytes()
}

/// The bytes a queue's messages hold together, against its budget.
#[derive(Debug)]
pub struct ByteBudget {
    max: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// The message, weighed and charged to the budget; `None` (nothing charged) when it
    /// does not fit.
    pub fn admit(self: &Arc<Self>, msg: Arc<TrafficMessage>) -> Option<Weighed> {
        let weight = weight(&msg);
        if self.used.fetch_add(weight, Ordering::Relaxed) + weight > self.max {
            self.used.fetch_sub(weight, Ordering::Relaxed);
            return None;
        }
        Some(Weighed {
            msg,
            weight,
            budget: self.clone(),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A queued message, charged to its queue's [`ByteBudget`] until it is dropped (sent,
/// read by every subscriber, or let go).
#[derive(Debug)]
pub struct Weighed {
    pub msg: Arc<TrafficMessage>,
    weight: usize,
    budget: Arc<ByteBudget>,
}

impl Drop for Weighed {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.weight, Ordering::Relaxed);
    }
}

/// The publishing side of a feed. Cheap to call on the request path.
pub trait Publisher: Send + Sync {
    /// Hands the message to the feed without waiting. Drops (and counts) when full.
    fn publish(&self, msg: Arc<TrafficMessage>);
    fn stats(&self) -> FeedStats;
    /// Sets the counters back to zero (a module reset).
    fn reset_stats(&self);
    /// With `on_full: wait`, what a new exchange waits on while the feed is full. `None`:
    /// publish at once (the default; a full feed drops, counted).
    fn ready(&self) -> Option<Ready> {
        None
    }
}

/// A wait for room in a feed.
pub type Ready = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Received {
    Message(Arc<TrafficMessage>),
    /// This many messages (a known number, above 0) were lost to this subscriber: it was
    /// too slow. Counted by the caller.
    Lost(u64),
    /// The feed was cut off (the backend was away) and has healed: messages published
    /// meanwhile are gone, how many nobody can say.
    Gap,
    /// This many messages went by that a durable feed did not keep for this subscriber,
    /// because nothing it files needed them (a request message, whose response carries
    /// the request again; traffic of no recording). Not a loss.
    Skipped(u64),
}

/// How far a subscriber has read: what it acknowledges once that is durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark(pub(crate) spool::Cursor);

#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next message. `Err(Closed)` when the feed is gone for good.
    async fn recv(&mut self) -> Result<Received, FeedError>;
    /// A message already waiting, without waiting for one (used to drain on stop).
    fn try_recv(&mut self) -> Option<Received>;
    /// Whether what is received and not acknowledged is kept for the next subscription
    /// of this consumer (a durable feed), rather than lost with this one.
    fn durable(&self) -> bool {
        false
    }
    /// Everything received so far.
    fn mark(&self) -> Mark {
        Mark::default()
    }
    /// What was received up to `mark` is durable where the consumer put it: a durable
    /// feed will not deliver it again, and may let it go.
    async fn ack(&mut self, _mark: Mark) -> Result<(), FeedError> {
        Ok(())
    }
    /// On a durable feed, what waits for this consumer after what it acknowledged.
    fn backlog(&self) -> Option<Backlog> {
        None
    }
}

/// Messages a durable feed keeps for a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub messages: u64,
    pub bytes: u64,
    /// Where they are kept (a directory, a stream).
    pub place: String,
}

/// A place to subscribe.
#[async_trait]
pub trait Feed: Send + Sync {
    /// Subscribes now, so a bad setup fails at once (the subscription heals afterwards).
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, FeedError>;
    /// Subscribes as `consumer`: on a durable feed, from the message after the last one
    /// it acknowledged (in this run or an earlier one). Other feeds: [`Feed::subscribe`].
    async fn subscribe_durable(&self, consumer: &str) -> Result<Box<dyn Subscription>, FeedError> {
        let _ = consumer;
        self.subscribe().await
    }
    /// How long a message published just now may take to reach a subscriber.
    fn delivery_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Why a message meant for a durable consumer was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The spool holds its byte bound.
    SpoolFull,
    /// The spool's disk would not take it.
    SpoolError,
}

/// Which messages durable consumers want kept, and who is told of those that could not
/// be. Set by whoever files them (the recordings), so that the spool holds only traffic
/// some recording will store.
pub trait Interest: Send + Sync {
    fn wants(&self, msg: &TrafficMessage) -> bool;
    /// The spool could not keep it: lost unless the recorder still takes it from the ring.
    fn refused(&self, msg: &TrafficMessage, why: Refusal);
    /// A refused message the recorder took from the ring after all: not lost.
    fn recovered(&self, msg: &TrafficMessage, why: Refusal);
}

/// Counters a publisher reports in status.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct FeedStats {
    pub published: u64,
    pub dropped: u64,
    /// The spool's counters, on the in-process feed with a spool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolStats>,
}

/// What the spool did with the messages published.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SpoolStats {
    /// Written to disk for durable consumers.
    pub spooled: u64,
    /// Not written: the spool held its byte bound.
    pub full: u64,
    /// Not written: the disk failed.
    pub failed: u64,
    /// Bytes on disk now.
    pub bytes: u64,
    /// Exchanges that waited for room (`on_full: wait`).
    pub waited: u64,
}

/// Atomic counters shared by a publisher and its status.
#[derive(Debug, Default)]
pub struct FeedCounters {
    pub published: AtomicU64,
    pub dropped: AtomicU64,
}

impl FeedCounters {
    pub fn reset(&self) {
        self.published.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> FeedStats {
        FeedStats {
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            spool: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::BodyCapture;

    fn msg(body: usize) -> Arc<TrafficMessage> {
        let body = BodyCapture::from_bytes(&vec![0; body], body as u64);
        Arc::new(TrafficMessage::sample("", Some(body)))
    }

    #[test]
    fn a_budget_admits_by_weight_and_gets_it_back_when_a_message_goes() {
        let budget = ByteBudget::new(10_000);
        let a = budget.admit(msg(5_000)).expect("fits");
        assert_eq!(budget.used(), 6_024);
        assert!(
            budget.admit(msg(3_000)).is_none(),
            "4,024 more would not fit"
        );
        assert_eq!(budget.used(), 6_024, "a refusal charges nothing");
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(budget.admit(msg(3_000)).is_some());
    }
}
