//! Fields that Paho never writes, put into our hash by someone else, must not
//! reach paho-mqtt: it aborts the process on a key containing a NUL byte.

mod support;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::RedisServer;

fn plant_hostile_fields(redis: &RedisServer, hash: &str) {
    let mut conn = redis.connection();
    let () = conn.hset(hash, b"s-\0nul".as_slice(), b"x".as_slice()).expect("HSET");
    let () = conn.hset(hash, b"\xff\xfe-not-utf8".as_slice(), b"x".as_slice()).expect("HSET");
    let () = conn.hset(hash, "sc-1", b"kept".as_slice()).expect("HSET");
}

#[test]
fn keys_skips_fields_paho_could_not_take() {
    support::init_logging();
    let redis = RedisServer::start();
    plant_hostile_fields(&redis, "dev:broker:1883");
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    assert_eq!(store.keys().expect("keys"), ["sc-1"]);
}

#[test]
fn a_paho_client_restores_past_hostile_fields_without_aborting() {
    support::init_logging();
    let redis = RedisServer::start();
    let client_id = support::unique_id("hostile");
    let server_uri = format!("tcp://127.0.0.1:{}", support::free_port());
    let hash = format!("{client_id}:{}", server_uri.trim_start_matches("tcp://"));
    plant_hostile_fields(&redis, &hash);
    // Creating the client runs Paho's restore: keys, then a get per key.
    let store = RedisPersistence::with_url(&redis.url()).expect("valid");
    let client = support::mqtt::client(&server_uri, &client_id, store);
    assert!(!client.is_connected());
    let mut fields: Vec<Vec<u8>> = redis.connection().hkeys(&hash).expect("HKEYS");
    fields.sort();
    // Paho deleted `sc-1`, whose value is no MQTT packet; the skipped fields are left alone.
    assert_eq!(fields, [b"s-\0nul".to_vec(), b"\xff\xfe-not-utf8".to_vec()]);
}
