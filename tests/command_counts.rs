//! Exact Redis command counts, from `INFO commandstats`, for what a Paho
//! client does most: restore its store when created, and publish online.
//!
//! Every store call is a round trip inside Paho's threads, so these counts are
//! the client's latency. They are exact for the sequences below (one message
//! at a time); a regression fails here, whatever the machine's speed.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{client, connect, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(name, calls)| ((*name).to_owned(), *calls)).collect()
}

/// The commands the client sent, from `INFO commandstats`, which also counts
/// each command a script runs under that command's name. Every script in
/// these sequences moves one message from its command record to its PUBLISH
/// record: one `HSET` and one `HDEL` inside one `EVALSHA`.
fn sent(counted: &BTreeMap<String, u64>) -> u64 {
    let evals = counted.get("evalsha").copied().unwrap_or(0);
    let total: u64 = counted.values().sum();
    total - 2 * evals
}

fn store(redis: &RedisServer) -> RedisPersistence {
    RedisPersistence::with_url(&redis.url()).expect("valid url")
}

/// Paho's restore reads every record (command records once, for their
/// sequence numbers) and asks `contains_key` per sent PUBLISH; the 0.3 store
/// sent 2N+3 commands for it. Here it is one `HGETALL`, whatever N.
#[test]
fn restoring_a_store_costs_one_command_whatever_its_size() {
    let redis = RedisServer::start();
    // No broker: the messages stay queued, each one a command record.
    let server_uri = format!("tcp://127.0.0.1:{}", support::free_port());
    let client_id = support::unique_id("restore");
    for records in [1usize, 300, 3000] {
        let first = client(&server_uri, &client_id, store(&redis));
        let queued: usize =
            redis.connection().hlen(support::mqtt::store_hash(&client_id, &server_uri)).expect("HLEN");
        let payload = vec![b'x'; 256];
        for n in queued..records {
            let qos = if n % 2 == 0 { 1 } else { 2 };
            first.try_publish(mqtt::Message::new("counts/restore", payload.clone(), qos)).expect("queued");
        }
        drop(first);

        redis.reset_command_counts();
        let restored = client(&server_uri, &client_id, store(&redis));
        // One HGETALL, and the lease's SET NX (taken before the hash is read).
        let expected = counts(&[("hgetall", 1), ("set", 1)]);
        assert_eq!(redis.command_counts(), expected, "restoring {records} records");
        drop(restored);
    }
}

/// A broker, a Redis, a connected publisher, and a subscriber to wait for.
struct Online {
    subscriber: Subscriber,
    publisher: mqtt::AsyncClient,
    _broker: Mosquitto,
    redis: RedisServer,
    topic: String,
}

impl Online {
    fn start() -> Self {
        Self::start_with(|builder| builder)
    }

    fn start_with(options: impl FnOnce(paho_mqtt_redis::Builder) -> paho_mqtt_redis::Builder) -> Self {
        support::init_logging();
        let broker = Mosquitto::start();
        let redis = RedisServer::start();
        let topic = support::unique_id("counts/online");
        let subscriber = Subscriber::start(&broker.uri(), &topic);
        let persistence = options(RedisPersistence::builder().url(redis.url())).build().expect("valid");
        let publisher = client(&broker.uri(), &support::unique_id("counts"), persistence);
        connect(&publisher, persistent_session());
        Self { subscriber, publisher, _broker: broker, redis, topic }
    }

    /// Publishes `messages` one at a time, each acknowledged before the next,
    /// and returns the commands Redis ran for them.
    fn publish_one_at_a_time(&self, messages: u64, qos: i32) -> BTreeMap<String, u64> {
        self.publish(1, qos); // the first publish after connect is not steady state
        self.redis.reset_command_counts();
        self.publish(messages, qos);
        self.redis.command_counts()
    }

    fn publish(&self, messages: u64, qos: i32) {
        for n in 0..messages {
            self.publisher
                .publish(mqtt::Message::new(&self.topic, format!("message {n}"), qos))
                .wait_for(TIMEOUT)
                .expect("acknowledged");
        }
        let received = self.subscriber.collect(messages as usize, TIMEOUT, Duration::ZERO);
        assert_eq!(received.len() as u64, messages, "every message arrives");
    }
}

/// 0.3 sent 8 commands per QoS 1 message (3 of them HDELs of keys never
/// written), 0.4 sent 4. Now 3: HSET of the command record; one script that
/// writes the PUBLISH record and removes the command record; HDEL of the
/// PUBLISH record.
#[test]
fn an_online_qos1_publish_costs_three_commands() {
    let online = Online::start();
    let messages = 50;
    let counted = online.publish_one_at_a_time(messages, 1);
    assert_eq!(counted, counts(&[("evalsha", messages), ("hdel", 2 * messages), ("hset", 2 * messages)]));
    assert_eq!(sent(&counted), 3 * messages);
}

/// With `defer_qos1_removals`, the removal of an acknowledged PUBLISH record
/// rides on the next message's command record write (a script: one HSET, one
/// HDEL), and the PUBLISH record's write still carries its command record's
/// removal (a script too): 2 commands.
#[test]
fn with_deferred_qos1_removals_a_qos1_publish_costs_two_commands() {
    let online = Online::start_with(|builder| builder.defer_qos1_removals(true));
    let messages = 50;
    let counted = online.publish_one_at_a_time(messages, 1);
    assert_eq!(counted, counts(&[("evalsha", 2 * messages), ("hdel", 2 * messages), ("hset", 2 * messages)]));
    assert_eq!(sent(&counted), 2 * messages);
}

/// Deferral never applies to QoS 2, where a record left behind by a crash
/// would duplicate the message.
#[test]
fn with_deferred_qos1_removals_a_qos2_publish_still_costs_five_commands() {
    let online = Online::start_with(|builder| builder.defer_qos1_removals(true));
    let messages = 50;
    let counted = online.publish_one_at_a_time(messages, 2);
    assert_eq!(counted, counts(&[("evalsha", messages), ("hdel", 3 * messages), ("hset", 3 * messages)]));
    assert_eq!(sent(&counted), 5 * messages);
}

/// QoS 2 adds the PUBREL record (HSET at PUBREC, HDEL at PUBCOMP). Its
/// PUBLISH and PUBREL records are removed at once, never deferred: a crash
/// with either left behind would make Paho resume a completed exchange.
#[test]
fn an_online_qos2_publish_costs_five_commands() {
    let online = Online::start();
    let messages = 50;
    let counted = online.publish_one_at_a_time(messages, 2);
    assert_eq!(counted, counts(&[("evalsha", messages), ("hdel", 3 * messages), ("hset", 3 * messages)]));
    assert_eq!(sent(&counted), 5 * messages);
}

/// Published in a burst, command records are still read back from memory and
/// absent keys never cost a round trip: 3 commands per message.
#[test]
fn a_burst_of_qos1_publishes_costs_three_commands_each() {
    let online = Online::start();
    let messages = 500u64;
    online.publish(1, 1);
    online.redis.reset_command_counts();
    let tokens: Vec<_> = (0..messages)
        .map(|n| online.publisher.publish(mqtt::Message::new(&online.topic, format!("burst {n}"), 1)))
        .collect();
    for token in tokens {
        token.wait_for(TIMEOUT).expect("acknowledged");
    }
    let counted = online.redis.command_counts();
    assert_eq!(sent(&counted), 3 * messages, "{counted:?}");
    assert!(!counted.contains_key("hget"), "every read-back came from memory: {counted:?}");
    assert_eq!(online.subscriber.collect(messages as usize, TIMEOUT, Duration::ZERO).len() as u64, messages);
}
