//! Modules: what `modules.yaml` names, built into the binary.
//!
//! A pipeline module implements the proxy's [`Phase`] trait (its phases run on the request
//! path); a support module ([`SupportModule`]) runs beside the proxy. Each module's file
//! declares its [`Factory`](factory::Factory): name, aliases, kind, typed kwargs, the
//! resources it claims, and how it is built. The [`registry`] lists the factories, and the
//! [`set`] holds the modules of a run with their lifecycles.

pub mod background;
pub mod factory;
pub mod kwargs;
pub mod lifecycle;
pub mod registry;
pub mod set;
pub mod slow_consumer;
pub mod static_response;
pub mod tag_header;
pub mod traffic_playback;
pub mod traffic_reader;
pub mod traffic_recorder;
pub mod traffic_streamer;

use std::sync::Arc;

use async_trait::async_trait;

pub use factory::{Factory, Kind};
pub use lifecycle::{Lifecycle, State};
pub use set::{ModuleOpError, ModuleSet, ModuleStatus};

use crate::proxy::metrics::ModuleHistogram;
use crate::proxy::Phase;

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

impl ModuleError {
    /// For `map_err`: kwargs that validated once and do not build now.
    pub fn kwargs(module: &str) -> impl FnOnce(String) -> Self + '_ {
        move |message| ModuleError::Failed {
            module: module.to_owned(),
            message,
        }
    }
}

/// A module on the request path: its phases, plus what status shows of it.
pub trait PipelineModule: Phase {
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
    /// Histograms for the metrics (the recorder's store write latency).
    fn histograms(&self) -> Vec<ModuleHistogram> {
        Vec::new()
    }
    /// Clears counters.
    fn reset(&self) {}
}

/// What a factory builds.
#[derive(Clone)]
pub enum Built {
    Pipeline(Arc<dyn PipelineModule>),
    Support(Arc<dyn SupportModule>),
}

impl Built {
    pub fn counters(&self) -> serde_json::Value {
        match self {
            Built::Pipeline(p) => p.counters(),
            Built::Support(s) => s.counters(),
        }
    }

    pub fn histograms(&self) -> Vec<ModuleHistogram> {
        match self {
            Built::Pipeline(_) => Vec::new(),
            Built::Support(s) => s.histograms(),
        }
    }

    pub fn reset(&self) {
        match self {
            Built::Pipeline(p) => p.reset(),
            Built::Support(s) => s.reset(),
        }
    }
}
