//! URL and option parsing through the public API never panics, and an error
//! never repeats a password given in the URL.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use paho_mqtt_redis::RedisPersistence;

fuzz_target!(|data: &[u8]| {
    // The first 16 bytes pick the timeouts; the rest is the URL, then after a
    // NUL the key prefix, client id and server URI.
    let (head, rest) = data.split_at(data.len().min(16));
    let mut nanos = [0u8; 16];
    nanos[..head.len()].copy_from_slice(head);
    let io = u64::from_le_bytes(nanos[..8].try_into().unwrap_or_default());
    let connect = u64::from_le_bytes(nanos[8..].try_into().unwrap_or_default());
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let url = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default();
    let client_id = parts.next().unwrap_or_default();
    let server_uri = parts.next().unwrap_or_default();

    if let Err(error) = RedisPersistence::with_url(url) {
        check_no_secret(url, &text, &format!("{error} {error:?}"));
    }
    // Timeouts across the whole range: nanoseconds, and seconds up to u64::MAX.
    for (io, connect) in [
        (Duration::from_nanos(io), Duration::from_nanos(connect)),
        (Duration::from_secs(io), Duration::from_secs(connect)),
    ] {
        let built = RedisPersistence::builder()
            .url(url)
            .key_prefix(prefix)
            .io_timeout(io)
            .connect_timeout(connect)
            .build();
        match built {
            Ok(store) => {
                let config = store.config();
                let shown = format!("{store:?} {config:?} {}", config.address());
                check_no_secret(url, &text, &shown);
                let _ = config.hash_name(client_id, server_uri);
                let _ = (config.db(), config.key_prefix(), store.hash_name());
            }
            Err(error) => check_no_secret(url, &text, &format!("{error} {error:?}")),
        }
    }
});

/// If `url` has a distinctive password, `shown` must not contain it.
fn check_no_secret(url: &str, input: &str, shown: &str) {
    let Some((scheme, after_scheme)) = url.trim().split_once("://") else { return };
    // Only TCP URLs carry a password in their authority (Unix ones use `?pass=`).
    if !["redis", "rediss", "valkey", "valkeys"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return;
    }
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return };
    let Some((_, password)) = userinfo.split_once(':') else { return };
    // Short passwords occur in any text by chance, and one repeated elsewhere in
    // the input (the prefix, say) is shown as that part: only distinctive ones are checked.
    if password.len() >= 12
        && password.chars().all(|c| c.is_ascii_alphanumeric())
        && input.matches(password).count() == 1
    {
        assert!(!shown.contains(password), "password shown: {shown}");
    }
}
