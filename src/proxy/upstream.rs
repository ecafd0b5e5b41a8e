//! Connections to the upstream: plain or TLS, HTTP/1.1 or HTTP/2, kept for reuse.
//!
//! HTTP/1.1 connections carry one exchange at a time: a LIFO pool of idle senders, to
//! which a connection goes back only once its response body has been read to the end
//! (see `proxy::body`), so a sender taken from it is idle. HTTP/2 connections carry many
//! streams at once: a few shared connections, a new one opened only when every open one
//! has [`STREAMS_PER_CONNECTION`] streams in flight.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority in a
//! hashed map behind a lock, and wants absolute URIs that we would rebuild per request.
//! One upstream at a time needs none of that; a `Vec` under an uncontended mutex does.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::settings::{UpstreamProtocol, UpstreamTls};
use crate::config::Upstream;
use crate::proxy::body::RequestBody;
use crate::proxy::tls;

/// Idle HTTP/1.1 connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// Streams in flight on one HTTP/2 connection before another is opened (servers
/// commonly allow 100 or more at once).
const STREAMS_PER_CONNECTION: usize = 100;
/// HTTP/2 connections kept per upstream at most; beyond, streams queue on the least
/// busy one.
const MAX_H2_CONNECTIONS: usize = 16;

/// Why the upstream could not be asked.
#[derive(Debug)]
pub enum SendError {
    /// No connection: refused, unreachable, or name resolution failed.
    Connect(std::io::Error),
    /// Connecting (TCP and TLS) took longer than the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed: what was wrong, in words ([`tls::describe_handshake_error`]).
    Tls(String),
    /// The upstream does not speak the protocol asked for.
    Protocol(String),
    /// The upstream closed its HTTP/2 connection (or refused the stream) before it took
    /// the request: it had a body, which cannot be sent again, or every attempt was
    /// refused.
    Refused { body: bool },
    /// The connection broke before a response arrived.
    Exchange(hyper::Error),
}

/// How connections to the upstream are made: fixed for the proxy's run, whichever
/// upstream the control operations point it at.
pub struct Dialer {
    protocol: UpstreamProtocol,
    /// Offering, by ALPN, what `protocol` allows.
    tls: Arc<rustls::ClientConfig>,
    /// Offering http/1.1 only, for upgrades (WebSocket is an HTTP/1.1 upgrade).
    tls_h1: Arc<rustls::ClientConfig>,
    insecure: bool,
    connect_timeout: Duration,
    /// What an HTTP/1.1 connection buffers each way, and the largest response head.
    buffer: usize,
}

impl Dialer {
    pub fn new(
        protocol: UpstreamProtocol,
        verification: &UpstreamTls,
        connect_timeout: Duration,
        buffer: usize,
    ) -> Result<Self, tls::TlsError> {
        let alpn: &[&[u8]] = match protocol {
            UpstreamProtocol::Auto => &[b"h2", b"http/1.1"],
            UpstreamProtocol::Http1 => &[b"http/1.1"],
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => &[b"h2"],
        };
        let tls = tls::client_config(verification, alpn)?;
        let mut h1 = (*tls).clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            protocol,
            tls,
            tls_h1: Arc::new(h1),
            insecure: verification.insecure,
            connect_timeout,
            buffer,
        })
    }

    /// A dialer for plain HTTP/1.1 (the proxy's self-test, unit tests).
    pub fn plain(connect_timeout: Duration, buffer: usize) -> Self {
        Self::new(
            UpstreamProtocol::Http1,
            &UpstreamTls {
                ca: None,
                insecure: true,
            },
            connect_timeout,
            buffer,
        )
        .expect("no file is read for an insecure dialer")
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    pub fn insecure(&self) -> bool {
        self.insecure
    }
}

/// What a request needs of the connection it goes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// gRPC: HTTP/2 even to a plain upstream under `auto` (gRPC needs its trailers).
    pub grpc: bool,
    /// An upgrade (WebSocket): HTTP/1.1, whatever else the upstream speaks.
    pub upgrade: bool,
}

/// What an exchange holds of its connection until its response has been read.
pub enum Lent {
    /// An HTTP/1.1 connection, back to the pool once the exchange is complete.
    Http1(http1::SendRequest<RequestBody>),
    /// A stream of a shared HTTP/2 connection, counted until it ends.
    Http2(StreamSlot),
}

/// One stream in flight on an HTTP/2 connection (which is the pool's `id`th).
pub struct StreamSlot {
    streams: Arc<AtomicUsize>,
    connection: u64,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

struct H2Connection {
    sender: http2::SendRequest<RequestBody>,
    streams: Arc<AtomicUsize>,
    /// In the order connections were made.
    id: u64,
}

impl H2Connection {
    fn slot(&self) -> StreamSlot {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamSlot {
            streams: self.streams.clone(),
            connection: self.id,
        }
    }
}

/// Times a request goes to the upstream over HTTP/2 at most, when it is refused
/// unprocessed (or did not go) on the connections it tries.
pub const H2_ATTEMPTS: usize = 3;

/// What the upstream agreed to by ALPN, learnt from the last TLS handshake under `auto`
/// (0 until one is made).
const ALPN_H1: u8 = 1;
const ALPN_H2: u8 = 2;

/// A stream on an HTTP/2 connection, or (`auto`, when the upstream stopped offering h2)
/// an HTTP/1.1 connection.
enum Got {
    Http2(http2::SendRequest<RequestBody>, StreamSlot),
    Http1(http1::SendRequest<RequestBody>),
}

/// A connect's failure, kept to be told to those who waited for that connect.
enum Failure {
    Connect(std::io::ErrorKind, String),
    Timeout,
    Tls(String),
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<http1::SendRequest<RequestBody>>>,
    h2: Mutex<Vec<H2Connection>>,
    /// The id the next HTTP/2 connection gets.
    next_h2: std::sync::atomic::AtomicU64,
    /// Held while an HTTP/2 connection is being made: requests that find none open wait
    /// for it instead of each making their own.
    connecting: tokio::sync::Mutex<()>,
    /// The last HTTP/2 connect that failed, and when.
    failed: Mutex<Option<(tokio::time::Instant, Failure)>>,
    alpn: AtomicU8,
}

impl Pool {
    fn take(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Idle connections waiting for a request (shown in the proxy's status).
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// HTTP/2 connections open to the upstream (shown in the proxy's status).
    pub fn h2_connections(&self) -> usize {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|c| !c.sender.is_closed());
        h2.len()
    }

    /// Returns a connection whose exchange is complete.
    pub fn put(&self, lent: Lent) {
        let Lent::Http1(sender) = lent else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// A stream on an open HTTP/2 connection made after `after` (any, for none): the
    /// oldest with room for it, so that a new connection takes traffic only when the
    /// others are full, and connections reach a server's per-connection limit one at a
    /// time. With [`MAX_H2_CONNECTIONS`] open and all full, the least busy.
    fn h2_stream(
        &self,
        after: Option<u64>,
    ) -> Option<(http2::SendRequest<RequestBody>, StreamSlot)> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|c| !c.sender.is_closed());
        let open = h2.len();
        let newer = h2.iter().filter(|c| after.is_none_or(|a| c.id > a));
        let chosen = match newer
            .clone()
            .find(|c| c.streams.load(Ordering::Relaxed) < STREAMS_PER_CONNECTION)
        {
            Some(c) => c,
            None if open >= MAX_H2_CONNECTIONS => {
                newer.min_by_key(|c| c.streams.load(Ordering::Relaxed))?
            }
            None => return None,
        };
        Some((chosen.sender.clone(), chosen.slot()))
    }

    /// Shares a new connection, unless [`MAX_H2_CONNECTIONS`] are open: then it serves
    /// its first stream only, and closes when that is done.
    fn add_h2(&self, sender: http2::SendRequest<RequestBody>) -> StreamSlot {
        let connection = H2Connection {
            sender,
            streams: Arc::new(AtomicUsize::new(0)),
            id: self.next_h2.fetch_add(1, Ordering::Relaxed),
        };
        let slot = connection.slot();
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|c| !c.sender.is_closed());
        if h2.len() < MAX_H2_CONNECTIONS {
            h2.push(connection);
        }
        slot
    }

    /// A stream on a connection made after `after`, or on a new one: one connect at a
    /// time, the others using what it makes, or failing as it failed (each would wait a
    /// connect timeout of its own in turn otherwise). Under `auto`, the new connection
    /// may settle on HTTP/1.1: then it is that.
    async fn h2_stream_or_connect(
        &self,
        dialer: &Dialer,
        upstream: &Upstream,
        after: Option<u64>,
    ) -> Result<Got, SendError> {
        if let Some((sender, slot)) = self.h2_stream(after) {
            return Ok(Got::Http2(sender, slot));
        }
        let waited_from = tokio::time::Instant::now();
        let _connecting = self.connecting.lock().await;
        if let Some((sender, slot)) = self.h2_stream(after) {
            return Ok(Got::Http2(sender, slot));
        }
        if let Some(failed) = self.failed_since(waited_from) {
            return Err(failed);
        }
        match connect(dialer, upstream, true, false).await {
            Ok(Connection::Http2(sender)) => Ok(Got::Http2(sender.clone(), self.add_h2(sender))),
            Ok(Connection::Http1(sender, _)) => {
                self.alpn.store(ALPN_H1, Ordering::Relaxed);
                Ok(Got::Http1(sender))
            }
            Err(e) => {
                self.remember_failure(&e);
                Err(e)
            }
        }
    }

    fn remember_failure(&self, e: &SendError) {
        let copy = match e {
            SendError::Connect(io) => Failure::Connect(io.kind(), io.to_string()),
            SendError::ConnectTimeout => Failure::Timeout,
            SendError::Tls(why) | SendError::Protocol(why) => Failure::Tls(why.clone()),
            _ => return,
        };
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((tokio::time::Instant::now(), copy));
    }

    /// The failure of a connect made since `since` (while the caller waited for it).
    fn failed_since(&self, since: tokio::time::Instant) -> Option<SendError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let (_, failure) = failed.as_ref().filter(|(at, _)| *at >= since)?;
        Some(match failure {
            Failure::Connect(kind, what) => {
                SendError::Connect(std::io::Error::new(*kind, what.clone()))
            }
            Failure::Timeout => SendError::ConnectTimeout,
            Failure::Tls(why) => SendError::Tls(why.clone()),
        })
    }

    /// Whether this request goes on HTTP/2.
    fn wants_h2(&self, dialer: &Dialer, upstream: &Upstream, needs: Needs) -> Option<bool> {
        if needs.upgrade {
            return Some(false);
        }
        match (dialer.protocol, upstream.tls) {
            (UpstreamProtocol::Http1, _) => Some(false),
            (UpstreamProtocol::H2 | UpstreamProtocol::H2c, _) => Some(true),
            (UpstreamProtocol::Auto, false) => Some(needs.grpc),
            (UpstreamProtocol::Auto, true) => match self.alpn.load(Ordering::Relaxed) {
                ALPN_H2 => Some(true),
                ALPN_H1 => Some(false),
                _ => None,
            },
        }
    }

    /// Sends the request on a connection that can take it now, or a new one. An
    /// HTTP/1.1 request that a pooled connection could not take (it closed meanwhile) is
    /// retried on a new connection; one that was written is never sent twice.
    pub async fn send(
        &self,
        dialer: &Dialer,
        upstream: &Upstream,
        needs: Needs,
        mut req: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Lent), SendError> {
        let wants_h2 = self.wants_h2(dialer, upstream, needs);
        // `TE: trailers` is kept for HTTP/2 (gRPC servers look for it); in HTTP/1.1 it
        // is the hop-by-hop it always was.
        let te = req.headers_mut().remove(header::TE);
        if wants_h2 == Some(true) {
            match self.h2_stream_or_connect(dialer, upstream, None).await? {
                Got::Http2(sender, slot) => {
                    as_h2(&mut req, upstream, te);
                    return self.send_h2(dialer, upstream, sender, slot, req).await;
                }
                Got::Http1(mut sender) => {
                    return match sender.send_request(req).await {
                        Ok(resp) => Ok((resp, Lent::Http1(sender))),
                        Err(e) => Err(SendError::Exchange(e)),
                    };
                }
            }
        }
        // HTTP/1.1 (or not known yet): an idle pooled connection first.
        while let Some(mut sender) = self.take() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lent::Http1(sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
        // A plain upstream gets HTTP/1.1 here; over TLS, ALPN settles it.
        match connect(dialer, upstream, false, needs.upgrade).await? {
            Connection::Http1(mut sender, alpn) => {
                // An upgrade offered http/1.1 only: it learns nothing of the upstream.
                if let (Some(alpn), false) = (alpn, needs.upgrade) {
                    self.alpn.store(alpn, Ordering::Relaxed);
                }
                match sender.send_request(req).await {
                    Ok(resp) => Ok((resp, Lent::Http1(sender))),
                    Err(e) => Err(SendError::Exchange(e)),
                }
            }
            Connection::Http2(sender) => {
                if upstream.tls {
                    self.alpn.store(ALPN_H2, Ordering::Relaxed);
                }
                let slot = self.add_h2(sender.clone());
                as_h2(&mut req, upstream, te);
                self.send_h2(dialer, upstream, sender, slot, req).await
            }
        }
    }

    /// Sends on an HTTP/2 connection. A request that did not go (the connection closed
    /// meanwhile) goes on a newer connection; so does one the upstream refused
    /// unprocessed (a GOAWAY that ends its connection before this stream, or
    /// REFUSED_STREAM: servers do this every so many requests) when it has no body to
    /// send again; [`H2_ATTEMPTS`] in all. The connection that did not take it takes no
    /// new stream.
    async fn send_h2(
        &self,
        dialer: &Dialer,
        upstream: &Upstream,
        mut sender: http2::SendRequest<RequestBody>,
        mut slot: StreamSlot,
        mut req: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Lent), SendError> {
        // A request without a body can be made again as often as needed.
        let template = http_body::Body::is_end_stream(req.body()).then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                req.headers().clone(),
            )
        });
        let again = || {
            template.as_ref().map(|(method, uri, version, headers)| {
                let mut copy = http::Request::new(RequestBody::empty());
                *copy.method_mut() = method.clone();
                *copy.uri_mut() = uri.clone();
                *copy.version_mut() = *version;
                *copy.headers_mut() = headers.clone();
                copy
            })
        };
        let mut attempt = 1;
        loop {
            let failed = match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lent::Http2(slot))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => Ok(unsent),
                    None => Err(e.into_error()),
                },
            };
            req = match failed {
                Ok(unsent) => unsent,
                Err(e) if refused_unprocessed(&e) => {
                    tracing::debug!(error = %e, attempt, "the upstream refused a stream unprocessed");
                    match again() {
                        Some(copy) => copy,
                        None => {
                            self.forget_h2(&slot);
                            return Err(SendError::Refused { body: true });
                        }
                    }
                }
                Err(e) => return Err(SendError::Exchange(e)),
            };
            self.forget_h2(&slot);
            if attempt == H2_ATTEMPTS {
                return Err(SendError::Refused { body: false });
            }
            attempt += 1;
            let after = Some(slot.connection);
            drop(slot);
            (sender, slot) = match self.h2_stream_or_connect(dialer, upstream, after).await? {
                Got::Http2(sender, slot) => (sender, slot),
                Got::Http1(_) => {
                    return Err(SendError::Protocol(
                        "the upstream no longer agrees to HTTP/2 (ALPN)".into(),
                    ))
                }
            };
        }
    }

    /// Takes the connection of `slot` out of the pool: it is going away.
    fn forget_h2(&self, slot: &StreamSlot) {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|c| c.id != slot.connection);
    }
}

/// Whether the upstream refused the stream without processing it: a GOAWAY without an
/// error (the connection ends before this stream's id) or REFUSED_STREAM (RFC 9113 §8.7:
/// such a request may be retried).
fn refused_unprocessed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return match h2.reason() {
                Some(h2::Reason::REFUSED_STREAM) => h2.is_remote(),
                Some(h2::Reason::NO_ERROR) => h2.is_go_away() && h2.is_remote(),
                _ => false,
            };
        }
        source = s.source();
    }
    false
}

/// HTTP/2 carries the target as `:scheme` and `:authority` (from what would have been
/// the Host header) rather than a Host line; `te` goes back as it came (`trailers`).
fn as_h2(req: &mut http::Request<RequestBody>, upstream: &Upstream, te: Option<HeaderValue>) {
    if let Some(te) = te {
        req.headers_mut().insert(header::TE, te);
    }
    let scheme = if upstream.tls { "https" } else { "http" };
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| format!("{}:{}", upstream.host, upstream.port));
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    match Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str())
        .path_and_query(pq)
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => {
            tracing::debug!(error = %e, %authority, "cannot make an h2 target; sending the origin form")
        }
    }
    *req.version_mut() = Version::HTTP_2;
}

enum Connection {
    /// With what ALPN said, over TLS.
    Http1(http1::SendRequest<RequestBody>, Option<u8>),
    Http2(http2::SendRequest<RequestBody>),
}

/// A new connection: TCP, TLS for an `https://` upstream (the protocol then is what
/// ALPN settles), and the HTTP handshake.
async fn connect(
    dialer: &Dialer,
    upstream: &Upstream,
    h2: bool,
    upgrade: bool,
) -> Result<Connection, SendError> {
    let host = upstream.host.trim_start_matches('[').trim_end_matches(']');
    let timeout = dialer.connect_timeout;
    let started = tokio::time::Instant::now();
    let stream =
        match tokio::time::timeout(timeout, TcpStream::connect((host, upstream.port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
    let _ = stream.set_nodelay(true);
    if !upstream.tls {
        return handshake(TokioIo::new(stream), h2, dialer.buffer, None).await;
    }
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        SendError::Tls(format!("`{host}` is no name a certificate can be for: {e}"))
    })?;
    // An upgrade is HTTP/1.1 whatever the upstream speaks otherwise.
    let config = if upgrade {
        dialer.tls_h1.clone()
    } else {
        dialer.tls.clone()
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let left = timeout.saturating_sub(started.elapsed());
    let tls = match tokio::time::timeout(left, connector.connect(name, stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Tls(tls::describe_handshake_error(&e, host))),
        Err(_) => return Err(SendError::ConnectTimeout),
    };
    let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if matches!(
        dialer.protocol,
        UpstreamProtocol::H2 | UpstreamProtocol::H2c
    ) && !negotiated_h2
        && !upgrade
    {
        return Err(SendError::Protocol(
            "the upstream did not agree to HTTP/2 (ALPN h2) though upstream_protocol asks for it; \
             use upstream_protocol auto or http1"
                .into(),
        ));
    }
    let alpn = Some(if negotiated_h2 { ALPN_H2 } else { ALPN_H1 });
    handshake(TokioIo::new(tls), negotiated_h2, dialer.buffer, alpn).await
}

async fn handshake<I>(
    io: TokioIo<I>,
    h2: bool,
    buffer: usize,
    alpn: Option<u8>,
) -> Result<Connection, SendError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .handshake(io)
            .await
            .map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
        });
        return Ok(Connection::Http2(sender));
    }
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(buffer)
        .handshake(io)
        .await
        .map_err(SendError::Exchange)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Connection::Http1(sender, alpn))
}

/// The value an h2 request to the upstream keeps of the client's `TE`: only
/// `trailers` (what gRPC sends) may cross, in HTTP/2 and as a hop-by-hop in HTTP/1.1.
pub fn te_trailers(te: Option<&HeaderValue>) -> bool {
    te.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
    })
}
