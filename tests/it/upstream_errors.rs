//! An upstream that refuses, resets or stays silent: the client gets 502 or 504 with a
//! short plain-text body naming the upstream and the cause.

use std::time::{Duration, Instant};

use crate::harness::{closed_port, Http, TestProxy, Upstream};

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
