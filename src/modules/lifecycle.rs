//! A module's lifecycle: `loaded`, `running`, `stopped`, `error`, and since when.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Loaded,
    Running,
    Stopped,
    Error,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => State::Running,
            2 => State::Stopped,
            3 => State::Error,
            _ => State::Loaded,
        }
    }
}

/// The state (read on every exchange, so an atomic) and its status: when it was entered
/// or the error text.
pub struct Lifecycle {
    state: AtomicU8,
    status: Mutex<Status>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub since: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(State::Loaded as u8),
            status: Mutex::new(Status {
                since: Utc::now(),
                error: None,
            }),
        }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set(&self, state: State) {
        self.enter(state, None);
    }

    pub fn fail(&self, error: impl ToString) {
        self.enter(State::Error, Some(error.to_string()));
    }

    fn enter(&self, state: State, error: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        *status = Status {
            since: Utc::now(),
            error,
        };
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
