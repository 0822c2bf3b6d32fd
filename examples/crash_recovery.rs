//! Crash recovery in two runs of one program.
//!
//! ```text
//! crash_recovery buffer   # publish COUNT QoS 1 messages while offline, then abort()
//! crash_recovery deliver  # restore them from Redis, connect, wait until all are acknowledged
//! ```
//! Settings come from the environment: `MQTT_URI` (default `tcp://127.0.0.1:1883`),
//! `REDIS_URL` (default `redis://127.0.0.1:6379/0`), `COUNT` (default 10),
//! `CLIENT_ID` (default `crash-recovery-demo`), `TOPIC` (default `demo/crash-recovery`).
//! `scripts/demo.sh` runs both against a throwaway Redis and mosquitto.

use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;

struct Settings {
    mqtt_uri: String,
    redis_url: String,
    count: usize,
    client_id: String,
    topic: String,
}

impl Settings {
    fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Ok(Self {
            mqtt_uri: var("MQTT_URI", "tcp://127.0.0.1:1883"),
            redis_url: var("REDIS_URL", "redis://127.0.0.1:6379/0"),
            count: var("COUNT", "10").parse()?,
            client_id: var("CLIENT_ID", "crash-recovery-demo"),
            topic: var("TOPIC", "demo/crash-recovery"),
        })
    }

    fn client(&self) -> Result<mqtt::AsyncClient, Box<dyn std::error::Error>> {
        let persistence = RedisPersistence::with_url(&self.redis_url)?;
        Ok(mqtt::CreateOptionsBuilder::new()
            .server_uri(&self.mqtt_uri)
            .client_id(&self.client_id)
            .mqtt_version(mqtt::MQTT_VERSION_3_1_1)
            .user_persistence(persistence)
            // Publishing before the first connect needs all three settings.
            .send_while_disconnected(true)
            .allow_disconnected_send_at_anytime(true)
            .create_client()?)
    }

    /// Records left in the store, read directly from Redis.
    fn stored_records(&self) -> Result<usize, Box<dyn std::error::Error>> {
        let hash = paho_mqtt_redis::Config::default()
            .hash_name(&self.client_id, self.mqtt_uri.trim_start_matches("tcp://"));
        let mut conn = redis::Client::open(self.redis_url.as_str())?.get_connection()?;
        Ok(conn.hlen(hash)?)
    }
}

fn buffer(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let client = settings.client()?;
    for i in 0..settings.count {
        client.try_publish(mqtt::Message::new(&settings.topic, format!("message {i}"), 1))?;
    }
    println!(
        "buffered {} QoS 1 messages while offline; {} records in Redis",
        settings.count,
        settings.stored_records()?
    );
    println!("simulating a crash: abort()");
    std::process::abort();
}

fn deliver(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    println!("restoring {} records from Redis", settings.stored_records()?);
    let client = settings.client()?;
    let options = mqtt::ConnectOptionsBuilder::new_v3().clean_session(false).finalize();
    client.connect(options).wait_for(Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while settings.stored_records()? > 0 {
        if Instant::now() > deadline {
            return Err("messages still unacknowledged after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("every restored message was acknowledged by the broker; the store is empty");
    client.disconnect(None).wait_for(Duration::from_secs(10))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let settings = Settings::from_env()?;
    match std::env::args().nth(1).as_deref() {
        Some("buffer") => buffer(&settings),
        Some("deliver") => deliver(&settings),
        _ => Err("usage: crash_recovery buffer|deliver".into()),
    }
}
