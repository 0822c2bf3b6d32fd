//! kill -9 of a publishing process at random points: every message whose
//! `try_publish` returned `Ok` (Paho had written its `c-` record) is delivered
//! after a restart with the same client id and Redis hash; QoS 1 at least
//! once, QoS 2 exactly once.
//!
//! The publisher is this test binary itself, re-run with `CHILD_ENV` set. It
//! prints `accepted N` only after `try_publish` of message N returned `Ok`.
//! The parent kills it with SIGKILL after a delay drawn from a seed; set
//! `PMR_KILL9_SEED` to replay a failure.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{client, connect, persistent_session, Subscriber};
use support::{ChildSpec, Mosquitto, RedisServer};

const CHILD_ENV: &str = "PMR_TEST_KILL9_CHILD";
const SEED_ENV: &str = "PMR_KILL9_SEED";
const RUNS: u64 = 5;
/// The child stops publishing here, long after any kill.
const STREAM_LENGTH: u32 = 20_000;
/// Messages published back to back between pauses.
const BURST: u32 = 100;
/// Kills land 0..this long after the child reported its connection.
const MAX_KILL_DELAY_MS: u64 = 1_200;
/// The publisher's cap on unacknowledged messages (see `publish_until_killed`).
const MAX_INFLIGHT: i32 = 32;

/// The publisher's part; its `mode` is `stream`, or `window`: abort right
/// after Paho removed a `c-` record.
impl ChildSpec {
    fn run(self) -> ! {
        match self.mode.as_str() {
            "window" => self.publish_one_and_abort_in_the_handoff(),
            _ => self.publish_until_killed(),
        }
    }

    /// Runs in the child: publish one message and die at the worst moment of
    /// Paho C's handoff, after it removed the queued `c-` record and before it
    /// wrote the `s-` record of the PUBLISH it is about to send.
    fn publish_one_and_abort_in_the_handoff(self) -> ! {
        let store = AbortAfterCommandRemoval(RedisPersistence::with_url(&self.redis_url).expect("valid URL"));
        let publisher = client(&self.broker_uri, &self.client_id, store);
        // Published before connecting, so that `accepted` is printed before Paho sends it.
        match publisher.try_publish(mqtt::Message::new(&self.topic, "0", self.qos)) {
            Ok(_token) => println!("\naccepted 0"),
            Err(error) => println!("\nrefused 0: {error}"),
        }
        connect(&publisher, persistent_session());
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(3);
    }

    /// Runs in the child: connect, then publish a numbered stream until killed.
    fn publish_until_killed(self) -> ! {
        let store = RedisPersistence::with_url(&self.redis_url).expect("valid URL");
        let publisher = client(&self.broker_uri, &self.client_id, store);
        connect(&publisher, gateway_session());
        let mut out = std::io::stdout().lock();
        writeln!(out, "\nconnected").and_then(|()| out.flush()).expect("stdout");
        for id in 0..STREAM_LENGTH {
            match publisher.try_publish(mqtt::Message::new(&self.topic, id.to_string(), self.qos)) {
                // The token is dropped: delivery is Paho's job from here on.
                Ok(_token) => writeln!(out, "accepted {id}").and_then(|()| out.flush()).expect("stdout"),
                Err(error) => writeln!(out, "refused {id}: {error}").expect("stdout"),
            }
            // Bursts, so that a kill finds messages at every stage: queued (`c-`),
            // sent (`s-`), half acknowledged (`sc-`).
            if id % BURST == BURST - 1 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_secs(600));
        std::process::exit(3);
    }
}

/// The connect options of the stream publisher, and of its restart, set as a
/// gateway would. Paho C 1.3.16's resend of the restored messages after the
/// restart sometimes stops part-way and, with its default retry interval of
/// 0, never resumes: seen with 224 QoS 2 messages in flight, and under qemu
/// with 31, whose records stayed in Redis through the 60 s wait while the
/// full in-flight window kept the queued ones from being sent. A bounded
/// window and a retry interval (Paho resends after at least 10 s) let the
/// client recover from it.
fn gateway_session() -> mqtt::ConnectOptions {
    mqtt::ConnectOptionsBuilder::with_mqtt_version(support::mqtt::MQTT_VERSION)
        .clean_session(false)
        .connect_timeout(Duration::from_secs(5))
        .max_inflight(MAX_INFLIGHT)
        .retry_interval(Duration::from_secs(1))
        .finalize()
}

/// The store of the `window` child: dies right after Paho removed a `c-` record.
struct AbortAfterCommandRemoval(RedisPersistence);

impl mqtt::ClientPersistence for AbortAfterCommandRemoval {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        self.0.open(client_id, server_uri)
    }
    fn close(&mut self) -> mqtt::Result<()> {
        self.0.close()
    }
    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        self.0.put(key, buffers)
    }
    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.0.get(key)
    }
    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        // Paho also removes `c-` keys of commands it never stored (its CONNECT): skip those.
        let queued_publish = key.starts_with("c-") && self.0.monitor().contains(key).unwrap_or(false);
        let result = self.0.remove(key);
        if queued_publish {
            println!("\nremoved {key}");
            std::process::abort();
        }
        result
    }
    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.0.keys()
    }
    fn clear(&mut self) -> mqtt::Result<()> {
        self.0.clear()
    }
    fn contains_key(&mut self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

/// The ids the child reported as accepted: only complete lines count.
fn read_accepted(stdout: impl std::io::Read, started: mpsc::Sender<()>) -> BTreeSet<u32> {
    let mut reader = BufReader::new(stdout);
    let mut accepted = BTreeSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return accepted,
            Ok(_) if !line.ends_with(b"\n") => return accepted, // cut by the kill
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim() == "connected" {
            let _ = started.send(());
        } else if let Some(id) = text.split("accepted ").nth(1).and_then(|id| id.trim().parse().ok()) {
            accepted.insert(id);
        }
    }
}

/// One run: start the publisher, kill it after `delay`, restore, and check deliveries.
fn run_once(
    test_name: &str,
    qos: i32,
    seed: u64,
    run: u64,
    broker: &Mosquitto,
    redis: &RedisServer,
    redis_url: &str,
) {
    let delay = Duration::from_millis(support::mix(seed ^ run.wrapping_mul(0x1000_0001)) % MAX_KILL_DELAY_MS);
    let context = format!("qos {qos}, {SEED_ENV}={seed}, run {run}, kill after {delay:?}");
    let spec = ChildSpec {
        redis_url: redis_url.to_owned(),
        broker_uri: broker.uri(),
        client_id: support::unique_id(&format!("kill9-q{qos}")),
        topic: support::unique_id(&format!("kill9/q{qos}")),
        qos,
        mode: "stream".to_owned(),
    };
    let hash = support::mqtt::store_hash(&spec.client_id, &broker.uri());
    let subscriber = Subscriber::start(&broker.uri(), &spec.topic);

    let mut child = support::spawn_child(test_name, CHILD_ENV, &spec.to_env());
    let stdout = child.stdout.take().expect("piped stdout");
    let (started_tx, started_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || read_accepted(stdout, started_tx));
    if started_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("{context}: the publisher did not connect within 30 s");
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the publisher");
    let status = child.wait().expect("reap the publisher");
    let accepted = reader.join().expect("stdout reader");
    assert!(status.code().is_none(), "{context}: the publisher must die by the signal, not exit: {status}");

    let left: Vec<String> = redis.connection().hkeys(&hash).expect("HKEYS");
    let restored =
        client(&broker.uri(), &spec.client_id, RedisPersistence::with_url(redis_url).expect("url"));
    connect(&restored, gateway_session());

    let mut received: BTreeMap<u32, usize> = BTreeMap::new();
    let mut foreign = Vec::new();
    let all_in = |received: &BTreeMap<u32, usize>| accepted.iter().all(|id| received.contains_key(id));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut store_empty = false;
    while Instant::now() < deadline && !(store_empty && all_in(&received)) {
        if let Some(message) = subscriber.next(Duration::from_millis(100)) {
            match message.payload_str().parse::<u32>() {
                Ok(id) => *received.entry(id).or_default() += 1,
                Err(_) => foreign.push(message.payload_str().into_owned()),
            }
        }
        store_empty = redis.connection().hlen::<_, usize>(&hash).unwrap_or(1) == 0;
    }
    // Listen a little longer, so that late duplicates are seen too.
    while let Some(message) = subscriber.next(Duration::from_millis(500)) {
        if let Ok(id) = message.payload_str().parse::<u32>() {
            *received.entry(id).or_default() += 1;
        }
    }
    // Tells, when a message is missing, whether its record was still waiting in Redis.
    let mut left_at_end: Vec<String> = redis.connection().hkeys(&hash).unwrap_or_default();
    left_at_end.sort();
    let _ = restored.disconnect(None).wait_for(Duration::from_secs(5));

    let missing: Vec<u32> = accepted.iter().copied().filter(|id| !received.contains_key(id)).collect();
    let duplicated: Vec<(u32, usize)> =
        received.iter().filter(|(_, n)| **n > 1).map(|(id, n)| (*id, *n)).collect();
    // The kill may land inside `try_publish` of the message after the last
    // one reported: that one may be delivered (or not), nothing beyond it.
    let in_flight_at_kill = accepted.last().map_or(0, |last| last + 1);
    let beyond: Vec<u32> = received.keys().copied().filter(|id| *id > in_flight_at_kill).collect();
    let summary = format!(
        "{context}: {} accepted, {} distinct received, records left at the kill: {}",
        accepted.len(),
        received.len(),
        left.len()
    );
    eprintln!("{summary}");
    let left_sorted = {
        let mut left = left;
        left.sort();
        left
    };
    assert!(foreign.is_empty(), "{summary}; payloads that are no id: {foreign:?}");
    assert!(
        missing.is_empty(),
        "{summary}; accepted but never delivered: {missing:?}; records at the kill: {left_sorted:?}; \
         records after the wait: {left_at_end:?}"
    );
    assert!(beyond.is_empty(), "{summary}; delivered but never published: {beyond:?}");
    assert!(store_empty, "{summary}; the restored client's store did not empty within 60 s");
    if qos == 2 {
        assert!(duplicated.is_empty(), "{summary}; QoS 2 delivered more than once: {duplicated:?}");
    }
}

/// `unix`: Redis over its Unix socket, where the store writes behind (a
/// record is durable once written to the socket); else over TCP.
/// The stream tests run one at a time: four of them at once, each with its
/// broker, Redis, publisher and restarted client on two cores, made Paho's
/// resend stall described at `gateway_session` frequent (2 of 2 clean-clone
/// runs of the suite; none in 3 runs of the test alone).
static ONE_STREAM_AT_A_TIME: Mutex<()> = Mutex::new(());

fn kill9_runs(test_name: &str, qos: i32, unix: bool) {
    let _alone = ONE_STREAM_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    support::init_logging();
    let seed = support::seed_from_env(SEED_ENV);
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let url = if unix { redis.unix_url() } else { redis.url() };
    for run in 0..RUNS {
        run_once(test_name, qos, seed, run, &broker, &redis, &url);
    }
}

#[test]
fn qos1_every_accepted_message_survives_kill9_at_least_once() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    kill9_runs("qos1_every_accepted_message_survives_kill9_at_least_once", 1, false);
}

// The Unix socket needs feature `unix-socket` (`cargo test` without it skips this).
#[cfg(feature = "unix-socket")]
#[test]
fn qos1_every_accepted_message_survives_kill9_at_least_once_over_the_unix_socket() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    kill9_runs("qos1_every_accepted_message_survives_kill9_at_least_once_over_the_unix_socket", 1, true);
}

// The Unix socket needs feature `unix-socket` (`cargo test` without it skips this).
#[cfg(feature = "unix-socket")]
#[test]
fn qos2_every_accepted_message_survives_kill9_exactly_once_over_the_unix_socket() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    kill9_runs("qos2_every_accepted_message_survives_kill9_exactly_once_over_the_unix_socket", 2, true);
}

#[test]
fn qos2_every_accepted_message_survives_kill9_exactly_once() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    kill9_runs("qos2_every_accepted_message_survives_kill9_exactly_once", 2, false);
}

/// The deterministic form of what the random kills above find about once in
/// ten runs: Paho C 1.3.16 (`MQTTAsync_processCommand`) removes a publish's
/// `c-` record before `MQTTProtocol_startPublish` writes its `s-` record, so a
/// process killed between the two calls loses an accepted message, unless the
/// store keeps the `c-` record until the `s-` record is written.
fn handoff_window(test_name: &str, qos: i32) {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let spec = ChildSpec {
        redis_url: redis.url(),
        broker_uri: broker.uri(),
        client_id: support::unique_id("handoff"),
        topic: support::unique_id("handoff/topic"),
        qos,
        mode: "window".to_owned(),
    };
    let subscriber = Subscriber::start(&broker.uri(), &spec.topic);
    let output = support::output_of(&mut support::child_command(test_name, CHILD_ENV, &spec.to_env()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("accepted 0") && stdout.contains("removed c-"),
        "the publisher accepted the message and died after removing its `c-` record: {:?}\n{stdout}",
        output.status
    );
    let hash = support::mqtt::store_hash(&spec.client_id, &broker.uri());
    let left: Vec<String> = redis.connection().hkeys(&hash).expect("HKEYS");

    let restored =
        client(&broker.uri(), &spec.client_id, RedisPersistence::with_url(&redis.url()).expect("url"));
    connect(&restored, persistent_session());
    let received = subscriber.collect(1, Duration::from_secs(10), Duration::from_millis(500));
    let _ = restored.disconnect(None).wait_for(Duration::from_secs(5));
    assert_eq!(
        support::mqtt::payloads(&received),
        ["0"],
        "QoS {qos}: the accepted message must be delivered once; records left at the kill: {left:?}"
    );
}

#[test]
fn qos1_kill_between_command_removal_and_publish_record() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    handoff_window("qos1_kill_between_command_removal_and_publish_record", 1);
}

#[test]
fn qos2_kill_between_command_removal_and_publish_record() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    handoff_window("qos2_kill_between_command_removal_and_publish_record", 2);
}
