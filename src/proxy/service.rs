//! The exchange: one request forwarded to the upstream and its response streamed back,
//! with the pipeline's phases around it and only the changes a reverse proxy must make.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::config::Upstream;
use crate::proxy::body::{
    read_prefix, BodyWatch, Capture, CaptureBudget, CaptureStats, Completion, PrefixError,
    RequestBody, ResponseBody,
};
use crate::proxy::error::ProxyError;
use crate::proxy::framing::WireMarks;
use crate::proxy::listener::Lease;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::pipeline::{Decision, Exchange, Reached, RunningPipeline};
use crate::proxy::upstream::{self, Dialer, Needs, Pool};
use crate::proxy::websocket;

/// The upstream with what every request needs of it precomputed.
pub struct UpstreamTarget {
    pub upstream: Upstream,
    host_header: HeaderValue,
    name: String,
    /// Idle keep-alive connections to this upstream.
    pub(crate) pool: Pool,
}

impl UpstreamTarget {
    pub fn new(upstream: Upstream) -> Result<Self, String> {
        let host_port = if upstream.host.contains(':') && !upstream.host.starts_with('[') {
            format!("[{}]:{}", upstream.host, upstream.port)
        } else {
            format!("{}:{}", upstream.host, upstream.port)
        };
        host_port
            .parse::<http::uri::Authority>()
            .map_err(|e| format!("`{host_port}` is not a valid upstream: {e}"))?;
        let host_header =
            HeaderValue::from_str(&host_port).map_err(|e| format!("`{host_port}`: {e}"))?;
        Ok(Self {
            name: upstream.to_string(),
            upstream,
            host_header,
            pool: Pool::default(),
        })
    }
}

/// The client end of a connection, with what every exchange on it adds to requests.
pub struct Client {
    pub addr: SocketAddr,
    /// The client's address as an `X-Forwarded-For` value, made once per connection.
    forwarded_for: HeaderValue,
    /// The connection's place under the listener's bounds: an upgraded connection's
    /// tunnel holds it, so it stays counted and bounded (none for the proxy's own).
    lease: Option<Arc<Lease>>,
    /// How the client framed its requests on the wire (none for the proxy's own).
    wire: Option<Arc<WireMarks>>,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    tls: bool,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let forwarded_for = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            addr,
            forwarded_for,
            lease: None,
            wire: None,
            tls: false,
        }
    }

    /// The connection is TLS.
    pub fn over_tls(self, tls: bool) -> Self {
        Self { tls, ..self }
    }

    pub fn with_wire(self, wire: Arc<WireMarks>) -> Self {
        Self {
            wire: Some(wire),
            ..self
        }
    }

    pub fn leased(self, lease: Arc<Lease>) -> Self {
        Self {
            lease: Some(lease),
            ..self
        }
    }
}

/// Settings of the forwarder that do not change at run time.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// How long a client may send nothing of a request body before the exchange fails
    /// with 408 (its fault, not the upstream's).
    pub client_body_timeout: Duration,
    /// Bytes all captures in flight may hold together ([`CaptureBudget`]).
    pub capture_memory: usize,
    /// The largest response head the upstream may send; also what an upstream
    /// connection buffers each way.
    pub max_header_size: usize,
}

/// Forwards exchanges to the current upstream through a pooled client.
pub struct Forwarder {
    target: ArcSwap<UpstreamTarget>,
    /// How connections to whichever upstream are made (protocol, TLS).
    dialer: Arc<Dialer>,
    pipeline: Arc<RunningPipeline>,
    settings: ForwardSettings,
    captures: Arc<CaptureBudget>,
    /// Where exchanges are counted (`GET /metrics`).
    metrics: Arc<ProxyMetrics>,
    /// Every exchange is the proxy's own (the self-test's forwarder).
    internal: bool,
}

impl Forwarder {
    pub fn new(
        target: UpstreamTarget,
        dialer: Dialer,
        pipeline: Arc<RunningPipeline>,
        settings: ForwardSettings,
    ) -> Self {
        Self {
            target: ArcSwap::from_pointee(target),
            dialer: Arc::new(dialer),
            pipeline,
            captures: CaptureBudget::new(settings.capture_memory),
            settings,
            metrics: Arc::default(),
            internal: false,
        }
    }

    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// How much the captures in flight hold, and how many were cut short.
    pub fn capture_stats(&self) -> CaptureStats {
        self.captures.stats()
    }

    /// Marks every exchange of this forwarder as the proxy's own ([`Exchange::internal`]).
    pub fn internal(self) -> Self {
        Self {
            internal: true,
            ..self
        }
    }

    pub fn target(&self) -> Arc<UpstreamTarget> {
        self.target.load_full()
    }

    /// New exchanges go to this upstream; exchanges in flight finish where they are.
    pub fn set_target(&self, target: UpstreamTarget) {
        self.target.store(Arc::new(target));
    }

    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub fn settings(&self) -> &ForwardSettings {
        &self.settings
    }

    pub fn pipeline(&self) -> &Arc<RunningPipeline> {
        &self.pipeline
    }

    /// Handles one exchange. Never fails: upstream trouble becomes a 502/504 response.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: &Client,
    ) -> Response<ResponseBody> {
        let target = self.target.load_full();
        // This exchange runs on the pipeline as it is now, whatever starts or stops later.
        let pipeline = self.pipeline.snapshot();
        let mut ex = Exchange::new(client.addr, req.version());
        ex.internal = self.internal;
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, mut body) = req.into_parts();
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let declared = body.size_hint().exact();

        // Requests the proxy does not forward never reach the pipeline (nor a recording).
        let ambiguous = client.wire.as_ref().is_some_and(|w| w.next_is_ambiguous());
        let mut prefix = std::collections::VecDeque::new();
        let mut reserved = None;
        let (decision, reached) = match refusal(&parts, ambiguous) {
            Some((status, reason)) => (Decision::Fail { status, reason }, Reached::NONE),
            None => {
                // A phase that cannot take the exchange yet slows the client instead.
                if let Some(wait) = pipeline.admit() {
                    wait.await;
                }
                let needed = pipeline.request_body_needed();
                // What is read ahead is held in the capture budget (a frame may pass the
                // bytes asked for by up to the connection's buffer); when it is spent,
                // nothing is read, and the phase sees no prefix.
                let wanted = declared.map_or(needed, |d| needed.min(d as usize));
                let held = wanted + self.settings.max_header_size;
                let read = match needed {
                    0 => Ok(()),
                    _ if upgrade || body.is_end_stream() => Ok(()),
                    _ => match self.captures.try_reserve(held) {
                        None => Ok(()),
                        Some(r) => {
                            reserved = Some(r);
                            read_prefix(&mut body, needed, self.settings.client_body_timeout)
                                .await
                                .map(|(frames, data)| {
                                    prefix = frames;
                                    ex.request_prefix = Some(data);
                                })
                        }
                    },
                };
                if needed > 0 && body.is_end_stream() && ex.request_prefix.is_none() {
                    // No body at all: its whole, empty.
                    ex.request_prefix = Some(crate::proxy::BodyPrefix {
                        data: Bytes::new(),
                        whole: true,
                    });
                }
                match read {
                    Ok(()) => pipeline.request(&mut ex, &mut parts),
                    Err(PrefixError::Malformed(cause)) => (
                        Decision::Fail {
                            status: StatusCode::BAD_REQUEST,
                            reason: format!("the request body is broken: {cause}"),
                        },
                        Reached::NONE,
                    ),
                    Err(PrefixError::Stalled(after)) => (
                        Decision::Fail {
                            status: StatusCode::REQUEST_TIMEOUT,
                            reason: format!(
                                "the client stopped sending its request body for {after:?}"
                            ),
                        },
                        Reached::NONE,
                    ),
                }
            }
        };
        let limit = pipeline.capture_limit();
        let request_capture = (limit > 0).then(|| {
            let mut c = Capture::new(limit, self.captures.clone());
            c.expect(declared);
            Arc::new(Mutex::new(c))
        });
        let mut done = Box::new(Completion {
            ex,
            pipeline,
            reached,
            method,
            uri,
            request_capture: request_capture.clone(),
            response_capture: (limit > 0).then(|| Capture::new(limit, self.captures.clone())),
            upstream: None,
            upgraded: None,
            metrics: Some(self.metrics.clone()),
            watch: None,
            failure: None,
        });
        match decision {
            // What was read ahead goes upstream in the body's frames; no copy is kept.
            Decision::Forward => done.ex.request_prefix = None,
            Decision::Respond(resp) => {
                keep_read_body(&mut done);
                return answered(resp, done);
            }
            Decision::Fail { status, reason } => {
                keep_read_body(&mut done);
                return ProxyError::Refused { status, reason }.into_response(done);
            }
        }

        rewrite_request(
            &mut parts,
            &target,
            client,
            self.settings.preserve_host,
            upgrade,
        );
        let watch = Arc::new(BodyWatch::default());
        done.watch = Some(watch.clone());
        let upstream_req = Request::from_parts(
            parts,
            RequestBody::new(
                body,
                request_capture,
                watch.clone(),
                self.settings.client_body_timeout,
            )
            .with_prefix(prefix, reserved),
        );

        let timeout = self.settings.upstream_timeout;
        let needs = Needs {
            grpc: is_grpc(upstream_req.headers()),
            upgrade,
        };
        let send = target
            .pool
            .send(&self.dialer, &target.upstream, needs, upstream_req);
        // The upstream's time to answer counts from the last piece of the request body it
        // took: a long upload is no slow upstream (the client's stalls have their timeout).
        let sent = tokio::select! {
            sent = send => Ok(sent),
            () = watch.quiet_for(timeout) => Err(()),
        };
        // A client whose body broke or stalled failed the exchange, whatever the
        // upstream then did.
        let client_fault = |cause: String| {
            watch
                .fault()
                .map(|fault| ProxyError::Client { fault, cause })
        };
        let (mut resp, lent) = match sent {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => {
                let upstream = ProxyError::from_send(target.name.clone(), e, timeout);
                let error = client_fault(upstream.to_string()).unwrap_or(upstream);
                return error.into_response(done);
            }
            Err(_) => {
                let error = client_fault(format!("no response within {timeout:?}")).unwrap_or(
                    ProxyError::Timeout {
                        upstream: target.name.clone(),
                        timeout,
                    },
                );
                return error.into_response(done);
            }
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            // A WebSocket whose messages a phase captures: they are read beside the tunnel.
            let websocket = resp
                .headers()
                .get(header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            // permessage-deflate, when the upstream took it: the reader inflates.
            let deflate = resp
                .headers()
                .get_all("sec-websocket-extensions")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("permessage-deflate"));
            let capture = (websocket && limit > 0).then(|| {
                let (tx, exchange) = tokio::sync::oneshot::channel();
                done.upgraded = Some(tx);
                websocket::Reading {
                    limit,
                    deflate,
                    budget: self.captures.clone(),
                    exchange,
                }
            });
            let (work, lease) = (
                tunnel(client_upgrade, upstream_upgrade, capture),
                client.lease.clone(),
            );
            tokio::spawn(async move {
                match lease {
                    Some(lease) => lease.bound(work).await,
                    None => work.await,
                }
            });
        }
        let (mut rparts, rbody) = resp.into_parts();
        if let Some(c) = done.response_capture.as_mut() {
            c.expect(rbody.size_hint().exact());
        }
        strip_hop_by_hop(&mut rparts.headers, switching);
        // Our side of the client connection speaks the client's protocol, whatever the upstream spoke.
        rparts.version = done.ex.client_version;
        done.ex.status = Some(rparts.status);
        done.pipeline
            .clone()
            .response(done.reached, &mut done.ex, &mut rparts);
        let body = if switching {
            // The connection now belongs to the tunnel; it never goes back to the pool.
            ResponseBody::full("", Some(done))
        } else {
            done.upstream = Some((target, lent));
            ResponseBody::upstream(rbody, Some(done))
        };
        Response::from_parts(rparts, body)
    }
}

/// An exchange answered without the upstream: its request body is recorded only if it
/// was read whole before the request phase (a body nobody read, or read in part, is
/// unknown, and no capture claims to know it).
fn keep_read_body(done: &mut Completion) {
    match (done.ex.request_prefix.take(), &done.request_capture) {
        (Some(p), Some(cap)) if p.whole => {
            cap.lock().unwrap_or_else(|e| e.into_inner()).push(&p.data);
        }
        _ => done.request_capture = None,
    }
}

/// Requests a reverse proxy must not pass on: CONNECT (it is no forward proxy), two
/// `Host`s (which one would the upstream believe?), and both `Content-Length` and
/// `Transfer-Encoding` (`ambiguous`: hyper drops the length, so only the wire shows it;
/// see `proxy::framing`), the framing request smuggling uses.
fn refusal(parts: &http::request::Parts, ambiguous: bool) -> Option<(StatusCode, String)> {
    if ambiguous {
        return Some((
            StatusCode::BAD_REQUEST,
            "the request has both Content-Length and Transfer-Encoding (the framing request smuggling uses); send one of them".into(),
        ));
    }
    if parts.method == http::Method::CONNECT {
        return Some((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: heliosburn is a reverse proxy".into(),
        ));
    }
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some((
            StatusCode::BAD_REQUEST,
            "the request has more than one Host header".into(),
        ));
    }
    None
}

/// A response a phase made itself goes to the client through the phases that saw the
/// request, as an upstream's would.
fn answered(resp: Response<Bytes>, mut done: Box<Completion>) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    parts.version = done.ex.client_version;
    strip_hop_by_hop(&mut parts.headers, false);
    done.ex.status = Some(parts.status);
    done.pipeline
        .clone()
        .response(done.reached, &mut done.ex, &mut parts);
    Response::from_parts(parts, ResponseBody::full(body, Some(done)))
}

/// Copies bytes both ways between an upgraded client and upstream until either closes;
/// with `capture`, reads the WebSocket messages beside them as it says.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    capture: Option<websocket::Reading>,
) {
    let (c, u) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
    match capture {
        None => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Some(reading) => websocket::relay(c, u, reading).await,
    }
}

/// A gRPC call (`application/grpc`, `application/grpc+proto`, …): it needs HTTP/2.
/// gRPC-Web (`application/grpc-web…`) is made for HTTP/1.1 and is none.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/grpc") && !v.starts_with("application/grpc-web")
        })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Removes Connection, the headers it names, the fixed hop-by-hop set and `Proxy-*`.
/// For an upgrade, `Upgrade` and `Connection: upgrade` are what carries it, so they stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What a reverse proxy must change on the way up: target URI, hop-by-hop headers,
/// `X-Forwarded-*`, Host, and HTTP/1.1 to the upstream.
fn rewrite_request(
    parts: &mut http::request::Parts,
    target: &UpstreamTarget,
    client: &Client,
    preserve_host: bool,
    upgrade: bool,
) {
    let trailers = upstream::te_trailers(parts.headers.get(header::TE));
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if trailers {
        // The client takes trailers (gRPC says so): the upstream may send them.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    // Several X-Forwarded-For lines are one comma-separated list: keep every prior hop.
    if parts.headers.contains_key(&X_FORWARDED_FOR) {
        let mut xff: Vec<u8> = Vec::new();
        for prior in parts.headers.get_all(&X_FORWARDED_FOR) {
            xff.extend_from_slice(prior.as_bytes());
            xff.extend_from_slice(b", ");
        }
        xff.extend_from_slice(client.forwarded_for.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&xff) {
            parts.headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    } else {
        parts
            .headers
            .insert(X_FORWARDED_FOR.clone(), client.forwarded_for.clone());
    }
    let proto = if client.tls { "https" } else { "http" };
    parts
        .headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match (&original_host, preserve_host) {
        (Some(host), true) => {
            parts.headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            parts.headers.insert(header::HOST, host.clone());
        }
        (Some(host), false) => {
            parts.headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            parts
                .headers
                .insert(header::HOST, target.host_header.clone());
        }
        (None, _) => {
            parts
                .headers
                .insert(header::HOST, target.host_header.clone());
        }
    }

    // HTTP/1.1 to the upstream takes the origin form; an h2 client sends the absolute one.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.version = Version::HTTP_11;
}

/// HTTP/2 may split Cookie into one field per cookie; before the request goes on in
/// HTTP/1.1 they must become one line joined by "; " (RFC 9113 8.2.3), or an upstream
/// reading the first line sees only the first cookie.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let Some(first) = values.next() else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    let mut several = false;
    for v in values {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
        several = true;
    }
    if several {
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn upgrade_headers_survive_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn request_is_pointed_at_the_upstream() {
        let target = UpstreamTarget::new(Upstream::http("10.0.0.1", 81)).unwrap();
        let (mut parts, ()) = Request::get("/a?b=1")
            .header("host", "front:8880")
            .header("x-forwarded-for", "1.1.1.1")
            .body(())
            .unwrap()
            .into_parts();
        rewrite_request(
            &mut parts,
            &target,
            &Client::new("127.0.0.9:5".parse().unwrap()),
            false,
            false,
        );
        assert_eq!(parts.uri, "/a?b=1"); // origin form: the connection goes to the upstream
        assert_eq!(parts.headers["host"], "10.0.0.1:81");
        assert_eq!(parts.headers["x-forwarded-host"], "front:8880");
        assert_eq!(parts.headers["x-forwarded-for"], "1.1.1.1, 127.0.0.9");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");
    }
}
