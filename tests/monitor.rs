//! The application keeps a `Monitor` of the store it hands to Paho, and
//! through it sees the store Paho drives: the hash Paho opened, the records in it,
//! the records Redis has not taken yet, and the counters. Real Paho C,
//! mosquitto and redis-server (over TCP, where a stopped Redis makes records
//! wait in memory: over the Unix socket they would wait in the socket).

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::admin::BUDGET_COUNTER_FIELD;
use paho_mqtt_redis::RedisPersistence;
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
fn the_application_sees_the_store_paho_drives_through_its_monitor() {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let topic = unique_id("kept/topic");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let store_for_paho = RedisPersistence::builder()
        .url(redis.url())
        .io_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .expect("valid");
    let store = store_for_paho.monitor();
    assert_eq!(store.hash_name(), None, "no store is open before Paho opens it");

    let client_id = unique_id("kept");
    let publisher = client(&broker.uri(), &client_id, store_for_paho);
    let hash = store.hash_name().expect("Paho opened the store when the client was created");
    assert_eq!(hash, store_hash(&client_id, &broker.uri()));

    // Offline: each queued QoS 1 publish is a command record in Redis, and
    // the monitor answers for exactly the fields Redis holds.
    let message = |n: usize| mqtt::Message::new(&topic, format!("m{n}"), 1);
    let before = store.stats();
    let mut tokens: Vec<_> = (0..5).map(|n| publisher.publish(message(n))).collect();
    assert!(wait_until(TIMEOUT, || fields(&redis, &hash).len() == 5), "{:?}", fields(&redis, &hash));
    let queued = fields(&redis, &hash);
    for field in &queued {
        assert_eq!(store.contains(field), Some(true), "{field} is in Redis");
    }
    assert_eq!(store.contains("c-999999"), Some(false));
    assert_eq!(store.stats().puts - before.puts, 5, "the monitor counts Paho's calls");
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
    // show in the monitor and in Redis alike.
    connect(&publisher, persistent_session());
    for token in tokens {
        token.wait_for(TIMEOUT).expect("acknowledged");
    }
    let expected: Vec<(String, i32)> = (0..n).map(|n| (format!("m{n}"), 1)).collect();
    assert_delivered(&subscriber.collect(n, TIMEOUT, Duration::from_millis(200)), &expected, "monitor");
    assert!(wait_until(TIMEOUT, || fields(&redis, &hash).is_empty()), "{:?}", fields(&redis, &hash));
    for field in &queued {
        assert_eq!(store.contains(field), Some(false), "{field} was removed");
    }
    assert!(store.stats().removes >= n as u64, "{:?}", store.stats());

    // Paho closes the store when the client goes; the monitor stays usable.
    publisher.disconnect(None).wait_for(TIMEOUT).expect("disconnect");
    drop(publisher);
    assert_eq!(store.hash_name(), None, "Paho closed the store");
    assert_eq!(store.contains("c-1"), None, "no store is open");
    assert!(store.stats().puts >= n as u64, "the last counters stay: {:?}", store.stats());
}

/// A monitor sees the calls made through the store, and answers plainly
/// where Paho's `contains_key` is inverted.
#[test]
fn a_monitor_is_the_store_seen_read_only() {
    let redis = RedisServer::start();
    let mut paho_side = RedisPersistence::with_url(&redis.url()).expect("valid");
    let monitor = paho_side.monitor();
    let copy = monitor.clone();
    assert!(std::ptr::eq(paho_side.config(), monitor.config()), "one configuration, not a copy");
    assert_eq!(monitor.contains("s-1"), None, "not open");
    paho_side.open("dev", "broker:1883").expect("open");
    paho_side.put("s-1", vec![b"x".as_slice()]).expect("put");
    assert_eq!(monitor.hash_name().as_deref(), Some("dev:broker:1883"));
    assert_eq!(copy.contains("s-1"), Some(true), "plain answer");
    assert_eq!(copy.contains("s-2"), Some(false));
    assert_eq!(monitor.stats().puts, 1);
    assert!(!paho_side.contains_key("s-1"), "inverted for Paho C: present");
    assert_eq!(monitor.stats().contains_key_calls, 1, "only Paho's calls are counted");
    paho_side.close().expect("close");
    assert_eq!(copy.hash_name(), None);
}

/// A monitor is for another thread: `Send`, `Sync` and `Clone`.
#[test]
fn a_monitor_crosses_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    let store = RedisPersistence::new();
    let monitor = store.monitor();
    shareable(&monitor);
    let seen = std::thread::spawn(move || monitor.hash_name()).join().expect("thread");
    assert_eq!(seen, None);
}

/// A store dropped while open (a client dropped halfway through its
/// creation) is closed: its lease is released, so a new store opens it at
/// once, with the records the first one wrote; its monitor outlives it.
#[test]
fn a_store_dropped_open_is_closed_and_can_be_opened_again() {
    let redis = RedisServer::start();
    let mut dropped = RedisPersistence::with_url(&redis.url()).expect("valid");
    let monitor = dropped.monitor();
    dropped.open("dev", "broker:1883").expect("open");
    dropped.put("s-1", vec![support::records::valid("s-1", b"x").as_slice()]).expect("put");
    drop(dropped);
    assert_eq!(monitor.hash_name(), None, "closed when dropped");
    assert_eq!(monitor.stats().puts, 1);
    let lease: Option<String> = redis.connection().get("dev:broker:1883:owner").expect("GET");
    assert_eq!(lease, None, "the lease is released");
    let mut next = RedisPersistence::with_url(&redis.url()).expect("valid");
    next.open("dev", "broker:1883").expect("open again at once");
    assert_eq!(next.keys().expect("keys"), ["s-1"]);
}
