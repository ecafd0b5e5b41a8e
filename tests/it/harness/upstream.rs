//! A real HTTP upstream in the test process (hyper 1, HTTP/1.1 with upgrades, and h2c),
//! with routes for every behaviour the proxy must pass through, and a log of what it saw.
//!
//! Routes (every response carries `x-upstream: NAME`):
//! - anything not listed: echo of method, path, query, version and headers as JSON, with
//!   the request body as text (`body`) and its length (`body_len`);
//! - `/echo-body`: the request body streamed straight back (chunked when it came chunked);
//! - `/bytes/N`: N bytes of [`pattern`] with a Content-Length;
//! - `/chunked`: the chunks of [`CHUNKS`], sent with chunked framing;
//! - `/slow`: [`SLOW_FIRST`] at once, then [`SLOW_REST`] after [`SLOW_DELAY`];
//! - `/stream/N`: N bytes (`x`), made 64 KiB at a time, with a Content-Length;
//! - `/count`: reads the request body and answers its length, keeping nothing;
//! - `/status/N`: status N at once (the request body is read after); the reason phrase is
//!   the request's `x-reason` header, if any;
//! - `/sleep/MS`: the echo, after waiting MS milliseconds before the headers;
//! - `/hop`: a response full of hop-by-hop headers (and `x-end-to-end: kept`);
//! - `/ws`: a WebSocket that greets with [`WS_GREETING`], then echoes every message;
//! - `/reset`: drops the connection without answering;
//! - `/truncated`: announces [`TRUNCATED_LENGTH`] bytes (or, with `?chunked`, sends
//!   chunked), sends [`TRUNCATED_SENT`], then breaks off.
//!
//! Extra routes: [`Upstream::route`] with a handler given the whole request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// The chunks `/chunked` sends, in order.
pub const CHUNKS: &[&str] = &["alpha;", "", "bravo-bravo;", "c;", "delta delta delta\n"];
pub const SLOW_FIRST: &str = "first part, sent at once\n";
pub const SLOW_REST: &str = "second part, sent after the delay\n";
pub const SLOW_DELAY: Duration = Duration::from_secs(2);
pub const WS_GREETING: &str = "hello from upstream";
pub const TRUNCATED_LENGTH: usize = 100;
pub const TRUNCATED_SENT: &str = "only ten b";

/// `/chunked`'s whole body.
pub fn chunked_body() -> String {
    CHUNKS.concat()
}

/// The bytes `/bytes/N` sends: a repeating pattern that shifts, so a dropped or moved
/// byte shows.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    pub headers: HeaderMap,
    /// The TCP peer: the proxy's end of its upstream connection.
    pub peer: SocketAddr,
    /// The body, for routes that read it whole (echo and custom routes).
    pub body: Option<Bytes>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
    }
}

pub fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Bytes> + Send + Sync>;

/// Builds an upstream: `Upstream::new().name("b").route("/x", |seen| ...).run().await`.
#[derive(Default)]
pub struct UpstreamBuilder {
    name: Option<String>,
    routes: Vec<(String, Handler)>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl UpstreamBuilder {
    /// Sent as `x-upstream` on every response, to tell two upstreams apart.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Serves HTTPS with this config (its certificate, its ALPN).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// A route of the test's own (exact path), answered from the whole request.
    pub fn route(
        mut self,
        path: &str,
        handler: impl Fn(&Seen) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.routes.push((path.to_owned(), Arc::new(handler)));
        self
    }

    pub async fn run(self) -> Upstream {
        // A backlog as large as the proxy's: a thousand connects at once must not overflow.
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind upstream");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            name: self.name.unwrap_or_else(|| "upstream".into()),
            routes: self.routes,
            seen: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
        });
        let tls = self.tls.is_some();
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, state.clone(), acceptor));
        Upstream {
            addr,
            state,
            task,
            tls,
        }
    }
}

struct State {
    name: String,
    routes: Vec<(String, Handler)>,
    seen: Mutex<Vec<Seen>>,
    connections: Mutex<Vec<SocketAddr>>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    tls: bool,
}

impl Upstream {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// An upstream with the built-in routes only.
    pub async fn start() -> Upstream {
        Self::new().run().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` (`https://` when it serves TLS), as `--upstream` takes it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request seen; panics if there was none.
    pub fn last_request(&self) -> Seen {
        self.requests()
            .pop()
            .expect("the upstream has seen no request")
    }

    /// Peer address of every TCP connection accepted so far.
    pub fn connections(&self) -> Vec<SocketAddr> {
        self.state.connections.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        state.connections.lock().unwrap().push(peer);
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req, peer));
            let server = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let _ = server
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                }
                Some(acceptor) => {
                    // A handshake the client refuses (a certificate it does not trust)
                    // ends here.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = server
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await;
                    }
                }
            }
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

fn seen_of(req: &Request<Incoming>, peer: SocketAddr) -> Seen {
    Seen {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        version: req.version(),
        headers: req.headers().clone(),
        peer,
        body: None,
    }
}

/// The error makes hyper close the connection without writing a response.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Dropped> {
    let mut seen = seen_of(&req, peer);
    let path = seen.path.clone();
    let custom = state
        .routes
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, h)| h.clone());

    // Routes that do not read the body whole are logged before they answer.
    let streaming = custom.is_none()
        && (path == "/echo-body"
            || path == "/reset"
            || path == "/ws"
            || path == "/slow"
            || path == "/chunked"
            || path == "/hop"
            || path == "/truncated"
            || path == "/count"
            || path.starts_with("/stream/")
            || path.starts_with("/cycle/")
            || path.starts_with("/bytes/")
            || path.starts_with("/status/"));
    if streaming {
        state.seen.lock().unwrap().push(seen.clone());
    }

    let mut resp = if let Some(handler) = custom {
        let body = collect(req.into_body()).await;
        seen.body = Some(body);
        state.seen.lock().unwrap().push(seen.clone());
        handler(&seen).map(full)
    } else if path == "/reset" {
        return Err(Dropped);
    } else if path == "/ws" {
        websocket(&mut req)
    } else if path == "/echo-body" {
        let body = req.into_body().map_err(std::io::Error::other).boxed();
        Response::new(body)
    } else if path == "/count" {
        // Reads the body as it comes, keeping only its length.
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        Response::new(full(n.to_string()))
    } else if let Some(n) = path.strip_prefix("/stream/") {
        let n: usize = n.parse().expect("/stream/N takes a number");
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(big_body(n))));
        r.headers_mut().insert(header::CONTENT_LENGTH, n.into());
        r
    } else if let Some(n) = path.strip_prefix("/cycle/") {
        let n: usize = n.parse().expect("/cycle/N takes a number");
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(cycle_body(n))));
        r.headers_mut().insert(header::CONTENT_LENGTH, n.into());
        r
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().expect("/bytes/N takes a number");
        Response::new(full(pattern(n)))
    } else if path == "/chunked" {
        let frames = CHUNKS
            .iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c.as_bytes()))));
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
    } else if path == "/slow" {
        Response::new(slow_body())
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().expect("/status/N takes a number");
        // Answer at once, and read the request body after (as servers do with a lingering
        // close), so that closing with it unread never resets the answer away.
        let body = req.into_body();
        tokio::spawn(async move { collect(body).await });
        let mut r = Response::new(full(format!("status {code}\n")));
        *r.status_mut() = StatusCode::from_u16(code).expect("a valid status code");
        if let Some(reason) = seen.header("x-reason") {
            let reason = hyper::ext::ReasonPhrase::try_from(reason.to_owned())
                .expect("a valid reason phrase");
            r.extensions_mut().insert(reason);
        }
        r
    } else if path == "/hop" {
        hop_by_hop_response()
    } else if path == "/truncated" {
        // The pause lets the head and the first bytes go out before the break.
        let frames = futures_util::stream::unfold(0u8, |step| async move {
            match step {
                0 => Some((
                    Ok(Frame::data(Bytes::from_static(TRUNCATED_SENT.as_bytes()))),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((
                        Err(std::io::Error::other("upstream broke off on purpose")),
                        2,
                    ))
                }
                _ => None,
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        if seen.query.as_deref() != Some("chunked") {
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, TRUNCATED_LENGTH.into());
        }
        r
    } else {
        if let Some(ms) = path.strip_prefix("/sleep/") {
            let ms: u64 = ms.parse().expect("/sleep/MS takes a number");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let body = collect(req.into_body()).await;
        seen.body = Some(body.clone());
        state.seen.lock().unwrap().push(seen.clone());
        let mut r = Response::new(full(echo_json(&seen, &body, &state.name).to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    };
    resp.headers_mut().insert(
        "x-upstream",
        header::HeaderValue::from_str(&state.name).unwrap(),
    );
    Ok(resp)
}

async fn collect(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

fn echo_json(seen: &Seen, body: &Bytes, name: &str) -> Value {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &seen.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    json!({
        "upstream": name,
        "method": seen.method.as_str(),
        "path": seen.path,
        "query": seen.query,
        "version": format!("{:?}", seen.version),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
        "body_len": body.len(),
    })
}

/// `n` bytes made as they are sent, 64 KiB at a time: large bodies cost the test nothing.
pub fn big_body(
    n: usize,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static
{
    repeated(Bytes::from(vec![b'x'; BLOCK]), n)
}

/// `n` bytes counting up and wrapping (0, 1, … 255, 0, …: not UTF-8), made as they are
/// sent: byte `i` is `cycle(i + 1)[i]`, so what a recording kept of them can be checked
/// byte for byte.
pub fn cycle_body(
    n: usize,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static
{
    // BLOCK is a multiple of 256: every block starts at 0.
    repeated(Bytes::from(cycle(BLOCK)), n)
}

/// The block a generated body repeats.
const BLOCK: usize = 64 * 1024;

/// `n` bytes of `block` over and over, a block per frame.
fn repeated(
    block: Bytes,
    n: usize,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static
{
    futures_util::stream::unfold(0usize, move |sent| {
        let block = block.clone();
        async move {
            (sent < n).then(|| {
                let len = block.len().min(n - sent);
                (Ok(Frame::data(block.slice(..len))), sent + len)
            })
        }
    })
}

/// The first `n` bytes of [`cycle_body`].
pub fn cycle(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

fn slow_body() -> Body {
    let stream = futures_util::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((
                Ok(Frame::data(Bytes::from_static(SLOW_FIRST.as_bytes()))),
                1,
            )),
            1 => {
                tokio::time::sleep(SLOW_DELAY).await;
                Some((Ok(Frame::data(Bytes::from_static(SLOW_REST.as_bytes()))), 2))
            }
            _ => None,
        }
    });
    StreamBody::new(stream).boxed()
}

fn hop_by_hop_response() -> Response<Body> {
    let mut r = Response::new(full("hop\n"));
    let h = r.headers_mut();
    for (k, v) in [
        ("connection", "x-resp-secret"),
        ("x-resp-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("upgrade", "foo/2"),
        ("proxy-authenticate", "Basic realm=x"),
        ("proxy-connection", "keep-alive"),
        ("x-end-to-end", "kept"),
    ] {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    r
}

/// Answers the WebSocket handshake and, once upgraded, greets and echoes.
fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket handshake\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        if ws.send(Message::text(WS_GREETING)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                // tungstenite queued the answer to the client's close: it goes out here.
                let _ = ws.flush().await;
                return;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        "sec-websocket-accept",
        header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap(),
    );
    r
}
