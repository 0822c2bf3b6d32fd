//! Fields that Paho never writes, put into our hash by someone else, must not
//! reach paho-mqtt: it aborts the process on a key containing a NUL byte.

mod support;

use std::time::Duration;

use paho_mqtt::ClientPersistence;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::log_capture::{lines_here, logged_here};
use support::RedisServer;

fn plant_hostile_fields(redis: &RedisServer, hash: &str) {
    let mut conn = redis.connection();
    let () = conn.hset(hash, b"s-\0nul".as_slice(), b"x".as_slice()).expect("HSET");
    let () = conn.hset(hash, b"\xff\xfe-not-utf8".as_slice(), b"x".as_slice()).expect("HSET");
    // A PUBREL of message 1, which the record check lets through.
    let () = conn.hset(hash, "sc-1", [0x62, 0x02, 0x00, 0x01].as_slice()).expect("HSET");
}

#[test]
fn keys_skips_fields_paho_could_not_take() {
    support::log_capture::install();
    let redis = RedisServer::start();
    plant_hostile_fields(&redis, "dev:broker:1883");
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    assert_eq!(store.keys().expect("keys"), ["sc-1"]);
}

#[test]
fn a_paho_client_restores_past_hostile_fields_without_aborting() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let client_id = support::unique_id("hostile");
    let server_uri = format!("tcp://127.0.0.1:{}", support::free_port());
    let hash = support::mqtt::store_hash(&client_id, &server_uri);
    plant_hostile_fields(&redis, &hash);
    // Creating the client runs Paho's restore: keys, then a get per key.
    let store = RedisPersistence::with_url(&redis.url()).expect("valid");
    let client = support::mqtt::client(&server_uri, &client_id, store);
    assert!(!client.is_connected());
    let mut fields: Vec<Vec<u8>> = redis.connection().hkeys(&hash).expect("HKEYS");
    fields.sort();
    // Paho deleted `sc-1`, a PUBREL of no stored PUBLISH (`MQTTPersistence_restorePackets`
    // removes such orphans); the skipped fields are left alone.
    assert_eq!(fields, [b"s-\0nul".to_vec(), b"\xff\xfe-not-utf8".to_vec()]);
}

const HUGE: usize = 8 * 1024 * 1024;

/// A pseudo-random, incompressible-looking value of `len` bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| support::mix(seed ^ i) as u8).collect()
}

#[test]
fn huge_and_empty_values_written_by_someone_else_are_returned_as_stored_or_set_aside() {
    let redis = RedisServer::start();
    // A QoS 1 PUBLISH of message 1 whose payload makes it 8 MiB.
    let payload = noise(HUGE, 1);
    let remaining = 2 + 1 + 2 + payload.len(); // topic length, topic, message id, payload
    let mut huge = vec![0x32];
    let mut length = remaining;
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        huge.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    huge.extend_from_slice(&[0x00, 0x01, b't', 0x00, 0x01]);
    huge.extend_from_slice(&payload);
    let mut conn = redis.connection();
    let () = conn.hset("dev:broker:1883", "s-1", huge.as_slice()).expect("HSET");
    let () = conn.hset("dev:broker:1883", "c-2", b"".as_slice()).expect("HSET");
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    // An empty command record is no command Paho can restore: set aside, not shown.
    assert_eq!(store.keys().expect("keys"), ["s-1"]);
    assert!(store.get("s-1").expect("get of 8 MiB") == huge, "8 MiB come back byte for byte");
    // Read again, past the snapshot `open` took: from Redis.
    assert!(store.get("s-1").expect("second get of 8 MiB") == huge, "8 MiB again, byte for byte");
    assert!(store.get("c-2").is_err(), "a record set aside is missing to Paho");
    let quarantine: Vec<(String, Vec<u8>)> =
        conn.hgetall(paho_mqtt_redis::Config::quarantine_name("dev:broker:1883")).expect("HGETALL");
    assert!(
        quarantine.iter().any(|(entry, value)| entry.starts_with("c-2@") && value.is_empty()),
        "the empty record is in the quarantine as it was: {quarantine:?}"
    );
}

#[test]
fn fields_named_like_paho_keys_with_odd_numbers_are_listed_as_they_are() {
    let redis = RedisServer::start();
    let odd = ["s-", "c-", "sc-abc", "r-99999999999999999999", "s--1", "s- 1", "q-0x10", " s-1", "s-1\n"];
    let mut conn = redis.connection();
    for field in odd {
        let () = conn.hset("dev:broker:1883", field, b"x".as_slice()).expect("HSET");
    }
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    store.open("dev", "broker:1883").expect("open");
    let mut keys = store.keys().expect("keys");
    keys.sort();
    let mut expected: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(keys, expected, "UTF-8 without NUL reaches Paho unchanged; Paho decides what it means");
}

/// What a real Paho client made of a planted store.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// `AsyncClient::new` failed: Paho's restore gave up on a record.
    Refused,
    /// Created and connected to the broker.
    Connected,
    /// Created, but connecting failed.
    ConnectFailed,
}

/// Creates a real Paho client on a planted store (which runs Paho's restore:
/// keys, then a get per key) and connects it to a real broker. The process
/// must not abort, whatever Paho makes of the records.
fn restore_with_a_real_client(
    redis: &RedisServer,
    plant: impl FnOnce(&mut redis::Connection, &str),
) -> Outcome {
    let broker = support::Mosquitto::start();
    let client_id = support::unique_id("hostile");
    let hash = format!("{client_id}:127.0.0.1:{}", broker.port());
    plant(&mut redis.connection(), &hash);
    let store = RedisPersistence::with_url(&redis.url()).expect("valid");
    let Ok(client) =
        paho_mqtt::AsyncClient::new(support::mqtt::create_options(&broker.uri(), &client_id, store))
    else {
        return Outcome::Refused;
    };
    let connected = client.connect(support::mqtt::persistent_session()).wait_for(Duration::from_secs(10));
    let _ = client.disconnect(None).wait_for(Duration::from_secs(5));
    if connected.is_ok() {
        Outcome::Connected
    } else {
        Outcome::ConnectFailed
    }
}

const V3_KEYS: [&str; 4] = ["c-1", "s-2", "sc-3", "r-4"];
const V5_KEYS: [&str; 4] = ["c5-5", "s5-6", "sc5-7", "r5-8"];

#[test]
fn a_paho_client_survives_empty_records() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let outcome = restore_with_a_real_client(&redis, |conn, hash| {
        for key in V3_KEYS {
            let () = conn.hset(hash, key, b"".as_slice()).expect("HSET");
        }
    });
    assert_eq!(outcome, Outcome::Connected, "Paho drops records it cannot parse and goes on");
}

#[test]
fn a_paho_client_survives_garbage_records() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let outcome = restore_with_a_real_client(&redis, |conn, hash| {
        for (n, key) in V3_KEYS.iter().enumerate() {
            for len in [1, 2, 5, 64, 4096] {
                let () =
                    conn.hset(hash, format!("{key}{len}"), noise(len, n as u64).as_slice()).expect("HSET");
            }
        }
    });
    assert_eq!(outcome, Outcome::Connected, "Paho drops records it cannot parse and goes on");
}

/// Records of an MQTT 5 client (`s5-`, `sc5-`, `r5-`) in the store of an MQTT
/// 3.1.1 client made Paho C refuse to create the client ("can't restore
/// version 5 data with a version 3 client", `MQTTPersistence_restorePackets`)
/// until someone deleted them. Garbage under those keys is now set aside, and
/// valid records are rewritten or set aside (`tests/version_change.rs`).
#[test]
fn mqtt5_records_in_a_v3_store_no_longer_make_paho_refuse_the_client() {
    support::log_capture::install();
    let redis = RedisServer::start();
    for key in V5_KEYS {
        let outcome = restore_with_a_real_client(&redis, |conn, hash| {
            let () = conn.hset(hash, key, noise(16, 5).as_slice()).expect("HSET");
        });
        assert_eq!(outcome, Outcome::Connected, "a store holding only `{key}`");
    }
}

#[test]
fn a_paho_client_survives_a_huge_record() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let outcome = restore_with_a_real_client(&redis, |conn, hash| {
        let () = conn.hset(hash, "s-1", noise(HUGE, 7).as_slice()).expect("HSET");
        let () = conn.hset(hash, "c-2", noise(HUGE, 8).as_slice()).expect("HSET");
    });
    assert_eq!(outcome, Outcome::Connected, "Paho drops records it cannot parse and goes on");
}

#[test]
fn a_store_on_a_key_of_the_wrong_type_fails_clearly() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let () = redis.connection().set("dev:broker:1883", "not a hash").expect("SET");
    let mut store = RedisPersistence::with_url(&redis.url()).expect("valid");
    // `open` reads the hash, so it is the call that refuses the key.
    let error = store.open("dev", "broker:1883").expect_err("open on a string key");
    assert!(matches!(error, paho_mqtt::Error::PersistenceError), "{error:?}");
    assert!(
        logged_here("WARN", &["open failed", "`dev:broker:1883` holds a string, not a hash"]),
        "the cause is named: {:#?}",
        lines_here()
    );
    assert_eq!(store.hash_name(), None, "a failed open leaves the store closed");
    // Every later call fails, none panics, none answers as if the store were empty.
    assert!(store.put("s-1", vec![b"x"]).is_err(), "put after the failed open");
    assert!(store.get("s-1").is_err(), "get after the failed open");
    assert!(store.keys().is_err(), "keys after the failed open");
    assert!(store.remove("s-1").is_err(), "remove after the failed open");
    assert!(store.clear().is_err(), "clear after the failed open");
    assert_eq!(store.monitor().contains("s-1"), None, "not open");
    let kept: String = redis.connection().get("dev:broker:1883").expect("GET");
    assert_eq!(kept, "not a hash", "someone else's key is left alone");
}

#[test]
fn a_paho_client_survives_a_key_of_the_wrong_type() {
    support::log_capture::install();
    let redis = RedisServer::start();
    let broker = support::Mosquitto::start();
    let client_id = support::unique_id("wrongtype");
    let hash = format!("{client_id}:127.0.0.1:{}", broker.port());
    let () = redis.connection().set(&hash, "not a hash").expect("SET");
    let store = RedisPersistence::with_url(&redis.url()).expect("valid");
    // Paho opens the store while creating the client; our `open` fails, so
    // Paho refuses to create the client, and the process does not abort.
    let created =
        paho_mqtt::AsyncClient::new(support::mqtt::create_options(&broker.uri(), &client_id, store));
    let error = created.err().expect("Paho refuses a client whose store cannot open");
    assert!(matches!(error, paho_mqtt::Error::PersistenceError), "{error:?}");
    assert!(
        logged_here("WARN", &["open failed", &format!("`{hash}` holds a string, not a hash")]),
        "the cause is named: {:#?}",
        lines_here()
    );
    let kept: String = redis.connection().get(&hash).expect("GET");
    assert_eq!(kept, "not a hash", "someone else's key is left alone");
}
