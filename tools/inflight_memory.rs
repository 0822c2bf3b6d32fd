//! How much memory a publisher needs to hold many QoS 1 messages in flight.
//!
//! ```text
//! inflight_memory [REDIS_URL] [COUNT] [PAYLOAD_BYTES]
//! ```
//! Defaults: `redis://127.0.0.1:6379/0`, 10000 messages of 64 bytes.
//!
//! The client publishes COUNT QoS 1 messages while no broker is reachable, so
//! every one stays in flight: Paho keeps it queued in memory and the store
//! keeps its record in Redis. The program prints the process's resident memory
//! (`VmRSS`, and its peak `VmHWM`, from `/proc/self/status`) before and after,
//! then deletes its records. `scripts/embedded-figures.sh` runs it per target.
//!
//! Under qemu-user, `/proc/self/status` describes the emulator process: the
//! figures include qemu's own memory and its translated-code cache.

use std::time::{SystemTime, UNIX_EPOCH};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;

/// Nothing listens on port 1 of 127.0.0.1, so the client never connects.
const UNREACHABLE_BROKER: &str = "tcp://127.0.0.1:1";

/// `VmRSS` and `VmHWM` of this process, in kB.
fn resident_kb() -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64, Box<dyn std::error::Error>> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in /proc/self/status"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let redis_url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned());
    let count: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10_000);
    let payload_bytes: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(64);

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
    let client_id = format!("inflight-memory-{}-{nanos}", std::process::id());
    let client = mqtt::CreateOptionsBuilder::new()
        .server_uri(UNREACHABLE_BROKER)
        .client_id(&client_id)
        .mqtt_version(mqtt::MQTT_VERSION_3_1_1)
        .user_persistence(RedisPersistence::with_url(&redis_url)?)
        // Publishing before the first connect needs all three settings.
        .send_while_disconnected(true)
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(i32::try_from(count)?.saturating_add(1))
        .create_client()?;

    let (rss_before, hwm_before) = resident_kb()?;
    let payload = vec![b'x'; payload_bytes];
    for _ in 0..count {
        client.try_publish(mqtt::Message::new("telemetry/inflight", payload.as_slice(), 1))?;
    }
    let (rss_after, hwm_after) = resident_kb()?;

    let hash = paho_mqtt_redis::Config::default()
        .hash_name(&client_id, UNREACHABLE_BROKER.trim_start_matches("tcp://"));
    let mut redis = redis::Client::open(redis_url.as_str())?.get_connection()?;
    let records: usize = redis.hlen(&hash)?;
    let redis_bytes: u64 =
        redis::cmd("MEMORY").arg("USAGE").arg(&hash).arg("SAMPLES").arg(0).query(&mut redis)?;
    println!("in flight: {count} QoS 1 messages of {payload_bytes} bytes; {records} records in Redis");
    println!("Redis holds them in {} kB (MEMORY USAGE of the hash)", redis_bytes / 1024);
    println!("before publishing: VmRSS {rss_before} kB, VmHWM {hwm_before} kB");
    println!("after publishing:  VmRSS {rss_after} kB, VmHWM {hwm_after} kB");
    println!("growth while publishing: {} kB", rss_after.saturating_sub(rss_before));

    drop(client);
    redis.del::<_, ()>(&hash)?;
    if records != usize::try_from(count)? {
        return Err(format!("expected {count} records in Redis, found {records}").into());
    }
    Ok(())
}
