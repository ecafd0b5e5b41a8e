//! Bodies both ways, byte-exact whatever their size or framing, and streamed: bytes
//! reach the other side as they come, not when the whole body has arrived.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::harness::upstream::{chunked_body, pattern, SLOW_DELAY, SLOW_FIRST, SLOW_REST};
use crate::harness::{body, channel_body, chunked, Http, RawConn, TestProxy, Upstream};

const MIB: usize = 1 << 20;

#[tokio::test]
async fn empty_bodies_both_ways() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(b"GET /bytes/0 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = conn.read_response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());

    conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    let r = conn.read_response(false).await;
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(echo["body_len"], 0);
    assert_eq!(up.last_request().header("content-length"), Some("0"));
}

#[tokio::test]
async fn one_mib_download_is_byte_exact_with_its_length() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = Http::new().get(&proxy.url(&format!("/bytes/{MIB}"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(MIB.to_string().as_str()));
    assert!(r.body == pattern(MIB), "the 1 MiB body changed on its way");
}

#[tokio::test]
async fn one_mib_upload_is_byte_exact_with_its_length() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let sent = Bytes::from(pattern(MIB));
    let r = Http::new()
        .request("POST", &proxy.url("/echo-body"), body(sent.clone()))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == sent, "the 1 MiB upload changed on its way");
    let seen = up.last_request();
    assert_eq!(
        seen.header("content-length"),
        Some(MIB.to_string().as_str())
    );
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[tokio::test]
async fn chunked_download_is_byte_exact_and_stays_chunked() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = conn.read_response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.text(), chunked_body());
}

#[tokio::test]
async fn chunked_upload_is_byte_exact_and_stays_chunked() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let data = pattern(MIB + 7);
    // Uneven chunk sizes, so a chunk boundary moved or merged would not hide an error.
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in [1usize, 10, 65_536, 3, 300_000].iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        chunks.push(Bytes::copy_from_slice(&data[at..end]));
        at = end;
    }
    let r = Http::new()
        .request("PUT", &proxy.url("/echo-body"), chunked(chunks))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the chunked upload changed on its way");
    let seen = up.last_request();
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
}

/// The first chunk of a slow body reaches the client long before the upstream finishes.
#[tokio::test]
async fn response_streams_as_the_upstream_sends_it() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let started = Instant::now();
    let req = http::Request::get(proxy.url("/slow"))
        .body(body(""))
        .unwrap();
    let mut resp = Http::new().stream(req).await;
    assert_eq!(resp.status(), 200);
    let first = resp
        .body_mut()
        .frame()
        .await
        .expect("a first frame")
        .expect("a body frame")
        .into_data()
        .expect("data");
    let first_at = started.elapsed();
    assert_eq!(first, SLOW_FIRST.as_bytes());
    let rest = resp.into_body().collect().await.unwrap().to_bytes();
    let done_at = started.elapsed();
    assert_eq!(rest, SLOW_REST.as_bytes());
    assert!(
        first_at < SLOW_DELAY / 2,
        "the first chunk took {first_at:?}; the upstream sent it at once"
    );
    assert!(
        done_at >= SLOW_DELAY,
        "the body ended after {done_at:?}, before the upstream sent its end"
    );
}

/// The upstream echoes the first part of an upload back while the client has not yet
/// sent the rest: the request streams up and the response streams down at once.
#[tokio::test]
async fn upload_streams_while_the_client_is_still_sending() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let (tx, b) = channel_body();
    let req = http::Request::post(proxy.url("/echo-body"))
        .body(b)
        .unwrap();
    tx.send(Bytes::from_static(b"part one;")).await.unwrap();
    let mut resp = Http::new().stream(req).await;
    assert_eq!(resp.status(), 200);
    let echoed = tokio::time::timeout(Duration::from_secs(5), resp.body_mut().frame())
        .await
        .expect("the first part was not echoed while the upload was open")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(echoed, "part one;");
    tx.send(Bytes::from_static(b"part two")).await.unwrap();
    drop(tx);
    let rest = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(rest, "part two");
}

/// An upstream that breaks off mid-body must not look like a complete response: the
/// client's read fails instead of ending cleanly short, and the log says so. Both with a
/// Content-Length and chunked (where a clean last chunk would hide the break).
#[tokio::test]
async fn an_upstream_breaking_off_mid_body_is_not_passed_off_as_complete() {
    use crate::harness::upstream::{TRUNCATED_LENGTH, TRUNCATED_SENT};
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    for (query, length) in [("sized", Some(TRUNCATED_LENGTH)), ("chunked", None)] {
        let req = http::Request::get(proxy.url(&format!("/truncated?{query}")))
            .body(body(""))
            .unwrap();
        let resp = Http::new().stream(req).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_owned()),
            length.map(|l| l.to_string())
        );
        let read = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .expect("the body neither ended nor failed within 10 s");
        assert!(
            read.is_err(),
            "{query}: the client got a cut body as complete: {:?}",
            read.map(|c| c.to_bytes())
        );
    }
    let log = proxy
        .wait_for_log(&["heliosburn::access", "/truncated"])
        .await;
    assert!(log.contains("completed=false"), "{log}");
    assert!(
        log.contains(&format!("bytes={}", TRUNCATED_SENT.len())),
        "{log}"
    );
}

/// A client that leaves mid-body: logged as not completed, with the bytes it got.
#[tokio::test]
async fn a_client_leaving_mid_body_is_logged_as_incomplete() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let req = http::Request::get(proxy.url("/slow"))
        .body(body(""))
        .unwrap();
    let mut resp = Http::new().stream(req).await;
    resp.body_mut().frame().await.unwrap().unwrap();
    drop(resp);
    let line = proxy.wait_for_log(&["heliosburn::access", "/slow"]).await;
    assert!(line.contains("completed=false"), "{line}");
    assert!(
        line.contains(&format!("bytes={}", SLOW_FIRST.len())),
        "{line}"
    );
    // The proxy is fine for the next client.
    assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);
}

/// An upstream that answers before the upload is over: the client gets that answer while
/// it is still sending.
#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client_mid_upload() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let (tx, b) = channel_body();
    let req = http::Request::post(proxy.url("/status/413"))
        .header("x-reason", "Too Big For Me")
        .body(b)
        .unwrap();
    tx.send(Bytes::from(pattern(MIB))).await.unwrap();
    let resp = Http::new().stream(req).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| r.as_bytes()),
        Some(&b"Too Big For Me"[..])
    );
    // Still uploading: the sender is open.
    assert!(!tx.is_closed());
    drop(tx);
}

/// Many exchanges at once over shared pooled connections: each gets its own answer.
#[tokio::test]
async fn concurrent_exchanges_do_not_mix() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let mut tasks = Vec::new();
    for i in 0..40usize {
        let http = http.clone();
        let url = proxy.url(&format!("/echo-body?i={i}"));
        tasks.push(tokio::spawn(async move {
            let sent = Bytes::from(format!("exchange {i} ").repeat(i * 50 + 1));
            let r = http.request("POST", &url, body(sent.clone())).await;
            assert_eq!(r.status, 200);
            assert!(r.body == sent, "exchange {i} got another's body");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.requests().len(), 40);
}

/// Large bodies stream through in both directions without the proxy holding them. A
/// first round of 4 MiB each way fills what a large exchange uses (captures up to
/// `body_limit`, the store's write, buffers); then 256 MiB each way may add almost
/// nothing to the peak. (Growth is what shows holding; the absolute peak of a debug build
/// is mostly its code and moves with it: about 60 MiB here.)
#[tokio::test]
async fn large_bodies_pass_without_growing_the_proxy() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();

    let both_ways = |size: usize| {
        let http = &http;
        let proxy = &proxy;
        async move {
            assert_eq!(
                http.download_len(&proxy.url(&format!("/stream/{size}")))
                    .await,
                size
            );
            let frames = crate::harness::upstream::big_body(size);
            let r = http.upload(&proxy.url("/count"), frames).await;
            assert_eq!(r.text(), size.to_string());
        }
    };
    both_ways(4 * MIB).await;
    let warm = proxy.peak_rss_kib();
    both_ways(256 * MIB).await;
    let peak = proxy.peak_rss_kib();
    assert!(
        peak < warm + 16 * 1024,
        "the proxy's peak grew from {} to {} MiB moving 256 MiB each way",
        warm / 1024,
        peak / 1024
    );
    assert!(peak < 128 * 1024, "the proxy peaked at {} MiB", peak / 1024);
}
