//! The in-process bus: a bounded broadcast ring. Every subscriber sees every message; a
//! subscriber that falls a full ring behind loses the oldest (counted), the publisher
//! never blocks and memory never grows past the ring.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    ByteBudget, Feed, FeedCounters, FeedError, FeedStats, Publisher, Received, Subscription,
    Weighed, DEFAULT_BYTE_BUDGET,
};
use crate::traffic::TrafficMessage;

#[derive(Clone)]
pub struct MemoryBus {
    /// A message leaves the ring's byte budget when every subscriber has read it, or it
    /// was overwritten.
    tx: broadcast::Sender<Arc<Weighed>>,
    counters: Arc<FeedCounters>,
    bytes: Arc<ByteBudget>,
}

impl MemoryBus {
    /// A ring of `capacity` messages (the `bus_capacity` setting).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            counters: Arc::default(),
            bytes: ByteBudget::new(DEFAULT_BYTE_BUDGET),
        }
    }

    /// Sets how many bytes the ring's messages may hold together.
    pub fn with_byte_budget(mut self, bytes: usize) -> Self {
        self.bytes = ByteBudget::new(bytes);
        self
    }
}

impl Publisher for MemoryBus {
    fn publish(&self, msg: Arc<TrafficMessage>) {
        if self.tx.receiver_count() == 0 {
            // Nobody subscribes: nothing was promised to anyone.
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(weighed) = self.bytes.admit(msg) else {
            // The ring is full by weight: drop here, counted, instead of growing.
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Arc::new(weighed));
    }

    fn stats(&self) -> FeedStats {
        self.counters.snapshot()
    }

    fn reset_stats(&self) {
        self.counters.reset();
    }
}

#[async_trait]
impl Feed for MemoryBus {
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, FeedError> {
        Ok(Box::new(MemorySubscription {
            rx: self.tx.subscribe(),
        }))
    }
}

struct MemorySubscription {
    rx: broadcast::Receiver<Arc<Weighed>>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        match self.rx.recv().await {
            Ok(e) => Ok(Received::Message(e.msg.clone())),
            Err(broadcast::error::RecvError::Lagged(n)) => Ok(Received::Lost(n)),
            Err(broadcast::error::RecvError::Closed) => Err(FeedError::Closed),
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(e) => Some(Received::Message(e.msg.clone())),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Lost(n)),
            Err(_) => None,
        }
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
        let bus = MemoryBus::new(8);
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
        let bus = MemoryBus::new(64).with_byte_budget(3000);
        let mut sub = bus.subscribe().await.unwrap();
        for i in 0..5 {
            bus.publish(msg(i));
        }
        assert_eq!((bus.stats().published, bus.stats().dropped), (2, 3));
        while sub.try_recv().is_some() {}
        bus.publish(msg(9));
        assert_eq!(bus.stats().published, 3, "reading gave the weight back");
    }

    #[tokio::test]
    async fn slow_subscriber_loses_counted_messages_without_blocking() {
        let bus = MemoryBus::new(4);
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
}
