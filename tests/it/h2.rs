//! HTTP/2 to the upstream (by ALPN over TLS, or h2c when configured) and gRPC end to
//! end: a tonic client through the proxy to a tonic server, statuses and trailers intact,
//! each call recorded with its trailers.

use std::time::Duration;

use http::Version;

use crate::harness::grpc::{Greeter, GrpcServer};
use crate::harness::recordings::{all_traffic, create_recording, start_recording};
use crate::harness::seed::eventually;
use crate::harness::tls::TestCa;
use crate::harness::{body, Http, TestProxy, Upstream};

#[tokio::test]
async fn an_h2_client_reaches_an_h2c_upstream_as_http2_on_one_connection() {
    let up = Upstream::start().await;
    let proxy = h2c_proxy(up.addr()).await;
    let h2 = Http::h2c();
    let r = h2
        .request("POST", &proxy.url("/echo?n=0"), body("over h2"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    let echo = r.json();
    assert_eq!(echo["version"], "HTTP/2.0", "the upstream saw {echo}");
    assert_eq!(echo["body"], "over h2");

    // Twenty at once share the one connection (multiplexed streams).
    let calls = (1..=20).map(|i| {
        let (h2, url) = (h2.clone(), proxy.url(&format!("/sleep/50?n={i}")));
        tokio::spawn(async move { h2.get(&url).await })
    });
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["version"], "HTTP/2.0");
    }
    assert_eq!(up.connections().len(), 1, "streams share a connection");
    // An HTTP/1.1 client is carried over the same HTTP/2.
    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.json()["version"], "HTTP/2.0");
    let status = proxy.mgmt_get("/proxy").await.json();
    assert_eq!(status["upstream_h2_connections"], 1, "{status}");
}

#[tokio::test]
async fn alpn_settles_http2_with_an_https_upstream_that_offers_it() {
    let ca = TestCa::new();
    let cert = ca.issue("up", &["localhost"]);
    let up = Upstream::new()
        .tls(cert.server_config(&[b"h2", b"http/1.1"]))
        .run()
        .await;
    let proxy = ca.proxy_to(&up).start().await;
    let r = Http::h2c().get(&proxy.url("/echo")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], "HTTP/2.0");
    // With only http/1.1 on offer, `auto` speaks HTTP/1.1; `h2` refuses with a 502.
    let h1_only = Upstream::new()
        .tls(cert.server_config(&[b"http/1.1"]))
        .run()
        .await;
    let proxy = ca.proxy_to(&h1_only).start().await;
    assert_eq!(
        Http::h2c().get(&proxy.url("/echo")).await.json()["version"],
        "HTTP/1.1"
    );
    let strict = ca
        .proxy_to(&h1_only)
        .arg("--upstream-protocol")
        .arg("h2")
        .start()
        .await;
    let r = Http::new().get(&strict.url("/echo")).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("HTTP/2"), "{}", r.text());
}

#[tokio::test]
async fn grpc_calls_pass_with_their_statuses_and_are_recorded_with_trailers() {
    let server = GrpcServer::start().await;
    // `auto` to a plain upstream: gRPC goes as h2c, as it must.
    let proxy = TestProxy::builder()
        .upstream_url(server.url())
        .start()
        .await;
    let id = create_recording(&proxy, "grpc", "").await;
    start_recording(&proxy, &id).await;
    let mut greeter = Greeter::connect(proxy.proxy_url()).await;

    let ok = greeter.say_hello("proxy").await.expect("the call succeeds");
    assert_eq!(ok.get_ref().message, "hello proxy");
    assert_eq!(
        ok.metadata().get("x-greeter").and_then(|v| v.to_str().ok()),
        Some("test")
    );

    let err = greeter.say_hello("nobody").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no greeter for nobody");

    let (replies, end) = greeter.count("n").await;
    assert_eq!(replies, ["n 1", "n 2", "n 3"]);
    assert!(end.is_ok(), "{end:?}");

    // Each call is recorded: its trailers, and its length-prefixed messages as bodies.
    let traffic = eventually("three calls recorded", Duration::from_secs(10), || async {
        let t = all_traffic(&proxy, &id).await;
        (t.len() == 3 && t.iter().all(|d| !d["response"].is_null())).then_some(t)
    })
    .await;
    let by_path = |p: &str| {
        traffic
            .iter()
            .filter(|d| d["request"]["path"] == p)
            .cloned()
            .collect::<Vec<_>>()
    };
    let hello = by_path("/test.Greeter/SayHello");
    assert_eq!(hello.len(), 2);
    let ok_doc = hello
        .iter()
        .find(|d| d["response"]["trailers"]["grpc-status"][0] == "0")
        .unwrap_or_else(|| panic!("no call recorded with grpc-status 0: {hello:?}"));
    let body = &ok_doc["response"]["body"];
    // 5 bytes of prefix (no compression, length 13) and the message `hello proxy`.
    assert_eq!(body["size"], 18, "{body}");
    assert_eq!(ok_doc["request"]["headers"]["te"][0], "trailers");
    // A failing call is a trailers-only response: its status is in the headers.
    assert!(
        hello
            .iter()
            .any(|d| d["response"]["headers"]["grpc-status"][0] == "5"
                && d["response"]["headers"]["grpc-message"][0] == "no%20greeter%20for%20nobody"),
        "{hello:?}"
    );
    let count = by_path("/test.Greeter/Count");
    assert_eq!(count[0]["response"]["trailers"]["grpc-status"][0], "0");
}

/// Trailers cross in both directions: the request's reach an HTTP/2 upstream (which
/// echoes its body, trailers and all) and the response's reach the client.
#[tokio::test]
async fn trailers_pass_both_ways_over_http2() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let up = Upstream::start().await;
    let proxy = h2c_proxy(up.addr()).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from("payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = http::Request::post(proxy.url("/echo-body"))
        .header("te", "trailers")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    let resp = Http::h2c().stream(req).await;
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap();
    assert_eq!(
        body.trailers().and_then(|t| t.get("x-checksum")),
        Some(&http::HeaderValue::from_static("abc123")),
        "the trailers came back"
    );
    assert_eq!(body.to_bytes(), "payload");
}

#[tokio::test]
async fn a_stream_the_upstream_refuses_unprocessed_is_sent_again_when_it_has_no_body() {
    let first = |n, _| n == 1;
    let (addr, connections) = refusing_h2_server(first).await;
    let proxy = h2c_proxy(addr).await;
    let r = Http::new().get(&proxy.url("/a")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "sent again on a new connection: the refusing one takes no new stream"
    );

    // With a body, it cannot be sent again: a 502 that says it was not processed.
    let (addr, _) = refusing_h2_server(first).await;
    let proxy = h2c_proxy(addr).await;
    let r = Http::new()
        .request("POST", &proxy.url("/a"), body("data"))
        .await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("can be sent again"), "{}", r.text());
}

/// An HTTP/2 server (the h2 crate, bare) answering `200 ok`, except the streams
/// `refuse(n, on_connection)` picks (the server's `n`th stream, the connection's
/// `on_connection`th, from 1), which it refuses unprocessed with REFUSED_STREAM, as a
/// server going away does; counts its connections.
async fn refusing_h2_server(
    refuse: fn(usize, usize) -> bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams, connections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let streams = streams.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut on_connection = 0;
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    on_connection += 1;
                    let n = streams.fetch_add(1, Ordering::SeqCst) + 1;
                    if refuse(n, on_connection) {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    tokio::spawn(async move {
                        tokio::task::yield_now().await;
                        if let Ok(mut body) = respond.send_response(http::Response::new(()), false)
                        {
                            let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                        }
                    });
                }
            });
        }
    });
    (addr, connections)
}

/// A proxy speaking h2c to the upstream at `addr`.
async fn h2c_proxy(addr: std::net::SocketAddr) -> TestProxy {
    TestProxy::builder()
        .upstream_url(format!("http://{addr}"))
        .arg("--upstream-protocol")
        .arg("h2c")
        .start()
        .await
}

/// Under load (40 streams at once), an upstream whose connections each take 20 requests
/// and refuse the rest costs no request: what it refuses is sent again on a newer
/// connection (with one attempt only, about one request in ten fails here).
#[tokio::test]
async fn an_upstream_that_refuses_streams_after_20_per_connection_costs_no_request() {
    let (addr, connections) = refusing_h2_server(|_, on_connection| on_connection > 20).await;
    let proxy = h2c_proxy(addr).await;
    let h2 = Http::h2c();
    let clients = (0..40).map(|c| {
        let (h2, base) = (h2.clone(), proxy.url(&format!("/c{c}/")));
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..25 {
                let r = h2.get(&format!("{base}{i}")).await;
                statuses.push((r.status.as_u16(), r.text()));
            }
            statuses
        })
    });
    let mut failed = Vec::new();
    for c in clients {
        failed.extend(c.await.unwrap().into_iter().filter(|(s, _)| *s != 200));
    }
    assert!(
        failed.is_empty(),
        "{} of 1000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let made = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        made >= 1000 / 20,
        "only {made} connections for 1000 requests"
    );
}
