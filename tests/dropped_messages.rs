//! Records Paho removed must be gone from Redis even when no later write
//! comes to carry their `HDEL`, or a restarted client sends them again.
//!
//! The store sends the removal of a command record (`c-`) with the next
//! write, because for a QoS 1/2 publish Paho removes it just before writing
//! the PUBLISH record (`s-`) that replaces it. Some removals are followed by
//! no write at all:
//!
//! - a QoS 0 publish: Paho C persists its command by default and removes the
//!   record before sending, but writes no `s-` record for QoS 0;
//! - a SUBSCRIBE: removed before sending, nothing written after;
//! - the oldest buffered publish that Paho drops, with
//!   `delete_oldest_messages(true)`, when the buffer of
//!   `max_buffered_messages` is full: that removal comes right after the
//!   newest message's write, so the last one dropped waits for a write that
//!   never comes.
//!
//! Each test runs a publisher in a child process (this test binary re-run
//! with `CHILD_ENV` set), lets it die without cleanup, counts what Redis
//! holds for its store, then restarts a client with the same id and store
//! and counts what the subscriber receives. Real mosquitto, redis-server and
//! Paho C; Redis over its Unix socket with feature `unix-socket`, else TCP.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use support::mqtt::{assert_delivered, client, connect, persistent_session, Subscriber, MQTT_VERSION};
use support::{ChildSpec, Mosquitto, RedisServer};

const CHILD_ENV: &str = "PMR_TEST_DROPPED_CHILD";
/// The QoS 0 message of `qos0_message_is_not_delivered_again_after_restart`.
const QOS0_PAYLOAD: &str = "qos0-once";
/// Published by the restarted client after connecting: Paho sends its queue
/// in order, so once this arrives, any restored message has arrived too.
const MARKER: &str = "marker";
/// The buffer of the dropping publisher, and how many it publishes.
const BUFFERED_MAX: i32 = 5;
const PUBLISHED: usize = 10;
/// SIGKILL and SIGABRT.
const SIGKILL: i32 = 9;
const SIGABRT: i32 = 6;

/// The child's part; its `mode` is `qos0`, `subscribe` or `dropped`.
impl ChildSpec {
    fn run(self) -> ! {
        match self.mode.as_str() {
            "qos0" => self.publish_qos0_and_idle(),
            "subscribe" => self.subscribe_and_idle(),
            "dropped" => self.overfill_buffer_and_abort(),
            other => panic!("unknown child mode {other:?}"),
        }
    }

    fn store(&self) -> RedisPersistence {
        RedisPersistence::with_url(&self.redis_url).expect("valid Redis URL")
    }

    /// Runs in the child: one QoS 0 publish while connected, then idle until the parent kills it.
    fn publish_qos0_and_idle(self) -> ! {
        let publisher = client(&self.broker_uri, &self.client_id, self.store());
        connect(&publisher, persistent_session());
        publisher
            .publish(mqtt::Message::new(&self.topic, QOS0_PAYLOAD, self.qos))
            .wait_for(Duration::from_secs(10))
            .expect("QoS 0 publish sent");
        // A leading newline: libtest's `test name ... ` has none of its own.
        println!("\npublished");
        idle_until_killed()
    }

    /// Runs in the child: one SUBSCRIBE while connected, then idle until the parent kills it.
    fn subscribe_and_idle(self) -> ! {
        let subscriber = client(&self.broker_uri, &self.client_id, self.store());
        connect(&subscriber, persistent_session());
        subscriber.subscribe(&self.topic, self.qos).wait_for(Duration::from_secs(10)).expect("SUBACK");
        println!("\nsubscribed");
        idle_until_killed()
    }

    /// Runs in the child: `PUBLISHED` QoS 1 publishes into a buffer of
    /// `BUFFERED_MAX` that drops the oldest, never connected, then abort.
    fn overfill_buffer_and_abort(self) -> ! {
        let publisher =
            mqtt::AsyncClient::new(dropping_create_options(&self.broker_uri, &self.client_id, self.store()))
                .expect("create the publisher");
        for i in 0..PUBLISHED {
            // Accepted even when full: Paho drops the oldest instead of refusing.
            if let Err(error) = publisher.try_publish(mqtt::Message::new(&self.topic, payload(i), self.qos)) {
                panic!("publish {i} was refused: {error}");
            }
        }
        println!("\nbuffered {PUBLISHED}");
        std::process::abort();
    }
}

/// Never returns; the parent kills the process. Exits with 3 if forgotten.
fn idle_until_killed() -> ! {
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

fn payload(i: usize) -> String {
    format!("msg-{i}")
}

/// The store's Redis URL: the Unix socket when the crate can use one.
fn store_url(redis: &RedisServer) -> String {
    #[cfg(feature = "unix-socket")]
    return redis.unix_url();
    #[cfg(not(feature = "unix-socket"))]
    return redis.url();
}

/// Create options of the publisher whose buffer holds `BUFFERED_MAX`
/// messages and drops the oldest, allowed to publish before its first connect.
fn dropping_create_options(
    server_uri: &str,
    client_id: &str,
    store: RedisPersistence,
) -> mqtt::CreateOptions {
    mqtt::CreateOptionsBuilder::new()
        .server_uri(server_uri)
        .client_id(client_id)
        .mqtt_version(MQTT_VERSION)
        .user_persistence(store)
        .send_while_disconnected(true)
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(BUFFERED_MAX)
        .delete_oldest_messages(true)
        .finalize()
}

/// The queued-command records (`c-`, MQTT 3.1.1) among `fields`.
fn command_records(fields: &[String]) -> Vec<&String> {
    fields.iter().filter(|field| field.starts_with("c-")).collect()
}

/// A child process whose stdout lines arrive on a channel; killed on drop,
/// so a failing test leaves no process behind.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    fn spawn(test_name: &str, spec: &ChildSpec) -> Self {
        let mut child = support::spawn_child(test_name, CHILD_ENV, &spec.to_env());
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line.trim().to_owned()).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits until the child printed `expected` on a line of its own.
    fn wait_for_line(&mut self, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line == expected => return,
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("the child did not print {expected:?} within {timeout:?}; its status: {status:?}");
                }
            }
        }
    }

    /// SIGKILL, and checks that the signal is what ended it.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("reap the child");
        assert_eq!(status.signal(), Some(SIGKILL), "the child must die by SIGKILL: {status}");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills an idle child after it has had a second to finish its writes (the
/// reported crash came about a second after the publish); the wait ends
/// early once no command record is left, when there is nothing to finish.
fn kill_when_idle(child: ChildProcess, redis: &RedisServer, hash: &str) {
    support::wait_until(Duration::from_secs(1), || command_records(&redis.fields(hash)).is_empty());
    child.kill();
}

/// A client restarted on the store `url`, connected with the same id and a persistent session.
fn restart(broker: &Mosquitto, client_id: &str, url: &str) -> mqtt::AsyncClient {
    let restarted = client(&broker.uri(), client_id, RedisPersistence::with_url(url).expect("url"));
    connect(&restarted, persistent_session());
    restarted
}

/// Everything `subscriber` receives until `last` arrived (or `timeout`
/// passed), and for `quiet` longer, so that a late extra is counted too.
fn receive_through(
    subscriber: &Subscriber,
    last: &str,
    timeout: Duration,
    quiet: Duration,
) -> Vec<mqtt::Message> {
    let mut received: Vec<mqtt::Message> = Vec::new();
    let deadline = Instant::now() + timeout;
    while !received.iter().any(|message| message.payload_str() == last) {
        match subscriber.next(deadline.saturating_duration_since(Instant::now())) {
            Some(message) => received.push(message),
            None => break,
        }
    }
    while let Some(message) = subscriber.next(quiet) {
        received.push(message);
    }
    received
}

/// The servers of one test, the spec of its child, and the child's store hash.
struct Setup {
    broker: Mosquitto,
    redis: RedisServer,
    spec: ChildSpec,
    hash: String,
}

/// Starts mosquitto and Redis for a child in `mode` with `qos`, its ids named after `name`.
fn setup(mode: &str, qos: i32, name: &str) -> Setup {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let spec = ChildSpec {
        mode: mode.to_owned(),
        redis_url: store_url(&redis),
        broker_uri: broker.uri(),
        client_id: support::unique_id(&format!("dropped-{name}")),
        topic: support::unique_id(&format!("dropped/{name}")),
        qos,
    };
    let hash = support::mqtt::store_hash(&spec.client_id, &broker.uri());
    Setup { broker, redis, spec, hash }
}

/// Bug 1: a QoS 0 message delivered while the publisher was connected is
/// delivered again by the restarted publisher, because its `c-` record,
/// removed by Paho before sending, stayed in Redis.
#[test]
fn qos0_message_is_not_delivered_again_after_restart() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    let Setup { broker, redis, spec, hash } = setup("qos0", 0, "qos0");
    let subscriber = Subscriber::start(&broker.uri(), &spec.topic);

    let mut publisher = ChildProcess::spawn("qos0_message_is_not_delivered_again_after_restart", &spec);
    publisher.wait_for_line("published", Duration::from_secs(30));
    let first = subscriber.next(Duration::from_secs(10)).map(|m| m.payload_str().into_owned());
    assert_eq!(first.as_deref(), Some(QOS0_PAYLOAD), "the subscriber receives the QoS 0 message once first");
    kill_when_idle(publisher, &redis, &hash);
    let at_kill = redis.fields(&hash);

    let restarted = restart(&broker, &spec.client_id, &store_url(&redis));
    restarted
        .publish(mqtt::Message::new(&spec.topic, MARKER, 1))
        .wait_for(Duration::from_secs(10))
        .expect("marker acknowledged");
    let after_restart =
        receive_through(&subscriber, MARKER, Duration::from_secs(10), Duration::from_millis(500));
    let _ = restarted.disconnect(None).wait_for(Duration::from_secs(5));

    assert_delivered(
        &after_restart,
        &[(MARKER.to_owned(), 1)],
        &format!(
            "after the restart only the marker arrives, not the QoS 0 message again; \
             the store's fields in Redis at the kill: {at_kill:?}"
        ),
    );
    assert_eq!(
        command_records(&at_kill),
        Vec::<&String>::new(),
        "Paho removed the QoS 0 command record before sending it: none may stay in Redis"
    );
}

/// The same for a SUBSCRIBE: Paho removes its `c-` record before sending it
/// and writes nothing after, so the record must not outlive the process.
#[test]
fn subscribe_command_record_does_not_outlive_the_process() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    // Bound (not `_`) so that mosquitto runs until the test ends.
    let Setup { broker: _broker, redis, spec, hash } = setup("subscribe", 1, "sub");

    let mut child = ChildProcess::spawn("subscribe_command_record_does_not_outlive_the_process", &spec);
    child.wait_for_line("subscribed", Duration::from_secs(30));
    kill_when_idle(child, &redis, &hash);
    let at_kill = redis.fields(&hash);

    assert_eq!(
        command_records(&at_kill),
        Vec::<&String>::new(),
        "the SUBSCRIBE was acknowledged, so Paho had removed its command record: \
         none may stay in Redis; the store's fields: {at_kill:?}"
    );
}

/// Bug 2: of `PUBLISHED` messages buffered into a buffer of `BUFFERED_MAX`
/// that drops the oldest, only the newest `BUFFERED_MAX` may be delivered
/// after a crash and restart; the last one dropped came back.
#[test]
fn messages_paho_dropped_from_a_full_buffer_stay_dropped_after_restart() {
    if let Some(child) = ChildSpec::from_env(CHILD_ENV) {
        child.run();
    }
    let Setup { broker, redis, spec, hash } = setup("dropped", 1, "oldest");
    let subscriber = Subscriber::start(&broker.uri(), &spec.topic);

    let output = support::output_of(&mut support::child_command(
        "messages_paho_dropped_from_a_full_buffer_stay_dropped_after_restart",
        CHILD_ENV,
        &spec.to_env(),
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.signal() == Some(SIGABRT) && stdout.contains(&format!("buffered {PUBLISHED}")),
        "the child must buffer every message, then die by SIGABRT; status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let at_abort = redis.fields(&hash);

    // The same options as the child's: the restarted process is the same application.
    let restarted = mqtt::AsyncClient::new(dropping_create_options(
        &broker.uri(),
        &spec.client_id,
        RedisPersistence::with_url(&store_url(&redis)).expect("url"),
    ))
    .expect("create the restarted client");
    connect(&restarted, persistent_session());
    // Paho sends restored commands oldest first, so the newest arrives last.
    let newest = payload(PUBLISHED - 1);
    let received = receive_through(&subscriber, &newest, Duration::from_secs(20), Duration::from_secs(1));
    let _ = restarted.disconnect(None).wait_for(Duration::from_secs(5));

    // QoS 1 duplicates are allowed (and counted); a message Paho dropped is not.
    let expected: Vec<(String, i32)> =
        (PUBLISHED - BUFFERED_MAX as usize..PUBLISHED).map(|i| (payload(i), 1)).collect();
    assert_delivered(
        &received,
        &expected,
        &format!(
            "only the {BUFFERED_MAX} newest messages are delivered, none Paho dropped; \
             the store's fields in Redis at the abort: {at_abort:?}"
        ),
    );
    assert_eq!(
        command_records(&at_abort).len(),
        BUFFERED_MAX as usize,
        "Redis holds one command record per message Paho kept buffered; the store's fields: {at_abort:?}"
    );
}
