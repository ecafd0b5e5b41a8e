//! The tail: exchanges as they complete, passed to whoever watches them
//! (`GET /traffic/stream`) the moment the live window takes them.
//!
//! A broadcast ring of the last [`TAIL_CAPACITY`] exchanges: sending never waits, and a
//! watcher that falls behind by more than the ring loses the oldest and is told how
//! many ([`Seen::Missed`]). What the ring holds is bounded by bytes too
//! ([`TAIL_MAX_BYTES`]): an entry stays until every watcher has read it, so a watcher
//! that reads nothing would otherwise pin a ring of the largest messages. Past the bound
//! new exchanges are not passed on, and every watcher is told it missed them. Each
//! exchange is encoded once, by the first watcher that needs it, whatever their number.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use crate::traffic::TrafficMessage;

/// Exchanges the ring holds: what a watcher may fall behind by before it misses some.
pub const TAIL_CAPACITY: usize = 1024;

/// What the exchanges in the ring may hold together, about: each message (bodies cut
/// for the window) and its encoding.
pub const TAIL_MAX_BYTES: usize = 16 << 20;

/// Watchers at once; one more is refused (each holds a place in the ring's bookkeeping
/// and a connection's buffers).
pub const MAX_WATCHERS: usize = 32;

/// What the tail and its entries share: the bytes held, the exchanges not passed on
/// for the bound, the watchers' places.
struct Shared {
    held: AtomicUsize,
    max_bytes: usize,
    dropped: AtomicU64,
    places: Arc<Semaphore>,
}

/// One completed exchange as watchers see it: the message (bodies already cut for the
/// window) and the bytes watchers send of it, made on first use.
pub struct Watched {
    message: Arc<TrafficMessage>,
    encoded: OnceLock<Bytes>,
    /// What it is charged to the tail's bound, released when the last watcher is done.
    weight: usize,
    shared: Arc<Shared>,
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

impl Drop for Watched {
    fn drop(&mut self) {
        self.shared.held.fetch_sub(self.weight, Ordering::Relaxed);
    }
}

/// Where completed exchanges are sent, and watched from. Cloning shares it.
#[derive(Clone)]
pub struct Tail {
    tx: broadcast::Sender<Arc<Watched>>,
    shared: Arc<Shared>,
}

impl Default for Tail {
    fn default() -> Self {
        Self::new(TAIL_CAPACITY, TAIL_MAX_BYTES)
    }
}

impl Tail {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
            shared: Arc::new(Shared {
                held: AtomicUsize::new(0),
                max_bytes,
                dropped: AtomicU64::new(0),
                places: Arc::new(Semaphore::new(MAX_WATCHERS)),
            }),
        }
    }

    /// Passes on a message if it completes an exchange (it has a response) and anyone
    /// watches; never waits. Past the byte bound it is counted as missed instead.
    pub fn send(&self, message: &Arc<TrafficMessage>) {
        if message.response.is_none() || self.tx.receiver_count() == 0 {
            return;
        }
        // The message and, about as large, its encoding.
        let weight = 2 * message.footprint();
        let held = self.shared.held.fetch_add(weight, Ordering::Relaxed);
        if held + weight > self.shared.max_bytes {
            self.shared.held.fetch_sub(weight, Ordering::Relaxed);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // No watcher left meanwhile: the entry is dropped, and released with it.
        let _ = self.tx.send(Arc::new(Watched {
            message: message.clone(),
            encoded: OnceLock::new(),
            weight,
            shared: self.shared.clone(),
        }));
    }

    /// A new watcher, seeing what is sent from now on; `None` when [`MAX_WATCHERS`]
    /// already watch.
    pub fn watch(&self) -> Option<Watcher> {
        let place = self.shared.places.clone().try_acquire_owned().ok()?;
        Some(Watcher {
            rx: self.tx.subscribe(),
            dropped_seen: self.shared.dropped.load(Ordering::Relaxed),
            shared: self.shared.clone(),
            _place: place,
        })
    }

    /// How many watch now.
    pub fn watchers(&self) -> usize {
        MAX_WATCHERS - self.shared.places.available_permits()
    }
}

/// What a watcher sees next.
pub enum Seen {
    Exchange(Arc<Watched>),
    /// It fell behind, or the tail held its bound: this many exchanges went by unseen.
    Missed(u64),
}

pub struct Watcher {
    rx: broadcast::Receiver<Arc<Watched>>,
    /// The tail's count of exchanges not passed on, as this watcher last reported it.
    dropped_seen: u64,
    shared: Arc<Shared>,
    _place: OwnedSemaphorePermit,
}

impl Watcher {
    /// The next exchange, or how many were missed; waits for one.
    pub async fn next(&mut self) -> Option<Seen> {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped != self.dropped_seen {
            let n = dropped - self.dropped_seen;
            self.dropped_seen = dropped;
            return Some(Seen::Missed(n));
        }
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
        let tail = Tail::new(4, TAIL_MAX_BYTES);
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

    #[tokio::test]
    async fn past_its_byte_bound_the_tail_passes_nothing_and_says_so() {
        let one = 2 * message(0, true).footprint();
        let tail = Tail::new(16, 3 * one);
        let (mut slow, mut fast) = (tail.watch().unwrap(), tail.watch().unwrap());
        for i in 0..5 {
            tail.send(&message(i, true));
        }
        // Three fit; two went by for everyone.
        let Some(Seen::Missed(2)) = fast.next().await else {
            panic!("expected two missed")
        };
        for want in ["0", "1", "2"] {
            let Some(Seen::Exchange(x)) = fast.next().await else {
                panic!("expected an exchange")
            };
            assert_eq!(x.message().transaction_id, want);
        }
        // The slow watcher still holds them: the bound still holds.
        tail.send(&message(5, true));
        let Some(Seen::Missed(1)) = fast.next().await else {
            panic!("expected one more missed")
        };
        // Once the slow one has read them too, room comes back.
        use futures_util::FutureExt as _;
        let mut slow_saw = Vec::new();
        while let Some(Some(seen)) = slow.next().now_or_never() {
            slow_saw.push(match seen {
                Seen::Missed(n) => format!("missed {n}"),
                Seen::Exchange(x) => x.message().transaction_id.clone(),
            });
        }
        assert_eq!(slow_saw, ["missed 3", "0", "1", "2"]);
        assert_eq!(tail.shared.held.load(Ordering::Relaxed), 0);
        tail.send(&message(6, true));
        let Some(Seen::Exchange(x)) = fast.next().await else {
            panic!("expected an exchange")
        };
        assert_eq!(x.message().transaction_id, "6");
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
