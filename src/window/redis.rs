//! The live window as a Redis sorted set (the seed's TrafficStreamer): member = traffic
//! message JSON, score = microseconds since the epoch. Each push adds its batch and trims
//! what is more than one second older than the newest entry, in one round trip.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{now_micros, Window, WindowError, WindowPage, WINDOW_MICROS};
use crate::redis_link::{Commands, Endpoint};
use crate::traffic::TrafficMessage;

/// How long Redis may take to answer one push or read.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct RedisWindow {
    /// Reconnects by itself: a command during an outage fails, a later one heals.
    conn: Commands,
    key: String,
    /// The last score this window handed out. Scores only grow, so a reader's cursor
    /// never skips an entry that was added later with the same (or an older) time.
    last_score: AtomicI64,
}

impl RedisWindow {
    /// Connects now, so a Redis that is not there at startup is an error at once.
    pub async fn connect(endpoint: &Endpoint, key: &str) -> Result<Self, WindowError> {
        // A push during an outage fails fast (the streamer counts it) rather than hold
        // its batch; the next push tries again.
        let conn = Commands::connect(endpoint, RESPONSE_TIMEOUT).await?;
        Ok(Self {
            conn,
            key: key.into(),
            last_score: AtomicI64::new(0),
        })
    }

    /// `score`, or one past the last score handed out if that is not older.
    fn next_score(&self, score: i64) -> i64 {
        let mut assigned = score;
        // The closure only computes; `fetch_update` retries it if another push raced.
        let _ = self
            .last_score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                assigned = score.max(last + 1);
                Some(assigned)
            });
        assigned
    }
}

#[async_trait]
impl Window for RedisWindow {
    async fn push(&self, batch: &[(i64, Arc<TrafficMessage>)]) -> Result<(), WindowError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut newest = i64::MIN;
        for (score, msg) in batch {
            let Ok(member) = serde_json::to_vec(msg.as_ref()) else {
                tracing::warn!(transaction_id = %msg.transaction_id, "traffic message did not serialize; not windowed");
                continue;
            };
            let score = self.next_score(*score);
            newest = newest.max(score);
            pipe.cmd("ZADD")
                .arg(&self.key)
                .arg(score)
                .arg(member)
                .ignore();
        }
        if newest == i64::MIN {
            return Ok(());
        }
        // `(` makes the bound exclusive: an entry exactly one second older than the
        // newest stays, as in the in-memory window.
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(format!("({}", newest - WINDOW_MICROS))
            .ignore();
        // ZADD of the same members and scores, and the trim, may safely run twice.
        Ok(self.conn.query_idempotent::<()>(&pipe).await?)
    }

    async fn read_since(&self, since: i64) -> Result<WindowPage, WindowError> {
        // Scores are whole microseconds, so "greater than `since`" is "at least since+1";
        // what is more than a second old is skipped even if no push has trimmed it yet.
        let min = since.saturating_add(1).max(now_micros() - WINDOW_MICROS);
        let mut read = ::redis::cmd("ZRANGEBYSCORE");
        read.arg(&self.key).arg(min).arg("+inf").arg("WITHSCORES");
        let entries: Vec<(Vec<u8>, f64)> = self.conn.query_idempotent(&read).await?;
        let mut cursor = since.max(0);
        let mut messages = Vec::with_capacity(entries.len());
        for (member, score) in entries {
            // Scores stay below 2^53, so the f64 Redis returns is exact.
            cursor = cursor.max(score as i64);
            match serde_json::from_slice(&member) {
                Ok(v) => messages.push(v),
                Err(error) => {
                    tracing::warn!(key = %self.key, score, %error, "window member is not JSON; skipped");
                }
            }
        }
        Ok(WindowPage { cursor, messages })
    }
}
