//! Secrets never leave the exchange (issue 8, item 2): headers, query and body fields are
//! replaced by a mark before the message is published, so the store file, the API and
//! the live window hold none of them; `redact: false` keeps them, and status says so.

use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use http::{Request, Response};
use serde_json::Value;

use crate::harness::recordings::{
    all_traffic, counters, create_recording, start_recording, stop_recording,
};
use crate::harness::{body, Http, TestProxy, Upstream};

const SECRETS: &[&str] = &[
    "qs-secret-1",
    "hdr-secret-2",
    "cookie-secret-3",
    "body-secret-4",
    "setcookie-secret-5",
    "4111 1111 1111 1111",
    "newpass-secret-6",
];

async fn upstream() -> Upstream {
    Upstream::new()
        .route("/login", |_| {
            Response::builder()
                .header("set-cookie", "sid=setcookie-secret-5; HttpOnly")
                .header("content-type", "text/plain")
                .body(Bytes::from_static(
                    b"welcome; card on file 4111 1111 1111 1111\n",
                ))
                .unwrap()
        })
        .run()
        .await
}

/// Logs in twice with the same secrets; returns the recording's traffic.
async fn log_in_twice(proxy: &TestProxy) -> Vec<Value> {
    let id = create_recording(proxy, "secrets", "").await;
    start_recording(proxy, &id).await;
    for _ in 0..2 {
        let req = Request::post(proxy.url("/login?user=ada&token=qs-secret-1"))
            .header("authorization", "Bearer hdr-secret-2")
            .header("cookie", "sid=cookie-secret-3")
            .header("content-type", "application/json")
            .body(body(
                r#"{"user":"ada","password":"body-secret-4","newPassword":"newpass-secret-6"}"#,
            ))
            .unwrap();
        assert_eq!(Http::new().send(req).await.status, 200);
    }
    stop_recording(proxy, &id).await;
    all_traffic(proxy, &id).await
}

/// Every file of the data directory, as bytes, joined.
fn data_dir_bytes(proxy: &TestProxy) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(proxy.dir().join("data"))
        .unwrap()
        .flatten()
    {
        if entry.path().is_file() {
            all.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secrets_are_absent_from_the_store_file_the_api_and_the_live_window() {
    let up = upstream().await;
    let proxy = TestProxy::start(&up).await;
    let traffic = log_in_twice(&proxy).await;
    assert_eq!(traffic.len(), 2);
    // The upstream got the real request: redaction is of the copy, not the exchange.
    assert_eq!(
        up.last_request().header("authorization"),
        Some("Bearer hdr-secret-2")
    );

    let api = serde_json::to_string(&traffic).unwrap();
    let window = proxy.mgmt_get("/traffic?since=0").await.text();
    let files = data_dir_bytes(&proxy);
    for secret in SECRETS {
        assert!(!api.contains(secret), "{secret} in the API: {api}");
        assert!(
            !window.contains(secret),
            "{secret} in the live window: {window}"
        );
        assert!(!contains(&files, secret), "{secret} in the store's files");
    }
    // Marks keep the length and say the same for the same secret.
    let (a, b) = (&traffic[0], &traffic[1]);
    let auth = a["request"]["headers"]["authorization"][0]
        .as_str()
        .unwrap();
    assert!(auth.starts_with("[redacted len=19 h="), "{auth}");
    assert_eq!(
        a["request"]["headers"]["authorization"],
        b["request"]["headers"]["authorization"]
    );
    assert_eq!(
        a["response"]["headers"]["set-cookie"],
        b["response"]["headers"]["set-cookie"]
    );
    assert_eq!(a["request"]["args"]["user"][0], "ada");
    assert!(a["request"]["args"]["token"][0]
        .as_str()
        .unwrap()
        .starts_with("[redacted len=11"));
    let sent: Value = serde_json::from_str(a["request"]["body"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(sent["user"], "ada");
    assert!(sent["password"]
        .as_str()
        .unwrap()
        .starts_with("[redacted len=13"));
    let reader = counters(&proxy, "TrafficReader").await;
    assert_eq!(reader["redact"], true, "{reader}");
    assert!(reader["redacted"].as_u64().unwrap() >= 12, "{reader}");

    // Owner-only: the directory, the key, the store.
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    let data = proxy.dir().join("data");
    assert_eq!(mode(data.clone()), 0o700);
    assert_eq!(mode(data.join("redaction.key")), 0o600);
    assert_eq!(mode(data.join("heliosburn.sqlite3")), 0o600);
}

/// A data directory that was already there, open to others, keeps its mode (it may be
/// the user's own) and the log says so; the files made in it are owner-only still.
#[tokio::test]
async fn an_open_data_directory_is_warned_about() {
    let up = upstream().await;
    let dir = std::sync::Arc::new(crate::harness::TempDir::new("open-data-dir"));
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .start()
        .await;
    proxy
        .wait_for_log(&["WARN", "open to other users", "chmod 700", "755"])
        .await;
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.join("redaction.key")), 0o600);
    assert_eq!(mode(data.join("heliosburn.sqlite3")), 0o600);
}

#[tokio::test]
async fn redact_false_keeps_them_and_status_says_so() {
    let up = upstream().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(
            "pipeline: [{name: TrafficReader, kwargs: {redact: false}}]\nsupport: [{name: TrafficRecorder}]\n",
        )
        .start()
        .await;
    let traffic = log_in_twice(&proxy).await;
    let api = serde_json::to_string(&traffic).unwrap();
    for secret in SECRETS {
        assert!(api.contains(secret), "{secret} missing from {api}");
    }
    assert_eq!(counters(&proxy, "TrafficReader").await["redact"], false);
    proxy.wait_for_log(&["redact: false", "WARN"]).await;
}
