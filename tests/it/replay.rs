//! Replay with diff (issue 9, items 3 and 4): a recording sent again with
//! `heliosburn replay`, against the service it was recorded from (no differences) and
//! against a changed build (exactly the changes reported).

use std::process::Output;

use bytes::Bytes;
use http::Response;
use serde_json::Value;

use crate::harness::recordings::{create_recording, start_recording, stop_recording};
use crate::harness::{body, Http, TestProxy, Upstream};

/// The service under test. A changed build answers `/health` with 503, renames the user
/// and adds a header to `/items`; every build answers with a fresh id and time in
/// `/session`, which the rules must see as noise.
async fn service(changed: bool) -> Upstream {
    let session = std::sync::atomic::AtomicU64::new(0);
    Upstream::new()
        .route("/health", move |_| {
            Response::builder()
                .status(if changed { 503 } else { 200 })
                .header("content-type", "text/plain")
                .body(Bytes::from_static(b"ok"))
                .unwrap()
        })
        .route("/users/7", move |_| {
            let name = if changed { "Grace" } else { "Ada" };
            Response::builder()
                .header("content-type", "application/json")
                .body(Bytes::from(format!(
                    r#"{{"id":7,"name":"{name}","roles":["admin","dev"]}}"#
                )))
                .unwrap()
        })
        .route("/items", move |seen| {
            let mut b = Response::builder().header("content-type", "application/json");
            if changed {
                b = b.header("x-cache", "miss");
            }
            // Echoes what it was sent: the replayed body must be the recorded one.
            b.body(seen.body.clone().unwrap_or_default()).unwrap()
        })
        .route("/session", move |_| {
            let n = session.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1000;
            let now = chrono::Utc::now().to_rfc3339();
            Response::builder()
                .header("content-type", "application/json")
                .body(Bytes::from(format!(
                    r#"{{"session":"s-{n}","issuedAt":"{now}","user":7}}"#
                )))
                .unwrap()
        })
        .run()
        .await
}

/// Records the traffic of a small client session against `up`; returns the recording's id.
async fn record_session(proxy: &TestProxy) -> String {
    let id = create_recording(proxy, "session", "").await;
    start_recording(proxy, &id).await;
    let http = Http::new();
    assert_eq!(http.get(&proxy.url("/health")).await.status, 200);
    assert_eq!(
        http.get(&proxy.url("/users/7?fields=all")).await.status,
        200
    );
    let post = http::Request::post(proxy.url("/items"))
        .header("content-type", "application/json")
        .body(body(r#"{"sku":"A-1","qty":2}"#))
        .unwrap();
    assert_eq!(http.send(post).await.status, 200);
    assert_eq!(http.get(&proxy.url("/session")).await.status, 200);
    let rec = stop_recording(proxy, &id).await;
    assert_eq!(rec["count"], 4, "{rec}");
    id
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The rules the session needs: its id and time change on every answer.
const NOISE: &[&str] = &[
    "--ignore-path",
    "$.session",
    "--match",
    r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)",
];

#[tokio::test]
async fn replaying_against_the_unchanged_service_finds_no_difference() {
    let up = service(false).await;
    let proxy = TestProxy::start(&up).await;
    let id = record_session(&proxy).await;

    let target = up.url();
    let mut args = vec!["replay", &id, "--target", &target];
    args.extend_from_slice(NOISE);
    args.extend_from_slice(&["--json", "--fail-on-diff"]);
    let out = proxy.cli(&args).await;
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(
        (r["sent"].as_u64(), r["same"].as_u64(), r["errors"].as_u64()),
        (Some(4), Some(4), Some(0)),
        "{r:#}"
    );
    assert_eq!(r["differences"], serde_json::json!([]), "{r:#}");
    // The upstream saw the recorded requests again, body and query included.
    let seen = up.requests();
    let replayed_post = seen.iter().rev().find(|s| s.path == "/items").unwrap();
    assert_eq!(
        replayed_post.body.as_deref(),
        Some(br#"{"sku":"A-1","qty":2}"#.as_slice())
    );
    assert!(seen
        .iter()
        .any(|s| s.query.as_deref() == Some("fields=all")));

    // Without the rules the session's fresh id and time are differences, and nothing else.
    let out = proxy
        .cli(&[
            "replay",
            &id,
            "--target",
            &up.url(),
            "--json",
            "--as-fast-as-possible",
        ])
        .await;
    let r = report(&out);
    assert!(out.status.success(), "without --fail-on-diff: exit 0");
    assert_eq!(r["different"], 1, "{r:#}");
    let what: Vec<&str> = r["differences"][0]["what"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(what, ["$.issuedAt", "$.session"], "{r:#}");
}

#[tokio::test]
async fn replaying_against_a_changed_build_reports_exactly_its_changes() {
    let up = service(false).await;
    let proxy = TestProxy::start(&up).await;
    let id = record_session(&proxy).await;
    let changed = service(true).await;

    let target = changed.url();
    let mut args = vec!["replay", &id, "--target", &target];
    args.extend_from_slice(NOISE);
    args.extend_from_slice(&["--json", "--fail-on-diff", "--speed", "4"]);
    let out = proxy.cli(&args).await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "--fail-on-diff: {r:#}");
    assert_eq!(
        (r["sent"].as_u64(), r["different"].as_u64()),
        (Some(4), Some(3)),
        "{r:#}"
    );
    let d = r["differences"].as_array().unwrap();
    assert_eq!(d[0]["method"], "GET");
    assert_eq!(d[0]["url"], format!("{target}/health"));
    assert_eq!(
        d[0]["what"],
        serde_json::json!([{"kind": "status", "recorded": 200, "replayed": 503}])
    );
    assert_eq!(d[1]["url"], format!("{target}/users/7?fields=all"));
    assert_eq!(
        d[1]["what"],
        serde_json::json!([{"kind": "json", "path": "$.name", "recorded": "Ada", "replayed": "Grace"}])
    );
    assert_eq!(d[2]["method"], "POST");
    assert_eq!(
        d[2]["what"],
        serde_json::json!([{"kind": "header", "name": "x-cache", "recorded": [], "replayed": ["miss"]}])
    );
    assert!(d
        .iter()
        .all(|x| x["transactionId"].as_str().is_some_and(|t| !t.is_empty())));

    // For a person: each difference on a line of its own.
    let mut args = vec!["replay", &id, "--target", &target, "--as-fast-as-possible"];
    args.extend_from_slice(NOISE);
    let out = proxy.cli(&args).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("same: 1  different: 3  errors: 0"), "{text}");
    assert!(text.contains("  status: 200 -> 503\n"), "{text}");
    assert!(
        text.contains("  body $.name: \"Ada\" -> \"Grace\"\n"),
        "{text}"
    );
    assert!(
        text.contains("  header x-cache: added \"miss\"\n"),
        "{text}"
    );
}

/// Exported as HAR, the session replays from the file with no proxy running, and a
/// target that refuses connections is a counted error per request, not a crash.
#[tokio::test]
async fn a_har_file_replays_and_a_dead_target_is_counted() {
    let up = service(false).await;
    let proxy = TestProxy::start(&up).await;
    let id = record_session(&proxy).await;
    let har = proxy.mgmt_get(&format!("/recording/{id}/har")).await;
    let file = proxy.dir().join("session.har");
    std::fs::write(&file, &har.body).unwrap();
    let file = file.to_str().unwrap();

    let target = up.url();
    let mut args = vec!["replay", "--har", file, "--target", &target];
    args.extend_from_slice(NOISE);
    args.extend_from_slice(&["--json", "--fail-on-diff", "--rate", "100/s"]);
    let out = proxy.cli(&args).await;
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(
        (r["same"].as_u64(), r["errors"].as_u64()),
        (Some(4), Some(0)),
        "{r:#}"
    );

    let dead = format!("http://127.0.0.1:{}", crate::harness::closed_port());
    let out = proxy
        .cli(&[
            "replay",
            "--har",
            file,
            "--target",
            &dead,
            "--json",
            "--as-fast-as-possible",
            "--fail-on-diff",
        ])
        .await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(
        (r["sent"].as_u64(), r["errors"].as_u64()),
        (Some(4), Some(4)),
        "{r:#}"
    );
    let reason = r["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.to_lowercase().contains("connect"), "{reason}");

    // Bad input is a clear error with exit 2.
    let out = proxy
        .cli(&["replay", "nothing-here", "--target", &up.url()])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    let out = proxy.cli(&["replay", &id, "--target", "ftp://x"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an http:// or https:// URL"));
    let out = proxy
        .cli(&["replay", &id, "--target", &up.url(), "--ignore-path", "id"])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ignore-path `id`: a path starts with `$`")
    );
}

/// Pacing: the recorded gaps are kept (scaled by --speed), or a fixed --rate; in recorded
/// order either way. Lower bounds only: a replay may be late, never early.
#[tokio::test]
async fn requests_keep_their_recorded_order_and_pace() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let entry = |i: usize, at: &str| {
        format!(
            r#"{{"startedDateTime": "{at}", "time": 1, "request": {{"method": "GET", "url": "http://svc/echo/{i}", "headers": []}}, "response": {{"status": 200, "content": {{"size": 0, "text": ""}}}}}}"#
        )
    };
    // The second entry began before the first (captured out of order): the file's order
    // is kept, and it is due at once, never before the one ahead of it.
    let har = format!(
        r#"{{"log": {{"version": "1.2", "creator": {{"name": "t", "version": "1"}}, "entries": [{}, {}, {}]}}}}"#,
        entry(0, "2026-12-01T10:00:00.000Z"),
        entry(1, "2026-12-01T09:59:59.600Z"),
        entry(2, "2026-12-01T10:00:00.800Z"),
    );
    let file = proxy.dir().join("paced.har");
    std::fs::write(&file, har).unwrap();
    let file = file.to_str().unwrap();
    let target = up.url();
    for (pace, at_least_ms) in [
        (vec![], 800.0),
        (vec!["--speed", "4"], 200.0),
        (vec!["--rate", "10/s"], 200.0),
    ] {
        let before = up.requests().len();
        let mut args = vec!["replay", "--har", file, "--target", &target, "--json"];
        args.extend_from_slice(&pace);
        let out = proxy.cli(&args).await;
        let r = report(&out);
        assert_eq!(r["sent"], 3, "{pace:?}: {r:#}");
        let took = r["durationMs"].as_f64().unwrap();
        assert!(
            took >= at_least_ms,
            "{pace:?}: done in {took} ms, due at {at_least_ms}"
        );
        let paths: Vec<String> = up.requests()[before..]
            .iter()
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(paths, ["/echo/0", "/echo/1", "/echo/2"], "{pace:?}");
    }
    let out = proxy
        .cli(&["replay", "--har", file, "--target", &target, "--speed", "0"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--speed must be a factor from 0.001"));
    let out = proxy
        .cli(&[
            "replay", "--har", file, "--target", &target, "--rate", "1e-300",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
}
