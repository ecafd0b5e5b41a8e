//! The Redis control channel: requests on `proxy_mgmt_request`, replies on
//! `proxy_mgmt_response`, applied by the same [`Controller`] as the HTTP API.
//!
//! A request is `{"operation", "param", "key"}`; its reply `{"code", "message", "key"}`
//! echoes the key exactly, so a client can match replies to requests on a channel that
//! many share. Requests run one at a time, in the order they arrive. The channel heals
//! by itself when Redis goes away and comes back.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisResult};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{ControlRequest, Controller, Reply};
use crate::config::settings::ControlChannel;
use crate::feed::redis::{connect_subscriber, open_client, Backoff, CONNECT_TIMEOUT};

/// A session that lasted this long was healthy: the next outage starts the backoff over.
const HEALTHY_SESSION: Duration = Duration::from_secs(5);

/// Serves the control channel until `shutdown` is cancelled.
pub async fn serve(channel: ControlChannel, ctl: Arc<Controller>, shutdown: CancellationToken) {
    let handle = move |req: ControlRequest| {
        let ctl = ctl.clone();
        async move { ctl.handle(&req).await }
    };
    serve_with(channel, handle, shutdown).await;
}

/// [`serve`] with the requests applied by `handle`, so the transport can be tested
/// without building a whole [`Controller`].
async fn serve_with<H, F>(channel: ControlChannel, handle: H, shutdown: CancellationToken)
where
    H: Fn(ControlRequest) -> F,
    F: Future<Output = Reply>,
{
    let (client, addr) = match open_client(&channel.redis_url) {
        Ok(c) => c,
        Err((addr, error)) => {
            tracing::error!(%addr, %error, "control channel: bad Redis URL; the control channel is off");
            return;
        }
    };
    let mut backoff = Backoff::new();
    // Set while Redis is away, so an outage is logged once, however long it lasts.
    let mut down_since: Option<Instant> = None;
    loop {
        let session = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = connect(&client, &channel) => s,
        };
        let (mut requests, mut replies) = match session {
            Ok(s) => s,
            Err(error) => {
                if down_since.is_none() {
                    tracing::error!(%addr, %error, "control channel: cannot reach Redis; retrying");
                    down_since = Some(Instant::now());
                } else {
                    tracing::debug!(%addr, %error, "control channel: reconnect failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        match down_since.take() {
            Some(t) => tracing::info!(
                %addr,
                outage_ms = t.elapsed().as_millis() as u64,
                "control channel: connected to Redis again"
            ),
            None => tracing::info!(
                %addr,
                request_channel = %channel.request_channel,
                response_channel = %channel.response_channel,
                "control channel listening"
            ),
        }
        let began = Instant::now();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = requests.next() => m,
            };
            let Some(msg) = msg else { break };
            // A request still running at shutdown is abandoned: the process is going away.
            let reply = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = reply_for(msg.get_payload_bytes(), &handle) => r,
            };
            let Some(reply) = reply else { continue };
            let sent = redis::cmd("PUBLISH")
                .arg(&channel.response_channel)
                .arg(reply.to_string())
                .query_async::<i64>(&mut replies)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%addr, %error, key = %reply["key"], "control channel: a reply could not be sent");
                if error.is_io_error() || error.is_connection_dropped() {
                    break; // Start a fresh session rather than fail every reply.
                }
            }
        }
        tracing::error!(%addr, "control channel: lost the connection to Redis; reconnecting");
        down_since = Some(Instant::now());
        if began.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One session: the subscription to requests and a connection to publish replies on.
async fn connect(
    client: &Client,
    channel: &ControlChannel,
) -> RedisResult<(PubSubStream, MultiplexedConnection)> {
    let requests = connect_subscriber(client, &channel.request_channel).await?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let replies = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((requests, replies))
}

/// The reply to one request payload, as the JSON to publish: `handle`'s reply for a
/// well-formed request, a 400 saying what was wrong for a malformed one that still has a
/// key to answer to, and `None` (logged) when there is nothing to answer to.
async fn reply_for<H, F>(payload: &[u8], handle: H) -> Option<Value>
where
    H: FnOnce(ControlRequest) -> F,
    F: Future<Output = Reply>,
{
    match serde_json::from_slice::<ControlRequest>(payload) {
        Ok(req) => {
            let key = req.key.clone().unwrap_or(Value::Null);
            let operation = req.operation.clone();
            let reply = handle(req).await;
            tracing::info!(%operation, code = reply.code, %key, "control request (Redis)");
            let mut out = json!({ "code": reply.code, "message": reply.message, "key": key });
            if let Some(proxy) = reply.proxy {
                out["proxy"] = *proxy;
            }
            Some(out)
        }
        Err(error) => {
            let key = match serde_json::from_slice::<Value>(payload) {
                Ok(Value::Object(mut fields)) => fields.remove("key"),
                Ok(_) => None,
                Err(_) => salvage_key(payload),
            };
            let preview = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
            match key {
                Some(key) => {
                    tracing::warn!(%error, %key, "control channel: malformed request");
                    Some(json!({
                        "code": 400,
                        "message": format!(
                            "malformed request: {error}; expected {{\"operation\": string, \"param\": any, \"key\": any}}"
                        ),
                        "key": key,
                    }))
                }
                None => {
                    tracing::warn!(%error, payload = %preview, "control channel: malformed request without a key; ignored");
                    None
                }
            }
        }
    }
}

/// The `"key": VALUE` of a payload that is not valid JSON as a whole (cut short, a stray
/// comma), so that its sender still gets an answer: the first value after the first
/// `"key":` that parses on its own.
fn salvage_key(payload: &[u8]) -> Option<Value> {
    const NEEDLE: &[u8] = b"\"key\"";
    let at = payload.windows(NEEDLE.len()).position(|w| w == NEEDLE)?;
    let rest = &payload[at + NEEDLE.len()..];
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    serde_json::Deserializer::from_slice(rest)
        .into_iter::<Value>()
        .next()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlCommand;
    use crate::feed::redis::testing::{unique, TestRedis, SHARED_URL};

    /// Stands in for `Controller::handle`: decodes like it, then answers with the command.
    async fn fake_handle(req: ControlRequest) -> Reply {
        match ControlCommand::parse(&req.operation, &req.param) {
            Ok(cmd) => Reply::ok(format!("{cmd:?}")),
            Err(reply) => reply,
        }
    }

    async fn reply(payload: &str) -> Option<Value> {
        reply_for(payload.as_bytes(), fake_handle).await
    }

    #[tokio::test]
    async fn a_request_is_applied_and_its_key_echoed_exactly() {
        for key in [json!("abc"), json!(42), json!({"n": [1, "x"]}), Value::Null] {
            let req = json!({"operation": "stop", "param": "TrafficReader", "key": key});
            let r = reply(&req.to_string()).await.unwrap();
            assert_eq!(
                r,
                json!({"code": 200, "message": "Stop(Some(\"TrafficReader\"))", "key": key})
            );
        }
        // No key and no param: still answered, with a null key.
        let r = reply(r#"{"operation": "status"}"#).await.unwrap();
        assert_eq!(r["code"], 200);
        assert_eq!(r["key"], Value::Null);
    }

    #[tokio::test]
    async fn an_unknown_operation_is_a_400_listing_the_operations() {
        let r = reply(r#"{"operation": "explode", "key": "k1"}"#)
            .await
            .unwrap();
        assert_eq!(r["code"], 400);
        assert_eq!(r["key"], "k1");
        let text = r["message"].as_str().unwrap();
        assert!(text.contains("unknown operation `explode`"), "{text}");
        assert!(text.contains("start_recording"), "{text}");
        let r = reply(r#"{"operation": "upstream_port", "param": "x", "key": 1}"#)
            .await
            .unwrap();
        assert_eq!(r["code"], 400);
        assert!(r["message"]
            .as_str()
            .unwrap()
            .contains("a port from 1 to 65535"));
    }

    #[tokio::test]
    async fn broken_json_still_gets_an_answer_when_its_key_can_be_read() {
        let r = reply(r#"{"operation": "status", "key": "k9""#)
            .await
            .unwrap();
        assert_eq!(
            (r["code"].clone(), r["key"].clone()),
            (json!(400), json!("k9"))
        );
        assert!(r["message"].as_str().unwrap().contains("malformed request"));
        let r = reply(r#"{"key": 12, "operation": "status",}"#)
            .await
            .unwrap();
        assert_eq!(r["key"], json!(12));
        assert!(reply(r#"{"operation": "status""#).await.is_none());
    }

    #[tokio::test]
    async fn a_malformed_request_with_a_key_gets_a_400_saying_what_was_wrong() {
        let r = reply(r#"{"operation": 5, "key": [7]}"#).await.unwrap();
        assert_eq!(r["code"], 400);
        assert_eq!(r["key"], json!([7]));
        assert!(
            r["message"].as_str().unwrap().contains("invalid type"),
            "{r}"
        );
        let r = reply(r#"{"param": "x", "key": "k"}"#).await.unwrap();
        assert!(r["message"]
            .as_str()
            .unwrap()
            .contains("missing field `operation`"));
    }

    #[tokio::test]
    async fn a_malformed_request_without_a_key_is_not_answered() {
        for payload in ["not json", "[1, 2]", r#"{"operation": 5}"#, "\"key\"", ""] {
            assert_eq!(reply(payload).await, None, "{payload}");
        }
        assert_eq!(reply_for(&[0xff, 0xfe], fake_handle).await, None);
    }

    /// The transport over a real Redis with a stand-in handler (the Controller itself is
    /// covered end to end by the integration tests).
    struct TestClient {
        conn: MultiplexedConnection,
        replies: PubSubStream,
        channel: ControlChannel,
    }

    impl TestClient {
        async fn new(url: &str, channel: ControlChannel) -> Self {
            let client = redis::Client::open(url).unwrap();
            Self {
                conn: client.get_multiplexed_async_connection().await.unwrap(),
                replies: connect_subscriber(&client, &channel.response_channel)
                    .await
                    .unwrap(),
                channel,
            }
        }

        /// Waits until the server listens, then sends `req` and returns the reply.
        async fn ask(&mut self, req: Value) -> Value {
            for _ in 0..200 {
                let (_, n): (String, i64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&self.channel.request_channel)
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
                if n > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&self.channel.request_channel)
                .arg(req.to_string())
                .query_async(&mut self.conn)
                .await
                .unwrap();
            let m = tokio::time::timeout(Duration::from_secs(5), self.replies.next())
                .await
                .expect("a reply within 5 s")
                .unwrap();
            serde_json::from_slice(m.get_payload_bytes()).unwrap()
        }
    }

    fn channel(url: &str) -> ControlChannel {
        ControlChannel {
            redis_url: url.into(),
            request_channel: unique("request"),
            response_channel: unique("response"),
        }
    }

    #[tokio::test]
    async fn requests_over_redis_are_answered_in_order_until_shutdown() {
        let channel = channel(SHARED_URL);
        let mut client = TestClient::new(SHARED_URL, channel.clone()).await;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with(channel, fake_handle, shutdown.clone()));

        let r = client
            .ask(json!({"operation": "upstream_port", "param": 8081, "key": "a"}))
            .await;
        assert_eq!(
            r,
            json!({"code": 200, "message": "UpstreamPort(8081)", "key": "a"})
        );
        // Several at once come back in the order they were sent.
        for i in 0..5 {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&client.channel.request_channel)
                .arg(json!({"operation": "test", "key": i}).to_string())
                .query_async(&mut client.conn)
                .await
                .unwrap();
        }
        for i in 0..5 {
            let m = client.replies.next().await.unwrap();
            let r: Value = serde_json::from_slice(m.get_payload_bytes()).unwrap();
            assert_eq!(r["key"], i);
        }

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("serve ends on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn the_channel_heals_after_redis_comes_back() {
        let mut redis = TestRedis::start().await;
        let channel = channel(&redis.url());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with(channel.clone(), fake_handle, shutdown.clone()));
        let mut client = TestClient::new(&redis.url(), channel.clone()).await;
        assert_eq!(
            client.ask(json!({"operation": "test", "key": 1})).await["code"],
            200
        );

        redis.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.restart().await;
        let mut client = TestClient::new(&redis.url(), channel).await;
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
}
