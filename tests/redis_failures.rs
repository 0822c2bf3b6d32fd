//! Redis going away: calls fail with an error (never a panic or abort), and
//! the first call after Redis is back succeeds.

mod support;

use std::time::Duration;

use paho_mqtt::{self as mqtt, ClientPersistence};
use paho_mqtt_redis::RedisPersistence;
use support::mqtt::{client, connect, payloads, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

fn short_timeouts(url: &str) -> RedisPersistence {
    RedisPersistence::builder()
        .url(url)
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_millis(500))
        .build()
        .expect("valid options")
}

#[test]
fn open_fails_clearly_when_nothing_listens() {
    let port = support::free_port();
    let mut store = RedisPersistence::with_url(&format!("redis://127.0.0.1:{port}")).expect("valid");
    assert!(store.open("dev", "broker:1883").is_err());
    assert_eq!(store.hash_name(), None, "a failed open leaves the store closed");
    let error = store.contains("s-1").expect_err("not open");
    assert!(error.to_string().contains("not open"), "{error}");
}

#[test]
fn calls_fail_while_redis_is_down_and_work_once_it_is_back() {
    support::init_logging();
    let mut redis = RedisServer::start();
    let mut store = short_timeouts(&redis.url());
    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![b"before"]).expect("put");

    redis.kill();
    assert!(store.put("s-2", vec![b"gap"]).is_err(), "put while Redis is down");
    assert!(store.get("s-1").is_err(), "get while Redis is down");
    assert!(store.keys().is_err(), "keys while Redis is down");
    assert!(store.remove("s-1").is_err(), "remove while Redis is down");
    assert!(store.clear().is_err(), "clear while Redis is down");
    assert!(store.contains("s-1").is_err(), "contains while Redis is down");
    assert!(store.contains_key("sc-1"), "contains_key while Redis is down answers 'absent' to Paho C");

    redis.restart(); // empty: RAM-only Redis loses its data with the process
    store.put("s-3", vec![b"after"]).expect("the first call after the restart reconnects");
    assert_eq!(store.get("s-3").expect("get"), b"after");
    assert_eq!(store.keys().expect("keys"), ["s-3"]);
}

#[test]
fn a_dropped_connection_is_reestablished_within_the_call() {
    let redis = RedisServer::start();
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![b"kept"]).expect("put");
    let killed: usize = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut redis.connection())
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "our store's connection was the one killed");
    assert_eq!(store.get("s-1").expect("get reconnects once and succeeds"), b"kept");
}

/// Paho C 1.3.16 cannot take a failed `put` of a queued publish (`c-` key):
/// `MQTTAsync_addCommand` returns the error but leaves the command queued, and
/// paho-mqtt frees its token, so the process later aborts. This test therefore
/// restarts Redis between publishes, not during one; see the README's
/// "Known limitations".
#[test]
fn a_publisher_keeps_working_after_a_redis_restart() {
    support::init_logging();
    let broker = Mosquitto::start();
    let mut redis = RedisServer::start();
    let topic = support::unique_id("failures/topic");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let publisher = client(&broker.uri(), &support::unique_id("survivor"), short_timeouts(&redis.url()));
    connect(&publisher, persistent_session());
    let publish = |text: &str| {
        publisher
            .try_publish(mqtt::Message::new(&topic, text, 1))
            .and_then(|token| token.wait_for(Duration::from_secs(10)).map(drop))
    };
    publish("before").expect("publish with Redis up");

    redis.restart();
    publish("after").expect("the first publish after the restart reconnects to Redis");
    let received = subscriber.collect(2, Duration::from_secs(10), Duration::from_millis(500));
    assert_eq!(payloads(&received), ["after", "before"]);
}
