//! The README's quick start: one QoS 1 message published with its in-flight
//! state in Redis. `tests/readme.rs` runs `publish_one` against a real
//! redis-server and mosquitto, and checks that the README shows this file.
//!
//! ```text
//! cargo run --example quick_start      # Redis on 127.0.0.1:6379, broker on 127.0.0.1:1883
//! ```

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Paho reports a failed store as a bare "persistence error"; the store
    // logs the cause through `log`, so set up a logger (RUST_LOG=info).
    env_logger::init();
    publish_one("redis://127.0.0.1:6379/0", "tcp://127.0.0.1:1883")
}

/// Publishes one QoS 1 message, in flight in Redis until the broker acknowledges it.
pub fn publish_one(redis_url: &str, broker: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = RedisPersistence::with_url(redis_url)?;
    let client = mqtt::CreateOptionsBuilder::new()
        .server_uri(broker)
        .client_id("gateway-17")
        .user_persistence(store)
        .create_client()?; // opens the store: restores the previous run's messages

    let options = mqtt::ConnectOptionsBuilder::new_v3()
        .clean_session(false) // with a clean session Paho discards what it restored
        .max_inflight(32)
        .retry_interval(Duration::from_secs(1))
        .finalize();
    client.connect(options).wait()?;
    client.publish(mqtt::Message::new("telemetry", "21.5", 1)).wait()?;
    client.disconnect(None).wait()?;
    Ok(())
}
