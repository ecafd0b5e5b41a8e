//! HTTP/2 cleartext from clients, and WebSocket upgrades through the proxy.

use std::time::Duration;

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

pub(crate) async fn next_msg<S, E>(ws: &mut S) -> Message
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

/// A WebSocket's messages are recorded with the upgrade, in the order they passed, each
/// with its direction and time: text, binary and the close with its code, both ways.
#[tokio::test]
async fn websocket_messages_are_recorded_in_order_both_ways() {
    use crate::harness::recordings::{all_traffic, create_recording, start_recording};
    use crate::harness::seed::eventually;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};

    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "ws", "").await;
    start_recording(&proxy, &id).await;
    let url = format!("ws://{}/ws", proxy.proxy_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::text(WS_GREETING));
    ws.send(Message::text(r#"{"n":1}"#)).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::text(r#"{"n":1}"#));
    let binary = Bytes::from(vec![0u8, 1, 2, 254, 255]);
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::binary(binary));
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    // The upstream's close answers ours: the stream ends.
    assert!(matches!(next_msg(&mut ws).await, Message::Close(Some(_))));

    let messages = eventually("the messages recorded", Duration::from_secs(10), || async {
        let traffic = all_traffic(&proxy, &id).await;
        let doc = traffic.iter().find(|d| d["request"]["path"] == "/ws")?;
        let ms = doc["response"]["webSocketMessages"].as_array()?.clone();
        (ms.len() >= 7).then_some(ms)
    })
    .await;
    let seen: Vec<(String, u64, String)> = messages
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_owned(),
                m["opcode"].as_u64().unwrap(),
                m["data"]["data"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("receive", 1, WS_GREETING),
        ("send", 1, r#"{"n":1}"#),
        ("receive", 1, r#"{"n":1}"#),
        ("send", 2, "AAEC/v8="),
        ("receive", 2, "AAEC/v8="),
        ("send", 8, "done"),
    ];
    for (i, (dir, op, data)) in expected.iter().enumerate() {
        assert_eq!(
            (seen[i].0.as_str(), seen[i].1, seen[i].2.as_str()),
            (*dir, *op, *data),
            "message {i} of {seen:?}"
        );
    }
    assert_eq!(messages[5]["closeCode"], 1000);
    assert_eq!(messages[6]["type"], "receive");
    assert_eq!(messages[6]["opcode"], 8);
    assert!(messages
        .windows(2)
        .all(|w| w[0]["time"].as_str() <= w[1]["time"].as_str()));

    // The events that carried the messages complete no exchange of their own.
    let a = crate::harness::recordings::get_recording(&proxy, &id).await["accounting"].clone();
    assert_eq!(
        (a["served"].as_u64(), a["stored"].as_u64()),
        (Some(1), Some(1)),
        "{a}"
    );
    assert_eq!(a["lost"]["total"], 0, "{a}");

    // The HAR export carries them as Chrome does.
    let har = proxy.mgmt_get(&format!("/recording/{id}/har")).await.json();
    let entry = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request"]["url"].as_str().unwrap().ends_with("/ws"))
        .unwrap()
        .clone();
    let ms = entry["_webSocketMessages"].as_array().unwrap();
    assert_eq!(ms[0]["type"], "receive");
    assert_eq!(ms[3]["data"], "AAEC/v8=");
    assert!(ms[0]["time"].as_f64().unwrap() > 1.7e9);
}

/// A stop while a WebSocket is open: the tunnel ends with the drain, and the messages it
/// carried since the last hand-over are recorded all the same, and accounted for.
#[tokio::test]
async fn websocket_messages_in_flight_at_a_stop_are_recorded() {
    use std::sync::Arc;

    use crate::harness::recordings::{
        all_traffic, create_recording, get_recording, start_recording,
    };
    use crate::harness::TempDir;

    let up = Upstream::start().await;
    let dir = Arc::new(TempDir::new("ws-stop"));
    let mut proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .start()
        .await;
    let id = create_recording(&proxy, "ws", "").await;
    start_recording(&proxy, &id).await;
    let url = format!("ws://{}/ws", proxy.proxy_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::text(WS_GREETING));
    ws.send(Message::text("last words")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::text("last words"));
    let served = get_recording(&proxy, &id).await["accounting"]["served"].clone();
    proxy.sigterm();
    assert!(proxy.wait().await.success());

    let proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .start()
        .await;
    let traffic = all_traffic(&proxy, &id).await;
    let doc = traffic
        .iter()
        .find(|d| d["request"]["path"] == "/ws")
        .unwrap_or_else(|| panic!("no /ws in {traffic:?}"));
    let texts: Vec<(&str, &str)> = doc["response"]["webSocketMessages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {doc}"))
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap(),
                m["data"]["data"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("receive", WS_GREETING),
            ("send", "last words"),
            ("receive", "last words")
        ]
    );
    assert_eq!(served, 1, "the upgrade is one exchange served");
    assert_eq!(traffic.len(), 1);
}
