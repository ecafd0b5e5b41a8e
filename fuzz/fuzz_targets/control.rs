//! A message on the Redis control channel: decoded, and its command parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let _ = heliosburn::control::redis::decode(payload);
});
