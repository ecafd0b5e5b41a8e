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

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{ControlCommand, ControlRequest, Controller, Reply};
use crate::config::settings::ControlChannel;
use crate::redis_link::{self, Backoff, Commands, Delivery, RedisLinkError, Subscription};

/// Requests waiting to be applied before new ones are dropped (counted, logged).
const REQUEST_QUEUE: usize = 1024;
/// How long Redis may take to take a reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

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
pub async fn serve_with<H, F>(channel: ControlChannel, handle: H, shutdown: CancellationToken)
where
    H: Fn(ControlRequest) -> F,
    F: Future<Output = Reply>,
{
    let endpoint = &channel.endpoint;
    let session = tokio::select! {
        _ = shutdown.cancelled() => None,
        s = setup(&channel) => Some(s),
    };
    let Some((mut requests, replies)) = session else {
        return;
    };
    tracing::info!(
        %endpoint,
        request_channel = %channel.request_channel,
        response_channel = %channel.response_channel,
        reply_ttl_s = channel.reply_ttl.as_secs_f64(),
        "control channel listening"
    );
    // The subscription heals by itself (and logs its outages); replies reconnect on use.
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return,
            d = requests.recv() => d,
        };
        let payload = match delivery {
            Some(Delivery::Message(payload)) => payload,
            Some(Delivery::Gap) => {
                tracing::warn!(%endpoint, "control channel: requests sent while Redis was away were missed");
                continue;
            }
            Some(Delivery::Lost(n)) => {
                tracing::warn!(%endpoint, lost = n, "control channel: requests arrived faster than they ran; some were dropped");
                continue;
            }
            None => return,
        };
        // A request still running at shutdown is abandoned: the process is going away.
        let reply = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = reply_for(&payload, &handle) => r,
        };
        let Some(reply) = reply else { continue };
        // After an outage the reply connection is stale: the reply goes once more on a
        // fresh one rather than be lost. The SET is idempotent; a PUBLISH that did get
        // through before the break would reach the client twice, with the same key.
        let pipe = reply_pipeline(&channel, &reply);
        if let Err(error) = replies.query_idempotent::<()>(&pipe).await {
            tracing::warn!(%error, key = %reply["key"], "control channel: a reply could not be sent");
        }
    }
}

/// Subscribes to the requests and connects for the replies, trying until it works: the
/// channel comes up when Redis does. One error per outage, one info when it ends.
async fn setup(channel: &ControlChannel) -> (Subscription, Commands) {
    let mut backoff = Backoff::new();
    let mut down_since: Option<Instant> = None;
    loop {
        match try_setup(channel).await {
            Ok(s) => {
                if let Some(t) = down_since {
                    tracing::info!(
                        endpoint = %channel.endpoint,
                        outage_ms = t.elapsed().as_millis() as u64,
                        "control channel: connected to Redis"
                    );
                }
                return s;
            }
            Err(error) if down_since.is_none() => {
                tracing::error!(%error, "control channel: cannot reach Redis; retrying");
                down_since = Some(Instant::now());
            }
            Err(error) => tracing::debug!(%error, "control channel: connecting failed"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn try_setup(channel: &ControlChannel) -> Result<(Subscription, Commands), RedisLinkError> {
    let requests =
        redis_link::subscribe(&channel.endpoint, &channel.request_channel, REQUEST_QUEUE).await?;
    let replies = Commands::connect(&channel.endpoint, RESPONSE_TIMEOUT).await?;
    Ok((requests, replies))
}

/// Where a reply is `SET`: the request's key as the client sent it (a JSON string at
/// that string, any other JSON value at its JSON text); no key, no SET.
fn reply_key(key: &Value) -> Option<String> {
    match key {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One round trip (MULTI/EXEC) that `SET`s the reply at its key with the reply expiry
/// and publishes it: the seed's dashboard publishes a request, then polls `GET key`.
fn reply_pipeline(channel: &ControlChannel, reply: &Value) -> ::redis::Pipeline {
    let text = reply.to_string();
    let mut pipe = ::redis::pipe();
    pipe.atomic();
    if let Some(key) = reply_key(&reply["key"]) {
        let ttl_ms = channel.reply_ttl.as_millis().max(1) as u64;
        pipe.cmd("SET")
            .arg(key)
            .arg(&text)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
    }
    pipe.cmd("PUBLISH")
        .arg(&channel.response_channel)
        .arg(&text)
        .ignore();
    pipe
}

/// Decodes one control payload as the channel does, acting on nothing: the reply a
/// malformed one gets (`None`: nothing to answer to), or the command it asks for (or the
/// refusal of one it names wrongly). The fuzz targets run every payload through it.
pub fn decode(payload: &[u8]) -> Option<Value> {
    use futures_util::FutureExt;
    reply_for(payload, |req| async move {
        match ControlCommand::parse(&req.operation, &req.param) {
            Ok(command) => Reply::ok(json!(format!("{command:?}"))),
            Err(refusal) => refusal,
        }
    })
    .now_or_never()
    .flatten()
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

    fn packed(pipe: &::redis::Pipeline) -> String {
        String::from_utf8_lossy(&pipe.get_packed_pipeline()).replace("\r\n", " ")
    }

    #[test]
    fn a_reply_is_set_at_its_key_with_the_expiry_and_published() {
        let mut channel = ControlChannel::new(crate::redis_link::Endpoint::from_parts("h", 1, 0));
        channel.reply_ttl = Duration::from_secs(60);
        let reply = json!({"code": 200, "message": "ok", "key": "k1"});
        let text = packed(&reply_pipeline(&channel, &reply));
        let body = reply.to_string();
        let set = format!("SET $2 k1 ${} {body} $2 PX $5 60000", body.len());
        let publish = format!("PUBLISH $19 proxy_mgmt_response ${} {body}", body.len());
        assert!(text.contains(&set), "{text}");
        assert!(text.contains(&publish), "{text}");
        assert!(text.find(&set) < text.find(&publish), "SET first: {text}");
        assert!(text.starts_with("*1 $5 MULTI"), "one transaction: {text}");

        // A key that is not a string is SET at its JSON text; no key, no SET.
        assert_eq!(reply_key(&json!(42)), Some("42".into()));
        assert_eq!(reply_key(&json!({"a": 1})), Some(r#"{"a":1}"#.into()));
        assert_eq!(reply_key(&json!("x y")), Some("x y".into()));
        let text = packed(&reply_pipeline(
            &channel,
            &json!({"code": 200, "key": null}),
        ));
        assert!(!text.contains("SET"), "{text}");
        assert!(text.contains("PUBLISH"), "{text}");
    }
}
