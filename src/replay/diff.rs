//! How a replayed response differs from the recorded one: status, headers, body (JSON
//! structurally, by path; anything else by bytes), under noise rules.
//!
//! Noise rules: headers ignored by name (by default those that differ on every answer:
//! `Date`, `Server`, `Age`, `Via` and the connection's own framing headers; `Content-Length`
//! when the body itself is compared; `Expires`/`Max-Age` inside `Set-Cookie`), JSON paths
//! ignored (`$.id`, `$.items[*].updatedAt`), and regexes whose matches are equal
//! whatever they matched (ids, timestamps) in header values and JSON values. A value the
//! recording holds redacted (`[redacted len=N h=…]`) matches any value: the replay
//! cannot know the secret.

use std::collections::{BTreeSet, HashSet};

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::traffic::{BodyCapture, MultiMap, ResponseInfo};

/// Headers whose values differ between two answers of an unchanged service.
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "age",
    "via",
    "connection",
    "keep-alive",
    "transfer-encoding",
];

/// Most differences one body reports (the rest are counted).
const MAX_BODY_DIFFERENCES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("--ignore-path `{path}`: {reason} (write paths like $.id, $.items[*].id, $.a.*)")]
    Path { path: String, reason: String },
    #[error("--match `{pattern}`: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// What counts as noise.
#[derive(Debug, Default)]
pub struct Rules {
    ignored_headers: HashSet<String>,
    ignored_paths: Vec<Vec<Segment>>,
    matchers: Vec<Regex>,
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
    /// `*` or `[*]`: any key or index.
    Any,
}

impl Rules {
    /// Rules from the user's lists, on top of [`DEFAULT_IGNORED_HEADERS`] unless
    /// `defaults` is false.
    pub fn new(
        ignore_headers: &[String],
        ignore_paths: &[String],
        matches: &[String],
        defaults: bool,
    ) -> Result<Self, RuleError> {
        let mut ignored_headers: HashSet<String> = ignore_headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if defaults {
            ignored_headers.extend(DEFAULT_IGNORED_HEADERS.iter().map(|h| h.to_string()));
        }
        let ignored_paths = ignore_paths
            .iter()
            .map(|p| {
                parse_path(p).map_err(|reason| RuleError::Path {
                    path: p.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        let matchers = matches
            .iter()
            .map(|m| {
                Regex::new(m).map_err(|source| RuleError::Regex {
                    pattern: m.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ignored_headers,
            ignored_paths,
            matchers,
        })
    }

    /// Whether two values are equal once the matchers' matches are set aside.
    fn same_text(&self, recorded: &str, replayed: &str) -> bool {
        if recorded == replayed || crate::redact::is_mark(recorded) {
            return true;
        }
        if self.matchers.is_empty() {
            return false;
        }
        let norm = |s: &str| {
            self.matchers.iter().fold(s.to_owned(), |acc, re| {
                re.replace_all(&acc, "\u{0}").into_owned()
            })
        };
        norm(recorded) == norm(replayed)
    }

    fn path_ignored(&self, path: &[Segment]) -> bool {
        self.ignored_paths.iter().any(|pattern| {
            pattern.len() == path.len()
                && pattern.iter().zip(path).all(|(p, s)| match (p, s) {
                    (Segment::Any, _) => true,
                    (a, b) => a == b,
                })
        })
    }
}

/// `$`, `.key`, `["key"]`, `[3]`, `[*]`, `.*`.
fn parse_path(text: &str) -> Result<Vec<Segment>, String> {
    let rest = text
        .trim()
        .strip_prefix('$')
        .ok_or("a path starts with `$`")?;
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                match key.as_str() {
                    "" => return Err("an empty key after `.`".into()),
                    "*" => out.push(Segment::Any),
                    _ => out.push(Segment::Key(key)),
                }
            }
            '[' => {
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    inner.push(c);
                }
                let inner = inner.trim();
                if inner == "*" {
                    out.push(Segment::Any);
                } else if let Ok(i) = inner.parse::<usize>() {
                    out.push(Segment::Index(i));
                } else if let Some(key) = inner
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .or_else(|| inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
                {
                    out.push(Segment::Key(key.to_owned()));
                } else {
                    return Err(format!(
                        "`[{inner}]` is neither an index, `*` nor a quoted key"
                    ));
                }
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(out)
}

/// A path as the report writes it: `$.a.b[2]`, `$["odd key"]`.
fn show_path(path: &[Segment]) -> String {
    let mut out = String::from("$");
    for s in path {
        match s {
            Segment::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-') =>
            {
                out.push('.');
                out.push_str(k);
            }
            Segment::Key(k) => {
                out.push('[');
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(']');
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Any => out.push_str("[*]"),
        }
    }
    out
}

/// A response as the replay got it.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub status: u16,
    /// Names in lower case.
    pub headers: MultiMap,
    pub body: Vec<u8>,
    /// `body` is the start of a longer one.
    pub cut: bool,
}

/// One way the replayed response differs from the recorded one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Difference {
    Status {
        recorded: u16,
        replayed: u16,
    },
    /// A header added (`recorded` empty), gone (`replayed` empty) or changed.
    Header {
        name: String,
        recorded: Vec<String>,
        replayed: Vec<String>,
    },
    /// A JSON value changed, added (`recorded` absent) or gone (`replayed` absent).
    Json {
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        recorded: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        replayed: Option<Value>,
    },
    /// More JSON differences than a report lists.
    MoreJson {
        count: usize,
    },
    /// Bodies that differ as bytes: their sizes, and where they first differ.
    Body {
        #[serde(rename = "recordedSize")]
        recorded_size: u64,
        #[serde(rename = "replayedSize")]
        replayed_size: u64,
        #[serde(rename = "firstDifferenceAt")]
        first_difference_at: u64,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| match v {
            [] => "(none)".to_owned(),
            [one] => format!("{one:?}"),
            many => format!("{many:?}"),
        };
        let json = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), Value::to_string);
        match self {
            Difference::Status { recorded, replayed } => {
                write!(f, "status: {recorded} -> {replayed}")
            }
            Difference::Header {
                name,
                recorded,
                replayed,
            } => match (recorded.is_empty(), replayed.is_empty()) {
                (true, _) => write!(f, "header {name}: added {}", list(replayed)),
                (_, true) => write!(f, "header {name}: gone (was {})", list(recorded)),
                _ => write!(f, "header {name}: {} -> {}", list(recorded), list(replayed)),
            },
            Difference::Json {
                path,
                recorded,
                replayed,
            } => write!(f, "body {path}: {} -> {}", json(recorded), json(replayed)),
            Difference::MoreJson { count } => write!(f, "body: {count} more JSON differences"),
            Difference::Body {
                recorded_size,
                replayed_size,
                first_difference_at,
            } => write!(
                f,
                "body: {recorded_size} -> {replayed_size} bytes, first difference at byte {first_difference_at}"
            ),
        }
    }
}

/// Every difference between the recorded response and the replayed one, under `rules`.
pub fn compare(rules: &Rules, recorded: &ResponseInfo, replayed: &Replayed) -> Vec<Difference> {
    let mut out = Vec::new();
    if recorded.status_code != replayed.status {
        out.push(Difference::Status {
            recorded: recorded.status_code,
            replayed: replayed.status,
        });
    }
    let body_out = match &recorded.body {
        Some(body) => compare_body(rules, body, &replayed.body, replayed.cut),
        None => Vec::new(),
    };
    // The body's comparison covers its length (a JSON body may also be written shorter).
    let body_compared = recorded.body.is_some();
    let names: BTreeSet<&str> = recorded
        .headers
        .keys()
        .chain(replayed.headers.keys())
        .collect();
    for name in names {
        if rules.ignored_headers.contains(name) || (body_compared && name == "content-length") {
            continue;
        }
        let rec = recorded.headers.get(name);
        let rep = replayed.headers.get(name);
        let same = rec.len() == rep.len()
            && rec.clone().zip(rep.clone()).all(|(a, b)| {
                if name == "set-cookie" {
                    rules.same_text(&without_expiry(a), &without_expiry(b))
                } else {
                    rules.same_text(a, b)
                }
            });
        if !same {
            out.push(Difference::Header {
                name: name.to_owned(),
                recorded: rec.map(str::to_owned).collect(),
                replayed: rep.map(str::to_owned).collect(),
            });
        }
    }
    out.extend(body_out);
    out
}

/// A `Set-Cookie` without its `Expires` and `Max-Age`, which move with the clock.
fn without_expiry(cookie: &str) -> String {
    cookie
        .split(';')
        .filter(|part| {
            let name = part.split('=').next().unwrap_or("").trim();
            !name.eq_ignore_ascii_case("expires") && !name.eq_ignore_ascii_case("max-age")
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn compare_body(
    rules: &Rules,
    recorded: &BodyCapture,
    replayed: &[u8],
    replayed_cut: bool,
) -> Vec<Difference> {
    let rec = &recorded.bytes;
    if !recorded.truncated && !replayed_cut {
        let as_json = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
        if let (Some(a), Some(b)) = (as_json(rec), as_json(replayed)) {
            let mut out = Vec::new();
            let mut more = 0;
            json_diff(rules, &mut Vec::new(), &a, &b, &mut out, &mut more);
            if more > 0 {
                out.push(Difference::MoreJson { count: more });
            }
            return out;
        }
    }
    // Bytes: a truncated recording is compared on what it kept, and on the size; a
    // replayed body read only in part on that part (its size is not known).
    let (rec_part, rep_part) = match (recorded.truncated, replayed_cut) {
        (false, false) => (&rec[..], replayed),
        _ => {
            let n = rec.len().min(replayed.len());
            (&rec[..n], &replayed[..n])
        }
    };
    // A replayed body cut short is longer than what it kept: the recorded one must be too.
    let size_differs = if replayed_cut {
        recorded.size <= replayed.len() as u64
    } else {
        replayed.len() as u64 != recorded.size
    };
    if rec_part == rep_part && !size_differs {
        return Vec::new();
    }
    let first = rec
        .iter()
        .zip(replayed)
        .position(|(a, b)| a != b)
        .unwrap_or(rec.len().min(replayed.len()));
    vec![Difference::Body {
        recorded_size: recorded.size,
        replayed_size: replayed.len() as u64,
        first_difference_at: first as u64,
    }]
}

/// Records a difference, or counts it once a body has listed enough.
fn note(out: &mut Vec<Difference>, more: &mut usize, d: Difference) {
    if out.len() < MAX_BODY_DIFFERENCES {
        out.push(d);
    } else {
        *more += 1;
    }
}

fn json_diff(
    rules: &Rules,
    path: &mut Vec<Segment>,
    a: &Value,
    b: &Value,
    out: &mut Vec<Difference>,
    more: &mut usize,
) {
    if rules.path_ignored(path) {
        return;
    }
    // The children of two containers of one kind, side by side; leaves end here.
    let children: Vec<(Segment, Option<&Value>, Option<&Value>)> = match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|k| (Segment::Key(k.clone()), x.get(k), y.get(k)))
            .collect(),
        (Value::Array(x), Value::Array(y)) => (0..x.len().max(y.len()))
            .map(|i| (Segment::Index(i), x.get(i), y.get(i)))
            .collect(),
        (Value::String(x), Value::String(y)) if rules.same_text(x, y) => return,
        (Value::Number(x), Value::Number(y)) if rules.same_text(&x.to_string(), &y.to_string()) => {
            return
        }
        (x, y) if x == y => return,
        (x, y) => {
            let d = Difference::Json {
                path: show_path(path),
                recorded: Some(x.clone()),
                replayed: Some(y.clone()),
            };
            return note(out, more, d);
        }
    };
    for (segment, va, vb) in children {
        path.push(segment);
        match (va, vb) {
            (Some(va), Some(vb)) => json_diff(rules, path, va, vb, out, more),
            (va, vb) if !rules.path_ignored(path) => {
                let d = Difference::Json {
                    path: show_path(path),
                    recorded: va.cloned(),
                    replayed: vb.cloned(),
                };
                note(out, more, d);
            }
            _ => {}
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> ResponseInfo {
        let map: MultiMap = headers.iter().copied().collect();
        ResponseInfo {
            created_at: String::new(),
            client_protocol: "HTTP/1.1".into(),
            status_code: status,
            status_description: String::new(),
            headers: map,
            body: Some(BodyCapture::from_bytes(body, body.len() as u64)),
            trailers: None,
            web_socket_messages: None,
        }
    }

    fn replayed(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Replayed {
        let r = response(status, headers, body);
        Replayed {
            status,
            headers: r.headers,
            body: body.to_vec(),
            cut: false,
        }
    }

    fn rules() -> Rules {
        Rules::new(&[], &[], &[], true).unwrap()
    }

    #[test]
    fn the_same_answer_at_another_time_is_no_difference() {
        let rec = response(
            200,
            &[
                ("date", "Mon, 30 Nov 2026 09:00:00 GMT"),
                ("content-type", "application/json"),
                ("content-length", "13"),
                (
                    "set-cookie",
                    "sid=1; Max-Age=60; Expires=Mon, 30 Nov 2026 09:01:00 GMT; HttpOnly",
                ),
                ("authorization-echo", "[redacted len=5 h=abc]"),
            ],
            br#"{"a":1,"b":2}"#,
        );
        let rep = replayed(
            200,
            &[
                ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
                ("content-type", "application/json"),
                ("content-length", "15"),
                (
                    "set-cookie",
                    "sid=1; Max-Age=60; Expires=Tue, 01 Dec 2026 10:01:00 GMT; HttpOnly",
                ),
                ("authorization-echo", "hello"),
            ],
            br#"{ "b": 2, "a": 1 }"#,
        );
        assert_eq!(compare(&rules(), &rec, &rep), []);
    }

    #[test]
    fn status_header_and_json_field_changes_are_each_named() {
        let rec = response(
            200,
            &[("content-type", "application/json")],
            br#"{"user":{"name":"Ada","tags":["a"]}}"#,
        );
        let rep = replayed(
            500,
            &[("content-type", "application/json"), ("x-new", "1")],
            br#"{"user":{"name":"Grace","tags":["a","b"]}}"#,
        );
        let d = compare(&rules(), &rec, &rep);
        assert_eq!(
            d,
            [
                Difference::Status {
                    recorded: 200,
                    replayed: 500
                },
                Difference::Header {
                    name: "x-new".into(),
                    recorded: vec![],
                    replayed: vec!["1".into()]
                },
                Difference::Json {
                    path: "$.user.name".into(),
                    recorded: Some("Ada".into()),
                    replayed: Some("Grace".into())
                },
                Difference::Json {
                    path: "$.user.tags[1]".into(),
                    recorded: None,
                    replayed: Some("b".into())
                },
            ]
        );
        assert_eq!(d[1].to_string(), "header x-new: added \"1\"");
        assert_eq!(d[2].to_string(), "body $.user.name: \"Ada\" -> \"Grace\"");
    }

    #[test]
    fn ignored_paths_and_matched_values_are_noise() {
        let rec = response(
            200,
            &[],
            br#"{"id":"0193a1","at":"2026-11-30T09:00:00Z","items":[{"id":1,"n":"x"}]}"#,
        );
        let rep = replayed(
            200,
            &[],
            br#"{"id":"0193b7","at":"2026-12-01T10:11:12Z","items":[{"id":9,"n":"x"}]}"#,
        );
        let strict = compare(&rules(), &rec, &rep);
        assert_eq!(strict.len(), 3, "{strict:?}");
        let r = Rules::new(
            &[],
            &["$.items[*].id".into(), "$[\"id\"]".into()],
            &[r"\d{4}-\d\d-\d\dT[\d:]+Z".into()],
            true,
        )
        .unwrap();
        assert_eq!(compare(&r, &rec, &rep), []);
        assert!(Rules::new(&[], &["items.id".into()], &[], true).is_err());
        assert!(Rules::new(&[], &[], &["(".into()], true).is_err());
    }

    #[test]
    fn other_bodies_differ_by_bytes_and_truncated_ones_on_what_was_kept() {
        let rec = response(200, &[], b"hello world");
        let d = compare(&rules(), &rec, &replayed(200, &[], b"hello there"));
        assert_eq!(
            d,
            [Difference::Body {
                recorded_size: 11,
                replayed_size: 11,
                first_difference_at: 6
            }]
        );
        let mut cut = response(200, &[], b"hello");
        cut.body = Some(BodyCapture::from_bytes(b"hello", 11));
        assert_eq!(
            compare(&rules(), &cut, &replayed(200, &[], b"hello world")),
            []
        );
        assert_eq!(
            compare(&rules(), &cut, &replayed(200, &[], b"hello")).len(),
            1
        );
        let mut none = response(200, &[("content-length", "3")], b"");
        none.body = None;
        assert_eq!(
            compare(
                &rules(),
                &none,
                &replayed(200, &[("content-length", "3")], b"abc")
            ),
            []
        );
    }

    #[test]
    fn an_answer_read_only_in_part_is_compared_on_that_part() {
        let long = response(200, &[], br#"{"a":"xyz"}"#);
        let mut start = replayed(200, &[], br#"{"a":"x"#);
        start.cut = true;
        assert_eq!(compare(&rules(), &long, &start), []);
        start.body = br#"{"b":"x"#.to_vec();
        assert_eq!(compare(&rules(), &long, &start).len(), 1);
        // A recorded body no longer than the part read cannot be what was cut short.
        let short = response(200, &[], br#"{"a":"x"#);
        start.body = br#"{"a":"x"#.to_vec();
        assert_eq!(compare(&rules(), &short, &start).len(), 1);
    }

    #[test]
    fn paths_parse_and_print() {
        assert_eq!(
            parse_path("$.a[2][*].*[\"b c\"]").unwrap(),
            [
                Segment::Key("a".into()),
                Segment::Index(2),
                Segment::Any,
                Segment::Any,
                Segment::Key("b c".into())
            ]
        );
        assert_eq!(
            show_path(&[
                Segment::Key("a".into()),
                Segment::Index(0),
                Segment::Key("b c".into())
            ]),
            "$.a[0][\"b c\"]"
        );
    }
}
