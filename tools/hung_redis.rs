//! A client publishing 20 QoS 1 messages a second while Redis is stopped
//! (SIGSTOP) for 6 seconds: how many publishes have returned 8 seconds in,
//! how many are delivered in the end, and whether the MQTT client had to
//! reconnect.
//!
//! ```text
//! cargo run --release --features unix-socket --example hung_redis
//! ```
//!
//! 200 publishes, one every 50 ms from one thread (160 are due by 8 s);
//! Redis is stopped from 1 s to 7 s. The store uses the default timeouts
//! (`io_timeout` 2 s). Runs once over TCP and once over the Unix socket, with
//! a redis-server and a mosquitto of its own on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

const MESSAGES: usize = 200;
const INTERVAL: Duration = Duration::from_millis(50);
const STOP_AT: Duration = Duration::from_secs(1);
const RESUME_AT: Duration = Duration::from_secs(7);
const COUNT_AT: Duration = Duration::from_secs(8);

fn run(transport: &str) {
    let broker = support::Mosquitto::start();
    let redis = support::RedisServer::start();
    let url = if transport == "unix" { redis.unix_url() } else { redis.url() };
    let topic = support::unique_id("hung/stream");
    let subscriber = support::mqtt::Subscriber::start(&broker.uri(), &topic);
    let store = RedisPersistence::with_url(&url).expect("a valid URL");
    let kept = store.monitor();
    let client = support::mqtt::client(&broker.uri(), &support::unique_id("hung"), store);
    let lost = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&lost);
    client.set_connection_lost_callback(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    support::mqtt::connect(&client, support::mqtt::persistent_session());

    let returned = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let publisher = {
        let client = client.clone();
        let returned = Arc::clone(&returned);
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut tokens = Vec::new();
            for n in 0..MESSAGES {
                let due = INTERVAL * u32::try_from(n).expect("few messages");
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                tokens.push(client.publish(mqtt::Message::new(&topic, format!("message {n}"), 1)));
                returned.fetch_add(1, Ordering::SeqCst);
            }
            tokens
        })
    };
    std::thread::sleep(STOP_AT.saturating_sub(start.elapsed()));
    let frozen = redis.freeze();
    std::thread::sleep(RESUME_AT.saturating_sub(start.elapsed()));
    frozen.thaw();
    std::thread::sleep(COUNT_AT.saturating_sub(start.elapsed()));
    let by_count_at = returned.load(Ordering::SeqCst);
    let tokens = publisher.join().expect("the publisher thread");
    let acknowledged =
        tokens.into_iter().map(|token| token.wait_for(Duration::from_secs(30))).filter(Result::is_ok).count();
    let received = subscriber.collect(MESSAGES, Duration::from_secs(30), Duration::from_millis(500));
    let distinct: std::collections::BTreeSet<String> =
        support::mqtt::payloads(&received).into_iter().collect();
    println!(
        "{transport:<5} returned by {COUNT_AT:?}: {by_count_at} of 160 due | acknowledged: {acknowledged} of \
         {MESSAGES} | delivered: {} distinct of {MESSAGES} | MQTT connection lost: {} | store timeouts: {}",
        distinct.len(),
        lost.load(Ordering::SeqCst),
        kept.stats().timeouts,
    );
    let _ = client.disconnect(None).wait_for(Duration::from_secs(5));
}

fn main() {
    for transport in ["tcp", "unix"] {
        run(transport);
    }
}
