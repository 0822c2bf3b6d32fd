//! What must hold for any key and value given to the decoder, however hostile:
//! the fuzz target `decode` (fuzz/fuzz_targets/decode.rs) and the stable test
//! tests/decode_untrusted.rs both run [`check`]. Each includes this file with
//! `#[path]`, so there is one definition of "decodes safely".

use paho_mqtt_redis::decode::{decode, parse_key, preview, Content, Kind, PREVIEW_CHARS};

/// The key prefixes, in the order the first input byte picks them.
pub const PREFIXES: [&str; 10] = ["s-", "s5-", "sc-", "sc5-", "r-", "r5-", "c-", "c5-", "q-", "q5-"];

/// The first byte's value (mod 11) that takes the key from the input itself.
pub const FREE_KEY: u8 = 10;

/// Splits a fuzz input into a key and a value. The first byte `b` picks the
/// key: for `b % 11` below 10, prefix `PREFIXES[b % 11]` and number `b / 11`,
/// the rest being the value; for `b % 11 == 10`, the key is the input up to
/// the first NUL (invalid UTF-8 replaced) and the value what follows it.
pub fn split_input(data: &[u8]) -> (String, &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return (String::new(), data) };
    match PREFIXES.get(usize::from(first % 11)) {
        Some(prefix) => (format!("{prefix}{}", first / 11), rest),
        None => {
            let mut parts = rest.splitn(2, |&b| b == 0);
            let key = parts.next().unwrap_or_default();
            (String::from_utf8_lossy(key).into_owned(), parts.next().unwrap_or_default())
        }
    }
}

/// The input that [`split_input`] turns into `key` (which holds no NUL) and
/// `value`: one byte for the key where one names it, else the key and a NUL.
pub fn join_input(key: &str, value: &[u8]) -> Vec<u8> {
    let mut input =
        match (0..=u8::MAX).find(|&first| first % 11 != FREE_KEY && split_input(&[first]).0 == key) {
            Some(first) => vec![first],
            None => [&[FREE_KEY], key.as_bytes(), &[0]].concat(),
        };
    input.extend_from_slice(value);
    input
}

/// Decodes `value` as the record `key` and checks that the answer is
/// consistent, shows nothing raw, and that an error says what is wrong.
/// Panics (the failure, for libFuzzer and for the test) when it is not.
pub fn check(key: &str, value: &[u8]) {
    let parsed = parse_key(key);
    match decode(key, value) {
        Ok(record) => {
            let Ok((kind, version, number)) = parsed else {
                panic!("{key:?} decoded although parse_key rejects it: {parsed:?}")
            };
            assert_eq!((record.kind, record.version, record.number), (kind, version, number), "{key:?}");
            assert_eq!(record.key, key);
            assert_eq!(record.size, value.len(), "{key:?}");
            let fits = |len: usize| len <= value.len();
            match (&record.content, record.kind) {
                (Content::Publish(p), Kind::PublishSent | Kind::PublishReceived | Kind::QueuedMessage) => {
                    assert!(p.qos <= 2 && fits(p.payload.len()), "{key:?}: {p:?}");
                    if record.kind == Kind::PublishReceived {
                        assert_eq!(p.qos, 2, "{key:?}: Paho stores QoS 2 inbound messages only");
                    }
                }
                (Content::Publish(p), Kind::Command) => assert!(p.qos <= 2 && fits(p.payload.len())),
                (Content::Pubrel(_), Kind::PubrelSent) => {}
                (Content::Subscribe(s), Kind::Command) => assert!(fits(s.filters.len()), "{key:?}"),
                (Content::Unsubscribe(u), Kind::Command) => assert!(fits(u.filters.len()), "{key:?}"),
                (content, kind) => panic!("{key:?}: a {kind:?} record decoded as {content:?}"),
            }
            let shown = record.to_string();
            assert!(shown.starts_with(key), "{key:?} shown as {shown:?}");
            assert_printable(&shown, key);
            // The same input decodes the same way every time.
            assert_eq!(decode(key, value).as_ref(), Ok(&record), "{key:?}");
        }
        Err(error) => {
            assert_eq!(error.key, key);
            assert!(!error.reason.trim().is_empty(), "{key:?}: an error without a reason");
            let shown = error.to_string();
            assert!(shown.contains(&error.reason) && shown.contains(key), "{key:?}: {shown:?}");
            // The reason is written by the decoder; what it quotes from the input is escaped.
            assert_printable(&error.reason, key);
            if let Err(reason) = parsed {
                assert_eq!(error.reason, reason, "{key:?}: a bad key is the reason given");
            }
        }
    }
    for max_chars in [0, 1, 2, 3, 7, PREVIEW_CHARS] {
        let shown = preview(value, max_chars);
        // Text: each character escapes to at most 10 (`\u{10ffff}`), plus
        // quotes and `…`; hex: `hex:`, two digits a byte and `…`.
        let bound = 10 * max_chars + 5;
        assert!(shown.chars().count() <= bound, "preview of {max_chars} is {} chars", shown.chars().count());
        assert_printable(&shown, key);
    }
}

/// A line for a terminal: no control character (no newline, no escape sequence).
fn assert_printable(text: &str, key: &str) {
    assert!(!text.chars().any(char::is_control), "{key:?}: control character in {text:?}");
}
