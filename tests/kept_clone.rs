//! The application keeps a clone of the store it hands to Paho, and through
//! it sees the store Paho drives: the hash Paho opened, the records in it,
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

/// Every clone sees the calls made through another.
#[test]
fn clones_are_one_store() {
    let redis = RedisServer::start();
    let mut paho_side = RedisPersistence::with_url(&redis.url()).expect("valid");
    let kept = paho_side.clone();
    assert!(std::ptr::eq(paho_side.config(), kept.config()), "one configuration, not a copy");
    paho_side.open("dev", "broker:1883").expect("open");
    paho_side.put("s-1", vec![b"x".as_slice()]).expect("put");
    assert_eq!(kept.hash_name().as_deref(), Some("dev:broker:1883"));
    assert_eq!(kept.contains("s-1").ok(), Some(true));
    assert_eq!(kept.stats().puts, 1);
    assert!(!paho_side.contains_key("s-1"), "inverted for Paho C: present");
    assert_eq!(kept.stats().contains_key_calls, 1);
    paho_side.close().expect("close");
    assert_eq!(kept.hash_name(), None);
}

/// Paho calls through another clone than the one that opened the store
/// fail, and `close` through it does nothing: a second Paho client given a
/// clone of a store in use is refused, and the first one's session is intact.
#[test]
fn a_second_paho_client_cannot_take_over_a_store_in_use() {
    support::init_logging();
    let redis = RedisServer::start();
    let port = support::free_port(); // no broker: messages stay queued
    let server_uri = format!("tcp://127.0.0.1:{port}");
    let store = RedisPersistence::with_url(&redis.url()).expect("valid");
    let first = client(&server_uri, "first", store.clone());
    let hash = store.hash_name().expect("open");
    let created = mqtt::AsyncClient::new(support::mqtt::create_options(&server_uri, "second", store.clone()));
    assert!(created.is_err(), "a second client on one store is refused");
    assert_eq!(store.hash_name().as_deref(), Some(hash.as_str()), "the first client's store is still open");

    let mut other = store.clone();
    let refused = other.put("s-1", vec![b"x".as_slice()]).expect_err("not the clone that opened it");
    assert!(matches!(refused, mqtt::Error::PersistenceError), "{refused:?}");
    other.close().expect("close is a no-op");
    first.publish(mqtt::Message::new("kept/second", "still mine", 1));
    assert!(wait_until(TIMEOUT, || fields(&redis, &hash).len() == 1), "{:?}", fields(&redis, &hash));
    assert_eq!(fields(&redis, &format!("second:127.0.0.1:{port}")), Vec::<String>::new());
    drop(first);
    assert_eq!(store.hash_name(), None, "the first client closed its store");
}

/// A clone dropped with its store open leaves the store to the others: one
/// may open it again (and the first one's records are still there).
#[test]
fn a_store_left_open_by_a_dropped_clone_can_be_opened_again() {
    let redis = RedisServer::start();
    let kept = RedisPersistence::with_url(&redis.url()).expect("valid");
    let mut dropped = kept.clone();
    dropped.open("dev", "broker:1883").expect("open");
    dropped.put("s-1", vec![support::records::valid("s-1", b"x").as_slice()]).expect("put");
    drop(dropped);
    let mut next = kept.clone();
    next.open("dev", "broker:1883").expect("open again through another clone");
    assert_eq!(next.keys().expect("keys"), ["s-1"]);
    assert_eq!(kept.hash_name().as_deref(), Some("dev:broker:1883"));
}
