//! The live window as a Redis sorted set (the seed's TrafficStreamer): member = traffic
//! message JSON, score = microseconds since the epoch. Each push adds its batch and trims
//! what is more than one second older than the newest entry, in one round trip.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{now_micros, Window, WindowError, WindowPage, WINDOW_MICROS};
use crate::feed::redis::{open_client, CONNECT_TIMEOUT};
use crate::traffic::TrafficMessage;

/// How long Redis may take to answer one push or read.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct RedisWindow {
    /// Reconnects by itself: a command during an outage fails, a later one heals.
    conn: ConnectionManager,
    addr: String,
    key: String,
    /// The last score this window handed out. Scores only grow, so a reader's cursor
    /// never skips an entry that was added later with the same (or an older) time.
    last_score: AtomicI64,
}

impl RedisWindow {
    /// Connects now, so a Redis that is not there at startup is an error at once.
    pub async fn connect(url: &str, key: &str) -> Result<Self, WindowError> {
        let (client, addr) =
            open_client(url).map_err(|(addr, source)| WindowError::Redis { addr, source })?;
        // Few quick retries: a push during an outage should fail fast (the streamer counts
        // it) rather than hold its batch; the next push tries again.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(std::time::Duration::from_secs(1))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|source| WindowError::Redis {
                addr: addr.clone(),
                source,
            })?;
        Ok(Self {
            conn,
            addr,
            key: key.into(),
            last_score: AtomicI64::new(0),
        })
    }

    fn error(&self, source: redis::RedisError) -> WindowError {
        WindowError::Redis {
            addr: self.addr.clone(),
            source,
        }
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

/// The connection broke since its last use (Redis restarted, say): the manager has begun
/// to reconnect, and the command is worth one more try. Not when Redis refuses: it is
/// down, and a retry would only wait.
fn went_stale(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && !e.is_connection_refusal()
}

#[async_trait]
impl Window for RedisWindow {
    async fn push(&self, batch: &[(i64, Arc<TrafficMessage>)]) -> Result<(), WindowError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
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
        let mut sent = pipe.query_async::<()>(&mut self.conn.clone()).await;
        // ZADD of the same members and scores, and the trim, may safely run twice.
        if sent.as_ref().is_err_and(went_stale) {
            sent = pipe.query_async::<()>(&mut self.conn.clone()).await;
        }
        sent.map_err(|e| self.error(e))
    }

    async fn read_since(&self, since: i64) -> Result<WindowPage, WindowError> {
        // Scores are whole microseconds, so "greater than `since`" is "at least since+1";
        // what is more than a second old is skipped even if no push has trimmed it yet.
        let min = since.saturating_add(1).max(now_micros() - WINDOW_MICROS);
        let mut read = redis::cmd("ZRANGEBYSCORE");
        read.arg(&self.key).arg(min).arg("+inf").arg("WITHSCORES");
        let mut entries = read.query_async(&mut self.conn.clone()).await;
        if entries.as_ref().is_err_and(went_stale) {
            entries = read.query_async(&mut self.conn.clone()).await;
        }
        let entries: Vec<(Vec<u8>, f64)> = entries.map_err(|e| self.error(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::redis::testing::{free_port, unique, SHARED_URL};
    use crate::traffic::{MultiMap, RequestInfo};

    fn msg(i: usize) -> Arc<TrafficMessage> {
        Arc::new(TrafficMessage {
            transaction_id: format!("t{i}"),
            request_id: format!("r{i}"),
            response_id: String::new(),
            request: Arc::new(RequestInfo {
                created_at: "2015-03-11T00:00:00.000000Z".into(),
                client_protocol: "HTTP/1.1".into(),
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

    fn json(i: usize) -> serde_json::Value {
        serde_json::to_value(msg(i).as_ref()).unwrap()
    }

    /// Everything in the set, whatever its age, with scores.
    async fn members(key: &str) -> Vec<(String, i64)> {
        let mut conn = redis::Client::open(SHARED_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let all: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(key)
            .arg(60)
            .query_async(&mut conn)
            .await
            .unwrap();
        all.into_iter().map(|(m, s)| (m, s as i64)).collect()
    }

    #[tokio::test]
    async fn entries_older_than_a_second_before_the_newest_are_trimmed() {
        let key = unique("window-trim");
        let w = RedisWindow::connect(SHARED_URL, &key).await.unwrap();
        let now = now_micros();
        w.push(&[(now - 2_500_000, msg(0)), (now - 2_000_000, msg(1))])
            .await
            .unwrap();
        assert_eq!(members(&key).await.len(), 2);
        // Exactly one second older than the newest stays; a microsecond more goes.
        w.push(&[
            (now - 1_000_001, msg(2)),
            (now - 1_000_000, msg(3)),
            (now, msg(4)),
        ])
        .await
        .unwrap();
        let left = members(&key).await;
        assert_eq!(
            left,
            vec![
                (
                    serde_json::to_string(msg(3).as_ref()).unwrap(),
                    now - 1_000_000
                ),
                (serde_json::to_string(msg(4).as_ref()).unwrap(), now),
            ]
        );
    }

    #[tokio::test]
    async fn readers_see_each_message_once_with_an_advancing_cursor() {
        let key = unique("window-read");
        let w = RedisWindow::connect(SHARED_URL, &key).await.unwrap();
        let now = now_micros();
        // The same time twice: the second gets the next microsecond, so none is skipped.
        w.push(&[(now, msg(0)), (now, msg(1)), (now + 1, msg(2))])
            .await
            .unwrap();
        let page = w.read_since(0).await.unwrap();
        assert_eq!(page.messages, vec![json(0), json(1), json(2)]);
        assert_eq!(page.cursor, now + 2);

        let again = w.read_since(page.cursor).await.unwrap();
        assert!(again.messages.is_empty());
        assert_eq!(again.cursor, page.cursor);

        w.push(&[(now_micros(), msg(3)), (now_micros(), msg(4))])
            .await
            .unwrap();
        let next = w.read_since(page.cursor).await.unwrap();
        assert_eq!(next.messages, vec![json(3), json(4)]);
        assert!(next.cursor > page.cursor);
        members(&key).await;
    }

    #[tokio::test]
    async fn stale_entries_are_not_read_even_before_a_push_trims_them() {
        let key = unique("window-stale");
        let w = RedisWindow::connect(SHARED_URL, &key).await.unwrap();
        w.push(&[(now_micros() - 1_500_000, msg(0))]).await.unwrap();
        let page = w.read_since(0).await.unwrap();
        assert!(page.messages.is_empty());
        assert_eq!(page.cursor, 0);
        assert_eq!(members(&key).await.len(), 1);
    }

    #[tokio::test]
    async fn absent_redis_fails_at_once() {
        let url = format!("redis://127.0.0.1:{}/", free_port());
        let e = RedisWindow::connect(&url, "k").await.err().unwrap();
        assert!(matches!(e, WindowError::Redis { .. }), "{e}");
    }

    #[tokio::test]
    async fn the_first_push_and_read_after_a_redis_restart_succeed() {
        let mut server = crate::feed::redis::testing::TestRedis::start().await;
        let w = RedisWindow::connect(&server.url(), "window").await.unwrap();
        w.push(&[(now_micros(), msg(0))]).await.unwrap();
        server.restart().await;
        w.push(&[(now_micros(), msg(1))]).await.unwrap();
        server.restart().await;
        assert!(w.read_since(0).await.unwrap().messages.is_empty());
    }

    #[tokio::test]
    async fn pushes_fail_while_redis_is_away_and_work_again_after() {
        let mut server = crate::feed::redis::testing::TestRedis::start().await;
        let w = RedisWindow::connect(&server.url(), "window").await.unwrap();
        w.push(&[(now_micros(), msg(0))]).await.unwrap();
        server.kill();
        assert!(w.push(&[(now_micros(), msg(1))]).await.is_err());
        server.restart().await;
        let mut healed = false;
        for _ in 0..100 {
            if w.push(&[(now_micros(), msg(2))]).await.is_ok() {
                healed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(healed, "the window did not reconnect");
        let page = w.read_since(0).await.unwrap();
        assert_eq!(page.messages, vec![json(2)]);
    }
}
