//! TrafficReader: publishes each exchange to the traffic feed, one message when the
//! request arrives and one (with the request again) when the response has been sent.
//! Bodies are captured beside the stream up to `body_limit`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;

use super::factory::{Factory, Kind, ModuleConfig};
use super::kwargs::{control_host_claim, feed_endpoint, in_range, redis_endpoint, Port, RedisUrl};
use super::{Built, ModuleError, PipelineModule};
use crate::feed::Publisher;
use crate::proxy::{Decision, Exchange, Phase};
use crate::recording::Recordings;
use crate::redact::{Redactor, Rules};
use crate::resources::{Claimed, FeedUse, RedisMode, Resources};
use crate::traffic::{self, RequestInfo, ResponseInfo, TrafficMessage, WebSocketMessage};

/// Publishes each request and response to the traffic feed.
pub static FACTORY: Factory = Factory::new::<ReaderKwargs>("TrafficReader", Kind::Pipeline);

/// Default capture per body direction: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderKwargs {
    /// `redis://[user:pass@]host[:port][/db]` (or `rediss://`); wins over the parts.
    pub redis_url: Option<RedisUrl>,
    pub redis_host: Option<String>,
    pub redis_port: Option<Port>,
    pub redis_db: Option<i64>,
    /// Channel to publish on (default `heliosburn.traffic`), or the stream's key in
    /// stream mode (default `heliosburn.traffic.stream`).
    pub redis_pub_queue: Option<String>,
    /// `pubsub` (the seed's, default) or `stream` (at least once).
    pub redis_mode: Option<RedisMode>,
    /// Entries the stream keeps (`XADD MAXLEN ~`, default 1000000).
    pub redis_stream_maxlen: Option<u64>,
    /// Bytes captured per body direction; 0 turns capture off.
    pub body_limit: Option<usize>,
    /// Messages waiting to be sent to Redis before new ones are dropped.
    pub queue_capacity: Option<usize>,
    /// Replace secrets before anything leaves the exchange (default true). Off only for
    /// a recording that must be replayed with real credentials; status says so.
    pub redact: Option<bool>,
    /// Header names redacted besides Authorization, Proxy-Authorization, Cookie, Set-Cookie.
    #[serde(default)]
    pub redact_headers: Vec<String>,
    /// Query, form and JSON field names redacted besides the defaults (passwords, tokens).
    #[serde(default)]
    pub redact_fields: Vec<String>,
    /// Regexes redacted wherever they match in a text body.
    #[serde(default)]
    pub redact_patterns: Vec<String>,
}

#[async_trait]
impl ModuleConfig for ReaderKwargs {
    fn validate(&self) -> Result<(), String> {
        // A body is captured up to this, per exchange in flight: 1 GiB is already a lot.
        in_range("body_limit", self.body_limit, 0..=1 << 30)?;
        in_range("queue_capacity", self.queue_capacity, 1..=1 << 20)?;
        in_range(
            "redis_stream_maxlen",
            self.redis_stream_maxlen,
            1000..=1 << 32,
        )?;
        Redactor::new(&self.rules(), [0; 32])
            .map(drop)
            .map_err(|e| format!("redact_patterns: {e}"))
    }

    fn claims(&self) -> Vec<Claimed> {
        control_host_claim(self.redis()).into_iter().collect()
    }

    fn feed(&self) -> Option<FeedUse> {
        Some(FeedUse::Publishes(feed_endpoint(
            self.redis(),
            &self.redis_pub_queue,
            self.redis_mode,
        )))
    }

    async fn build(&self, resources: &Resources) -> Result<Built, ModuleError> {
        let at = feed_endpoint(self.redis(), &self.redis_pub_queue, self.redis_mode);
        let publisher = resources
            .feeds
            .publisher(&at, self.queue_capacity, self.redis_stream_maxlen)
            .await?;
        let redactor = match self.redact.unwrap_or(true) {
            true => Some(
                Redactor::new(&self.rules(), resources.redaction_key)
                    .map_err(ModuleError::kwargs(FACTORY.name))?,
            ),
            false => {
                tracing::warn!("TrafficReader: redact: false; secrets (Authorization, cookies, passwords) are recorded as they are");
                None
            }
        };
        Ok(Built::Pipeline(Arc::new(TrafficReader::new(
            publisher,
            self,
            redactor,
            resources.recordings.clone(),
        ))))
    }
}

impl ReaderKwargs {
    fn rules(&self) -> Rules {
        Rules {
            headers: self.redact_headers.clone(),
            fields: self.redact_fields.clone(),
            patterns: self.redact_patterns.clone(),
        }
    }

    fn redis(&self) -> Option<crate::redis_link::Endpoint> {
        redis_endpoint(
            &self.redis_url,
            &self.redis_host,
            self.redis_port,
            self.redis_db,
        )
    }
}

/// A time-ordered id (UUIDv7) as text, written without the formatting machinery.
fn new_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

pub struct TrafficReader {
    publisher: Arc<dyn Publisher>,
    body_limit: usize,
    /// None: `redact: false`.
    redactor: Option<Redactor>,
    /// Values replaced by a mark.
    redacted: AtomicU64,
    /// Told of every exchange served, for the accounting of the recording it belongs to.
    recordings: Arc<Recordings>,
}

/// What the reader keeps between an exchange's phases.
#[derive(Clone)]
struct Pending {
    request: Arc<TrafficMessage>,
    /// The request's `createdAt`, as a time.
    started: DateTime<Utc>,
    response: Option<ResponseInfo>,
}

/// An exchange upgraded to WebSocket, after its completion: its response event and the
/// messages seen so far.
#[derive(Clone)]
struct Socket {
    exchange: Arc<TrafficMessage>,
    messages: Vec<WebSocketMessage>,
}

impl TrafficReader {
    pub fn new(
        publisher: Arc<dyn Publisher>,
        kwargs: &ReaderKwargs,
        redactor: Option<Redactor>,
        recordings: Arc<Recordings>,
    ) -> Self {
        Self {
            publisher,
            body_limit: kwargs.body_limit.unwrap_or(DEFAULT_BODY_LIMIT),
            redactor,
            redacted: AtomicU64::new(0),
            recordings,
        }
    }

    fn count(&self, n: usize) {
        if n > 0 {
            self.redacted.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl Phase for TrafficReader {
    fn on_request(&self, ex: &mut Exchange, req: &mut http::request::Parts) -> Decision {
        // The self-test is not traffic: neither recorded nor in the live window. Without
        // a pending message the response phases skip it too.
        if ex.internal {
            return Decision::Forward;
        }
        // To the microsecond, as the wire carries it and recordings start.
        let started = Utc::now().trunc_subsecs(6);
        let mut request = RequestInfo {
            created_at: traffic::timestamp(started),
            client_protocol: traffic::protocol_name(ex.client_version).into(),
            method: req.method.to_string(),
            uri: req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.to_string(), |pq| pq.to_string()),
            path: req.uri.path().to_owned(),
            args: traffic::query_multimap(req.uri.query()),
            headers: traffic::header_multimap(&req.headers),
            body: None,
        };
        // HTTP/2 names the host in `:authority`, not in a header: kept as `host`, so that
        // every exchange says which host it was for.
        if !request.headers.contains_key("host") {
            if let Some(authority) = req.uri.authority() {
                request.headers.push("host", authority.as_str());
            }
        }
        // Secrets go before the first message leaves the exchange.
        if let Some(r) = &self.redactor {
            let (uri, in_uri) = r.uri(&request.uri);
            request.uri = uri;
            r.args(&mut request.args);
            let in_headers = r.headers(&mut request.headers);
            self.count(in_uri + in_headers);
        }
        let msg = Arc::new(TrafficMessage {
            // Time-ordered (UUIDv7): stores index transactions by id, and ids that grow
            // append to the index instead of dirtying pages all over it.
            transaction_id: new_id(),
            request_id: new_id(),
            response_id: new_id(),
            request: Arc::new(request),
            response: None,
        });
        self.publisher.publish(msg.clone());
        ex.extensions.insert(Pending {
            request: msg,
            started,
            response: None,
        });
        Decision::Forward
    }

    fn on_response(&self, ex: &mut Exchange, resp: &mut http::response::Parts) {
        let Some(pending) = ex.extensions.get_mut::<Pending>() else {
            return;
        };
        let description = resp
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| resp.status.canonical_reason().unwrap_or("").to_owned());
        let mut info = ResponseInfo {
            created_at: traffic::timestamp(Utc::now()),
            client_protocol: traffic::protocol_name(ex.client_version).into(),
            status_code: resp.status.as_u16(),
            status_description: description,
            headers: traffic::header_multimap(&resp.headers),
            body: None,
            trailers: None,
            web_socket_messages: None,
        };
        if let Some(r) = &self.redactor {
            let n = r.headers(&mut info.headers);
            self.count(n);
        }
        pending.response = Some(info);
    }

    fn on_complete(&self, ex: &mut Exchange) {
        let Some(pending) = ex.extensions.remove::<Pending>() else {
            return;
        };
        // A response the proxy made itself (502/504) never passed on_response.
        let mut response = pending.response.unwrap_or_else(|| {
            let status = ex.status.unwrap_or(http::StatusCode::BAD_GATEWAY);
            ResponseInfo {
                created_at: traffic::timestamp(Utc::now()),
                client_protocol: traffic::protocol_name(ex.client_version).into(),
                status_code: status.as_u16(),
                status_description: status.canonical_reason().unwrap_or("").to_owned(),
                headers: Default::default(),
                body: None,
                trailers: None,
                web_socket_messages: None,
            }
        });
        if let Some(trailers) = &ex.response_trailers {
            let mut fields = traffic::header_multimap(trailers);
            if let Some(r) = &self.redactor {
                self.count(r.headers(&mut fields));
            }
            response.trailers = Some(fields);
        }
        // Ids and the shared request; the request gets its own copy only to carry the body
        // that had not arrived when the request event went out.
        let mut msg = TrafficMessage::clone(&pending.request);
        if self.body_limit > 0 {
            if let Some(mut body) = ex.request_body.as_mut().map(|c| c.to_body()) {
                let mut request = RequestInfo::clone(&msg.request);
                if let Some(r) = &self.redactor {
                    self.count(r.body(&mut body, request.headers.first("content-type")));
                }
                request.body = Some(body);
                msg.request = Arc::new(request);
            }
            response.body = ex.response_body.as_mut().map(|c| {
                let mut body = c.to_body();
                if let Some(r) = &self.redactor {
                    self.count(r.body(&mut body, response.headers.first("content-type")));
                }
                body
            });
        }
        msg.response = Some(Arc::new(response));
        self.recordings.served(pending.started);
        let msg = Arc::new(msg);
        if ex.status == Some(http::StatusCode::SWITCHING_PROTOCOLS) {
            // Its WebSocket messages, if a tunnel reads them, complete it later.
            ex.extensions.insert(Socket {
                exchange: msg.clone(),
                messages: Vec::new(),
            });
        }
        self.publisher.publish(msg);
    }

    /// Each batch goes out as the upgrade's response event again, with every message so
    /// far (kept within the body limit by the tunnel), so that the recorded document
    /// lists them all, in order.
    fn on_messages(&self, ex: &mut Exchange, batch: &[WebSocketMessage]) {
        let Some(socket) = ex.extensions.get_mut::<Socket>() else {
            return;
        };
        for m in batch {
            let mut m = m.clone();
            if let Some(r) = &self.redactor {
                // Text messages are most often JSON: its fields are redacted as a body's.
                let kind = (m.opcode == 1).then_some("application/json");
                self.count(r.body(&mut m.data, kind));
            }
            socket.messages.push(m);
        }
        let mut msg = TrafficMessage::clone(&socket.exchange);
        if let Some(r) = msg.response.as_mut() {
            Arc::make_mut(r).web_socket_messages = Some(socket.messages.clone());
        }
        self.publisher.publish(Arc::new(msg));
    }

    fn capture_limit(&self) -> usize {
        self.body_limit
    }

    fn admit(&self) -> Option<crate::proxy::Admission> {
        self.publisher.ready()
    }
}

impl PipelineModule for TrafficReader {
    fn counters(&self) -> serde_json::Value {
        let mut c = serde_json::to_value(self.publisher.stats()).unwrap_or_default();
        c["redact"] = self.redactor.is_some().into();
        c["redacted"] = self.redacted.load(Ordering::Relaxed).into();
        c
    }

    fn reset(&self) {
        self.publisher.reset_stats();
        self.redacted.store(0, Ordering::Relaxed);
    }
}
