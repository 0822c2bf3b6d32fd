//! Redis restarted empty (a RAM-only Redis that died): the records of
//! messages still queued are gone from Redis. The client must not crash, the
//! log must say what happened, and every message must still be delivered: the
//! store writes the command records it still has in memory again.

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use support::mqtt::{client, connect, payloads, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const LOST: usize = 5;
const AFTER: usize = 5;

#[test]
fn records_lost_with_redis_are_logged_and_written_again_from_memory() {
    support::log_capture::install();
    let mut redis = RedisServer::start();
    let broker_port = support::free_port(); // no broker yet: the first messages stay queued
    let broker_uri = format!("tcp://127.0.0.1:{broker_port}");
    let topic = support::unique_id("restart-empty/topic");
    let store = RedisPersistence::builder()
        .url(redis.url())
        .connect_timeout(Duration::from_secs(1))
        .io_timeout(Duration::from_secs(1))
        .build()
        .expect("valid options");
    let publisher = client(&broker_uri, &support::unique_id("restart-empty"), store);
    for i in 0..LOST {
        publisher
            .try_publish(mqtt::Message::new(&topic, format!("lost-{i}"), 1))
            .expect("queued while offline");
    }

    redis.restart(); // empty: the queued `c-` records are gone

    let broker = Mosquitto::start_on(broker_port);
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    connect(&publisher, persistent_session());
    for i in 0..AFTER {
        publisher
            .try_publish(mqtt::Message::new(&topic, format!("after-{i}"), 1))
            .and_then(|token| token.wait_for(Duration::from_secs(10)).map(drop))
            .unwrap_or_else(|e| panic!("publish after-{i} after the Redis restart: {e}"));
    }
    let received = subscriber.collect(AFTER, Duration::from_secs(10), Duration::from_millis(500));
    let _ = publisher.disconnect(None).wait_for(Duration::from_secs(5));

    let received = payloads(&received);
    let after: Vec<String> = (0..AFTER).map(|i| format!("after-{i}")).collect();
    let lost_delivered = received.iter().filter(|p| p.starts_with("lost-")).count();
    let all = support::log_capture::lines().join("\n");
    assert!(
        after.iter().all(|p| received.contains(p)),
        "every message published after the restart is delivered; received {received:?}\nlog:\n{all}"
    );
    assert!(
        received.iter().all(|p| p.starts_with("lost-") || after.contains(p)),
        "nothing else arrives: {received:?}"
    );
    assert!(
        all.lines().any(|l| l.starts_with("INFO") && l.contains("reconnect")),
        "the broken connection and the reconnect are logged:\n{all}"
    );
    // The client still had those records in memory (its cache of command
    // records), so it writes them again and nothing is lost, and says so.
    assert_eq!(lost_delivered, LOST, "the queued messages are delivered too: {received:?}\nlog:\n{all}");
    assert!(
        all.lines().any(|l| l.starts_with("ERROR")
            && l.contains("differs from what Paho stored")
            && l.contains("records are written again from memory")
            && l.contains("0 messages are lost")),
        "the loss and the repair are logged:\n{all}"
    );
}
