//! Paho turns every failure of the store into a bare `PersistenceError`, so
//! `create_client()` says nothing of why. The clone the application keeps
//! does: `Monitor::last_error`. Real Paho C and redis-server.

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::{Error, RedisPersistence};
use support::mqtt::create_options;
use support::{free_port, unique_id, RedisServer};

fn store(url: &str) -> RedisPersistence {
    RedisPersistence::builder()
        .url(url)
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_millis(500))
        .build()
        .expect("valid")
}

#[test]
fn a_client_whose_redis_is_not_running_fails_and_its_monitor_says_why() {
    support::init_logging();
    // Nothing listens on this port.
    let address = format!("127.0.0.1:{}", free_port());
    let store = store(&format!("redis://{address}/0"));
    let kept = store.monitor();
    assert!(kept.last_error().is_none(), "no call has failed yet");

    let created = mqtt::AsyncClient::new(create_options("tcp://127.0.0.1:1883", &unique_id("down"), store));
    let error = created.err().expect("no client without its store");
    assert!(matches!(error, mqtt::Error::PersistenceError), "Paho says only {error:?}");

    let cause = kept.last_error().expect("the monitor has the cause");
    assert!(matches!(*cause, Error::Connect { .. }), "{cause:?}");
    let shown = cause.to_string();
    assert!(shown.contains(&address), "the cause names where Redis was looked for: {shown}");
    assert_eq!(kept.stats().errors, 1, "{:?}", kept.stats());
}

#[test]
fn a_second_client_on_a_store_in_use_fails_and_its_monitor_says_in_use() {
    support::init_logging();
    let redis = RedisServer::start();
    let client_id = unique_id("in-use");
    let server_uri = "tcp://127.0.0.1:1883";
    let first_store = store(&redis.url());
    let first = first_store.monitor();
    let _owner = mqtt::AsyncClient::new(create_options(server_uri, &client_id, first_store))
        .expect("the first client opens the store");
    assert!(first.last_error().is_none(), "a successful open leaves no error: {:?}", first.last_error());

    let second_store = store(&redis.url());
    let second = second_store.monitor();
    let created = mqtt::AsyncClient::new(create_options(server_uri, &client_id, second_store));
    assert!(matches!(created, Err(mqtt::Error::PersistenceError)), "the second client is refused");
    let cause = second.last_error().expect("the monitor has the cause");
    assert!(matches!(*cause, Error::InUse { .. }), "{cause:?}");
    assert!(first.last_error().is_none(), "the first store did not fail: {:?}", first.last_error());
}

#[test]
fn a_later_failure_replaces_the_cause_and_a_success_keeps_it() {
    support::init_logging();
    let redis = RedisServer::start();
    let mut store = store(&redis.url());
    let kept = store.monitor();

    // Before `open`, Paho's calls fail with NotOpen.
    assert!(store.keys().is_err());
    assert!(matches!(*kept.last_error().expect("keys failed"), Error::NotOpen));

    store.open("dev", "tcp://broker:1883").expect("open");
    assert!(matches!(*kept.last_error().expect("kept"), Error::NotOpen), "a success does not clear it");

    assert!(store.get("s-1").is_err(), "no such record");
    let cause = kept.last_error().expect("get failed");
    assert!(matches!(*cause, Error::KeyNotFound { .. }), "{cause:?}");
    assert_eq!(kept.stats().errors, 2);
    store.close().expect("close");
}
