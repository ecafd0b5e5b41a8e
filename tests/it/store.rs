//! The store conformance suite: the same assertions over `&dyn Store` for SQLite (a temp
//! directory) and MongoDB (a database of the test's own, see `harness::mongo`), so the
//! backends cannot drift apart. Each check runs once per backend, as
//! `store::sqlite::NAME` and `store::mongo::NAME`.
//!
//! After it: what only one backend has (MongoDB documents as another tool sees them, the
//! unique index), and the binary's start against a store it cannot use (MongoDB down, a
//! data directory another heliosburn holds). SQLite's file-level behaviour (WAL, 0600,
//! the lock, the schema version) needs no server and is unit-tested in `src/store/sqlite.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use heliosburn::store::mongo::{MongoStore, RECORDINGS};
use heliosburn::store::sqlite::SqliteStore;
use heliosburn::store::{RecordingPatch, Store};
use heliosburn::traffic::{
    query_multimap, timestamp, BodyCapture, MultiMap, Recording, RequestInfo, ResponseInfo,
    TrafficDoc,
};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};

use crate::harness::mongo::{MongoDefects, TestMongo};
use crate::harness::TempDir;

// ---------------------------------------------------------------------------------------
// The subject of a check: one store, and what a reopen needs

enum Backend {
    Sqlite(TempDir),
    Mongo(TestMongo),
}

struct Subject {
    /// `None` only while `reopen` swaps it.
    store: Option<Box<dyn Store>>,
    backend: Backend,
}

impl Subject {
    async fn sqlite() -> Self {
        let dir = TempDir::new("store");
        let store = SqliteStore::open(dir.path()).unwrap();
        Self {
            store: Some(Box::new(store)),
            backend: Backend::Sqlite(dir),
        }
    }

    async fn mongo() -> Self {
        let mongo = TestMongo::new().await;
        let store = mongo.store("traffic").await;
        Self {
            store: Some(Box::new(store)),
            backend: Backend::Mongo(mongo),
        }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("a store")
    }

    /// Closes the store and opens it again on the same directory or database, as a
    /// restart does.
    async fn reopen(&mut self) {
        drop(self.store.take());
        let store: Box<dyn Store> = match &self.backend {
            Backend::Sqlite(dir) => Box::new(SqliteStore::open(dir.path()).unwrap()),
            Backend::Mongo(mongo) => Box::new(mongo.store("traffic").await),
        };
        self.store = Some(store);
    }

    fn defects(&self) -> MongoDefects {
        match &self.backend {
            Backend::Sqlite(_) => MongoDefects::default(),
            Backend::Mongo(mongo) => mongo.defects,
        }
    }

    /// The document as this backend gives it back: BSON dates hold milliseconds, SQLite
    /// keeps the message's microseconds.
    fn as_stored(&self, mut doc: TrafficDoc) -> TrafficDoc {
        if let Backend::Mongo(_) = self.backend {
            doc.created_at = doc.created_at.trunc_subsecs(3);
        }
        doc
    }

    /// The recording's `count`; where the server cannot count by ObjectId
    /// ([`MongoDefects::count_misses_object_ids`]), its documents as pages give them.
    async fn assert_count(&self, recording_id: &str, expected: u64) {
        let store = self.store();
        let recording = store.get_recording(recording_id).await.unwrap().unwrap();
        if self.defects().count_misses_object_ids {
            let all = store.traffic(recording_id, 0, u64::MAX).await.unwrap();
            assert_eq!(all.len() as u64, expected, "documents of {recording_id}");
        } else {
            assert_eq!(recording.count, expected, "count of {recording_id}");
        }
    }
}

/// A document as the recorder would make it; `body_len` bytes of request body, which
/// (as TrafficReader sends them) only the response event's copy of the request carries.
fn doc(recording_id: &str, txn: &str, with_response: bool, body_len: usize) -> TrafficDoc {
    // Microseconds, as the message's timestamps carry.
    let now = Utc::now().trunc_subsecs(6);
    let mut headers = MultiMap::new();
    headers.insert("host", ["example.test"]);
    headers.insert("accept", ["*/*"]);
    let body =
        (body_len > 0).then(|| BodyCapture::from_bytes(&vec![b'x'; body_len], body_len as u64));
    TrafficDoc {
        recording_id: recording_id.to_owned(),
        transaction_id: txn.to_owned(),
        created_at: now,
        request: Arc::new(RequestInfo {
            created_at: timestamp(now),
            client_protocol: "HTTP/1.1".into(),
            method: "POST".into(),
            uri: format!("/items/{txn}?a=1"),
            path: format!("/items/{txn}"),
            args: query_multimap(Some("a=1")),
            headers: headers.clone(),
            body: if with_response { body } else { None },
        }),
        response: with_response.then(|| {
            Arc::new(ResponseInfo {
                created_at: timestamp(now),
                client_protocol: "HTTP/1.1".into(),
                status_code: 201,
                status_description: "Created".into(),
                headers,
                body: None,
                trailers: None,
                web_socket_messages: None,
            })
        }),
    }
}

/// One `#[tokio::test]` per check and backend: `store::sqlite::NAME`, `store::mongo::NAME`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&mut super::Subject::sqlite().await).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&mut super::Subject::mongo().await).await;
                }
            )*
        }
    };
}

conformance!(
    upsert_completes_and_never_duplicates,
    pages_follow_capture_order,
    delete_removes_the_traffic_and_counts_follow,
    list_orders_by_creation_and_counts,
    update_and_mark_change_only_what_they_name,
    unknown_ids_name_nothing,
    reopening_keeps_the_data,
    an_empty_batch_writes_nothing,
    a_page_past_the_end_is_empty,
    keyset_pages_follow_capture_order,
);

// ---------------------------------------------------------------------------------------
// The checks

async fn upsert_completes_and_never_duplicates(s: &mut Subject) {
    let store = s.store();
    let rec = store.create_recording("r", "d").await.unwrap();
    // The request message has no body yet; the response message brings the request
    // again, with its body.
    let completed = doc(&rec.id, "t1", true, 10);
    let mut request_only = TrafficDoc {
        response: None,
        ..completed.clone()
    };
    Arc::make_mut(&mut request_only.request).body = None;
    let other = doc(&rec.id, "t2", false, 0);

    let sent = [request_only.clone(), other.clone()];
    assert_eq!(store.write_traffic(&sent).await.unwrap(), 2);
    // In one batch: the request redelivered, the response, the response again.
    let again = [request_only.clone(), completed.clone(), completed.clone()];
    assert_eq!(store.write_traffic(&again).await.unwrap(), 3);
    // In batches of their own: the response once more, then a late request event, which
    // must not erase the response nor the body.
    for late in [&completed, &request_only, &other] {
        store
            .write_traffic(std::slice::from_ref(late))
            .await
            .unwrap();
    }

    // The first write fixed createdAt; the response (with its copy of the request, which
    // carries the body) completed it.
    let expected = TrafficDoc {
        request: completed.request.clone(),
        response: completed.response.clone(),
        ..request_only
    };
    let got = store.traffic(&rec.id, 0, 100).await.unwrap();
    assert_eq!(got, vec![s.as_stored(expected), s.as_stored(other)]);
    assert!(got[0].request.body.is_some());
    s.assert_count(&rec.id, 2).await;
    // Of the two, one is complete (t2 never got its response); the stand-in counts
    // nothing by an ObjectId.
    let complete = match s.defects().count_misses_object_ids {
        true => 0,
        false => 1,
    };
    assert_eq!(store.count_complete(&rec.id).await.unwrap(), complete);
    assert_eq!(
        store
            .count_complete("000000000000000000000000")
            .await
            .unwrap(),
        0
    );
}

async fn pages_follow_capture_order(s: &mut Subject) {
    let store = s.store();
    let rec = store.create_recording("r", "").await.unwrap();
    // Names that sort the other way round, so an order by id would show.
    let names: Vec<String> = (0..10).map(|i| format!("t{}", 9 - i)).collect();
    let requests: Vec<_> = names.iter().map(|n| doc(&rec.id, n, false, 0)).collect();
    store.write_traffic(&requests[..4]).await.unwrap();
    store.write_traffic(&requests[4..]).await.unwrap();
    // Responses arrive in reverse: completing must not move a document.
    let responses: Vec<_> = names
        .iter()
        .rev()
        .map(|n| doc(&rec.id, n, true, 0))
        .collect();
    store.write_traffic(&responses).await.unwrap();

    let all = store.traffic(&rec.id, 0, 100).await.unwrap();
    let order: Vec<_> = all.iter().map(|d| d.transaction_id.clone()).collect();
    assert_eq!(order, names);
    assert!(all.iter().all(|d| d.response.is_some()));
    assert!(all.iter().all(|d| d.recording_id == rec.id));
    let page = store.traffic(&rec.id, 3, 4).await.unwrap();
    let order: Vec<_> = page.iter().map(|d| d.transaction_id.as_str()).collect();
    assert_eq!(order, ["t6", "t5", "t4", "t3"]);
    let tail = store.traffic(&rec.id, 8, 5).await.unwrap();
    let order: Vec<_> = tail.iter().map(|d| d.transaction_id.as_str()).collect();
    assert_eq!(order, ["t1", "t0"]);
    assert!(store.traffic(&rec.id, 10, 5).await.unwrap().is_empty());
    assert!(store.traffic(&rec.id, 0, 0).await.unwrap().is_empty());
    assert_eq!(store.traffic(&rec.id, 0, u64::MAX).await.unwrap().len(), 10);
    s.assert_count(&rec.id, 10).await;
}

/// Reading after a position gives the same order as by offset, page after page, and a
/// recording's pages never hold another recording's documents.
async fn keyset_pages_follow_capture_order(s: &mut Subject) {
    let store = s.store();
    let rec = store.create_recording("r", "").await.unwrap();
    let other = store.create_recording("o", "").await.unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("t{}", 9 - i)).collect();
    for (i, n) in names.iter().enumerate() {
        store
            .write_traffic(&[doc(&rec.id, n, false, 0)])
            .await
            .unwrap();
        if i % 3 == 0 {
            let o = format!("o{i}");
            store
                .write_traffic(&[doc(&other.id, &o, false, 0)])
                .await
                .unwrap();
        }
    }
    // Completing a document keeps its place.
    store
        .write_traffic(&[doc(&rec.id, "t5", true, 0)])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.traffic_after(&rec.id, after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        for (pos, d) in &page {
            assert!(after.is_none_or(|a| *pos > a), "positions go up");
            assert_eq!(d.recording_id, rec.id);
            seen.push(d.transaction_id.clone());
            after = Some(*pos);
        }
    }
    assert_eq!(seen, names);
    assert!(store
        .traffic_after(&rec.id, None, 0)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .traffic_after("no-such-recording", None, 5)
        .await
        .unwrap()
        .is_empty());
}

async fn delete_removes_the_traffic_and_counts_follow(s: &mut Subject) {
    let store = s.store();
    let gone = store.create_recording("gone", "").await.unwrap();
    let kept = store.create_recording("kept", "").await.unwrap();
    let docs = [
        doc(&gone.id, "a", true, 0),
        doc(&gone.id, "b", false, 0),
        doc(&kept.id, "a", true, 0),
    ];
    assert_eq!(store.write_traffic(&docs).await.unwrap(), 3);
    s.assert_count(&gone.id, 2).await;
    s.assert_count(&kept.id, 1).await;

    assert!(store.delete_recording(&gone.id).await.unwrap());
    assert!(!store.delete_recording(&gone.id).await.unwrap());
    assert!(store.get_recording(&gone.id).await.unwrap().is_none());
    assert!(store.traffic(&gone.id, 0, 10).await.unwrap().is_empty());
    let left = store.traffic(&kept.id, 0, 10).await.unwrap();
    assert_eq!(left, vec![s.as_stored(docs[2].clone())]);
    let list = store.list_recordings().await.unwrap();
    let ids: Vec<_> = list.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [kept.id.as_str()]);
    s.assert_count(&kept.id, 1).await;
}

async fn list_orders_by_creation_and_counts(s: &mut Subject) {
    let store = s.store();
    assert!(store.list_recordings().await.unwrap().is_empty());
    let first = store.create_recording("first", "one").await.unwrap();
    let second = store.create_recording("second", "two").await.unwrap();
    store
        .write_traffic(&[doc(&second.id, "a", false, 0)])
        .await
        .unwrap();
    let list = store.list_recordings().await.unwrap();
    let names: Vec<_> = list.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    if !s.defects().count_misses_object_ids {
        let counts: Vec<_> = list.iter().map(|r| r.count).collect();
        assert_eq!(counts, [0, 1]);
    }
    // What create returned is what a read gives.
    assert_eq!(list[0], first);
    assert_eq!(
        store.get_recording(&first.id).await.unwrap().unwrap(),
        first
    );
    assert_eq!(
        (first.created_at, first.started_at, first.stopped_at),
        (first.updated_at, None, None)
    );
    // The same id shape on every backend, so clients need not care which one runs.
    assert!(ObjectId::parse_str(&first.id).is_ok(), "{}", first.id);
    assert_ne!(first.id, second.id);
}

async fn update_and_mark_change_only_what_they_name(s: &mut Subject) {
    let store = s.store();
    let rec = store.create_recording("name", "desc").await.unwrap();

    let description = RecordingPatch {
        name: None,
        description: Some("new".into()),
    };
    let updated = store
        .update_recording(&rec.id, &description)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.description.as_str()),
        ("name", "new")
    );
    assert!(updated.updated_at >= rec.updated_at);
    assert_eq!(updated.created_at, rec.created_at);
    let name = RecordingPatch {
        name: Some("renamed".into()),
        description: None,
    };
    let renamed = store
        .update_recording(&rec.id, &name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.description.as_str()),
        ("renamed", "new")
    );

    // Milliseconds: what every backend keeps.
    let start = Utc::now().trunc_subsecs(3);
    let marked = store
        .mark_recording(&rec.id, Some(start), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((marked.started_at, marked.stopped_at), (Some(start), None));
    let stop = start + chrono::Duration::seconds(2);
    let marked = store
        .mark_recording(&rec.id, Some(start), Some(stop))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (marked.started_at, marked.stopped_at),
        (Some(start), Some(stop))
    );
    assert_eq!(
        (marked.name.as_str(), marked.created_at),
        ("renamed", rec.created_at)
    );
    assert_eq!(store.get_recording(&rec.id).await.unwrap().unwrap(), marked);
    let cleared = store
        .mark_recording(&rec.id, None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cleared.started_at, cleared.stopped_at), (None, None));
    assert_eq!(
        store.get_recording(&rec.id).await.unwrap().unwrap(),
        cleared
    );
}

async fn unknown_ids_name_nothing(s: &mut Subject) {
    let store = s.store();
    let rec = store.create_recording("kept", "").await.unwrap();
    store
        .write_traffic(&[doc(&rec.id, "a", true, 0)])
        .await
        .unwrap();
    let patch = RecordingPatch {
        name: Some("x".into()),
        description: None,
    };
    let unknown = ObjectId::new().to_hex();
    for bad in ["nope", "", "0123456789abcdef0123456z", unknown.as_str()] {
        assert!(store.get_recording(bad).await.unwrap().is_none(), "{bad:?}");
        assert!(store.update_recording(bad, &patch).await.unwrap().is_none());
        assert!(store
            .mark_recording(bad, None, None)
            .await
            .unwrap()
            .is_none());
        assert!(!store.delete_recording(bad).await.unwrap(), "{bad:?}");
        assert!(store.traffic(bad, 0, 10).await.unwrap().is_empty());
    }
    // Nothing happened to the recording that exists.
    let list = store.list_recordings().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "kept");
    s.assert_count(&rec.id, 1).await;
}

async fn reopening_keeps_the_data(s: &mut Subject) {
    let rec = s
        .store()
        .create_recording("kept", "across restarts")
        .await
        .unwrap();
    let written = doc(&rec.id, "a", true, 100);
    s.store()
        .write_traffic(std::slice::from_ref(&written))
        .await
        .unwrap();
    s.reopen().await;
    let again = s.store().get_recording(&rec.id).await.unwrap().unwrap();
    assert_eq!(
        again,
        Recording {
            count: again.count,
            ..rec.clone()
        }
    );
    s.assert_count(&rec.id, 1).await;
    let traffic = s.store().traffic(&rec.id, 0, 10).await.unwrap();
    assert_eq!(traffic, vec![s.as_stored(written)]);
    // A store opened again (indexes already there) writes as before.
    s.store()
        .write_traffic(&[doc(&rec.id, "b", false, 0)])
        .await
        .unwrap();
    s.assert_count(&rec.id, 2).await;
}

async fn an_empty_batch_writes_nothing(s: &mut Subject) {
    assert_eq!(s.store().write_traffic(&[]).await.unwrap(), 0);
    let described = s.store().describe();
    let scheme = match s.backend {
        Backend::Sqlite(_) => "sqlite:",
        Backend::Mongo(_) => "mongodb://",
    };
    assert!(described.starts_with(scheme), "{described}");
}

async fn a_page_past_the_end_is_empty(s: &mut Subject) {
    let store = s.store();
    let rec = store.create_recording("far", "").await.unwrap();
    store
        .write_traffic(&[doc(&rec.id, "t1", true, 1)])
        .await
        .unwrap();
    for start in [1, 1 << 40, (1 << 63) + 5, u64::MAX] {
        let page = store.traffic(&rec.id, start, 10).await.unwrap();
        assert!(page.is_empty(), "{start}");
    }
}

// ---------------------------------------------------------------------------------------
// MongoDB only: the documents as another program reading the database sees them

mod mongo_only {
    use super::*;

    fn int(doc: &Document, key: &str) -> Option<i64> {
        match doc.get(key)? {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            _ => None,
        }
    }

    #[tokio::test]
    async fn stored_documents_have_the_seed_bson_types() {
        let mongo = TestMongo::new().await;
        let store = mongo.store("traffic").await;
        let rec = store.create_recording("typed", "d").await.unwrap();
        store
            .write_traffic(&[doc(&rec.id, "t1", true, 5)])
            .await
            .unwrap();

        let traffic = mongo.all("traffic").await;
        assert_eq!(traffic.len(), 1);
        let stored = &traffic[0];
        assert!(
            matches!(stored.get("_id"), Some(Bson::ObjectId(_))),
            "{stored}"
        );
        mongo.assert_recording_id(stored, &rec.id);
        assert_eq!(stored.get_str("transactionId").unwrap(), "t1");
        assert!(
            matches!(stored.get("createdAt"), Some(Bson::DateTime(_))),
            "{stored}"
        );
        assert!(int(stored, "seq").is_some(), "{stored}");
        let request = stored.get_document("request").unwrap();
        assert_eq!(request.get_str("method").unwrap(), "POST");
        assert!(request.get_str("createdAt").is_ok());
        assert!(request.get_document("headers").is_ok());
        assert_eq!(
            request.get_document("body").unwrap().get_str("data"),
            Ok("xxxxx")
        );
        let response = stored.get_document("response").unwrap();
        assert_eq!(int(response, "statusCode"), Some(201), "{response}");
        assert_eq!(response.get_str("statusDescription").unwrap(), "Created");

        let rec_oid = ObjectId::parse_str(&rec.id).unwrap();
        let recordings = mongo.all(RECORDINGS).await;
        assert_eq!(recordings.len(), 1);
        let recording = &recordings[0];
        assert_eq!(recording.get("_id"), Some(&Bson::ObjectId(rec_oid)));
        assert_eq!(recording.get_str("name").unwrap(), "typed");
        assert_eq!(recording.get_str("description").unwrap(), "d");
        for key in ["createdAt", "updatedAt"] {
            assert!(
                matches!(recording.get(key), Some(Bson::DateTime(_))),
                "{key}: {recording}"
            );
        }
        assert_eq!(recording.get("startedAt"), Some(&Bson::Null));
        assert_eq!(recording.get("stoppedAt"), Some(&Bson::Null));

        // Marked: the times are dates too.
        let now = Utc::now();
        store
            .mark_recording(&rec.id, Some(now), Some(now))
            .await
            .unwrap()
            .unwrap();
        let recording = &mongo.all(RECORDINGS).await[0];
        for key in ["updatedAt", "startedAt", "stoppedAt"] {
            mongo.assert_set_date(recording, key);
        }
    }

    #[tokio::test]
    async fn the_unique_index_allows_one_document_per_transaction() {
        let mongo = TestMongo::new().await;
        let store = mongo.store("traffic").await;
        let rec = store.create_recording("r", "").await.unwrap();
        store
            .write_traffic(&[doc(&rec.id, "t1", false, 0)])
            .await
            .unwrap();

        let coll = mongo.db.collection::<Document>("traffic");
        let cursor = coll.list_indexes().await.unwrap();
        let indexes: Vec<mongodb::IndexModel> = futures_util::TryStreamExt::try_collect(cursor)
            .await
            .unwrap();
        let unique = indexes
            .iter()
            .find(|i| i.keys == doc! { "recordingId": 1, "transactionId": 1 })
            .unwrap_or_else(|| panic!("no {{recordingId, transactionId}} index: {indexes:?}"));
        assert_eq!(unique.options.as_ref().and_then(|o| o.unique), Some(true));
        assert!(
            indexes
                .iter()
                .any(|i| i.keys == doc! { "recordingId": 1, "seq": 1 }),
            "no {{recordingId, seq}} index: {indexes:?}"
        );

        // Another writer (a second recorder) inserting the same transaction is refused.
        let stored = &mongo.all("traffic").await[0];
        let duplicate = doc! {
            "recordingId": stored.get("recordingId").unwrap().clone(),
            "transactionId": "t1",
        };
        let err = coll.insert_one(duplicate).await.expect_err("refused");
        assert!(
            matches!(
                *err.kind,
                mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref e))
                    if e.code == 11000
            ),
            "{err}"
        );
        assert_eq!(mongo.all("traffic").await.len(), 1);
        // Connecting again keeps the indexes (same keys and options: a no-op).
        drop(store);
        let again = mongo.store("traffic").await;
        assert_eq!(again.traffic(&rec.id, 0, 10).await.unwrap().len(), 1);
    }

    /// A document whose recording id is not an ObjectId cannot be stored in the seed's
    /// shape: it is left out (and logged), not fatal to the rest of its batch.
    #[tokio::test]
    async fn a_recording_id_that_is_no_object_id_is_left_out_of_its_batch() {
        let mongo = TestMongo::new().await;
        let store = mongo.store("traffic").await;
        let rec = store.create_recording("r", "").await.unwrap();
        let mixed = [doc("nope", "x", false, 0), doc(&rec.id, "y", false, 0)];
        assert_eq!(store.write_traffic(&mixed).await.unwrap(), 1);
        let stored = mongo.all("traffic").await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].get_str("transactionId").unwrap(), "y");

        // Deleting the recording leaves no document behind in the collection.
        assert!(store.delete_recording(&rec.id).await.unwrap());
        assert!(mongo.all("traffic").await.is_empty());
        assert!(mongo.all(RECORDINGS).await.is_empty());
    }

    #[tokio::test]
    async fn the_traffic_collection_cannot_be_the_recordings_one() {
        let mongo = TestMongo::new().await;
        let uri = crate::harness::mongo::mongo_uri();
        let err = MongoStore::connect(&uri, mongo.name(), RECORDINGS)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("recordings"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// The binary against a store it cannot use

/// A new user's setup: the seed's recorder kwargs, MongoDB not running. The start must
/// fail in seconds (not the driver's 30 s), say in one line what it tried to reach, and
/// print no topology dump.
#[test]
fn mongodb_down_at_startup_fails_in_seconds_with_one_line() {
    let dir = TempDir::new("mongo-down");
    let port = crate::harness::closed_port();
    let modules = dir.write(
        "modules.yaml",
        &format!(
            "pipeline: []\nsupport:\n  [ {{ name: 'TrafficRecorder', kwargs: {{ \
             mongo_host: '127.0.0.1', mongo_port: '{port}', mongo_db: 'proxy', \
             mongo_collection: 'traffic' }} }} ]\n"
        ),
    );
    let data = dir.path().join("data");
    let started = Instant::now();
    let out = crate::harness::run_to_end(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--bind",
        "127.0.0.1:0",
        "--mgmt",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}; stderr:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "no ready line");
    let reaching = format!("connecting to MongoDB at 127.0.0.1:{port} (proxy.traffic)");
    assert!(stderr.contains(&reaching), "{stderr}");
    let why = format!(
        "cannot reach MongoDB at 127.0.0.1:{port}: no server answered within 5 s; is it running?"
    );
    assert!(
        stderr.lines().any(|l| l.contains(&why)),
        "no line with {why:?}:\n{stderr}"
    );
    for line in stderr.lines() {
        assert!(line.len() <= 300, "a {} char line:\n{line}", line.len());
    }
}

/// Two proxies on one `--data-dir` would interleave their writes to one SQLite file: the
/// second must refuse to start, saying why, and the first must not notice.
#[tokio::test]
async fn a_second_instance_on_the_data_dir_exits_and_the_first_keeps_serving() {
    let up = crate::harness::Upstream::new().run().await;
    let first = crate::harness::TestProxy::start(&up).await;
    let data = first.dir().join("data");

    let out = tokio::task::spawn_blocking(move || {
        crate::harness::run_to_end(&[
            "--upstream",
            "http://127.0.0.1:9",
            "--bind",
            "127.0.0.1:0",
            "--mgmt",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready line: {stderr}");
    let dir = first.dir().join("data");
    let why = format!(
        "the data directory {} is in use by another heliosburn (pass another --data-dir)",
        dir.display()
    );
    assert!(stderr.contains(&why), "{stderr}");

    // The first still proxies, and records.
    let r = first
        .mgmt_post("/recording", serde_json::json!({"name": "still"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = crate::harness::Http::new()
        .request("GET", &first.url("/ping"), crate::harness::body(""))
        .await;
    assert_eq!(r.status, 200);
}
