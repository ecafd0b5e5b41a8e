//! Modules: the extension points of the proxy.
//!
//! A [`PipelineModule`] sees each exchange on the request path (request, response and
//! completion phases, each a no-op by default). A [`SupportModule`] runs beside the
//! proxy. Both are built from `modules.yaml` through the [`registry`] and carry a
//! [`Lifecycle`]. **Invariant:** phase methods never block or await; background work
//! goes through a channel that drops rather than waits.

pub mod background;
pub mod kwargs;
pub mod lifecycle;
pub mod registry;
pub mod slow_consumer;
pub mod tag_header;
pub mod traffic_reader;
pub mod traffic_recorder;
pub mod traffic_streamer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

pub use lifecycle::{Lifecycle, State};

use crate::proxy::body::Capture;

/// One request/response exchange as the pipeline sees it. Lives from the request's
/// arrival until its response body has been sent (or the client went away).
pub struct Exchange {
    pub client_addr: SocketAddr,
    pub client_version: http::Version,
    pub started: Instant,
    /// Per-exchange state a module keeps between its phases, by type.
    pub extensions: http::Extensions,
    /// The request body as captured beside the stream (when a module asked for it).
    pub request_body: Option<Capture>,
    /// The response body as captured beside the stream.
    pub response_body: Option<Capture>,
    /// The status sent to the client, once known.
    pub status: Option<http::StatusCode>,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// False when the exchange ended before the whole response was sent.
    pub completed: bool,
    /// Made by the proxy itself (the `test` operation), not by a client: modules that
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
            response_body: None,
            status: None,
            bytes_sent: 0,
            completed: false,
            internal: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {module}: {message}")]
    Failed { module: String, message: String },
    #[error(transparent)]
    Feed(#[from] crate::feed::FeedError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Window(#[from] crate::window::WindowError),
}

/// A module on the request path (pingora's `ProxyHttp`, in small). Implement only the
/// phases you need; each gets the exchange's context and may change the message.
pub trait PipelineModule: Send + Sync + 'static {
    /// The request on its way up, before it is forwarded. Modules run in pipeline order.
    fn on_request(&self, _ex: &mut Exchange, _req: &mut http::request::Parts) {}
    /// The response on its way down. Modules run in reverse pipeline order.
    fn on_response(&self, _ex: &mut Exchange, _resp: &mut http::response::Parts) {}
    /// The exchange is over: bodies captured, status and sizes known.
    fn on_complete(&self, _ex: &mut Exchange) {}
    /// Bytes of each body this module wants captured beside the stream (0: none).
    fn capture_limit(&self) -> usize {
        0
    }
    /// Counters for status.
    fn counters(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Clears counters.
    fn reset(&self) {}
}

/// A module running beside the proxy (pingora's `BackgroundService`).
#[async_trait]
pub trait SupportModule: Send + Sync + 'static {
    /// Starts the module's work. Returns once it is set up (e.g. subscribed), so a bad
    /// setup is an error at once.
    async fn start(&self) -> Result<(), ModuleError>;
    /// Stops the work and waits for it to finish what it holds.
    async fn stop(&self);
    /// Counters for status.
    fn counters(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Clears counters.
    fn reset(&self) {}
}

/// What the registry builds from an entry.
#[derive(Clone)]
pub enum Built {
    Pipeline(Arc<dyn PipelineModule>),
    Support(Arc<dyn SupportModule>),
}

/// A built module with its name and lifecycle, as the module set holds it.
pub struct Slot {
    /// Unique name in status: the module's name, or `Name#2` for a second one.
    pub name: String,
    pub spec: &'static registry::ModuleSpec,
    pub kwargs: arc_swap::ArcSwap<yaml_serde::Value>,
    pub module: arc_swap::ArcSwap<Built>,
    pub lifecycle: Lifecycle,
}

impl Slot {
    pub fn pipeline(&self) -> Option<Arc<dyn PipelineModule>> {
        match &**self.module.load() {
            Built::Pipeline(p) => Some(p.clone()),
            Built::Support(_) => None,
        }
    }

    pub fn counters(&self) -> serde_json::Value {
        match &**self.module.load() {
            Built::Pipeline(p) => p.counters(),
            Built::Support(s) => s.counters(),
        }
    }
}
