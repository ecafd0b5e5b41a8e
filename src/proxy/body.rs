//! Bodies on the proxy path: streamed through frame by frame, optionally copied up to a
//! limit beside the stream (a `Bytes` slice, no copy of the data), and, for the response,
//! the exchange's completion phase when the last frame passes or the body is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::pipeline::{Exchange, Pipeline, Reached};
use crate::proxy::service::UpstreamTarget;
use crate::traffic::BodyCapture;

/// The bytes of bodies held for captures at once, across every exchange in flight: what
/// bounds capture memory however many clients there are (each exchange still keeps at most
/// its `body_limit`). A capture that finds the budget spent keeps what it has, and its
/// document says the body was truncated, with the real size; such captures are counted,
/// and the log says so once per episode.
#[derive(Debug)]
pub struct CaptureBudget {
    max: usize,
    used: AtomicUsize,
    cut_short: AtomicU64,
    /// Set while the budget is spent, so an episode is logged once.
    spent: AtomicBool,
}

/// What [`CaptureBudget`] reports (`GET /proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// The budget, in bytes (`capture_memory`).
    pub memory_max: usize,
    /// Bytes held by captures now.
    pub memory_in_use: usize,
    /// Captures cut short because the budget was spent.
    pub cut_short: u64,
}

impl CaptureBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
            cut_short: AtomicU64::new(0),
            spent: AtomicBool::new(false),
        })
    }

    /// Takes `n` bytes of the budget, if they are left.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        if before - n <= self.max / 2 && self.spent.swap(false, Ordering::AcqRel) {
            tracing::info!(capture_memory = self.max, "capture budget free again");
        }
    }

    /// Holds `n` bytes of the budget until the reservation is dropped, if they are left
    /// (the phase that asked for them counts what it could not have).
    pub fn try_reserve(self: &Arc<Self>, n: usize) -> Option<Reservation> {
        self.take(n).then(|| Reservation {
            budget: self.clone(),
            n,
        })
    }

    fn count_cut(&self) {
        self.cut_short.fetch_add(1, Ordering::Relaxed);
        if !self.spent.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                capture_memory = self.max,
                "capture budget spent: bodies of exchanges in flight are recorded cut short \
                 (counted in GET /proxy as capture.cut_short); raise capture_memory or lower body_limit"
            );
        }
    }

    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            memory_max: self.max,
            memory_in_use: self.used.load(Ordering::Acquire),
            cut_short: self.cut_short.load(Ordering::Relaxed),
        }
    }
}

/// Bytes of the [`CaptureBudget`] held for a request body's start read before the
/// request phase, given back when the reservation is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<CaptureBudget>,
    n: usize,
}

impl Reservation {
    /// Holds `more` bytes besides, if they are left; when they are not, the cut is
    /// counted (and logged once per episode) and the reservation stays as it was.
    pub fn grow(&mut self, more: usize) -> bool {
        self.try_grow(more) || {
            self.budget.count_cut();
            false
        }
    }

    /// [`Reservation::grow`] that counts nothing when the bytes are not left (the
    /// caller tries for less next, and counts that).
    pub fn try_grow(&mut self, more: usize) -> bool {
        let taken = self.budget.take(more);
        if taken {
            self.n += more;
        }
        taken
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.n);
    }
}

/// The first `limit` bytes of a body and its total size, copied into one buffer charged
/// to the [`CaptureBudget`] (a copy, so a capture never pins the connection's read
/// buffers); when the body is whole that buffer is handed on as it is.
#[derive(Debug, Default)]
pub struct Capture {
    limit: usize,
    data: Vec<u8>,
    /// The kept bytes once the body is whole and handed on ([`Capture::to_body`]):
    /// shared from then on, never copied again.
    done: Option<Bytes>,
    pub size: u64,
    /// The body's announced length, when it has one: the buffer is sized once.
    expected: Option<u64>,
    budget: Option<Arc<CaptureBudget>>,
    /// Bytes of the budget this capture holds (its buffer's capacity).
    held: usize,
    /// The budget was spent when this capture needed more: it keeps what it has.
    starved: bool,
}

impl Capture {
    pub fn new(limit: usize, budget: Arc<CaptureBudget>) -> Self {
        Self::with(limit, Some(budget))
    }

    /// A capture with no budget but its limit (tests, tools).
    pub fn unbudgeted(limit: usize) -> Self {
        Self::with(limit, None)
    }

    fn with(limit: usize, budget: Option<Arc<CaptureBudget>>) -> Self {
        Self {
            limit,
            data: Vec::new(),
            done: None,
            size: 0,
            expected: None,
            budget,
            held: 0,
            starved: false,
        }
    }

    /// The body announced its length: the buffer is made that size (up to the limit).
    pub fn expect(&mut self, len: Option<u64>) {
        self.expected = len;
    }

    pub fn push(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        let take = data.len().min(self.limit - self.data.len());
        if take == 0 || self.starved || self.done.is_some() {
            return;
        }
        let need = self.data.len() + take;
        if need > self.data.capacity() && !self.grow(need) {
            self.starved = true;
            if let Some(b) = &self.budget {
                b.count_cut();
            }
            return;
        }
        self.data.extend_from_slice(&data[..take]);
    }

    /// Makes room for `need` bytes: double what it has (64 KiB at first), never more than
    /// the announced length or the limit. Charged as the data comes, so a client that
    /// announces a large body and sends a byte holds little of the budget.
    fn grow(&mut self, need: usize) -> bool {
        const FIRST: usize = 64 * 1024;
        let announced = self
            .expected
            .map_or(usize::MAX, |len| usize::try_from(len).unwrap_or(usize::MAX));
        let doubled = (self.data.capacity() * 2).max(FIRST);
        let target = doubled.min(announced).min(self.limit).max(need);
        let Some(budget) = &self.budget else {
            self.data.reserve_exact(target - self.data.len());
            return true;
        };
        // The whole step if it is there, else just what this frame needs.
        let Some(target) = [target, need]
            .into_iter()
            .find(|&t| budget.take(t - self.held))
        else {
            return false;
        };
        self.data.reserve_exact(target - self.data.len());
        self.held = target;
        true
    }

    /// What was captured, for a body that has passed whole: the buffer itself becomes
    /// the capture's bytes (a copy only when it is mostly empty room, so that a small
    /// body does not carry a large allocation along), and every later call shares them.
    pub fn to_body(&mut self) -> BodyCapture {
        let bytes = self.done.get_or_insert_with(|| {
            let data = std::mem::take(&mut self.data);
            if data.capacity() > 2 * data.len() {
                Bytes::copy_from_slice(&data)
            } else {
                Bytes::from(data)
            }
        });
        BodyCapture::new(bytes.clone(), self.size)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.held);
        }
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

/// Where the request body tells the forwarder what it saw: a fault of the client's, and
/// when the upstream last took a piece of it (its time to answer counts from then, so a
/// long upload is no slow upstream).
#[derive(Debug)]
pub struct BodyWatch {
    fault: AtomicU8,
    born: tokio::time::Instant,
    /// Microseconds after `born` of the last frame the upstream took.
    progress_us: AtomicU64,
    /// The upstream is waiting for the client's next piece: no time of the upstream's.
    on_client: AtomicBool,
    /// Body bytes taken from the client.
    received: AtomicU64,
}

impl Default for BodyWatch {
    fn default() -> Self {
        Self {
            fault: AtomicU8::new(0),
            born: tokio::time::Instant::now(),
            progress_us: AtomicU64::new(0),
            on_client: AtomicBool::new(false),
            received: AtomicU64::new(0),
        }
    }
}

impl BodyWatch {
    fn set(&self, fault: ClientFault) {
        let v = match fault {
            ClientFault::Malformed => 1,
            ClientFault::Stalled => 2,
        };
        self.fault.store(v, Ordering::Relaxed);
    }

    pub fn fault(&self) -> Option<ClientFault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Stalled),
            _ => None,
        }
    }

    fn took(&self, data: &Bytes) {
        self.received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }

    /// Body bytes taken from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn progressed(&self) {
        let us = self.born.elapsed().as_micros();
        self.progress_us
            .store(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.on_client.store(false, Ordering::Relaxed);
    }

    /// Resolves once `timeout` has passed since the upstream last took part of the body
    /// (or since the exchange began), not counting time it waited for the client (whose
    /// stalls have their own timeout): the clock starts again at the client's next piece.
    pub async fn quiet_for(&self, timeout: Duration) {
        loop {
            if self.on_client.load(Ordering::Relaxed) {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let last = self.born + Duration::from_micros(self.progress_us.load(Ordering::Relaxed));
            if last + timeout <= tokio::time::Instant::now() {
                return;
            }
            tokio::time::sleep_until(last + timeout).await;
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body on its way up: the client's stream, copied on the side if asked,
/// and given up (as the client's fault) when it stalls.
pub struct RequestBody {
    /// Frames read before the request phase ([`read_prefix`]), sent first.
    prefix: std::collections::VecDeque<Frame<Bytes>>,
    /// The capture budget those frames hold until they are sent.
    reserved: Option<Reservation>,
    /// The client's body; none for a request sent again without one.
    inner: Option<Incoming>,
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
            prefix: Default::default(),
            reserved: None,
            inner: Some(inner),
            capture,
            watch,
            stall,
            timer: None,
            armed: false,
        }
    }

    /// No body at all: a request without one, sent again (its exchange watches the
    /// first sending's body, which has ended).
    pub fn empty() -> Self {
        Self {
            prefix: Default::default(),
            reserved: None,
            inner: None,
            capture: None,
            watch: Arc::new(BodyWatch::default()),
            stall: Duration::ZERO,
            timer: None,
            armed: false,
        }
    }

    /// Sends these frames (read from `inner` already, holding `reserved` of the capture
    /// budget until they are sent) before the rest of `inner`.
    pub fn with_prefix(
        self,
        prefix: std::collections::VecDeque<Frame<Bytes>>,
        reserved: Option<Reservation>,
    ) -> Self {
        Self {
            prefix,
            reserved,
            ..self
        }
    }
}

/// Why a request body could not be read before the request phase.
pub enum PrefixError {
    Malformed(String),
    Stalled(Duration),
}

/// Reads the start of a request body before the request phase: frames until more than
/// `want` bytes of data came, the body ended, or a trailers frame; each frame must come
/// within `stall`. Returns the frames read (to be sent first) and what they hold.
pub async fn read_prefix(
    body: &mut Incoming,
    want: usize,
    stall: Duration,
) -> Result<
    (
        std::collections::VecDeque<Frame<Bytes>>,
        crate::proxy::BodyPrefix,
    ),
    PrefixError,
> {
    use http_body_util::BodyExt as _;
    let mut frames = std::collections::VecDeque::new();
    let mut data = bytes::BytesMut::new();
    let mut whole = body.is_end_stream();
    while !whole && data.len() <= want {
        match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(PrefixError::Stalled(stall)),
            Ok(None) => whole = true,
            Ok(Some(Err(e))) => return Err(PrefixError::Malformed(e.to_string())),
            Ok(Some(Ok(frame))) => {
                let trailers = !frame.is_data();
                if let Some(d) = frame.data_ref() {
                    data.extend_from_slice(&d[..d.len().min(want + 1 - data.len())]);
                }
                frames.push_back(frame);
                // Trailers end a body.
                whole = trailers || body.is_end_stream();
            }
        }
    }
    let whole = whole && data.len() <= want;
    data.truncate(want);
    let prefix = crate::proxy::BodyPrefix {
        data: data.freeze(),
        whole,
    };
    Ok((frames, prefix))
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.prefix.pop_front() {
            if let Some(data) = frame.data_ref() {
                this.watch.took(data);
            }
            if let (Some(data), Some(cap)) = (frame.data_ref(), &this.capture) {
                cap.lock().unwrap_or_else(|p| p.into_inner()).push(data);
            }
            if this.prefix.is_empty() {
                this.reserved = None;
            }
            this.watch.progressed();
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.watch.took(data);
                }
                if let (Some(data), Some(cap)) = (frame.data_ref(), &this.capture) {
                    cap.lock().unwrap_or_else(|p| p.into_inner()).push(data);
                }
                // The stall is counted from the next time the client has nothing ready,
                // not from this frame: an upstream slow to read is not the client's fault.
                this.armed = false;
                this.watch.progressed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.watch.set(ClientFault::Malformed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.watch.progressed();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.watch.on_client.store(true, Ordering::Relaxed);
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
        self.prefix.is_empty() && self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self
            .inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |i| i.size_hint());
        let held: u64 = self
            .prefix
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
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
    pub upstream: Option<(Arc<UpstreamTarget>, crate::proxy::upstream::Lent)>,
    /// An upgrade whose WebSocket messages are read: the completed exchange goes there.
    pub upgraded: Option<tokio::sync::oneshot::Sender<crate::proxy::websocket::Upgraded>>,
    /// Where the exchange is counted, and what it counts: the request body's bytes
    /// (through its watch) and the upstream error it met.
    pub metrics: Option<Arc<crate::proxy::metrics::ProxyMetrics>>,
    pub watch: Option<Arc<BodyWatch>>,
    pub failure: Option<crate::proxy::metrics::UpstreamErrorKind>,
}

impl Completion {
    fn finish(mut self, completed: bool) {
        self.ex.completed = completed;
        if let (true, Some((target, lent))) = (completed, self.upstream.take()) {
            target.pool.put(lent);
        }
        if let Some(cap) = self.request_capture.take() {
            self.ex.request_body = Some(std::mem::take(
                &mut *cap.lock().unwrap_or_else(|p| p.into_inner()),
            ));
        }
        self.ex.response_body = self.response_capture.take();
        self.pipeline.complete(self.reached, &mut self.ex);
        if let (Some(m), false) = (&self.metrics, self.ex.internal) {
            m.exchange(
                &self.method,
                self.ex.status,
                self.ex.started.elapsed(),
                self.watch.as_ref().map_or(0, |w| w.received()),
                self.ex.bytes_sent,
                self.failure,
            );
        }
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
        if let Some(tx) = self.upgraded.take() {
            let _ = tx.send(crate::proxy::websocket::Upgraded {
                pipeline: self.pipeline,
                reached: self.reached,
                ex: self.ex,
            });
        }
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
                } else if let (Some(trailers), Some(done)) = (frame.trailers_ref(), &mut this.done)
                {
                    done.ex.response_trailers = Some(trailers.clone());
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
        let mut c = Capture::unbudgeted(4);
        c.push(b"abc");
        c.push(b"defg");
        let body = c.to_body();
        assert_eq!(
            (body.size, body.truncated, body.text()),
            (7, true, Some("abcd"))
        );
    }
}
