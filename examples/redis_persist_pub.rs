//! Publishes QoS 1 messages with their in-flight state kept in Redis.
//!
//! ```text
//! cargo run --example redis_persist_pub -- [MQTT_URI] [REDIS_URL] [COUNT]
//! ```
//! Defaults: `tcp://127.0.0.1:1883`, `redis://127.0.0.1:6379/0`, 10 messages.

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let mqtt_uri = args.next().unwrap_or_else(|| "tcp://127.0.0.1:1883".to_owned());
    let redis_url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned());
    let count: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);

    let persistence = RedisPersistence::with_url(&redis_url)?;
    let client = mqtt::CreateOptionsBuilder::new()
        .server_uri(&mqtt_uri)
        .client_id("redis-persist-pub")
        .user_persistence(persistence)
        .create_client()?;

    // clean_session(false): with a clean session Paho would discard what it restored.
    let options = mqtt::ConnectOptionsBuilder::new_v3().clean_session(false).finalize();
    client.connect(options).wait_for(Duration::from_secs(10))?;

    let tokens: Vec<_> = (0..count)
        .map(|i| client.publish(mqtt::Message::new("paho-mqtt-redis/example", format!("message {i}"), 1)))
        .collect();
    for token in tokens {
        token.wait_for(Duration::from_secs(10))?;
    }
    println!("published {count} QoS 1 messages to {mqtt_uri}, persisted in {redis_url}");

    client.disconnect(None).wait_for(Duration::from_secs(10))?;
    Ok(())
}
