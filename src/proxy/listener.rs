//! The proxy listener: accepts connections (HTTP/1.1 and h2c prior knowledge, upgrades
//! allowed) and can be stopped, started and moved to another address at run time.
//! Connections already open keep running; shutdown drains them, bounded in time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::proxy::service::{Client, Forwarder};

/// What the listener is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListenerStatus {
    pub addr: SocketAddr,
    pub listening: bool,
}

#[derive(Debug)]
pub enum ListenerCommand {
    Start,
    Stop,
    Bind(SocketAddr),
}

type Request = (
    ListenerCommand,
    oneshot::Sender<Result<ListenerStatus, String>>,
);

/// Talks to the listener task.
#[derive(Clone)]
pub struct ListenerHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<ListenerStatus>,
}

impl ListenerHandle {
    pub fn status(&self) -> ListenerStatus {
        *self.status.borrow()
    }

    /// Sends a command and waits for the listener's answer.
    pub async fn command(&self, cmd: ListenerCommand) -> Result<ListenerStatus, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
            .await
            .map_err(|_| "the proxy listener has shut down".to_owned())?;
        rx.await
            .map_err(|_| "the proxy listener has shut down".to_owned())?
    }
}

/// Starts the listener task on an already bound socket. The returned future ends after
/// shutdown has been signalled and open connections have drained (or `drain` passed).
pub fn spawn(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<(ListenerHandle, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(8);
    let (status_tx, status) = watch::channel(ListenerStatus {
        addr,
        listening: true,
    });
    let task = tokio::spawn(run(listener, forwarder, rx, status_tx, shutdown, drain));
    Ok((ListenerHandle { tx, status }, task))
}

async fn run(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    mut commands: mpsc::Receiver<Request>,
    status: watch::Sender<ListenerStatus>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, peer)) => serve(stream, peer, &forwarder, &builder, &graceful),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
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
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, ?drain, "draining open connections");
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain timeout passed; closing the remaining connections"
        );
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    forwarder: &Arc<Forwarder>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let fwd = forwarder.clone();
    let client = Arc::new(Client::new(peer));
    let svc = service_fn(move |req| {
        let (fwd, client) = (fwd.clone(), client.clone());
        async move { Ok::<_, Infallible>(fwd.handle(req, &client).await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    });
}
