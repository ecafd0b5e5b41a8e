//! The proxy listener: accepts connections (HTTP/1.1 and h2c prior knowledge, upgrades
//! allowed) and can be stopped, started and moved to another address at run time.
//! Connections already open keep running; shutdown drains them, bounded in time.
//!
//! **Invariant:** what connections cost is bounded by configuration, not by clients: at
//! most `max_connections` are open (beyond, new ones wait in the kernel's backlog), a
//! connection that moves no byte for `idle_timeout` is closed (after the exchange in
//! flight, if any), and a request head must arrive within `header_read_timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

pub use crate::config::settings::ConnectionLimits as Limits;
use crate::proxy::framing::{Scanner, WireMarks};
use crate::proxy::service::{Client, Forwarder};
use crate::proxy::tls::{CertStatus, ListenerCert};

/// What the listener counted, for status.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Connections closed for moving no byte for the idle timeout.
    pub idle_closed: AtomicU64,
    /// Times the connection cap was reached (each a stretch during which new connections
    /// waited in the backlog).
    pub cap_reached: AtomicU64,
    /// Accepts that failed (out of file descriptors and the like).
    pub accept_errors: AtomicU64,
    /// TLS handshakes that failed or did not finish within the header-read timeout.
    pub tls_failed: AtomicU64,
    /// The cap is reached now (an episode is logged once).
    at_cap: AtomicBool,
}

/// What the listener is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListenerStatus {
    pub addr: SocketAddr,
    pub listening: bool,
}

/// The counters as status shows them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConnectionStats {
    pub open: usize,
    pub max: usize,
    pub idle_closed: u64,
    pub cap_reached: u64,
    pub accept_errors: u64,
    pub tls_failed: u64,
}

#[derive(Debug)]
pub enum ListenerCommand {
    Start,
    Stop,
    Bind(SocketAddr),
}

/// Why the listener did not do what it was told.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address cannot be listened on (in use, not this machine's, not permitted):
    /// the listener stays as it was.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the proxy listener has shut down")]
    ShutDown,
}

impl ListenerError {
    /// Whether what was asked is at fault (the address is taken, not this machine's, or
    /// not permitted), rather than the machine (out of file descriptors, say).
    pub fn is_the_address(&self) -> bool {
        use std::io::ErrorKind::{AddrInUse, AddrNotAvailable, PermissionDenied};
        matches!(self, Self::Bind { source, .. }
            if matches!(source.kind(), AddrInUse | AddrNotAvailable | PermissionDenied))
    }
}

type Request = (
    ListenerCommand,
    oneshot::Sender<Result<ListenerStatus, ListenerError>>,
);

/// Talks to the listener task.
#[derive(Clone)]
pub struct ListenerHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<ListenerStatus>,
    counters: Arc<ListenerCounters>,
    connections: TaskTracker,
    limits: Limits,
    tls: Option<Arc<ListenerCert>>,
}

impl ListenerHandle {
    /// The certificate the listener serves, when it serves HTTPS.
    pub fn tls_status(&self) -> Option<CertStatus> {
        self.tls.as_ref().map(|t| t.status())
    }

    /// Reads the certificate and key files again; handshakes from now on use them, and
    /// connections already open are not touched. A file that cannot be used leaves the
    /// certificate in service as it was.
    pub fn reload_tls(&self) -> Result<CertStatus, String> {
        match &self.tls {
            Some(t) => t.reload().map_err(|e| format!("the certificate in service stays: {e}")),
            None => Err("the listener serves plain HTTP: there is no certificate to reload (start with --tls-cert and --tls-key)".into()),
        }
    }

    pub fn status(&self) -> ListenerStatus {
        *self.status.borrow()
    }

    pub fn connections(&self) -> ConnectionStats {
        let c = &self.counters;
        ConnectionStats {
            open: self.connections.len(),
            max: self.limits.max_connections,
            idle_closed: c.idle_closed.load(Ordering::Relaxed),
            cap_reached: c.cap_reached.load(Ordering::Relaxed),
            accept_errors: c.accept_errors.load(Ordering::Relaxed),
            tls_failed: c.tls_failed.load(Ordering::Relaxed),
        }
    }

    /// Sends a command and waits for the listener's answer.
    pub async fn command(&self, cmd: ListenerCommand) -> Result<ListenerStatus, ListenerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
            .await
            .map_err(|_| ListenerError::ShutDown)?;
        rx.await.map_err(|_| ListenerError::ShutDown)?
    }
}

/// Starts the listener task on an already bound socket, serving HTTPS with `tls`'s
/// certificate when it is given. The returned future ends after shutdown has been
/// signalled and open connections have drained (or `drain` passed).
pub fn spawn(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
    drain: Duration,
    limits: Limits,
    tls: Option<Arc<ListenerCert>>,
) -> std::io::Result<(ListenerHandle, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(8);
    let (status_tx, status) = watch::channel(ListenerStatus {
        addr,
        listening: true,
    });
    let conns = Connections::new(limits, shutdown.clone());
    let handle = ListenerHandle {
        tx,
        status,
        counters: conns.counters.clone(),
        connections: conns.tracker.clone(),
        limits,
        tls: tls.clone(),
    };
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server_config()));
    let task = tokio::spawn(run(
        listener, forwarder, conns, acceptor, rx, status_tx, drain,
    ));
    Ok((handle, task))
}

/// What every connection of the listener shares.
#[derive(Clone)]
struct Connections {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
    counters: Arc<ListenerCounters>,
    limits: Limits,
}

impl Connections {
    fn new(limits: Limits, shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            tracker: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            counters: Arc::default(),
            limits,
        }
    }
}

async fn run(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    conns: Connections,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut commands: mpsc::Receiver<Request>,
    status: watch::Sender<ListenerStatus>,
    drain: Duration,
) {
    let builder = builder(&conns.limits);
    let shutdown = conns.shutdown.clone();
    // Set while accepts fail, so that an episode is logged once, not every 50 ms.
    let mut accept_failing = false;
    let mut addr = listener
        .local_addr()
        .unwrap_or_else(|_| status.borrow().addr);
    let mut listener = Some(listener);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((cmd, reply)) = commands.recv() => {
                let result = match cmd {
                    ListenerCommand::Stop => {
                        listener = None;
                        Ok(())
                    }
                    ListenerCommand::Start if listener.is_some() => Ok(()),
                    ListenerCommand::Start => bind(addr).await.map(|l| listener = Some(l)),
                    ListenerCommand::Bind(new) => match bind(new).await {
                        Ok(l) => {
                            addr = l.local_addr().unwrap_or(new);
                            listener = Some(l);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                };
                let now = ListenerStatus { addr, listening: listener.is_some() };
                status.send_replace(now);
                let _ = reply.send(result.map(|()| now));
            }
            accepted = accept(listener.as_ref(), &conns) => match accepted {
                Ok((stream, peer, permit)) => {
                    if accept_failing {
                        tracing::info!("accepting connections again");
                        accept_failing = false;
                    }
                    let fwd = forwarder.clone();
                    let wire = Arc::new(WireMarks::default());
                    let scanner = Scanner::new(conns.limits.max_header_size, wire.clone());
                    let tls = acceptor.is_some();
                    let make_svc = move |lease| {
                        let client = Arc::new(
                            Client::new(peer).leased(lease).with_wire(wire).over_tls(tls),
                        );
                        service_fn(move |req| {
                            let (fwd, client) = (fwd.clone(), client.clone());
                            async move { Ok::<_, Infallible>(fwd.handle(req, &client).await) }
                        })
                    };
                    match &acceptor {
                        None => serve(stream, peer, permit, &conns, &builder, Some(scanner), make_svc),
                        Some(acceptor) => {
                            let (acceptor, conns, builder) = (acceptor.clone(), conns.clone(), builder.clone());
                            // The handshake is bounded as a request head is, holds its place
                            // under the cap meanwhile, and is drained (or ended) at shutdown.
                            conns.tracker.clone().spawn(async move {
                                let timeout = conns.limits.header_read_timeout;
                                let failed = |why: String| {
                                    conns.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!(%peer, error = %why, "TLS handshake failed (counted in status)");
                                };
                                let handshake = tokio::time::timeout(timeout, acceptor.accept(stream));
                                tokio::select! {
                                    _ = conns.shutdown.cancelled() => {}
                                    done = handshake => match done {
                                        Ok(Ok(tls)) => serve(tls, peer, permit, &conns, &builder, Some(scanner), make_svc),
                                        Ok(Err(e)) => failed(e.to_string()),
                                        Err(_) => failed(format!("no handshake within {timeout:?}")),
                                    },
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    conns.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if !accept_failing {
                        tracing::warn!(error = %e, "accept failed; retrying every 50 ms (counted in status)");
                        accept_failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    status.send_replace(ListenerStatus {
        addr,
        listening: false,
    });
    // Every connection task watches the shutdown token and closes gracefully.
    conns.tracker.close();
    let open = conns.tracker.len();
    if open > 0 {
        tracing::info!(connections = open, ?drain, "draining open connections");
    }
    if tokio::time::timeout(drain, conns.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain timeout passed; closing the remaining connections"
        );
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenerError> {
    listen(addr).map_err(|source| ListenerError::Bind { addr, source })
}

/// Connections the kernel may hold for us before we accept them: where they wait beyond
/// the connection cap, and what absorbs a burst of connects (the kernel caps it at
/// `net.core.somaxconn`). The 128 our listeners had (as `ss -ltn` showed) overflowed
/// with 1,000 clients connecting at once.
const BACKLOG: u32 = 4096;

/// A listening socket on `addr` with the proxy's backlog (and `SO_REUSEADDR`, as std's).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The next connection, once there is room for it under the cap. While there is none,
/// new connections wait in the kernel's backlog; the episode is counted and logged once.
async fn accept(
    listener: Option<&TcpListener>,
    conns: &Connections,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let Some(l) = listener else {
        return std::future::pending().await;
    };
    let c = &conns.counters;
    let permit = match conns.permits.clone().try_acquire_owned() {
        Ok(p) => {
            if c.at_cap.swap(false, Ordering::Relaxed) {
                tracing::info!("below the connection limit again");
            }
            p
        }
        Err(_) => {
            if !c.at_cap.swap(true, Ordering::Relaxed) {
                c.cap_reached.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_connections = conns.limits.max_connections,
                    "connection limit reached; new connections wait in the backlog until one closes"
                );
            }
            conns
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| std::io::Error::other("the listener is closing"))?
        }
    };
    let (stream, peer) = l.accept().await?;
    Ok((stream, peer, permit))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a listener can serve: a hyper service of requests to responses whose bodies and
/// errors can cross tasks (the forwarder's, the management router).
pub trait HttpService:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<Self::Body>,
        Future = Self::Fut,
        Error = Self::Err,
    > + Send
    + 'static
{
    type Body: http_body::Body<Data = Self::Data, Error = Self::BodyErr> + Send + 'static;
    type Data: bytes::Buf + Send;
    type BodyErr: Into<BoxError>;
    type Fut: std::future::Future<Output = Result<http::Response<Self::Body>, Self::Err>>
        + Send
        + 'static;
    type Err: Into<BoxError>;
}

impl<S, B> HttpService for S
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Body = B;
    type Data = B::Data;
    type BodyErr = B::Error;
    type Fut = S::Future;
    type Err = S::Error;
}

/// HTTP/2's default flow-control window (RFC 9113 §6.9.2).
const H2_STREAM_WINDOW: u32 = 65_535;

/// HTTP/1.1 and h2c with the limits' header-read timeout and bounded buffers: a
/// connection buffers `max_header_size` each way at most (a request head beyond it is
/// answered 431). With hyper's default (about 400 KiB) 1,000 slow clients held 1.6 GiB.
fn builder(limits: &Limits) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_size)
        .header_read_timeout(limits.header_read_timeout);
    // HTTP/2: the protocol's own default stream window (hyper raises it to 1 MiB) and a
    // connection window of four streams' worth, so a slow h2c uploader holds no more.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(limits.max_header_size)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(4 * H2_STREAM_WINDOW)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    Arc::new(builder)
}

/// Serves a listener for another service with the proxy's bounds (connection cap, idle
/// and header-read timeouts, graceful drain): the management API. Ends once `shutdown`
/// is cancelled and its connections have drained (or `drain` passed).
pub fn serve_bounded<S>(
    listener: TcpListener,
    svc: S,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) -> tokio::task::JoinHandle<()>
where
    S: HttpService + Clone + Sync,
{
    let conns = Connections::new(limits, shutdown.clone());
    tokio::spawn(async move {
        let builder = builder(&conns.limits);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = accept(Some(&listener), &conns) => a,
            };
            match accepted {
                Ok((stream, peer, permit)) => {
                    serve(stream, peer, permit, &conns, &builder, None, |_| {
                        svc.clone()
                    })
                }
                Err(e) => {
                    conns.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "management accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        conns.tracker.close();
        let _ = tokio::time::timeout(drain, conns.tracker.wait()).await;
    })
}

/// A connection's place under the listener's bounds, held by what serves it: its HTTP
/// task and, once it is upgraded, its tunnel. While any holds it, the connection counts
/// as open under the cap and is waited for on drain.
pub struct Lease {
    _permit: OwnedSemaphorePermit,
    _open: TaskTrackerToken,
    /// A byte moved on the client's socket since the last look.
    activity: Arc<AtomicBool>,
    idle: Duration,
    shutdown: CancellationToken,
    counters: Arc<ListenerCounters>,
}

impl Lease {
    /// Runs `work` (an upgraded connection's tunnel) within the connection's bounds: it
    /// ends when no byte has moved for the idle timeout (counted as idle-closed) and at
    /// shutdown (a tunnel has no exchange to finish).
    pub async fn bound(&self, work: impl std::future::Future<Output = ()>) {
        tokio::pin!(work);
        let mut quiet = Quiet::new(self.idle);
        loop {
            tokio::select! {
                () = work.as_mut() => return,
                _ = self.shutdown.cancelled() => return,
                _ = quiet.tick() => {
                    if quiet.after(&self.activity) {
                        self.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(idle = ?self.idle, "closing an idle tunnel");
                        return;
                    }
                }
            }
        }
    }
}

/// Counts quiet time in ticks of a quarter of the idle timeout.
struct Quiet {
    idle: Duration,
    every: Duration,
    tick: tokio::time::Interval,
    quiet: Duration,
}

impl Quiet {
    fn new(idle: Duration) -> Self {
        let every = (idle / 4).max(Duration::from_millis(10));
        Self {
            idle,
            every,
            tick: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            quiet: Duration::ZERO,
        }
    }

    async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// After a tick: whether a whole idle timeout has now passed without activity.
    fn after(&mut self, activity: &AtomicBool) -> bool {
        if activity.swap(false, Ordering::Relaxed) {
            self.quiet = Duration::ZERO;
            return false;
        }
        self.quiet += self.every;
        if self.quiet >= self.idle {
            self.quiet = Duration::ZERO;
            return true;
        }
        false
    }
}

fn serve<S: HttpService, IO: ClientIo>(
    stream: IO,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    conns: &Connections,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    scanner: Option<Scanner>,
    make_svc: impl FnOnce(Arc<Lease>) -> S,
) {
    stream.set_nodelay();
    let activity = Arc::new(AtomicBool::new(true));
    let write_blocked = Arc::new(AtomicBool::new(false));
    let lease = Arc::new(Lease {
        _permit: permit,
        _open: conns.tracker.token(),
        activity: activity.clone(),
        idle: conns.limits.idle_timeout,
        shutdown: conns.shutdown.clone(),
        counters: conns.counters.clone(),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        write_blocked: write_blocked.clone(),
        scanner,
    });
    let conn = builder
        .serve_connection_with_upgrades(io, make_svc(lease.clone()))
        .into_owned();
    tokio::spawn(async move {
        let (shutdown, counters) = (lease.shutdown.clone(), lease.counters.clone());
        tokio::pin!(conn);
        // A byte either way sets `activity`; a whole idle timeout of ticks without one
        // closes the connection (after the exchange in flight, as a graceful close does).
        let mut quiet = Quiet::new(lease.idle);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    break;
                }
                _ = shutdown.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = quiet.tick() => {
                    if !quiet.after(&activity) {
                        continue;
                    }
                    if !closing {
                        counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, idle = ?lease.idle, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else if write_blocked.load(Ordering::Relaxed) {
                        // Closing, and for another idle timeout the client has not taken
                        // a byte of what is waiting for it (it never reads its response):
                        // dropped. A slow upstream blocks no write.
                        tracing::debug!(%peer, idle = ?lease.idle, "dropping a connection whose client stopped reading");
                        break;
                    }
                }
            }
        }
    });
}

/// What a client connection runs on: its TCP socket, or TLS over it.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn set_nodelay(&self);
}

impl ClientIo for TcpStream {
    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn set_nodelay(&self) {
        let _ = self.get_ref().0.set_nodelay(true);
    }
}

/// A connection's socket that notes when bytes move, and whether a write waits on the
/// client, for the idle timeout; and shows what the client sends (after TLS) to the
/// framing scanner.
struct Watched<IO> {
    inner: IO,
    activity: Arc<AtomicBool>,
    write_blocked: Arc<AtomicBool>,
    scanner: Option<Scanner>,
}

impl<IO> Watched<IO> {
    fn moved<T>(&self, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.activity.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn wrote<T>(&self, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        self.write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        self.moved(polled)
    }
}

impl<IO: ClientIo> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(scanner)) = (&polled, self.scanner.as_mut()) {
            scanner.feed(&buf.filled()[before..]);
        }
        self.moved(polled)
    }
}

impl<IO: ClientIo> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
