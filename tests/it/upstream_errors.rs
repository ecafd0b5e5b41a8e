//! An upstream that refuses, resets or stays silent: the client gets 502 or 504 with a
//! short plain-text body naming the upstream and the cause.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http_body_util::BodyExt;

use crate::harness::{closed_port, Http, RawConn, TestProxy, Upstream};

fn assert_plain_text_naming(r: &crate::harness::Resp, upstream: &str, cause: &str) {
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{r:?}"
    );
    let text = r.text();
    assert!(
        text.contains(upstream),
        "body does not name {upstream}: {text:?}"
    );
    assert!(
        text.to_lowercase().contains(cause),
        "body does not say `{cause}`: {text:?}"
    );
    assert!(text.lines().count() <= 2, "not a short message: {text:?}");
}

#[tokio::test]
async fn refused_upstream_gives_502() {
    let upstream = format!("http://127.0.0.1:{}", closed_port());
    let proxy = TestProxy::builder().upstream_url(&upstream).start().await;
    let r = Http::new().get(&proxy.url("/anything")).await;
    assert_eq!(r.status, 502);
    assert_plain_text_naming(&r, &upstream, "refused");
    // The proxy stays up for the next request.
    assert_eq!(Http::new().get(&proxy.url("/again")).await.status, 502);
    let line = proxy
        .wait_for_log(&["heliosburn::access", "/anything"])
        .await;
    assert!(line.contains("status=502"), "{line}");
    assert!(line.contains(&format!("bytes={}", r.body.len())), "{line}");
}

#[tokio::test]
async fn upstream_dropping_the_connection_gives_502() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = Http::new().get(&proxy.url("/reset")).await;
    assert_eq!(r.status, 502);
    assert_plain_text_naming(&r, &up.url(), "closed");
    // And a healthy route right after is unaffected.
    assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);
}

#[tokio::test]
async fn silent_upstream_gives_504_after_the_configured_timeout() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml("upstream_timeout: 0.5\n")
        .start()
        .await;
    let started = Instant::now();
    let r = Http::new().get(&proxy.url("/sleep/3000")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_plain_text_naming(&r, &up.url(), "did not respond within 500ms");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "answered after {took:?}, expected about 0.5 s"
    );
}

/// The upstream's time to answer counts from the last piece of the body it took: an
/// upload that takes longer than `upstream_timeout` is no silent upstream. One that stops
/// reading and never answers is still cut, after the timeout.
#[tokio::test]
async fn a_long_upload_is_not_a_silent_upstream() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml("upstream_timeout: 0.5\n")
        .start()
        .await;
    let mut conn = RawConn::connect(proxy.proxy_addr()).await;
    conn.send(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await;
    let started = Instant::now();
    // Ten bytes over two seconds, four times the timeout, with one pause of three times
    // the timeout: the upstream waiting on the client is no silent upstream either.
    for i in 0..10 {
        let pause = if i == 5 { 1500 } else { 200 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        conn.send(b"u").await;
    }
    let r = conn.read_response(false).await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"10"[..]));

    // `/sleep` reads nothing for 5 s: once the buffers between are full, the upload
    // makes no progress, and half a second later the client has its 504.
    let frames = crate::harness::upstream::big_body(256 << 20)
        .map(|f| Ok::<_, std::convert::Infallible>(f.expect("generated frames do not fail")));
    let req = http::Request::post(proxy.url("/sleep/5000"))
        .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        .unwrap();
    let started = Instant::now();
    let r = Http::new().send(req).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
