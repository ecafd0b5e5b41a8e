//! A HAR document read back into recorded transactions, one entry at a time: ours, and
//! those browsers (Chrome, Firefox) and mitmproxy write.
//!
//! The document is parsed as it is read ([`read`] takes any `std::io::Read`): the
//! `log.entries` array is visited element by element and each entry is handed on before
//! the next is parsed, so a HAR of any size costs one entry's memory. An entry that is
//! not what HAR says it must be is an error naming the entry and the field.
//!
//! What differs between writers, and what is made of it:
//! - HTTP/2 exports (Chrome) carry pseudo-headers (`:authority`, `:path`, …): they are
//!   dropped, and `Host` is taken from the URL when no header gives it.
//! - Header names are recorded in lower case, as the proxy records them.
//! - `httpVersion` is `HTTP/1.1`, `h2`, `http/2.0`, `HTTP/2`…: all become the seed's
//!   `HTTP/1.1` / `HTTP/2.0` / `HTTP/3.0`.
//! - A response of status 0 (a request that got none) is a transaction without response.
//! - A body the writer left out (Firefox's large ones) is recorded as truncated at 0
//!   bytes of its size, never as an empty body.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::traffic::{
    query_multimap, timestamp, BodyCapture, MultiMap, RequestInfo, ResponseInfo, TrafficDoc,
    WebSocketMessage, WsDirection,
};

#[derive(Debug, thiserror::Error)]
pub enum HarError {
    /// Not JSON, or JSON of another shape than HAR's (no `log.entries`).
    #[error("not a HAR document: {0}")]
    NotHar(String),
    /// One entry is not what HAR says it must be.
    #[error("entry {index}: {field}: {message}")]
    Entry {
        /// 0-based, as in `log.entries[index]`.
        index: usize,
        /// The field's path in the entry (`request.url`).
        field: String,
        message: String,
    },
    /// What the entries were handed to refused one (the store failed, the client went
    /// away); the reading stops there.
    #[error("{0}")]
    Stopped(String),
}

/// What the document said of itself, besides its entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HarInfo {
    /// `log.creator`: `name version`.
    pub creator: String,
    /// `log.comment`, if any.
    pub comment: Option<String>,
    /// Entries read.
    pub entries: usize,
}

/// Reads a HAR document, handing each entry on as the transaction it records (for the
/// recording `recording_id`) as soon as it is parsed. `each` may refuse an entry with a
/// reason, which ends the reading with [`HarError::Stopped`].
pub fn read<R: Read>(
    input: R,
    recording_id: &str,
    mut each: impl FnMut(TrafficDoc) -> Result<(), String>,
) -> Result<HarInfo, HarError> {
    let mut state = State {
        recording_id,
        each: &mut each,
        info: HarInfo::default(),
        failed: None,
        saw_entries: false,
        raw_bodies: false,
    };
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(input));
    let parsed = Document(&mut state)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(e) = state.failed {
        return Err(e);
    }
    parsed.map_err(|e| HarError::NotHar(e.to_string()))?;
    if !state.saw_entries {
        return Err(HarError::NotHar("it has no `log.entries` array".into()));
    }
    Ok(state.info)
}

struct State<'a> {
    recording_id: &'a str,
    each: &'a mut dyn FnMut(TrafficDoc) -> Result<(), String>,
    info: HarInfo,
    /// Why the reading stopped, when it was not the JSON's fault.
    failed: Option<HarError>,
    saw_entries: bool,
    /// The document is heliosburn's: its bodies are the bytes that passed, encoded as
    /// their `Content-Encoding` says. Other writers decode bodies into `text` (as HAR
    /// asks) and keep the header, which then no longer describes the text.
    raw_bodies: bool,
}

/// The top level: `{"log": {...}}`.
struct Document<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Document<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with `log`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut saw_log = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "log" {
                map.next_value_seed(Log(self.0))?;
                saw_log = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !saw_log {
            return Err(de::Error::custom("it has no `log` object"));
        }
        Ok(())
    }
}

/// `log`: `creator`, `comment` and `entries` are read; the rest (`pages`…) skipped.
struct Log<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Log<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

#[derive(Deserialize)]
struct Creator {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

impl<'de> Visitor<'de> for Log<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `log` object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "entries" => {
                    map.next_value_seed(Entries(&mut *self.0))?;
                    self.0.saw_entries = true;
                }
                "creator" => {
                    let c: Creator = map.next_value()?;
                    self.0.raw_bodies = c.name == "heliosburn";
                    self.0.info.creator = format!("{} {}", c.name, c.version).trim().to_owned();
                }
                "comment" => self.0.info.comment = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `log.entries`, element by element.
struct Entries<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Entries<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `log.entries` array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        // Each entry is parsed whole first (one entry's memory), then into its typed
        // shape with the path of the field that does not fit.
        while let Some(value) = seq.next_element::<serde_json::Value>()? {
            let index = state.info.entries;
            let doc = serde_path_to_error::deserialize::<_, RawEntry>(value)
                .map_err(|e| HarError::Entry {
                    index,
                    field: e.path().to_string(),
                    message: e.inner().to_string(),
                })
                .and_then(|raw| raw.into_doc(state.recording_id, index, state.raw_bodies));
            let handed = doc.and_then(|doc| (state.each)(doc).map_err(HarError::Stopped));
            if let Err(e) = handed {
                let text = e.to_string();
                state.failed = Some(e);
                return Err(de::Error::custom(text));
            }
            state.info.entries += 1;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    started_date_time: String,
    /// Milliseconds from the request to the end of the response.
    #[serde(default)]
    time: Option<f64>,
    request: RawRequest,
    response: RawResponse,
    #[serde(rename = "_transactionId", default)]
    transaction_id: Option<String>,
    /// A WebSocket upgrade's messages, as Chrome, mitmproxy and our export write them.
    #[serde(rename = "_webSocketMessages", default)]
    web_socket_messages: Option<Vec<RawWsMessage>>,
}

#[derive(Deserialize)]
struct RawWsMessage {
    /// `send` or `receive`.
    #[serde(rename = "type")]
    direction: WsDirection,
    /// Seconds since the epoch.
    time: f64,
    opcode: u8,
    /// Text as it was; binary (opcode 2) in base64.
    #[serde(default)]
    data: String,
    #[serde(rename = "_closeCode", default)]
    close_code: Option<u16>,
}

impl RawWsMessage {
    fn into_message(self, index: usize) -> Result<WebSocketMessage, HarError> {
        let field = "_webSocketMessages";
        let at = DateTime::from_timestamp_micros((self.time * 1e6).round() as i64)
            .filter(|_| self.time.is_finite())
            .ok_or_else(|| entry_error(index, field, format!("{} is no time", self.time)))?;
        let bytes = match self.opcode {
            2 => base64::engine::general_purpose::STANDARD
                .decode(&self.data)
                .map_err(|e| {
                    entry_error(index, field, format!("binary data is not base64: {e}"))
                })?,
            _ => self.data.into_bytes(),
        };
        Ok(WebSocketMessage {
            direction: self.direction,
            time: timestamp(at),
            opcode: self.opcode,
            data: BodyCapture::from_bytes(&bytes, bytes.len() as u64),
            close_code: self.close_code,
            compressed: false,
        })
    }
}

#[derive(Deserialize)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    method: String,
    url: String,
    #[serde(default)]
    http_version: String,
    headers: Vec<NameValue>,
    #[serde(default)]
    post_data: Option<RawPostData>,
    #[serde(default)]
    body_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPostData {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    params: Option<Vec<RawParam>>,
    /// Ours (`_encoding`) or other tools' (`encoding`): `base64` or absent.
    #[serde(rename = "_encoding", default)]
    our_encoding: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(rename = "_truncated", default)]
    truncated: Option<bool>,
    #[serde(rename = "_size", default)]
    size: Option<u64>,
}

#[derive(Deserialize)]
struct RawParam {
    name: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResponse {
    status: i64,
    #[serde(default)]
    status_text: String,
    #[serde(default)]
    http_version: String,
    #[serde(default)]
    headers: Vec<NameValue>,
    content: RawContent,
    #[serde(default)]
    body_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContent {
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(rename = "_truncated", default)]
    truncated: Option<bool>,
}

fn entry_error(index: usize, field: &str, message: impl Into<String>) -> HarError {
    HarError::Entry {
        index,
        field: field.into(),
        message: message.into(),
    }
}

impl RawEntry {
    fn into_doc(
        self,
        recording_id: &str,
        index: usize,
        raw_bodies: bool,
    ) -> Result<TrafficDoc, HarError> {
        let started = DateTime::parse_from_rfc3339(&self.started_date_time)
            .map_err(|e| {
                entry_error(
                    index,
                    "startedDateTime",
                    format!("`{}` is not an ISO 8601 time: {e}", self.started_date_time),
                )
            })?
            .with_timezone(&Utc);
        let elapsed = match self.time {
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                chrono::Duration::microseconds((ms * 1000.0).round() as i64)
            }
            Some(-1.0) => chrono::Duration::zero(),
            Some(ms) => {
                return Err(entry_error(
                    index,
                    "time",
                    format!("{ms} is not a duration in milliseconds"),
                ))
            }
            None => chrono::Duration::zero(),
        };
        let answered = started.checked_add_signed(elapsed).ok_or_else(|| {
            entry_error(
                index,
                "time",
                "the response would come after the year 262143",
            )
        })?;
        let mut request = self.request.into_info(started, index)?;
        let mut response = self.response.into_info(answered, index)?;
        if !raw_bodies {
            decoded(&mut request.headers, request.body.as_ref());
            if let Some(r) = response.as_mut() {
                decoded(&mut r.headers, r.body.as_ref());
            }
        }
        if let (Some(list), Some(r)) = (self.web_socket_messages, response.as_mut()) {
            r.web_socket_messages = Some(
                list.into_iter()
                    .map(|m| m.into_message(index))
                    .collect::<Result<_, _>>()?,
            );
        }
        let response = response.map(Arc::new);
        Ok(TrafficDoc {
            recording_id: recording_id.to_owned(),
            transaction_id: self
                .transaction_id
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            created_at: started,
            request: Arc::new(request),
            response,
        })
    }
}

/// A body other writers give decoded (gzip, br… undone, as HAR asks): the headers that
/// described it on the wire, `Content-Encoding` and the length that went with it, no
/// longer do, so they go (a replay or playback of it would say the text is compressed).
fn decoded(headers: &mut MultiMap, body: Option<&BodyCapture>) {
    if body.is_some_and(|b| !b.bytes.is_empty()) && headers.remove("content-encoding") {
        headers.remove("content-length");
    }
}

/// `{name: [values]}` with names in lower case and HTTP/2 pseudo-headers left out.
fn headers(list: Vec<NameValue>) -> MultiMap {
    list.into_iter()
        .filter(|h| !h.name.starts_with(':'))
        .map(|h| (h.name.to_ascii_lowercase(), h.value))
        .collect()
}

/// The seed's protocol names (`HTTP/1.1`, `HTTP/2.0`) from what HAR writers put.
fn protocol(version: &str) -> String {
    let v = version.to_ascii_lowercase();
    let v = v.trim_start_matches("http/");
    match v {
        "h2" | "2" | "2.0" => "HTTP/2.0".into(),
        "h3" | "3" | "3.0" => "HTTP/3.0".into(),
        "1.0" => "HTTP/1.0".into(),
        "0.9" => "HTTP/0.9".into(),
        _ => "HTTP/1.1".into(),
    }
}

/// A body as HAR gives it: text, maybe base64, maybe cut (`_truncated`, or a size larger
/// than the text), maybe left out (a size but no text).
fn capture(
    text: Option<&str>,
    base64: bool,
    size: Option<u64>,
    truncated: bool,
    index: usize,
    field: &str,
) -> Result<BodyCapture, HarError> {
    let bytes = match (text, base64) {
        (Some(t), true) => base64::engine::general_purpose::STANDARD
            .decode(t.trim())
            .map_err(|e| entry_error(index, field, format!("not valid base64: {e}")))?,
        (Some(t), false) => t.as_bytes().to_vec(),
        (None, _) => Vec::new(),
    };
    let kept = bytes.len() as u64;
    let size = size.unwrap_or(kept).max(kept);
    let mut body = BodyCapture::from_bytes(&bytes, size);
    body.truncated |= truncated;
    Ok(body)
}

fn is_base64(encoding: Option<&str>) -> bool {
    encoding.is_some_and(|e| e.eq_ignore_ascii_case("base64"))
}

impl RawRequest {
    fn into_info(self, started: DateTime<Utc>, index: usize) -> Result<RequestInfo, HarError> {
        let url = url::Url::parse(&self.url).map_err(|e| {
            entry_error(
                index,
                "request.url",
                format!("`{}` is not an absolute URL: {e}", self.url),
            )
        })?;
        if self.method.is_empty() || http::Method::from_bytes(self.method.as_bytes()).is_err() {
            return Err(entry_error(
                index,
                "request.method",
                format!("`{}` is not an HTTP method", self.method),
            ));
        }
        let mut headers = headers(self.headers);
        if !headers.contains_key("host") {
            if let Some(host) = url.host_str() {
                let host = match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                };
                headers.insert("host", [host]);
            }
        }
        // The target as the writer wrote it (a URL parser would normalise `/a/../b`).
        let uri = origin_form(&self.url);
        let path = uri
            .split_once('?')
            .map_or(uri.as_str(), |(p, _)| p)
            .to_owned();
        let query = uri.split_once('?').map(|(_, q)| q);
        let args = query_multimap(query);
        let body = match self.post_data {
            Some(p) => {
                let text = match (p.text, p.params) {
                    (Some(text), _) => Some(text),
                    // A form given only as its fields: sent as the form it was.
                    (None, Some(params)) => Some(
                        url::form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(
                                params
                                    .iter()
                                    .map(|p| (p.name.as_str(), p.value.as_deref().unwrap_or(""))),
                            )
                            .finish(),
                    ),
                    (None, None) => None,
                };
                let base64 =
                    is_base64(p.our_encoding.as_deref()) || is_base64(p.encoding.as_deref());
                let size = p
                    .size
                    .or_else(|| self.body_size.and_then(|s| u64::try_from(s).ok()));
                Some(capture(
                    text.as_deref(),
                    base64,
                    size,
                    p.truncated.unwrap_or(false),
                    index,
                    "request.postData.text",
                )?)
            }
            // No postData: an empty body when the size says 0, unknown otherwise.
            None => match self.body_size {
                Some(0) => Some(BodyCapture::from_bytes(&[], 0)),
                Some(n) if n > 0 => Some(capture(None, false, Some(n as u64), true, index, "")?),
                _ => None,
            },
        };
        Ok(RequestInfo {
            created_at: timestamp(started),
            client_protocol: protocol(&self.http_version),
            method: self.method,
            uri,
            args,
            path,
            headers,
            body,
        })
    }
}

/// `/path?query` of an absolute URL, as written (no fragment); `/` when it has no path.
fn origin_form(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].to_owned(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_owned(),
    }
}

impl RawResponse {
    /// The response, or `None` for status 0 (the request got no response).
    fn into_info(self, at: DateTime<Utc>, index: usize) -> Result<Option<ResponseInfo>, HarError> {
        if self.status == 0 {
            return Ok(None);
        }
        let status = u16::try_from(self.status)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| {
                entry_error(
                    index,
                    "response.status",
                    format!("{} is not an HTTP status", self.status),
                )
            })?;
        let c = self.content;
        let size = c
            .size
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0 || c.text.is_some());
        let body = match (&c.text, size, self.body_size) {
            (Some(_), _, _) | (None, Some(_), _) => Some(capture(
                c.text.as_deref(),
                is_base64(c.encoding.as_deref()),
                size,
                c.truncated.unwrap_or(false),
                index,
                "response.content.text",
            )?),
            // No text and no size: an empty body when the size says 0, unknown otherwise.
            (None, None, Some(0)) | (None, None, None) if c.size == Some(0) => {
                Some(BodyCapture::from_bytes(&[], 0))
            }
            (None, None, _) => None,
        };
        Ok(Some(ResponseInfo {
            created_at: timestamp(at),
            client_protocol: protocol(&self.http_version),
            status_code: status,
            status_description: self.status_text,
            headers: headers(self.headers),
            body,
            trailers: None,
            web_socket_messages: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Result<(HarInfo, Vec<TrafficDoc>), HarError> {
        let mut docs = Vec::new();
        let info = read(text.as_bytes(), "rec", |d| {
            docs.push(d);
            Ok(())
        })?;
        Ok((info, docs))
    }

    #[test]
    fn an_export_reads_back_as_the_transactions_it_was_made_of() {
        let mut headers = MultiMap::new();
        headers.insert("host", ["api.test:8080"]);
        headers.insert("content-type", ["application/json"]);
        let doc = TrafficDoc {
            recording_id: "rec".into(),
            transaction_id: "t1".into(),
            created_at: DateTime::parse_from_rfc3339("2026-12-01T10:00:00.000001Z")
                .unwrap()
                .with_timezone(&Utc),
            request: Arc::new(RequestInfo {
                created_at: "2026-12-01T10:00:00.000001Z".into(),
                client_protocol: "HTTP/1.1".into(),
                method: "POST".into(),
                uri: "/login?q=x%20y&q=2".into(),
                path: "/login".into(),
                args: query_multimap(Some("q=x%20y&q=2")),
                headers: headers.clone(),
                body: Some(BodyCapture::from_bytes(br#"{"u":1}"#, 7)),
            }),
            response: Some(Arc::new(ResponseInfo {
                created_at: "2026-12-01T10:00:00.012501Z".into(),
                client_protocol: "HTTP/1.1".into(),
                status_code: 201,
                status_description: "Created".into(),
                headers,
                body: Some(BodyCapture::from_bytes(&[0xff, 0, 1], 10)),
                trailers: None,
                web_socket_messages: None,
            })),
        };
        let mut no_body = doc.clone();
        no_body.transaction_id = "t2".into();
        Arc::make_mut(&mut no_body.request).body = None;
        Arc::make_mut(no_body.response.as_mut().unwrap()).body = None;
        let mut unanswered = doc.clone();
        unanswered.transaction_id = "t3".into();
        unanswered.response = None;
        let mut socket = no_body.clone();
        socket.transaction_id = "t4".into();
        let message = |direction, time: &str, opcode, data: &[u8], close_code| WebSocketMessage {
            direction,
            time: time.into(),
            opcode,
            data: BodyCapture::from_bytes(data, data.len() as u64),
            close_code,
            compressed: false,
        };
        Arc::make_mut(socket.response.as_mut().unwrap()).web_socket_messages = Some(vec![
            message(
                WsDirection::Receive,
                "2026-12-01T10:00:00.020001Z",
                1,
                b"hi",
                None,
            ),
            message(
                WsDirection::Send,
                "2026-12-01T10:00:00.030002Z",
                2,
                &[0, 0xff],
                None,
            ),
            message(
                WsDirection::Send,
                "2026-12-01T10:00:01.000000Z",
                8,
                b"bye",
                Some(1000),
            ),
        ]);
        let mut har = crate::har::head("0", "c");
        for (i, d) in [&doc, &no_body, &unanswered, &socket]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                har.push(b',');
            }
            har.extend(serde_json::to_vec(&crate::har::entry(d)).unwrap());
        }
        har.extend_from_slice(crate::har::TAIL);
        let (info, docs) = read_all(std::str::from_utf8(&har).unwrap()).unwrap();
        assert_eq!((info.entries, info.creator.as_str()), (4, "heliosburn 0"));
        assert_eq!(docs, [doc, no_body, unanswered, socket]);
    }

    #[test]
    fn a_bad_entry_is_named_with_its_field() {
        let text = r#"{"log": {"version": "1.2", "entries": [
            {"startedDateTime": "2026-12-01T10:00:00Z", "request": {"method": "GET", "url": "http://a/", "headers": []}, "response": {"status": 200, "content": {}}},
            {"startedDateTime": "2026-12-01T10:00:00Z", "request": {"method": "GET", "url": "http://a/", "headers": []}, "response": {"status": "OK", "content": {}}}
        ]}}"#;
        let err = read_all(text).unwrap_err().to_string();
        assert!(
            err.starts_with("entry 1: response.status: invalid type: string \"OK\""),
            "{err}"
        );
        let text = r#"{"log": {"entries": [{"startedDateTime": "yesterday", "request": {"method": "GET", "url": "http://a/", "headers": []}, "response": {"status": 200, "content": {}}}]}}"#;
        let err = read_all(text).unwrap_err().to_string();
        assert!(
            err.starts_with("entry 0: startedDateTime: `yesterday`"),
            "{err}"
        );
        let text = r#"{"log": {"entries": [{"startedDateTime": "2026-12-01T10:00:00Z", "request": {"method": "GET", "url": "/relative", "headers": []}, "response": {"status": 200, "content": {}}}]}}"#;
        let err = read_all(text).unwrap_err().to_string();
        assert!(
            err.starts_with("entry 0: request.url: `/relative` is not an absolute URL"),
            "{err}"
        );
        let text = r#"{"log": {"entries": [{"startedDateTime": "2026-12-01T10:00:00Z", "request": {"url": "http://a/", "headers": []}, "response": {"status": 200, "content": {}}}]}}"#;
        let err = read_all(text).unwrap_err().to_string();
        assert!(
            err.starts_with("entry 0: request: missing field `method`"),
            "{err}"
        );
    }

    #[test]
    fn the_target_is_kept_as_written() {
        assert_eq!(origin_form("http://a:1/x/../y?q=%20#frag"), "/x/../y?q=%20");
        assert_eq!(origin_form("https://a"), "/");
        assert_eq!(origin_form("https://a?x=1"), "/?x=1");
    }

    #[test]
    fn what_is_not_har_says_so() {
        for (text, want) in [
            ("[1, 2]", "not a HAR document: invalid type: sequence"),
            (
                "{\"log\": {}}",
                "not a HAR document: it has no `log.entries` array",
            ),
            ("{}", "not a HAR document: it has no `log` object"),
            ("{\"log\": {\"entries\": [", "not a HAR document: EOF"),
            ("not json", "not a HAR document: expected ident"),
        ] {
            let err = read_all(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_time_past_any_calendar_is_an_error_not_a_panic() {
        let text = r#"{"log": {"entries": [{"startedDateTime": "2026-12-01T10:00:00Z", "time": 1e16, "request": {"method": "GET", "url": "http://a/", "headers": []}, "response": {"status": 200, "content": {}}}]}}"#;
        let err = read_all(text).unwrap_err().to_string();
        assert!(
            err.starts_with("entry 0: time: the response would come after"),
            "{err}"
        );
    }

    #[test]
    fn decoded_bodies_lose_the_encoding_they_no_longer_have_unless_they_are_ours() {
        let doc = |creator: &str| {
            format!(
                r#"{{"log": {{"creator": {{"name": "{creator}", "version": "1"}}, "entries": [{{"startedDateTime": "2026-12-01T10:00:00Z", "request": {{"method": "GET", "url": "http://a/", "headers": []}},
                "response": {{"status": 200, "headers": [{{"name": "Content-Encoding", "value": "br"}}, {{"name": "Content-Length", "value": "9"}}, {{"name": "Vary", "value": "Accept-Encoding"}}], "content": {{"size": 12, "text": "decoded text"}}}}}}]}}}}"#
            )
        };
        let (_, docs) = read_all(&doc("WebInspector")).unwrap();
        let headers = &docs[0].response.as_ref().unwrap().headers;
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["vary"]);
        let (_, docs) = read_all(&doc("heliosburn")).unwrap();
        assert_eq!(docs[0].response.as_ref().unwrap().headers.len(), 3);
    }

    #[test]
    fn the_receiver_may_stop_the_reading() {
        let text = r#"{"log": {"entries": [{"startedDateTime": "2026-12-01T10:00:00Z", "request": {"method": "GET", "url": "http://a/", "headers": []}, "response": {"status": 200, "content": {}}}]}}"#;
        let err = read(text.as_bytes(), "r", |_| Err("disk full".into())).unwrap_err();
        assert!(
            matches!(err, HarError::Stopped(ref m) if m == "disk full"),
            "{err}"
        );
    }
}
