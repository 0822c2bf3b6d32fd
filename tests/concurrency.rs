//! Paho calls the store from the application's publishing threads and from its
//! own send and receive threads at once, QoS 1 and QoS 2 mixed; nothing may be
//! lost or left behind.

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{assert_delivered, client, connect, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const THREADS: usize = 4;
const PER_THREAD: usize = 100;

/// The QoS of each thread's message `i`: QoS 1 and 2 alternate.
fn qos_of(i: usize) -> i32 {
    if i.is_multiple_of(2) {
        1
    } else {
        2
    }
}

#[test]
fn publishing_from_several_threads_delivers_everything_and_empties_the_store() {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let topic = support::unique_id("concurrency/topic");
    let client_id = support::unique_id("concurrent");
    let subscriber = Subscriber::start(&broker.uri(), &topic);
    let publisher = client(&broker.uri(), &client_id, RedisPersistence::with_url(&redis.url()).expect("url"));
    connect(&publisher, persistent_session());

    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (publisher, topic) = (publisher.clone(), topic.clone());
            scope.spawn(move || {
                let tokens: Vec<_> = (0..PER_THREAD)
                    .map(|i| {
                        let qos = qos_of(i);
                        publisher.publish(mqtt::Message::new(&topic, format!("t{thread}-{i:03}"), qos))
                    })
                    .collect();
                for token in tokens {
                    token.wait_for(Duration::from_secs(30)).expect("publish acknowledged");
                }
            });
        }
    });

    let expected: Vec<(String, i32)> = (0..THREADS)
        .flat_map(|thread| (0..PER_THREAD).map(move |i| (format!("t{thread}-{i:03}"), qos_of(i))))
        .collect();
    let received = subscriber.collect(expected.len(), Duration::from_secs(30), Duration::from_millis(300));
    assert_delivered(&received, &expected, "every message delivered, QoS 2 exactly once");
    let hash = support::mqtt::store_hash(&client_id, &broker.uri());
    let left: usize = redis.connection().hlen(&hash).expect("HLEN");
    assert_eq!(left, 0, "every acknowledged message's records were removed");
}
