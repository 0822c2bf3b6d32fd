//! Crash recovery: a publisher buffers QoS 1 messages while no broker is
//! reachable and dies with `abort()`; a new process with the same client id
//! restores them from Redis and the broker delivers every one.
//!
//! The child is this test binary itself, re-run with `CHILD_ENV` set (through
//! the emulator in `PMR_TEST_RUNNER` when cross-testing).

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::legacy::LegacyStore;
use support::mqtt::{assert_delivered, client, connect, persistent_session, Subscriber};
use support::{ChildSpec, Mosquitto, RedisServer};

const CHILD_ENV: &str = "PMR_TEST_CRASH_CHILD";
const MESSAGES: usize = 50;

/// The child's part; its `mode` names the store it writes with.
impl ChildSpec {
    /// Runs in the child: buffers the messages, then dies without any cleanup.
    fn publish_and_abort(self) -> ! {
        let client = match self.mode.as_str() {
            "legacy" => client(&self.broker_uri, &self.client_id, LegacyStore::new(&self.redis_url)),
            _ => client(
                &self.broker_uri,
                &self.client_id,
                RedisPersistence::with_url(&self.redis_url).unwrap(),
            ),
        };
        for i in 0..MESSAGES {
            let message = mqtt::Message::new(&self.topic, format!("msg-{i:03}"), self.qos);
            if let Err(error) = client.try_publish(message) {
                panic!("publish {i} was refused: {error}");
            }
        }
        println!("buffered {MESSAGES} messages");
        std::process::abort();
    }
}

/// Re-runs `test_name` in a child process that publishes and aborts.
fn run_aborting_child(test_name: &str, spec: &ChildSpec) {
    let output = support::output_of(&mut support::child_command(test_name, CHILD_ENV, &spec.to_env()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.signal(),
        Some(6),
        "the child must die by SIGABRT after buffering; status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("buffered {MESSAGES} messages")), "child output:\n{stdout}");
}

/// Parent side: child buffers with `store`, dies; we restore with 0.4 and count deliveries.
fn buffered_messages_survive_abort(test_name: &str, store: &str) {
    support::init_logging();
    let redis = RedisServer::start();
    let broker_port = support::free_port(); // no broker there yet
    let spec = ChildSpec {
        mode: store.to_owned(),
        redis_url: redis.url(),
        broker_uri: format!("tcp://127.0.0.1:{broker_port}"),
        client_id: support::unique_id("crash"),
        topic: support::unique_id("crash/topic"),
        qos: 1,
    };
    run_aborting_child(test_name, &spec);

    let hash = format!("{}:127.0.0.1:{broker_port}", spec.client_id);
    let stored: usize = redis.connection().hlen(&hash).expect("HLEN");
    assert_eq!(stored, MESSAGES, "one queued-command record per buffered message");

    let broker = Mosquitto::start_on(broker_port);
    let subscriber = Subscriber::start(&broker.uri(), &spec.topic);
    let restored =
        client(&broker.uri(), &spec.client_id, RedisPersistence::with_url(&redis.url()).expect("url"));
    connect(&restored, persistent_session());

    let received = subscriber.collect(MESSAGES, Duration::from_secs(20), Duration::from_millis(500));
    let expected: Vec<(String, i32)> = (0..MESSAGES).map(|i| (format!("msg-{i:03}"), 1)).collect();
    assert_delivered(&received, &expected, "every buffered QoS 1 message is delivered");
    assert!(
        support::wait_until(Duration::from_secs(10), || redis
            .connection()
            .hlen::<_, usize>(&hash)
            .unwrap_or(1)
            == 0),
        "the store empties once the broker acknowledged everything"
    );
}

#[test]
fn messages_buffered_before_an_abort_are_delivered_after_restart() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.publish_and_abort();
    }
    buffered_messages_survive_abort("messages_buffered_before_an_abort_are_delivered_after_restart", "redis");
}

#[test]
fn records_written_by_0_3_are_restored() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.publish_and_abort();
    }
    buffered_messages_survive_abort("records_written_by_0_3_are_restored", "legacy");
}
