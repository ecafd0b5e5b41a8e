//! TrafficStreamer (the seed's `TrafficStream`): subscribes to the feed and keeps the
//! last second of messages in the live window, trimming older ones as new ones arrive,
//! and passes each completed exchange to the tail's watchers (`GET /traffic/stream`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::background::Background;
use super::factory::{Factory, Kind, ModuleConfig};
use super::kwargs::{
    control_host_claim, feed_endpoint, name_or_default, redis_endpoint, Port, RedisUrl,
};
use super::{Built, ModuleError, SupportModule};
use crate::feed::{Feed, Received};
use crate::redis_link::Endpoint;
use crate::resources::{Claim, Claimed, FeedEndpoint, FeedUse, RedisMode, Resources, WindowSpec};
use crate::traffic::TrafficMessage;
use crate::window::tail::Tail;
use crate::window::{now_micros, Window};

/// Keeps the last second of the feed in the live window.
pub static FACTORY: Factory =
    Factory::new::<StreamerKwargs>("TrafficStreamer", Kind::Support).aliases(&["TrafficStream"]);

/// Most messages written to the window in one round trip.
const MAX_BATCH: usize = 512;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamerKwargs {
    /// `redis://[user:pass@]host[:port][/db]` (or `rediss://`); wins over the parts.
    pub redis_url: Option<RedisUrl>,
    pub redis_host: Option<String>,
    pub redis_port: Option<Port>,
    pub redis_db: Option<i64>,
    /// Sorted-set key of the window (default `heliosburn.traffic`).
    pub redis_key: Option<String>,
    /// Channel to subscribe to (default `heliosburn.traffic`), or the stream's key in
    /// stream mode (default `heliosburn.traffic.stream`).
    pub redis_sub_queue: Option<String>,
    /// `pubsub` (the seed's, default) or `stream` (at least once, through a consumer
    /// group named after the module).
    pub redis_mode: Option<RedisMode>,
}

impl StreamerKwargs {
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

    /// The window these kwargs name: a sorted set when they name a Redis, else memory.
    pub fn window(&self) -> WindowSpec {
        match self.redis() {
            Some(endpoint) => WindowSpec::Redis {
                endpoint,
                key: name_or_default(&self.redis_key),
            },
            None => WindowSpec::Memory,
        }
    }
}

#[async_trait]
impl ModuleConfig for StreamerKwargs {
    fn claims(&self) -> Vec<Claimed> {
        let mut claims = vec![Claimed {
            claim: Claim::Window(self.window()),
            keys: "redis_url, redis_host, redis_port, redis_db, redis_key",
        }];
        claims.extend(control_host_claim(self.redis()));
        claims
    }

    fn feed(&self) -> Option<FeedUse> {
        Some(FeedUse::Reads(self.source()))
    }

    async fn build(&self, resources: &Resources) -> Result<Built, ModuleError> {
        let feed = resources.feeds.subscriber(&self.source());
        Ok(Built::Support(Arc::new(TrafficStreamer::new(
            feed,
            resources.window.clone(),
            resources.tail.clone(),
        ))))
    }
}

/// Bytes of each body the live window keeps: it is for watching, and a second of large
/// bodies would otherwise pin hundreds of MiB. `size` and `truncated` say what was cut.
pub const WINDOW_BODY_LIMIT: usize = 4096;

/// The message as the window keeps it: shared as is, or a copy with bodies cut.
fn window_copy(m: Arc<TrafficMessage>) -> Arc<TrafficMessage> {
    m.with_bodies_cut(WINDOW_BODY_LIMIT).map_or(m, Arc::new)
}

/// Adds a received message to the batch with its score (and passes it to the tail's
/// watchers), or counts a loss.
fn take(
    batch: &mut Vec<(i64, Arc<TrafficMessage>)>,
    tail: &Tail,
    counters: &Counters,
    r: Received,
) {
    match r {
        Received::Message(m) => {
            let m = window_copy(m);
            tail.send(&m);
            batch.push((now_micros(), m));
        }
        // The feed was cut off and healed: how much was missed is not known.
        Received::Gap => {
            counters.gaps.fetch_add(1, Ordering::Relaxed);
        }
        Received::Lost(n) => {
            counters.lost.fetch_add(n, Ordering::Relaxed);
        }
        // Only a durable subscriber is told of these (the streamer is not one).
        Received::Skipped(_) => {}
    }
}

#[derive(Default)]
struct Counters {
    windowed: AtomicU64,
    lost: AtomicU64,
    /// Feed interruptions of unknown size (Redis went away and came back).
    gaps: AtomicU64,
    failed: AtomicU64,
}

pub struct TrafficStreamer {
    feed: Arc<dyn Feed>,
    window: Arc<dyn Window>,
    tail: Tail,
    counters: Arc<Counters>,
    background: Background,
}

impl TrafficStreamer {
    pub fn new(feed: Arc<dyn Feed>, window: Arc<dyn Window>, tail: Tail) -> Self {
        Self {
            feed,
            window,
            tail,
            counters: Arc::default(),
            background: Background::default(),
        }
    }
}

#[async_trait]
impl SupportModule for TrafficStreamer {
    async fn start(&self) -> Result<(), ModuleError> {
        self.stop().await;
        let mut sub = self.feed.subscribe().await?;
        let (window, counters) = (self.window.clone(), self.counters.clone());
        let tail = self.tail.clone();
        self.background.spawn(|stop| async move {
            let mut failing = false;
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = sub.recv() => r,
                };
                let mut batch = Vec::new();
                match first {
                    Ok(r) => take(&mut batch, &tail, &counters, r),
                    Err(e) => {
                        tracing::error!(error = %e, "TrafficStreamer: the feed ended");
                        break;
                    }
                }
                while batch.len() < MAX_BATCH {
                    match sub.try_recv() {
                        Some(r) => take(&mut batch, &tail, &counters, r),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                match window.push(&batch).await {
                    Ok(()) => {
                        counters
                            .windowed
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        if failing {
                            tracing::info!("live window is writable again");
                            failing = false;
                        }
                    }
                    Err(e) => {
                        counters
                            .failed
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        if !failing {
                            tracing::error!(error = %e, "cannot update the live window");
                            failing = true;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) {
        self.background.stop().await;
    }

    fn counters(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "windowed": c.windowed.load(Ordering::Relaxed),
            "lost": c.lost.load(Ordering::Relaxed),
            "gaps": c.gaps.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            // Streams watching the tail now (`GET /traffic/stream`).
            "watchers": self.tail.watchers(),
        })
    }

    fn reset(&self) {
        let c = &self.counters;
        for n in [&c.windowed, &c.lost, &c.gaps, &c.failed] {
            n.store(0, Ordering::Relaxed);
        }
    }
}
