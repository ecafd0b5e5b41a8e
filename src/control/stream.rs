//! `GET /traffic/stream`: the tail as Server-Sent Events, each watcher with its filter.
//!
//! Events: `exchange` (the live window's message of a completed exchange, on one line)
//! and `missed` (`{"missed": N}`: the watcher fell behind and N exchanges went by
//! unseen, matching its filter or not). A comment every 15 s keeps proxies in between
//! from closing an idle stream. The watcher is in place once the response's head is
//! sent: what completes after that arrives.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::http::{ApiError, JsonQuery};
use super::Controller;
use crate::traffic::TrafficMessage;
use crate::window::tail::{Seen, Watcher};

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
        [d @ b'1'..=b'5', x, y]
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

/// The SSE event for what a watcher saw, if its filter lets it through.
fn event(seen: &Seen, filter: &Filter) -> Option<Event> {
    match seen {
        Seen::Exchange(w) if filter.matches(w.message()) => {
            // The JSON is compact: one line, as a `data:` field needs.
            let json = String::from_utf8_lossy(w.json());
            Some(Event::default().event("exchange").data(json))
        }
        Seen::Exchange(_) => None,
        Seen::Missed(n) => Some(
            Event::default()
                .event("missed")
                .data(format!("{{\"missed\":{n}}}")),
        ),
    }
}

/// The stream of events for one watcher. Events already waiting come out without a
/// wait, so the connection writes them in one go (hyper gathers the frames of a body
/// that is ready before it flushes).
fn events(
    watcher: Watcher,
    filter: Filter,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((watcher, filter), |(mut watcher, filter)| async move {
        loop {
            let seen = watcher.next().await?;
            if let Some(e) = event(&seen, &filter) {
                return Some((Ok(e), (watcher, filter)));
            }
        }
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
    Sse::new(events(watcher, filter))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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

    #[test]
    fn a_bad_status_is_refused_in_words() {
        for bad in ["6xx", "abc", "5x", "42", "1000"] {
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
