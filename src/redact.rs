//! Redaction: secrets are replaced before a traffic message leaves the exchange, so no
//! feed, store, window or export ever holds them.
//!
//! A secret becomes `[redacted len=N h=HASH]`: its length, and eight hex digits of a
//! keyed BLAKE3 hash, so two equal secrets stay comparable (the same session cookie in
//! two exchanges) without the value being recoverable from the mark. The key is the
//! proxy's own (a file in the data directory), so marks agree across restarts.
//!
//! What is redacted: header values by name (`Authorization`, `Proxy-Authorization`,
//! `Cookie`, `Set-Cookie` and configured ones); query and form fields and JSON object
//! fields by name (passwords, tokens, keys and configured ones); and whatever matches a
//! pattern in a text body (bearer tokens, card numbers that pass the Luhn check, and
//! configured regexes).

use std::borrow::Cow;
use std::collections::BTreeSet;

use regex::Regex;

use crate::traffic::{BodyCapture, MultiMap};

/// Headers whose values are always redacted.
pub const HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Headers whose values are URLs: their queries are redacted like the request's.
const URL_HEADERS: &[&str] = &["referer", "location", "content-location"];

/// Query, form and JSON field names whose values are redacted. Compared by words, without
/// case or separators: `password` also stands for `new_password`, `passwordConfirm` and
/// `user.password` and `password2`, `api_key` for a field `X-Api-Key` or `apiKey`;
/// `secretary` and `tokens_used` are no secret. (Headers are redacted by their own list.)
pub const FIELDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
];

/// A field name as compared: its letters and digits, lowercase.
fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A name's words, lowercase: split at anything not a letter or digit, where a
/// lowercase letter or digit is followed by an uppercase one (`newPassword`), and where
/// letters meet digits (`password2`).
fn words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev = None;
            continue;
        }
        let boundary = prev.is_some_and(|p| {
            (c.is_uppercase() && (p.is_lowercase() || p.is_numeric()))
                || (c.is_numeric() != p.is_numeric())
        });
        if boundary && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        prev = Some(c);
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Patterns redacted wherever they appear in a text body.
/// ASCII classes (`-u`): Unicode digit and word classes would make these regexes many
/// times larger in memory, for characters neither secret is made of.
const BEARER: &str = r"(?i-u)\bbearer[ \t]+[A-Za-z0-9\-._~+/]+=*";
const CARD: &str = r"(?-u)\b[0-9](?:[ -]?[0-9]){12,18}\b";

/// What to redact beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub headers: Vec<String>,
    pub fields: Vec<String>,
    pub patterns: Vec<String>,
}

pub struct Redactor {
    key: [u8; 32],
    /// Marks without their length and hash (`[redacted]`), for comparing requests
    /// whatever their secrets ([`Redactor::blind`]); with the pattern of the keyed
    /// marks, to blind those too.
    blind: Option<Regex>,
    headers: BTreeSet<String>,
    fields: BTreeSet<String>,
    /// Bytes of the longest of `fields`.
    longest_field: usize,
    bearer: Regex,
    card: Regex,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// The defaults and `rules`; the error names a pattern that is not a regex.
    pub fn new(rules: &Rules, key: [u8; 32]) -> Result<Self, String> {
        let lower = |v: &[String], base: &[&str]| {
            base.iter()
                .map(|s| s.to_string())
                .chain(v.iter().map(|s| s.trim().to_ascii_lowercase()))
                .collect::<BTreeSet<_>>()
        };
        let patterns = rules
            .patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| format!("`{p}` is not a regex: {e}")))
            .collect::<Result<_, _>>()?;
        let mut fields = BTreeSet::new();
        for f in FIELDS
            .iter()
            .copied()
            .chain(rules.fields.iter().map(String::as_str))
        {
            let squashed = squash(f);
            if squashed.is_empty() {
                return Err(format!("`{f}` names no field (it has no letter or digit)"));
            }
            fields.insert(squashed);
        }
        Ok(Self {
            key,
            blind: None,
            headers: lower(&rules.headers, HEADERS),
            longest_field: fields.iter().map(String::len).max().unwrap_or(0),
            fields,
            bearer: Regex::new(BEARER).map_err(|e| e.to_string())?,
            card: Regex::new(CARD).map_err(|e| e.to_string())?,
            patterns,
        })
    }

    /// A redactor whose marks are all `[redacted]`: two requests that differ only in
    /// their secrets come out the same, whoever's key marked a recorded one. Playback
    /// matches requests this way. [`Redactor::blind_marks`] turns keyed marks already in
    /// a text into the same.
    pub fn blind(rules: &Rules) -> Result<Self, String> {
        let marks = Regex::new(
            r"\[redacted len=[0-9]+ h=[0-9a-f]+\]|%5Bredacted%20len%3D[0-9]+%20h%3D[0-9a-f]+%5D",
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            blind: Some(marks),
            ..Self::new(rules, [0; 32])?
        })
    }

    /// `text` with the keyed marks in it (plain, or encoded in a query) made blind; as it
    /// is for a redactor that is not blind.
    pub fn blind_marks<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        match &self.blind {
            Some(marks) if text.contains("redacted") => {
                marks.replace_all(text, |c: &regex::Captures<'_>| {
                    if c[0].starts_with('%') {
                        "%5Bredacted%5D"
                    } else {
                        BLIND_MARK
                    }
                })
            }
            _ => std::borrow::Cow::Borrowed(text),
        }
    }

    /// The mark that stands for `secret`.
    pub fn mark(&self, secret: &str) -> String {
        if self.blind.is_some() {
            return BLIND_MARK.to_owned();
        }
        let h = blake3::keyed_hash(&self.key, secret.as_bytes());
        let hex = h.to_hex();
        format!("[redacted len={} h={}]", secret.len(), &hex.as_str()[..8])
    }

    /// Whether a run of the name's words, joined, is one of the fields. A run stops
    /// once it is longer than the longest field, so a name of many words costs linear
    /// time, not quadratic.
    fn field(&self, name: &str) -> bool {
        let words = words(name);
        let mut run = String::new();
        (0..words.len()).any(|i| {
            run.clear();
            words[i..].iter().any(|w| {
                run.push_str(w);
                if run.len() > self.longest_field {
                    return true;
                }
                self.fields.contains(run.as_str())
            }) && run.len() <= self.longest_field
        })
    }

    /// Header values by name (the map's names are lowercase, as the reader makes them).
    pub fn headers(&self, headers: &mut MultiMap) -> usize {
        let mut n = 0;
        headers.replace_values(|name, v| {
            if self.headers.contains(name) {
                n += 1;
                Some(self.mark(v))
            } else if URL_HEADERS.contains(&name) {
                // A URL carries its query's secrets (`Location: …/cb?access_token=…`).
                let (redacted, k) = self.uri(v);
                n += k;
                (k > 0).then_some(redacted)
            } else {
                None
            }
        });
        n
    }

    /// Query arguments by name.
    pub fn args(&self, args: &mut MultiMap) -> usize {
        args.replace_values(|name, v| self.field(name).then(|| self.mark(v)))
    }

    /// `name=value&…` with the values of secret names replaced (the mark encoded, so the
    /// text stays a valid query or form).
    pub fn query(&self, query: &str) -> (String, usize) {
        let mut n = 0;
        let out: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value))
                    if self.field(&crate::traffic::percent_decode(name).replace('+', " ")) =>
                {
                    n += 1;
                    let value = crate::traffic::percent_decode(&value.replace('+', " "));
                    format!("{name}={}", encode_mark(&self.mark(&value)))
                }
                _ => pair.to_owned(),
            })
            .collect();
        (out.join("&"), n)
    }

    /// A request target with its query redacted.
    pub fn uri(&self, uri: &str) -> (String, usize) {
        match uri.split_once('?') {
            Some((path, q)) => {
                let (q, n) = self.query(q);
                (format!("{path}?{q}"), n)
            }
            None => (uri.to_owned(), 0),
        }
    }

    /// A captured body: fields by name for JSON and forms, then the patterns, in bodies
    /// whose content type says text (`text/*`, JSON, XML, forms). Binary bodies, and
    /// bodies that say nothing of their type, are left as they are: scanning bulk data
    /// would cost every exchange for what a text body carries.
    pub fn body(&self, body: &mut BodyCapture, content_type: Option<&str>) -> usize {
        let ct = content_type.unwrap_or_default().to_ascii_lowercase();
        let textual = ct.starts_with("text/")
            || ct.contains("json")
            || ct.contains("xml")
            || ct.starts_with("application/x-www-form-urlencoded");
        // The type first: checking that a bulk body is UTF-8 costs a pass over it.
        if !textual || body.bytes.is_empty() {
            return 0;
        }
        let Some(text) = body.text() else {
            return 0;
        };
        let mut n = 0;
        let mut text = Cow::Borrowed(text);
        if ct.contains("json") {
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) {
                // Patterns inside string values only, so the document stays JSON (a
                // number that looks like a card is a number, not text to replace).
                let k = self.json(&mut v);
                if k > 0 {
                    if let Ok(text) = serde_json::to_string(&v) {
                        body.set_text(text);
                        n += k;
                    }
                }
                return n;
            }
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            let (form, k) = self.query(&text);
            if k > 0 {
                text = Cow::Owned(form);
                n += k;
            }
        }
        n += self.patterns_in(&mut text);
        if let Cow::Owned(text) = text {
            body.set_text(text);
        }
        n
    }

    fn json(&self, v: &mut serde_json::Value) -> usize {
        match v {
            serde_json::Value::Object(map) => {
                let mut n = 0;
                for (k, v) in map.iter_mut() {
                    if self.field(k) && !v.is_null() {
                        let text = match &*v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *v = serde_json::Value::String(self.mark(&text));
                        n += 1;
                    } else {
                        n += self.json(v);
                    }
                }
                n
            }
            serde_json::Value::Array(items) => items.iter_mut().map(|i| self.json(i)).sum(),
            serde_json::Value::String(text) => {
                let mut out = Cow::Borrowed(text.as_str());
                let n = self.patterns_in(&mut out);
                if let Cow::Owned(out) = out {
                    *text = out;
                }
                n
            }
            _ => 0,
        }
    }

    /// Replaces what the patterns match; the text is copied only when one does.
    fn patterns_in(&self, text: &mut Cow<'_, str>) -> usize {
        let mut n = 0;
        let mut replace = |re: &Regex, text: &mut Cow<'_, str>, check: &dyn Fn(&str) -> bool| {
            if !re.is_match(text) {
                return;
            }
            let out = re.replace_all(text, |c: &regex::Captures<'_>| {
                let m = &c[0];
                if check(m) {
                    n += 1;
                    self.mark(m)
                } else {
                    m.to_owned()
                }
            });
            *text = Cow::Owned(out.into_owned());
        };
        replace(&self.bearer, text, &|_| true);
        replace(&self.card, text, &luhn);
        for re in &self.patterns {
            replace(re, text, &|_| true);
        }
        n
    }
}

/// Whether a value is a mark the redactor put for a secret (`[redacted len=N h=…]`, or a
/// blind redactor's `[redacted]`).
pub fn is_mark(value: &str) -> bool {
    value.starts_with("[redacted len=") || value == BLIND_MARK
}

/// Whether a text holds a keyed mark, as it is or encoded in a query or form.
pub fn contains_mark(text: &str) -> bool {
    text.contains("[redacted len=") || text.contains("%5Bredacted%20len%3D")
}

/// What a blind redactor puts for every secret.
pub const BLIND_MARK: &str = "[redacted]";

/// A mark as a query value: brackets, spaces and `=` percent-encoded.
fn encode_mark(mark: &str) -> String {
    mark.replace('[', "%5B")
        .replace(']', "%5D")
        .replace(' ', "%20")
        .replace('=', "%3D")
}

/// Whether the digits pass the Luhn check (as card numbers do).
fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_marks_make_requests_that_differ_in_secrets_alike() {
        let keyed = Redactor::new(&Rules::default(), [7; 32]).unwrap();
        let blind = Redactor::blind(&Rules::default()).unwrap();
        let mut recorded = crate::traffic::query_multimap(Some("token=abc&x=1"));
        keyed.args(&mut recorded);
        recorded.replace_values(|_, v| Some(blind.blind_marks(v).into_owned()));
        let mut incoming = crate::traffic::query_multimap(Some("token=zzz&x=1"));
        blind.args(&mut incoming);
        assert_eq!(recorded, incoming);
        assert_eq!(incoming.get("token").collect::<Vec<_>>(), ["[redacted]"]);
        let (form, _) = keyed.query("password=abc&n=2");
        assert_eq!(blind.blind_marks(&form), "password=%5Bredacted%5D&n=2");
        assert_eq!(
            blind.query("password=zz&n=2").0,
            "password=%5Bredacted%5D&n=2"
        );
        assert_eq!(
            keyed.blind_marks(&form),
            form,
            "a keyed redactor leaves marks alone"
        );
    }

    #[test]
    fn field_names_are_compared_by_words() {
        let rules = Rules {
            fields: vec!["ssn".into(), "Card-Number".into(), "Contraseña".into()],
            ..Rules::default()
        };
        let r = Redactor::new(&rules, [7; 32]).unwrap();
        for secret in [
            "password",
            "new_password",
            "passwordConfirm",
            "user.password",
            "PASSWORD",
            "X-Api-Key",
            "apiKey",
            "csrfToken",
            "client-secret",
            "ssn",
            "cardNumber",
            "card_number",
            "password1",
            "contraseña",
        ] {
            assert!(r.field(secret), "{secret} was not redacted");
        }
        for plain in [
            "secretary",
            "tokens_used",
            "passwordless",
            "username",
            "keyboard",
            "",
        ] {
            assert!(!r.field(plain), "{plain} was redacted");
        }
    }

    fn r() -> Redactor {
        Redactor::new(
            &Rules {
                headers: vec!["X-Api-Key".into()],
                fields: vec!["pin".into()],
                patterns: vec![r"sk_live_[a-z0-9]+".into()],
            },
            [7; 32],
        )
        .unwrap()
    }

    #[test]
    fn equal_secrets_get_equal_marks_and_keep_their_length() {
        let r = r();
        assert_eq!(r.mark("abc"), r.mark("abc"));
        assert_ne!(r.mark("abc"), r.mark("abd"));
        assert!(r.mark("abc").starts_with("[redacted len=3 h="));
        let other = Redactor::new(&Rules::default(), [8; 32]).unwrap();
        assert_ne!(r.mark("abc"), other.mark("abc"), "the hash is keyed");
    }

    #[test]
    fn headers_and_query_fields_by_name() {
        let r = r();
        let mut h = MultiMap::new();
        h.insert("authorization", ["Bearer t0p"]);
        h.insert("x-api-key", ["k"]);
        h.insert("accept", ["*/*"]);
        assert_eq!(r.headers(&mut h), 2);
        assert_eq!(h.get("accept").collect::<Vec<_>>(), ["*/*"]);
        assert!(h.get("authorization").collect::<Vec<_>>()[0].starts_with("[redacted len=10 "));
        let (uri, n) = r.uri("/login?user=ada&Password=hunter2&pin=1234");
        assert_eq!(n, 2);
        assert!(
            uri.starts_with("/login?user=ada&Password=%5Bredacted%20len%3D7%20h%3D"),
            "{uri}"
        );
        assert!(!uri.contains("hunter2") && !uri.contains("1234"), "{uri}");
    }

    fn text_body(text: &str) -> BodyCapture {
        BodyCapture::from_bytes(text.as_bytes(), text.len() as u64)
    }

    #[test]
    fn bodies_json_form_and_patterns() {
        let r = r();
        let mut json = text_body(
            r#"{"user":"ada","auth":{"password":"hunter2","token":123},"note":"card 4111 1111 1111 1111, key sk_live_abc"}"#,
        );
        assert_eq!(r.body(&mut json, Some("application/json")), 4);
        for secret in ["hunter2", "123", "4111", "sk_live_abc"] {
            assert!(
                !json.text().unwrap().contains(secret),
                "{secret}: {}",
                json.text().unwrap()
            );
        }
        assert!(json.text().unwrap().contains(r#""user":"ada""#));
        let mut form = text_body("user=ada&password=hunter2");
        assert_eq!(
            r.body(
                &mut form,
                Some("application/x-www-form-urlencoded; charset=utf-8")
            ),
            1
        );
        assert!(!form.text().unwrap().contains("hunter2"));
        // Digits that fail the Luhn check are not a card.
        let mut text = text_body("order 1234 5678 9012 3456 and Bearer abc.def");
        assert_eq!(r.body(&mut text, Some("text/plain")), 1);
        assert!(text.text().unwrap().contains("1234 5678 9012 3456"));
        assert!(!text.text().unwrap().contains("abc.def"));
    }

    #[test]
    fn url_headers_lose_their_query_secrets_and_json_stays_json() {
        let r = r();
        let mut h = MultiMap::new();
        h.insert("location", ["https://app/cb?access_token=abc&state=1"]);
        assert_eq!(r.headers(&mut h), 1);
        assert!(
            !h.get("location").collect::<Vec<_>>()[0].contains("abc")
                && h.get("location").collect::<Vec<_>>()[0].contains("state=1")
        );
        let mut json = text_body(r#"{"at":4111111111111111,"note":"Bearer abc.def"}"#);
        r.body(&mut json, Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(json.text().unwrap()).unwrap();
        assert_eq!(v["at"], 4111111111111111u64);
        assert!(
            !json.text().unwrap().contains("abc.def"),
            "{}",
            json.text().unwrap()
        );
    }

    #[test]
    fn luhn_knows_a_card() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("4111111111111112"));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = Redactor::new(
            &Rules {
                patterns: vec!["(".into()],
                ..Rules::default()
            },
            [0; 32],
        )
        .err()
        .unwrap();
        assert!(e.starts_with("`(` is not a regex"), "{e}");
    }
}
