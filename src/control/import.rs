//! HAR import: a HAR document, streamed from a request body, becomes a new recording.
//!
//! The document is parsed on a blocking thread as its bytes arrive (`har::read` over a
//! synchronous bridge to the body) and its transactions are written to the store in
//! batches bounded by count and bytes, so an import of any size holds a batch at a time.
//! A document that turns out invalid midway leaves nothing behind: the recording it was
//! going into is deleted, and the error names the entry and the field.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::har::{self, HarError};
use crate::recording::{RecordingError, Recordings};
use crate::store::RecordingPatch;
use crate::traffic::{Recording, TrafficDoc};

/// Transactions written to the store at a time.
const BATCH: usize = 256;
/// Bytes of bodies a batch holds at most (the one that crosses it included).
const BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The document is not valid HAR (nothing was kept).
    #[error("{0}")]
    Har(HarError),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// Reads a HAR document from `body` into a new recording named `name` (or after the tool
/// that wrote it) and returns the recording, stopped, spanning its first request to its
/// last response.
pub async fn import(
    recordings: &Arc<Recordings>,
    name: Option<&str>,
    body: axum::body::Body,
) -> Result<Recording, ImportError> {
    let rec = recordings
        .create(name.unwrap_or("imported HAR"), "importing")
        .await?;
    match fill(recordings, &rec.id, body).await {
        Ok((info, span)) => {
            let store = recordings.store();
            let describe = if info.creator.is_empty() {
                "a HAR file".to_owned()
            } else {
                info.creator.clone()
            };
            let patch = RecordingPatch {
                name: match (name, &info.comment) {
                    (Some(_), _) => None,
                    (None, Some(c)) if !c.trim().is_empty() => Some(c.trim().to_owned()),
                    (None, _) => Some(format!("imported from {describe}")),
                },
                description: Some(format!(
                    "imported from {describe}: {} entries",
                    info.entries
                )),
            };
            store
                .update_recording(&rec.id, &patch)
                .await
                .map_err(RecordingError::from)?;
            let (start, stop) = span.unwrap_or((rec.created_at, rec.created_at));
            store
                .mark_recording(&rec.id, Some(start), Some(stop))
                .await
                .map_err(RecordingError::from)?;
            tracing::info!(recording = %rec.id, entries = info.entries, creator = %info.creator, "HAR imported");
            Ok(recordings.get(&rec.id).await?)
        }
        Err(e) => {
            if let Err(d) = recordings.delete(&rec.id).await {
                tracing::warn!(recording = %rec.id, error = %d, "a failed import's recording could not be deleted");
            }
            Err(e)
        }
    }
}

/// The first request's and the last response's times.
type Span = Option<(DateTime<Utc>, DateTime<Utc>)>;

async fn fill(
    recordings: &Arc<Recordings>,
    id: &str,
    body: axum::body::Body,
) -> Result<(har::HarInfo, Span), ImportError> {
    let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let bridge = SyncIoBridge::new(reader);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<TrafficDoc>>(2);
    let owned_id = id.to_owned();
    let parser = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let gone = || "the import was stopped".to_owned();
        let info = har::read(bridge, &owned_id, |doc| {
            bytes += doc_bytes(&doc);
            batch.push(doc);
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                bytes = 0;
                tx.blocking_send(std::mem::take(&mut batch))
                    .map_err(|_| gone())?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            tx.blocking_send(batch)
                .map_err(|_| HarError::Stopped(gone()))?;
        }
        Ok::<_, HarError>(info)
    });
    let mut span: Span = None;
    let mut failed = None;
    while let Some(batch) = rx.recv().await {
        for doc in &batch {
            let end = doc
                .response
                .as_ref()
                .and_then(|r| DateTime::parse_from_rfc3339(&r.created_at).ok())
                .map_or(doc.created_at, |t| t.with_timezone(&Utc));
            span = Some(match span {
                None => (doc.created_at, end.max(doc.created_at)),
                Some((a, b)) => (a.min(doc.created_at), b.max(end)),
            });
        }
        if let Err(e) = recordings.store().write_traffic(&batch).await {
            failed = Some(e);
            break;
        }
    }
    // The parser sees a closed channel and stops, if the store failed.
    drop(rx);
    let parsed = parser
        .await
        .map_err(|e| HarError::Stopped(format!("the HAR reader failed: {e}")));
    if let Some(e) = failed {
        return Err(RecordingError::from(e).into());
    }
    match parsed {
        Ok(Ok(info)) => Ok((info, span)),
        Ok(Err(e)) | Err(e) => Err(ImportError::Har(e)),
    }
}

/// About what a transaction holds, for bounding a batch by bytes.
fn doc_bytes(doc: &TrafficDoc) -> usize {
    let body = |b: Option<&crate::traffic::BodyCapture>| b.map_or(0, |b| b.bytes.len());
    512 + body(doc.request.body.as_ref())
        + body(doc.response.as_ref().and_then(|r| r.body.as_ref()))
}
