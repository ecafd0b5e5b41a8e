//! The tail: exchanges as they complete, passed to whoever watches them
//! (`GET /traffic/stream`) the moment the live window takes them.
//!
//! A broadcast ring of the last [`TAIL_CAPACITY`] exchanges: sending never waits, and a
//! watcher that falls behind by more than the ring loses the oldest and is told how
//! many ([`Seen::Missed`]), so a slow watcher costs the proxy nothing. Each exchange is
//! encoded once, by the first watcher that needs it, whatever the number of watchers.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::traffic::TrafficMessage;

/// Exchanges the ring holds: what a watcher may fall behind by before it misses some.
pub const TAIL_CAPACITY: usize = 1024;

/// Watchers at once; one more is refused (each holds a place in the ring's bookkeeping
/// and a connection's buffers).
pub const MAX_WATCHERS: usize = 32;

/// One completed exchange as watchers see it: the message (bodies already cut for the
/// window) and the bytes watchers send of it, made on first use.
pub struct Watched {
    message: Arc<TrafficMessage>,
    encoded: OnceLock<Bytes>,
}

impl Watched {
    pub fn message(&self) -> &TrafficMessage {
        &self.message
    }

    /// The message as watchers send it (`encode` makes it), made once for all of them:
    /// watchers that share an encoding share the bytes too.
    pub fn encoded(&self, encode: impl FnOnce(&TrafficMessage) -> Bytes) -> &Bytes {
        self.encoded.get_or_init(|| encode(&self.message))
    }
}

/// Where completed exchanges are sent, and watched from. Cloning shares it.
#[derive(Clone)]
pub struct Tail {
    tx: broadcast::Sender<Arc<Watched>>,
}

impl Default for Tail {
    fn default() -> Self {
        Self::with_capacity(TAIL_CAPACITY)
    }
}

impl Tail {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Passes on a message if it completes an exchange (it has a response) and anyone
    /// watches; never waits.
    pub fn send(&self, message: &Arc<TrafficMessage>) {
        if message.response.is_none() || self.tx.receiver_count() == 0 {
            return;
        }
        // No watcher left meanwhile: nothing to do.
        let _ = self.tx.send(Arc::new(Watched {
            message: message.clone(),
            encoded: OnceLock::new(),
        }));
    }

    /// A new watcher, seeing what is sent from now on; `None` when [`MAX_WATCHERS`]
    /// already watch.
    pub fn watch(&self) -> Option<Watcher> {
        (self.tx.receiver_count() < MAX_WATCHERS).then(|| Watcher {
            rx: self.tx.subscribe(),
        })
    }

    /// How many watch now.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// What a watcher sees next.
pub enum Seen {
    Exchange(Arc<Watched>),
    /// It fell behind: this many exchanges went by unseen.
    Missed(u64),
}

pub struct Watcher {
    rx: broadcast::Receiver<Arc<Watched>>,
}

impl Watcher {
    /// The next exchange, or how many were missed; waits for one.
    pub async fn next(&mut self) -> Option<Seen> {
        match self.rx.recv().await {
            Ok(w) => Some(Seen::Exchange(w)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Seen::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{MultiMap, RequestInfo, ResponseInfo};

    fn message(id: usize, response: bool) -> Arc<TrafficMessage> {
        let request = Arc::new(RequestInfo {
            created_at: "2026-12-04T00:00:00.000000Z".into(),
            client_protocol: "HTTP/1.1".into(),
            method: "GET".into(),
            uri: format!("/{id}"),
            path: format!("/{id}"),
            args: MultiMap::default(),
            headers: MultiMap::default(),
            body: None,
        });
        let response = response.then(|| {
            Arc::new(ResponseInfo {
                created_at: "2026-12-04T00:00:00.001000Z".into(),
                client_protocol: "HTTP/1.1".into(),
                status_code: 200,
                status_description: "OK".into(),
                headers: MultiMap::default(),
                body: None,
                trailers: None,
                web_socket_messages: None,
            })
        });
        Arc::new(TrafficMessage {
            transaction_id: id.to_string(),
            request_id: id.to_string(),
            response_id: id.to_string(),
            request,
            response,
        })
    }

    #[tokio::test]
    async fn watchers_see_completed_exchanges_and_are_told_what_they_missed() {
        let tail = Tail::with_capacity(4);
        // Nobody watches: nothing is kept.
        tail.send(&message(0, true));
        let mut w = tail.watch().unwrap();
        tail.send(&message(1, false));
        tail.send(&message(2, true));
        let Some(Seen::Exchange(first)) = w.next().await else {
            panic!("expected an exchange")
        };
        assert_eq!(first.message().transaction_id, "2");
        let id = |m: &TrafficMessage| Bytes::from(m.transaction_id.clone());
        assert_eq!(first.encoded(id), "2");
        assert_eq!(first.encoded(|_| unreachable!("made once")), "2");
        for i in 3..13 {
            tail.send(&message(i, true));
        }
        let Some(Seen::Missed(n)) = w.next().await else {
            panic!("expected a miss")
        };
        assert_eq!(n, 6, "10 sent, 4 kept");
        let mut rest = Vec::new();
        use futures_util::FutureExt as _;
        while let Some(Some(Seen::Exchange(x))) = w.next().now_or_never() {
            rest.push(x.message().transaction_id.clone());
        }
        assert_eq!(rest, ["9", "10", "11", "12"]);
    }

    #[test]
    fn watchers_are_bounded() {
        let tail = Tail::default();
        let held: Vec<_> = (0..MAX_WATCHERS).map_while(|_| tail.watch()).collect();
        assert_eq!(held.len(), MAX_WATCHERS);
        assert!(tail.watch().is_none());
        drop(held);
        assert!(tail.watch().is_some());
    }
}
