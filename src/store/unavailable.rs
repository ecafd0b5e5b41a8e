//! The store of a proxy that could not open its own (a full disk at start): every call
//! says why recording is unavailable, so the proxy serves traffic without it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{RecordingPatch, Store, StoreError};
use crate::traffic::{Recording, TrafficDoc};

pub struct UnavailableStore {
    /// Why, and what to do: shown by every call.
    reason: String,
}

impl UnavailableStore {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    fn refuse<T>(&self) -> Result<T, StoreError> {
        Err(StoreError::Unavailable(self.reason.clone()))
    }
}

#[async_trait]
impl Store for UnavailableStore {
    fn describe(&self) -> String {
        format!("unavailable ({})", self.reason)
    }

    async fn create_recording(&self, _: &str, _: &str) -> Result<Recording, StoreError> {
        self.refuse()
    }

    async fn list_recordings(&self) -> Result<Vec<Recording>, StoreError> {
        self.refuse()
    }

    async fn get_recording(&self, _: &str) -> Result<Option<Recording>, StoreError> {
        self.refuse()
    }

    async fn update_recording(
        &self,
        _: &str,
        _: &RecordingPatch,
    ) -> Result<Option<Recording>, StoreError> {
        self.refuse()
    }

    async fn mark_recording(
        &self,
        _: &str,
        _: Option<DateTime<Utc>>,
        _: Option<DateTime<Utc>>,
    ) -> Result<Option<Recording>, StoreError> {
        self.refuse()
    }

    async fn count_complete(&self, _: &str) -> Result<u64, StoreError> {
        self.refuse()
    }

    async fn delete_recording(&self, _: &str) -> Result<bool, StoreError> {
        self.refuse()
    }

    async fn write_traffic(&self, _: &[TrafficDoc]) -> Result<u64, StoreError> {
        self.refuse()
    }

    async fn traffic(&self, _: &str, _: u64, _: u64) -> Result<Vec<TrafficDoc>, StoreError> {
        self.refuse()
    }

    async fn traffic_after(
        &self,
        _: &str,
        _: Option<i64>,
        _: u64,
    ) -> Result<Vec<(i64, TrafficDoc)>, StoreError> {
        self.refuse()
    }
}
