//! Runs the pipeline modules' phases for an exchange, in `modules.yaml` order on the way
//! up and in reverse on the way down. Stopped modules are skipped.

use std::sync::Arc;

use crate::modules::{Exchange, Slot};

pub struct Pipeline {
    slots: Vec<Arc<Slot>>,
}

impl Pipeline {
    pub fn new(slots: Vec<Arc<Slot>>) -> Self {
        Self { slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn running(
        &self,
    ) -> impl DoubleEndedIterator<Item = Arc<dyn crate::modules::PipelineModule>> + '_ {
        self.slots
            .iter()
            .filter(|s| s.lifecycle.is_running())
            .filter_map(|s| s.pipeline())
    }

    /// The most body bytes any running module wants captured (0: capture nothing).
    pub fn capture_limit(&self) -> usize {
        self.running().map(|m| m.capture_limit()).max().unwrap_or(0)
    }

    pub fn request(&self, ex: &mut Exchange, req: &mut http::request::Parts) {
        for m in self.running() {
            m.on_request(ex, req);
        }
    }

    pub fn response(&self, ex: &mut Exchange, resp: &mut http::response::Parts) {
        for m in self.running().rev() {
            m.on_response(ex, resp);
        }
    }

    pub fn complete(&self, ex: &mut Exchange) {
        for m in self.running().rev() {
            m.on_complete(ex);
        }
    }
}
