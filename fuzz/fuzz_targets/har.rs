//! A HAR document as `recording import` reads it: every entry is parsed and handed on,
//! or the reading stops with an error naming the entry; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = heliosburn::har::read(data, "fuzz", |doc| {
        // What playback and replay then read of it.
        if let Some(b) = &doc.request.body {
            let _ = b.wire();
            let mut cut = b.clone();
            cut.cut(b.bytes.len() / 2);
            let _ = cut.wire();
        }
        Ok(())
    });
});
