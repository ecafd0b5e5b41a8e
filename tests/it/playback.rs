//! Playback (issue 9, item 5): a recording answers requests itself, as `heliosburn serve`
//! with the upstream gone, and as the TrafficPlayback module in a pipeline (bodies
//! matched, misses forwarded).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use crate::harness::recordings::{create_recording, start_recording, stop_recording};
use crate::harness::{body, wait_refused, Http, Resp, TempDir, TestProxy, Upstream};

async fn post(http: &Http, url: &str, json: &str) -> Resp {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(body(json.to_owned()))
        .unwrap();
    http.send(req).await
}

#[tokio::test]
async fn serve_answers_a_recorded_sequence_with_the_upstream_gone() {
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = attempts.clone();
    let avatar: Vec<u8> = (0..=255u8).rev().collect();
    let served = avatar.clone();
    let up = Upstream::new()
        .route("/login", move |_| {
            // The first attempt fails, the next succeed: a sequence to play back.
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Response::builder()
                    .status(401)
                    .header("content-type", "application/json")
                    .body(Bytes::from_static(br#"{"error":"bad password"}"#))
                    .unwrap()
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .header("x-session", "s-1")
                    .body(Bytes::from_static(br#"{"welcome":"ada"}"#))
                    .unwrap()
            }
        })
        .route("/me", |_| {
            Response::builder()
                .header("content-type", "application/json")
                .body(Bytes::from_static(br#"{"name":"Ada"}"#))
                .unwrap()
        })
        .route("/avatar", move |_| {
            Response::builder()
                .header("content-type", "image/png")
                .body(Bytes::from(served.clone()))
                .unwrap()
        })
        .run()
        .await;
    let dir = Arc::new(TempDir::new("playback"));
    let mut proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .start()
        .await;
    let id = create_recording(&proxy, "login", "").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();
    // The password is recorded redacted; playback matches whatever it is.
    let tried = r#"{"user":"ada","password":"first try"}"#;
    assert_eq!(post(&http, &proxy.url("/login"), tried).await.status, 401);
    let right = r#"{"user":"ada","password":"s3cret"}"#;
    assert_eq!(post(&http, &proxy.url("/login"), right).await.status, 200);
    assert_eq!(http.get(&proxy.url("/me?a=1&b=2")).await.status, 200);
    assert_eq!(http.get(&proxy.url("/avatar")).await.body, avatar);
    stop_recording(&proxy, &id).await;
    proxy.sigterm();
    assert!(proxy.wait().await.success());
    let gone = up.addr();
    drop(up);
    wait_refused(gone).await;

    let mock = TestProxy::builder()
        .command(&["serve", &id, "--match-body"])
        .data_dir(dir.clone())
        .start()
        .await;
    assert!(
        mock.ready_line().contains(" -> none,"),
        "{}",
        mock.ready_line()
    );
    assert_eq!(mock.mgmt_get("/proxy").await.json()["upstream"], "none");
    let login = |n: &str| format!("{}{n}", mock.proxy_url());
    let ada = r#"{"password":"whatever","user":"ada"}"#;
    let r = post(&http, &login("/login"), ada).await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (401, r#"{"error":"bad password"}"#.to_owned())
    );
    let r = post(&http, &login("/login"), ada).await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, r#"{"welcome":"ada"}"#.to_owned())
    );
    assert_eq!(r.header("x-session"), Some("s-1"));
    assert_eq!(r.header("content-length"), Some("17"));
    // The sequence ran out: its last answer repeats.
    assert_eq!(post(&http, &login("/login"), ada).await.status, 200);
    // Another user is another request, which was not recorded.
    let grace = r#"{"user":"grace","password":"s3cret"}"#;
    assert_eq!(post(&http, &login("/login"), grace).await.status, 404);
    // The query matches as a set of pairs, in any order.
    let r = http.get(&login("/me?b=2&a=1")).await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, r#"{"name":"Ada"}"#.to_owned())
    );
    assert_eq!(http.get(&login("/avatar")).await.body, avatar);
    // A miss says what it was, without its secrets (in the answer and in status).
    let r = http.get(&login("/nope?access_token=xyz")).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"],
        format!("no recorded answer for GET /nope?access_token=%5Bredacted%5D in recording {id}")
    );

    let status = mock.mgmt_get("/status?module=TrafficPlayback").await.json();
    let c = &status["message"][0]["counters"];
    assert_eq!(
        (
            c["hits"].as_u64(),
            c["repeats"].as_u64(),
            c["misses"].as_u64()
        ),
        (Some(5), Some(1), Some(2)),
        "{status}"
    );
    assert_eq!(
        c["missed"],
        json!({ "POST /login": 1, "GET /nope?access_token=%5Bredacted%5D": 1 })
    );
    // A reset starts every sequence over.
    let r = mock
        .mgmt_post("/modules/TrafficPlayback/reset", Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(post(&http, &login("/login"), ada).await.status, 401);
}

#[tokio::test]
async fn bodies_select_the_answer_and_misses_go_upstream() {
    let up = Upstream::new()
        .route("/search", |seen| {
            let q: Value = serde_json::from_slice(seen.body.as_deref().unwrap_or(b"{}"))
                .unwrap_or(Value::Null);
            Response::builder()
                .header("content-type", "application/json")
                .body(Bytes::from(json!({ "recorded": q["q"] }).to_string()))
                .unwrap()
        })
        .run()
        .await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "search", "").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();
    for q in ["a", "b"] {
        let r = post(
            &http,
            &proxy.url("/search"),
            &format!(r#"{{"q":"{q}","page":1}}"#),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    stop_recording(&proxy, &id).await;

    let live = Upstream::new()
        .route("/search", |seen| {
            Response::builder()
                .header("x-live", "yes")
                .body(Bytes::from(format!(
                    "live saw {} bytes",
                    seen.body.as_ref().map_or(0, |b| b.len())
                )))
                .unwrap()
        })
        .run()
        .await;
    // Recorded again as it is played back: what the mock answered is in a recording too.
    let modules = format!(
        "pipeline:\n  - name: TrafficReader\n  - name: TrafficPlayback\n    kwargs: {{recording: '{id}', on_miss: forward, match: {{body: true}}}}\nsupport: [{{name: TrafficRecorder}}]\n"
    );
    let mut proxy = proxy;
    proxy.sigterm();
    assert!(proxy.wait().await.success());
    let mock = proxy
        .again()
        .upstream(&live)
        .modules_yaml(&modules)
        .start()
        .await;

    let again = create_recording(&mock, "played back", "").await;
    start_recording(&mock, &again).await;
    // The same data in another order and spacing is the recorded request.
    let r = post(&http, &mock.url("/search"), r#"{ "page": 1, "q": "b" }"#).await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, r#"{"recorded":"b"}"#.to_owned())
    );
    let r = post(&http, &mock.url("/search"), r#"{"q":"a","page":1}"#).await;
    assert_eq!(r.text(), r#"{"recorded":"a"}"#);
    // Another body is a miss, forwarded whole, the bytes read to match it included.
    let r = post(&http, &mock.url("/search"), r#"{"q":"c","page":1}"#).await;
    assert_eq!(
        (r.header("x-live"), r.text()),
        (Some("yes"), "live saw 18 bytes".to_owned())
    );
    let big = format!(r#"{{"q":"{}"}}"#, "x".repeat(300_000));
    let r = post(&http, &mock.url("/search"), &big).await;
    assert_eq!(r.text(), format!("live saw {} bytes", big.len()));
    assert_eq!(live.last_request().body.as_deref(), Some(big.as_bytes()));
    // What the mock answered itself is recorded with its request body, read to match it.
    stop_recording(&mock, &again).await;
    let docs = crate::harness::recordings::all_traffic(&mock, &again).await;
    assert_eq!(docs.len(), 4);
    assert_eq!(
        docs[0]["request"]["body"]["data"],
        r#"{ "page": 1, "q": "b" }"#
    );
    assert_eq!(docs[0]["response"]["body"]["data"], r#"{"recorded":"b"}"#);
    assert_eq!(docs[3]["request"]["body"]["size"], big.len());
    let c = &mock.mgmt_get("/status?module=TrafficPlayback").await.json()["message"][0]["counters"];
    assert_eq!(
        (c["hits"].as_u64(), c["misses"].as_u64()),
        (Some(2), Some(2)),
        "{c}"
    );
}

#[tokio::test]
async fn serve_says_what_is_wrong() {
    let dir = Arc::new(TempDir::new("serve-errors"));
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = crate::harness::run_to_end(&[
        "serve",
        "no-such",
        "--data-dir",
        data,
        "--bind",
        "127.0.0.1:0",
        "--mgmt",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TrafficPlayback: kwarg recording: no recording with id `no-such`"),
        "{stderr}"
    );
    let out =
        crate::harness::run_to_end(&["serve", "x", "--on-miss", "forward", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--on-miss forward needs an upstream to forward misses to"));
    let out = crate::harness::run_to_end(&["serve", "x", "--on-miss", "418", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("on_miss: expected 404, 502 or forward, found `418`"));
}

/// The seed's store: a recording in MongoDB (imported there) is played back by a
/// TrafficPlayback whose `mongo_*` kwargs name it, as TrafficRecorder's do.
#[tokio::test]
async fn playback_reads_a_recording_from_mongodb() {
    let mongo = crate::harness::mongo::TestMongo::new().await;
    let uri = crate::harness::mongo::mongo_uri();
    let store = format!("{{mongo_uri: '{uri}', mongo_db: {}}}", mongo.name());
    let up = Upstream::start().await;
    let recorder = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&format!(
            "pipeline: []\nsupport: [{{name: TrafficRecorder, kwargs: {store}}}]\n"
        ))
        .start()
        .await;
    let har = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/mitmproxy.har"),
    )
    .unwrap();
    let r = crate::harness::recordings::import(&recorder, "", har).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();

    let kwargs = format!(
        "{{recording: '{id}', match: {{body: true}}, mongo_uri: '{uri}', mongo_db: {}}}",
        mongo.name()
    );
    let mock = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&format!(
            "pipeline: [{{name: TrafficPlayback, kwargs: {kwargs}}}]\nsupport: []\n"
        ))
        .start()
        .await;
    let req = http::Request::put(mock.url("/users/7?notify=false"))
        .header("content-type", "application/json")
        .body(body(r#"{"name":"Grace"}"#))
        .unwrap();
    let r = Http::new().send(req).await;
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, r#"{"id": 7, "name": "Grace"}"#.to_owned())
    );
    let r = Http::new().get(&mock.url("/users/7?notify=false")).await;
    assert_eq!(r.status, 404, "a GET was not recorded");
}
