//! Restoring N buffered QoS 1 messages when an `AsyncClient` is created:
//! `RedisPersistence` against the 0.3 algorithm (one Redis command per
//! callback, `tests/support/legacy.rs`) and Paho's own file persistence.
//!
//! ```text
//! cargo bench --bench restore
//! ```
//!
//! For each N, a first client buffers N QoS 1 publishes of 256 bytes while
//! offline (MQTT 3.1.1, never connected), once into Redis and once into a
//! file-persistence directory, and is dropped: a client that never connected
//! keeps its records. Each iteration then creates a client with the same id
//! (Paho reads every record back, in `AsyncClient::new`) and times that
//! creation; the client is dropped untimed. Creation does not change the
//! records, so every iteration restores the same N.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;

use support::legacy::LegacyStore;
use support::RedisServer;

const COUNTS: [usize; 3] = [1_000, 5_000, 20_000];
const SERVER_URI: &str = "tcp://127.0.0.1:1883";
const PAYLOAD_SIZE: usize = 256;

/// A client that may publish before its first connect; its store is `persistence`.
fn create_options(client_id: &str, persistence: mqtt::PersistenceType) -> mqtt::CreateOptions {
    mqtt::CreateOptionsBuilder::new()
        .server_uri(SERVER_URI)
        .client_id(client_id)
        .mqtt_version(support::mqtt::MQTT_VERSION)
        .persistence(persistence)
        .send_while_disconnected(true)
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(100_000)
        .finalize()
}

fn user(persistence: impl mqtt::ClientPersistence + Send + 'static) -> mqtt::PersistenceType {
    mqtt::PersistenceType::User(Box::new(Box::new(persistence)))
}

/// Buffers `count` QoS 1 messages in a never-connected client, then drops it.
fn buffer_offline(client_id: &str, persistence: mqtt::PersistenceType, count: usize) {
    let client = mqtt::AsyncClient::new(create_options(client_id, persistence)).expect("create a client");
    let payload = vec![b'x'; PAYLOAD_SIZE];
    for _ in 0..count {
        // The token completes only after a connect that never comes; the record is written now.
        drop(client.publish(mqtt::Message::new("bench/restore", payload.clone(), 1)));
    }
}

/// Files under `dir`, in every subdirectory (Paho makes one per client).
fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read the persistence directory")
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files_in(&path)
            } else {
                1
            }
        })
        .sum()
}

/// Times client creations only; each client is dropped untimed.
fn time_creations(
    iterations: u64,
    mut persistence: impl FnMut() -> mqtt::PersistenceType,
    id: &str,
) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iterations {
        let options = create_options(id, persistence());
        let start = Instant::now();
        let client = mqtt::AsyncClient::new(options).expect("create a client");
        timed += start.elapsed();
        drop(client);
    }
    timed
}

fn restore(c: &mut Criterion) {
    let redis = RedisServer::start();
    let url = redis.url();
    let files = tempfile::Builder::new().prefix("pmr-bench-restore-").tempdir().expect("a temp dir");

    let mut group = c.benchmark_group("restore");
    group.sample_size(10).warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(5));
    for count in COUNTS {
        group.throughput(Throughput::Elements(count as u64));

        let id = format!("bench-restore-{count}");
        buffer_offline(&id, user(RedisPersistence::with_url(&url).expect("a valid URL")), count);
        let hash = paho_mqtt_redis::Config::default().hash_name(&id, SERVER_URI.trim_start_matches("tcp://"));
        let stored: usize = redis.connection().hlen(&hash).expect("HLEN");
        assert_eq!(stored, count, "records buffered in Redis");

        group.bench_function(BenchmarkId::new("redis-tcp", count), |b| {
            b.iter_custom(|n| {
                time_creations(n, || user(RedisPersistence::with_url(&url).expect("a valid URL")), &id)
            });
        });
        group.bench_function(BenchmarkId::new("naive-tcp", count), |b| {
            b.iter_custom(|n| time_creations(n, || user(LegacyStore::new(&url)), &id));
        });
        let still: usize = redis.connection().hlen(&hash).expect("HLEN");
        assert_eq!(still, count, "restoring must leave the records as they were");

        let dir = files.path().join(count.to_string());
        std::fs::create_dir_all(&dir).expect("create the persistence directory");
        buffer_offline(&id, mqtt::PersistenceType::FilePath(dir.clone()), count);
        assert_eq!(files_in(&dir), count, "records buffered in files");
        group.bench_function(BenchmarkId::new("paho-file", count), |b| {
            b.iter_custom(|n| time_creations(n, || mqtt::PersistenceType::FilePath(dir.clone()), &id));
        });
        assert_eq!(files_in(&dir), count, "restoring must leave the files as they were");
    }
    group.finish();
}

criterion_group!(benches, restore);
criterion_main!(benches);
