//! The check `open` runs on every record before Paho C's restore sees it
//! (`paho::restore::at_open`, reached through the hidden `fuzz_at_open` of
//! feature `decode`) never panics, a quarantine says why, and a record it
//! rewrites into the client's version is one it then restores as it is.
//! The first input byte picks the key as for the `decode` target, whose
//! seeds (seeds/decode, real Paho records) this target replays too.
//!
//! "Restore implies the decoder accepts it" is not checked: the decoder is
//! stricter than Paho C (it refuses trailing bytes Paho ignores, such as
//! those after an MQTT 3 PUBREL's message id), so it would not hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paho_mqtt_redis::{fuzz_at_open, MqttVersion};

#[allow(dead_code)]
#[path = "../../tests/support/decode_checks.rs"]
mod decode_checks;

fuzz_target!(|data: &[u8]| {
    let (key, value) = decode_checks::split_input(data);
    for client in [MqttVersion::V3, MqttVersion::V5] {
        match fuzz_at_open(&key, value, client) {
            Ok(None) => {}
            Ok(Some((new_key, new_value))) => {
                assert_ne!(new_key, key, "a rewrite changes the key's version");
                assert_eq!(
                    fuzz_at_open(&new_key, &new_value, client),
                    Ok(None),
                    "{key} rewritten as {new_key} is not restored as it is"
                );
            }
            Err(reason) => assert!(!reason.is_empty(), "{key}: a quarantine without a reason"),
        }
    }
});
