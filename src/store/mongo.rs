//! MongoDB store, the seed's setup: how recordings grow past one machine.
//!
//! Traffic documents live in the configured collection (the seed's `mongo_collection`),
//! recordings in `recordings` beside it, in the seed's shapes: ObjectId `_id`s, BSON dates,
//! `recordingId` as an ObjectId, `request`/`response` sub-documents with the message's
//! field names. A traffic document also carries `seq`, an integer giving capture order,
//! which pagination sorts by.
//!
//! A batch of traffic is one `update` command (one round trip) of upserts keyed by
//! `{recordingId, transactionId}`; the client-level `bulkWrite` would need MongoDB 8.
//!
//! Connecting is bounded: unless the URI sets `serverSelectionTimeoutMS`, a server that
//! does not answer within [`DEFAULT_SERVER_SELECTION_TIMEOUT`] fails the start with one
//! line ([`StoreError::MongoUnreachable`]), not the driver's 30 s wait and topology dump.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use mongodb::bson::{
    self, doc, oid::ObjectId, Bson, Document, RawArrayBuf, RawBson, RawDocument, RawDocumentBuf,
};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ConnectionString, HostInfo, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Deserialize;

use super::{RecordingPatch, Store, StoreError};
use crate::traffic::{Recording, RequestInfo, ResponseInfo, TrafficDoc};

/// MongoDB's error code for a write refused for lack of disk space.
pub const OUT_OF_DISK_SPACE: i64 = 14031;

/// The collection of recording documents, beside the traffic collection.
pub const RECORDINGS: &str = "recordings";

/// How long connecting waits for a server when the URI does not set
/// `serverSelectionTimeoutMS`. The driver's default (30 s) keeps a start against a server
/// that is down silent, and deaf to Ctrl-C in callers that do not race it, for half a minute.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A command document may be at most 16 MiB (plus a little); a batch whose statements
/// add up to more is sent in several commands, each well under the limit.
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;
/// The server's `maxWriteBatchSize`.
const MAX_STATEMENTS: usize = 100_000;

pub struct MongoStore {
    db: Database,
    traffic: Collection<Document>,
    recordings: Collection<Document>,
    /// `mongodb://hosts/db.collection`, without credentials or options.
    described: String,
    /// The last capture-order number this store handed out.
    last_seq: AtomicI64,
}

/// Reserves `n` consecutive capture-order numbers and returns the first. They are
/// microseconds since the epoch, so that documents written by several recorders still
/// interleave in time order, and strictly increasing within the store even when the
/// clock stands still or steps back.
fn reserve_seq(last_seq: &AtomicI64, n: usize) -> i64 {
    let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    let now = Utc::now().timestamp_micros();
    let first = |last: i64| now.max(last.saturating_add(1));
    let reserve = |last: i64| Some(first(last).saturating_add(n - 1));
    // The closure never declines, so both arms carry the previous value.
    match last_seq.fetch_update(Ordering::Relaxed, Ordering::Relaxed, reserve) {
        Ok(last) | Err(last) => first(last),
    }
}

/// Drops credentials, path and options: what is left may go in logs and status.
pub fn redact(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("mongodb", uri));
    let before_options = rest.split('?').next().unwrap_or_default();
    let hosts = before_options
        .rsplit_once('@')
        .map_or(before_options, |(_, hosts)| hosts);
    let hosts = hosts.split('/').next().unwrap_or_default();
    format!("{scheme}://{hosts}")
}

fn to_bson_date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn from_bson_date(t: bson::DateTime) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
        .ok_or_else(|| StoreError::Corrupt(format!("date out of range: {t}")))
}

fn opt_bson_date(t: Option<DateTime<Utc>>) -> Bson {
    t.map_or(Bson::Null, |t| Bson::DateTime(to_bson_date(t)))
}

/// Ids come from users (URLs); one that is not an ObjectId names nothing stored.
fn parse_id(id: &str) -> Option<ObjectId> {
    ObjectId::parse_str(id).ok()
}

/// Reads an integer whatever its BSON width: servers answer counts such as `n` as Int32
/// or Int64 depending on version and size.
fn int_field(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

/// The hosts a connection string names (`h1:27017,h2:27017`, or the SRV name), without
/// credentials: for the log line and the error that say where we are connecting.
fn hosts_of(conn: &ConnectionString) -> String {
    match &conn.host_info {
        HostInfo::HostIdentifiers(hosts) => hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        HostInfo::DnsRecord(name) => name.clone(),
        // `HostInfo` is non-exhaustive.
        _ => "?".to_owned(),
    }
}

/// `5 s`, `200 ms`: a timeout as a person would write it.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A recording document as stored. Dates are read as whatever BSON they are, see
/// [`stored_date`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRecording {
    #[serde(rename = "_id")]
    id: ObjectId,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    created_at: Bson,
    #[serde(default)]
    updated_at: Bson,
    #[serde(default)]
    started_at: Bson,
    #[serde(default)]
    stopped_at: Bson,
}

/// A date field of a recording. This store writes BSON dates; a text date is read too,
/// because the seed's recording document (shared/seed/recording.md) shows its dates as
/// text (`"createdAt": "2015-03-11 00:00:00"`, UTC), so recordings written by tools that
/// follow it (the original dashboard) may hold them that way. RFC 3339 text is accepted
/// as well.
fn stored_date(value: &Bson) -> Result<Option<DateTime<Utc>>, String> {
    match value {
        Bson::Null | Bson::Undefined => Ok(None),
        Bson::DateTime(t) => DateTime::from_timestamp_millis(t.timestamp_millis())
            .map(Some)
            .ok_or_else(|| format!("date out of range: {t}")),
        Bson::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    .map(|t| t.and_utc())
            })
            .map(Some)
            .map_err(|e| format!("{text:?}: {e}")),
        other => Err(format!("not a date: {other}")),
    }
}

impl StoredRecording {
    fn into_recording(self, count: u64) -> Result<Recording, StoreError> {
        let id = self.id.to_hex();
        let bad = |field: &str, what: String| {
            StoreError::Corrupt(format!("recording {id}: {field}: {what}"))
        };
        let optional = |field: &str, value: &Bson| stored_date(value).map_err(|e| bad(field, e));
        let required = |field: &str, value: &Bson| {
            optional(field, value)?.ok_or_else(|| bad(field, "missing".to_owned()))
        };
        Ok(Recording {
            created_at: required("createdAt", &self.created_at)?,
            updated_at: required("updatedAt", &self.updated_at)?,
            started_at: optional("startedAt", &self.started_at)?,
            stopped_at: optional("stoppedAt", &self.stopped_at)?,
            id,
            name: self.name,
            description: self.description,
            count,
            failure: None,
            accounting: None,
        })
    }
}

/// A traffic document as stored (`_id` and `seq` are not part of the API's document).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredTraffic {
    recording_id: ObjectId,
    transaction_id: String,
    created_at: bson::DateTime,
    request: Arc<RequestInfo>,
    #[serde(default)]
    response: Option<Arc<ResponseInfo>>,
}

impl StoredTraffic {
    fn into_doc(self) -> Result<TrafficDoc, StoreError> {
        Ok(TrafficDoc {
            recording_id: self.recording_id.to_hex(),
            transaction_id: self.transaction_id,
            created_at: from_bson_date(self.created_at)?,
            request: self.request,
            response: self.response,
        })
    }
}

fn corrupt(what: &str, raw: &RawDocument, e: impl std::fmt::Display) -> StoreError {
    let id = raw
        .get_object_id("_id")
        .map_or_else(|_| "?".to_owned(), |id| id.to_hex());
    StoreError::Corrupt(format!("{what} {id}: {e}"))
}

/// One statement of the `update` command: upsert by (recording, transaction). The first
/// write fixes `createdAt` and `seq`; a response (with the request and its body) completes
/// the document; a repeat of the request event changes nothing. Errors say why the document cannot be stored at all.
fn upsert_statement(doc: &TrafficDoc, seq: i64) -> Result<RawDocumentBuf, String> {
    let recording_id = parse_id(&doc.recording_id)
        .ok_or_else(|| format!("recording id {:?} is not an ObjectId", doc.recording_id))?;
    let request = bson::to_raw_document_buf(&doc.request).map_err(|e| format!("request: {e}"))?;

    let mut q = RawDocumentBuf::new();
    q.append("recordingId", recording_id);
    q.append("transactionId", doc.transaction_id.as_str());

    let mut on_insert = RawDocumentBuf::new();
    on_insert.append("createdAt", to_bson_date(doc.created_at));
    on_insert.append("seq", seq);

    // The response event carries the request again, now with its captured body: it
    // replaces the request event's copy. A field may not sit in both operators.
    let mut u = RawDocumentBuf::new();
    if let Some(response) = &doc.response {
        let response = bson::to_raw_document_buf(response).map_err(|e| format!("response: {e}"))?;
        let mut set = RawDocumentBuf::new();
        set.append("request", request);
        set.append("response", response);
        u.append("$setOnInsert", on_insert);
        u.append("$set", set);
    } else {
        on_insert.append("request", request);
        u.append("$setOnInsert", on_insert);
    }

    let mut statement = RawDocumentBuf::new();
    statement.append("q", q);
    statement.append("u", u);
    statement.append("upsert", true);
    Ok(statement)
}

impl MongoStore {
    /// Connects, checks the server answers (so a bad setup fails at startup), and makes
    /// sure the traffic indexes exist.
    ///
    /// Logs one line saying where it connects (hosts and `db.collection`, never
    /// credentials). When no server answers within the URI's `serverSelectionTimeoutMS`
    /// (else [`DEFAULT_SERVER_SELECTION_TIMEOUT`]), fails with
    /// [`StoreError::MongoUnreachable`], whose message is one line. Dropping the future
    /// cancels the attempt: the client and its monitors go with it.
    pub async fn connect(uri: &str, db: &str, collection: &str) -> Result<Self, StoreError> {
        let described = format!("{}/{db}.{collection}", redact(uri));
        let fail = |source| StoreError::Mongo {
            target: described.clone(),
            source,
        };
        if collection == RECORDINGS {
            return Err(fail(mongodb::error::Error::custom(format!(
                "the traffic collection cannot be named {RECORDINGS:?}: recordings live there"
            ))));
        }
        // Parsed without I/O first, so that the line goes out before any DNS (SRV) lookup.
        let hosts = hosts_of(&ConnectionString::parse(uri).map_err(fail)?);
        tracing::info!("connecting to MongoDB at {hosts} ({db}.{collection})");
        let mut options = ClientOptions::parse(uri).await.map_err(fail)?;
        let waited = *options
            .server_selection_timeout
            .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        let client = Client::with_options(options).map_err(fail)?;
        let unreachable = |source: mongodb::error::Error| {
            if matches!(*source.kind, ErrorKind::ServerSelection { .. }) {
                // The driver's account (each server's state, many lines) is for debugging.
                tracing::debug!(error = %source, "MongoDB server selection failed");
                StoreError::MongoUnreachable {
                    hosts: hosts.clone(),
                    waited: human(waited),
                }
            } else {
                fail(source)
            }
        };
        let database = client.database(db);
        database
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(&unreachable)?;

        let traffic = database.collection::<Document>(collection);
        let recordings = database.collection::<Document>(RECORDINGS);
        // Names are left to the server: an existing index with the same keys and options
        // is then a no-op, whatever created it.
        let unique = IndexModel::builder()
            .keys(doc! { "recordingId": 1, "transactionId": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build();
        let in_order = IndexModel::builder()
            .keys(doc! { "recordingId": 1, "seq": 1 })
            .build();
        traffic
            .create_indexes([unique, in_order])
            .await
            .map_err(&unreachable)?;

        Ok(Self {
            db: database,
            traffic,
            recordings,
            described,
            last_seq: AtomicI64::new(0),
        })
    }

    fn error<'a>(
        &'a self,
        coll: &'a Collection<Document>,
        op: &'a str,
    ) -> impl Fn(mongodb::error::Error) -> StoreError + 'a {
        move |source| StoreError::Mongo {
            target: format!("{}.{} {op}", self.db.name(), coll.name()),
            source,
        }
    }

    async fn count(&self, recording: ObjectId) -> Result<u64, StoreError> {
        self.traffic
            .count_documents(doc! { "recordingId": recording })
            .await
            .map_err(self.error(&self.traffic, "count"))
    }

    async fn with_count(&self, stored: Document) -> Result<Recording, StoreError> {
        let stored: StoredRecording = bson::from_document(stored)
            .map_err(|e| StoreError::Corrupt(format!("recording: {e}")))?;
        let count = self.count(stored.id).await?;
        stored.into_recording(count)
    }

    /// Sets fields of a recording (and `updatedAt`), returning it as it is afterwards.
    async fn set_fields(
        &self,
        id: &str,
        mut set: Document,
    ) -> Result<Option<Recording>, StoreError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        set.insert("updatedAt", to_bson_date(Utc::now()));
        let updated = self
            .recordings
            .find_one_and_update(doc! { "_id": id }, doc! { "$set": set })
            .return_document(ReturnDocument::After)
            .await
            .map_err(self.error(&self.recordings, "update"))?;
        match updated {
            Some(stored) => self.with_count(stored).await.map(Some),
            None => Ok(None),
        }
    }

    /// Sends one `update` command; returns how many statements matched or inserted.
    /// Statements the server rejected are logged (they are the difference to the
    /// number sent).
    async fn send_updates(&self, updates: RawArrayBuf, sent: usize) -> Result<u64, StoreError> {
        let mut command = RawDocumentBuf::new();
        command.append("update", self.traffic.name());
        command.append("updates", updates);
        // Unordered: one rejected document does not stop the rest of the batch.
        command.append("ordered", false);
        let reply = self
            .db
            .run_raw_command(command)
            .await
            .map_err(self.error(&self.traffic, "update"))?;

        let mut rejected = 0;
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors.iter().filter_map(Bson::as_document) {
                // A full disk takes nothing more: the batch failed, whatever was written.
                if int_field(e, "code") == Some(OUT_OF_DISK_SPACE) {
                    return Err(StoreError::MongoFull {
                        target: self.described.clone(),
                        message: e
                            .get_str("errmsg")
                            .unwrap_or("out of disk space")
                            .to_owned(),
                    });
                }
                rejected += 1;
                tracing::warn!(
                    target_collection = %self.described,
                    index = int_field(e, "index").unwrap_or(-1),
                    error = %e.get_str("errmsg").unwrap_or("?"),
                    "traffic document rejected by the server"
                );
            }
        }
        if let Ok(e) = reply.get_document("writeConcernError") {
            // Written, but not yet as durably as the write concern asked.
            tracing::warn!(
                target_collection = %self.described,
                error = %e.get_str("errmsg").unwrap_or("?"),
                "traffic batch write concern error"
            );
        }
        let n = int_field(&reply, "n")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_else(|| sent.saturating_sub(rejected) as u64);
        Ok(n)
    }
}

impl MongoStore {
    /// A recording's traffic whose `seq` matches `seq`, in capture order, `skip` skipped
    /// and at most `limit`, each with its `seq`.
    async fn find_traffic(
        &self,
        recording_id: &str,
        seq: Document,
        skip: u64,
        limit: u64,
    ) -> Result<Vec<(i64, TrafficDoc)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A limit of 0 means "no limit" to MongoDB, and nothing to us.
        let (Some(id), 1..) = (parse_id(recording_id), limit) else {
            return Ok(Vec::new());
        };
        let fail = self.error(&self.traffic, "find");
        let mut cursor = self
            .traffic
            .find(doc! { "recordingId": id, "seq": seq })
            // `seq` alone, so that the {recordingId, seq} index gives the order.
            .sort(doc! { "seq": 1 })
            // The driver refuses a skip past i64; no recording is that long anyway.
            .skip(skip.min(i64::MAX as u64))
            .limit(limit)
            .await
            .map_err(&fail)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(&fail)? {
            let raw = cursor.current();
            let seq = raw.get_i64("seq").map_err(|e| corrupt("traffic", raw, e))?;
            let stored: StoredTraffic =
                bson::from_slice(raw.as_bytes()).map_err(|e| corrupt("traffic", raw, e))?;
            out.push((seq, stored.into_doc()?));
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for MongoStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    async fn create_recording(
        &self,
        name: &str,
        description: &str,
    ) -> Result<Recording, StoreError> {
        // BSON dates hold milliseconds: return what a later read will give.
        let now = Utc::now().trunc_subsecs(3);
        let id = ObjectId::new();
        let stored = doc! {
            "_id": id,
            "name": name,
            "description": description,
            "createdAt": to_bson_date(now),
            "updatedAt": to_bson_date(now),
            "startedAt": Bson::Null,
            "stoppedAt": Bson::Null,
        };
        self.recordings
            .insert_one(stored)
            .await
            .map_err(self.error(&self.recordings, "insert"))?;
        Ok(Recording {
            id: id.to_hex(),
            name: name.to_owned(),
            description: description.to_owned(),
            created_at: now,
            updated_at: now,
            started_at: None,
            stopped_at: None,
            count: 0,
            failure: None,
            accounting: None,
        })
    }

    async fn list_recordings(&self) -> Result<Vec<Recording>, StoreError> {
        let fail = self.error(&self.recordings, "find");
        let mut cursor = self
            .recordings
            .find(doc! {})
            .sort(doc! { "createdAt": 1, "_id": 1 })
            .await
            .map_err(&fail)?;
        let mut stored = Vec::new();
        while cursor.advance().await.map_err(&fail)? {
            let raw = cursor.current();
            let recording: StoredRecording =
                bson::from_slice(raw.as_bytes()).map_err(|e| corrupt("recording", raw, e))?;
            stored.push(recording);
        }
        // One count per recording, all in flight at once: lists are short, and a
        // `$group` over all traffic would read far more than the indexed counts.
        let counts =
            futures_util::future::try_join_all(stored.iter().map(|r| self.count(r.id))).await?;
        stored
            .into_iter()
            .zip(counts)
            .map(|(r, count)| r.into_recording(count))
            .collect()
    }

    async fn get_recording(&self, id: &str) -> Result<Option<Recording>, StoreError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        let stored = self
            .recordings
            .find_one(doc! { "_id": id })
            .await
            .map_err(self.error(&self.recordings, "find"))?;
        match stored {
            Some(stored) => self.with_count(stored).await.map(Some),
            None => Ok(None),
        }
    }

    async fn update_recording(
        &self,
        id: &str,
        patch: &RecordingPatch,
    ) -> Result<Option<Recording>, StoreError> {
        let mut set = Document::new();
        if let Some(name) = &patch.name {
            set.insert("name", name);
        }
        if let Some(description) = &patch.description {
            set.insert("description", description);
        }
        self.set_fields(id, set).await
    }

    async fn mark_recording(
        &self,
        id: &str,
        started_at: Option<DateTime<Utc>>,
        stopped_at: Option<DateTime<Utc>>,
    ) -> Result<Option<Recording>, StoreError> {
        let set = doc! {
            "startedAt": opt_bson_date(started_at),
            "stoppedAt": opt_bson_date(stopped_at),
        };
        self.set_fields(id, set).await
    }

    async fn count_complete(&self, recording_id: &str) -> Result<u64, StoreError> {
        let Some(id) = parse_id(recording_id) else {
            return Ok(0);
        };
        self.traffic
            .count_documents(doc! { "recordingId": id, "response": { "$ne": null } })
            .await
            .map_err(self.error(&self.traffic, "count"))
    }

    async fn delete_recording(&self, id: &str) -> Result<bool, StoreError> {
        let Some(id) = parse_id(id) else {
            return Ok(false);
        };
        // Traffic first: if we stop half-way, what is left is a visible, empty recording
        // that can be deleted again, not traffic nothing points to.
        self.traffic
            .delete_many(doc! { "recordingId": id })
            .await
            .map_err(self.error(&self.traffic, "delete"))?;
        let deleted = self
            .recordings
            .delete_one(doc! { "_id": id })
            .await
            .map_err(self.error(&self.recordings, "delete"))?;
        Ok(deleted.deleted_count > 0)
    }

    /// One `update` command per batch (more only for batches over ~12 MiB). A document
    /// that cannot be stored at all (its recording id is not an ObjectId, a key holds a
    /// NUL byte, the server rejects it) is logged and left out of the returned count;
    /// the rest of the batch is still written. Every statement is an idempotent upsert, so
    /// a batch that failed (or half-failed, when it was split) can simply be sent again.
    async fn write_traffic(&self, docs: &[TrafficDoc]) -> Result<u64, StoreError> {
        if docs.is_empty() {
            return Ok(0);
        }
        let first_seq = reserve_seq(&self.last_seq, docs.len());
        let mut written = 0;
        let mut chunk = RawArrayBuf::new();
        let (mut chunk_len, mut chunk_bytes) = (0, 0);
        for (seq, doc) in (first_seq..).zip(docs) {
            let statement = match upsert_statement(doc, seq) {
                Ok(statement) => statement,
                Err(why) => {
                    tracing::warn!(
                        recording_id = %doc.recording_id,
                        transaction_id = %doc.transaction_id,
                        %why,
                        "traffic document not stored"
                    );
                    continue;
                }
            };
            let size = statement.as_bytes().len();
            if chunk_len > 0
                && (chunk_bytes + size > MAX_COMMAND_BYTES || chunk_len == MAX_STATEMENTS)
            {
                let full = std::mem::replace(&mut chunk, RawArrayBuf::new());
                written += self.send_updates(full, chunk_len).await?;
                (chunk_len, chunk_bytes) = (0, 0);
            }
            chunk.push(RawBson::Document(statement));
            chunk_len += 1;
            chunk_bytes += size;
        }
        if chunk_len > 0 {
            written += self.send_updates(chunk, chunk_len).await?;
        }
        Ok(written)
    }

    async fn traffic_after(
        &self,
        recording_id: &str,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, TrafficDoc)>, StoreError> {
        let after = after.unwrap_or(i64::MIN);
        self.find_traffic(recording_id, doc! { "$gt": after }, 0, limit)
            .await
    }

    async fn traffic(
        &self,
        recording_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<TrafficDoc>, StoreError> {
        let found = self
            .find_traffic(recording_id, doc! { "$gte": i64::MIN }, offset, limit)
            .await?;
        Ok(found.into_iter().map(|(_, doc)| doc).collect())
    }
}

/// Server-free tests. Everything that needs a MongoDB server lives in the integration
/// tests (`tests/it/store.rs`): the conformance suite shared with SQLite, and the checks of
/// documents as stored.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_strictly_increasing_even_in_blocks() {
        let last = AtomicI64::new(0);
        let a = reserve_seq(&last, 1000);
        let b = reserve_seq(&last, 1);
        let c = reserve_seq(&last, 5);
        assert!(b >= a + 1000 && c > b, "{a} {b} {c}");
    }

    #[test]
    fn redact_keeps_hosts_only() {
        assert_eq!(
            redact("mongodb://u:p@h1:1,h2:2/admin?tls=true"),
            "mongodb://h1:1,h2:2"
        );
        assert_eq!(
            redact("mongodb+srv://cluster.example"),
            "mongodb+srv://cluster.example"
        );
    }

    #[test]
    fn hosts_are_named_without_credentials() {
        let conn = ConnectionString::parse("mongodb://u:secret@h1,h2:2/admin?tls=true").unwrap();
        assert_eq!(hosts_of(&conn), "h1:27017,h2:2");
        assert_eq!(human(Duration::from_secs(5)), "5 s");
        assert_eq!(human(Duration::from_millis(200)), "200 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }

    #[test]
    fn dates_are_read_as_dates_or_plain_utc_text() {
        let t = Utc::now().trunc_subsecs(3);
        let as_date = Bson::DateTime(to_bson_date(t));
        assert_eq!(stored_date(&as_date).unwrap(), Some(t));
        let as_text = Bson::String(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        assert_eq!(stored_date(&as_text).unwrap(), Some(t));
        let as_rfc3339 = Bson::String(t.to_rfc3339());
        assert_eq!(stored_date(&as_rfc3339).unwrap(), Some(t));
        // The seed's own example.
        let seed = Bson::String("2015-03-11 00:00:00".into());
        assert_eq!(
            stored_date(&seed).unwrap(),
            Some(DateTime::from_timestamp(1_426_032_000, 0).unwrap())
        );
        assert_eq!(stored_date(&Bson::Null).unwrap(), None);
        assert!(stored_date(&Bson::Int32(1)).is_err());
        assert!(stored_date(&Bson::String("yesterday".into())).is_err());
    }

    /// Port 9 (discard) has no listener here: server selection runs out.
    #[tokio::test]
    async fn an_unreachable_server_is_one_line_without_credentials() {
        let uri =
            "mongodb://user:secret@127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=200";
        let started = std::time::Instant::now();
        let err = MongoStore::connect(uri, "db", "traffic")
            .await
            .err()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the URI's timeout applies"
        );
        assert!(
            matches!(&err, StoreError::MongoUnreachable { hosts, waited }
                if hosts == "127.0.0.1:9" && waited == "200 ms"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot reach MongoDB at 127.0.0.1:9: no server answered within 200 ms"
            ),
            "{text}"
        );
        assert!(!text.contains('\n') && !text.contains("secret"), "{text}");
        assert!(
            std::error::Error::source(&err).is_none(),
            "no dump behind it"
        );
    }

    /// The caller races connecting against the shutdown signal: dropping the future must
    /// end the attempt at once, leaving nothing behind that keeps the runtime busy.
    #[test]
    fn dropping_a_connect_cancels_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        rt.block_on(async {
            let connect = MongoStore::connect("mongodb://127.0.0.1:9/", "db", "traffic");
            let raced = tokio::time::timeout(Duration::from_millis(100), connect).await;
            assert!(raced.is_err(), "still waiting for a server after 100 ms");
        });
        rt.shutdown_timeout(Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_traffic_collection_cannot_be_the_recordings_one() {
        // Refused before any connection is tried.
        let err = MongoStore::connect("mongodb://127.0.0.1:9/", "db", RECORDINGS)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("recordings"), "{err}");
    }
}
