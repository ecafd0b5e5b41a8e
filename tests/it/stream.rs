//! `GET /traffic/stream`: Server-Sent Events of the exchanges as they complete, filtered
//! per watcher; a watcher that reads slowly is told what it missed, and the others and
//! the proxy go on.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::harness::recordings::{counter, counters};
use crate::harness::{body, Http, TestProxy, Upstream};

/// One SSE stream as a client reads it.
struct Sse {
    body: Incoming,
    buf: BytesMut,
}

/// An event: its name and its data.
#[derive(Debug)]
struct Event {
    name: String,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

impl Sse {
    /// Opens `/traffic/stream?{query}` on its own connection; `recv_buffer` makes the
    /// client's socket small, so that not reading holds the server back at once.
    async fn open(proxy: &TestProxy, query: &str, recv_buffer: Option<u32>) -> Sse {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = socket.connect(proxy.mgmt_addr()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("/traffic/stream?{query}"))
            .header("host", proxy.mgmt_addr().to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream",
            "{query}"
        );
        Sse {
            body: resp.into_body(),
            buf: BytesMut::new(),
        }
    }

    /// The next event (comments skipped), or `None` when none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = self.buf.split_to(end + 2);
                let text = std::str::from_utf8(&block).unwrap();
                let (mut name, mut data) = (String::new(), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Event { name, data });
            }
            let frame = tokio::time::timeout(wait, self.body.frame()).await.ok()?;
            let frame = frame.expect("the stream ended").expect("the stream broke");
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The URIs of the exchanges that arrive until one for `last` does (included),
    /// and the sum of the misses told meanwhile.
    async fn until(&mut self, last: &str) -> (Vec<String>, u64) {
        let (mut paths, mut missed) = (Vec::new(), 0);
        loop {
            let e = self
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("no event for {last} within 10 s; saw {paths:?}"));
            match e.name.as_str() {
                "exchange" => {
                    let path = e.json()["request"]["uri"].as_str().unwrap().to_owned();
                    paths.push(path.clone());
                    if path == last {
                        return (paths, missed);
                    }
                }
                "missed" => missed += e.json()["missed"].as_u64().unwrap(),
                other => panic!("unexpected event `{other}`: {}", e.data),
            }
        }
    }
}

async fn send(http: &Http, proxy: &TestProxy, method: &str, path: &str, host: &str) -> u16 {
    let req = hyper::Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("host", host)
        .body(body(""))
        .unwrap();
    http.send(req).await.status.as_u16()
}

#[tokio::test]
async fn each_watcher_gets_the_exchanges_its_filter_matches_and_only_those() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut all = Sse::open(&proxy, "", None).await;
    let mut posts = Sse::open(&proxy, "method=post", None).await;
    let mut get_errors = Sse::open(&proxy, "method=GET&status=5xx", None).await;
    let mut shop = Sse::open(&proxy, "host=shop.test", None).await;
    let mut not_found = Sse::open(&proxy, "status=404&path=/status/", None).await;

    let http = Http::new();
    // The traffic, then one marker for each watcher, matching its filter (and `all`'s).
    let traffic = [
        ("GET", "/users", "shop.test", 200),
        ("POST", "/orders", "other.test", 200),
        ("GET", "/status/503", "shop.test:8080", 503),
        ("GET", "/status/500", "other.test", 500),
        ("GET", "/status/404", "other.test", 404),
        ("POST", "/status/502", "other.test", 502),
        ("GET", "/statusx", "other.test", 200),
        ("POST", "/mark-post", "other.test", 200),
        ("GET", "/status/599", "other.test", 599),
        ("GET", "/mark-shop", "shop.test", 200),
        ("GET", "/status/404?mark", "other.test", 404),
    ];
    for (method, uri, host, want) in traffic {
        assert_eq!(
            send(&http, &proxy, method, uri, host).await,
            want,
            "{method} {uri}"
        );
    }
    let (seen, missed) = all.until("/status/404?mark").await;
    assert_eq!(missed, 0);
    assert_eq!(seen, traffic.map(|t| t.1));
    assert_eq!(
        posts.until("/mark-post").await.0,
        ["/orders", "/status/502", "/mark-post"]
    );
    assert_eq!(
        get_errors.until("/status/599").await.0,
        ["/status/503", "/status/500", "/status/599"]
    );
    assert_eq!(
        shop.until("/mark-shop").await.0,
        ["/users", "/status/503", "/mark-shop"]
    );
    assert_eq!(
        not_found.until("/status/404?mark").await.0,
        ["/status/404", "/status/404?mark"]
    );

    // What an event carries: the live window's message of a completed exchange.
    let mut one = Sse::open(&proxy, "path=/shape", None).await;
    let r = http
        .request("POST", &proxy.url("/shape?x=1"), body("{\"a\":1}"))
        .await;
    assert_eq!(r.status, 200);
    let e = one.next(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(e.name, "exchange");
    let m = e.json();
    assert_eq!(m["request"]["method"], "POST");
    assert_eq!(m["request"]["args"]["x"][0], "1");
    assert_eq!(m["request"]["body"]["data"], "{\"a\":1}");
    assert_eq!(m["response"]["statusCode"], 200);
    assert!(m["transaction_id"].is_string(), "{m}");
}

#[tokio::test]
async fn a_bad_filter_is_refused_and_watchers_are_bounded() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = proxy.mgmt_get("/traffic/stream?status=0xx").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("0xx"),
        "{}",
        r.text()
    );
    let r = proxy.mgmt_get("/traffic/stream?colour=red").await;
    assert_eq!(r.status, 400, "{}", r.text());

    let mut open = Vec::new();
    for _ in 0..32 {
        open.push(Sse::open(&proxy, "", None).await);
    }
    assert_eq!(stream_status(&proxy).await, 503);
    let r = proxy.mgmt_get("/traffic/stream").await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("GET /traffic?since="),
        "{}",
        r.text()
    );
    // A watcher that leaves frees its place (once the server sees the connection close).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stream_status(&proxy).await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status `GET /traffic/stream` answers now (the stream, if any, dropped at once).
async fn stream_status(proxy: &TestProxy) -> u16 {
    let req = hyper::Request::get(format!("{}/traffic/stream", proxy.mgmt_url()))
        .body(body(""))
        .unwrap();
    Http::new().stream(req).await.status().as_u16()
}

#[tokio::test]
async fn a_slow_watcher_is_told_what_it_missed_and_holds_back_nobody() {
    const N: usize = 3000;
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    // This one reads nothing until the traffic is over, through a small socket.
    let mut slow = Sse::open(&proxy, "", Some(4096)).await;
    let mut prompt = Sse::open(&proxy, "", None).await;
    let reader = tokio::spawn(async move { prompt.until("/last").await });

    let url = proxy.proxy_url();
    let senders: Vec<_> = (0..16)
        .map(|k| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = Http::new();
                for i in (k..N).step_by(16) {
                    // Bodies the window keeps 4 KiB of: events too large to sit in
                    // the sockets' buffers.
                    let r = http.get(&format!("{url}/bytes/4096?n={i}")).await;
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(Http::new().get(&proxy.url("/last")).await.status, 200);

    // The watcher that reads kept up with everything.
    let (seen, missed) = reader.await.unwrap();
    assert_eq!(missed, 0);
    assert_eq!(seen.len(), N + 1);
    // The streamer that feeds them lost nothing either, so every exchange reached the
    // tail: the slow watcher's events and misses add up to all of them.
    let c = counters(&proxy, "TrafficStreamer").await;
    assert_eq!(counter(&c, "lost"), 0, "{c}");
    let (seen, missed) = slow.until("/last").await;
    assert!(missed > 0, "the slow watcher was told of no miss");
    assert_eq!(seen.len() as u64 + missed, N as u64 + 1);
}

#[tokio::test]
async fn an_http2_exchange_is_matched_by_its_authority() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut local = Sse::open(&proxy, "host=127.0.0.1&method=PUT", None).await;
    let mut other = Sse::open(&proxy, "host=elsewhere.test", None).await;
    let r = Http::h2c()
        .request("PUT", &proxy.url("/h2"), body("over h2"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, hyper::Version::HTTP_2);
    let e = local.next(Duration::from_secs(10)).await.expect("an event");
    let m = e.json();
    assert_eq!(m["request"]["clientProtocol"], "HTTP/2.0", "{m}");
    // HTTP/2 sends no Host header: its `:authority` is recorded as `host`.
    let authority = proxy.proxy_addr().to_string();
    assert_eq!(m["request"]["headers"]["host"][0], authority.as_str());
    // The same exchange did not reach a watcher of another host.
    let marker = http_marker(&proxy, "elsewhere.test").await;
    assert_eq!(other.until(&marker).await.0, [marker]);
}

/// Sends a GET for a fresh path with this Host and returns the path.
async fn http_marker(proxy: &TestProxy, host: &str) -> String {
    let path = format!("/marker-{}", std::process::id());
    assert_eq!(send(&Http::new(), proxy, "GET", &path, host).await, 200);
    path
}
