//! Who may use the management API (issue 8): a page in the user's browser may not (no
//! foreign `Origin`, no `text/plain` state change, no rebound `Host`), and with a token
//! nobody without it may, but the liveness probe.

use http::Request;
use serde_json::json;

use crate::harness::{body, run_to_end, Http, Resp, TestProxy, Upstream};

/// A management request with these headers (and a body for anything but GET).
async fn mgmt(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    b: &str,
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", proxy.mgmt_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Http::new()
        .send(req.body(body(b.to_owned())).unwrap())
        .await
}

#[tokio::test]
async fn a_cross_site_page_can_neither_reconfigure_nor_read_it() {
    let a = Upstream::new().name("a").run().await;
    let evil = Upstream::new().name("evil").run().await;
    let proxy = TestProxy::start(&a).await;
    let repoint = json!({"operation": "upstream_port", "param": evil.port()}).to_string();

    // What a form or a no-cors fetch can send: text/plain, a foreign Origin.
    let r = mgmt(
        &proxy,
        "POST",
        "/control",
        &[
            ("content-type", "text/plain"),
            ("origin", "http://evil.example"),
        ],
        &repoint,
    )
    .await;
    assert!(
        r.status == 403 || r.status == 415,
        "{} {}",
        r.status,
        r.text()
    );
    let r = mgmt(
        &proxy,
        "POST",
        "/control",
        &[("content-type", "text/plain")],
        &repoint,
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("application/json"));
    // JSON, but from a foreign page.
    let r = mgmt(
        &proxy,
        "POST",
        "/control",
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        &repoint,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Nothing of it was applied.
    assert_eq!(proxy.mgmt_get("/proxy").await.json()["upstream"], a.url());
    assert_eq!(
        Http::new().get(&proxy.url("/echo")).await.json()["upstream"],
        "a"
    );
    assert!(evil.requests().is_empty());

    // DNS rebinding: the page's own name in `Host`, whatever the address it resolved to.
    let port = proxy.mgmt_addr().port();
    let rebound = format!("evil.example:{port}");
    let r = mgmt(&proxy, "GET", "/recording", &[("host", &rebound)], "").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("management_hosts"));
    // The listener's own names answer, and every answer says nosniff.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let r = mgmt(&proxy, "GET", "/recording", &[("host", &host)], "").await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // The same JSON from the proxy's own origin is applied.
    let own = format!("http://127.0.0.1:{port}");
    let r = mgmt(
        &proxy,
        "POST",
        "/control",
        &[("content-type", "application/json"), ("origin", &own)],
        &repoint,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        proxy.mgmt_get("/proxy").await.json()["upstream"],
        evil.url()
    );
}

#[tokio::test]
async fn with_a_token_every_route_but_the_probe_needs_it() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .env("HELIOSBURN_MGMT_TOKEN", "t0ken-for-tests")
        .start()
        .await;
    let r = mgmt(&proxy, "GET", "/status", &[], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = mgmt(
        &proxy,
        "GET",
        "/status",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = mgmt(
        &proxy,
        "GET",
        "/status",
        &[("authorization", "Bearer t0ken-for-tests")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = mgmt(
        &proxy,
        "POST",
        "/recording",
        &[("content-type", "application/json")],
        r#"{"name": "x"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = mgmt(&proxy, "GET", "/healthz", &[], "").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["status"].clone()),
        (200, json!("ok"))
    );
    assert!(
        !proxy.stderr().contains("t0ken-for-tests"),
        "{}",
        proxy.stderr()
    );

    // The CLI sends it from its flag or the environment.
    let out = proxy.cli(&["--json", "status"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401 Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = proxy
        .cli(&[
            "--mgmt-token",
            "t0ken-for-tests",
            "recording",
            "create",
            "with token",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("with token"));
}

#[test]
fn binding_off_loopback_needs_a_token() {
    let out = run_to_end(&[
        "--check-config",
        "--upstream",
        "http://127.0.0.1:9",
        "--mgmt",
        "0.0.0.0:5150",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("management (or --mgmt): the management API on 0.0.0.0:5150 would be reachable off this machine without a token"), "{stderr}");
    let out = run_to_end(&[
        "--check-config",
        "--upstream",
        "http://127.0.0.1:9",
        "--mgmt",
        "0.0.0.0:5150",
        "--mgmt-token",
        "long-random-token",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JSON rule runs for the methods a route has: a method it has not is a 405 with
/// `Allow` (it was a 415 when the guard ran the rule before routing; schemathesis's
/// `unsupported_method` check found it), and an unknown path stays a 404.
#[tokio::test]
async fn a_method_a_route_has_not_is_405_before_the_json_rule() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    for (method, path) in [
        ("TRACE", "/healthz"),
        ("DELETE", "/status"),
        ("PATCH", "/recording/x"),
    ] {
        let r = mgmt(&proxy, method, path, &[], "").await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        assert!(
            r.header("allow").is_some_and(|a| a.contains("GET")),
            "{method} {path}"
        );
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    let r = mgmt(&proxy, "POST", "/recording", &[], "{}").await;
    assert_eq!(r.status, 415, "{}", r.text());
    let r = mgmt(&proxy, "POST", "/nowhere", &[], "").await;
    assert_eq!(r.status, 404, "{}", r.text());
}
