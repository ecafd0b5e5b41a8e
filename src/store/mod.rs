//! Where recordings and their traffic live: SQLite (embedded default) or MongoDB.
//!
//! One trait, implemented once per backend. Traffic writes come in batches of upserts
//! keyed by (recording, transaction): a redelivered message never makes a duplicate.

pub mod mongo;
pub mod sqlite;
pub mod unavailable;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::traffic::{Recording, TrafficDoc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("mongodb {target}: {source}")]
    Mongo {
        target: String,
        #[source]
        source: mongodb::error::Error,
    },
    /// MongoDB refused a write for lack of disk space (in a reply's `writeErrors`).
    #[error("mongodb {target}: out of disk space: {message}")]
    MongoFull { target: String, message: String },
    /// No MongoDB server answered within the server selection timeout. One line on
    /// purpose (no source): the driver's error is a dump of every server's state.
    #[error(
        "cannot reach MongoDB at {hosts}: no server answered within {waited}; is it running? \
         (TrafficRecorder kwargs mongo_host/mongo_port/mongo_uri)"
    )]
    MongoUnreachable {
        /// `host:port[,host:port...]`, or the SRV name; never credentials.
        hosts: String,
        /// The timeout that passed, as text (`5 s`).
        waited: String,
    },
    /// Another store (another heliosburn process, as a rule) holds the data directory's
    /// lock: two processes on one SQLite file would interleave their recordings.
    #[error("the data directory {dir} is in use by another heliosburn (pass another --data-dir)")]
    Locked { dir: String },
    /// The store's directory or file could not be prepared (before SQLite sees it).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    /// The store could not be opened at start (a full disk, as a rule): the proxy serves,
    /// and recording is unavailable until a restart.
    #[error("recording is unavailable: {0}")]
    Unavailable(String),
    #[error("the store's worker is gone")]
    Gone,
}

impl StoreError {
    /// The disk (or the quota) is full: nothing more can be written until space is freed.
    pub fn is_disk_full(&self) -> bool {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        let os_full = |e: &std::io::Error| matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT));
        match self {
            StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            StoreError::Io { source, .. } => os_full(source),
            StoreError::MongoFull { .. } => true,
            StoreError::Mongo { source, .. } => {
                matches!(*source.kind, mongodb::error::ErrorKind::Command(ref c) if i64::from(c.code) == mongo::OUT_OF_DISK_SPACE)
                    || matches!(*source.kind, mongodb::error::ErrorKind::Io(ref e) if os_full(e))
            }
            _ => false,
        }
    }
}

/// Fields a client may set when creating or updating a recording.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// A short name for status and logs (`sqlite:/path`, `mongodb://host/db.coll`).
    fn describe(&self) -> String;
    async fn create_recording(
        &self,
        name: &str,
        description: &str,
    ) -> Result<Recording, StoreError>;
    async fn list_recordings(&self) -> Result<Vec<Recording>, StoreError>;
    async fn get_recording(&self, id: &str) -> Result<Option<Recording>, StoreError>;
    async fn update_recording(
        &self,
        id: &str,
        patch: &RecordingPatch,
    ) -> Result<Option<Recording>, StoreError>;
    /// Sets (or clears, with `None`) the start and stop times of a recording.
    async fn mark_recording(
        &self,
        id: &str,
        started_at: Option<DateTime<Utc>>,
        stopped_at: Option<DateTime<Utc>>,
    ) -> Result<Option<Recording>, StoreError>;
    /// Deletes the recording and its traffic; false when there was no such recording.
    async fn delete_recording(&self, id: &str) -> Result<bool, StoreError>;
    /// The recording's transactions that are complete (have a response).
    async fn count_complete(&self, recording_id: &str) -> Result<u64, StoreError>;
    /// Upserts each document by (recording, transaction); a document with a response
    /// completes one without. Returns the number of documents written.
    async fn write_traffic(&self, docs: &[TrafficDoc]) -> Result<u64, StoreError>;
    /// Traffic of a recording in capture order: `offset` documents skipped, at most `limit`.
    async fn traffic(
        &self,
        recording_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<TrafficDoc>, StoreError>;
    /// Traffic of a recording in capture order after the position `after` (`None`: from
    /// the start), at most `limit`, each with its position: reading a whole recording
    /// this way costs each page the same, however far in it is (an offset costs more the
    /// further it skips).
    async fn traffic_after(
        &self,
        recording_id: &str,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, TrafficDoc)>, StoreError>;
}
