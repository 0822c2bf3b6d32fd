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
//!
//! All of it needs feature `unix-socket`: `cargo test` without it skips the file.
#![cfg(feature = "unix-socket")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
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

const STOPPED_CHILD_ENV: &str = "PMR_TEST_WRITE_BEHIND_STOPPED_CHILD";
const STOPPED_PUTS: usize = 40;

/// The child for a stopped Redis: 2-KB puts with a short `io_timeout`, then
/// it prints how many records the store still holds in memory only.
fn stopped_child(url: &str) -> ! {
    let mut store = RedisPersistence::builder()
        .url(url)
        .io_timeout(Duration::from_millis(300))
        .build()
        .expect("valid url");
    store.open("write-behind-stopped", "broker:1883").expect("open");
    println!("\nopened");
    // Wait for the parent to stop Redis.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let value = vec![7u8; 2048];
    for n in 0..STOPPED_PUTS {
        store.put(&format!("s-{n}"), vec![&value[..]]).expect("put");
    }
    println!("\nunwritten {}", store.unwritten());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// With Redis stopped, the writer killed: what the store had written to the
/// socket (all but what it reported unwritten) is in Redis once it resumes.
/// Redis runs what one read takes, then drops the rest of a connection whose
/// replies it cannot write, so the store keeps what it sends unanswered
/// within one read.
#[test]
fn with_redis_stopped_every_put_the_store_wrote_survives_a_sigkill() {
    if let Some(fields) = support::child_fields(STOPPED_CHILD_ENV) {
        stopped_child(fields.first().expect("the url"));
    }
    let redis = RedisServer::start();
    let mut command = support::child_command(
        "with_redis_stopped_every_put_the_store_wrote_survives_a_sigkill",
        STOPPED_CHILD_ENV,
        &support::encode_child_fields(&[&redis.unix_url()]),
    );
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn the child");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines().map_while(Result::ok);
    assert!(lines.any(|line| line == "opened"), "the child opened its store");
    let frozen = redis.freeze();
    writeln!(child.stdin.take().expect("piped stdin"), "go").expect("tell the child");
    let unwritten: usize = lines
        .find_map(|line| line.strip_prefix("unwritten ").map(|n| n.parse().expect("a count")))
        .expect("the child reported");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    frozen.thaw();
    let hash = paho_mqtt_redis::Config::default().hash_name("write-behind-stopped", "broker:1883");
    let held = support::wait_until(Duration::from_secs(5), || {
        redis.connection().hlen::<_, usize>(&hash).unwrap_or(0) == STOPPED_PUTS - unwritten
    });
    let count: usize = redis.connection().hlen(&hash).expect("HLEN");
    assert!(held, "{count} records in Redis; the store wrote {} of {STOPPED_PUTS}", STOPPED_PUTS - unwritten);
    assert!(unwritten < STOPPED_PUTS, "something was written before Redis was found stopped");
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
    let kept = store.monitor();
    let publisher = client(&broker.uri(), &support::unique_id("write-behind"), store);
    connect(&publisher, persistent_session());
    let publish = |n: usize| {
        publisher.try_publish(mqtt::Message::new(&topic, format!("message {n}"), 1)).map(drop).is_ok()
    };
    for n in 0..20 {
        assert!(publish(n), "publish {n} before the stop");
    }
    let before = kept.stats().timeouts;
    let frozen = redis.freeze();
    let returned = (20..60).filter(|&n| publish(n)).count();
    let connected = publisher.is_connected();
    let timeouts = kept.stats().timeouts - before;
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

/// Over the Unix socket, writes go out without waiting until what is
/// unanswered fills one read of Redis's (about 15 KiB: beyond, a crash could
/// lose it); then one call waits one `io_timeout`, and no call waits again
/// until Redis answers.
#[test]
fn a_stopped_redis_costs_one_timeout_over_the_unix_socket() {
    assert_eq!(publish_around_a_stopped_redis(true), 1, "timed-out waits");
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
    // `s-{n + 1}` holds message n + 1, as Paho names it (`open` sets aside a
    // PUBLISH record whose message id is not its key's).
    for n in 0..200 {
        store.put(&format!("s-{}", n + 1), vec![&publish_record(n)[..]]).expect("put");
    }
    for n in (0..200).step_by(2) {
        store.remove(&format!("s-{}", n + 1)).expect("remove");
    }
    store.close().expect("close");
    store.open("reads", "broker:1883").expect("open again");
    assert_eq!(store.keys().expect("keys").len(), 100);
    assert_eq!(store.get("s-200").expect("get"), publish_record(199));
    assert!(store.get("s-1").is_err(), "removed");
}

/// A store dropped without `close` (as Paho may) still closes its connection.
#[test]
fn a_dropped_store_closes_its_connection() {
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let clients = |admin: &mut redis::Connection| -> usize {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).expect("CLIENT LIST");
        list.lines().count()
    };
    // Connections of the harness's readiness checks may still be closing.
    support::wait_until(Duration::from_secs(5), || clients(&mut admin) == 1);
    let before = clients(&mut admin);
    let mut store = RedisPersistence::with_url(&redis.unix_url()).expect("valid");
    store.open("dropped", "broker:1883").expect("open");
    store.put("s-1", vec![&publish_record(1)[..]]).expect("put");
    assert_eq!(clients(&mut admin), before + 2, "the store's connection and its lease's");
    drop(store);
    assert!(
        support::wait_until(Duration::from_secs(5), || clients(&mut admin) == before),
        "the store's connections closed"
    );
}
