//! The reverse proxy: listener, exchange forwarding, bodies, and upstream errors.

pub mod body;
pub mod error;
pub mod framing;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod service;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::sync::Arc;

pub use listener::{ListenerCommand, ListenerError, ListenerHandle, ListenerStatus};
pub use pipeline::{Admission, BodyPrefix, Decision, Exchange, Phase, Pipeline, RunningPipeline};
pub use service::{ForwardSettings, Forwarder, UpstreamTarget};

/// The running proxy as the control operations see it.
#[derive(Clone)]
pub struct Proxy {
    pub forwarder: Arc<Forwarder>,
    pub listener: ListenerHandle,
}
