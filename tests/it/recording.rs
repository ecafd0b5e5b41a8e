//! Recording on the embedded default: recordings created, started and stopped through the
//! management API; the traffic documents the real proxy stores for real exchanges; what
//! survives a restart and a kill -9.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::Response;
use serde_json::{json, Value};

use crate::harness::recordings::{
    all_traffic, counter, counters, create_recording, get_recording, start_recording,
    stop_recording, traffic_page, wait_counter,
};
use crate::harness::upstream::Seen;
use crate::harness::{body, Http, Resp, TestProxy, Upstream};

/// Capture limit set through the modules file, small so that bodies get cut.
const BODY_LIMIT: usize = 64;

/// The default modules, with TrafficReader's capture limited to [`BODY_LIMIT`].
fn modules_with_body_limit() -> String {
    format!(
        "pipeline:\n  - name: TrafficReader\n    kwargs: {{ body_limit: {BODY_LIMIT} }}\n\
         support:\n  - name: TrafficRecorder\n  - name: TrafficStreamer\n"
    )
}

const LARGE: &str = "0123456789";
fn large_body() -> String {
    LARGE.repeat(20)
}

fn binary_body() -> Vec<u8> {
    // 0xff is never valid UTF-8.
    (0..40u8).map(|i| i.wrapping_mul(37) | 0x80).collect()
}

/// An upstream whose answers the test knows byte for byte.
async fn recording_upstream() -> Upstream {
    Upstream::new()
        .route("/text", |_| {
            Response::builder()
                .header("content-type", "text/plain")
                .body(Bytes::from_static(b"plain text answer\n"))
                .unwrap()
        })
        .route("/upload", |seen: &Seen| {
            let len = seen.body.as_ref().map_or(0, Bytes::len);
            let mut r = Response::builder()
                .status(201)
                .body(Bytes::from(format!("stored {len} bytes")))
                .unwrap();
            r.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::try_from("Made It".to_owned()).unwrap());
            r
        })
        .route("/binary", |_| Response::new(Bytes::from(binary_body())))
        .route("/empty", |_| {
            Response::builder().status(204).body(Bytes::new()).unwrap()
        })
        .route("/large", |_| Response::new(Bytes::from(large_body())))
        .run()
        .await
}

/// One exchange the test sends and what it expects to find stored.
struct Sent {
    method: &'static str,
    uri: String,
    path: &'static str,
    args: Value,
    body: Vec<u8>,
    status: u16,
    reason: &'static str,
}

/// The `i`th exchange of the round trip: five kinds of method, query, body and answer.
fn exchange(i: usize) -> Sent {
    match i % 5 {
        0 => Sent {
            method: if i == 5 { "HEAD" } else { "GET" },
            uri: format!("/text?i={i}&tag=a&tag=b&sp=x%20y"),
            path: "/text",
            args: json!({ "i": [i.to_string()], "tag": ["a", "b"], "sp": ["x y"] }),
            body: Vec::new(),
            status: 200,
            reason: "OK",
        },
        1 => Sent {
            method: "POST",
            uri: format!("/upload?i={i}"),
            path: "/upload",
            args: json!({ "i": [i.to_string()] }),
            body: format!("text body #{i}: ünïcödé ✓").into_bytes(),
            status: 201,
            reason: "Made It",
        },
        2 => Sent {
            method: "PUT",
            uri: format!("/binary?i={i}&empty="),
            path: "/binary",
            args: json!({ "i": [i.to_string()], "empty": [""] }),
            body: vec![0xff, 0xfe, 0x00, i as u8, 0x80],
            status: 200,
            reason: "OK",
        },
        3 => Sent {
            method: "DELETE",
            uri: format!("/empty?i={i}"),
            path: "/empty",
            args: json!({ "i": [i.to_string()] }),
            body: Vec::new(),
            status: 204,
            reason: "No Content",
        },
        _ => Sent {
            method: "PATCH",
            uri: format!("/large?i={i}&x=1&x=2&x=3"),
            path: "/large",
            args: json!({ "i": [i.to_string()], "x": ["1", "2", "3"] }),
            body: "abcdefghij".repeat(10).into_bytes(),
            status: 200,
            reason: "OK",
        },
    }
}

async fn send(http: &Http, proxy: &TestProxy, i: usize, sent: &Sent) -> Resp {
    let req = http::Request::builder()
        .method(sent.method)
        .uri(proxy.url(&sent.uri))
        .header("x-seq", i.to_string())
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(body(sent.body.clone()))
        .unwrap();
    http.send(req).await
}

/// What a body captured under `limit` must look like.
fn capture_of(bytes: &[u8], limit: usize) -> Value {
    let kept = &bytes[..bytes.len().min(limit)];
    let (encoding, data) = match std::str::from_utf8(kept) {
        Ok(text) => ("utf8", text.to_owned()),
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(kept),
        ),
    };
    json!({
        "size": bytes.len(),
        "truncated": bytes.len() > limit,
        "encoding": encoding,
        "data": data,
    })
}

/// RFC 3339, UTC, with exactly six fractional digits; returns the time.
fn micros_utc(v: &Value) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected a timestamp, got {v}"));
    let frac = s
        .strip_suffix('Z')
        .and_then(|s| s.rsplit_once('.'))
        .map(|(_, f)| f);
    assert!(
        frac.is_some_and(|f| f.len() == 6 && f.bytes().all(|b| b.is_ascii_digit())),
        "`{s}` is not RFC 3339 UTC with microseconds"
    );
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

fn paths(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["request"]["path"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_recording_stores_each_exchange_with_its_fields_in_capture_order() {
    const N: usize = 25;
    let up = recording_upstream().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&modules_with_body_limit())
        .start()
        .await;
    let id = create_recording(&proxy, "round trip", "25 mixed exchanges").await;
    let started = start_recording(&proxy, &id).await;
    assert_eq!(started["id"], id);
    assert!(started["stoppedAt"].is_null(), "{started}");
    let started_at = time(&started["startedAt"]);

    let http = Http::new();
    let mut answers = Vec::new();
    for i in 0..N {
        let sent = exchange(i);
        let r = send(&http, &proxy, i, &sent).await;
        assert_eq!(r.status.as_u16(), sent.status, "exchange {i}: {}", r.text());
        answers.push(r);
    }
    let stopped = stop_recording(&proxy, &id).await;
    assert_eq!(stopped["count"], N, "{stopped}");
    let stopped_at = time(&stopped["stoppedAt"]);

    let docs = all_traffic(&proxy, &id).await;
    assert_eq!(docs.len(), N, "{docs:#?}");
    let mut transactions = std::collections::HashSet::new();
    let mut previous = started_at;
    for (i, (doc, answer)) in docs.iter().zip(&answers).enumerate() {
        let sent = exchange(i);
        let req = &doc["request"];
        let resp = &doc["response"];
        let ctx = format!("document {i}: {doc:#}");
        assert_eq!(doc["recordingId"], id, "{ctx}");
        let txn = doc["transactionId"].as_str().expect("transactionId");
        assert!(
            !txn.is_empty() && transactions.insert(txn.to_owned()),
            "{ctx}"
        );

        // Capture order, inside the recording's span.
        let created = micros_utc(&doc["createdAt"]);
        assert_eq!(created, micros_utc(&req["createdAt"]), "{ctx}");
        assert!(created >= previous && created <= stopped_at, "{ctx}");
        previous = created;

        assert_eq!(req["clientProtocol"], "HTTP/1.1", "{ctx}");
        assert_eq!(req["method"], sent.method, "{ctx}");
        assert_eq!(req["uri"], sent.uri, "{ctx}");
        assert_eq!(req["path"], sent.path, "{ctx}");
        assert_eq!(req["args"], sent.args, "{ctx}");
        assert_eq!(req["headers"]["x-seq"], json!([i.to_string()]), "{ctx}");
        assert_eq!(req["headers"]["x-multi"], json!(["one", "two"]), "{ctx}");
        assert_eq!(
            req["headers"]["host"],
            json!([proxy.proxy_addr().to_string()]),
            "{ctx}"
        );
        assert_eq!(req["body"], capture_of(&sent.body, BODY_LIMIT), "{ctx}");

        assert!(micros_utc(&resp["createdAt"]) >= created, "{ctx}");
        assert_eq!(resp["clientProtocol"], "HTTP/1.1", "{ctx}");
        assert_eq!(resp["statusCode"], sent.status, "{ctx}");
        assert_eq!(resp["statusDescription"], sent.reason, "{ctx}");
        assert_eq!(resp["headers"]["x-upstream"], json!(["upstream"]), "{ctx}");
        assert_eq!(resp["body"], capture_of(&answer.body, BODY_LIMIT), "{ctx}");
    }
    // The kinds the test meant to cover really were covered.
    assert_eq!(docs[0]["response"]["body"]["data"], "plain text answer\n");
    assert_eq!(docs[1]["request"]["body"]["encoding"], "utf8");
    assert_eq!(docs[2]["request"]["body"]["encoding"], "base64");
    assert_eq!(docs[2]["response"]["body"]["encoding"], "base64");
    assert_eq!(docs[3]["response"]["body"]["size"], 0);
    assert_eq!(docs[4]["request"]["body"]["truncated"], true);
    assert_eq!(docs[4]["request"]["body"]["size"], 100);
    assert_eq!(docs[4]["response"]["body"]["truncated"], true);
    assert_eq!(docs[4]["response"]["body"]["size"], large_body().len());
    assert_eq!(docs[5]["request"]["method"], "HEAD");
    assert_eq!(docs[5]["response"]["body"]["size"], 0);

    // The recording, alone and in the list, counts them.
    let rec = get_recording(&proxy, &id).await;
    assert_eq!(rec["count"], N);
    assert_eq!(rec["name"], "round trip");
    assert_eq!(rec["description"], "25 mixed exchanges");
    assert_eq!(time(&rec["startedAt"]), started_at);
    assert_eq!(time(&rec["stoppedAt"]), stopped_at);
    let list = proxy.mgmt_get("/recording").await.json();
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["recordings"][0]["id"], id);
    assert_eq!(list["recordings"][0]["count"], N);

    // Pages follow the capture order; `offset` is how many.
    let page = traffic_page(&proxy, &id, 0, 10).await;
    assert_eq!(page["traffic"].as_array().unwrap()[..], docs[..10]);
    assert_eq!(
        (page["count"].clone(), page["offset"].clone()),
        (json!(N), json!(10))
    );
    let page = traffic_page(&proxy, &id, 10, 10).await;
    assert_eq!(page["traffic"].as_array().unwrap()[..], docs[10..20]);
    let page = traffic_page(&proxy, &id, 20, 10).await;
    assert_eq!(page["traffic"].as_array().unwrap()[..], docs[20..]);
    assert_eq!(
        (page["start"].clone(), page["offset"].clone()),
        (json!(20), json!(5))
    );
    let page = traffic_page(&proxy, &id, N as u64, 10).await;
    assert_eq!(page["traffic"], json!([]));
    let r = proxy
        .mgmt_get(&format!("/recording/{id}/traffic?start=x"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn only_exchanges_between_start_and_stop_are_stored_and_one_runs_at_a_time() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "one", "").await;
    let other = create_recording(&proxy, "two", "").await;

    for i in 0..3 {
        assert_eq!(
            http.get(&proxy.url(&format!("/before/{i}"))).await.status,
            200
        );
    }
    let r = proxy
        .mgmt_post("/recording/000000000000000000000000/start", json!(null))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let started = start_recording(&proxy, &id).await;
    for i in 0..3 {
        assert_eq!(
            http.get(&proxy.url(&format!("/during/{i}"))).await.status,
            200
        );
    }

    // Busy: the other, and this one again.
    for which in [&other, &id] {
        let r = proxy
            .mgmt_post(&format!("/recording/{which}/start"), json!(null))
            .await;
        assert_eq!(r.status, 409, "{}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "busy", "{body}");
        assert_eq!(body["busyWith"], id, "{body}");
        assert_eq!(body["busySince"], started["startedAt"], "{body}");
    }
    let r = proxy
        .mgmt_post("/recording/000000000000000000000000/start", json!(null))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Stopping one that is not running.
    let r = proxy
        .mgmt_post(&format!("/recording/{other}/stop"), json!(null))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());

    stop_recording(&proxy, &id).await;
    let ignored = counter(&counters(&proxy, "TrafficRecorder").await, "ignored");
    for i in 0..3 {
        assert_eq!(
            http.get(&proxy.url(&format!("/after/{i}"))).await.status,
            200
        );
    }
    let r = proxy
        .mgmt_post(&format!("/recording/{id}/stop"), json!(null))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = proxy
        .mgmt_post("/recording/000000000000000000000000/stop", json!(null))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The recorder has seen the six messages after the stop and filed none of them.
    wait_counter(&proxy, "TrafficRecorder", "ignored", ignored + 6).await;
    let docs = all_traffic(&proxy, &id).await;
    assert_eq!(paths(&docs), ["/during/0", "/during/1", "/during/2"]);
    assert_eq!(get_recording(&proxy, &id).await["count"], 3);
    assert_eq!(get_recording(&proxy, &other).await["count"], 0);

    // The control operations do the same by id.
    let r = proxy
        .mgmt_post(
            "/control",
            json!({ "operation": "start_recording", "param": other }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["id"], other);
    let r = proxy
        .mgmt_post(
            "/control",
            json!({ "operation": "start_recording", "param": id }),
        )
        .await;
    assert_eq!(r.json()["code"], 409, "{}", r.text());
    assert_eq!(r.json()["message"]["busyWith"], other, "{}", r.text());
    assert_eq!(http.get(&proxy.url("/by-operation")).await.status, 200);
    let r = proxy
        .mgmt_post("/control", json!({ "operation": "stop_recording" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["count"], 1, "{}", r.text());
    let r = proxy
        .mgmt_post("/control", json!({ "operation": "stop_recording" }))
        .await;
    assert_eq!(r.json()["code"], 409, "{}", r.text());
    let r = proxy
        .mgmt_post(
            "/control",
            json!({ "operation": "start_recording", "param": "nope" }),
        )
        .await;
    assert_eq!(r.json()["code"], 404, "{}", r.text());
    assert_eq!(paths(&all_traffic(&proxy, &other).await), ["/by-operation"]);
}

#[tokio::test]
async fn update_delete_and_a_restart_keep_what_they_should() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "first", "desc one").await;
    let kept = create_recording(&proxy, "kept", "").await;
    let created = get_recording(&proxy, &id).await;
    start_recording(&proxy, &id).await;
    for i in 0..3 {
        assert_eq!(http.get(&proxy.url(&format!("/r/{i}"))).await.status, 200);
    }
    stop_recording(&proxy, &id).await;

    let r = proxy
        .mgmt_put(
            &format!("/recording/{id}"),
            json!({ "name": "renamed", "description": "desc two" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let updated = r.json();
    assert_eq!(
        (updated["name"].clone(), updated["description"].clone()),
        (json!("renamed"), json!("desc two"))
    );
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert!(time(&updated["updatedAt"]) > time(&created["updatedAt"]));
    let r = proxy
        .mgmt_put(
            &format!("/recording/{id}"),
            json!({ "description": "only this" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "renamed");
    assert_eq!(r.json()["description"], "only this");
    for bad in [json!({ "name": "" }), json!({ "bogus": 1 })] {
        let r = proxy.mgmt_put(&format!("/recording/{id}"), bad).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let r = proxy
        .mgmt_put(
            "/recording/000000000000000000000000",
            json!({ "name": "x" }),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    let mut before = get_recording(&proxy, &id).await;
    let traffic_before = all_traffic(&proxy, &id).await;
    assert_eq!(traffic_before.len(), 3);
    // The accounting is of the run that served the traffic: a new process has none.
    let accounting = before["accounting"].take();
    assert_eq!(accounting["served"], 3, "{accounting}");
    before.as_object_mut().unwrap().remove("accounting");

    let proxy = proxy.restart().await;
    assert_eq!(get_recording(&proxy, &id).await, before);
    assert_eq!(all_traffic(&proxy, &id).await, traffic_before);
    let list = proxy.mgmt_get("/recording").await.json();
    assert_eq!(list["count"], 2, "{list}");

    let r = proxy.mgmt_delete(&format!("/recording/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = proxy.mgmt_get(&format!("/recording/{id}")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = proxy.mgmt_get(&format!("/recording/{id}/traffic")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = proxy.mgmt_delete(&format!("/recording/{id}")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let list = proxy.mgmt_get("/recording").await.json();
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["recordings"][0]["id"], kept);

    // Deleted means gone from the file too, not only hidden: a restart does not bring it back.
    let proxy = proxy.restart().await;
    let r = proxy.mgmt_get(&format!("/recording/{id}")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(sqlite_traffic_rows(&proxy, &id), 0);
}

/// Rows of a recording's traffic in the store's file (the API cannot show orphaned rows).
fn sqlite_traffic_rows(proxy: &TestProxy, id: &str) -> i64 {
    let file = proxy.dir().join("data").join("heliosburn.sqlite3");
    assert!(file.is_file(), "no store file at {}", file.display());
    let conn =
        rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM traffic WHERE recording_id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// A proxy stopped with SIGTERM while a recording runs: what it captured is kept, and the
/// recording reads as stopped afterwards, not as running.
#[tokio::test]
async fn a_restart_while_recording_keeps_the_traffic_and_ends_the_recording() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "interrupted", "").await;
    start_recording(&proxy, &id).await;
    for i in 0..4 {
        assert_eq!(http.get(&proxy.url(&format!("/r/{i}"))).await.status, 200);
    }
    let proxy = proxy.restart().await;
    let rec = get_recording(&proxy, &id).await;
    assert_eq!(rec["count"], 4, "{rec}");
    assert!(
        rec["stoppedAt"].is_string(),
        "the recording looks as if it still ran: {rec}"
    );
    assert!(time(&rec["stoppedAt"]) >= time(&rec["startedAt"]), "{rec}");
    // Stopped by the shutdown itself, not found interrupted by the next start.
    assert!(
        !proxy.stderr().contains("interrupted"),
        "{}",
        proxy.stderr()
    );
    // Nothing runs: the proxy records nothing until a recording is started again.
    assert_eq!(http.get(&proxy.url("/after")).await.status, 200);
    wait_counter(&proxy, "TrafficRecorder", "ignored", 2).await;
    assert_eq!(get_recording(&proxy, &id).await["count"], 4);
    let r = proxy
        .mgmt_post(&format!("/recording/{id}/stop"), json!(null))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    start_recording(&proxy, &id).await;
}

/// kill -9 while recording: the recorder writes every 20 ms (or 1000 documents), so
/// exchanges answered 200 ms before the kill are all on disk.
#[tokio::test]
async fn kill_9_loses_at_most_the_last_batch() {
    const N: usize = 30;
    let up = Upstream::start().await;
    let mut proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "killed", "").await;
    start_recording(&proxy, &id).await;
    for i in 0..N {
        let r = http
            .request(
                "POST",
                &proxy.url(&format!("/k/{i}")),
                body(format!("body {i}")),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    // Written (recorded counts messages: a request and a response each), then killed.
    wait_counter(&proxy, "TrafficRecorder", "recorded", 2 * N as u64).await;
    proxy.signal("KILL");
    let status = proxy.wait().await;
    assert!(!status.success(), "{status}");

    let proxy = proxy.again().start().await;
    let docs = all_traffic(&proxy, &id).await;
    let expected: Vec<String> = (0..N).map(|i| format!("/k/{i}")).collect();
    assert_eq!(paths(&docs), expected);
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d["response"]["statusCode"], 200, "{d}");
        assert_eq!(d["request"]["body"]["data"], format!("body {i}"), "{d}");
    }
    // It no longer runs, and says so: stopped at its last capture (or the last start
    // of a transaction the spool holds, which may come after it).
    let rec = get_recording(&proxy, &id).await;
    assert_eq!(rec["count"], N);
    assert!(
        rec["stoppedAt"].is_string(),
        "still reads as running: {rec}"
    );
    let last = time(&docs[N - 1]["response"]["createdAt"]);
    let stopped = time(&rec["stoppedAt"]);
    assert!(
        stopped >= last && stopped - last < chrono::Duration::seconds(5),
        "{rec}"
    );
    assert!(proxy.stderr().contains("interrupted"), "{}", proxy.stderr());
    assert_eq!(Http::new().get(&proxy.url("/after")).await.status, 200);
    wait_counter(&proxy, "TrafficRecorder", "ignored", 2).await;
    assert_eq!(get_recording(&proxy, &id).await["count"], N);
    start_recording(&proxy, &id).await;
}

/// The `test` operation is the proxy talking to itself: while a recording runs, its
/// exchange is neither recorded nor shown in the live window.
#[tokio::test]
async fn the_self_test_is_not_recorded() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "with a self-test", "").await;
    start_recording(&proxy, &id).await;
    assert_eq!(http.get(&proxy.url("/real/1")).await.status, 200);
    let r = proxy.mgmt_post("/test", json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["result"], "pass");
    let r = proxy
        .mgmt_post("/control", json!({ "operation": "test" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http.get(&proxy.url("/real/2")).await.status, 200);
    let live = proxy.mgmt_get("/traffic?since=0").await.json();
    stop_recording(&proxy, &id).await;

    assert_eq!(
        paths(&all_traffic(&proxy, &id).await),
        ["/real/1", "/real/2"]
    );
    let live_paths: Vec<&str> = live["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["request"]["path"].as_str().unwrap())
        .collect();
    assert!(
        !live_paths.contains(&"/selftest"),
        "the self-test is in the live window: {live_paths:?}"
    );
}

/// An exchange that began while the recording ran belongs to it, even when its response
/// comes after the stop; one that begins after the stop does not.
#[tokio::test]
async fn an_exchange_in_flight_at_the_stop_is_filed_complete_in_its_recording() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "late response", "").await;
    start_recording(&proxy, &id).await;
    let slow = {
        let url = proxy.url("/sleep/400");
        tokio::spawn(async move { Http::new().get(&url).await.status })
    };
    // The request has reached the upstream, which holds its answer back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !up.requests().iter().any(|s| s.path == "/sleep/400") {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = stop_recording(&proxy, &id).await;
    assert_eq!(
        stopped["count"], 1,
        "the request message is filed at the stop"
    );
    assert_eq!(Http::new().get(&proxy.url("/after")).await.status, 200);
    assert_eq!(slow.await.unwrap(), 200);

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let docs = loop {
        let docs = all_traffic(&proxy, &id).await;
        if docs.iter().all(|d| !d["response"].is_null()) || std::time::Instant::now() > deadline {
            break docs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(paths(&docs), ["/sleep/400"]);
    assert_eq!(docs[0]["response"]["statusCode"], 200, "{:#}", docs[0]);
}

#[tokio::test]
async fn deleting_the_running_recording_stops_it_first() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "doomed", "").await;
    let next = create_recording(&proxy, "next", "").await;
    start_recording(&proxy, &id).await;
    assert_eq!(http.get(&proxy.url("/doomed")).await.status, 200);
    let r = proxy.mgmt_delete(&format!("/recording/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        proxy.mgmt_get(&format!("/recording/{id}")).await.status,
        404
    );
    // Nothing runs any more: another one starts.
    start_recording(&proxy, &next).await;
    assert_eq!(http.get(&proxy.url("/next")).await.status, 200);
    stop_recording(&proxy, &next).await;
    // The stop wrote everything the recorder had received, the doomed one's included.
    assert_eq!(paths(&all_traffic(&proxy, &next).await), ["/next"]);
    assert_eq!(sqlite_traffic_rows(&proxy, &id), 0);
}

/// HTTP/2 clients are recorded as such, and an exchange the upstream never answered is
/// recorded with the 502 the client got.
#[tokio::test]
async fn h2c_exchanges_and_upstream_errors_are_recorded_as_the_client_saw_them() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "protocols", "").await;
    start_recording(&proxy, &id).await;
    let r = Http::h2c().get(&proxy.url("/over-h2?q=1")).await;
    assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2));
    let r = Http::new().get(&proxy.url("/reset")).await;
    assert_eq!(r.status, 502);
    stop_recording(&proxy, &id).await;

    let docs = all_traffic(&proxy, &id).await;
    assert_eq!(paths(&docs), ["/over-h2", "/reset"]);
    let h2 = &docs[0];
    assert_eq!(h2["request"]["clientProtocol"], "HTTP/2.0", "{h2:#}");
    assert_eq!(h2["response"]["clientProtocol"], "HTTP/2.0", "{h2:#}");
    assert_eq!(h2["request"]["args"], json!({ "q": ["1"] }), "{h2:#}");
    let failed = &docs[1];
    assert_eq!(failed["response"]["statusCode"], 502, "{failed:#}");
    assert_eq!(
        failed["response"]["statusDescription"], "Bad Gateway",
        "{failed:#}"
    );
    assert_eq!(
        failed["response"]["body"]["data"],
        r.text(),
        "the recorded body is not what the client got: {failed:#}"
    );
}

/// Starts racing each other: exactly one wins, the others are told who did.
#[tokio::test]
async fn of_concurrent_starts_exactly_one_wins() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(create_recording(&proxy, &format!("racer {i}"), "").await);
    }
    let url = proxy.mgmt_url();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (url, id) = (url.clone(), id.clone());
            tokio::spawn(async move {
                Http::new()
                    .json("POST", &format!("{url}/recording/{id}/start"), None)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut busy_with = Vec::new();
    for (id, t) in ids.iter().zip(tasks) {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => winners.push(id.clone()),
            409 => busy_with.push(r.json()["busyWith"].as_str().unwrap().to_owned()),
            other => panic!("start {id}: {other} {}", r.text()),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(busy_with.iter().all(|b| *b == winners[0]), "{busy_with:?}");
    let running: Vec<Value> = proxy.mgmt_get("/recording").await.json()["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["startedAt"].is_string())
        .cloned()
        .collect();
    assert_eq!(running.len(), 1, "{running:#?}");
    assert_eq!(running[0]["id"], winners[0]);
}

/// `body_limit: 0` turns capture off: documents carry no bodies.
#[tokio::test]
async fn body_limit_0_records_no_bodies() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(
            "pipeline:\n  - name: TrafficReader\n    kwargs: { body_limit: 0 }\n\
             support:\n  - name: TrafficRecorder\n  - name: TrafficStreamer\n",
        )
        .start()
        .await;
    let id = create_recording(&proxy, "no bodies", "").await;
    start_recording(&proxy, &id).await;
    let r = Http::new()
        .request("POST", &proxy.url("/echo-body"), body("some body"))
        .await;
    assert_eq!(r.text(), "some body");
    stop_recording(&proxy, &id).await;
    let docs = all_traffic(&proxy, &id).await;
    assert_eq!(docs.len(), 1);
    assert!(docs[0]["request"].get("body").is_none(), "{:#}", docs[0]);
    assert!(docs[0]["response"].get("body").is_none(), "{:#}", docs[0]);
    assert_eq!(docs[0]["response"]["statusCode"], 200);
}
