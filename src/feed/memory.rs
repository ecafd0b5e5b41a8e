//! The in-process bus: a bounded broadcast ring. Every subscriber sees every message; a
//! subscriber that falls a full ring behind loses the oldest (counted), the publisher
//! never blocks and memory never grows past the ring.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Feed, FeedCounters, FeedError, FeedStats, Publisher, Received, Subscription};
use crate::traffic::TrafficMessage;

/// Default ring size: messages a subscriber may fall behind before it loses some. A
/// message holds its captured bodies, so the ring is also what bounds the memory a slow
/// subscriber can pin: 8192 messages of small exchanges are a few tens of MiB, while
/// 64 KiB bodies make it 512 MiB (lower `bus_capacity` or `body_limit` for large bodies).
pub const DEFAULT_CAPACITY: usize = 8_192;

#[derive(Clone)]
pub struct MemoryBus {
    tx: broadcast::Sender<Arc<TrafficMessage>>,
    counters: Arc<FeedCounters>,
}

impl MemoryBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            counters: Arc::default(),
        }
    }
}

impl Publisher for MemoryBus {
    fn publish(&self, msg: Arc<TrafficMessage>) {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        // An error only means nobody subscribes: nothing was promised to anyone.
        let _ = self.tx.send(msg);
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
    rx: broadcast::Receiver<Arc<TrafficMessage>>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn recv(&mut self) -> Result<Received, FeedError> {
        match self.rx.recv().await {
            Ok(m) => Ok(Received::Message(m)),
            Err(broadcast::error::RecvError::Lagged(n)) => Ok(Received::Lost(n)),
            Err(broadcast::error::RecvError::Closed) => Err(FeedError::Closed),
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(m) => Some(Received::Message(m)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Lost(n)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{MultiMap, RequestInfo};

    fn msg(i: usize) -> Arc<TrafficMessage> {
        Arc::new(TrafficMessage {
            transaction_id: i.to_string(),
            request_id: String::new(),
            response_id: String::new(),
            request: Arc::new(RequestInfo {
                created_at: String::new(),
                client_protocol: String::new(),
                method: "GET".into(),
                uri: "/".into(),
                path: "/".into(),
                args: MultiMap::new(),
                headers: MultiMap::new(),
                body: None,
            }),
            response: None,
        })
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
