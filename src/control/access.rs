//! Who may use the management API: the guard every request passes before a route, and
//! the JSON rule every route's state change passes.
//!
//! A web page in the user's browser must not be able to reach it: requests whose `Host`
//! is not this listener's own address (or a configured name) are refused, which defeats
//! DNS rebinding; requests that change state must be `application/json` and carry no
//! foreign `Origin`, which a cross-site page cannot send without a CORS preflight that
//! is never answered. With a token, every route but the liveness probe and the page's
//! files (which hold no data) needs it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::http::ApiError;
use crate::config::settings::Secret;

/// The route that answers without a token (load balancers, systemd, k8s probes).
pub const HEALTH_PATH: &str = "/healthz";

/// What a request must show.
#[derive(Debug)]
pub struct Access {
    /// The listener's own address: `Host` values naming it are accepted.
    local: SocketAddr,
    /// Further accepted `Host` values (lowercase; with or without a port).
    names: Vec<String>,
    token: Option<Secret>,
}

impl Access {
    pub fn new(local: SocketAddr, names: Vec<String>, token: Option<Secret>) -> Self {
        Self {
            local,
            names,
            token,
        }
    }

    /// Whether a `Host` value names this listener.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        let (name, port) = split_host(&host);
        if self
            .names
            .iter()
            .any(|n| !n.contains(':') && n.as_str() == name)
        {
            return true;
        }
        if port != Some(self.local.port()) {
            return false;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address, not a name: DNS rebinding needs a name. Ours, or any address
            // of this machine when the listener is on all of them.
            Ok(ip) => ip == self.local.ip() || self.local.ip().is_unspecified(),
            Err(_) => name == "localhost" && self.local.ip().is_loopback(),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        match origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        {
            Some(host) => self.host_allowed(host.trim_end_matches('/')),
            // `null` (a sandboxed frame, a file) or anything else: foreign.
            None => false,
        }
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        // The scheme's case does not matter (RFC 9110 11.1).
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.expose().trim().as_bytes()))
    }

    /// Why this request may not go on, if it may not.
    fn refusal(
        &self,
        method: &Method,
        path: &str,
        authority: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<ApiError> {
        // HTTP/2 names the host in `:authority`; HTTP/1.1 in `Host`.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority);
        match host {
            Some(h) if self.host_allowed(h) => {}
            Some(h) => {
                return Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "`Host: {h}` does not name this management API ({}); add the name to \
                         `management_hosts` in the settings file to allow it",
                        self.local
                    ),
                ))
            }
            None => {
                return Some(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "a request needs a `Host` header",
                ))
            }
        }
        let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let public = (*method == Method::GET && path == HEALTH_PATH)
            || (reads && super::ui::is_page_file(path));
        if !public && !self.token_ok(headers) {
            return Some(ApiError::unauthorized(
                "this management API needs `Authorization: Bearer TOKEN` (the CLI sends \
                 --mgmt-token or HELIOSBURN_MGMT_TOKEN)",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            if !self.origin_allowed(origin) {
                return Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("requests from `Origin: {origin}` are not accepted"),
                ));
            }
        }
        None
    }
}

/// Why a request that may change state cannot go on to its route: it is not JSON.
fn not_json(method: &Method, headers: &HeaderMap) -> Option<ApiError> {
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    (!reads && !is_json(headers)).then(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request that changes state must be sent as `Content-Type: application/json` \
             (an empty body is `{}`)",
        )
    })
}

/// The JSON rule, as a route layer: it runs for the methods a route has, so a method it
/// has not is told 405 (with `Allow`) rather than 415, and the fallback's 404 stays one.
/// Neither runs a handler, so no state changes without JSON.
pub async fn require_json(req: Request, next: Next) -> Response {
    match not_json(req.method(), req.headers()) {
        Some(refused) => {
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                "management request refused: not JSON"
            );
            refused.into_response()
        }
        None => next.run(req).await,
    }
}

/// The guard, as axum middleware; every response also says `nosniff`.
pub async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let refused = access.refusal(
        req.method(),
        req.uri().path(),
        authority.as_deref(),
        req.headers(),
    );
    let mut resp = match refused {
        Some(refused) => {
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                host = ?req.headers().get(header::HOST),
                origin = ?req.headers().get(header::ORIGIN),
                "management request refused"
            );
            refused.into_response()
        }
        None => with_json_405(next.run(req).await),
    };
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A route's 405 (axum's, with an empty body) in the API's error shape; axum adds its
/// `Allow` after this layer.
fn with_json_405(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take this method; `Allow` lists those it takes",
    )
    .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// `host[:port]` (IPv6 in brackets) into its name and port.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (
                &host[..ip.len() + 2],
                tail.strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, port.parse().ok()),
        None => (host, None),
    }
}

/// Compares without stopping at the first difference, so timing says nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn loopback() -> Access {
        Access::new(
            "127.0.0.1:5150".parse().unwrap(),
            vec!["hb.internal".into()],
            None,
        )
    }

    #[test]
    fn own_addresses_and_configured_names_pass_and_rebound_names_do_not() {
        let a = loopback();
        for ok in [
            "127.0.0.1:5150",
            "localhost:5150",
            "LOCALHOST:5150",
            "hb.internal",
            "hb.internal:80",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:5150",
            "127.0.0.1:5151",
            "127.0.0.2:5150",
            "localhost",
            "[::1]:5150",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        let all = Access::new("0.0.0.0:5150".parse().unwrap(), Vec::new(), None);
        assert!(all.host_allowed("10.1.2.3:5150"));
        assert!(!all.host_allowed("localhost:5150"));
        assert!(!all.host_allowed("rebind.example:5150"));
    }

    #[test]
    fn state_changes_need_json_and_no_foreign_origin() {
        let a = loopback();
        let host = ("host", "127.0.0.1:5150");
        let post = Method::POST;
        assert!(a
            .refusal(
                &post,
                "/control",
                None,
                &headers(&[host, ("content-type", "application/json; charset=utf-8")])
            )
            .is_none());
        let text = not_json(&post, &headers(&[host, ("content-type", "text/plain")]));
        assert_eq!(
            text.map(|e| e.status()),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert!(not_json(&post, &headers(&[host])).is_some());
        assert!(not_json(&Method::DELETE, &headers(&[host])).is_some());
        assert!(not_json(&Method::GET, &headers(&[host])).is_none());
        assert!(not_json(
            &post,
            &headers(&[host, ("content-type", "application/json; charset=utf-8")])
        )
        .is_none());
        let foreign = headers(&[
            host,
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(
            a.refusal(&post, "/control", None, &foreign)
                .map(|e| e.status()),
            Some(StatusCode::FORBIDDEN)
        );
        let own = headers(&[
            host,
            ("content-type", "application/json"),
            ("origin", "http://127.0.0.1:5150"),
        ]);
        assert!(a.refusal(&post, "/control", None, &own).is_none());
        assert!(a
            .refusal(&Method::GET, "/status", None, &headers(&[host]))
            .is_none());
    }

    #[test]
    fn a_token_is_needed_everywhere_but_the_probe() {
        let a = Access::new(
            "127.0.0.1:5150".parse().unwrap(),
            Vec::new(),
            Some(Secret::new("s3cret")),
        );
        let host = ("host", "127.0.0.1:5150");
        let get = Method::GET;
        assert_eq!(
            a.refusal(&get, "/status", None, &headers(&[host]))
                .map(|e| e.status()),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert!(a
            .refusal(
                &get,
                "/status",
                None,
                &headers(&[host, ("authorization", "Bearer wrong")])
            )
            .is_some());
        assert!(a
            .refusal(
                &get,
                "/status",
                None,
                &headers(&[host, ("authorization", "Bearer s3cret")])
            )
            .is_none());
        assert!(a
            .refusal(&get, HEALTH_PATH, None, &headers(&[host]))
            .is_none());
        // The probe still checks the Host: a rebinding page learns nothing.
        assert!(a
            .refusal(
                &get,
                HEALTH_PATH,
                None,
                &headers(&[("host", "evil.example:5150")])
            )
            .is_some());
        // The page's files hold no data: no token for them, but the Host still counts.
        for page in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
            assert!(a.refusal(&get, page, None, &headers(&[host])).is_none());
            assert!(a
                .refusal(&get, page, None, &headers(&[("host", "evil.example:5150")]))
                .is_some());
        }
        // Only those paths as written, by any read method: nothing else gets through
        // by a path that resolves elsewhere or by a method that reads.
        for other in [
            "/ui/other",
            "/ui/../status",
            "/ui%2fapp.js",
            "/ui/app.js/",
            "/UI",
            "//ui",
        ] {
            assert!(
                a.refusal(&get, other, None, &headers(&[host])).is_some(),
                "{other}"
            );
        }
        for read in [Method::HEAD, Method::OPTIONS] {
            assert_eq!(
                a.refusal(&read, "/status", None, &headers(&[host]))
                    .map(|e| e.status()),
                Some(StatusCode::UNAUTHORIZED),
                "{read} /status"
            );
        }
        assert!(a
            .refusal(
                &Method::POST,
                "/ui",
                None,
                &headers(&[host, ("content-type", "application/json")])
            )
            .is_some());
    }

    #[test]
    fn hosts_split_with_ipv6() {
        assert_eq!(split_host("[::1]:5150"), ("[::1]", Some(5150)));
        assert_eq!(split_host("a.b:1"), ("a.b", Some(1)));
        assert_eq!(split_host("a.b"), ("a.b", None));
    }
}
