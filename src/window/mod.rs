//! The live window: the traffic of the last second, for dashboards.
//!
//! In memory by default; a Redis sorted set (score = microseconds since the epoch) when
//! Redis is configured. Readers pass a cursor (the last score they saw) and get what is
//! newer, so the server keeps no per-client state. Beside it, the [`tail::Tail`] passes
//! each completed exchange to those who watch as it arrives.

pub mod memory;
pub mod redis;
pub mod tail;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::traffic::TrafficMessage;

/// How long an entry stays in the window.
pub const WINDOW_MICROS: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    Redis(#[from] crate::redis_link::RedisLinkError),
}

/// What `GET /traffic?since=` returns: the messages newer than the cursor, oldest first,
/// and the cursor to pass next time.
#[derive(Debug, Serialize)]
pub struct WindowPage {
    pub cursor: i64,
    pub messages: Vec<serde_json::Value>,
}

#[async_trait]
pub trait Window: Send + Sync {
    /// Adds messages (with their scores) and trims everything older than one second
    /// before the newest.
    async fn push(&self, batch: &[(i64, Arc<TrafficMessage>)]) -> Result<(), WindowError>;
    /// Messages with a score greater than `since` and within the last second.
    async fn read_since(&self, since: i64) -> Result<WindowPage, WindowError>;
}

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
