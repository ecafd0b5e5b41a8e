//! HAR export and import (issue 9, items 1 and 2): a recording as a HAR 1.2 document, validated by the
//! HAR schema itself (npm `har-schema` with `ajv`, installed by scripts/test.sh into
//! tests/har/node_modules), with binary bodies in base64 and truncated ones marked.

use std::process::Command;

use bytes::Bytes;
use http::Response;
use serde_json::Value;

use crate::harness::recordings::{
    all_traffic, create_recording, import, start_recording, stop_recording,
};
use crate::harness::{body, Http, TestProxy, Upstream};

/// Runs the schema validator on a file; panics with its report when the file is invalid.
fn assert_valid_har(path: &std::path::Path) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/har");
    assert!(
        dir.join("node_modules/har-schema").is_dir(),
        "the HAR validator is not installed: run scripts/test.sh (or npm ci --prefix tests/har)"
    );
    let out = Command::new("node")
        .arg(dir.join("validate.js"))
        .arg(path)
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.starts_with("valid "), "{report}");
}

#[tokio::test]
async fn an_export_is_valid_har_with_every_body_as_recorded() {
    let binary: Vec<u8> = (0..=255u8).collect();
    let served = binary.clone();
    let up = Upstream::new()
        .route("/text", |_| {
            Response::builder()
                .header("content-type", "text/plain")
                .header("set-cookie", "sid=abc; HttpOnly")
                .body(Bytes::from_static(b"plain text\n"))
                .unwrap()
        })
        .route("/json", |seen| {
            Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .body(seen.body.clone().unwrap_or_default())
                .unwrap()
        })
        .route("/binary", move |_| {
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Bytes::from(served.clone()))
                .unwrap()
        })
        .run()
        .await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "har \"export\"", "").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();
    assert_eq!(http.get(&proxy.url("/text?a=1&a=2")).await.status, 200);
    let req = http::Request::post(proxy.url("/json"))
        .header("content-type", "application/json")
        .header("cookie", "theme=dark")
        .body(body(r#"{"n":1,"s":"x"}"#))
        .unwrap();
    assert_eq!(http.send(req).await.status, 201);
    assert_eq!(http.get(&proxy.url("/binary")).await.body, binary);
    // Past the default body_limit (1 MiB): recorded truncated.
    assert_eq!(http.get(&proxy.url("/stream/2097152")).await.status, 200);
    stop_recording(&proxy, &id).await;

    let r = proxy.mgmt_get(&format!("/recording/{id}/har")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let file = proxy.dir().join("export.har");
    std::fs::write(&file, &r.body).unwrap();
    assert_valid_har(&file);

    let har: Value = serde_json::from_slice(&r.body).unwrap();
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "heliosburn");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{log}");
    let by_path = |p: &str| {
        entries
            .iter()
            .find(|e| e["request"]["url"].as_str().unwrap().contains(p))
            .unwrap_or_else(|| panic!("no entry for {p}"))
    };
    let text = by_path("/text");
    assert!(text["request"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://"));
    assert_eq!(text["request"]["queryString"].as_array().unwrap().len(), 2);
    assert_eq!(text["response"]["content"]["text"], "plain text\n");
    // Cookies are redacted by default: the header holds the mark, and no cookie is made
    // up from it.
    assert_eq!(text["response"]["cookies"], serde_json::json!([]));
    let set_cookie = text["response"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "set-cookie")
        .unwrap();
    assert!(set_cookie["value"]
        .as_str()
        .unwrap()
        .starts_with("[redacted len="));
    let json = by_path("/json");
    assert_eq!(json["request"]["postData"]["text"], r#"{"n":1,"s":"x"}"#);
    assert_eq!(json["request"]["postData"]["mimeType"], "application/json");
    assert_eq!(json["request"]["cookies"], serde_json::json!([]));
    assert_eq!(json["response"]["status"], 201);
    let bin = &by_path("/binary")["response"]["content"];
    assert_eq!(bin["encoding"], "base64");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bin["text"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, binary);
    let cut = &by_path("/stream/")["response"]["content"];
    assert_eq!(cut["_truncated"], true, "{cut:.200}");
    assert_eq!(cut["size"], 2_097_152);
    assert_eq!(cut["text"].as_str().unwrap().len(), 1 << 20);

    // The CLI writes the same document to a file.
    let cli_file = proxy.dir().join("cli.har");
    let out = proxy
        .cli(&["recording", "export", &id, "-o", cli_file.to_str().unwrap()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported"));
    assert_eq!(std::fs::read(&cli_file).unwrap(), r.body);

    // Imported again, the file makes the same recording: every transaction, field by
    // field (truncated and binary bodies included), in the same order.
    let out = proxy
        .cli(&[
            "recording",
            "import",
            cli_file.to_str().unwrap(),
            "--name",
            "copy",
            "--json",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (copy["name"].as_str(), copy["count"].as_u64()),
        (Some("copy"), Some(4))
    );
    let without_recording = |docs: Vec<Value>| {
        docs.into_iter()
            .map(|mut d| {
                d.as_object_mut().unwrap().remove("recordingId");
                d
            })
            .collect::<Vec<_>>()
    };
    let copy_id = copy["id"].as_str().unwrap();
    assert_eq!(
        without_recording(all_traffic(&proxy, copy_id).await),
        without_recording(all_traffic(&proxy, &id).await)
    );

    // An id that names nothing is a 404 in the API's shape, not an empty document.
    let r = proxy.mgmt_get("/recording/nothing-here/har").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let out = proxy.cli(&["recording", "export", "nothing-here"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
}

/// An export streams: 100,000 entries (written straight into the store before the proxy
/// starts) go out with the proxy's peak memory barely moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_100000_entries_keeps_memory_flat() {
    use std::sync::Arc;

    use heliosburn::store::sqlite::SqliteStore;
    use heliosburn::store::Store;
    use heliosburn::traffic::{BodyCapture, MultiMap, RequestInfo, ResponseInfo, TrafficDoc};
    use http_body_util::BodyExt;

    const ENTRIES: usize = 100_000;
    let dir = Arc::new(crate::harness::TempDir::new("har-100k"));
    let id = {
        let store = SqliteStore::open(&dir.path().join("data")).unwrap();
        let rec = store.create_recording("large", "").await.unwrap();
        let mut headers = MultiMap::new();
        headers.insert("host", ["api.test"]);
        let body = BodyCapture::from_bytes(&[b'x'; 512], 512);
        let request = Arc::new(RequestInfo {
            created_at: "2026-12-01T10:00:00.000000Z".into(),
            client_protocol: "HTTP/1.1".into(),
            method: "GET".into(),
            uri: "/item".into(),
            path: "/item".into(),
            args: MultiMap::new(),
            headers: headers.clone(),
            body: None,
        });
        let response = Arc::new(ResponseInfo {
            created_at: "2026-12-01T10:00:00.001000Z".into(),
            client_protocol: "HTTP/1.1".into(),
            status_code: 200,
            status_description: "OK".into(),
            headers,
            body: Some(body),
            trailers: None,
            web_socket_messages: None,
        });
        for batch in 0..ENTRIES / 1000 {
            let docs: Vec<TrafficDoc> = (0..1000)
                .map(|i| TrafficDoc {
                    recording_id: rec.id.clone(),
                    transaction_id: format!("t{batch}-{i}"),
                    created_at: chrono::Utc::now(),
                    request: request.clone(),
                    response: Some(response.clone()),
                })
                .collect();
            store.write_traffic(&docs).await.unwrap();
        }
        rec.id
    };
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .start()
        .await;
    let warm = proxy.peak_rss_kib();
    let req = http::Request::get(format!("{}/recording/{id}/har", proxy.mgmt_url()))
        .body(body(""))
        .unwrap();
    let mut resp = Http::new().stream(req).await;
    assert_eq!(resp.status(), 200);
    let (mut bytes, mut entries) = (0usize, 0usize);
    let mut last = Vec::new();
    while let Some(frame) = resp.body_mut().frame().await {
        let frame = frame.expect("the export streams to its end");
        if let Some(data) = frame.data_ref() {
            bytes += data.len();
            entries += data
                .windows(b"\"_transactionId\"".len())
                .filter(|w| *w == b"\"_transactionId\"")
                .count();
            last = data.to_vec();
        }
    }
    let peak = proxy.peak_rss_kib();
    println!(
        "exported {entries} entries, {} MiB; peak RSS {} MiB from {} MiB",
        bytes >> 20,
        peak / 1024,
        warm / 1024
    );
    assert_eq!(entries, ENTRIES);
    assert!(last.ends_with(b"]}}"), "the document ends");
    assert!(bytes > ENTRIES * 512, "{bytes} bytes");
    assert!(
        peak < warm + 32 * 1024,
        "exporting {} MiB grew the proxy from {} to {} MiB",
        bytes >> 20,
        warm / 1024,
        peak / 1024
    );
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A HAR Chrome's DevTools wrote (HTTP/2 pseudo-headers, a base64 body, a request the
/// browser blocked) becomes a recording of what it holds, which exports as valid HAR.
#[tokio::test]
async fn a_chrome_export_imports_as_a_recording() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = import(&proxy, "", fixture("chrome.har")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rec = r.json();
    let id = rec["id"].as_str().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/recording/{id}").as_str())
    );
    assert_eq!(rec["name"], "imported from WebInspector 537.36");
    assert_eq!(
        rec["description"],
        "imported from WebInspector 537.36: 3 entries"
    );
    assert_eq!(rec["count"], 3);
    assert_eq!(rec["startedAt"], "2026-11-30T09:12:01.402000Z");
    assert_eq!(rec["stoppedAt"], "2026-11-30T09:12:02.101000Z");

    let docs = all_traffic(&proxy, id).await;
    let cart = &docs[0];
    assert_eq!(cart["request"]["method"], "GET");
    assert_eq!(cart["request"]["uri"], "/cart?items=2&currency=EUR");
    assert_eq!(cart["request"]["path"], "/cart");
    assert_eq!(
        cart["request"]["args"]["currency"],
        serde_json::json!(["EUR"])
    );
    assert_eq!(cart["request"]["clientProtocol"], "HTTP/2.0");
    let headers = cart["request"]["headers"].as_object().unwrap();
    assert_eq!(headers["host"], serde_json::json!(["shop.example"]));
    assert!(headers.keys().all(|k| !k.starts_with(':')), "{headers:?}");
    assert_eq!(cart["response"]["statusCode"], 200);
    // Chrome wrote the body decoded: the brotli it came in is no longer said of it.
    assert!(cart["response"]["headers"]
        .get("content-encoding")
        .is_none());
    assert_eq!(cart["response"]["createdAt"], "2026-11-30T09:12:01.440512Z");
    assert_eq!(
        cart["response"]["body"]["data"],
        r#"{"items":2,"total":"19.90"}"#
    );
    let checkout = &docs[1];
    assert_eq!(checkout["request"]["body"]["data"], "cart=42&pay=card+visa");
    let png = &checkout["response"]["body"];
    assert_eq!(
        (
            png["encoding"].as_str(),
            png["data"].as_str(),
            png["size"].as_u64()
        ),
        (Some("base64"), Some("iVBORw0KGgo="), Some(8))
    );
    assert_eq!(docs[2]["request"]["uri"], "/api/ads");
    assert_eq!(docs[2]["response"], Value::Null, "blocked: no response");

    let r = proxy.mgmt_get(&format!("/recording/{id}/har")).await;
    let file = proxy.dir().join("reexport.har");
    std::fs::write(&file, &r.body).unwrap();
    assert_valid_har(&file);
}

/// mitmproxy's export (capitalised header names, times with an offset) imports too.
#[tokio::test]
async fn a_mitmproxy_export_imports_with_its_names_and_times() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = import(&proxy, "?name=users%20api", fixture("mitmproxy.har")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rec = r.json();
    assert_eq!(rec["name"], "users api");
    let docs = all_traffic(&proxy, rec["id"].as_str().unwrap()).await;
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert_eq!(d["request"]["createdAt"], "2026-11-30T10:00:00.250000Z");
    assert_eq!(d["response"]["createdAt"], "2026-11-30T10:00:00.262500Z");
    assert_eq!(
        d["request"]["headers"]["content-type"],
        serde_json::json!(["application/json"])
    );
    assert_eq!(d["request"]["body"]["data"], r#"{"name": "Grace"}"#);
    assert_eq!(d["response"]["statusDescription"], "OK");
}

/// Firefox's export: a body it left out is recorded as truncated at none of its size
/// (never as empty), a form given only as its fields is sent as that form, and times with
/// an offset are read as UTC.
#[tokio::test]
async fn a_firefox_export_imports_without_passing_left_out_bodies_as_empty() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = import(&proxy, "", fixture("firefox.har")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rec = r.json();
    assert_eq!(rec["startedAt"], "2026-11-30T09:15:12.345000Z");
    let docs = all_traffic(&proxy, rec["id"].as_str().unwrap()).await;
    let logo = &docs[0];
    assert_eq!(logo["request"]["clientProtocol"], "HTTP/2.0");
    assert_eq!(
        logo["request"]["headers"]["accept"],
        serde_json::json!(["image/avif,image/webp,*/*"])
    );
    let body = &logo["response"]["body"];
    assert_eq!(
        (
            body["size"].as_u64(),
            body["truncated"].as_bool(),
            body["data"].as_str()
        ),
        (Some(5120), Some(true), Some(""))
    );
    let form = &docs[1];
    assert_eq!(form["request"]["body"]["data"], "email=ada%40example.org");
    assert_eq!(form["response"]["statusCode"], 303);
    assert_eq!(form["response"]["body"]["size"], 0);
}

/// A document that is not HAR is refused with the entry and the field, and leaves no
/// recording behind, from the API and from the CLI.
#[tokio::test]
async fn invalid_har_names_the_entry_and_field_and_keeps_nothing() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut har: Value = serde_json::from_slice(&fixture("mitmproxy.har")).unwrap();
    let entry = har["log"]["entries"][0].clone();
    har["log"]["entries"].as_array_mut().unwrap().push(entry);
    har["log"]["entries"][1]["response"]["status"] = Value::from("OK");
    let r = import(&proxy, "", serde_json::to_vec(&har).unwrap()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("invalid HAR: entry 1: response.status: invalid type: string \"OK\""),
        "{error}"
    );
    let list = proxy.mgmt_get("/recording").await.json();
    assert_eq!(list["count"], 0, "{list}");

    let file = proxy.dir().join("bad.har");
    std::fs::write(&file, b"{\"log\": {\"version\": \"1.2\"}}").unwrap();
    let out = proxy
        .cli(&["recording", "import", file.to_str().unwrap()])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "400 Bad Request: invalid HAR: not a HAR document: it has no `log.entries` array"
        ),
        "{stderr}"
    );
    let out = proxy
        .cli(&["recording", "import", "/nonexistent.har"])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.har"));
}

/// A document that turns invalid after batches of it were stored leaves nothing either:
/// the recording it was going into is deleted.
#[tokio::test]
async fn an_import_that_fails_late_keeps_none_of_what_it_stored() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let entry = |status: &str| {
        format!(
            r#"{{"startedDateTime": "2026-12-01T10:00:00Z", "request": {{"method": "GET", "url": "http://a/x", "headers": []}}, "response": {{"status": {status}, "content": {{}}}}}}"#
        )
    };
    let mut entries: Vec<String> = (0..600).map(|_| entry("200")).collect();
    entries.push(entry("\"OK\""));
    let har = format!(r#"{{"log": {{"entries": [{}]}}}}"#, entries.join(","));
    let r = import(&proxy, "?name=late", har.into_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("entry 600: response.status"));
    let list = proxy.mgmt_get("/recording").await.json();
    assert_eq!(list["count"], 0, "{list}");
}
