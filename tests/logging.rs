//! Failures are logged with the operation, the key and the cause, and never with a password.

mod support;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use support::RedisServer;

const PASSWORD: &str = "log-test-s3cret";

#[test]
fn failures_name_operation_key_and_cause_but_no_password() {
    support::log_capture::install();

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
    assert!(store.put("x-7", vec![b"payload"]).is_err(), "Redis down, a key Paho never writes");
    store.put("q-6", vec![b"message"]).expect("a queue record is kept in memory");
    store.put("c-8", vec![b"command"]).expect("a command record is kept in memory");
    store.put("s-9", vec![b"publish"]).expect("a PUBLISH record is kept in memory");

    let lines = support::log_capture::lines();
    let all = lines.join("\n");
    assert!(!all.contains(PASSWORD), "a password reached the log:\n{all}");
    let find = |needle: &str| lines.iter().any(|l| l.starts_with("WARN") && l.contains(needle));
    assert!(find("open failed") && find("authentication failed"), "open failure with its cause:\n{all}");
    assert!(find("get of key \"s-42\" failed") && find("not in the store"), "missing key:\n{all}");
    assert!(find("put of key \"x-7\" failed"), "put failure with its key:\n{all}");
    assert!(find("keeping record \"q-6\" in memory"), "queue record kept:\n{all}");
    assert!(find("keeping record \"c-8\" in memory"), "command record kept:\n{all}");
    assert!(find("keeping record \"s-9\" in memory"), "PUBLISH record kept:\n{all}");
}
