//! Redis killed and restarted (empty) in the middle of a QoS 1 stream.
//!
//! The publisher must live through it, every publish must be accepted and
//! acknowledged, every message must reach the subscriber, and once Redis is
//! back the store must be in Redis again and empty when all is acknowledged.
//! Repeated, with the outage at a different point of the stream each round.

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{assert_delivered, client, connect, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(20);
const MESSAGES: usize = 150;

fn one_round(outage_at: usize, outage_len: usize) {
    let broker = Mosquitto::start();
    let mut redis = RedisServer::start();
    let topic = support::unique_id("outage/topic");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let client_id = support::unique_id("outage");
    let persistence = RedisPersistence::builder()
        .url(redis.url())
        .connect_timeout(Duration::from_millis(300))
        .io_timeout(Duration::from_millis(300))
        .build()
        .expect("valid");
    let kept = persistence.monitor();
    let publisher = client(&broker.uri(), &client_id, persistence);
    connect(&publisher, persistent_session());

    let mut tokens = Vec::with_capacity(MESSAGES);
    for n in 0..MESSAGES {
        if n == outage_at {
            redis.kill();
        }
        if n == outage_at + outage_len {
            redis.restart();
        }
        let message = mqtt::Message::new(&topic, format!("{n:04}"), 1);
        tokens.push(publisher.try_publish(message).unwrap_or_else(|e| panic!("publish {n} refused: {e}")));
    }
    for (n, token) in tokens.into_iter().enumerate() {
        token
            .wait_for(TIMEOUT)
            .unwrap_or_else(|e| panic!("message {n} (outage at {outage_at}) not acked: {e}"));
    }
    let received = subscriber.collect(MESSAGES, TIMEOUT, Duration::from_millis(300));
    let expected: Vec<(String, i32)> = (0..MESSAGES).map(|n| (format!("{n:04}"), 1)).collect();
    assert_delivered(&received, &expected, &format!("every QoS 1 message arrives (outage at {outage_at})"));

    let hash = support::mqtt::store_hash(&client_id, &broker.uri());
    let emptied = support::wait_until(TIMEOUT, || {
        redis.connection().hlen::<_, usize>(&hash).map(|n| n == 0).unwrap_or(false)
    });
    assert!(emptied, "the store empties once everything is acknowledged");
    assert!(
        kept.stats().errors > 0 || kept.stats().reconnects > 0,
        "the outage was felt: {:?}",
        kept.stats()
    );
}

#[test]
fn a_qos1_stream_survives_redis_being_killed_and_restarted_empty() {
    support::init_logging();
    for (outage_at, outage_len) in [(10, 20), (60, 5), (120, 29)] {
        one_round(outage_at, outage_len);
    }
}
