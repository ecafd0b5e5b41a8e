//! The extension point of the proxy path: the [`Phase`] trait a pipeline module
//! implements, the per-exchange context it is handed ([`Exchange`]), and the
//! [`Pipeline`] that runs phases in order.
//!
//! **Invariant:** each exchange takes a snapshot of the running pipeline when its request
//! arrives ([`RunningPipeline::snapshot`]) and runs every later phase on that snapshot, so
//! a module stopped or reloaded mid-exchange still sees the completion of every exchange
//! it saw begin. Phase methods never block or await.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::proxy::body::Capture;

/// One request/response exchange as the pipeline sees it. Lives from the request's
/// arrival until its response body has been sent (or the client went away).
pub struct Exchange {
    pub client_addr: SocketAddr,
    pub client_version: http::Version,
    pub started: Instant,
    /// Per-exchange state a module keeps between its phases, by type.
    pub extensions: http::Extensions,
    /// The request body as captured beside the stream (when a phase asked for it).
    pub request_body: Option<Capture>,
    /// The first bytes of the request body, read before the request phase because a
    /// phase asked for them ([`Phase::request_body_needed`]); they are forwarded first.
    pub request_prefix: Option<BodyPrefix>,
    /// The response body as captured beside the stream.
    pub response_body: Option<Capture>,
    /// The status sent to the client, once known.
    pub status: Option<http::StatusCode>,
    /// The response's trailer fields, once they have passed (gRPC's status).
    pub response_trailers: Option<http::HeaderMap>,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// False when the exchange ended before the whole response was sent.
    pub completed: bool,
    /// Made by the proxy itself (the `test` operation), not by a client: phases that
    /// report traffic (TrafficReader) leave it out.
    pub internal: bool,
}

impl Exchange {
    pub fn new(client_addr: SocketAddr, client_version: http::Version) -> Self {
        Self {
            client_addr,
            client_version,
            started: Instant::now(),
            extensions: http::Extensions::new(),
            request_body: None,
            request_prefix: None,
            response_body: None,
            status: None,
            response_trailers: None,
            bytes_sent: 0,
            completed: false,
            internal: false,
        }
    }
}

/// The start of a request body, read before the request phase.
#[derive(Debug, Clone, Default)]
pub struct BodyPrefix {
    /// At most the most bytes a phase asked for.
    pub data: Bytes,
    /// Whether `data` is the whole body (else the body goes on past it).
    pub whole: bool,
}

/// What the request phase decided.
#[derive(Debug, Default)]
pub enum Decision {
    /// Go on: the next phase, then the upstream.
    #[default]
    Forward,
    /// Answer the request with this response instead of forwarding it (playback, mocks).
    /// The phases that saw the request still see this response and the completion.
    Respond(http::Response<Bytes>),
    /// Fail the exchange: the client gets `status` with a plain-text line saying `reason`,
    /// as for an upstream error.
    Fail {
        status: http::StatusCode,
        reason: String,
    },
}

/// A pipeline phase (pingora's `ProxyHttp`, in small). Implement only what you need;
/// each method gets the exchange's context and may change the message.
pub trait Phase: Send + Sync + 'static {
    /// The request on its way up, before it is forwarded. Phases run in pipeline order;
    /// the first that does not [`Decision::Forward`] ends the request phase.
    fn on_request(&self, _ex: &mut Exchange, _req: &mut http::request::Parts) -> Decision {
        Decision::Forward
    }
    /// The response on its way down. Phases run in reverse pipeline order.
    fn on_response(&self, _ex: &mut Exchange, _resp: &mut http::response::Parts) {}
    /// The exchange is over: bodies captured, status and sizes known.
    fn on_complete(&self, _ex: &mut Exchange) {}
    /// An exchange upgraded to WebSocket, completed already, carried these messages
    /// (when a phase captures: [`Phase::capture_limit`]). Called in batches, in the
    /// order they passed, while the connection lives; phases run in reverse order.
    fn on_messages(&self, _ex: &mut Exchange, _messages: &[crate::traffic::WebSocketMessage]) {}
    /// Bytes of each body this phase wants captured beside the stream (0: none).
    fn capture_limit(&self) -> usize {
        0
    }
    /// Bytes of the request body this phase must see in [`Phase::on_request`] (0: none,
    /// the default). When a phase asks, the proxy reads that much of the body before the
    /// request phase, holds it in [`Exchange::request_prefix`], and forwards it first:
    /// the body streams on after it. Playback matching on bodies asks; nothing else should.
    fn request_body_needed(&self) -> usize {
        0
    }
    /// A wait before the request phase, when this phase cannot take another exchange yet
    /// (a full feed that asked for completeness over latency). `None`, the default, is
    /// the common case: go on at once.
    fn admit(&self) -> Option<Admission> {
        None
    }
}

/// What an exchange waits on before its request phase (see [`Phase::admit`]).
pub type Admission = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The running phases, in order, as one exchange sees them.
#[derive(Default)]
pub struct Pipeline {
    phases: Vec<Arc<dyn Phase>>,
    capture_limit: usize,
    request_body_needed: usize,
}

/// How far the request phase went: the response and completion phases run for the
/// phases that saw the request, and only those.
#[derive(Debug, Clone, Copy)]
pub struct Reached(usize);

impl Reached {
    /// No phase saw the request (the proxy refused it first).
    pub const NONE: Reached = Reached(0);
}

impl Pipeline {
    pub fn new(phases: Vec<Arc<dyn Phase>>) -> Self {
        let capture_limit = phases.iter().map(|p| p.capture_limit()).max().unwrap_or(0);
        let request_body_needed = phases
            .iter()
            .map(|p| p.request_body_needed())
            .max()
            .unwrap_or(0);
        Self {
            phases,
            capture_limit,
            request_body_needed,
        }
    }

    /// The first wait a phase asks for before this exchange's request phase.
    pub fn admit(&self) -> Option<Admission> {
        self.phases.iter().find_map(|p| p.admit())
    }

    /// The most request body bytes a phase must see before deciding (0: none).
    pub fn request_body_needed(&self) -> usize {
        self.request_body_needed
    }

    /// The most body bytes any phase wants captured (0: capture nothing).
    pub fn capture_limit(&self) -> usize {
        self.capture_limit
    }

    pub fn request(
        &self,
        ex: &mut Exchange,
        req: &mut http::request::Parts,
    ) -> (Decision, Reached) {
        for (i, p) in self.phases.iter().enumerate() {
            match p.on_request(ex, req) {
                Decision::Forward => {}
                other => return (other, Reached(i + 1)),
            }
        }
        (Decision::Forward, Reached(self.phases.len()))
    }

    pub fn response(&self, reached: Reached, ex: &mut Exchange, resp: &mut http::response::Parts) {
        for p in self.phases[..reached.0].iter().rev() {
            p.on_response(ex, resp);
        }
    }

    pub fn complete(&self, reached: Reached, ex: &mut Exchange) {
        for p in self.phases[..reached.0].iter().rev() {
            p.on_complete(ex);
        }
    }

    pub fn messages(
        &self,
        reached: Reached,
        ex: &mut Exchange,
        messages: &[crate::traffic::WebSocketMessage],
    ) {
        for p in self.phases[..reached.0].iter().rev() {
            p.on_messages(ex, messages);
        }
    }
}

/// The pipeline new exchanges get. Whoever starts and stops modules replaces it; an
/// exchange keeps the snapshot it took.
#[derive(Default)]
pub struct RunningPipeline(ArcSwap<Pipeline>);

impl RunningPipeline {
    pub fn new(pipeline: Pipeline) -> Self {
        Self(ArcSwap::from_pointee(pipeline))
    }

    pub fn snapshot(&self) -> Arc<Pipeline> {
        self.0.load_full()
    }

    pub fn replace(&self, pipeline: Pipeline) {
        self.0.store(Arc::new(pipeline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Log(&'static str, Arc<Mutex<Vec<String>>>, Option<u16>);

    impl Phase for Log {
        fn on_request(&self, _: &mut Exchange, _: &mut http::request::Parts) -> Decision {
            self.1.lock().unwrap().push(format!("req {}", self.0));
            match self.2 {
                Some(s) => Decision::Respond(
                    http::Response::builder()
                        .status(s)
                        .body(Bytes::new())
                        .unwrap(),
                ),
                None => Decision::Forward,
            }
        }
        fn on_response(&self, _: &mut Exchange, _: &mut http::response::Parts) {
            self.1.lock().unwrap().push(format!("resp {}", self.0));
        }
        fn on_complete(&self, _: &mut Exchange) {
            self.1.lock().unwrap().push(format!("done {}", self.0));
        }
    }

    #[test]
    fn an_answering_phase_ends_the_request_phase_and_only_earlier_phases_see_the_rest() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let p = Pipeline::new(vec![
            Arc::new(Log("a", log.clone(), None)),
            Arc::new(Log("b", log.clone(), Some(418))),
            Arc::new(Log("c", log.clone(), None)),
        ]);
        let mut ex = Exchange::new("127.0.0.1:1".parse().unwrap(), http::Version::HTTP_11);
        let (mut req, ()) = http::Request::new(()).into_parts();
        let (decision, reached) = p.request(&mut ex, &mut req);
        assert!(matches!(decision, Decision::Respond(r) if r.status() == 418));
        let (mut resp, ()) = http::Response::new(()).into_parts();
        p.response(reached, &mut ex, &mut resp);
        p.complete(reached, &mut ex);
        assert_eq!(
            *log.lock().unwrap(),
            ["req a", "req b", "resp b", "resp a", "done b", "done a"]
        );
    }

    #[test]
    fn a_snapshot_outlives_a_replacement() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let running =
            RunningPipeline::new(Pipeline::new(vec![Arc::new(Log("old", log.clone(), None))]));
        let snap = running.snapshot();
        running.replace(Pipeline::default());
        assert_eq!((snap.phases.len(), running.snapshot().phases.len()), (1, 0));
        let mut ex = Exchange::new("127.0.0.1:1".parse().unwrap(), http::Version::HTTP_11);
        snap.complete(Reached(1), &mut ex);
        assert_eq!(*log.lock().unwrap(), ["done old"]);
    }
}
