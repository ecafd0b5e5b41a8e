//! The traffic message (the feed's wire format) and the documents the store keeps.
//!
//! The message shape is a compatibility contract (the seed's recording design): field
//! names, nesting and the `{name: [values]}` maps must not change.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Bytes of the bodies of a request and its response.
fn body_bytes(request: &RequestInfo, response: Option<&ResponseInfo>) -> usize {
    let len = |b: &Option<BodyCapture>| b.as_ref().map_or(0, |b| b.bytes.len());
    len(&request.body) + response.map_or(0, |r| len(&r.body))
}

/// Bytes a response's WebSocket messages hold: their data, and a rough cost per message.
fn web_socket_bytes(response: Option<&ResponseInfo>) -> usize {
    response
        .and_then(|r| r.web_socket_messages.as_ref())
        .map_or(0, |ms| ms.iter().map(|m| 64 + m.data.bytes.len()).sum())
}

mod multimap;

pub use multimap::{MultiMap, Values};

/// One event on the feed: a request, or a response together with its request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrafficMessage {
    pub transaction_id: String,
    pub request_id: String,
    pub response_id: String,
    /// Shared, not copied, between the request and response messages and the recorder's
    /// document (serde's `rc`: the JSON is the same as for the plain struct).
    pub request: Arc<RequestInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Arc<ResponseInfo>>,
}

impl TrafficMessage {
    /// A copy whose captured bodies keep at most `limit` bytes of data (a WebSocket's
    /// messages as many together), or `None` when none is longer (nothing to copy).
    pub fn with_bodies_cut(&self, limit: usize) -> Option<TrafficMessage> {
        let long = |b: &Option<BodyCapture>| b.as_ref().is_some_and(|b| b.bytes.len() > limit);
        let messages_long = web_socket_bytes(self.response.as_deref()) > limit;
        let response_long = self.response.as_ref().is_some_and(|r| long(&r.body));
        if !long(&self.request.body) && !response_long && !messages_long {
            return None;
        }
        let mut out = self.clone();
        if let Some(b) = Arc::make_mut(&mut out.request).body.as_mut() {
            b.cut(limit);
        }
        if let (true, Some(r)) = (response_long, out.response.as_mut()) {
            if let Some(b) = Arc::make_mut(r).body.as_mut() {
                b.cut(limit);
            }
        }
        if let (true, Some(r)) = (messages_long, out.response.as_mut()) {
            let mut left = limit;
            for m in Arc::make_mut(r).web_socket_messages.iter_mut().flatten() {
                m.data.cut(left);
                left -= m.data.bytes.len();
            }
        }
        Some(out)
    }

    /// About how many bytes the message holds in memory: its strings, its header and
    /// argument maps (with a rough cost per entry for the map's own allocations) and
    /// its bodies. For bounds, not accounting to the byte.
    pub fn footprint(&self) -> usize {
        let map = MultiMap::footprint;
        let q = &self.request;
        let request =
            q.created_at.len() + q.uri.len() + q.path.len() + map(&q.args) + map(&q.headers);
        let response = self
            .response
            .as_ref()
            .map_or(0, |r| r.created_at.len() + map(&r.headers));
        256 + self.transaction_id.len() * 3 + request + response + self.body_bytes()
    }

    /// Bytes of the bodies it carries, a WebSocket's messages with them: what the
    /// queues' and batches' byte bounds weigh.
    pub fn body_bytes(&self) -> usize {
        body_bytes(&self.request, self.response.as_deref())
            + web_socket_bytes(self.response.as_deref())
    }

    /// When the exchange began: the request's `createdAt`, parsed. Used to decide which
    /// recording a transaction belongs to.
    /// The message without its captured bodies (the rest copied): what a binary frame
    /// writes as JSON before the bodies' raw bytes.
    pub fn without_bodies(&self) -> TrafficMessage {
        TrafficMessage {
            transaction_id: self.transaction_id.clone(),
            request_id: self.request_id.clone(),
            response_id: self.response_id.clone(),
            request: Arc::new(RequestInfo {
                body: None,
                ..RequestInfo::clone(&self.request)
            }),
            response: self.response.as_ref().map(|r| {
                Arc::new(ResponseInfo {
                    body: None,
                    ..ResponseInfo::clone(r)
                })
            }),
        }
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.request.created_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    pub created_at: String,
    pub client_protocol: String,
    pub method: String,
    pub uri: String,
    pub path: String,
    pub args: MultiMap,
    pub headers: MultiMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyCapture>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResponseInfo {
    pub created_at: String,
    pub client_protocol: String,
    pub status_code: u16,
    pub status_description: String,
    pub headers: MultiMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyCapture>,
    /// The trailer fields that followed the body (gRPC's `grpc-status` and
    /// `grpc-message`); absent when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailers: Option<MultiMap>,
    /// For an upgrade to WebSocket (101): the messages the connection carried so far,
    /// in the order they passed (HAR exporters' `_webSocketMessages`, in our shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_socket_messages: Option<Vec<WebSocketMessage>>,
}

/// Which way a WebSocket message went, as HAR's `_webSocketMessages` names it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WsDirection {
    /// From the client to the upstream.
    Send,
    /// From the upstream to the client.
    Receive,
}

/// One WebSocket message, captured beside the tunnel: text (opcode 1), binary (2) or a
/// close (8, with its code; its reason is the data).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketMessage {
    #[serde(rename = "type")]
    pub direction: WsDirection,
    /// When its last frame passed (the seed's timestamp form).
    pub time: String,
    pub opcode: u8,
    /// Its payload as a body is kept: size, truncation, and the bytes kept.
    pub data: BodyCapture,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    /// Sent compressed (permessage-deflate): `data` is what it inflated to, or, when it
    /// could not be inflated, empty with the size it had on the wire.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compressed: bool,
}

/// A body as captured beside the stream: its full size, whether the capture stopped at
/// the limit, and the bytes kept, as they passed.
///
/// Held as raw bytes (shared, never copied to be passed on); the seed's wire shape, UTF-8
/// text as is or anything else in base64 (`{size, truncated, encoding, data}`), is made
/// when it is serialized and read back when it is deserialized. A stored document whose
/// body lives elsewhere (the SQLite store keeps bodies apart) has no `data`: it reads
/// back empty, to be filled by its store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyCapture {
    pub size: u64,
    pub truncated: bool,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    Utf8,
    Base64,
}

impl BodyCapture {
    /// The capture of the bytes kept (already cut at the limit) of a body of `size`
    /// bytes in all: truncated when they are fewer.
    pub fn new(bytes: Bytes, size: u64) -> Self {
        Self {
            truncated: (bytes.len() as u64) < size,
            size,
            bytes,
        }
    }

    /// [`BodyCapture::new`] of a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8], size: u64) -> Self {
        Self::new(Bytes::copy_from_slice(bytes), size)
    }

    /// The bytes kept, when they are UTF-8 text.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// How the wire carries the bytes (as text when they are UTF-8, else in base64),
    /// and its `data`.
    pub fn wire(&self) -> (BodyEncoding, std::borrow::Cow<'_, str>) {
        match self.text() {
            Some(text) => (BodyEncoding::Utf8, text.into()),
            None => (
                BodyEncoding::Base64,
                base64::engine::general_purpose::STANDARD
                    .encode(&self.bytes)
                    .into(),
            ),
        }
    }

    /// Keeps at most `limit` bytes in a buffer of their own (the longer one is let go).
    /// The cut never falls inside a UTF-8 character, so text stays text; it is found
    /// from the bytes at the cut, without reading the rest.
    pub fn cut(&mut self, limit: usize) {
        if self.bytes.len() <= limit {
            return;
        }
        let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
        let mut end = limit;
        // A character is at most 4 bytes: at most 3 continuation bytes to step back over.
        while end > limit.saturating_sub(3) && end > 0 && is_continuation(self.bytes[end]) {
            end -= 1;
        }
        self.bytes = Bytes::copy_from_slice(&self.bytes[..end]);
        self.truncated = true;
    }

    /// Replaces the bytes kept (redaction), keeping the size the body had as it passed.
    pub fn set_text(&mut self, text: String) {
        self.bytes = Bytes::from(text);
    }
}

/// Base64 read with or without its padding.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The seed's wire shape of a body.
#[derive(Serialize)]
struct BodyWire<'a> {
    size: u64,
    truncated: bool,
    encoding: BodyEncoding,
    data: WireData<'a>,
}

#[derive(Deserialize)]
struct BodyWireOwned {
    size: u64,
    truncated: bool,
    #[serde(default)]
    encoding: Option<BodyEncoding>,
    #[serde(default)]
    data: Option<String>,
}

impl Serialize for BodyCapture {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (encoding, data) = match self.text() {
            Some(text) => (BodyEncoding::Utf8, WireData::Text(text)),
            None => (BodyEncoding::Base64, WireData::Base64(&self.bytes)),
        };
        BodyWire {
            size: self.size,
            truncated: self.truncated,
            encoding,
            data,
        }
        .serialize(s)
    }
}

/// A body's `data` as it is written: base64 is encoded straight into the output, without
/// a copy of the body as a string first.
enum WireData<'a> {
    Text(&'a str),
    Base64(&'a [u8]),
}

impl Serialize for WireData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireData::Text(t) => s.serialize_str(t),
            WireData::Base64(b) => s.collect_str(&base64::display::Base64Display::new(
                b,
                &base64::engine::general_purpose::STANDARD,
            )),
        }
    }
}

impl<'de> Deserialize<'de> for BodyCapture {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = BodyWireOwned::deserialize(d)?;
        let data = wire.data.unwrap_or_default();
        let bytes = match wire.encoding.unwrap_or(BodyEncoding::Utf8) {
            BodyEncoding::Utf8 => Bytes::from(data),
            // Padded or not; a text that is no base64 at all (a document some other
            // writer made) is kept as the text it is rather than failing its whole page.
            BodyEncoding::Base64 => match LENIENT_BASE64.decode(&data) {
                Ok(bytes) => Bytes::from(bytes),
                Err(_) => Bytes::from(data),
            },
        };
        Ok(Self {
            size: wire.size,
            truncated: wire.truncated,
            bytes,
        })
    }
}

/// Headers that belong to one connection or to a body's framing: a recorded message sent
/// again (replay, playback) goes without them, and its client or server sets its own.
pub const FRAMING_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// RFC 3339 UTC with microseconds, the format of every `createdAt` in a message.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `HTTP/1.1`, `HTTP/2.0`: how the seed names the client's protocol.
pub fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Groups a header map into `{name: [values]}`; values that are not UTF-8 are kept lossily.
pub fn header_multimap(headers: &http::HeaderMap) -> MultiMap {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// Parses a query string into `{name: [values]}`, percent-decoding names and values.
pub fn query_multimap(query: Option<&str>) -> MultiMap {
    let Some(q) = query else {
        return MultiMap::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `%XX` escapes decoded (a bad escape is kept as written).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A recording: a named span of captured traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(serialize_with = "micros::one")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "micros::one")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "micros::optional")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "micros::optional")]
    pub stopped_at: Option<DateTime<Utc>>,
    pub count: u64,
    /// Why the recording stopped by itself (a full disk), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RecordingFailure>,
    /// What became of the exchanges served while it ran, for a recording this process
    /// ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<Accounting>,
}

/// One recording's traffic, accounted for: `served = stored + queued + lost.total`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Accounting {
    /// Exchanges the proxy answered while it ran (in this process, since it last started).
    pub served: u64,
    /// Of those, transactions in the store.
    pub stored: u64,
    /// Neither stored yet nor counted lost: in the spool, on the feed, or in the
    /// recorder's batch (on a pub/sub feed that was interrupted, possibly lost).
    pub queued: u64,
    pub lost: LostBy,
}

/// Exchanges of a recording that could not be stored, by cause.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LostBy {
    /// The spool held its byte bound (`spool.max_bytes`).
    pub spool_full: u64,
    /// The spool's disk failed.
    pub spool_error: u64,
    /// The store refused them (a full disk), or they outgrew the recorder's retry bound.
    pub store: u64,
    pub total: u64,
}

impl LostBy {
    fn add(&mut self, other: &LostBy) {
        self.spool_full += other.spool_full;
        self.spool_error += other.spool_error;
        self.store += other.store;
        self.total = self.spool_full + self.spool_error + self.store;
    }

    /// One cause's count added.
    pub fn count(&mut self, cause: Loss, n: u64) {
        *self.of(cause) += n;
        self.add(&LostBy::default());
    }

    /// One cause's count taken back (what was counted lost was stored after all).
    pub fn uncount(&mut self, cause: Loss, n: u64) {
        let c = self.of(cause);
        *c = c.saturating_sub(n);
        self.add(&LostBy::default());
    }

    fn of(&mut self, cause: Loss) -> &mut u64 {
        match cause {
            Loss::SpoolFull => &mut self.spool_full,
            Loss::SpoolError => &mut self.spool_error,
            Loss::Store => &mut self.store,
        }
    }
}

/// Why an exchange of a recording was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    SpoolFull,
    SpoolError,
    Store,
}

/// A recording the proxy had to stop: when, why, and how many messages of it (a request
/// or a response each) could not be stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordingFailure {
    #[serde(serialize_with = "micros::one")]
    pub failed_at: DateTime<Utc>,
    pub reason: String,
    /// Messages (a request or a response each) that could not be stored.
    pub lost: u64,
}

/// Times as the wire carries them: RFC 3339 UTC with exactly six fractional digits
/// (chrono's own form drops trailing zeros, `.573Z` for `.573000Z`).
mod micros {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn one<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::timestamp(*t))
    }

    pub fn optional<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => one(t, s),
            None => s.serialize_none(),
        }
    }
}

/// One stored transaction of a recording; `response` is absent until the response
/// event completes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficDoc {
    pub recording_id: String,
    pub transaction_id: String,
    #[serde(serialize_with = "micros::one")]
    pub created_at: DateTime<Utc>,
    pub request: Arc<RequestInfo>,
    pub response: Option<Arc<ResponseInfo>>,
}

impl TrafficDoc {
    /// Bytes of the bodies it holds (a WebSocket's messages with them).
    pub fn body_bytes(&self) -> usize {
        body_bytes(&self.request, self.response.as_deref())
            + web_socket_bytes(self.response.as_deref())
    }

    /// The document a message that began at `started` makes (or completes) in a
    /// recording.
    pub fn from_message(recording_id: &str, msg: &TrafficMessage, started: DateTime<Utc>) -> Self {
        Self {
            recording_id: recording_id.to_owned(),
            transaction_id: msg.transaction_id.clone(),
            created_at: started,
            request: msg.request.clone(),
            response: msg.response.clone(),
        }
    }
}

#[cfg(test)]
impl TrafficMessage {
    /// A request event (`GET /` with no headers) for unit tests, with this body.
    pub(crate) fn sample(transaction_id: &str, body: Option<BodyCapture>) -> Self {
        TrafficMessage {
            transaction_id: transaction_id.to_owned(),
            request_id: String::new(),
            response_id: String::new(),
            request: Arc::new(RequestInfo {
                created_at: "2026-01-01T00:00:00.000000Z".into(),
                client_protocol: String::new(),
                method: "GET".into(),
                uri: "/".into(),
                path: "/".into(),
                args: MultiMap::new(),
                headers: MultiMap::new(),
                body,
            }),
            response: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websockets_messages_are_weighed_and_cut_like_bodies() {
        let mut msg = TrafficMessage::sample("t", None);
        let messages = (0..10)
            .map(|_| WebSocketMessage {
                direction: WsDirection::Send,
                time: String::new(),
                opcode: 1,
                data: BodyCapture::from_bytes(&[b'a'; 1000], 1000),
                close_code: None,
                compressed: false,
            })
            .collect();
        msg.response = Some(Arc::new(ResponseInfo {
            created_at: String::new(),
            client_protocol: String::new(),
            status_code: 101,
            status_description: String::new(),
            headers: MultiMap::new(),
            body: None,
            trailers: None,
            web_socket_messages: Some(messages),
        }));
        assert!(msg.body_bytes() >= 10_000, "the queues weigh the messages");
        let cut = msg.with_bodies_cut(2500).expect("longer than the cut");
        let kept: Vec<usize> = cut
            .response
            .unwrap()
            .web_socket_messages
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.data.bytes.len())
            .collect();
        assert_eq!(kept, [1000, 1000, 500, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn times_keep_six_fractional_digits_even_when_they_end_in_zeros() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T20:39:06.573000Z")
            .unwrap()
            .with_timezone(&Utc);
        let rec = Recording {
            id: "r".into(),
            name: "n".into(),
            description: String::new(),
            created_at: t,
            updated_at: t,
            started_at: Some(t),
            stopped_at: None,
            count: 0,
            failure: None,
            accounting: None,
        };
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["createdAt"], "2026-12-01T20:39:06.573000Z");
        assert_eq!(v["startedAt"], "2026-12-01T20:39:06.573000Z");
        assert_eq!(v["stoppedAt"], serde_json::Value::Null);
        let back: Recording = serde_json::from_value(v).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn query_args_keep_repeats_and_decode() {
        let m = query_multimap(Some("a=1&a=2&b=x%20y&c&d=%zz&e=1+2"));
        let values = |k| m.get(k).collect::<Vec<_>>();
        assert_eq!(values("a"), ["1", "2"]);
        assert_eq!(values("b"), ["x y"]);
        assert_eq!(values("c"), [""]);
        assert_eq!(values("d"), ["%zz"]);
        assert_eq!(values("e"), ["1 2"]);
    }

    #[test]
    fn bodies_are_cut_for_the_window_and_say_so() {
        let body = BodyCapture::from_bytes(&[b'a'; 10], 10);
        let mut msg = TrafficMessage {
            transaction_id: "t".into(),
            request_id: "q".into(),
            response_id: "r".into(),
            request: Arc::new(RequestInfo {
                created_at: String::new(),
                client_protocol: String::new(),
                method: "POST".into(),
                uri: "/".into(),
                path: "/".into(),
                args: MultiMap::new(),
                headers: MultiMap::new(),
                body: Some(body),
            }),
            response: None,
        };
        assert!(msg.with_bodies_cut(10).is_none());
        let cut = msg.with_bodies_cut(4).unwrap();
        let b = cut.request.body.as_ref().unwrap();
        assert_eq!((b.text(), b.size, b.truncated), (Some("aaaa"), 10, true));
        msg.request = Arc::new(RequestInfo::clone(&cut.request));
        assert_eq!(msg.request.body.as_ref().unwrap().text(), Some("aaaa"));
    }

    #[test]
    fn a_cut_keeps_text_whole_characters() {
        let mut b = BodyCapture::from_bytes("aé".as_bytes(), 3);
        b.cut(2);
        assert_eq!((b.text(), b.size, b.truncated), (Some("a"), 3, true));
        for limit in 1..=4 {
            let mut b = BodyCapture::from_bytes("a😀b".as_bytes(), 6);
            b.cut(limit);
            let kept = if limit < 5 { "a" } else { "a😀" };
            assert_eq!(b.text(), Some(kept), "cut at {limit}");
        }
    }

    #[test]
    fn body_capture_marks_truncation_and_binary() {
        let text = BodyCapture::from_bytes(b"hello", 5);
        assert!(!text.truncated);
        assert_eq!(
            serde_json::to_value(&text).unwrap(),
            serde_json::json!({"size": 5, "truncated": false, "encoding": "utf8", "data": "hello"})
        );
        let bin = BodyCapture::from_bytes(&[0xff, 0x00], 10);
        let wire = serde_json::to_value(&bin).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"size": 10, "truncated": true, "encoding": "base64", "data": "/wA="})
        );
        let back: BodyCapture = serde_json::from_value(wire).unwrap();
        assert_eq!(back, bin);
        let unpadded =
            serde_json::json!({"size": 10, "truncated": true, "encoding": "base64", "data": "/wA"});
        assert_eq!(
            serde_json::from_value::<BodyCapture>(unpadded).unwrap(),
            bin
        );
        // Not base64 at all: kept as the text it is, not an error that fails a page.
        let broken =
            serde_json::json!({"size": 1, "truncated": false, "encoding": "base64", "data": "%"});
        let kept = serde_json::from_value::<BodyCapture>(broken).unwrap();
        assert_eq!(&kept.bytes[..], b"%");
    }

    #[test]
    fn message_round_trips_in_seed_shape() {
        let msg = TrafficMessage {
            transaction_id: "t".into(),
            request_id: "q".into(),
            response_id: "r".into(),
            request: Arc::new(RequestInfo {
                created_at: timestamp(Utc::now()),
                client_protocol: "HTTP/1.1".into(),
                method: "GET".into(),
                uri: "/a?b=1".into(),
                path: "/a".into(),
                args: query_multimap(Some("b=1")),
                headers: MultiMap::new(),
                body: None,
            }),
            response: None,
        };
        let json = serde_json::to_value(&msg).unwrap();
        assert!(json["request"]["createdAt"].is_string());
        assert!(json["request"]["clientProtocol"].is_string());
        assert!(json.get("response").is_none());
        let back: TrafficMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, msg);
    }
}
