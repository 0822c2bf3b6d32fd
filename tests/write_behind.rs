//! Over a Unix socket the store writes behind: a `put` returns once its write
//! is in the socket, and Redis's reply is taken in later.
//!
//! - What the kernel has taken on a Unix socket reaches Redis even if the
//!   writer is killed right after: a process that made 10,000 puts and is
//!   then SIGKILLed leaves all 10,000 in Redis.
//! - A Redis that stops answering (SIGSTOP) does not stall Paho's threads:
//!   every publish made meanwhile returns, and is delivered once Redis is back,
//!   without the MQTT client reconnecting.
//!
//! Counts, not timings: how many records, how many publishes returned while
//! Redis was stopped (checked before it is resumed), how many delivered.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use paho_mqtt::{self as mqtt, ClientPersistence};
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{assert_delivered, client, connect, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const CHILD_ENV: &str = "PMR_TEST_WRITE_BEHIND_CHILD";
const PUTS: usize = 10_000;
const DONE: &str = "all puts returned";

/// A QoS 1 PUBLISH packet with message id `n`, as Paho writes its `s-` record.
fn publish_record(n: usize) -> Vec<u8> {
    let id = u16::try_from(n % 65_535 + 1).expect("in range");
    let mut packet = vec![0x32, 0x0f, 0x00, 0x03, b'a', b'/', b'b'];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(b"payload!");
    packet
}

/// The child: `PUTS` puts, then it says so and waits to be killed.
fn child(url: &str) -> ! {
    let mut store = RedisPersistence::with_url(url).expect("valid url");
    store.open("write-behind", "broker:1883").expect("open");
    for n in 0..PUTS {
        store.put(&format!("s-{n}"), vec![&publish_record(n)[..]]).expect("put");
    }
    // On a line of its own: libtest has printed the test's name without a newline.
    println!("\n{DONE}");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn every_put_written_before_a_sigkill_is_in_redis() {
    if let Some(fields) = support::child_fields(CHILD_ENV) {
        child(fields.first().expect("the url"));
    }
    let redis = RedisServer::start();
    let mut child = support::spawn_child(
        "every_put_written_before_a_sigkill_is_in_redis",
        CHILD_ENV,
        &support::encode_child_fields(&[&redis.unix_url()]),
    );
    let stdout = child.stdout.take().expect("piped stdout");
    let done = BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line == DONE);
    assert!(done, "the child finished its puts");
    // SIGKILL: nothing of the child runs after this, no reply is read.
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let hash = paho_mqtt_redis::Config::default().hash_name("write-behind", "broker:1883");
    let held: usize = redis.connection().hlen(&hash).expect("HLEN");
    assert_eq!(held, PUTS, "records in Redis after the kill");
    for n in [0, PUTS / 2, PUTS - 1] {
        let value: Vec<u8> = redis.connection().hget(&hash, format!("s-{n}")).expect("HGET");
        assert_eq!(value, publish_record(n), "s-{n} intact");
    }
}

/// Publishes 20 QoS 1 messages, stops Redis (SIGSTOP), publishes 40 more,
/// resumes it and publishes 20 more. Every publish must return, every message
/// arrive, and the MQTT client stay connected; returns how many waits for
/// Redis timed out while it was stopped.
fn publish_around_a_stopped_redis(unix: bool) -> u64 {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let url = if unix { redis.unix_url() } else { redis.url() };
    let topic = support::unique_id("write-behind/stream");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let store =
        RedisPersistence::builder().url(url).io_timeout(Duration::from_millis(500)).build().expect("valid");
    let stats = store.stats_handle();
    let publisher = client(&broker.uri(), &support::unique_id("write-behind"), store);
    connect(&publisher, persistent_session());
    let publish = |n: usize| {
        publisher.try_publish(mqtt::Message::new(&topic, format!("message {n}"), 1)).map(drop).is_ok()
    };
    for n in 0..20 {
        assert!(publish(n), "publish {n} before the stop");
    }
    let before = stats.stats().timeouts;
    let frozen = redis.freeze();
    let returned = (20..60).filter(|&n| publish(n)).count();
    let connected = publisher.is_connected();
    let timeouts = stats.stats().timeouts - before;
    frozen.thaw();
    assert_eq!(returned, 40, "publishes that returned while Redis was stopped");
    assert!(connected, "the MQTT client stayed connected");
    for n in 60..80 {
        assert!(publish(n), "publish {n} after Redis is back");
    }
    let received = subscriber.collect(80, Duration::from_secs(20), Duration::from_millis(300));
    let expected: Vec<(String, i32)> = (0..80).map(|n| (format!("message {n}"), 1)).collect();
    assert_delivered(&received, &expected, "every message published around the stop");
    let _ = publisher.disconnect(None).wait_for(Duration::from_secs(5));
    timeouts
}

/// Over the Unix socket nothing waits for the stopped Redis: each publish
/// is a command record write, its read-back (from memory) and the PUBLISH
/// record write, all written to the socket.
#[test]
fn a_stopped_redis_does_not_stall_publishing_over_the_unix_socket() {
    assert_eq!(publish_around_a_stopped_redis(true), 0, "timed-out waits");
}

/// Over TCP the first call waits one `io_timeout`; then no call waits until a
/// probe finds Redis answering again (before the probe: once per call, 237 waits here).
#[test]
fn a_stopped_redis_costs_one_timeout_over_tcp() {
    assert_eq!(publish_around_a_stopped_redis(false), 1, "timed-out waits");
}

/// The store over its Unix socket still answers reads and `keys` exactly:
/// a read waits for the writes before it.
#[test]
fn reads_see_the_writes_before_them() {
    let redis = RedisServer::start();
    let mut store = RedisPersistence::with_url(&redis.unix_url()).expect("valid");
    store.open("reads", "broker:1883").expect("open");
    for n in 0..200 {
        store.put(&format!("s-{n}"), vec![&publish_record(n)[..]]).expect("put");
    }
    for n in (0..200).step_by(2) {
        store.remove(&format!("s-{n}")).expect("remove");
    }
    store.close().expect("close");
    store.open("reads", "broker:1883").expect("open again");
    assert_eq!(store.keys().expect("keys").len(), 100);
    assert_eq!(store.get("s-199").expect("get"), publish_record(199));
    assert!(store.get("s-0").is_err(), "removed");
}

/// The reader thread holds a handle on the socket of its own: a store dropped
/// without `close` (as Paho may) still closes its connection.
#[test]
fn a_dropped_store_closes_its_connection() {
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let clients = |admin: &mut redis::Connection| -> usize {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).expect("CLIENT LIST");
        list.lines().count()
    };
    let mut store = RedisPersistence::with_url(&redis.unix_url()).expect("valid");
    store.open("dropped", "broker:1883").expect("open");
    store.put("s-1", vec![&publish_record(1)[..]]).expect("put");
    assert_eq!(clients(&mut admin), 2, "the admin and the store");
    drop(store);
    assert!(
        support::wait_until(Duration::from_secs(5), || clients(&mut admin) == 1),
        "the store's connection closed"
    );
}
