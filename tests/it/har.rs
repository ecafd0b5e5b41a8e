//! HAR export (issue 9, item 1): a recording as a HAR 1.2 document, validated by the
//! HAR schema itself (npm `har-schema` with `ajv`, installed by scripts/test.sh into
//! tests/har/node_modules), with binary bodies in base64 and truncated ones marked.

use std::process::Command;

use bytes::Bytes;
use http::Response;
use serde_json::Value;

use crate::harness::recordings::{create_recording, start_recording, stop_recording};
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
