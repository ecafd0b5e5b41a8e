//! The embedded live window: a deque of the last second's messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{now_micros, Window, WindowError, WindowPage, WINDOW_MICROS};
use crate::traffic::TrafficMessage;

#[derive(Default)]
pub struct MemoryWindow {
    entries: Mutex<VecDeque<(i64, Arc<TrafficMessage>)>>,
}

impl MemoryWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(i64, Arc<TrafficMessage>)>> {
        // A panic while holding this lock cannot leave the deque half-changed.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trim(entries: &mut VecDeque<(i64, Arc<TrafficMessage>)>, now: i64) {
        while entries
            .front()
            .is_some_and(|(s, _)| *s < now - WINDOW_MICROS)
        {
            entries.pop_front();
        }
    }
}

#[async_trait]
impl Window for MemoryWindow {
    async fn push(&self, batch: &[(i64, Arc<TrafficMessage>)]) -> Result<(), WindowError> {
        let mut entries = self.lock();
        for (score, msg) in batch {
            // Scores only grow, so a cursor never skips an entry that shares its time.
            let score = entries
                .back()
                .map_or(*score, |(last, _)| (*score).max(last + 1));
            entries.push_back((score, msg.clone()));
        }
        let newest = entries.back().map_or(0, |(s, _)| *s);
        Self::trim(&mut entries, newest);
        Ok(())
    }

    async fn read_since(&self, since: i64) -> Result<WindowPage, WindowError> {
        let now = now_micros();
        let picked: Vec<(i64, Arc<TrafficMessage>)> = {
            let mut entries = self.lock();
            Self::trim(&mut entries, now);
            entries
                .iter()
                .filter(|(s, _)| *s > since)
                .cloned()
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
