//! SlowConsumer: a feed subscriber that takes `delay_ms` per message. It exists to show
//! (and test) that a slow consumer loses counted messages and never slows the proxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::background::Background;
use super::factory::{Factory, Kind, ModuleConfig};
use super::{Built, ModuleError, SupportModule};
use crate::feed::{Feed, Received};
use crate::resources::{FeedEndpoint, FeedUse, Resources};

/// A deliberately slow feed subscriber (for testing loss accounting).
pub static FACTORY: Factory = Factory::new::<SlowConsumerKwargs>("SlowConsumer", Kind::Support);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConsumerKwargs {
    /// Time spent on each message, in ms (default 100).
    pub delay_ms: Option<u64>,
}

#[async_trait]
impl ModuleConfig for SlowConsumerKwargs {
    fn validate(&self) -> Result<(), String> {
        super::kwargs::in_range("delay_ms", self.delay_ms, 0..=60_000)
    }

    fn feed(&self) -> Option<FeedUse> {
        Some(FeedUse::Reads(FeedEndpoint::Memory))
    }

    async fn build(&self, resources: &Resources) -> Result<Built, ModuleError> {
        let bus = Arc::new(resources.feeds.bus().clone());
        Ok(Built::Support(Arc::new(SlowConsumer::new(bus, self))))
    }
}

pub struct SlowConsumer {
    feed: Arc<dyn Feed>,
    delay: Duration,
    seen: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    background: Background,
}

impl SlowConsumer {
    pub fn new(feed: Arc<dyn Feed>, kwargs: &SlowConsumerKwargs) -> Self {
        Self {
            feed,
            delay: Duration::from_millis(kwargs.delay_ms.unwrap_or(100)),
            seen: Arc::default(),
            lost: Arc::default(),
            background: Background::default(),
        }
    }
}

#[async_trait]
impl SupportModule for SlowConsumer {
    async fn start(&self) -> Result<(), ModuleError> {
        self.stop().await;
        let mut sub = self.feed.subscribe().await?;
        let (seen, lost, delay) = (self.seen.clone(), self.lost.clone(), self.delay);
        self.background.spawn(|stop| async move {
            loop {
                let r = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = sub.recv() => r,
                };
                match r {
                    Ok(Received::Message(_)) => {
                        seen.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                    }
                    Ok(Received::Lost(n)) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Received::Gap | Received::Skipped(_)) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) {
        self.background.stop().await;
    }

    fn counters(&self) -> serde_json::Value {
        serde_json::json!({ "seen": self.seen.load(Ordering::Relaxed), "lost": self.lost.load(Ordering::Relaxed) })
    }

    fn reset(&self) {
        self.seen.store(0, Ordering::Relaxed);
        self.lost.store(0, Ordering::Relaxed);
    }
}
