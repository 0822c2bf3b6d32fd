//! The application keeps a clone of the store it hands to Paho, and through
//! it sees the store Paho drives: the hash Paho opened, the records in it,
//! the records Redis has not taken yet, and the counters. Real Paho C,
//! mosquitto and redis-server (over TCP, where a stopped Redis makes records
//! wait in memory: over the Unix socket they would wait in the socket).

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::{RedisPersistence, BUDGET_COUNTER_FIELD};
use redis::Commands;
use support::mqtt::{assert_delivered, client, connect, persistent_session, store_hash, Subscriber};
use support::{unique_id, wait_until, Mosquitto, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);

fn fields(redis: &RedisServer, hash: &str) -> Vec<String> {
    let mut fields: Vec<String> = redis.connection().hkeys(hash).expect("HKEYS");
    fields.retain(|field| field != BUDGET_COUNTER_FIELD);
    fields.sort();
    fields
}

#[test]
fn the_application_sees_the_store_paho_drives_through_its_clone() {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let topic = unique_id("kept/topic");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let store = RedisPersistence::builder()
        .url(redis.url())
        .io_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .expect("valid");
    assert_eq!(store.hash_name(), None, "no store is open before Paho opens it");

    let client_id = unique_id("kept");
    let publisher = client(&broker.uri(), &client_id, store.clone());
    let hash =
        store.hash_name().expect("Paho opened the store through its clone when the client was created");
    assert_eq!(hash, store_hash(&client_id, &broker.uri()));

    // Offline: each queued QoS 1 publish is a command record in Redis, and
    // the kept clone answers for exactly the fields Redis holds.
    let message = |n: usize| mqtt::Message::new(&topic, format!("m{n}"), 1);
    let before = store.stats();
    let mut tokens: Vec<_> = (0..5).map(|n| publisher.publish(message(n))).collect();
    assert!(wait_until(TIMEOUT, || fields(&redis, &hash).len() == 5), "{:?}", fields(&redis, &hash));
    let queued = fields(&redis, &hash);
    for field in &queued {
        assert_eq!(store.contains(field).ok(), Some(true), "{field} is in Redis");
    }
    assert_eq!(store.contains("c-999999").ok(), Some(false));
    assert_eq!(store.stats().puts - before.puts, 5, "the clone counts Paho's calls");
    assert_eq!(store.unwritten(), 0);

    // Redis stops answering: Paho's next records wait in memory, and the
    // application can see that they are not crash-safe yet.
    let frozen = redis.freeze();
    tokens.extend((5..7).map(|n| publisher.publish(message(n))));
    assert!(wait_until(TIMEOUT, || store.unwritten() == 2), "unwritten: {}", store.unwritten());
    assert_eq!(store.stats().unwritten_records, 2);
    assert!(store.stats().timeouts >= 1, "{:?}", store.stats());
    frozen.thaw();
    // The next write, once Redis answers again, carries them.
    let mut n = 7;
    assert!(
        wait_until(TIMEOUT, || {
            tokens.push(publisher.publish(message(n)));
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
            store.unwritten() == 0
        }),
        "still unwritten: {}",
        store.unwritten()
    );
    assert_eq!(fields(&redis, &hash).len(), n, "every queued publish is in Redis");

    // Online: everything is delivered and acknowledged, and Paho's removals
    // show in the clone and in Redis alike.
    connect(&publisher, persistent_session());
    for token in tokens {
        token.wait_for(TIMEOUT).expect("acknowledged");
    }
    let expected: Vec<(String, i32)> = (0..n).map(|n| (format!("m{n}"), 1)).collect();
    assert_delivered(&subscriber.collect(n, TIMEOUT, Duration::from_millis(200)), &expected, "kept clone");
    assert!(wait_until(TIMEOUT, || fields(&redis, &hash).is_empty()), "{:?}", fields(&redis, &hash));
    for field in &queued {
        assert_eq!(store.contains(field).ok(), Some(false), "{field} was removed");
    }
    assert!(store.stats().removes >= n as u64, "{:?}", store.stats());

    // Paho closes the store when the client goes; the clone stays usable.
    publisher.disconnect(None).wait_for(TIMEOUT).expect("disconnect");
    drop(publisher);
    assert_eq!(store.hash_name(), None, "Paho closed the store");
    assert!(matches!(store.contains("c-1"), Err(paho_mqtt_redis::Error::NotOpen)));
}

#[test]
fn clones_are_one_store() {
    let store = RedisPersistence::with_url("redis://127.0.0.1:1/0").expect("valid");
    let clone = store.clone();
    assert!(
        std::ptr::eq(store.config(), clone.config()),
        "a clone shares the configuration, not a copy of it"
    );
    assert_eq!(format!("{store:?}"), format!("{clone:?}"));
}
