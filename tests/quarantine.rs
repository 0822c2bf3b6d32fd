//! Quarantine at open, end to end (issue 18), with real redis-server,
//! mosquitto and Paho: a store holding five good `s-` records that real Paho
//! wrote, and records no client wrote (empty, a truncated PUBLISH, garbage
//! under `s-` and `c-`). The client starts, delivers the five once; the bad
//! ones are in the quarantine with their reasons, counted in `Stats`, listed
//! by the CLI; a second restart delivers nothing and sets nothing new aside.
//!
//! Needs the record check (`paho::restore::at_open`) to quarantine them:
//! with a check that restores everything, Paho C deletes the bad `s-`
//! records itself (`MQTTPersistence_restorePackets`) and this fails.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::admin::Stores;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{client, connect, persistent_session, Subscriber};
use support::{Mosquitto, RedisServer};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(1500);
const GOOD: usize = 5;

#[test]
fn bad_records_are_quarantined_and_good_ones_delivered_once() {
    support::init_logging();
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let topic = support::unique_id("quarantine/e2e");
    let client_id = support::unique_id("quarantine");
    let subscriber = Subscriber::start(&broker.uri(), &topic);

    // Paho resumes in-flight messages only into an existing broker session.
    let session = mqtt::CreateOptionsBuilder::new()
        .server_uri(broker.uri())
        .client_id(&client_id)
        .mqtt_version(support::mqtt::MQTT_VERSION)
        .persistence(mqtt::PersistenceType::None)
        .create_client()
        .expect("create");
    connect(&session, persistent_session());
    session.disconnect(None).wait_for(DELIVERY_TIMEOUT).expect("disconnect");
    drop(session);

    // Real Paho writes five PUBLISH records: sent to a broker that never acknowledges.
    let black_hole = BlackHoleBroker::start();
    let store = RedisPersistence::with_url(&redis.url()).expect("valid");
    let first = client(&black_hole.uri(), &client_id, store);
    connect(&first, persistent_session());
    for n in 0..GOOD {
        let _token = first.publish(mqtt::Message::new(&topic, format!("message {n}"), 1));
    }
    let written = support::mqtt::store_hash(&client_id, &black_hole.uri());
    let sent = |fields: &[String]| fields.iter().filter(|f| f.starts_with("s-")).count();
    assert!(
        support::wait_until(DELIVERY_TIMEOUT, || sent(&redis.fields(&written)) == GOOD),
        "Paho stored {GOOD} sent PUBLISH records: {:?}",
        redis.fields(&written)
    );
    drop(first);

    // Move them to the real broker's store, with records no client wrote.
    let hash = support::mqtt::store_hash(&client_id, &broker.uri());
    let mut conn = redis.connection();
    let mut good = Vec::new();
    for field in redis.fields(&written) {
        let value: Vec<u8> = conn.hget(&written, &field).expect("HGET");
        if field.starts_with("s-") {
            let () = conn.hset(&hash, &field, &value).expect("HSET");
            good.push(value);
        }
    }
    let () = conn.del(&written).expect("DEL");
    let truncated = good[0][..good[0].len() / 2].to_vec();
    let bad: [(&str, Vec<u8>); 5] = [
        ("s-90", Vec::new()),
        ("s-91", truncated),
        ("s-92", b"\xde\xad\xbe\xef garbage".to_vec()),
        ("c-93", b"\x07garbage".to_vec()),
        ("c-94", Vec::new()),
    ];
    for (key, value) in &bad {
        let () = conn.hset(&hash, *key, value).expect("HSET");
    }

    let restart = || {
        let store = RedisPersistence::with_url(&redis.url()).expect("valid");
        let handle = store.monitor();
        let restored = client(&broker.uri(), &client_id, store);
        connect(&restored, persistent_session());
        let settled = support::wait_until(DELIVERY_TIMEOUT, || redis.fields(&hash).is_empty());
        assert!(settled, "the restored messages finish and their records go: {:?}", redis.fields(&hash));
        let delivered = subscriber.collect(usize::MAX, QUIET, QUIET).len();
        restored.disconnect(None).wait_for(DELIVERY_TIMEOUT).expect("disconnect");
        (delivered, handle.stats())
    };

    let (delivered, stats) = restart();
    assert_eq!(delivered, GOOD, "each good message once");
    assert_eq!(stats.quarantined, bad.len() as u64);

    let config = RedisPersistence::builder().url(redis.url()).into_config().expect("valid");
    let mut stores = Stores::connect(&config).expect("connect");
    let named = stores.named(&client_id, &broker.uri());
    let entries = stores.quarantine(&named).expect("quarantine");
    let mut set_aside: Vec<(String, Vec<u8>)> =
        entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
    set_aside.sort();
    let mut expected: Vec<(String, Vec<u8>)> =
        bad.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    expected.sort();
    assert_eq!(set_aside, expected, "every bad record, its exact bytes");
    assert!(entries.iter().all(|e| !e.reason.is_empty()), "each with why: {entries:?}");

    #[cfg(feature = "cli")]
    {
        let listed = std::process::Command::new(env!("CARGO_BIN_EXE_paho-mqtt-redis"))
            .args([
                "quarantine",
                "list",
                &client_id,
                "--server",
                &broker.uri(),
                "--url",
                &redis.url(),
                "--json",
            ])
            .output()
            .expect("run paho-mqtt-redis");
        assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
        assert_eq!(listed.as_array().map(Vec::len), Some(bad.len()));
    }

    let (delivered, stats) = restart();
    assert_eq!(delivered, 0, "nothing again");
    assert_eq!(stats.quarantined, 0, "nothing new set aside");
    assert_eq!(stores.quarantine(&named).expect("quarantine").len(), bad.len());
}

/// An MQTT "broker" that accepts one connection, answers CONNECT with
/// CONNACK and then reads and ignores everything (as in tests/qos2_restart.rs).
struct BlackHoleBroker {
    port: u16,
}

impl BlackHoleBroker {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                swallow(stream);
            }
        });
        Self { port }
    }

    fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

fn swallow(mut stream: TcpStream) {
    let mut header = [0u8; 1];
    if stream.read_exact(&mut header).is_err() {
        return;
    }
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let mut byte = [0u8; 1];
        if stream.read_exact(&mut byte).is_err() {
            return;
        }
        length += usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).is_err() {
        return;
    }
    if stream.write_all(&[0x20, 0x02, 0x00, 0x00]).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}
