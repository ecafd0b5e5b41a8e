//! Keep-alive connections to the upstream: a LIFO pool of HTTP/1.1 senders per target.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority in a
//! hashed map behind a lock, and wants absolute URIs that we would rebuild per request.
//! One upstream at a time needs none of that; a `Vec` under an uncontended mutex does.
//! A connection goes back to the pool only once its response body has been read to the
//! end (see `proxy::body`), so a sender taken from the pool is idle.

use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::body::RequestBody;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// Why the upstream could not be asked.
#[derive(Debug)]
pub enum SendError {
    /// No connection: refused, unreachable, or name resolution failed.
    Connect(std::io::Error),
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The connection broke before a response arrived.
    Exchange(hyper::Error),
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

impl Pool {
    fn take(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose exchange is complete.
    /// Idle connections waiting for a request (shown in the proxy's status).
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn put(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Sends the request on an idle connection, or a new one (which buffers `buffer` bytes
    /// each way at most, and refuses a response head larger). A request that a pooled
    /// connection could not take (it closed meanwhile) is retried on a new connection;
    /// one that was written is never sent twice.
    pub async fn send(
        &self,
        host: &str,
        port: u16,
        connect_timeout: Duration,
        buffer: usize,
        mut req: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, SendRequest<RequestBody>), SendError> {
        while let Some(mut sender) = self.take() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
        let mut sender = connect(host, port, connect_timeout, buffer).await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, sender)),
            Err(e) => Err(SendError::Exchange(e)),
        }
    }
}

async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
    buffer: usize,
) -> Result<SendRequest<RequestBody>, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => return Err(SendError::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(buffer)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Exchange)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
