//! Placeholder until the SQLite store lands.
use std::path::Path;

use super::StoreError;

pub struct SqliteStore;

impl SqliteStore {
    pub fn open(_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self)
    }
}

#[async_trait::async_trait]
impl super::Store for SqliteStore {
    fn describe(&self) -> String {
        "placeholder".into()
    }
    async fn create_recording(
        &self,
        _: &str,
        _: &str,
    ) -> Result<crate::traffic::Recording, StoreError> {
        Err(StoreError::Gone)
    }
    async fn list_recordings(&self) -> Result<Vec<crate::traffic::Recording>, StoreError> {
        Err(StoreError::Gone)
    }
    async fn get_recording(
        &self,
        _: &str,
    ) -> Result<Option<crate::traffic::Recording>, StoreError> {
        Err(StoreError::Gone)
    }
    async fn update_recording(
        &self,
        _: &str,
        _: &super::RecordingPatch,
    ) -> Result<Option<crate::traffic::Recording>, StoreError> {
        Err(StoreError::Gone)
    }
    async fn mark_recording(
        &self,
        _: &str,
        _: Option<chrono::DateTime<chrono::Utc>>,
        _: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<crate::traffic::Recording>, StoreError> {
        Err(StoreError::Gone)
    }
    async fn delete_recording(&self, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::Gone)
    }
    async fn write_traffic(&self, _: &[crate::traffic::TrafficDoc]) -> Result<u64, StoreError> {
        Err(StoreError::Gone)
    }
    async fn traffic(
        &self,
        _: &str,
        _: u64,
        _: u64,
    ) -> Result<Vec<crate::traffic::TrafficDoc>, StoreError> {
        Err(StoreError::Gone)
    }
}
