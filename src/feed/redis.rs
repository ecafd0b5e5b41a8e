//! Redis pub/sub feed (the seed's setup).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Feed, FeedCounters, FeedError, FeedStats, Publisher, Subscription};
use crate::traffic::TrafficMessage;

/// Publishes to a Redis channel from a background task; `publish` only queues.
pub struct RedisPublisher {
    counters: Arc<FeedCounters>,
}

impl RedisPublisher {
    pub async fn connect(
        _url: &str,
        _channel: &str,
        _capacity: Option<usize>,
    ) -> Result<Self, FeedError> {
        Err(FeedError::Closed)
    }
}

impl Publisher for RedisPublisher {
    fn publish(&self, _msg: Arc<TrafficMessage>) {}

    fn stats(&self) -> FeedStats {
        self.counters.snapshot()
    }
}

/// Subscribes to a Redis channel.
pub struct RedisFeed {
    url: String,
    channel: String,
}

impl RedisFeed {
    pub fn new(url: &str, channel: &str) -> Self {
        Self {
            url: url.into(),
            channel: channel.into(),
        }
    }
}

#[async_trait]
impl Feed for RedisFeed {
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, FeedError> {
        let _ = (&self.url, &self.channel);
        Err(FeedError::Closed)
    }
}
