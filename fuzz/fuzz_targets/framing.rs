//! Bytes a client sends on a connection, followed by the framing scanner in pieces of
//! the size the first byte gives (as reads would cut them).
#![no_main]

use std::sync::Arc;

use heliosburn::proxy::framing::{Scanner, WireMarks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, wire)) = data.split_first() else {
        return;
    };
    let marks = Arc::new(WireMarks::default());
    let mut scanner = Scanner::new(16 * 1024, marks.clone());
    for chunk in wire.chunks(usize::from(piece).max(1)) {
        scanner.feed(chunk);
    }
    for _ in 0..4 {
        let _ = marks.next_is_ambiguous();
    }
});
