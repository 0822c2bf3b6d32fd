//! Failures are logged with the operation, the key and the cause, and never with a password.

mod support;

use std::sync::Mutex;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::RedisServer;

const PASSWORD: &str = "log-test-s3cret";

/// Collects every log line of this test binary.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn captured() -> Vec<String> {
    CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[test]
fn failures_name_operation_key_and_cause_but_no_password() {
    log::set_logger(&CAPTURE).expect("the only logger of this binary");
    log::set_max_level(log::LevelFilter::Trace);

    let mut redis = RedisServer::start();
    let mut admin = redis.connection();
    let () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(PASSWORD).query(&mut admin).expect("set");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port());

    let mut wrong =
        RedisPersistence::with_url(&format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}/0", redis.port()))
            .expect("valid");
    assert!(wrong.open("dev", "broker:1883").is_err(), "wrong password");

    let mut store = RedisPersistence::with_url(&url).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    assert!(store.get("s-42").is_err(), "missing key");
    redis.kill();
    assert!(store.put("s-7", vec![b"payload"]).is_err(), "Redis down");
    store.put("c-8", vec![b"command"]).expect("a command record is kept in memory, never refused");

    let lines = captured();
    let all = lines.join("\n");
    assert!(!all.contains(PASSWORD), "a password reached the log:\n{all}");
    let find = |needle: &str| lines.iter().any(|l| l.starts_with("WARN") && l.contains(needle));
    assert!(find("open failed") && find("authentication failed"), "open failure with its cause:\n{all}");
    assert!(find("get of key \"s-42\" failed") && find("not in the store"), "missing key:\n{all}");
    assert!(find("put of key \"s-7\" failed"), "put failure with its key:\n{all}");
    assert!(find("keeping command record \"c-8\" in memory"), "command record kept:\n{all}");
}
