//! The Redis layer against real servers: the traffic feed (publisher and subscription),
//! the live window's sorted set, the control channel's transport, and the control
//! contract of the real binary (replies `SET` at their key with an expiry, a password
//! that never shows). The unit tests (`cargo test --lib`) reach no server; these do.
//!
//! The shared Redis on 6379 serves tests that need not disturb it (each on names of its
//! own); a private `redis-server` serves those that kill it or need a password.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use heliosburn::config::settings::ControlChannel;
use heliosburn::control::{ControlCommand, ControlRequest, Reply};
use heliosburn::feed::redis::{RedisFeed, RedisPublisher};
use heliosburn::feed::{Feed, FeedError, Publisher, Received, Subscription};
use heliosburn::redis_link::{Endpoint, CONNECT_TIMEOUT};
use heliosburn::traffic::{MultiMap, RequestInfo, ResponseInfo, TrafficMessage};
use heliosburn::window::redis::RedisWindow;
use heliosburn::window::{now_micros, Window, WindowError};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::seed::{
    eventually, numsub, redis_conn, redis_url, subscribe, unique, TestRedis, SHARED_REDIS_PORT,
};
use crate::harness::{closed_port, TestProxy, Upstream};

fn shared() -> Endpoint {
    Endpoint::parse(&redis_url(SHARED_REDIS_PORT)).unwrap()
}

fn endpoint_of(server: &TestRedis) -> Endpoint {
    Endpoint::parse(&server.url()).unwrap()
}

/// A message in the seed's shape: the response event, carrying its request.
fn msg(i: usize) -> Arc<TrafficMessage> {
    let mut headers = MultiMap::new();
    headers.insert("host", ["example.test"]);
    let mut args = MultiMap::new();
    args.insert("q", [i.to_string(), "two".into()]);
    Arc::new(TrafficMessage {
        transaction_id: format!("transaction-{i}"),
        request_id: format!("request-{i}"),
        response_id: format!("response-{i}"),
        request: Arc::new(RequestInfo {
            created_at: "2015-03-11T00:00:00.000001Z".into(),
            client_protocol: "HTTP/1.1".into(),
            method: "GET".into(),
            uri: format!("/items?q={i}&q=two"),
            path: "/items".into(),
            args,
            headers: headers.clone(),
            body: None,
        }),
        response: Some(Arc::new(ResponseInfo {
            created_at: "2015-03-11T00:00:00.000002Z".into(),
            client_protocol: "HTTP/1.1".into(),
            status_code: 200,
            status_description: "OK".into(),
            headers,
            body: None,
            trailers: None,
            web_socket_messages: None,
        })),
    })
}

async fn next_message(sub: &mut dyn Subscription) -> Arc<TrafficMessage> {
    match tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a message within 5 s")
        .unwrap()
    {
        Received::Message(m) => m,
        other => panic!("unexpected {other:?}"),
    }
}

/// Polls a synchronous condition every 10 ms, at most 15 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The traffic feed

#[tokio::test]
async fn published_messages_reach_subscribers_as_the_seed_json() {
    let channel = unique("feed");
    let feed = RedisFeed::new(&shared(), &channel);
    let mut sub = feed.subscribe().await.unwrap();
    let mut raw = subscribe(SHARED_REDIS_PORT, &channel).await;
    let publisher = RedisPublisher::connect(&shared(), &channel, None)
        .await
        .unwrap();

    const N: usize = 1000;
    for i in 0..N {
        publisher.publish(msg(i));
    }
    for i in 0..N {
        assert_eq!(next_message(sub.as_mut()).await, msg(i));
        let m = tokio::time::timeout(Duration::from_secs(5), raw.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            m.get_payload_bytes(),
            serde_json::to_vec(msg(i).as_ref()).unwrap()
        );
    }
    wait_until("all are counted", || {
        publisher.stats().published == N as u64
    })
    .await;
    assert_eq!(publisher.stats().dropped, 0);
    assert!(sub.try_recv().is_none());
}

#[tokio::test]
async fn absent_redis_fails_at_once_naming_the_endpoint() {
    let endpoint =
        Endpoint::parse(&format!("redis://:pw-absent@127.0.0.1:{}/", closed_port())).unwrap();
    let started = Instant::now();
    let e = RedisPublisher::connect(&endpoint, "c", None)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, FeedError::Redis(_)), "{e}");
    assert!(e.to_string().contains(&endpoint.to_string()), "{e}");
    assert!(!e.to_string().contains("pw-absent"), "{e}");
    let e = RedisFeed::new(&endpoint, "c")
        .subscribe()
        .await
        .err()
        .unwrap();
    assert!(matches!(e, FeedError::Redis(_)), "{e}");
    let e = RedisWindow::connect(&endpoint, "k").await.err().unwrap();
    assert!(matches!(e, WindowError::Redis(_)), "{e}");
    assert!(started.elapsed() < CONNECT_TIMEOUT * 3);
}

#[tokio::test]
async fn foreign_payloads_are_counted_and_skipped() {
    let channel = unique("foreign");
    let mut sub = RedisFeed::new(&shared(), &channel)
        .subscribe_redis()
        .await
        .unwrap();
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    let good = serde_json::to_vec(msg(7).as_ref()).unwrap();
    redis::pipe()
        .publish(&channel, "not json")
        .publish(&channel, r#"{"transaction_id": 5}"#)
        .publish(&channel, good)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(next_message(&mut sub).await, msg(7));
    assert_eq!(sub.invalid(), 2);
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_how_many_it_lost() {
    let channel = unique("behind");
    let mut sub = RedisFeed::new(&shared(), &channel)
        .with_capacity(4)
        .subscribe_redis()
        .await
        .unwrap();
    let publisher = RedisPublisher::connect(&shared(), &channel, None)
        .await
        .unwrap();
    for i in 0..10 {
        publisher.publish(msg(i));
    }
    // Four wait in the queue; the other six arrive to a full one.
    wait_until("six are lost", || sub.lost_unreported() == 6).await;
    match sub.recv().await.unwrap() {
        Received::Lost(n) => assert_eq!(n, 6),
        other => panic!("expected a loss, got {other:?}"),
    }
    for i in 0..4 {
        assert_eq!(next_message(&mut sub).await, msg(i));
    }
    assert!(sub.try_recv().is_none());
}

#[tokio::test]
async fn dropping_the_publisher_ends_its_task() {
    let channel = unique("drop");
    let publisher = RedisPublisher::connect(&shared(), &channel, None)
        .await
        .unwrap();
    publisher.publish(msg(1));
    let counters = publisher.counters();
    drop(publisher);
    // The task holds the only other reference to the counters.
    wait_until("the task ends", || Arc::strong_count(&counters) == 1).await;
    assert_eq!(counters.snapshot().published, 1);
}

/// Log lines written while the guard lives (tasks of a current-thread test runtime run
/// on the test's thread, so they log here too).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || logs.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish(),
        )
    }

    fn lines_with(&self, text: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// Redis goes away mid-run: publishing never waits, every message is accounted for as
/// published or dropped, both sides heal when Redis is back, the subscriber is told of
/// the gap, and each side logs one error for the outage and one info when it healed.
#[tokio::test]
async fn an_outage_costs_counted_messages_never_a_wait() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let mut server = TestRedis::start().await;
    let channel = unique("outage");
    let feed = RedisFeed::new(&endpoint_of(&server), &channel);
    let mut sub = feed.subscribe().await.unwrap();
    let publisher = RedisPublisher::connect(&endpoint_of(&server), &channel, Some(1000))
        .await
        .unwrap();
    let mut total = 0u64;
    for i in 0..10 {
        publisher.publish(msg(i));
        total += 1;
    }
    for i in 0..10 {
        assert_eq!(next_message(sub.as_mut()).await, msg(i));
    }

    server.kill();
    let started = Instant::now();
    let m = msg(0);
    for _ in 0..100_000 {
        publisher.publish(m.clone());
        total += 1;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "publishing waited: {elapsed:?}"
    );
    wait_until("every message is accounted for", || {
        let s = publisher.stats();
        s.published + s.dropped == total
    })
    .await;
    assert!(publisher.stats().dropped >= 100_000 - 1000);

    server.restart().await;
    // Publish until the healed subscriber hears one: both sides back off on their own.
    let mut healed = false;
    let mut gap_seen = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healed && Instant::now() < deadline {
        publisher.publish(msg(999_999));
        total += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Some(r) = sub.try_recv() {
            match r {
                Received::Gap => gap_seen = true,
                Received::Lost(n) => panic!("a known loss of {n} (the reader kept up)"),
                Received::Skipped(n) => panic!("pub/sub skips nothing, got {n}"),
                Received::Message(m) => {
                    assert_eq!(m, msg(999_999));
                    healed = true;
                }
            }
        }
    }
    assert!(healed, "the feed did not heal");
    assert!(gap_seen, "the subscriber was not told about the gap");
    wait_until("every message is accounted for", || {
        let s = publisher.stats();
        s.published + s.dropped == total
    })
    .await;
    assert!(publisher.stats().published > 10);

    let lost = logs.lines_with("Redis feed publisher lost its connection");
    let back = logs.lines_with("Redis feed publisher reconnected");
    assert_eq!((lost.len(), back.len()), (1, 1), "{lost:?} {back:?}");
    assert!(lost[0].contains("ERROR"), "{lost:?}");
    // Everything dropped from the kill on, at `publish` or in the task, is reported.
    let dropped_since_kill = publisher.stats().dropped;
    assert!(
        back[0].contains(&format!("dropped={dropped_since_kill} ")),
        "{back:?} (dropped {dropped_since_kill})"
    );
    let lost = logs.lines_with("Redis subscription lost its connection");
    let back = logs.lines_with("Redis subscription restored");
    assert_eq!((lost.len(), back.len()), (1, 1), "{lost:?} {back:?}");
    assert!(
        lost[0].contains("ERROR") && lost[0].contains(&channel),
        "{lost:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The live window

fn window_msg(i: usize) -> Arc<TrafficMessage> {
    Arc::new(TrafficMessage {
        transaction_id: format!("t{i}"),
        request_id: format!("r{i}"),
        response_id: String::new(),
        request: Arc::new(RequestInfo {
            created_at: "2015-03-11T00:00:00.000000Z".into(),
            client_protocol: "HTTP/1.1".into(),
            method: "GET".into(),
            uri: "/".into(),
            path: "/".into(),
            args: MultiMap::new(),
            headers: MultiMap::new(),
            body: None,
        }),
        response: None,
    })
}

fn window_json(i: usize) -> Value {
    serde_json::to_value(window_msg(i).as_ref()).unwrap()
}

/// Everything in the set, whatever its age, with scores; the key expires a minute later.
async fn members(key: &str) -> Vec<(String, i64)> {
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    let all = crate::harness::seed::zrange(&mut conn, key).await;
    let _: () = redis::cmd("EXPIRE")
        .arg(key)
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    all
}

#[tokio::test]
async fn window_entries_older_than_a_second_before_the_newest_are_trimmed() {
    let key = unique("window-trim");
    let w = RedisWindow::connect(&shared(), &key).await.unwrap();
    let now = now_micros();
    w.push(&[
        (now - 2_500_000, window_msg(0)),
        (now - 2_000_000, window_msg(1)),
    ])
    .await
    .unwrap();
    assert_eq!(members(&key).await.len(), 2);
    // Exactly one second older than the newest stays; a microsecond more goes.
    w.push(&[
        (now - 1_000_001, window_msg(2)),
        (now - 1_000_000, window_msg(3)),
        (now, window_msg(4)),
    ])
    .await
    .unwrap();
    let json = |i| serde_json::to_string(window_msg(i).as_ref()).unwrap();
    assert_eq!(
        members(&key).await,
        vec![(json(3), now - 1_000_000), (json(4), now)]
    );
}

#[tokio::test]
async fn window_readers_see_each_message_once_with_an_advancing_cursor() {
    let key = unique("window-read");
    let w = RedisWindow::connect(&shared(), &key).await.unwrap();
    let now = now_micros();
    // The same time twice: the second gets the next microsecond, so none is skipped.
    w.push(&[
        (now, window_msg(0)),
        (now, window_msg(1)),
        (now + 1, window_msg(2)),
    ])
    .await
    .unwrap();
    let page = w.read_since(0).await.unwrap();
    assert_eq!(
        page.messages,
        vec![window_json(0), window_json(1), window_json(2)]
    );
    assert_eq!(page.cursor, now + 2);

    let again = w.read_since(page.cursor).await.unwrap();
    assert!(again.messages.is_empty());
    assert_eq!(again.cursor, page.cursor);

    w.push(&[(now_micros(), window_msg(3)), (now_micros(), window_msg(4))])
        .await
        .unwrap();
    let next = w.read_since(page.cursor).await.unwrap();
    assert_eq!(next.messages, vec![window_json(3), window_json(4)]);
    assert!(next.cursor > page.cursor);
    members(&key).await;
}

#[tokio::test]
async fn stale_window_entries_are_not_read_even_before_a_push_trims_them() {
    let key = unique("window-stale");
    let w = RedisWindow::connect(&shared(), &key).await.unwrap();
    w.push(&[(now_micros() - 1_500_000, window_msg(0))])
        .await
        .unwrap();
    let page = w.read_since(0).await.unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.cursor, 0);
    assert_eq!(members(&key).await.len(), 1);
}

#[tokio::test]
async fn the_first_window_push_and_read_after_a_redis_restart_succeed() {
    let mut server = TestRedis::start().await;
    let w = RedisWindow::connect(&endpoint_of(&server), "window")
        .await
        .unwrap();
    w.push(&[(now_micros(), window_msg(0))]).await.unwrap();
    server.restart().await;
    w.push(&[(now_micros(), window_msg(1))]).await.unwrap();
    server.restart().await;
    assert!(w.read_since(0).await.unwrap().messages.is_empty());
}

#[tokio::test]
async fn window_pushes_fail_while_redis_is_away_and_work_again_after() {
    let mut server = TestRedis::start().await;
    let w = RedisWindow::connect(&endpoint_of(&server), "window")
        .await
        .unwrap();
    w.push(&[(now_micros(), window_msg(0))]).await.unwrap();
    server.kill();
    assert!(w.push(&[(now_micros(), window_msg(1))]).await.is_err());
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.push(&[(now_micros(), window_msg(2))]).await.is_err() {
        assert!(Instant::now() < deadline, "the window did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = w.read_since(0).await.unwrap();
    assert_eq!(page.messages, vec![window_json(2)]);
}

// ---------------------------------------------------------------------------------------
// The control channel's transport, with a stand-in for the Controller

/// Stands in for `Controller::handle`: decodes like it, then answers with the command.
async fn fake_handle(req: ControlRequest) -> Reply {
    match ControlCommand::parse(&req.operation, &req.param) {
        Ok(cmd) => Reply::ok(format!("{cmd:?}")),
        Err(reply) => reply,
    }
}

fn control_channel(endpoint: Endpoint) -> ControlChannel {
    let mut c = ControlChannel::new(endpoint);
    c.request_channel = unique("request");
    c.response_channel = unique("response");
    c
}

/// A client of the control channel on `port`: publishes requests, reads replies.
struct ControlClient {
    conn: MultiplexedConnection,
    replies: redis::aio::PubSubStream,
    channel: ControlChannel,
}

impl ControlClient {
    /// Subscribes to the replies and waits until the server listens for requests.
    async fn new(port: u16, channel: ControlChannel) -> Self {
        let mut conn = redis_conn(port).await;
        let replies = subscribe(port, &channel.response_channel).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while numsub(&mut conn, &channel.request_channel).await == 0 {
            assert!(Instant::now() < deadline, "the server never subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            conn,
            replies,
            channel,
        }
    }

    async fn publish(&mut self, req: &Value) {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel.request_channel)
            .arg(req.to_string())
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }

    async fn reply(&mut self) -> Value {
        let m = tokio::time::timeout(Duration::from_secs(5), self.replies.next())
            .await
            .expect("a reply within 5 s")
            .unwrap();
        serde_json::from_slice(m.get_payload_bytes()).unwrap()
    }

    async fn ask(&mut self, req: Value) -> Value {
        self.publish(&req).await;
        self.reply().await
    }
}

#[tokio::test]
async fn control_requests_over_redis_are_answered_in_order_until_shutdown() {
    let channel = control_channel(shared());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(heliosburn::control::redis::serve_with(
        channel.clone(),
        fake_handle,
        shutdown.clone(),
    ));
    let mut client = ControlClient::new(SHARED_REDIS_PORT, channel).await;

    let r = client
        .ask(json!({"operation": "upstream_port", "param": 8081, "key": "a"}))
        .await;
    assert_eq!(
        r,
        json!({"code": 200, "message": "UpstreamPort(8081)", "key": "a"})
    );
    // Several at once come back in the order they were sent.
    for i in 0..5 {
        client
            .publish(&json!({"operation": "test", "key": i}))
            .await;
    }
    for i in 0..5 {
        assert_eq!(client.reply().await["key"], i);
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("serve ends on shutdown")
        .unwrap();
}

#[tokio::test]
async fn the_control_channel_heals_after_redis_comes_back() {
    let mut redis = TestRedis::start().await;
    let channel = control_channel(endpoint_of(&redis));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(heliosburn::control::redis::serve_with(
        channel.clone(),
        fake_handle,
        shutdown.clone(),
    ));
    let mut client = ControlClient::new(redis.port, channel.clone()).await;
    assert_eq!(
        client.ask(json!({"operation": "test", "key": 1})).await["code"],
        200
    );

    redis.restart().await;
    // The new client waits until the server has subscribed again.
    let mut client = ControlClient::new(redis.port, channel).await;
    assert_eq!(
        client.ask(json!({"operation": "test", "key": 2})).await["key"],
        2
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("serve ends on shutdown")
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// The control contract, end to end on the real binary

/// A settings file whose control section is `control` plus this test's channel names.
fn control_settings(control: &str, request: &str, response: &str) -> String {
    format!("control:\n{control}  request_channel: {request}\n  response_channel: {response}\n")
}

/// A proxy with no modules whose control channel is `control` (settings lines) on fresh
/// channel names; returns its upstream, the proxy and the request and response channels.
async fn control_proxy(control: &str) -> (Upstream, TestProxy, String, String) {
    let up = Upstream::start().await;
    let (request, response) = (unique("mgmt-request"), unique("mgmt-response"));
    let proxy = TestProxy::builder()
        .upstream(&up)
        .no_modules()
        .config_yaml(&control_settings(control, &request, &response))
        .start()
        .await;
    (up, proxy, request, response)
}

/// Waits until the proxy listens on `request`.
async fn proxy_listens(conn: &MultiplexedConnection, request: &str) {
    crate::harness::seed::wait_for_subscriber(conn, request).await;
}

/// Publishes `req` on `request` and polls `GET key` every 2 ms, at most `within`;
/// returns the reply read there and how long it took.
async fn publish_and_poll(
    conn: &mut MultiplexedConnection,
    request: &str,
    req: &Value,
    key: &str,
    within: Duration,
) -> (Value, Duration) {
    let started = Instant::now();
    let n: i64 = redis::cmd("PUBLISH")
        .arg(request)
        .arg(req.to_string())
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "one proxy listens");
    loop {
        let got: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
        if let Some(text) = got {
            return (serde_json::from_str(&text).unwrap(), started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "no reply at `{key}` within {within:?} of {req}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The seed's `{code, message, key}`; a `status` reply has the proxy's state beside them.
fn assert_reply_shape(reply: &Value, status: bool) {
    let mut fields: Vec<&str> = reply
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    let expected: &[&str] = if status {
        &["code", "key", "message", "proxy"]
    } else {
        &["code", "key", "message"]
    };
    assert_eq!(fields, expected, "{reply}");
}

#[tokio::test]
async fn a_control_reply_is_readable_at_its_key_within_100_ms() {
    let (_up, _proxy, request, response) = control_proxy(&format!(
        "  redis_host: 127.0.0.1\n  redis_port: {SHARED_REDIS_PORT}\n"
    ))
    .await;
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    let mut replies = subscribe(SHARED_REDIS_PORT, &response).await;
    proxy_listens(&conn, &request).await;

    // A string key is SET at that string.
    let key = unique("reply");
    let req = json!({"operation": "status", "key": key});
    let (reply, took) =
        publish_and_poll(&mut conn, &request, &req, &key, Duration::from_millis(100)).await;
    assert_reply_shape(&reply, true);
    assert_eq!(
        (reply["code"].clone(), reply["key"].clone()),
        (json!(200), json!(key))
    );
    assert!(reply["message"].is_array(), "{reply}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "TTL {ttl}");
    // The same reply went out on the response channel.
    let published = crate::harness::seed::next_json(&mut replies, Duration::from_secs(5))
        .await
        .expect("the reply is published too");
    assert_eq!(published, reply);
    println!("reply readable at its key after {took:?}");

    // A number key is SET at its JSON text.
    let n = rand_key_number();
    let req = json!({"operation": "unknown_op", "key": n});
    let (reply, _) = publish_and_poll(
        &mut conn,
        &request,
        &req,
        &n.to_string(),
        Duration::from_millis(100),
    )
    .await;
    assert_reply_shape(&reply, false);
    assert_eq!(
        (reply["code"].clone(), reply["key"].clone()),
        (json!(400), json!(n))
    );
    crate::harness::seed::next_json(&mut replies, Duration::from_secs(5))
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .arg(n)
        .query_async(&mut conn)
        .await
        .unwrap();

    // No key: published with a null key (and nothing to SET).
    let n: i64 = redis::cmd("PUBLISH")
        .arg(&request)
        .arg(json!({"operation": "status"}).to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let r = crate::harness::seed::next_json(&mut replies, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (r["code"].clone(), r["key"].clone()),
        (json!(200), Value::Null)
    );
}

/// A key of digits no other run uses.
fn rand_key_number() -> u64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000) as u64 + 1_000_000_000_000
}

#[tokio::test]
async fn a_control_reply_expires_after_reply_ttl() {
    let (_up, _proxy, request, _) = control_proxy(&format!(
        "  redis_port: {SHARED_REDIS_PORT}\n  reply_ttl: 1\n"
    ))
    .await;
    let mut conn = redis_conn(SHARED_REDIS_PORT).await;
    proxy_listens(&conn, &request).await;
    let key = unique("expiring");
    let req = json!({"operation": "test", "key": key});
    let (reply, _) =
        publish_and_poll(&mut conn, &request, &req, &key, Duration::from_millis(100)).await;
    assert_eq!(reply["key"], json!(key));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "TTL {ttl} right after the reply");
    eventually("the reply expires", Duration::from_secs(5), || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            let n: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            (n == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_redis_url_with_a_password_works_and_the_password_never_shows() {
    const PASSWORD: &str = "pw-Zq81-never-printed";
    let server = TestRedis::with_password(PASSWORD).await;
    let up = Upstream::start().await;
    let (request, response) = (unique("mgmt-request"), unique("mgmt-response"));
    let settings = format!(
        "log:\n  level: debug\n{}",
        control_settings(
            &format!("  redis_url: '{}'\n  reply_ttl: 30\n", server.url()),
            &request,
            &response,
        )
    );
    let proxy = TestProxy::builder()
        .upstream(&up)
        .no_modules()
        .config_yaml(&settings)
        .start()
        .await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    proxy_listens(&conn, &request).await;
    let key = unique("authed");
    let req = json!({"operation": "status", "key": key});
    let (reply, _) =
        publish_and_poll(&mut conn, &request, &req, &key, Duration::from_millis(100)).await;
    assert_eq!(
        (reply["code"].clone(), reply["key"].clone()),
        (json!(200), json!(key))
    );

    let status = proxy.mgmt_get("/status").await;
    assert_eq!(status.status, 200);
    let line = proxy
        .wait_for_log(&["control channel listening", &request])
        .await;
    assert!(
        line.contains(&format!("127.0.0.1:{}", server.port)),
        "{line}"
    );

    // A wrong password: the control channel says it cannot reach Redis, without it.
    const WRONG: &str = "pw-wrong-Kx77";
    let wrong = format!("redis://:{WRONG}@127.0.0.1:{}/", server.port);
    let other = TestProxy::builder()
        .upstream(&up)
        .no_modules()
        .config_yaml(&control_settings(
            &format!("  redis_url: '{wrong}'\n"),
            &unique("mgmt-request"),
            &unique("mgmt-response"),
        ))
        .start()
        .await;
    other
        .wait_for_log(&["control channel: cannot reach Redis"])
        .await;

    for (what, text) in [
        ("stderr", proxy.stderr()),
        ("stdout", proxy.stdout()),
        ("GET /status", status.text()),
        ("the other's stderr", other.stderr()),
        ("the other's stdout", other.stdout()),
    ] {
        for secret in [PASSWORD, WRONG] {
            assert!(!text.contains(secret), "{what} shows a password:\n{text}");
        }
    }
}
