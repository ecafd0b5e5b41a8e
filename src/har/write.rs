//! A recording written as HAR: a piece at a time: [`head`], then each [`entry`] after a comma, then
//! [`TAIL`], so an export of any size holds one transaction at a time. What HAR has no
//! field for is kept in fields of our own, named with a leading underscore as the spec
//! allows: `_transactionId`, `_truncated` (a body recorded only up to `body_limit`; its
//! `size` is still the whole body's), `_encoding` (a request body in base64).

use std::borrow::Cow;

use base64::Engine as _;
use chrono::DateTime;
use serde::Serialize;

use crate::traffic::{
    BodyCapture, BodyEncoding, MultiMap, RequestInfo, ResponseInfo, TrafficDoc, WebSocketMessage,
    WsDirection,
};

/// What ends the document after the last entry.
pub const TAIL: &[u8] = b"]}}";

/// The document up to its first entry: `log.version`, `log.creator`, a comment naming
/// the recording, and the opening of `log.entries`.
pub fn head(creator_version: &str, comment: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Creator<'a> {
        name: &'a str,
        version: &'a str,
    }
    let creator = serde_json::to_string(&Creator {
        name: "heliosburn",
        version: creator_version,
    })
    .unwrap_or_default();
    let comment = serde_json::to_string(comment).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"log":{{"version":"1.2","creator":{creator},"comment":{comment},"pages":[],"entries":["#)
        .into_bytes()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry<'a> {
    started_date_time: &'a str,
    /// Milliseconds from the request to the response.
    time: f64,
    request: Request<'a>,
    response: Response<'a>,
    cache: Empty,
    timings: Timings,
    #[serde(rename = "_transactionId")]
    transaction_id: &'a str,
    /// A WebSocket upgrade's messages, in the shape Chrome and mitmproxy export.
    #[serde(rename = "_webSocketMessages", skip_serializing_if = "Vec::is_empty")]
    web_socket_messages: Vec<WsMessage<'a>>,
}

#[derive(Serialize)]
struct WsMessage<'a> {
    /// `send` or `receive`.
    #[serde(rename = "type")]
    direction: WsDirection,
    /// Seconds since the epoch.
    time: f64,
    opcode: u8,
    /// Text as it was; binary in base64.
    data: Cow<'a, str>,
    #[serde(rename = "_closeCode", skip_serializing_if = "Option::is_none")]
    close_code: Option<u16>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    method: &'a str,
    url: String,
    http_version: &'a str,
    cookies: Vec<NameValue<'a>>,
    headers: Vec<NameValue<'a>>,
    query_string: Vec<NameValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    post_data: Option<PostData<'a>>,
    headers_size: i64,
    body_size: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostData<'a> {
    mime_type: &'a str,
    text: Cow<'a, str>,
    #[serde(rename = "_encoding", skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(rename = "_truncated", skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(rename = "_size")]
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    status: u16,
    status_text: &'a str,
    http_version: &'a str,
    cookies: Vec<NameValue<'a>>,
    headers: Vec<NameValue<'a>>,
    content: Content<'a>,
    #[serde(rename = "redirectURL")]
    redirect_url: &'a str,
    headers_size: i64,
    body_size: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content<'a> {
    size: u64,
    mime_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(rename = "_truncated", skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

#[derive(Serialize)]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct Timings {
    blocked: f64,
    dns: f64,
    connect: f64,
    send: f64,
    wait: f64,
    receive: f64,
}

/// The HAR entry of one recorded transaction. One without a response (the client went
/// away, the upstream failed before answering) gets status 0, as browsers write it.
pub fn entry(doc: &TrafficDoc) -> Entry<'_> {
    let req = &doc.request;
    let time = doc
        .response
        .as_deref()
        .and_then(|r| millis_between(&req.created_at, &r.created_at))
        .unwrap_or(0.0);
    Entry {
        started_date_time: &req.created_at,
        time,
        request: request(req),
        response: match doc.response.as_deref() {
            Some(r) => response(r),
            None => no_response(),
        },
        cache: Empty {},
        timings: Timings {
            blocked: -1.0,
            dns: -1.0,
            connect: -1.0,
            send: 0.0,
            wait: time,
            receive: 0.0,
        },
        transaction_id: &doc.transaction_id,
        web_socket_messages: doc
            .response
            .as_deref()
            .and_then(|r| r.web_socket_messages.as_ref())
            .map(|ms| ms.iter().map(ws_message).collect())
            .unwrap_or_default(),
    }
}

fn ws_message(m: &WebSocketMessage) -> WsMessage<'_> {
    let time = DateTime::parse_from_rfc3339(&m.time)
        .map(|t| t.timestamp_micros() as f64 / 1e6)
        .unwrap_or(0.0);
    WsMessage {
        direction: m.direction,
        time,
        opcode: m.opcode,
        // Binary in base64 even when its bytes happen to be UTF-8, as Chrome writes it.
        data: match m.opcode {
            2 => base64::engine::general_purpose::STANDARD
                .encode(&m.data.bytes)
                .into(),
            _ => m.data.wire().1,
        },
        close_code: m.close_code,
    }
}

fn millis_between(from: &str, to: &str) -> Option<f64> {
    let from = DateTime::parse_from_rfc3339(from).ok()?;
    let to = DateTime::parse_from_rfc3339(to).ok()?;
    let us = (to - from).num_microseconds()?;
    Some((us.max(0) as f64) / 1000.0)
}

fn pairs(map: &MultiMap) -> Vec<NameValue<'_>> {
    map.pairs()
        .map(|(name, value)| NameValue { name, value })
        .collect()
}

fn first<'a>(map: &'a MultiMap, name: &str) -> Option<&'a str> {
    map.first(name)
}

/// `Cookie: a=1; b=2` as HAR's cookie list (none when the header was redacted).
fn request_cookies(headers: &MultiMap) -> Vec<NameValue<'_>> {
    headers
        .get("cookie")
        .filter(|line| !crate::redact::is_mark(line))
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some(NameValue {
                name: name.trim(),
                value: value.trim(),
            })
        })
        .collect()
}

/// Each `Set-Cookie` as HAR's cookie: its name and value (the attributes stay in the
/// header; none when it was redacted).
fn response_cookies(headers: &MultiMap) -> Vec<NameValue<'_>> {
    headers
        .get("set-cookie")
        .filter(|line| !crate::redact::is_mark(line))
        .filter_map(|line| {
            let pair = line.split(';').next()?;
            let (name, value) = pair.split_once('=')?;
            Some(NameValue {
                name: name.trim(),
                value: value.trim(),
            })
        })
        .collect()
}

fn request(req: &RequestInfo) -> Request<'_> {
    let host = first(&req.headers, "host").unwrap_or("localhost");
    let post_data = req.body.as_ref().filter(|b| b.size > 0).map(|b| {
        let (encoding, text) = b.wire();
        PostData {
            mime_type: first(&req.headers, "content-type").unwrap_or(""),
            text,
            encoding: (encoding == BodyEncoding::Base64).then_some("base64"),
            truncated: b.truncated,
            size: b.size,
        }
    });
    Request {
        method: &req.method,
        url: format!("http://{host}{}", req.uri),
        http_version: &req.client_protocol,
        cookies: request_cookies(&req.headers),
        headers: pairs(&req.headers),
        query_string: pairs(&req.args),
        post_data,
        headers_size: -1,
        body_size: body_size(req.body.as_ref()),
    }
}

/// The body's whole size; -1 (HAR's "unknown") when it was not captured, so that a
/// reader tells an empty body from one nobody saw.
fn body_size(body: Option<&BodyCapture>) -> i64 {
    body.map_or(-1, |b| i64::try_from(b.size).unwrap_or(i64::MAX))
}

fn response(resp: &ResponseInfo) -> Response<'_> {
    let body = resp.body.as_ref();
    let (encoding, text) = body.map(BodyCapture::wire).unzip();
    Response {
        status: resp.status_code,
        status_text: &resp.status_description,
        http_version: &resp.client_protocol,
        cookies: response_cookies(&resp.headers),
        headers: pairs(&resp.headers),
        content: Content {
            size: body.map_or(0, |b| b.size),
            mime_type: first(&resp.headers, "content-type").unwrap_or(""),
            text,
            encoding: encoding
                .filter(|e| *e == BodyEncoding::Base64)
                .map(|_| "base64"),
            truncated: body.is_some_and(|b| b.truncated),
        },
        redirect_url: first(&resp.headers, "location").unwrap_or(""),
        headers_size: -1,
        body_size: body_size(body),
    }
}

fn no_response() -> Response<'static> {
    Response {
        status: 0,
        status_text: "",
        http_version: "",
        cookies: Vec::new(),
        headers: Vec::new(),
        content: Content {
            size: 0,
            mime_type: "",
            text: None,
            encoding: None,
            truncated: false,
        },
        redirect_url: "",
        headers_size: -1,
        body_size: -1,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn doc() -> TrafficDoc {
        let mut headers = MultiMap::new();
        headers.insert("host", ["api.test:8080"]);
        headers.insert("cookie", ["a=1; b=2"]);
        headers.insert("content-type", ["application/json"]);
        let mut args = MultiMap::new();
        args.insert("q", ["x", "y"]);
        let mut rheaders = MultiMap::new();
        rheaders.insert("content-type", ["application/octet-stream"]);
        rheaders.insert("set-cookie", ["sid=s1; HttpOnly"]);
        TrafficDoc {
            recording_id: "r".into(),
            transaction_id: "t1".into(),
            created_at: chrono::Utc::now(),
            request: Arc::new(RequestInfo {
                created_at: "2026-12-01T10:00:00.000000Z".into(),
                client_protocol: "HTTP/1.1".into(),
                method: "POST".into(),
                uri: "/login?q=x&q=y".into(),
                path: "/login".into(),
                args,
                headers,
                body: Some(BodyCapture::from_bytes(br#"{"u":1}"#, 7)),
            }),
            response: Some(Arc::new(ResponseInfo {
                created_at: "2026-12-01T10:00:00.012500Z".into(),
                client_protocol: "HTTP/1.1".into(),
                status_code: 201,
                status_description: "Created".into(),
                headers: rheaders,
                body: Some(BodyCapture::from_bytes(&[0xff, 0, 1], 10)),
                trailers: None,
                web_socket_messages: None,
            })),
        }
    }

    #[test]
    fn an_entry_has_what_har_asks_and_says_what_was_cut() {
        let d = doc();
        let v = serde_json::to_value(entry(&d)).unwrap();
        assert_eq!(v["time"], 12.5);
        assert_eq!(v["request"]["url"], "http://api.test:8080/login?q=x&q=y");
        assert_eq!(v["request"]["queryString"].as_array().unwrap().len(), 2);
        assert_eq!(v["request"]["cookies"][1]["name"], "b");
        assert_eq!(v["request"]["postData"]["text"], r#"{"u":1}"#);
        assert_eq!(v["request"]["postData"]["mimeType"], "application/json");
        assert_eq!(v["response"]["status"], 201);
        assert_eq!(v["response"]["cookies"][0]["value"], "s1");
        let content = &v["response"]["content"];
        assert_eq!(
            (
                content["size"].as_u64(),
                content["encoding"].as_str(),
                content["text"].as_str()
            ),
            (Some(10), Some("base64"), Some("/wAB"))
        );
        assert_eq!(content["_truncated"], true);
        assert_eq!(v["_transactionId"], "t1");
    }

    #[test]
    fn a_transaction_without_response_is_status_0() {
        let mut d = doc();
        d.response = None;
        let v = serde_json::to_value(entry(&d)).unwrap();
        assert_eq!(
            (v["response"]["status"].as_u64(), v["time"].as_f64()),
            (Some(0), Some(0.0))
        );
    }

    #[test]
    fn the_pieces_make_one_json_document() {
        let d = doc();
        let mut out = head("0.1.0", "a \"quoted\" name");
        out.extend(serde_json::to_vec(&entry(&d)).unwrap());
        out.push(b',');
        out.extend(serde_json::to_vec(&entry(&d)).unwrap());
        out.extend_from_slice(TAIL);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["log"]["entries"].as_array().unwrap().len(), 2);
        assert_eq!(v["log"]["creator"]["name"], "heliosburn");
        assert_eq!(v["log"]["comment"], "a \"quoted\" name");
    }
}
