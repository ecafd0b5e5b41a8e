//! TrafficPlayback: answers requests from a recording, without the upstream (a mock of
//! the recorded service).
//!
//! A request matches a recorded one by method, path, query (as a set of pairs, in any
//! order) and, as configured, its body (JSON compared as data, not as text) and chosen
//! headers. Requests that match the same recorded ones are answered in recorded order (a
//! login that fails, then succeeds, plays back that way), then the last answer repeats;
//! `reset` starts every sequence over. A request that matches nothing is a miss: answered
//! 404 (the default), failed 502, or forwarded to the upstream (`on_miss`), and counted
//! and listed in status.
//!
//! The recording is read once, when the module is built (and on `reload`), into memory
//! bounded by `max_bytes`: a phase answers without awaiting, so the answers must be at
//! hand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde::Deserialize;

use super::factory::{Factory, Kind, ModuleConfig};
use super::kwargs::{in_range, mongo_store, Port, STORE_KEYS};
use super::{Built, ModuleError, PipelineModule};
use crate::proxy::{Decision, Exchange, Phase};
use crate::redact::{Redactor, Rules};
use crate::resources::{Claim, Claimed, Resources};
use crate::traffic::{BodyCapture, MultiMap, ResponseInfo, TrafficDoc, FRAMING_HEADERS};

/// Answers requests from a recording.
pub static FACTORY: Factory =
    Factory::new::<TrafficPlaybackKwargs>("TrafficPlayback", Kind::Pipeline);

/// Memory a loaded recording may take by default: 256 MiB.
const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Bytes of a request body compared by default, when bodies are matched.
const DEFAULT_BODY_LIMIT: usize = 64 << 10;
/// Distinct missed requests listed in status (the oldest make room).
const LISTED_MISSES: usize = 20;
/// Transactions read from the store at a time while loading.
const LOAD_CHUNK: u64 = 256;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPlaybackKwargs {
    /// The id of the recording to answer from (required).
    pub recording: Option<String>,
    /// What a request must share with a recorded one to be answered by it.
    #[serde(default, rename = "match")]
    pub matching: MatchKwargs,
    /// What a request that matches nothing gets: `404` (default), `502`, or `forward`
    /// (to the upstream).
    pub on_miss: Option<OnMissKwarg>,
    /// Bytes the loaded recording may take in memory (default 256 MiB).
    pub max_bytes: Option<u64>,
    /// What TrafficReader redacted beyond the defaults (its `redact_headers`,
    /// `redact_fields`, `redact_patterns`): secrets that must not tell requests apart,
    /// nor show in a miss.
    #[serde(default)]
    pub redact_headers: Vec<String>,
    #[serde(default)]
    pub redact_fields: Vec<String>,
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    /// The store the recording is in, when it is MongoDB (as TrafficRecorder's kwargs
    /// name it); without them, the store the other modules name.
    pub mongo_host: Option<String>,
    pub mongo_port: Option<Port>,
    pub mongo_db: Option<String>,
    pub mongo_collection: Option<String>,
    pub mongo_uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchKwargs {
    /// Compare the query, as a set of name=value pairs (default true).
    #[serde(default = "yes")]
    pub query: bool,
    /// Compare the request body, JSON as data (default false). The proxy reads up to
    /// `body_limit` bytes of each request body before answering.
    #[serde(default)]
    pub body: bool,
    /// Bytes of a body compared (default 64 KiB, at most 1 MiB); longer bodies match
    /// on these and on being longer.
    pub body_limit: Option<usize>,
    /// Request headers whose values must be equal (names; default none).
    #[serde(default)]
    pub headers: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for MatchKwargs {
    fn default() -> Self {
        Self {
            query: true,
            body: false,
            body_limit: None,
            headers: Vec::new(),
        }
    }
}

/// `404`, `502` or `forward`, as a number or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMiss {
    NotFound,
    BadGateway,
    Forward,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OnMissKwarg {
    Code(u16),
    Word(String),
}

impl OnMissKwarg {
    fn parse(&self) -> Result<OnMiss, String> {
        match self {
            OnMissKwarg::Code(404) => Ok(OnMiss::NotFound),
            OnMissKwarg::Code(502) => Ok(OnMiss::BadGateway),
            OnMissKwarg::Word(w) => match w.trim() {
                "404" => Ok(OnMiss::NotFound),
                "502" => Ok(OnMiss::BadGateway),
                "forward" => Ok(OnMiss::Forward),
                other => Err(format!(
                    "on_miss: expected 404, 502 or forward, found `{other}`"
                )),
            },
            OnMissKwarg::Code(other) => Err(format!(
                "on_miss: expected 404, 502 or forward, found {other}"
            )),
        }
    }
}

/// The kwargs, checked.
struct Plan {
    recording: String,
    on_miss: OnMiss,
    max_bytes: u64,
    matcher: Matcher,
}

impl TrafficPlaybackKwargs {
    fn plan(&self) -> Result<Plan, String> {
        let recording = self
            .recording
            .clone()
            .filter(|r| !r.trim().is_empty())
            .ok_or("recording: required: the id of the recording to answer from")?;
        in_range("max_bytes", self.max_bytes, 1..=64 << 30)?;
        in_range("match.body_limit", self.matching.body_limit, 1..=1 << 20)?;
        let headers = self
            .matching
            .headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("match.headers: `{h}` is not a header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            recording,
            on_miss: self
                .on_miss
                .as_ref()
                .map_or(Ok(OnMiss::NotFound), OnMissKwarg::parse)?,
            max_bytes: self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            matcher: Matcher {
                query: self.matching.query,
                body_limit: self
                    .matching
                    .body
                    .then(|| self.matching.body_limit.unwrap_or(DEFAULT_BODY_LIMIT)),
                headers,
                redactor: Redactor::blind(&Rules {
                    headers: self.redact_headers.clone(),
                    fields: self.redact_fields.clone(),
                    patterns: self.redact_patterns.clone(),
                })
                .map_err(|e| format!("redact_*: {e}"))?,
            },
        })
    }
}

#[async_trait]
impl ModuleConfig for TrafficPlaybackKwargs {
    fn validate(&self) -> Result<(), String> {
        self.plan().map(drop)
    }

    /// The store, when the kwargs name one; else it reads where the recordings are.
    fn claims(&self) -> Vec<Claimed> {
        mongo_store(
            &self.mongo_uri,
            &self.mongo_host,
            self.mongo_port,
            &self.mongo_db,
            &self.mongo_collection,
        )
        .map(|spec| Claimed {
            claim: Claim::Store(spec),
            keys: STORE_KEYS,
        })
        .into_iter()
        .collect()
    }

    async fn build(&self, resources: &Resources) -> Result<Built, ModuleError> {
        let plan = self.plan().map_err(ModuleError::kwargs(FACTORY.name))?;
        let failed = |message: String| ModuleError::Failed {
            module: FACTORY.name.to_owned(),
            message,
        };
        let recordings = &resources.recordings;
        let rec = recordings
            .get(&plan.recording)
            .await
            .map_err(|e| failed(format!("kwarg recording: {e}")))?;
        let mut book = Book::default();
        let mut after = None;
        loop {
            let chunk = recordings
                .traffic_after(&plan.recording, after, LOAD_CHUNK)
                .await
                .map_err(|e| failed(format!("reading recording {}: {e}", rec.id)))?;
            for (pos, doc) in &chunk {
                after = Some(*pos);
                book.add(&plan.matcher, doc);
                if book.bytes > plan.max_bytes {
                    return Err(failed(format!(
                        "recording {} takes more than max_bytes ({} MiB) in memory; raise max_bytes",
                        rec.id,
                        plan.max_bytes >> 20
                    )));
                }
            }
            if (chunk.len() as u64) < LOAD_CHUNK {
                break;
            }
        }
        tracing::info!(
            recording = %rec.id,
            answers = book.answers,
            requests = book.entries.len(),
            unanswered = book.unanswered,
            bytes = book.bytes,
            "playback loaded"
        );
        Ok(Built::Pipeline(Arc::new(TrafficPlayback {
            recording: rec.id,
            on_miss: plan.on_miss,
            matcher: plan.matcher,
            book,
            counters: Counters::default(),
            misses: Mutex::default(),
        })))
    }
}

/// How requests are told apart, for the recorded ones and those that arrive alike.
///
/// Secrets do not count: a recording holds them redacted (by default), so both sides go
/// through a blind redactor, whose every mark is `[redacted]`, and keyed marks already in
/// a recorded request are made blind too. Two requests that differ only in a password
/// are the same request; their recorded answers come in recorded order.
struct Matcher {
    query: bool,
    body_limit: Option<usize>,
    headers: Vec<HeaderName>,
    redactor: Redactor,
}

impl Matcher {
    /// The key of a request: its method and path; its query pairs, sorted; the chosen
    /// headers' values; and, when bodies count, a hash of the body's first `body_limit`
    /// bytes and whether that was all of it.
    fn key(
        &self,
        method: &str,
        path: &str,
        mut args: MultiMap,
        headers: impl Fn(&str) -> Vec<String>,
        body: (&[u8], bool),
        content_type: Option<&str>,
    ) -> Key {
        let blind = |v: &str| self.redactor.blind_marks(v).into_owned();
        let query = if self.query {
            self.redactor.args(&mut args);
            let mut out: Vec<(String, String)> = pairs(&args)
                .into_iter()
                .map(|(k, v)| (k, blind(&v)))
                .collect();
            out.sort();
            out
        } else {
            Vec::new()
        };
        let mut chosen: MultiMap = self
            .headers
            .iter()
            .flat_map(|h| {
                headers(h.as_str())
                    .into_iter()
                    .map(move |v| (h.as_str(), v))
            })
            .collect();
        self.redactor.headers(&mut chosen);
        let headers = self
            .headers
            .iter()
            .map(|h| chosen.get(h.as_str()).map(blind).collect())
            .collect();
        let body = self.body_limit.map(|limit| {
            // Whole (the caller knows it fit the limit): as it is; else its first bytes.
            let (bytes, whole) = body;
            let cut = if whole {
                bytes
            } else {
                &bytes[..bytes.len().min(limit)]
            };
            let mut capture = BodyCapture::from_bytes(cut, cut.len() as u64);
            self.redactor.body(&mut capture, content_type);
            match capture.text() {
                Some(text) => body_hash(self.redactor.blind_marks(text).as_bytes(), whole),
                None => body_hash(&capture.bytes, whole),
            }
        });
        Key {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            headers,
            body,
        }
    }
}

/// What a request is matched by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    method: String,
    path: String,
    /// Sorted name=value pairs (empty when the query is not compared).
    query: Vec<(String, String)>,
    /// The chosen headers' values, in the configured order.
    headers: Vec<Vec<String>>,
    /// A hash of the body (JSON as data), when bodies are compared.
    body: Option<[u8; 32]>,
}

/// A recorded answer, ready to send.
struct Answer {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// The recording kept only part of the body.
    truncated: bool,
}

/// The recorded answers to one request, in recorded order, and the next to give.
struct Sequence {
    answers: Vec<Arc<Answer>>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Book {
    entries: HashMap<Key, Sequence>,
    answers: usize,
    /// Transactions recorded without a response: nothing to answer with.
    unanswered: usize,
    bytes: u64,
}

impl Book {
    fn add(&mut self, matcher: &Matcher, doc: &TrafficDoc) {
        let Some(resp) = doc.response.as_deref() else {
            self.unanswered += 1;
            return;
        };
        let req = &doc.request;
        let bytes = req
            .body
            .as_ref()
            .map(|b| b.bytes.clone())
            .unwrap_or_default();
        // By the size as it passed: redaction changes the data's length, not the size.
        let limit = matcher.body_limit.unwrap_or(0) as u64;
        let whole = req
            .body
            .as_ref()
            .is_none_or(|b| !b.truncated && b.size <= limit);
        let key = matcher.key(
            &req.method,
            &req.path,
            req.args.clone(),
            |name| req.headers.get(name).map(str::to_owned).collect(),
            (&bytes, whole),
            req.headers.first("content-type"),
        );
        let answer = answer(resp);
        self.bytes += answer.body.len() as u64
            + answer
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().len() + v.len()) as u64)
                .sum::<u64>()
            + 256;
        self.answers += 1;
        self.entries
            .entry(key)
            .or_insert_with(|| Sequence {
                answers: Vec::new(),
                next: AtomicUsize::new(0),
            })
            .answers
            .push(Arc::new(answer));
    }
}

/// `{name: [values]}` as sorted pairs: the same query in another order is the same.
fn pairs(args: &MultiMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = args
        .pairs()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    out.sort();
    out
}

/// A body's identity: JSON by its data (key order and spacing aside), anything else by
/// its bytes; a body longer than what is compared differs from one that is not.
fn body_hash(bytes: &[u8], whole: bool) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) if whole => {
            h.update(b"json:");
            hash_json(&v, &mut h);
        }
        _ => {
            h.update(b"bytes:");
            h.update(bytes);
        }
    };
    h.update(&[u8::from(whole)]);
    *h.finalize().as_bytes()
}

/// JSON into a hash with object keys in sorted order, so key order does not count.
fn hash_json(v: &serde_json::Value, h: &mut blake3::Hasher) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(Value::from(k.as_str()).to_string().as_bytes());
                h.update(b":");
                hash_json(&map[k], h);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for item in items {
                hash_json(item, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        leaf => {
            h.update(leaf.to_string().as_bytes());
        }
    }
}

fn answer(resp: &ResponseInfo) -> Answer {
    let headers = resp
        .headers
        .pairs()
        .filter(|(name, _)| !FRAMING_HEADERS.contains(name))
        .filter_map(|(name, v)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    let (body, truncated) = match &resp.body {
        Some(b) => (b.bytes.clone(), b.truncated),
        None => (Bytes::new(), false),
    };
    Answer {
        status: StatusCode::from_u16(resp.status_code).unwrap_or(StatusCode::OK),
        headers,
        body,
        truncated,
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    /// Answers given again after their sequence ran out.
    repeats: AtomicU64,
    misses: AtomicU64,
    /// Answers whose body the recording kept only in part.
    truncated: AtomicU64,
    /// Requests whose body could not be read to match it (the capture budget was spent).
    unread: AtomicU64,
}

pub struct TrafficPlayback {
    recording: String,
    on_miss: OnMiss,
    matcher: Matcher,
    book: Book,
    counters: Counters,
    /// The latest distinct misses (`GET /path?query`) with how often each came.
    misses: Mutex<VecDeque<(String, u64)>>,
}

impl TrafficPlayback {
    /// The key of an arriving request; `None` when bodies count and this one's could
    /// not be read (the capture budget was spent).
    fn key(&self, ex: &Exchange, req: &http::request::Parts) -> Option<Key> {
        let body = match (&self.matcher.body_limit, &ex.request_prefix) {
            (None, _) => (&[][..], true),
            (Some(limit), Some(p)) => (&p.data[..], p.whole && p.data.len() <= *limit),
            (Some(_), None) => return None,
        };
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        Some(
            self.matcher.key(
                req.method.as_str(),
                req.uri.path(),
                crate::traffic::query_multimap(req.uri.query()),
                |name| req.headers.get_all(name).iter().map(text).collect(),
                body,
                req.headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
            ),
        )
    }

    fn missed(&self, req: &http::request::Parts) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        // Listed in status: without its secrets.
        let what = format!(
            "{} {}",
            req.method,
            self.matcher.redactor.uri(&req.uri.to_string()).0
        );
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = misses.iter().position(|(w, _)| *w == what) {
            if let Some((w, n)) = misses.remove(i) {
                misses.push_back((w, n + 1));
            }
        } else {
            if misses.len() == LISTED_MISSES {
                misses.pop_front();
            }
            misses.push_back((what, 1));
        }
    }
}

impl Phase for TrafficPlayback {
    fn on_request(&self, ex: &mut Exchange, req: &mut http::request::Parts) -> Decision {
        let key = self.key(ex, req);
        let Some(seq) = key.as_ref().and_then(|k| self.book.entries.get(k)) else {
            self.missed(req);
            let path = self.matcher.redactor.uri(&req.uri.to_string()).0;
            let reason = match key {
                Some(_) => format!(
                    "no recorded answer for {} {path} in recording {}",
                    req.method, self.recording
                ),
                None => {
                    self.counters.unread.fetch_add(1, Ordering::Relaxed);
                    format!(
                        "the body of {} {path} could not be read to match it: the proxy's capture_memory is spent",
                        req.method
                    )
                }
            };
            return match self.on_miss {
                OnMiss::Forward => Decision::Forward,
                OnMiss::BadGateway => Decision::Fail {
                    status: StatusCode::BAD_GATEWAY,
                    reason,
                },
                OnMiss::NotFound => {
                    let body = serde_json::json!({ "error": reason }).to_string();
                    let mut resp = http::Response::new(Bytes::from(body));
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Decision::Respond(resp)
                }
            };
        };
        let n = seq.next.fetch_add(1, Ordering::Relaxed);
        let last = seq.answers.len() - 1;
        if n > last {
            self.counters.repeats.fetch_add(1, Ordering::Relaxed);
        }
        let answer = &seq.answers[n.min(last)];
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        if answer.truncated {
            self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let mut resp = http::Response::new(answer.body.clone());
        *resp.status_mut() = answer.status;
        for (k, v) in &answer.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        Decision::Respond(resp)
    }

    fn request_body_needed(&self) -> usize {
        self.matcher.body_limit.unwrap_or(0)
    }
}

impl PipelineModule for TrafficPlayback {
    fn counters(&self) -> serde_json::Value {
        let misses: BTreeMap<String, u64> = self
            .misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        serde_json::json!({
            "recording": self.recording,
            "answers": self.book.answers,
            "hits": self.counters.hits.load(Ordering::Relaxed),
            "repeats": self.counters.repeats.load(Ordering::Relaxed),
            "misses": self.counters.misses.load(Ordering::Relaxed),
            "truncated": self.counters.truncated.load(Ordering::Relaxed),
            "unread": self.counters.unread.load(Ordering::Relaxed),
            "missed": misses,
        })
    }

    /// Counters to zero, and every sequence starts over.
    fn reset(&self) {
        for seq in self.book.entries.values() {
            seq.next.store(0, Ordering::Relaxed);
        }
        for c in [
            &self.counters.hits,
            &self.counters.repeats,
            &self.counters.misses,
            &self.counters.truncated,
            &self.counters.unread,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwargs_name_what_is_wrong() {
        let parse = |yaml: &str| {
            let v: yaml_serde::Value = yaml_serde::from_str(yaml).unwrap();
            FACTORY.parse(&v).map(drop)
        };
        assert!(parse("{recording: abc}").is_ok());
        assert!(parse(
            "{recording: abc, on_miss: forward, match: {body: true, headers: [accept]}}"
        )
        .is_ok());
        assert!(parse("{}").unwrap_err().contains("recording: required"));
        assert!(parse("{recording: a, on_miss: 500}")
            .unwrap_err()
            .contains("on_miss: expected 404, 502 or forward, found 500"));
        assert!(parse("{recording: a, match: {headers: ['bad name']}}")
            .unwrap_err()
            .contains("`bad name` is not a header name"));
        assert!(
            parse("{recording: a, redact_fields: [otp], redact_patterns: ['(']}")
                .unwrap_err()
                .contains("redact_*: `(` is not a regex")
        );
        assert!(parse("{recording: a, match: {body_limit: 0}}")
            .unwrap_err()
            .contains("match.body_limit"));
    }

    #[test]
    fn json_bodies_match_as_data_and_longer_bodies_differ() {
        assert_eq!(
            body_hash(br#"{"a":1,"b":2}"#, true),
            body_hash(br#"{ "b": 2, "a": 1 }"#, true)
        );
        assert_ne!(body_hash(b"abc", true), body_hash(b"abc", false));
        assert_ne!(body_hash(b"abc", true), body_hash(b"abd", true));
    }

    #[test]
    fn queries_match_in_any_order() {
        let a = crate::traffic::query_multimap(Some("b=2&a=1&a=0"));
        let b = crate::traffic::query_multimap(Some("a=0&b=2&a=1"));
        assert_eq!(pairs(&a), pairs(&b));
    }
}
