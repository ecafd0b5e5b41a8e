//! HTTP/2 cleartext from clients, and WebSocket upgrades through the proxy.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Version;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::upstream::{pattern, WS_GREETING};
use crate::harness::{body, Http, TestProxy, Upstream};

#[tokio::test]
async fn h2c_prior_knowledge_is_answered_in_http2() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let h2 = Http::h2c();

    let r = h2
        .request("POST", &proxy.url("/echo?via=h2"), body("over h2c"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "via=h2");
    assert_eq!(echo["body"], "over h2c");
    // The upstream is spoken to in HTTP/1.1, with the client's authority as X-Forwarded-Host.
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        echo["headers"]["x-forwarded-host"][0],
        proxy.proxy_addr().to_string()
    );

    // A body larger than HTTP/2's initial flow-control window.
    let big = h2.get(&proxy.url("/bytes/1048576")).await;
    assert_eq!(big.version, Version::HTTP_2);
    assert!(
        big.body == pattern(1 << 20),
        "the h2 body changed on its way"
    );

    // Status and custom headers too; hop-by-hop headers would break HTTP/2 framing.
    let hop = h2.get(&proxy.url("/hop")).await;
    assert_eq!(hop.status, 200);
    assert_eq!(hop.header("x-end-to-end"), Some("kept"));
}

/// HTTP/2 clients may split Cookie into one field per cookie; an HTTP/1.1 upstream must
/// get them as one `Cookie` line (RFC 9113 8.2.3), or it sees only the first.
#[tokio::test]
async fn h2c_cookie_fields_reach_the_upstream_as_one_line() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let req = http::Request::get(proxy.url("/echo"))
        .header("cookie", "a=1")
        .header("cookie", "b=2; c=3")
        .body(body(""))
        .unwrap();
    let r = Http::h2c().send(req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(up.last_request().header_all("cookie"), ["a=1; b=2; c=3"]);
}

#[tokio::test]
async fn websocket_echo_both_ways() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let url = format!("ws://{}/ws", proxy.proxy_addr());
    let (mut ws, resp) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .expect("WebSocket handshake timed out")
    .unwrap_or_else(|e| panic!("WebSocket handshake through the proxy: {e}"));
    assert_eq!(resp.status(), 101);

    // Upstream to client, unprompted.
    assert_eq!(next_msg(&mut ws).await, Message::text(WS_GREETING));
    // Client to upstream and back.
    ws.send(Message::text("ping through the proxy"))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Message::text("ping through the proxy")
    );
    let binary = Bytes::from(vec![0u8, 1, 2, 254, 255]);
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::binary(binary));
    ws.close(None).await.unwrap();

    let seen = up.requests().into_iter().find(|s| s.path == "/ws").unwrap();
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert!(seen
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")));
    assert!(seen.header("sec-websocket-key").is_some());
}

async fn next_msg<S, E>(ws: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("no WebSocket message within 5 s")
        .expect("the WebSocket ended")
        .expect("a WebSocket message")
}
