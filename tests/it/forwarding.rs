//! What passes through unchanged (methods, paths, queries, headers, statuses, reason
//! phrases) and the few changes a reverse proxy must make (hop-by-hop headers,
//! X-Forwarded-*, Host).

use std::time::Duration;

use crate::harness::{body, Http, RawConn, TestProxy, Upstream};

#[tokio::test]
async fn every_method_reaches_the_upstream_with_its_body() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let sent = format!("body of {method}");
        let r = http
            .request(method, &proxy.url("/echo"), body(sent.clone()))
            .await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let echo = r.json();
        assert_eq!(echo["method"], method);
        assert_eq!(echo["body"], sent.as_str(), "{method}");
    }
    let r = http.request("HEAD", &proxy.url("/echo"), body("")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "a HEAD response has no body");
    assert_eq!(up.last_request().method, "HEAD");
}

#[tokio::test]
async fn path_query_and_headers_pass_through_unchanged() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let path = "/a/b%20c/%E2%9C%93;p=1";
    let query = "x=1&x=2&y=%2F&empty=&flag";
    let req = http::Request::get(proxy.url(&format!("{path}?{query}")))
        .header("x-custom", "Some Value; with=params")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("accept", "application/json")
        .header("authorization", "Bearer abc.def")
        .header("cookie", "a=1; b=2")
        .body(body(""))
        .unwrap();
    let r = Http::new().send(req).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], path);
    assert_eq!(echo["query"], query);
    let h = &echo["headers"];
    assert_eq!(h["x-custom"][0], "Some Value; with=params");
    assert_eq!(h["x-multi"], serde_json::json!(["one", "two"]));
    assert_eq!(h["accept"][0], "application/json");
    assert_eq!(h["authorization"][0], "Bearer abc.def");
    assert_eq!(h["cookie"][0], "a=1; b=2");
}

#[tokio::test]
async fn request_hop_by_hop_headers_are_not_forwarded() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(
        b"GET /echo HTTP/1.1\r\n\
          Host: front.example\r\n\
          Connection: keep-alive, X-Secret\r\n\
          X-Secret: named by Connection\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Trailer: X-Checksum\r\n\
          Upgrade: foo/2\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\n\
          \r\n",
    )
    .await;
    let r = conn.read_response(false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(seen.header(gone), None, "`{gone}` reached the upstream");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_not_forwarded() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(b"GET /hop HTTP/1.1\r\nHost: front.example\r\n\r\n")
        .await;
    let r = conn.read_response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hop\n");
    for gone in [
        "connection",
        "x-resp-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-connection",
    ] {
        assert_eq!(
            r.header(gone),
            None,
            "`{gone}` reached the client: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn x_forwarded_headers_are_added_and_host_rewritten() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(
        b"GET /echo HTTP/1.1\r\nHost: front.example:8080\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n",
    )
    .await;
    assert_eq!(conn.read_response(false).await.status, 200);
    let seen = up.last_request();
    assert_eq!(seen.header("host"), Some(up.addr().to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("front.example:8080"));
    assert_eq!(seen.header_all("host").len(), 1);

    // Without a prior X-Forwarded-For, the client's address alone.
    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.json()["headers"]["x-forwarded-for"][0], "127.0.0.1");
}

#[tokio::test]
async fn preserve_host_keeps_the_clients_host() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .preserve_host()
        .start()
        .await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(b"GET /echo HTTP/1.1\r\nHost: front.example:8080\r\n\r\n")
        .await;
    assert_eq!(conn.read_response(false).await.status, 200);
    let seen = up.last_request();
    assert_eq!(seen.header("host"), Some("front.example:8080"));
    assert_eq!(seen.header("x-forwarded-host"), Some("front.example:8080"));
}

#[tokio::test]
async fn status_codes_and_reason_phrases_pass_through() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    for (code, reason, expected_line) in [
        (200, None, "HTTP/1.1 200 OK"),
        (201, None, "HTTP/1.1 201 Created"),
        (204, None, "HTTP/1.1 204 No Content"),
        (404, Some("Nothing Here"), "HTTP/1.1 404 Nothing Here"),
        (418, Some("Short And Stout"), "HTTP/1.1 418 Short And Stout"),
        (299, Some("Custom Success"), "HTTP/1.1 299 Custom Success"),
        (
            503,
            Some("Down For Maintenance"),
            "HTTP/1.1 503 Down For Maintenance",
        ),
    ] {
        let reason_header = reason.map_or(String::new(), |r| format!("X-Reason: {r}\r\n"));
        conn.send(
            format!("GET /status/{code} HTTP/1.1\r\nHost: x\r\n{reason_header}\r\n").as_bytes(),
        )
        .await;
        let r = conn.read_response(false).await;
        assert_eq!(r.status_line, expected_line);
        if code != 204 {
            assert_eq!(r.text(), format!("status {code}\n"));
        }
    }
    // And as an HTTP client library reports it.
    let req = http::Request::get(proxy.url("/status/404"))
        .header("x-reason", "Nothing Here")
        .body(body(""))
        .unwrap();
    let r = Http::new().send(req).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.reason.as_deref(), Some("Nothing Here"));
}

/// Several requests on one client connection; the proxy reuses its upstream connection.
#[tokio::test]
async fn keep_alive_on_both_sides() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    for i in 0..4 {
        let body = format!("request {i}");
        conn.send(
            format!(
                "POST /echo?i={i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
        let r = conn.read_response(false).await;
        assert_eq!(r.status, 200);
        assert_ne!(r.header("connection"), Some("close"));
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(echo["body"], body.as_str());
        // The proxy's connection goes back to its pool once the body was read through.
        wait_idle_upstream(&proxy, 1).await;
    }
    assert_eq!(up.requests().len(), 4);
    assert_eq!(
        up.connections().len(),
        1,
        "four sequential requests should share one pooled upstream connection"
    );
}

/// A client that closes its connection does not make the proxy close its pooled upstream
/// connection: `Connection: close` is hop-by-hop like the rest.
#[tokio::test]
async fn client_connection_close_stays_on_the_client_side() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    for i in 0..3 {
        let mut conn = RawConn::connect(proxy.proxy_addr()).await;
        conn.send(
            format!("GET /echo?i={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let r = conn.read_response(false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        let seen = up.last_request();
        assert_eq!(
            seen.header("connection"),
            None,
            "Connection reached the upstream"
        );
        wait_idle_upstream(&proxy, 1).await;
    }
    assert_eq!(
        up.connections().len(),
        1,
        "the proxy's upstream connection should outlive the client connections"
    );
}

/// Several X-Forwarded-For lines are one list (RFC 9110 5.3): every hop is kept, in order,
/// with the client appended.
#[tokio::test]
async fn every_prior_x_forwarded_for_hop_is_kept() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\
          X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
          X-Forwarded-For: 10.0.0.3\r\n\r\n",
    )
    .await;
    assert_eq!(conn.read_response(false).await.status, 200);
    assert_eq!(
        up.last_request().header_all("x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );
}

/// Waits (at most 5 s) until the proxy holds `n` idle upstream connections.
async fn wait_idle_upstream(proxy: &TestProxy, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = proxy.mgmt_get("/proxy").await.json();
        if p["upstream_idle_connections"] == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {n} idle upstream connections within 5 s: {p}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
