//! Bodies on the proxy path: streamed through frame by frame, optionally copied up to a
//! limit beside the stream (a `Bytes` slice, no copy of the data), and, for the response,
//! the exchange's completion phase when the last frame passes or the body is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::pipeline::{Exchange, Pipeline, Reached};
use crate::proxy::service::UpstreamTarget;
use crate::traffic::BodyCapture;
use hyper::client::conn::http1::SendRequest;

/// The first `limit` bytes of a body and its total size.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    limit: usize,
    kept: usize,
    chunks: Vec<Bytes>,
    pub size: u64,
}

impl Capture {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    pub fn push(&mut self, data: &Bytes) {
        self.size += data.len() as u64;
        if self.kept < self.limit {
            let take = data.len().min(self.limit - self.kept);
            self.chunks.push(data.slice(..take));
            self.kept += take;
        }
    }

    pub fn to_body(&self) -> BodyCapture {
        BodyCapture::from_chunks(&self.chunks, self.size)
    }
}

pub type SharedCapture = Arc<Mutex<Capture>>;

/// What went wrong with the client's side of a request body. The upstream exchange
/// fails either way; this says it was the client's fault, not the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// A broken body: a bad chunk, a connection closed before the declared length.
    Malformed,
    /// No byte of the body for the stall timeout.
    Stalled,
}

/// Where the request body tells the forwarder what it saw.
#[derive(Debug, Default)]
pub struct BodyWatch(AtomicU8);

impl BodyWatch {
    fn set(&self, fault: ClientFault) {
        let v = match fault {
            ClientFault::Malformed => 1,
            ClientFault::Stalled => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn fault(&self) -> Option<ClientFault> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Stalled),
            _ => None,
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body on its way up: the client's stream, copied on the side if asked,
/// and given up (as the client's fault) when it stalls.
pub struct RequestBody {
    inner: Incoming,
    capture: Option<SharedCapture>,
    watch: Arc<BodyWatch>,
    stall: Duration,
    /// Runs while the client has sent nothing since it last had nothing ready.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl RequestBody {
    pub fn new(
        inner: Incoming,
        capture: Option<SharedCapture>,
        watch: Arc<BodyWatch>,
        stall: Duration,
    ) -> Self {
        Self {
            inner,
            capture,
            watch,
            stall,
            timer: None,
            armed: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(cap)) = (frame.data_ref(), &this.capture) {
                    cap.lock().unwrap_or_else(|p| p.into_inner()).push(data);
                }
                // The stall is counted from the next time the client has nothing ready,
                // not from this frame: an upstream slow to read is not the client's fault.
                this.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.watch.set(ClientFault::Malformed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if !this.armed {
                    timer.as_mut().reset(tokio::time::Instant::now() + stall);
                    this.armed = true;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.watch.set(ClientFault::Stalled);
                    return Poll::Ready(Some(Err(format!(
                        "the client sent nothing of its request body for {stall:?}"
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What finishes an exchange: the pipeline's completion phase and the access log line.
pub struct Completion {
    pub ex: Exchange,
    /// The pipeline as it was when the request arrived, and how far its request phase went.
    pub pipeline: Arc<Pipeline>,
    pub reached: Reached,
    pub method: http::Method,
    pub uri: http::Uri,
    pub request_capture: Option<SharedCapture>,
    pub response_capture: Option<Capture>,
    /// The upstream connection, back to its pool once the body has been read through.
    pub upstream: Option<(Arc<UpstreamTarget>, SendRequest<RequestBody>)>,
}

impl Completion {
    fn finish(mut self, completed: bool) {
        self.ex.completed = completed;
        if let (true, Some((target, sender))) = (completed, self.upstream.take()) {
            target.pool.put(sender);
        }
        if let Some(cap) = self.request_capture.take() {
            self.ex.request_body = Some(std::mem::take(
                &mut *cap.lock().unwrap_or_else(|p| p.into_inner()),
            ));
        }
        self.ex.response_body = self.response_capture.take();
        self.pipeline.complete(self.reached, &mut self.ex);
        let status = self.ex.status.map_or(0, |s| s.as_u16());
        tracing::info!(
            target: "heliosburn::access",
            method = %self.method,
            path = self.uri.path(),
            status,
            bytes = self.ex.bytes_sent,
            duration_us = self.ex.started.elapsed().as_micros() as u64,
            completed,
            "exchange"
        );
    }
}

enum Source {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// The response body on its way down to the client.
pub struct ResponseBody {
    source: Source,
    done: Option<Box<Completion>>,
}

impl ResponseBody {
    pub fn upstream(inner: Incoming, done: Option<Box<Completion>>) -> Self {
        Self {
            source: Source::Upstream(inner),
            done,
        }
    }

    /// A body the proxy writes itself (an error message, an empty 101 body).
    pub fn full(bytes: impl Into<Bytes>, done: Option<Box<Completion>>) -> Self {
        let bytes = bytes.into();
        Self {
            source: Source::Full((!bytes.is_empty()).then_some(bytes)),
            done,
        }
    }

    fn observe(&mut self, data: &Bytes) {
        if let Some(done) = self.done.as_mut() {
            done.ex.bytes_sent += data.len() as u64;
            if let Some(cap) = done.response_capture.as_mut() {
                cap.push(data);
            }
        }
    }

    fn finish(&mut self, completed: bool) {
        if let Some(done) = self.done.take() {
            done.finish(completed);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Upstream(inner) => Pin::new(inner).poll_frame(cx),
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.observe(data);
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(inner) => inner.is_end_stream(),
            Source::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(inner) => inner.size_hint(),
            Source::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Not seen to its end: the client went away or the upstream broke off.
        let ended = self.is_end_stream();
        self.finish(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_limit_and_counts_everything() {
        let mut c = Capture::new(4);
        c.push(&Bytes::from_static(b"abc"));
        c.push(&Bytes::from_static(b"defg"));
        let body = c.to_body();
        assert_eq!(
            (body.size, body.truncated, body.data.as_str()),
            (7, true, "abcd")
        );
    }
}
