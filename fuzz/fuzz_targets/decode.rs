//! Decoding any record under any key through the public API never panics,
//! what it decodes is consistent and printable, and an error says why. The
//! first input byte picks the key (see `split_input`); the seeds in
//! seeds/decode are the real Paho records of tests/fixtures/records, and
//! tests/decode_untrusted.rs runs the same checks on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/decode_untrusted.rs, which also uses `join_input`.
#[allow(dead_code)]
#[path = "../../tests/support/decode_checks.rs"]
mod decode_checks;

fuzz_target!(|data: &[u8]| {
    let (key, value) = decode_checks::split_input(data);
    decode_checks::check(&key, value);
});
