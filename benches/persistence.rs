//! Store calls one by one: `RedisPersistence` against the 0.3 algorithm (one
//! Redis command per callback, rebuilt in `tests/support/legacy.rs`), over
//! TCP and a Unix socket, against a RAM-only redis-server started here.
//!
//! ```text
//! cargo bench --features unix-socket --bench persistence
//! ```
//!
//! Groups:
//! - `put`: one PUBLISH record (`s-` key), header and payload as two buffers.
//! - `get`: reading that record back (a Redis `HGET` for both stores).
//! - `remove`: removing a stored `s-` record (timed alone; it is written
//!   again, untimed, before each removal).
//! - `remove_absent`: removing a key never written, as Paho does for three of
//!   the four keys it removes per acknowledged QoS 1 message.
//! - `keys`: listing a store of 10, 100 or 1000 records.
//! - `qos1_cycle`: the eight calls Paho C 1.3.16 makes for one online QoS 1
//!   publish (write and read back the command record, remove it, write the
//!   PUBLISH record, then remove `s5-`, `sc5-`, `s-` and `sc-` on PUBACK).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;

use support::legacy::LegacyStore;
use support::RedisServer;

const PAYLOAD_SIZES: [usize; 6] = [64, 256, 1024, 4096, 16 * 1024, 64 * 1024];

/// The fixed part of a PUBLISH record that Paho passes as a separate buffer.
const HEADER: [u8; 16] = [0x32; 16];

const SERVER_URI: &str = "127.0.0.1:1883";

/// One store under test, opened on its own hash.
struct Variant {
    name: &'static str,
    store: Box<dyn ClientPersistence>,
}

/// Every store on every transport, each opened on a fresh hash.
fn variants(redis: &RedisServer, purpose: &str) -> Vec<Variant> {
    let urls = [("tcp", redis.url()), ("unix", redis.unix_url())];
    let mut variants = Vec::new();
    for (transport, url) in urls {
        let ours: Box<dyn ClientPersistence> =
            Box::new(RedisPersistence::with_url(&url).expect("a valid Redis URL"));
        let naive: Box<dyn ClientPersistence> = Box::new(LegacyStore::new(&url));
        let names = match transport {
            "tcp" => ["redis-tcp", "naive-tcp"],
            _ => ["redis-unix", "naive-unix"],
        };
        for (name, mut store) in names.into_iter().zip([ours, naive]) {
            store.open(&format!("bench-{purpose}-{name}"), SERVER_URI).expect("open the store");
            variants.push(Variant { name, store });
        }
    }
    variants
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn put(c: &mut Criterion) {
    let redis = RedisServer::start();
    let mut variants = variants(&redis, "put");
    let mut group = c.benchmark_group("put");
    for size in PAYLOAD_SIZES {
        let body = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        for variant in &mut variants {
            group.bench_with_input(BenchmarkId::new(variant.name, size), &body, |b, body| {
                b.iter(|| variant.store.put("s-1", vec![&HEADER, body]).expect("put"));
            });
        }
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let redis = RedisServer::start();
    let mut variants = variants(&redis, "get");
    let mut group = c.benchmark_group("get");
    for size in PAYLOAD_SIZES {
        let body = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        for variant in &mut variants {
            variant.store.put("s-1", vec![&HEADER, &body]).expect("put");
            group.bench_function(BenchmarkId::new(variant.name, size), |b| {
                b.iter(|| black_box(variant.store.get("s-1").expect("get")));
            });
        }
    }
    group.finish();
}

fn remove(c: &mut Criterion) {
    let redis = RedisServer::start();
    let mut variants = variants(&redis, "remove");
    let mut group = c.benchmark_group("remove");
    for size in PAYLOAD_SIZES {
        let body = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        for variant in &mut variants {
            group.bench_function(BenchmarkId::new(variant.name, size), |b| {
                b.iter_custom(|iterations| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iterations {
                        variant.store.put("s-1", vec![&HEADER, &body]).expect("put");
                        let start = Instant::now();
                        variant.store.remove("s-1").expect("remove");
                        timed += start.elapsed();
                    }
                    timed
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("remove_absent");
    for variant in &mut variants {
        group.bench_function(variant.name, |b| {
            b.iter(|| variant.store.remove("sc-1").expect("remove"));
        });
    }
    group.finish();
}

fn keys(c: &mut Criterion) {
    let redis = RedisServer::start();
    let mut variants = variants(&redis, "keys");
    let body = payload(256);
    let mut group = c.benchmark_group("keys");
    let mut stored = 0;
    for records in [10, 100, 1000] {
        group.throughput(Throughput::Elements(records as u64));
        for variant in &mut variants {
            for id in stored..records {
                variant.store.put(&format!("s-{}", id + 1), vec![&HEADER, &body]).expect("put");
            }
            assert_eq!(variant.store.keys().expect("keys").len(), records, "{}", variant.name);
            group.bench_function(BenchmarkId::new(variant.name, records), |b| {
                b.iter(|| black_box(variant.store.keys().expect("keys")));
            });
        }
        stored = records;
    }
    group.finish();
}

fn qos1_cycle(c: &mut Criterion) {
    let redis = RedisServer::start();
    let mut variants = variants(&redis, "cycle");
    let mut group = c.benchmark_group("qos1_cycle");
    for size in PAYLOAD_SIZES {
        let body = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        for variant in &mut variants {
            let mut sequence: u32 = 0;
            group.bench_function(BenchmarkId::new(variant.name, size), |b| {
                b.iter(|| {
                    sequence = sequence % 65_535 + 1;
                    let store = &mut variant.store;
                    let command = format!("c-{sequence}");
                    store.put(&command, vec![&HEADER, &body]).expect("put c-");
                    black_box(store.get(&command).expect("get c-"));
                    store.remove(&command).expect("remove c-");
                    store.put(&format!("s-{sequence}"), vec![&HEADER, &body]).expect("put s-");
                    for stem in ["s5-", "sc5-", "s-", "sc-"] {
                        store.remove(&format!("{stem}{sequence}")).expect("remove on PUBACK");
                    }
                });
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = put, get, remove, keys, qos1_cycle
}
criterion_main!(benches);
