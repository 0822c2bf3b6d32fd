//! A wrong or missing password fails clearly: `open` fails (it is the first
//! command sent), the log says it is about authentication and where, and the
//! password itself appears nowhere.

mod support;

use std::sync::Mutex;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::RedisServer;

const PASSWORD: &str = "right-pw-4711";
const WRONG: &str = "wrong-pw-0815";

/// The lines logged while `f` ran (tests of this file run one at a time: see `SERIAL`).
fn lines_logged_by(f: impl FnOnce()) -> Vec<String> {
    let start = support::log_capture::lines().len();
    f();
    support::log_capture::lines().split_off(start)
}

/// The log is global: tests that read it must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn redis_with_password() -> RedisServer {
    let redis = RedisServer::start();
    redis.require_password(PASSWORD);
    redis
}

fn assert_auth_failure_logged(lines: &[String], address: &str) {
    let all = lines.join("\n");
    assert!(!all.contains(PASSWORD) && !all.contains(WRONG), "a password reached the log:\n{all}");
    let auth = lines.iter().any(|l| {
        let lower = l.to_ascii_lowercase();
        l.starts_with("WARN")
            && (lower.contains("auth") || lower.contains("wrongpass"))
            && l.contains(address)
    });
    assert!(auth, "a WARN line names authentication and {address}:\n{all}");
}

#[test]
fn a_wrong_password_fails_open_with_a_clear_log_line() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    support::log_capture::install();
    let redis = redis_with_password();
    let address = format!("127.0.0.1:{}", redis.port());
    let mut store = RedisPersistence::with_url(&format!("redis://:{WRONG}@{address}/0")).expect("valid");
    let lines = lines_logged_by(|| {
        assert!(store.open("dev", "broker:1883").is_err(), "open with a wrong password");
    });
    assert!(lines.iter().any(|l| l.contains("open failed")), "{lines:?}");
    assert_auth_failure_logged(&lines, &address);
    assert_eq!(store.hash_name(), None, "a failed open leaves the store closed");
    let shown = format!("{store:?}");
    assert!(!shown.contains(WRONG), "Debug of the store shows the password: {shown}");

    let mut right = RedisPersistence::with_url(&format!("redis://:{PASSWORD}@{address}/0")).expect("valid");
    right.open("dev", "broker:1883").expect("the right password opens");
}

#[test]
fn a_wrong_acl_password_fails_open_with_a_clear_log_line() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    support::log_capture::install();
    let redis = RedisServer::start();
    redis.add_user("mqtt", PASSWORD, &["~*", "+@all"]);
    let address = format!("127.0.0.1:{}", redis.port());
    let mut store = RedisPersistence::with_url(&format!("redis://mqtt:{WRONG}@{address}/0")).expect("valid");
    let lines = lines_logged_by(|| {
        assert!(store.open("dev", "broker:1883").is_err(), "open with a wrong ACL password");
    });
    assert_auth_failure_logged(&lines, &address);
}

#[test]
fn a_missing_password_fails_open_with_noauth_in_the_log() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    support::log_capture::install();
    let redis = redis_with_password();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    // Connecting sends nothing without a password, but `open` reads the hash:
    // that first command is the one Redis refuses.
    let lines = lines_logged_by(|| {
        let error = store.open("dev", "broker:1883").expect_err("open without a password");
        assert!(matches!(error, paho_mqtt::Error::PersistenceError), "{error:?}");
    });
    let all = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.starts_with("WARN") && l.contains("open failed") && l.contains("NOAUTH")),
        "a WARN line says open failed because Redis wants authentication:\n{all}"
    );
    assert_eq!(store.hash_name(), None, "a failed open leaves the store closed");
    assert!(store.put("s-1", vec![b"x"]).is_err(), "put after the failed open");
    assert_eq!(store.monitor().contains("s-1"), None, "not open");
}
