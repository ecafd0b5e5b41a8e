//! Requests a reverse proxy must not pass on, and client-side failures told as such
//! (issue 8, item 4): each is answered with its status and nothing reaches the upstream
//! (or, for a broken body, the upstream is not blamed).

use crate::harness::{RawConn, TestProxy, Upstream};

/// Sends raw bytes on a fresh connection and returns the status of the answer.
async fn status_of(proxy: &TestProxy, raw: &[u8]) -> (u16, String) {
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(raw).await;
    let r = conn.read_response(false).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test]
async fn connect_and_two_hosts_are_refused() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let (status, body) = status_of(
        &proxy,
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("CONNECT is not supported"), "{body}");
    let (status, body) = status_of(
        &proxy,
        b"GET /echo HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than one Host"), "{body}");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

/// A request with both `Content-Length` and `Transfer-Encoding`, in either order, is
/// refused with 400 and reaches nobody, and its connection is closed (what follows it
/// could be a smuggled request). Requests before it on the connection pass.
#[tokio::test]
async fn both_framings_are_refused_whatever_their_order() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    for head in [
        "Content-Length: 50\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 3",
    ] {
        let mut conn = RawConn::connect(proxy.proxy_addr()).await;
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
            .await;
        assert_eq!(conn.read_response(false).await.status, 200);
        let before = up.requests().len();
        conn.send(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let r = conn.read_response(false).await;
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{head}: {body}");
        assert!(
            body.contains("both Content-Length and Transfer-Encoding"),
            "{body}"
        );
        assert!(conn.closed().await, "{head}: the connection stayed open");
        assert_eq!(up.requests().len(), before, "{head}: {:?}", up.requests());
    }
}

#[tokio::test]
async fn a_malformed_body_is_the_clients_fault_not_the_upstreams() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let (status, body) = status_of(
        &proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("request body was malformed"), "{body}");
    let line = proxy.wait_for_log(&["client error"]).await;
    assert!(line.contains("INFO"), "{line}");
    assert!(
        !proxy.stderr().contains("upstream error"),
        "{}",
        proxy.stderr()
    );
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml("client_body_timeout: 0.5\n")
        .start()
        .await;
    let started = std::time::Instant::now();
    let (status, body) = status_of(
        &proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("stopped arriving"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A request head larger than `max_header_size` (16 KiB by default, as Node.js) is
/// answered 431 without reaching the upstream; the setting raises it. An upstream's head
/// beyond it is a 502 that says so.
#[tokio::test]
async fn heads_beyond_max_header_size_are_refused() {
    let big = |n: usize| "v".repeat(n);
    let up = Upstream::new()
        .route("/big-head", move |_| {
            http::Response::builder()
                .header("x-big", "w".repeat(20 * 1024))
                .body(bytes::Bytes::from_static(b"never seen"))
                .unwrap()
        })
        .run()
        .await;
    let proxy = TestProxy::start(&up).await;
    let request = |n: usize| format!("GET /echo HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", big(n));
    let (status, body) = status_of(&proxy, request(12 * 1024).as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let before = up.requests().len();
    let (status, _) = status_of(&proxy, request(20 * 1024).as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(
        up.requests().len(),
        before,
        "the refused request reached the upstream"
    );
    let (status, body) = status_of(&proxy, b"GET /big-head HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("larger than max_header_size"), "{body}");

    let roomy = TestProxy::builder()
        .upstream(&up)
        .config_yaml("max_header_size: 65536\n")
        .start()
        .await;
    let (status, body) = status_of(&roomy, request(20 * 1024).as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = status_of(&roomy, b"GET /big-head HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "never seen"));
}
