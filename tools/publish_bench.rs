//! End-to-end QoS 1 publish benchmark: one client publishes COUNT messages to
//! a broker with its in-flight state in the chosen store, and prints one line
//! of results. `scripts/bench-publish.sh` starts the servers and runs every
//! variant several times, alternating.
//!
//! ```text
//! publish_bench VARIANT MODE COUNT
//! ```
//! - VARIANT: `redis-tcp`, `redis-unix` (this crate), `naive-tcp`,
//!   `naive-unix` (the 0.3 algorithm: one Redis command per callback),
//!   `paho-file` (Paho's file persistence in `FILE_DIR`), `none`.
//! - MODE: `window` (at most `WINDOW` messages unacknowledged, default 64) or
//!   `sequential` (each publish waits for its PUBACK).
//!
//! Environment: `MQTT_URI`, `REDIS_URL`, `REDIS_UNIX_URL`, `FILE_DIR`,
//! `PAYLOAD` (bytes, default 256), `WINDOW`, `CLIENT_ID` (default
//! `publish-bench-{pid}`), `RATE` (messages per second: paces the publishing,
//! as a device sending telemetry would; default unpaced).
//!
//! Output, one line: `RESULT variant=… mode=… messages=… seconds=…
//! msgs_per_s=… write_bytes=… cancelled_write_bytes=…`, where the last two are
//! this process's `/proc/self/io` counters over the publishing (bytes it caused
//! to be written to block devices), or `-1` where the kernel does not count them.

#[path = "../tests/support/legacy.rs"]
mod legacy;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

use legacy::LegacyStore;

type BoxError = Box<dyn std::error::Error>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn required_env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} must be set for this variant").into())
}

fn persistence(variant: &str) -> Result<mqtt::PersistenceType, BoxError> {
    let user = |store: Box<dyn mqtt::ClientPersistence + Send>| mqtt::PersistenceType::User(Box::new(store));
    Ok(match variant {
        "redis-tcp" => user(Box::new(RedisPersistence::with_url(&required_env("REDIS_URL")?)?)),
        "redis-unix" => user(Box::new(RedisPersistence::with_url(&required_env("REDIS_UNIX_URL")?)?)),
        "redis-tcp-defer" => user(Box::new(deferring(&required_env("REDIS_URL")?)?)),
        "redis-unix-defer" => user(Box::new(deferring(&required_env("REDIS_UNIX_URL")?)?)),
        "naive-tcp" => user(Box::new(LegacyStore::new(&required_env("REDIS_URL")?))),
        "naive-unix" => user(Box::new(LegacyStore::new(&required_env("REDIS_UNIX_URL")?))),
        "paho-file" => mqtt::PersistenceType::FilePath(required_env("FILE_DIR")?.into()),
        "none" => mqtt::PersistenceType::None,
        other => return Err(format!("unknown variant {other:?}").into()),
    })
}

/// The store with `defer_qos1_removals`: 3 commands in 2 round trips per QoS 1 message.
fn deferring(url: &str) -> Result<RedisPersistence, BoxError> {
    Ok(RedisPersistence::builder().url(url).defer_qos1_removals(true).build()?)
}

/// `write_bytes` and `cancelled_write_bytes` of this process, if the kernel counts them.
fn io_counters() -> Option<(i64, i64)> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| {
        io.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(": ")?.trim().parse::<i64>().ok())
    };
    Some((field("write_bytes")?, field("cancelled_write_bytes")?))
}

fn main() -> Result<(), BoxError> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let usage = "usage: publish_bench VARIANT window|sequential COUNT";
    let variant = args.next().ok_or(usage)?;
    let mode = args.next().ok_or(usage)?;
    let count: usize = args.next().ok_or(usage)?.parse()?;
    let mqtt_uri = env_or("MQTT_URI", "tcp://127.0.0.1:1883");
    let payload = vec![0x5a_u8; env_or("PAYLOAD", "256").parse()?];
    let window: usize = match mode.as_str() {
        "window" => env_or("WINDOW", "64").parse()?,
        "sequential" => 1,
        other => return Err(format!("unknown mode {other:?}; {usage}").into()),
    };
    let rate: f64 = env_or("RATE", "0").parse()?;
    let client_id = env_or("CLIENT_ID", &format!("publish-bench-{}", std::process::id()));

    let client = mqtt::CreateOptionsBuilder::new()
        .server_uri(&mqtt_uri)
        .client_id(&client_id)
        .mqtt_version(mqtt::MQTT_VERSION_3_1_1)
        .persistence(persistence(&variant)?)
        .create_client()?;
    // A persistent session, as a client that relies on its store would use;
    // max_inflight above the window so that Paho never holds messages back.
    let options = mqtt::ConnectOptionsBuilder::with_mqtt_version(mqtt::MQTT_VERSION_3_1_1)
        .clean_session(false)
        .max_inflight(i32::try_from(window.saturating_add(16))?)
        .finalize();
    client.connect(options).wait_for(Duration::from_secs(10))?;
    let topic = format!("bench/publish/{client_id}");

    let io_before = io_counters();
    let start = Instant::now();
    let mut unacknowledged: VecDeque<mqtt::DeliveryToken> = VecDeque::with_capacity(window);
    for sent in 0..count {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        if unacknowledged.len() >= window {
            if let Some(token) = unacknowledged.pop_front() {
                token.wait_for(Duration::from_secs(30))?;
            }
        }
        unacknowledged.push_back(client.publish(mqtt::Message::new(&topic, payload.as_slice(), 1)));
    }
    for token in unacknowledged {
        token.wait_for(Duration::from_secs(30))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let io_after = io_counters();

    client.disconnect(None).wait_for(Duration::from_secs(10))?;
    let (write_bytes, cancelled) = match (io_before, io_after) {
        (Some(before), Some(after)) => (after.0 - before.0, after.1 - before.1),
        _ => (-1, -1),
    };
    println!(
        "RESULT variant={variant} mode={mode} messages={count} seconds={seconds:.6} msgs_per_s={:.1} \
         write_bytes={write_bytes} cancelled_write_bytes={cancelled}",
        count as f64 / seconds
    );
    Ok(())
}
