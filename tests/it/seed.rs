//! The seed's distributed setup (issue 4): the seed's `modules.yaml` with Redis and
//! MongoDB. Checked the way programs we do not control see it: a raw Redis subscriber,
//! plain MongoDB driver queries, `ZRANGE` on the live window, and the Redis control
//! channel. Each test has its own channel, key, control channels and database.
//!
//! Where the MongoDB server under test differs from MongoDB, checks adapt only as
//! `harness::mongo::MongoDefects` (the one place those differences are declared) says.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{oid::ObjectId, Bson, Document};
use serde_json::{json, Value};

use crate::harness::seed::{
    api_traffic, counter, create_recording, duplicates, eventually, module_status, next_json,
    numsub, redis_conn, start_recording, stop_recording, subscribe, unique, zrange, ControlClient,
    Seed, TestRedis, SHARED_REDIS_PORT,
};
use crate::harness::{assert_accepts, body, closed_port, wait_refused, Http, TestProxy, Upstream};

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// RFC 3339 UTC with microseconds, as every `createdAt` of a message must be.
fn assert_micros_utc(what: &str, v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{what}: {s:?}: {e}"));
    let fraction = s.split_once('.').map(|(_, f)| f);
    assert!(
        fraction.is_some_and(|f| f.len() == 7 && f.ends_with('Z')),
        "{what}: {s:?} is not UTC with microseconds"
    );
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// The request part of a message without its captured body (the request event is sent
/// before the body has streamed, so only the response event carries it).
fn without_body(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("body");
    v
}

fn path_of(doc: &Document) -> String {
    doc.get_document("request")
        .and_then(|r| r.get_str("path"))
        .unwrap_or_else(|_| panic!("no request.path: {doc}"))
        .to_owned()
}

fn transaction_id(doc: &Document) -> &str {
    doc.get_str("transactionId")
        .unwrap_or_else(|_| panic!("transactionId is not a string: {doc}"))
}

fn status_code(doc: &Document) -> i64 {
    let response = doc
        .get_document("response")
        .unwrap_or_else(|_| panic!("no response document: {doc}"));
    // An integer; u16 codes are Int32 in BSON (and a stand-in may answer Int32 anyway).
    match response.get("statusCode") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("response.statusCode is not an integer: {other:?} in {doc}"),
    }
}

#[tokio::test]
async fn the_seed_modules_yaml_runs_with_its_three_modules() {
    let up = Upstream::start().await;
    let seed = Seed::new(SHARED_REDIS_PORT).await;
    let yaml = seed.modules_yaml();
    // The seed's own spellings, as printed: `TrafficStream`, `mongo_port` as a string.
    assert!(yaml.contains("name: 'TrafficStream',"), "{yaml}");
    assert!(yaml.contains("mongo_port: '27017',"), "{yaml}");
    let proxy = seed.proxy(&up).start().await;

    let r = proxy.mgmt_get("/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status = r.json();
    let modules = status["message"].as_array().unwrap();
    let listed: Vec<(&str, &str, &str)> = modules
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap(),
                m["kind"].as_str().unwrap(),
                m["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("TrafficReader", "pipeline", "running"),
            ("TrafficRecorder", "support", "running"),
            ("TrafficStreamer", "support", "running"),
        ]
    );
    assert_eq!(
        modules[1]["counters"]["store"],
        format!("mongodb://127.0.0.1:27017/{}.traffic", seed.mongo.name())
    );
    // The seed's spelling finds the module too.
    let streamer = module_status(&proxy, "TrafficStream").await;
    assert_eq!(streamer["module"], "TrafficStreamer");

    // Both support modules subscribe to the seed's channel; the control channel listens.
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    assert_eq!(numsub(&mut conn, &seed.channel).await, 2);
    proxy
        .wait_for_log(&["control channel listening", &seed.request_channel])
        .await;
    assert_eq!(numsub(&mut conn, &seed.request_channel).await, 1);

    assert_eq!(Http::new().get(&proxy.url("/hello")).await.status, 200);
}

#[tokio::test]
async fn a_raw_subscriber_sees_seed_format_messages_for_each_exchange() {
    let up = Upstream::new().name("seed-up").run().await;
    let seed = Seed::new(SHARED_REDIS_PORT).await;
    let proxy = seed.proxy(&up).start().await;
    // As `redis-cli SUBSCRIBE`: a plain subscription, no project code.
    let mut sub = subscribe(SHARED_REDIS_PORT, &seed.channel).await;
    let http = Http::new();

    struct Case {
        method: &'static str,
        uri: &'static str,
        path: &'static str,
        args: Value,
        body: &'static str,
        status: u64,
        description: &'static str,
        headers: Vec<(&'static str, &'static str)>,
    }
    let cases = [
        Case {
            method: "GET",
            uri: "/items?a=1&a=2&b=x",
            path: "/items",
            args: json!({ "a": ["1", "2"], "b": ["x"] }),
            body: "",
            status: 200,
            description: "OK",
            headers: vec![("x-test", "one")],
        },
        Case {
            method: "POST",
            uri: "/status/201",
            path: "/status/201",
            args: json!({}),
            body: "hello, seed",
            status: 201,
            description: "Created",
            headers: vec![("content-type", "text/plain")],
        },
        Case {
            method: "DELETE",
            uri: "/status/418?why=teapot",
            path: "/status/418",
            args: json!({ "why": ["teapot"] }),
            body: "",
            status: 418,
            description: "Short And Stout",
            headers: vec![("x-reason", "Short And Stout")],
        },
    ];
    let mut ids = Vec::new();
    for case in &cases {
        let mut req = http::Request::builder()
            .method(case.method)
            .uri(proxy.url(case.uri));
        for (k, v) in &case.headers {
            req = req.header(*k, *v);
        }
        let r = http.send(req.body(body(case.body)).unwrap()).await;
        assert_eq!(u64::from(r.status.as_u16()), case.status);

        // The request event, then the response event with the request again.
        let first = next_json(&mut sub, Duration::from_secs(10))
            .await
            .expect("a request message within 10 s");
        let second = next_json(&mut sub, Duration::from_secs(10))
            .await
            .expect("a response message within 10 s");
        assert_eq!(
            keys(&first),
            ["request", "request_id", "response_id", "transaction_id"],
            "{first}"
        );
        assert_eq!(
            keys(&second),
            [
                "request",
                "request_id",
                "response",
                "response_id",
                "transaction_id"
            ],
            "{second}"
        );
        for id in ["transaction_id", "request_id", "response_id"] {
            assert!(first[id].as_str().is_some_and(|s| !s.is_empty()), "{first}");
            assert_eq!(first[id], second[id], "{id}");
        }
        ids.push(first["transaction_id"].as_str().unwrap().to_owned());

        let request = &first["request"];
        for k in [
            "createdAt",
            "clientProtocol",
            "method",
            "uri",
            "path",
            "args",
            "headers",
        ] {
            assert!(request.get(k).is_some(), "request.{k} missing: {request}");
        }
        assert_micros_utc("request.createdAt", &request["createdAt"]);
        assert_eq!(request["clientProtocol"], "HTTP/1.1");
        assert_eq!(request["method"], case.method);
        assert_eq!(request["uri"], case.uri);
        assert_eq!(request["path"], case.path);
        assert_eq!(request["args"], case.args);
        for (k, v) in &case.headers {
            assert_eq!(request["headers"][*k], json!([v]), "{request}");
        }
        assert_eq!(without_body(&second["request"]), without_body(request));

        let response = &second["response"];
        for k in [
            "createdAt",
            "clientProtocol",
            "statusCode",
            "statusDescription",
            "headers",
        ] {
            assert!(
                response.get(k).is_some(),
                "response.{k} missing: {response}"
            );
        }
        assert_micros_utc("response.createdAt", &response["createdAt"]);
        assert!(
            response["createdAt"].as_str() >= request["createdAt"].as_str(),
            "{second}"
        );
        assert_eq!(response["clientProtocol"], "HTTP/1.1");
        assert_eq!(response["statusCode"].as_u64(), Some(case.status));
        assert_eq!(response["statusDescription"], case.description);
        assert_eq!(response["headers"]["x-upstream"], json!(["seed-up"]));

        // Bodies (beyond the seed, for replay) ride on the response event.
        let captured = &second["request"]["body"];
        assert_eq!(captured["size"].as_u64(), Some(case.body.len() as u64));
        assert_eq!(captured["data"], case.body);
        assert_eq!(captured["truncated"], false);
    }
    assert_eq!(
        duplicates(ids.iter().map(String::as_str)),
        Vec::<&str>::new()
    );
    // Nothing else was published.
    assert!(next_json(&mut sub, Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn a_recording_stores_one_seed_document_per_exchange_in_mongodb() {
    let up = Upstream::start().await;
    let seed = Seed::new(SHARED_REDIS_PORT).await;
    let proxy = seed.proxy(&up).start().await;
    let http = Http::new();
    let began = chrono::Utc::now();

    let id = create_recording(&proxy, "seed recording").await;
    // Before the start: not recorded.
    assert_eq!(http.get(&proxy.url("/outside/before")).await.status, 200);
    start_recording(&proxy, &id).await;
    let mut sub = subscribe(SHARED_REDIS_PORT, &seed.channel).await;

    const N: usize = 12;
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let mut sent = Vec::new();
    for i in 0..N {
        let method = methods[i % methods.len()];
        let (uri, status) = if i % 3 == 2 {
            (format!("/status/201?i={i}"), 201)
        } else {
            (format!("/rec/{i}?i={i}&tag=t"), 200)
        };
        let payload = if method == "POST" || method == "PUT" {
            format!("payload {i}")
        } else {
            String::new()
        };
        let r = http.request(method, &proxy.url(&uri), body(payload)).await;
        assert_eq!(r.status.as_u16(), status);
        sent.push((method.to_owned(), uri, i64::from(status)));
    }
    // Every message delivered a second time (as a redelivery would): no duplicates.
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    for _ in 0..2 * N {
        let m = next_json(&mut sub, Duration::from_secs(10))
            .await
            .expect("the exchange's messages");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&seed.channel)
            .arg(m.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    stop_recording(&proxy, &id).await;
    assert_eq!(http.get(&proxy.url("/outside/after")).await.status, 200);
    let ended = chrono::Utc::now();

    // A plain driver query on mongo_db.mongo_collection.
    let docs = seed.traffic_docs().await;
    assert_eq!(docs.len(), N, "{docs:#?}");
    let mut stored = Vec::new();
    for d in &docs {
        assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))), "{d}");
        seed.mongo.assert_recording_id(d, &id);
        assert!(!transaction_id(d).is_empty(), "{d}");
        match d.get("createdAt") {
            Some(Bson::DateTime(t)) => {
                let t = t.timestamp_millis();
                assert!(
                    t >= began.timestamp_millis() - 1 && t <= ended.timestamp_millis() + 1,
                    "createdAt {t} outside the test: {d}"
                );
            }
            other => panic!("createdAt is not a BSON date: {other:?} in {d}"),
        }
        let request = d.get_document("request").unwrap();
        for k in ["createdAt", "clientProtocol", "method", "uri", "path"] {
            assert!(request.get_str(k).is_ok(), "request.{k}: {d}");
        }
        assert!(request.get_document("args").is_ok(), "{d}");
        assert!(request.get_document("headers").is_ok(), "{d}");
        let response = d.get_document("response").unwrap();
        assert!(response.get_str("statusDescription").is_ok(), "{d}");
        assert!(response.get_document("headers").is_ok(), "{d}");
        stored.push((
            request.get_str("method").unwrap().to_owned(),
            request.get_str("uri").unwrap().to_owned(),
            status_code(d),
        ));
    }
    // `transactionId` is indexed, unique per recording (the server may rename indexes).
    let indexes = seed
        .mongo
        .db
        .collection::<Document>(&seed.collection)
        .list_indexes()
        .await
        .unwrap();
    let indexes: Vec<mongodb::IndexModel> = futures_util::TryStreamExt::try_collect(indexes)
        .await
        .unwrap();
    let unique_by_transaction = indexes.iter().any(|ix| {
        let fields: Vec<&str> = ix.keys.keys().map(String::as_str).collect();
        fields == ["recordingId", "transactionId"]
            && ix.options.as_ref().and_then(|o| o.unique) == Some(true)
    });
    assert!(unique_by_transaction, "{indexes:#?}");

    let sorted = |v: &[(String, String, i64)]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(sorted(&stored), sorted(&sent));
    assert_eq!(
        duplicates(docs.iter().map(transaction_id)),
        Vec::<&str>::new()
    );

    // The recording document beside them, in the seed's shape.
    let recordings = seed.mongo.all("recordings").await;
    assert_eq!(recordings.len(), 1, "{recordings:#?}");
    let rec = &recordings[0];
    assert_eq!(
        rec.get("_id"),
        Some(&Bson::ObjectId(ObjectId::parse_str(&id).unwrap()))
    );
    assert_eq!(rec.get_str("name").unwrap(), "seed recording");
    assert!(
        matches!(rec.get("createdAt"), Some(Bson::DateTime(_))),
        "{rec}"
    );
    for k in ["updatedAt", "startedAt", "stoppedAt"] {
        seed.mongo.assert_set_date(rec, k);
    }

    // The recordings API gives the same traffic, in capture order.
    let api = api_traffic(&proxy, &id).await;
    let api_order: Vec<(String, String)> = api
        .iter()
        .map(|t| {
            (
                t["request"]["method"].as_str().unwrap().to_owned(),
                t["request"]["uri"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let sent_order: Vec<(String, String)> = sent
        .iter()
        .map(|(m, u, _)| (m.clone(), u.clone()))
        .collect();
    assert_eq!(api_order, sent_order);
    let api_ids: BTreeSet<&str> = api
        .iter()
        .map(|t| t["transactionId"].as_str().unwrap())
        .collect();
    let db_ids: BTreeSet<&str> = docs.iter().map(transaction_id).collect();
    assert_eq!(api_ids, db_ids);
    assert!(api.iter().all(|t| t["recordingId"] == id.as_str()));
    let got = proxy.mgmt_get(&format!("/recording/{id}")).await.json();
    if seed.mongo.defects.count_misses_object_ids {
        eprintln!("NOTE: recording count not checked: the server cannot count by ObjectId");
    } else {
        assert_eq!(got["count"], N, "{got}");
    }
    assert!(got["stoppedAt"].is_string(), "{got}");
}

#[tokio::test]
async fn the_sorted_set_holds_one_second_and_get_traffic_reads_it() {
    let up = Upstream::start().await;
    let seed = Seed::new(SHARED_REDIS_PORT).await;
    let proxy = seed.proxy(&up).start().await;
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;

    // Traffic for three seconds, while the set is read again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), proxy.url("/window"));
        tokio::spawn(async move {
            let http = Http::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(http.get(&format!("{url}/{n}")).await.status, 200);
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };
    let started = Instant::now();
    let (mut snapshots, mut last) = (0, Vec::new());
    while started.elapsed() < Duration::from_secs(3) {
        let members = zrange(&mut conn, &seed.key).await;
        if let (Some(oldest), Some(newest)) = (members.first(), members.last()) {
            assert!(
                newest.1 - oldest.1 <= 1_000_000,
                "members {} µs older than the newest ({} members)",
                newest.1 - oldest.1,
                members.len()
            );
            // Scores are microseconds since the epoch (this machine's clock).
            assert!(
                (newest.1 - now_micros()).abs() < 10_000_000,
                "score {} is not now in µs",
                newest.1
            );
            snapshots += 1;
            last = members;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let exchanges = traffic.await.unwrap();
    assert!(snapshots >= 20, "only {snapshots} non-empty snapshots");
    for (member, _) in &last {
        let m: Value = serde_json::from_str(member).expect("members are JSON");
        assert!(m["transaction_id"].is_string(), "{m}");
        assert!(m["request"]["path"].is_string(), "{m}");
    }
    // Three seconds went in; about one stayed.
    let p = &proxy;
    let all_windowed = move || async move {
        let n = counter(p, "TrafficStreamer", "windowed").await;
        (n >= 2 * exchanges).then_some(n)
    };
    let windowed = eventually(
        "every message is windowed",
        Duration::from_secs(10),
        all_windowed,
    )
    .await;
    assert!(
        (last.len() as u64) < windowed,
        "nothing was trimmed: {} members",
        last.len()
    );

    // `GET /traffic?since=` reads the set: an exchange just made is there, whole.
    let http = Http::new();
    let mut cursor = None;
    for attempt in 0..20 {
        let path = format!("/live/{attempt}");
        assert_eq!(http.get(&proxy.url(&path)).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let page = proxy.mgmt_get("/traffic?since=0").await.json();
        let messages = page["messages"].as_array().unwrap();
        assert_eq!(page["count"], messages.len());
        let complete = messages
            .iter()
            .any(|m| m["request"]["path"] == path.as_str() && m["response"].is_object());
        if complete {
            cursor = Some(page["cursor"].as_i64().unwrap());
            break;
        }
    }
    let cursor = cursor.expect("an exchange just made shows in GET /traffic");
    assert!(cursor > 0);

    // A member put in the set by someone else is what the next read returns: the API
    // reads Redis, not a copy of its own.
    let score = now_micros().max(cursor + 1);
    let injected = json!({
        "transaction_id": unique("injected"),
        "request_id": "r",
        "response_id": "s",
        "request": { "createdAt": "2015-03-11T00:00:00.000000Z", "clientProtocol": "HTTP/1.1",
                     "method": "GET", "uri": "/injected", "path": "/injected",
                     "args": {}, "headers": {} },
    });
    let _: i64 = redis::cmd("ZADD")
        .arg(&seed.key)
        .arg(score)
        .arg(injected.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = proxy
        .mgmt_get(&format!("/traffic?since={cursor}"))
        .await
        .json();
    assert_eq!(page["messages"], json!([injected]), "{page}");
    assert_eq!(page["cursor"], score);
    let page = proxy
        .mgmt_get(&format!("/traffic?since={score}"))
        .await
        .json();
    assert_eq!(page["messages"], json!([]), "{page}");
    assert_eq!(page["cursor"], score);
}

#[tokio::test]
async fn the_control_channel_answers_every_operation_with_its_key_and_code() {
    let a = Upstream::new().name("a").run().await;
    let b = Upstream::new().name("b").run().await;
    let seed = Seed::new(SHARED_REDIS_PORT).await;
    let proxy = seed.proxy(&a).start().await;
    let mut ctl = ControlClient::connect(&seed).await;
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    let http = Http::new();

    // status: every module, or the one named.
    let r = ctl.ask("status", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
    let names: Vec<(&str, &str)> = r["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["module"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("TrafficReader", "running"),
            ("TrafficRecorder", "running"),
            ("TrafficStreamer", "running"),
        ]
    );
    assert_eq!(r["proxy"]["bind"], proxy.proxy_addr().to_string());
    let r = ctl.ask("status", json!("TrafficRecorder")).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"].as_array().unwrap().len(), 1);
    let r = ctl.ask("status", json!("Nope")).await;
    assert_eq!(r["code"], 404, "{r}");
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("no module named `Nope`"));

    // reset: counters cleared, the module running again.
    assert_eq!(http.get(&proxy.url("/counted")).await.status, 200);
    let p = &proxy;
    let traffic_seen = move || async move {
        (counter(p, "TrafficRecorder", "received").await >= 2
            && counter(p, "TrafficReader", "published").await >= 2)
            .then_some(())
    };
    eventually(
        "the exchange is counted",
        Duration::from_secs(10),
        traffic_seen,
    )
    .await;
    for module in ["TrafficRecorder", "TrafficReader"] {
        let r = ctl.ask("reset", json!(module)).await;
        assert_eq!(r["code"], 200, "{r}");
        assert_eq!(r["message"]["state"], "running", "{r}");
        let counters = &r["message"]["counters"];
        let cleared = ["received", "recorded", "published", "dropped"]
            .iter()
            .filter_map(|k| counters.get(*k))
            .all(|v| v == 0);
        assert!(cleared, "reset {module} left counters: {r}");
    }
    assert_eq!(counter(&proxy, "TrafficRecorder", "received").await, 0);
    assert_eq!(counter(&proxy, "TrafficReader", "published").await, 0);
    let r = ctl.ask("reset", json!("Nope")).await;
    assert_eq!(r["code"], 404, "{r}");

    // reload: the streamer re-reads modules.yaml; here it moves to another channel.
    let before = module_status(&proxy, "TrafficStreamer").await;
    let original = std::fs::read_to_string(proxy.modules_path()).unwrap();
    let moved = unique("moved");
    let from = format!("redis_sub_queue: '{}'", seed.channel);
    let at = original
        .rfind(&from)
        .expect("the streamer's redis_sub_queue");
    let edited = format!(
        "{}redis_sub_queue: '{moved}'{}",
        &original[..at],
        &original[at + from.len()..]
    );
    std::fs::write(proxy.modules_path(), &edited).unwrap();
    let r = ctl.ask("reload", json!("TrafficStreamer")).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["state"], "running", "{r}");
    assert_ne!(r["message"]["since"], before["since"]);
    assert_eq!(numsub(&mut conn, &moved).await, 1);
    let (c, channel) = (&conn, &seed.channel);
    let old_left =
        move || async move { (numsub(&mut c.clone(), channel).await == 1).then_some(()) };
    eventually(
        "only the recorder is left on the old channel",
        Duration::from_secs(10),
        old_left,
    )
    .await;
    // A file that no longer validates: 400, and the module stays as it was.
    std::fs::write(
        proxy.modules_path(),
        "pipeline: [{name: Nope}]\nsupport: []\n",
    )
    .unwrap();
    let r = ctl.ask("reload", json!("TrafficStreamer")).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("unknown module `Nope`"),
        "{r}"
    );
    assert_eq!(
        module_status(&proxy, "TrafficStreamer").await["state"],
        "running"
    );
    assert_eq!(numsub(&mut conn, &moved).await, 1);
    // The window's key is fixed at startup: a 400 saying so, not a 200 that changes nothing.
    let rekeyed = original.replace(
        &format!("redis_key: '{}'", seed.key),
        &format!("redis_key: '{}'", unique("other-key")),
    );
    assert_ne!(rekeyed, original);
    std::fs::write(proxy.modules_path(), &rekeyed).unwrap();
    let r = ctl.ask("reload", json!("TrafficStreamer")).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("restart to change it"),
        "{r}"
    );
    assert_eq!(numsub(&mut conn, &moved).await, 1);
    std::fs::write(proxy.modules_path(), &original).unwrap();
    let r = ctl.ask("reload", json!("Nope")).await;
    assert_eq!(r["code"], 404, "{r}");

    // stop / start: the listener.
    let r = ctl.ask("stop", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["listening"], false);
    wait_refused(proxy.proxy_addr()).await;
    let r = ctl.ask("start", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["listening"], true);
    assert_eq!(http.get(&proxy.url("/back")).await.status, 200);

    // upstream_port / upstream_host.
    let r = ctl.ask("upstream_port", json!(b.port())).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["upstream"], b.url());
    assert_eq!(http.get(&proxy.url("/which")).await.json()["upstream"], "b");
    let r = ctl.ask("upstream_host", json!("localhost")).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(
        r["message"]["upstream"],
        format!("http://localhost:{}", b.port())
    );
    assert_eq!(http.get(&proxy.url("/which")).await.json()["upstream"], "b");
    for (op, bad) in [
        ("upstream_port", json!(70000)),
        ("upstream_port", json!("x")),
        ("upstream_host", json!("")),
    ] {
        let r = ctl.ask(op, bad).await;
        assert_eq!(r["code"], 400, "{r}");
    }
    let r = ctl.ask("upstream_host", json!("127.0.0.1")).await;
    assert_eq!(r["code"], 200, "{r}");
    let r = ctl.ask("upstream_port", json!(a.port())).await;
    assert_eq!(r["message"]["upstream"], a.url());
    assert_eq!(http.get(&proxy.url("/which")).await.json()["upstream"], "a");

    // bind_port / bind_host: the listener moves.
    let port = closed_port();
    let r = ctl.ask("bind_port", json!(port)).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["bind"], format!("127.0.0.1:{port}"));
    wait_refused(proxy.proxy_addr()).await;
    let moved_url = format!("http://127.0.0.1:{port}");
    assert_eq!(http.get(&format!("{moved_url}/moved")).await.status, 200);
    let r = ctl.ask("bind_host", json!("127.0.0.2")).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["bind"], format!("127.0.0.2:{port}"));
    wait_refused(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let base = format!("http://127.0.0.2:{port}");
    assert_accepts(format!("127.0.0.2:{port}").parse().unwrap()).await;
    let r = ctl.ask("bind_host", json!("nowhere")).await;
    assert_eq!(r["code"], 400, "{r}");
    let r = ctl.ask("bind_port", json!(0)).await;
    assert_eq!(r["code"], 400, "{r}");

    // start_recording / stop_recording.
    let id = create_recording(&proxy, "control").await;
    let other = create_recording(&proxy, "other").await;
    let r = ctl.ask("start_recording", json!(id)).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["id"], id.as_str());
    assert!(r["message"]["startedAt"].is_string(), "{r}");
    for busy in [&id, &other] {
        let r = ctl.ask("start_recording", json!(busy)).await;
        assert_eq!(r["code"], 409, "{r}");
        assert_eq!(r["message"]["status"], "busy");
        assert_eq!(r["message"]["busyWith"], id.as_str());
        assert!(r["message"]["busySince"].is_string(), "{r}");
    }
    assert_eq!(http.get(&format!("{base}/recorded")).await.status, 200);
    let r = ctl.ask("stop_recording", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
    assert!(r["message"]["stoppedAt"].is_string(), "{r}");
    let r = ctl.ask("stop_recording", Value::Null).await;
    assert_eq!(r["code"], 409, "{r}");
    let r = ctl
        .ask("start_recording", json!(ObjectId::new().to_hex()))
        .await;
    assert_eq!(r["code"], 404, "{r}");
    let r = ctl.ask("start_recording", Value::Null).await;
    assert_eq!(r["code"], 400, "{r}");
    let recorded = api_traffic(&proxy, &id).await;
    let paths: Vec<&str> = recorded
        .iter()
        .map(|t| t["request"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/recorded"]);
    assert_eq!(seed.traffic_docs().await.len(), 1);

    // test: the built-in self-test, which never reaches the real upstream.
    let (a_seen, b_seen) = (a.requests().len(), b.requests().len());
    let r = ctl.ask("test", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["message"]["result"], "pass", "{r}");
    assert_eq!((a.requests().len(), b.requests().len()), (a_seen, b_seen));

    // Malformed requests that still have a key: a 400 naming the problem, to that key.
    ctl.publish(r#"{"operation": 5, "key": "bad-1"}"#).await;
    let r = ctl.reply(Duration::from_secs(10)).await.expect("a reply");
    assert_eq!(
        (r["code"].clone(), r["key"].clone()),
        (json!(400), json!("bad-1"))
    );
    assert!(
        r["message"].as_str().unwrap().contains("malformed request"),
        "{r}"
    );
    ctl.publish(r#"{"param": 1, "key": {"n": [1, "x"]}}"#).await;
    let r = ctl.reply(Duration::from_secs(10)).await.expect("a reply");
    assert_eq!(r["key"], json!({"n": [1, "x"]}));
    assert_eq!(r["code"], 400);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("missing field `operation`"),
        "{r}"
    );
    // Without a key there is no one to answer: a log line, and the channel goes on.
    ctl.publish("{not json").await;
    proxy
        .wait_for_log(&["malformed request without a key", "{not json"])
        .await;
    // An unknown operation.
    let r = ctl.ask("explode", json!(1)).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown operation `explode`"),
        "{r}"
    );
    // Still serving; nothing was answered twice or left unanswered.
    let r = ctl.ask("status", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
    assert!(ctl.reply(Duration::from_millis(300)).await.is_none());
}

/// Redis goes away mid-run and comes back: no client request waits or fails, publishing,
/// the control channel and recording resume, and the gap is counted in status.
#[tokio::test]
async fn a_redis_outage_costs_no_request_and_recording_resumes() {
    let mut redis = TestRedis::start().await;
    let up = Upstream::start().await;
    let seed = Seed::new(redis.port).await;
    let proxy = seed.proxy(&up).start().await;
    let http = Http::new();
    let id = create_recording(&proxy, "outage").await;
    start_recording(&proxy, &id).await;

    let mut requests = 0u64;
    for i in 0..5 {
        assert_eq!(
            http.get(&proxy.url(&format!("/before/{i}"))).await.status,
            200
        );
        requests += 1;
    }
    let (s, p) = (&seed, &proxy);
    let stored_before = move || async move {
        let docs = s.traffic_docs().await;
        let complete = docs.iter().filter(|d| d.get_document("response").is_ok());
        (complete.count() == 5).then_some(())
    };
    eventually(
        "5 exchanges are stored",
        Duration::from_secs(20),
        stored_before,
    )
    .await;
    let windowed_before = counter(&proxy, "TrafficStreamer", "windowed").await;

    redis.kill();
    const DURING: u64 = 20;
    let mut slowest = Duration::ZERO;
    for i in 0..DURING {
        let t = Instant::now();
        let r = http.get(&proxy.url(&format!("/during/{i}"))).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        requests += 1;
        // Spread over 1.5 s, so every side fails to reconnect a few times meanwhile.
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?} while Redis was down"
    );
    // Status answers while Redis is down, and shows what could not be published.
    let drops_counted = move || async move {
        (counter(p, "TrafficReader", "dropped").await >= 2 * DURING).then_some(())
    };
    eventually(
        "the reader counts drops",
        Duration::from_secs(10),
        drops_counted,
    )
    .await;

    redis.restart().await;
    // Publish until an exchange made after the restart is stored: every side reconnects
    // on its own, with backoff.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    loop {
        assert_eq!(
            http.get(&proxy.url(&format!("/after/{after}")))
                .await
                .status,
            200
        );
        after += 1;
        requests += 1;
        let docs = seed.traffic_docs().await;
        if docs.iter().any(|d| path_of(d).starts_with("/after/")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recording did not resume within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more exchange, now that the feed is healed, is stored whole.
    let last = format!("/after/{after}");
    assert_eq!(http.get(&proxy.url(&last)).await.status, 200);
    requests += 1;
    stop_recording(&proxy, &id).await;

    let docs = seed.traffic_docs().await;
    let paths: Vec<String> = docs.iter().map(path_of).collect();
    for i in 0..5 {
        assert!(paths.contains(&format!("/before/{i}")), "{paths:?}");
    }
    assert!(paths.contains(&last), "{paths:?}");
    let whole = docs.iter().find(|d| path_of(d) == last).unwrap();
    assert_eq!(status_code(whole), 200);
    // Published while Redis was down: gone (and counted below), not invented.
    assert!(
        !paths.iter().any(|p| p.starts_with("/during/")),
        "{paths:?}"
    );
    assert_eq!(
        duplicates(docs.iter().map(transaction_id)),
        Vec::<&str>::new()
    );

    // Every message is accounted for as published or dropped.
    let accounted = move || async move {
        let s = module_status(p, "TrafficReader").await;
        let (p, d) = (
            s["counters"]["published"].as_u64().unwrap(),
            s["counters"]["dropped"].as_u64().unwrap(),
        );
        (p + d == 2 * requests).then_some((p, d))
    };
    let (published, dropped) = eventually(
        "every message is accounted for",
        Duration::from_secs(10),
        accounted,
    )
    .await;
    assert!(dropped >= 2 * DURING, "dropped {dropped}");
    assert!(published >= 2 * 5 + 2, "published {published}");
    // The subscribers say their feed had a gap.
    for module in ["TrafficRecorder", "TrafficStreamer"] {
        let s = module_status(&proxy, module).await;
        assert!(
            s["counters"]["gaps"].as_u64() >= Some(1),
            "{module} shows no gap: {s}"
        );
        assert_eq!(s["state"], "running", "{s}");
        // Nothing failed: Redis was back before anything else was written.
        assert_eq!(s["counters"]["failed"], 0, "{s}");
    }
    assert!(counter(&proxy, "TrafficStreamer", "windowed").await > windowed_before);
    // Logged once per outage, not per message.
    let stderr = proxy.stderr();
    let count = |text: &str| stderr.lines().filter(|l| l.contains(text)).count();
    assert_eq!(
        count("Redis feed publisher lost its connection"),
        1,
        "{stderr}"
    );
    assert_eq!(count("Redis feed publisher reconnected"), 1, "{stderr}");
    // One subscription each for the recorder and the streamer, one for the control
    // channel: each logs one error when cut off and one info when restored.
    let count_on = |text: &str, channel: &str| {
        stderr
            .lines()
            .filter(|l| l.contains(text) && l.contains(channel))
            .count()
    };
    for (channel, n) in [(&seed.channel, 2), (&seed.request_channel, 1)] {
        assert_eq!(
            count_on("Redis subscription lost its connection", channel),
            n,
            "{stderr}"
        );
        assert_eq!(
            count_on("Redis subscription restored", channel),
            n,
            "{stderr}"
        );
    }

    // The control channel is back too.
    let mut ctl = ControlClient::connect(&seed).await;
    let r = ctl.ask("status", Value::Null).await;
    assert_eq!(r["code"], 200, "{r}");
}

/// Two proxies publish to one channel; a third process with only the support modules and
/// an empty pipeline records both into one recording.
#[tokio::test]
async fn two_proxies_one_recorder_one_recording() {
    let up_a = Upstream::new().name("a").run().await;
    let up_b = Upstream::new().name("b").run().await;
    let seed = Seed::new(SHARED_REDIS_PORT).await;
    let recorder = TestProxy::builder()
        .upstream(&up_a)
        .config_yaml(&seed.settings_yaml())
        .modules_yaml(&seed.support_only_yaml())
        .start()
        .await;
    let proxies = [
        TestProxy::builder()
            .upstream(&up_a)
            .config_yaml(&seed.settings_yaml())
            .modules_yaml(&seed.reader_only_yaml())
            .start()
            .await,
        TestProxy::builder()
            .upstream(&up_b)
            .config_yaml(&seed.settings_yaml())
            .modules_yaml(&seed.reader_only_yaml())
            .start()
            .await,
    ];
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    assert_eq!(numsub(&mut conn, &seed.channel).await, 2);
    let modules: Vec<Value> = recorder.mgmt_get("/status").await.json()["message"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = modules
        .iter()
        .map(|m| m["module"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["TrafficRecorder", "TrafficStreamer"]);

    let id = create_recording(&recorder, "two proxies").await;
    start_recording(&recorder, &id).await;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for (name, proxy) in ["a", "b"].iter().zip(&proxies) {
        let url = proxy.proxy_url();
        let name = name.to_string();
        tasks.push(tokio::spawn(async move {
            let http = Http::new();
            for i in 0..EACH {
                let r = http.get(&format!("{url}/{name}/{i}")).await;
                assert_eq!(r.status, 200);
                assert_eq!(r.json()["upstream"], name.as_str());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop_recording(&recorder, &id).await;

    let docs = seed.traffic_docs().await;
    let mut by_path: HashMap<String, &Document> = HashMap::new();
    for d in &docs {
        seed.mongo.assert_recording_id(d, &id);
        assert!(by_path.insert(path_of(d), d).is_none(), "twice: {d}");
    }
    for name in ["a", "b"] {
        for i in 0..EACH {
            let d = by_path
                .get(&format!("/{name}/{i}"))
                .unwrap_or_else(|| panic!("/{name}/{i} not recorded"));
            let upstream = d
                .get_document("response")
                .and_then(|r| r.get_document("headers"))
                .and_then(|h| h.get_array("x-upstream"))
                .unwrap_or_else(|_| panic!("no response x-upstream: {d}"));
            assert_eq!(upstream, &vec![Bson::String(name.into())]);
        }
    }
    assert_eq!(docs.len(), 2 * EACH);
    assert_eq!(
        duplicates(docs.iter().map(transaction_id)),
        Vec::<&str>::new()
    );
    let api = api_traffic(&recorder, &id).await;
    assert_eq!(api.len(), 2 * EACH);
    let published: u64 = {
        let mut n = 0;
        for p in &proxies {
            n += counter(p, "TrafficReader", "published").await;
        }
        n
    };
    assert_eq!(published, (4 * EACH) as u64);
    assert_eq!(counter(&recorder, "TrafficRecorder", "lost").await, 0);
}
