//! How long Paho takes to restore N records when a client is created, by the
//! order `keys` lists them in: an in-memory store listing them lowest message
//! id first and highest first (the floor), against `RedisPersistence` over
//! TCP and over its Unix socket (which lists them highest first).
//!
//! ```text
//! cargo run --release --features unix-socket --example restore_order [N ...]
//! ```
//!
//! Kinds: `s-` (QoS 1 PUBLISH records sent, unacknowledged), `sc-` (QoS 2
//! messages whose PUBREL was sent: an `s-` and an `sc-` record each) and `c-`
//! (publishes queued before any connect). Records are built as Paho writes
//! them, 64-byte payloads. Each figure is the median of 3 creations of a
//! client that never connects (MQTT 3.1.1), timed around `AsyncClient::new`.
//! A redis-server is started on a free port of 127.0.0.1 and removed after.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

const SERVER_URI: &str = "tcp://127.0.0.1:1883";
const PAYLOAD: [u8; 64] = [b'p'; 64];
const TOPIC: &str = "bench/restore";

/// An in-memory store that lists its keys in a chosen order.
#[derive(Clone)]
struct MemoryStore {
    records: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    highest_first: bool,
}

impl mqtt::ClientPersistence for MemoryStore {
    fn open(&mut self, _: &str, _: &str) -> mqtt::Result<()> {
        Ok(())
    }
    fn close(&mut self) -> mqtt::Result<()> {
        Ok(())
    }
    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        self.records.lock().expect("lock").insert(key.to_owned(), buffers.concat());
        Ok(())
    }
    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.records.lock().expect("lock").get(key).cloned().ok_or(mqtt::Error::PersistenceError)
    }
    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        self.records.lock().expect("lock").remove(key);
        Ok(())
    }
    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        let mut keys: Vec<String> = self.records.lock().expect("lock").keys().cloned().collect();
        let number = |key: &String| key.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
        keys.sort_by_key(|key| (number(key), key.clone()));
        if self.highest_first {
            keys.reverse();
        }
        Ok(keys)
    }
    fn clear(&mut self) -> mqtt::Result<()> {
        self.records.lock().expect("lock").clear();
        Ok(())
    }
    /// Inverted: paho-mqtt 0.14 passes `true` as 1, which Paho C reads as "absent".
    fn contains_key(&mut self, key: &str) -> bool {
        !self.records.lock().expect("lock").contains_key(key)
    }
}

/// An MQTT 3.1.1 PUBLISH packet with message id `id`.
fn publish_packet(id: u16, qos: u8) -> Vec<u8> {
    let remaining = 2 + TOPIC.len() + 2 + PAYLOAD.len();
    let mut packet = vec![0x30 | (qos << 1), u8::try_from(remaining).expect("short packet")];
    packet.extend_from_slice(&u16::try_from(TOPIC.len()).expect("short topic").to_be_bytes());
    packet.extend_from_slice(TOPIC.as_bytes());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&PAYLOAD);
    packet
}

/// A PUBLISH command as `MQTTAsync_persistCommand` writes it (MQTT 3).
fn publish_command(token: i32) -> Vec<u8> {
    let mut record = Vec::new();
    record.extend_from_slice(&3i32.to_ne_bytes());
    record.extend_from_slice(&token.to_ne_bytes());
    record.extend_from_slice(TOPIC.as_bytes());
    record.push(0);
    record.extend_from_slice(&i32::try_from(PAYLOAD.len()).expect("short payload").to_ne_bytes());
    record.extend_from_slice(&PAYLOAD);
    record.extend_from_slice(&1i32.to_ne_bytes());
    record.extend_from_slice(&0i32.to_ne_bytes());
    record
}

/// The records of `count` messages of `kind`. Message ids cycle through
/// 1..=65535 as Paho's do; beyond that a kind has no more distinct keys.
fn records(kind: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    (1..=count)
        .flat_map(|n| {
            let id = u16::try_from(n).expect("at most 65535 messages");
            match kind {
                "s-" => vec![(format!("s-{n}"), publish_packet(id, 1))],
                "sc-" => vec![
                    (format!("s-{n}"), publish_packet(id, 2)),
                    (format!("sc-{n}"), vec![0x62, 0x02, (id >> 8) as u8, id as u8]),
                ],
                _ => vec![(format!("c-{n}"), publish_command(i32::from(id)))],
            }
        })
        .collect()
}

fn create_options(client_id: &str, persistence: mqtt::PersistenceType) -> mqtt::CreateOptions {
    mqtt::CreateOptionsBuilder::new()
        .server_uri(SERVER_URI)
        .client_id(client_id)
        .mqtt_version(mqtt::MQTT_VERSION_3_1_1)
        .persistence(persistence)
        .send_while_disconnected(true)
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(100_000)
        .finalize()
}

/// The median of 3 timed creations.
fn median_creation(client_id: &str, mut persistence: impl FnMut() -> mqtt::PersistenceType) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let options = create_options(client_id, persistence());
            let start = Instant::now();
            let client = mqtt::AsyncClient::new(options).expect("create a client");
            let took = start.elapsed();
            drop(client);
            took
        })
        .collect();
    times.sort();
    times.get(1).copied().unwrap_or_default()
}

fn user(store: impl mqtt::ClientPersistence + Send + 'static) -> mqtt::PersistenceType {
    mqtt::PersistenceType::User(Box::new(Box::new(store)))
}

fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|n| n.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![1_000, 10_000, 20_000, 30_000] } else { counts };
    let redis = support::RedisServer::start();
    let urls = [("redis-tcp", redis.url()), ("redis-unix", redis.unix_url())];
    println!(
        "kind  records  memory-lowest-first  memory-highest-first  redis-tcp  redis-unix  (ms, median of 3)"
    );
    for kind in ["s-", "sc-", "c-"] {
        for &count in &counts {
            let records = records(kind, count);
            let client_id = format!("restore-{kind}{count}");
            let mut row = Vec::new();
            for highest_first in [false, true] {
                let store = MemoryStore {
                    records: Arc::new(Mutex::new(records.iter().cloned().collect())),
                    highest_first,
                };
                row.push(median_creation(&client_id, || user(store.clone())));
                assert_eq!(
                    store.records.lock().expect("lock").len(),
                    records.len(),
                    "the restore kept every record"
                );
            }
            let hash = paho_mqtt_redis::Config::default()
                .hash_name(&client_id, SERVER_URI.trim_start_matches("tcp://"));
            let mut conn = redis.connection();
            let _: () = redis::cmd("DEL").arg(&hash).query(&mut conn).expect("DEL");
            for chunk in records.chunks(1000) {
                let mut hset = redis::cmd("HSET");
                hset.arg(&hash);
                for (key, value) in chunk {
                    hset.arg(key).arg(value);
                }
                let _: () = hset.query(&mut conn).expect("HSET");
            }
            for (_, url) in &urls {
                row.push(median_creation(&client_id, || {
                    user(RedisPersistence::with_url(url).expect("a valid URL"))
                }));
                let left: usize = redis::cmd("HLEN").arg(&hash).query(&mut conn).expect("HLEN");
                assert_eq!(left, records.len(), "the restore kept every record");
            }
            let ms: Vec<String> = row.iter().map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0)).collect();
            println!(
                "{kind:<4} {:>8}  {:>19}  {:>20}  {:>9}  {:>10}",
                records.len(),
                ms[0],
                ms[1],
                ms[2],
                ms[3]
            );
        }
    }
}
