//! The embedded live window: a deque of the last second's messages, bounded by bytes as
//! well: at tens of thousands of exchanges a second, a second of messages is tens of MiB,
//! so past [`DEFAULT_MAX_BYTES`] the oldest go first (a dashboard shows the newest).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{now_micros, Window, WindowError, WindowPage, WINDOW_MICROS};
use crate::traffic::TrafficMessage;

/// What the window's messages may hold together, about (as [`TrafficMessage::footprint`]
/// counts them).
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

pub struct MemoryWindow {
    inner: Mutex<Entries>,
    max_bytes: usize,
}

#[derive(Default)]
struct Entries {
    /// Score, message, its footprint.
    list: VecDeque<(i64, Arc<TrafficMessage>, usize)>,
    bytes: usize,
}

impl Entries {
    /// Drops what is older than the window, then the oldest until the rest fits.
    fn trim(&mut self, now: i64, max_bytes: usize) {
        while let Some((score, _, size)) = self.list.front() {
            if *score >= now - WINDOW_MICROS && self.bytes <= max_bytes {
                break;
            }
            self.bytes -= size;
            self.list.pop_front();
        }
    }
}

impl Default for MemoryWindow {
    fn default() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_BYTES)
    }
}

impl MemoryWindow {
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the deque half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Window for MemoryWindow {
    async fn push(&self, batch: &[(i64, Arc<TrafficMessage>)]) -> Result<(), WindowError> {
        let mut entries = self.lock();
        for (score, msg) in batch {
            // Scores only grow, so a cursor never skips an entry that shares its time.
            let score = entries
                .list
                .back()
                .map_or(*score, |(last, _, _)| (*score).max(last + 1));
            let size = msg.footprint();
            entries.bytes += size;
            entries.list.push_back((score, msg.clone(), size));
        }
        let newest = entries.list.back().map_or(0, |(s, _, _)| *s);
        entries.trim(newest, self.max_bytes);
        Ok(())
    }

    async fn read_since(&self, since: i64) -> Result<WindowPage, WindowError> {
        let now = now_micros();
        let picked: Vec<(i64, Arc<TrafficMessage>)> = {
            let mut entries = self.lock();
            entries.trim(now, self.max_bytes);
            entries
                .list
                .iter()
                .filter(|(s, _, _)| *s > since)
                .map(|(s, m, _)| (*s, m.clone()))
                .collect()
        };
        let cursor = picked.last().map_or(since.max(0), |(s, _)| *s);
        let messages = picked
            .iter()
            .filter_map(|(_, m)| serde_json::to_value(m.as_ref()).ok())
            .collect();
        Ok(WindowPage { cursor, messages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Arc<TrafficMessage> {
        Arc::new(TrafficMessage::sample(&i.to_string(), None))
    }

    #[tokio::test]
    async fn a_full_window_keeps_the_newest() {
        let one = msg(0).footprint();
        let window = MemoryWindow::with_max_bytes(3 * one);
        let now = now_micros();
        let batch: Vec<_> = (0..5).map(|i| (now + i as i64, msg(i))).collect();
        window.push(&batch).await.unwrap();
        let page = window.read_since(0).await.unwrap();
        let ids: Vec<_> = page
            .messages
            .iter()
            .map(|m| m["transaction_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["2", "3", "4"]);
        assert_eq!(window.lock().bytes, 3 * one);
    }
}
