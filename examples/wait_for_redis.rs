//! Creating the client when the application may start before Redis, as the
//! troubleshooting guide shows it (`tests/readme.rs` runs it, and checks that
//! the guide shows this file).

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let redis = "redis+unix:///run/redis/redis-server.sock";
    let client = create_client_when_redis_is_up(redis, "tcp://127.0.0.1:1883", 30, Duration::from_secs(1))?;
    drop(client);
    Ok(())
}

/// Creates the client, trying again while its store cannot open (Redis not
/// up yet): at most `attempts` times, `pause` apart, then gives up.
pub fn create_client_when_redis_is_up(
    redis_url: &str,
    broker: &str,
    attempts: u32,
    pause: Duration,
) -> Result<mqtt::AsyncClient, Box<dyn std::error::Error>> {
    let mut attempt = 1;
    loop {
        let store = RedisPersistence::with_url(redis_url)?; // a new store for each attempt
        let created = mqtt::CreateOptionsBuilder::new()
            .server_uri(broker)
            .client_id("gateway-17")
            .user_persistence(store)
            .create_client();
        match created {
            Ok(client) => return Ok(client),
            Err(error) if attempt < attempts => {
                eprintln!("attempt {attempt} of {attempts}: {error} (is Redis up? the log says why)");
                std::thread::sleep(pause);
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
