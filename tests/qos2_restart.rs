//! QoS 2 after a restart, end to end against mosquitto.
//!
//! Paho C decides how to resume an outbound QoS 2 message from `contains_key`:
//! if the PUBREL record (`sc-N`) is present it sends PUBREL, otherwise it
//! re-sends the PUBLISH. paho-mqtt 0.14 inverts the answer on its way to C, so
//! `RedisPersistence` inverts it back. These tests show both the right outcome
//! and, with a store that answers the plain truth, the wrong one: if paho-mqtt
//! ever fixes the conversion, the `naive_*` tests fail and the inversion in
//! `RedisPersistence::contains_key` must go.

mod support;

use std::time::Duration;

use paho_mqtt::{self as mqtt, ClientPersistence};
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{client, connect, persistent_session, BlackHoleBroker, Subscriber};
use support::{Mosquitto, RedisServer};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep listening for a duplicate after the expected messages arrived.
const QUIET: Duration = Duration::from_millis(1500);

/// `RedisPersistence`, optionally misbehaving in one of the two ways these tests need.
struct TestStore {
    inner: RedisPersistence,
    /// Ignore removes of `s-`/`sc-` records: as if the process died right after
    /// the broker's PUBCOMP arrived, before Paho deleted the exchange's records.
    keep_exchange_records: bool,
    /// Answer `contains_key` with the plain truth, as a naive implementation
    /// (and paho-mqtt-redis 0.3) does.
    naive_contains_key: bool,
}

impl TestStore {
    fn new(redis_url: &str) -> Self {
        Self {
            inner: RedisPersistence::with_url(redis_url).expect("valid url"),
            keep_exchange_records: false,
            naive_contains_key: false,
        }
    }
}

impl ClientPersistence for TestStore {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        self.inner.open(client_id, server_uri)
    }
    fn close(&mut self) -> mqtt::Result<()> {
        self.inner.close()
    }
    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        self.inner.put(key, buffers)
    }
    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        if self.keep_exchange_records && (key.starts_with("s-") || key.starts_with("sc-")) {
            return Ok(());
        }
        self.inner.remove(key)
    }
    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.inner.keys()
    }
    fn clear(&mut self) -> mqtt::Result<()> {
        self.inner.clear()
    }
    fn contains_key(&mut self, key: &str) -> bool {
        if self.naive_contains_key {
            self.inner.monitor().contains(key).unwrap_or(false)
        } else {
            self.inner.contains_key(key)
        }
    }
}

/// The PUBLISH record `s-N` of a store holding exactly one QoS 2 exchange,
/// and `sc-N` when `with_pubrel`; `None` when it holds anything else.
///
/// N is whatever message id Paho assigned: usually 1, but Paho C skips an id
/// equal to the token of any command still queued by any client of the
/// process (its command list is global), so tests running alongside, or a
/// slower machine, can move it.
fn single_exchange(fields: &[String], with_pubrel: bool) -> Option<String> {
    let publish = fields.first()?;
    let id = publish.strip_prefix("s-")?;
    let expected =
        if with_pubrel { vec![publish.clone(), format!("sc-{id}")] } else { vec![publish.clone()] };
    (fields == expected.as_slice()).then(|| publish.clone())
}

/// A broker, a Redis, and a subscriber on the topic a client id publishes to.
/// (Fields drop in order: the subscriber disconnects before the broker dies.)
struct Scene {
    subscriber: Subscriber,
    broker: Mosquitto,
    redis: RedisServer,
    topic: String,
    client_id: String,
}

impl Scene {
    fn new(name: &str) -> Self {
        support::init_logging();
        let broker = Mosquitto::start();
        let topic = support::unique_id(&format!("qos2/{name}"));
        Self {
            subscriber: Subscriber::start(&broker.uri(), &topic),
            broker,
            redis: RedisServer::start(),
            topic,
            client_id: support::unique_id(name),
        }
    }

    /// The store's hash for the real broker.
    fn hash(&self) -> String {
        support::mqtt::store_hash(&self.client_id, &self.broker.uri())
    }

    /// Starts the client again from what the store holds, waits until Paho has
    /// finished and removed the records, and returns how many copies the
    /// subscriber got after the restart.
    fn restart_and_count_deliveries(&self, naive_contains_key: bool) -> usize {
        let mut store = TestStore::new(&self.redis.url());
        store.naive_contains_key = naive_contains_key;
        let restored = client(&self.broker.uri(), &self.client_id, store);
        connect(&restored, persistent_session());
        let hash = self.hash();
        let settled = support::wait_until(DELIVERY_TIMEOUT, || self.redis.fields(&hash).is_empty());
        assert!(settled, "the restored message finishes and its records go: {:?}", self.redis.fields(&hash));
        self.subscriber.collect(usize::MAX, QUIET, QUIET).len()
    }
}

/// Case A: the broker completed the exchange (it got PUBREL and sent PUBCOMP),
/// but the store still holds the PUBLISH and PUBREL records.
fn completed_exchange_then_restart(naive_contains_key: bool) -> usize {
    let scene = Scene::new("qos2-completed");
    let mut store = TestStore::new(&scene.redis.url());
    store.keep_exchange_records = true;
    let first = client(&scene.broker.uri(), &scene.client_id, store);
    connect(&first, persistent_session());
    first
        .publish(mqtt::Message::new(&scene.topic, "exactly once", 2))
        .wait_for(DELIVERY_TIMEOUT)
        .expect("QoS 2 publish completes (PUBCOMP received)");
    assert_eq!(scene.subscriber.collect(1, DELIVERY_TIMEOUT, Duration::ZERO).len(), 1, "first delivery");
    drop(first); // the "crash": no DISCONNECT, the broker keeps the session

    let stored = scene.redis.fields(&scene.hash());
    assert!(single_exchange(&stored, true).is_some(), "the store holds the exchange (s-N, sc-N): {stored:?}");
    scene.restart_and_count_deliveries(naive_contains_key)
}

/// Case B: the store holds a QoS 2 PUBLISH the broker never received.
fn unacknowledged_publish_then_restart(naive_contains_key: bool) -> usize {
    let scene = Scene::new("qos2-unacked");

    // Paho resumes in-flight messages only into an existing broker session.
    let session = mqtt::CreateOptionsBuilder::new()
        .server_uri(scene.broker.uri())
        .client_id(&scene.client_id)
        .mqtt_version(support::mqtt::MQTT_VERSION)
        .persistence(mqtt::PersistenceType::None)
        .create_client()
        .expect("create");
    connect(&session, persistent_session());
    session.disconnect(None).wait_for(DELIVERY_TIMEOUT).expect("disconnect");
    drop(session);

    // Let real Paho write the record: publish to a broker that accepts the
    // connection and never acknowledges anything.
    let black_hole = BlackHoleBroker::start();
    let first = client(&black_hole.uri(), &scene.client_id, TestStore::new(&scene.redis.url()));
    connect(&first, persistent_session());
    let _token = first.publish(mqtt::Message::new(&scene.topic, "exactly once", 2));
    let written_hash = support::mqtt::store_hash(&scene.client_id, &black_hole.uri());
    assert!(
        support::wait_until(DELIVERY_TIMEOUT, || single_exchange(&scene.redis.fields(&written_hash), false)
            .is_some()),
        "Paho stored the sent PUBLISH (s-N) and nothing else: {:?}",
        scene.redis.fields(&written_hash)
    );
    drop(first);
    let publish = single_exchange(&scene.redis.fields(&written_hash), false).expect("s-N, as just seen");

    // Move the record to the hash of the real broker's URI.
    let mut conn = scene.redis.connection();
    let record: Vec<u8> = conn.hget(&written_hash, &publish).expect("HGET");
    let () = conn.hset(scene.hash(), &publish, record).expect("HSET");
    let () = conn.del(&written_hash).expect("DEL");

    scene.restart_and_count_deliveries(naive_contains_key)
}

#[test]
fn completed_exchange_sends_only_pubrel_after_restart() {
    assert_eq!(completed_exchange_then_restart(false), 0, "no second copy may be delivered");
}

#[test]
fn unacknowledged_qos2_publish_is_resent_and_delivered_once() {
    assert_eq!(unacknowledged_publish_then_restart(false), 1, "delivered exactly once");
}

#[test]
fn naive_contains_key_duplicates_a_completed_exchange() {
    assert_eq!(
        completed_exchange_then_restart(true),
        1,
        "with the plain answer Paho re-sent the PUBLISH and the broker delivered it again; \
         if this fails, paho-mqtt no longer inverts contains_key: drop the inversion in RedisPersistence"
    );
}

#[test]
fn naive_contains_key_loses_an_unacknowledged_publish() {
    assert_eq!(
        unacknowledged_publish_then_restart(true),
        0,
        "with the plain answer Paho sent only PUBREL and the message was lost; \
         if this fails, paho-mqtt no longer inverts contains_key: drop the inversion in RedisPersistence"
    );
}
