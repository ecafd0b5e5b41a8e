//! What the redactor reads from a client or an upstream: a URI with its query, and a body
//! of a content type (form, JSON, text), as the first byte picks.
#![no_main]

use std::sync::OnceLock;

use heliosburn::redact::{Redactor, Rules};
use heliosburn::traffic::BodyCapture;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = [
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain",
    "application/octet-stream",
];

fuzz_target!(|data: &[u8]| {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    let r = REDACTOR.get_or_init(|| Redactor::new(&Rules::default(), [7; 32]).expect("defaults"));
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = r.uri(&text);
    let mut body = BodyCapture::from_bytes(rest, rest.len() as u64);
    let _ = r.body(&mut body, Some(TYPES[usize::from(pick) % TYPES.len()]));
});
