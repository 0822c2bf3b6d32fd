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
    assert_eq!(store.monitor().contains("s-1"), None, "not open");
}

#[test]
fn calls_that_need_redis_fail_while_it_is_down_and_work_once_it_is_back() {
    support::init_logging();
    let mut redis = RedisServer::start();
    let mut store = short_timeouts(&redis.url());
    store.open("dev", "broker:1883").expect("open");
    store.put("s-1", vec![b"before"]).expect("put");

    redis.kill();
    assert!(store.put("x-2", vec![b"gap"]).is_err(), "put of a key Paho never writes while Redis is down");
    assert!(store.get("s-1").is_err(), "get while Redis is down");
    assert!(store.clear().is_err(), "clear while Redis is down");
    // The store is the hash's only writer: its index answers without Redis.
    assert_eq!(store.keys().expect("keys from the index"), ["s-1"], "a failed put or clear changes nothing");
    assert!(store.monitor().contains("s-1").expect("contains from the index"));
    assert!(!store.contains_key("s-1"), "inverted for Paho C: present");
    // A remove succeeds locally and is owed to Redis (Paho ignores failed removes).
    store.remove("s-1").expect("remove while Redis is down");
    assert!(store.keys().expect("keys").is_empty());
    // A command record is kept in memory: Paho C cannot take a failed put of one.
    store.put("c-1", vec![b"queued"]).expect("command record kept in memory");
    assert_eq!(store.get("c-1").expect("read back from memory"), b"queued");
    // So is a PUBLISH record: Paho C sends the packet whatever the put returned.
    store.put("s-2", vec![b"sent"]).expect("PUBLISH record kept in memory");
    assert_eq!(store.unwritten(), 2);
    assert_eq!(store.stats().unwritten_records, 2, "the gauge an application can watch");

    redis.restart(); // empty: RAM-only Redis loses its data with the process
    store.put("s-3", vec![b"after"]).expect("the first call after the restart reconnects");
    assert_eq!(store.get("s-3").expect("get"), b"after");
    assert_eq!(store.unwritten(), 0, "the kept records went to Redis with that put");
    assert_eq!(store.stats().unwritten_records, 0);
    assert_eq!(store.get("s-2").expect("get from Redis"), b"sent");
    assert_eq!(store.keys().expect("keys"), ["s-3", "s-2", "c-1"]);
    let mut in_redis: Vec<String> =
        redis::cmd("HKEYS").arg("dev:broker:1883").query(&mut redis.connection()).expect("HKEYS");
    in_redis.sort();
    assert_eq!(in_redis, ["c-1", "s-2", "s-3"], "Redis holds what the index says");
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
    assert_eq!(killed, 2, "our store's connections were the ones killed: its own and its lease's");
    assert_eq!(store.get("s-1").expect("get reconnects once and succeeds"), b"kept");
}

/// Publishes while Redis is down are accepted: Paho C 1.3.16 cannot take a
/// failed `put` of a queued publish (`c-` key; it keeps the command queued
/// while paho-mqtt frees its token, and the process crashes), so the store
/// keeps such records in memory and writes them once Redis is back.
#[test]
fn a_publisher_keeps_working_while_redis_is_down_and_after_it_restarts() {
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
    redis.kill();
    publish("during").expect("publish while Redis is down");
    redis.restart();
    publish("after").expect("the first publish after the restart reconnects to Redis");
    let received = subscriber.collect(3, Duration::from_secs(10), Duration::from_millis(500));
    assert_eq!(payloads(&received), ["after", "before", "during"]);
}

/// Paho opens a store once, but an `open` on an open store must not drop
/// what the first one still owes Redis: it is written before the hash is read
/// again.
#[test]
fn open_on_an_open_store_writes_what_waited_in_memory_first() {
    support::init_logging();
    let mut redis = RedisServer::start();
    let mut store = short_timeouts(&redis.url());
    store.open("dev", "broker:1883").expect("open");
    redis.kill();
    let record = support::records::valid("c-1", b"queued while Redis was down");
    store.put("c-1", vec![&record]).expect("kept in memory");
    assert_eq!(store.unwritten(), 1);
    redis.restart();
    store.open("dev", "broker:1883").expect("open again");
    assert_eq!(store.keys().expect("keys"), ["c-1"], "the kept record was written, then read back");
    assert_eq!(store.get("c-1").expect("get"), record);
    assert_eq!(store.unwritten(), 0);
}
