//! `RedisPersistence::stats()`: what the counters say after real Paho traffic.

mod support;

use std::time::Duration;

use paho_mqtt::{self as mqtt, ClientPersistence};
use paho_mqtt_redis::RedisPersistence;
use support::mqtt::{client, connect, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn online_qos1_publishes_are_counted_call_by_call() {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let topic = support::unique_id("stats/topic");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let persistence = RedisPersistence::with_url(&redis.url()).expect("valid");
    let kept = persistence.monitor();
    let publisher = client(&broker.uri(), &support::unique_id("stats"), persistence);
    connect(&publisher, persistent_session());
    let before = kept.stats();

    let messages = 20u64;
    for n in 0..messages {
        publisher.publish(mqtt::Message::new(&topic, format!("m{n}"), 1)).wait_for(TIMEOUT).expect("acked");
    }
    assert_eq!(subscriber.collect(messages as usize, TIMEOUT, Duration::ZERO).len() as u64, messages);
    let after = kept.stats();
    let delta = after.since(&before);

    assert_eq!(delta.puts, 2 * messages, "command record and PUBLISH record: {after:?}");
    assert_eq!(delta.gets, messages, "one read-back per message");
    assert_eq!(delta.cache_hits, messages, "every read-back from memory");
    assert_eq!(delta.removes, 5 * messages, "the command record and four PUBLISH/PUBREL keys");
    assert_eq!(delta.index_hits, 3 * messages, "three of them never written");
    assert_eq!(delta.round_trips, 3 * messages, "{after:?}");
    assert!(delta.bytes_written > 0);
    assert_eq!(delta.unwritten_records, after.unwritten_records, "a gauge keeps the later value");
    assert_eq!(after.errors, 0);
    assert_eq!(after.reconnects, 0);
}

#[test]
fn a_restore_is_served_from_the_snapshot_and_failures_are_counted() {
    let mut redis = RedisServer::start();
    let mut first = RedisPersistence::with_url(&redis.url()).expect("valid");
    first.open("dev", "broker:1883").expect("open");
    // Records `open` restores (it sets aside what Paho could not).
    let (s1, c2) = (support::records::valid("s-1", b"abc"), support::records::valid("c-2", b"defg"));
    first.put("s-1", vec![&s1]).expect("put");
    first.put("c-2", vec![&c2]).expect("put");
    first.close().expect("close");

    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    assert_eq!(store.keys().expect("keys"), ["c-2", "s-1"]);
    assert_eq!(store.get("s-1").expect("get"), s1);
    assert_eq!(store.get("c-2").expect("get"), c2);
    assert!(!store.contains_key("s-1"), "present (inverted for Paho C)");
    let restored = store.stats();
    assert_eq!(
        (restored.round_trips, restored.snapshot_hits, restored.bytes_read),
        (1, 2, (s1.len() + c2.len()) as u64),
        "{restored:?}"
    );
    assert_eq!((restored.keys, restored.gets, restored.contains_key_calls), (1, 2, 1));

    redis.kill();
    // Only a key Paho never writes fails; Paho's records wait in memory.
    assert!(store.put("x-3", vec![b"x"]).is_err(), "a key Paho never writes fails while Redis is down");
    redis.restart();
    store.put("s-4", vec![b"y"]).expect("reconnects");
    let after = store.stats();
    assert_eq!(after.errors, 1, "{after:?}");
    assert_eq!(after.reconnects, 1, "{after:?}");
}
