//! `GET /ui`: the management page's files, built into the binary.
//!
//! Plain HTML, CSS and JavaScript with no build step and nothing from elsewhere (no
//! CDN): the page is served by the management listener it talks to. The files hold no
//! data, so they answer without the token (the guard still checks `Host`); everything
//! the page shows it then fetches from the API like any client, with the token the user
//! gives it. A strict Content-Security-Policy allows only these files' own scripts and
//! styles and requests to this origin: traffic shown on the page is attacker-controlled
//! text, and the policy is the second wall behind the page writing it as text only.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's paths, the only ones besides the probe that answer without a token.
pub const PAGE: &str = "/ui";
const PAGE_SLASH: &str = "/ui/";
const SCRIPT: &str = "/ui/app.js";
const STYLE: &str = "/ui/app.css";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// What the page may load and reach: its own script and style, requests to this origin,
/// images as data URLs; no inline script or style, no frames, no forms sent anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Whether a path is one of the page's files (served without the token).
pub fn is_page_file(path: &str) -> bool {
    matches!(path, PAGE | PAGE_SLASH | SCRIPT | STYLE)
}

/// The page's routes, to merge into the API's router (behind the same guard).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PAGE, get(index))
        .route(PAGE_SLASH, get(index))
        .route(SCRIPT, get(script))
        .route(STYLE, get(style))
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    file("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    file("text/css; charset=utf-8", APP_CSS)
}

/// A file with its type, revalidated on every load (a new binary serves a new page),
/// under the policy.
fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_its_own_files_and_no_inline_code() {
        for path in [SCRIPT, STYLE] {
            assert!(INDEX_HTML.contains(&format!("\"{path}\"")), "{path}");
        }
        // The policy forbids inline script and style: none may be written.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains(" style="));
        assert!(!has_event_handler(INDEX_HTML), "an inline event handler");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        // Traffic reaches the page as text only.
        assert!(!APP_JS.contains("innerHTML"));
        assert!(!APP_JS.contains("insertAdjacentHTML"));
        assert!(!APP_JS.contains("eval("));
        assert!(is_page_file("/ui") && is_page_file("/ui/app.js"));
        assert!(!is_page_file("/ui/other") && !is_page_file("/status"));
    }

    /// ` onclick=`, ` onload =`, …: an attribute that is inline script.
    fn has_event_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name > 0 && rest[name..].trim_start().starts_with('=')
        })
    }
}
