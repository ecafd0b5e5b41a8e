//! `GET /traffic/stream`: the tail as Server-Sent Events, each watcher with its filter.
//!
//! Events: `exchange` (the live window's message of a completed exchange, on one line)
//! and `missed` (`{"missed": N}`: the watcher fell behind and N exchanges went by
//! unseen, matching its filter or not). A comment every 15 s keeps proxies in between
//! from closing an idle stream. The watcher is in place once the response's head is
//! sent: what completes after that arrives.
//!
//! An exchange's event is encoded once for every watcher (the tail keeps it), and what a
//! watcher has waiting goes out as one chunk: ten watchers cost ten writes of shared
//! bytes, not ten serializations.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use serde::Deserialize;

use super::http::{ApiError, JsonQuery};
use super::Controller;
use crate::traffic::TrafficMessage;
use crate::window::tail::{Seen, Watcher};

/// Quiet this long, a stream sends a comment (proxies between close idle connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most bytes of waiting events sent as one chunk.
const CHUNK: usize = 256 << 10;
/// A chunk smaller than this waits [`LINGER`] for more before it goes: a write per few
/// exchanges, not one per exchange, for each watcher (the proxy's CPU, under load).
const FEW: usize = 16 << 10;
/// What an exchange may wait for others to share its write: unseen on a page.
const LINGER: Duration = Duration::from_millis(5);

/// The filter's query parameters, all optional; given ones must all match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterQuery {
    /// The request method (any case).
    pub method: Option<String>,
    /// A prefix of the request's path.
    pub path: Option<String>,
    /// A status (`404`) or a class (`5xx`).
    pub status: Option<String>,
    /// The request's `Host`, with or without its port.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusMatch {
    Exact(u16),
    /// The hundreds digit.
    Class(u16),
}

/// Which exchanges a watcher wants.
#[derive(Debug, Default)]
pub struct Filter {
    method: Option<String>,
    path: Option<String>,
    status: Option<StatusMatch>,
    host: Option<String>,
}

impl Filter {
    /// The filter the query names, or what is wrong with it.
    pub fn parse(q: FilterQuery) -> Result<Self, String> {
        let status = match q.status.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(parse_status(s).ok_or_else(|| {
                format!("`status` must be a status like 404 or a class like 5xx, not `{s}`")
            })?),
        };
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        Ok(Self {
            method: given(q.method).map(|m| m.to_ascii_uppercase()),
            path: given(q.path),
            status,
            host: given(q.host).map(|h| h.to_ascii_lowercase()),
        })
    }

    /// Whether a completed exchange's message passes.
    pub fn matches(&self, m: &TrafficMessage) -> bool {
        let q = &m.request;
        if self.method.as_ref().is_some_and(|want| *want != q.method) {
            return false;
        }
        if self.path.as_ref().is_some_and(|p| !q.path.starts_with(p)) {
            return false;
        }
        if let Some(want) = self.status {
            let Some(code) = m.response.as_ref().map(|r| r.status_code) else {
                return false;
            };
            let ok = match want {
                StatusMatch::Exact(s) => code == s,
                StatusMatch::Class(c) => code / 100 == c,
            };
            if !ok {
                return false;
            }
        }
        if let Some(want) = &self.host {
            let Some(host) = q.headers.first("host") else {
                return false;
            };
            let host = host.to_ascii_lowercase();
            // `example.com` matches `example.com:8080`; a port given must be equal.
            let bare = strip_port(&host);
            if *want != host && *want != bare {
                return false;
            }
        }
        true
    }
}

fn parse_status(s: &str) -> Option<StatusMatch> {
    let b = s.as_bytes();
    match b {
        [d @ b'1'..=b'9', x, y]
            if x.eq_ignore_ascii_case(&b'x') && y.eq_ignore_ascii_case(&b'x') =>
        {
            Some(StatusMatch::Class(u16::from(d - b'0')))
        }
        _ => s
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
            .map(StatusMatch::Exact),
    }
}

/// `host:port` without its port; `[v6]:port` without its port; anything else as it is.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// An exchange's event: `event: exchange`, its message as JSON on one line (serde's
/// compact form has no newline), and the blank line that ends it.
fn exchange_event(m: &TrafficMessage) -> Bytes {
    let mut out = b"event: exchange\ndata: ".to_vec();
    // A message of strings, numbers and maps of strings always serializes.
    let _ = serde_json::to_writer(&mut out, m);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn missed_event(n: u64) -> Bytes {
    Bytes::from(format!("event: missed\ndata: {{\"missed\":{n}}}\n\n"))
}

/// Adds what a watcher saw to `out`, if its filter lets it through.
fn add(out: &mut BytesMut, seen: &Seen, filter: &Filter) {
    match seen {
        Seen::Exchange(w) if filter.matches(w.message()) => {
            out.extend_from_slice(w.encoded(exchange_event));
        }
        Seen::Exchange(_) => {}
        Seen::Missed(n) => out.extend_from_slice(&missed_event(*n)),
    }
}

/// Adds what the watcher has waiting, up to [`CHUNK`] bytes.
fn take_ready(watcher: &mut Watcher, filter: &Filter, out: &mut BytesMut) {
    while out.len() < CHUNK {
        match watcher.next().now_or_never() {
            Some(Some(seen)) => add(out, &seen, filter),
            _ => break,
        }
    }
}

/// The body for one watcher: each chunk what it has waiting (up to [`CHUNK`] bytes; a
/// few exchanges wait [`LINGER`] for more), a comment after [`KEEP_ALIVE`] of quiet.
fn events(
    watcher: Watcher,
    filter: Filter,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold((watcher, filter), |(mut watcher, filter)| async move {
        let mut out = BytesMut::new();
        // Quiet is what the client hears: exchanges the filter drops do not count.
        let deadline = tokio::time::Instant::now() + KEEP_ALIVE;
        while out.is_empty() {
            match tokio::time::timeout_at(deadline, watcher.next()).await {
                Err(_) => {
                    let comment = Bytes::from_static(b": keep-alive\n\n");
                    return Some((Ok(comment), (watcher, filter)));
                }
                Ok(None) => return None,
                Ok(Some(seen)) => add(&mut out, &seen, &filter),
            }
        }
        take_ready(&mut watcher, &filter, &mut out);
        if out.len() < FEW {
            tokio::time::sleep(LINGER).await;
            take_ready(&mut watcher, &filter, &mut out);
        }
        Some((Ok(out.freeze()), (watcher, filter)))
    })
}

pub(super) async fn traffic_stream(
    State(ctl): State<Arc<Controller>>,
    JsonQuery(q): JsonQuery<FilterQuery>,
) -> Response {
    let filter = match Filter::parse(q) {
        Ok(f) => f,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e).into_response(),
    };
    let Some(watcher) = ctl.tail.watch() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} streams are open already; close one, or poll GET /traffic?since=",
                crate::window::tail::MAX_WATCHERS
            ),
        )
        .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(events(watcher, filter)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{MultiMap, RequestInfo, ResponseInfo};

    fn exchange(method: &str, path: &str, host: &str, status: u16) -> TrafficMessage {
        let mut headers = MultiMap::default();
        headers.push("host", host);
        TrafficMessage {
            transaction_id: "t".into(),
            request_id: "q".into(),
            response_id: "r".into(),
            request: Arc::new(RequestInfo {
                created_at: String::new(),
                client_protocol: "HTTP/1.1".into(),
                method: method.into(),
                uri: path.into(),
                path: path.into(),
                args: MultiMap::default(),
                headers,
                body: None,
            }),
            response: Some(Arc::new(ResponseInfo {
                created_at: String::new(),
                client_protocol: "HTTP/1.1".into(),
                status_code: status,
                status_description: String::new(),
                headers: MultiMap::default(),
                body: None,
                trailers: None,
                web_socket_messages: None,
            })),
        }
    }

    fn filter(q: &str) -> Filter {
        let uri: axum::http::Uri = format!("/traffic/stream?{q}").parse().unwrap();
        let q = axum::extract::Query::<FilterQuery>::try_from_uri(&uri)
            .unwrap()
            .0;
        Filter::parse(q).unwrap()
    }

    #[test]
    fn filters_match_method_path_prefix_status_and_host() {
        let get = exchange("GET", "/api/users", "shop.test:8080", 503);
        let post = exchange("POST", "/static/a.css", "other.test", 200);
        assert!(filter("").matches(&get) && filter("").matches(&post));
        assert!(filter("method=get").matches(&get));
        assert!(!filter("method=GET").matches(&post));
        assert!(filter("path=/api").matches(&get));
        assert!(!filter("path=/api").matches(&post));
        assert!(filter("status=5xx").matches(&get));
        assert!(filter("status=5XX").matches(&get));
        assert!(!filter("status=5xx").matches(&post));
        assert!(filter("status=200").matches(&post));
        assert!(filter("host=shop.test").matches(&get));
        assert!(filter("host=shop.test:8080").matches(&get));
        assert!(!filter("host=shop.test:9090").matches(&get));
        assert!(!filter("host=shop.test").matches(&post));
        assert!(filter("method=GET&path=/api&status=503&host=SHOP.test").matches(&get));
        assert!(!filter("method=GET&path=/static").matches(&get));
    }

    #[tokio::test]
    async fn waiting_events_go_out_as_one_chunk_of_shared_encodings() {
        use futures_util::StreamExt as _;
        let tail = crate::window::tail::Tail::new(2, crate::window::tail::TAIL_MAX_BYTES);
        let (a, b) = (tail.watch().unwrap(), tail.watch().unwrap());
        for (path, status) in [("/x", 200), ("/y", 500), ("/z", 503)] {
            tail.send(&Arc::new(exchange("GET", path, "h", status)));
        }
        let mut all = Box::pin(events(a, filter("")));
        let chunk = all.next().await.unwrap().unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        // The ring of 2 kept the last two; the first went by unseen.
        let blocks: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(blocks.len(), 3, "{text}");
        assert_eq!(blocks[0], "event: missed\ndata: {\"missed\":1}");
        for (block, path) in blocks[1..].iter().zip(["/y", "/z"]) {
            let data = block.strip_prefix("event: exchange\ndata: ").unwrap();
            let m: TrafficMessage = serde_json::from_str(data).unwrap();
            assert_eq!(m.request.path, path);
        }
        let mut errors = Box::pin(events(b, filter("status=503")));
        let chunk = errors.next().await.unwrap().unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        assert_eq!(text.matches("event: exchange").count(), 1, "{text}");
        assert_eq!(text.matches("event: missed").count(), 1, "{text}");
        assert!(text.contains("\"/z\""), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_comes_after_15_s_of_quiet_whatever_the_filter_drops() {
        use futures_util::StreamExt as _;
        let tail = crate::window::tail::Tail::default();
        let mut errors = Box::pin(events(tail.watch().unwrap(), filter("status=5xx")));
        let sender = tokio::spawn({
            let tail = tail.clone();
            async move {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    tail.send(&Arc::new(exchange("GET", "/ok", "h", 200)));
                }
            }
        });
        let began = tokio::time::Instant::now();
        let chunk = errors.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], b": keep-alive\n\n");
        assert_eq!(began.elapsed(), KEEP_ALIVE);
        let chunk = errors.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], b": keep-alive\n\n");
        assert_eq!(began.elapsed(), 2 * KEEP_ALIVE);
        sender.abort();
    }

    #[test]
    fn a_bad_status_is_refused_in_words() {
        for bad in ["0xx", "abc", "5x", "42", "1000"] {
            let e = Filter::parse(FilterQuery {
                status: Some(bad.into()),
                ..FilterQuery::default()
            })
            .unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn ports_come_off_hosts() {
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }
}
