//! Fills a store with messages for `scripts/bench-durability.sh`: publishes
//! COUNT messages (offline by default, so that every one stays in the store),
//! prints one line, then waits to be killed, so that the script can kill
//! Redis or this process, or copy the device, with the records in place.
//!
//! ```text
//! durability_fill VARIANT
//! ```
//! - VARIANT: `redis-unix` (this crate over `REDIS_UNIX_URL`, feature
//!   `unix-socket`), `redis-tcp` (`REDIS_URL`) or `paho-file` (Paho's file
//!   persistence in `FILE_DIR`).
//!
//! Environment: `MQTT_URI` (default `tcp://127.0.0.1:1883`), `CLIENT_ID`
//! (default `durability-fill-{pid}`), `COUNT` (default 200), `RATE` (messages
//! per second, default 20; 0 publishes as fast as Paho takes them), `QOS`
//! (default 1), `PAYLOAD` (bytes, default 256), `PERSIST_QOS0` (1 or 0,
//! default 1: Paho's `persist_qos0`), `ONLINE` (0 or 1, default 0: with 1 the
//! client connects to `MQTT_URI` first and waits for every delivery token),
//! `HOLD` (1 or 0, default 1: wait to be killed after the line; 0 exits).
//!
//! Output, one line once the last publish returned (and, online, every token
//! completed): `READY published=… seconds=… puts=… removes=… index_hits=…
//! round_trips=… unwritten=… hash=…` (the store's counters for the Redis
//! variants, `-` for the file persistence).

use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

type BoxError = Box<dyn std::error::Error>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn required_env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} must be set for this variant").into())
}

fn main() -> Result<(), BoxError> {
    env_logger::init();
    let variant = std::env::args().nth(1).ok_or("usage: durability_fill redis-unix|redis-tcp|paho-file")?;
    let mqtt_uri = env_or("MQTT_URI", "tcp://127.0.0.1:1883");
    let client_id = env_or("CLIENT_ID", &format!("durability-fill-{}", std::process::id()));
    let count: usize = env_or("COUNT", "200").parse()?;
    let rate: f64 = env_or("RATE", "20").parse()?;
    let qos: i32 = env_or("QOS", "1").parse()?;
    let payload = vec![0x5a_u8; env_or("PAYLOAD", "256").parse()?];
    let persist_qos0 = env_or("PERSIST_QOS0", "1") != "0";
    let online = env_or("ONLINE", "0") == "1";
    let hold = env_or("HOLD", "1") != "0";

    let mut store = None;
    let persistence = match variant.as_str() {
        "redis-unix" | "redis-tcp" => {
            let url = required_env(if variant == "redis-unix" { "REDIS_UNIX_URL" } else { "REDIS_URL" })?;
            let redis = RedisPersistence::with_url(&url)?;
            store = Some(redis.monitor());
            let boxed: Box<dyn mqtt::ClientPersistence + Send> = Box::new(redis);
            mqtt::PersistenceType::User(Box::new(boxed))
        }
        "paho-file" => mqtt::PersistenceType::FilePath(required_env("FILE_DIR")?.into()),
        other => return Err(format!("unknown variant {other:?}").into()),
    };
    let client = mqtt::CreateOptionsBuilder::new()
        .server_uri(&mqtt_uri)
        .client_id(&client_id)
        .mqtt_version(mqtt::MQTT_VERSION_3_1_1)
        .persistence(persistence)
        .persist_qos0(persist_qos0)
        // Publishing before the first connect needs all three settings.
        .send_while_disconnected(true)
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(i32::try_from(count.max(1))?)
        .create_client()?;
    if online {
        let options = mqtt::ConnectOptionsBuilder::with_mqtt_version(mqtt::MQTT_VERSION_3_1_1)
            .clean_session(false)
            .finalize();
        client.connect(options).wait_for(Duration::from_secs(10))?;
    }

    let topic = format!("durability/{client_id}");
    let start = Instant::now();
    let mut tokens = Vec::with_capacity(if online { count } else { 0 });
    for sent in 0..count {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let token = client.try_publish(mqtt::Message::new(&topic, payload.as_slice(), qos))?;
        if online {
            tokens.push(token);
        }
    }
    for token in tokens {
        token.wait_for(Duration::from_secs(30))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    if online {
        // Paho removes a sent QoS 0 command record after the token completes.
        std::thread::sleep(Duration::from_millis(500));
    }

    let counters = match &store {
        Some(redis) => {
            let stats = redis.stats();
            format!(
                "puts={} removes={} index_hits={} round_trips={} unwritten={} hash={}",
                stats.puts,
                stats.removes,
                stats.index_hits,
                stats.round_trips,
                redis.unwritten(),
                redis.hash_name().unwrap_or_default()
            )
        }
        None => "puts=- removes=- index_hits=- round_trips=- unwritten=- hash=-".to_owned(),
    };
    println!("READY published={count} seconds={seconds:.3} {counters}");
    if hold {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if online {
        client.disconnect(None).wait_for(Duration::from_secs(10))?;
    }
    Ok(())
}
