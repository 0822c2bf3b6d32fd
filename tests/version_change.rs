//! A client whose MQTT version changed (a firmware update from 3.1.1 to 5, or
//! its rollback) restarts on the records the other version left, end to end
//! against mosquitto: the start never fails, every message is delivered once
//! or set aside in the quarantine, and none is delivered again at the next
//! start.
//!
//! Without the store's help, Paho C 1.3.16 sends the other version's queued
//! commands at every start (`MQTTAsync_unpersistCommand` removes `c5-N` after
//! sending a command restored from `c-N`), resends a QoS 2 PUBLISH whose
//! PUBREL it had sent (it looks for `sc5-N`, finds only `sc-N`), and refuses
//! to create an MQTT 3.1.1 client at all while the store holds an `s5-`,
//! `sc5-` or `r5-` record (`MQTTPersistence_restorePackets`).

mod support;

use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use redis::Commands;
use support::mqtt::{payload_counts, Subscriber};
use support::{Mosquitto, RedisServer};

const V3: u32 = mqtt::MQTT_VERSION_3_1_1;
const V5: u32 = mqtt::MQTT_VERSION_5;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep listening for a message that must not come.
const QUIET: Duration = Duration::from_millis(1500);

/// A broker, a Redis, and a subscriber on the topic a client id publishes to.
/// (Fields drop in order: the subscriber disconnects before the broker dies.)
struct Scene {
    subscriber: Subscriber,
    broker: Mosquitto,
    redis: RedisServer,
    topic: String,
    client_id: String,
}

impl Scene {
    fn new(name: &str) -> Self {
        support::init_logging();
        let broker = Mosquitto::start();
        let topic = support::unique_id(&format!("version/{name}"));
        Self {
            subscriber: Subscriber::start(&broker.uri(), &topic),
            broker,
            redis: RedisServer::start(),
            topic,
            client_id: support::unique_id(name),
        }
    }

    fn hash(&self) -> String {
        support::mqtt::store_hash(&self.client_id, &self.broker.uri())
    }

    /// A client of MQTT `version` on a store told the same version.
    fn client(&self, version: u32) -> mqtt::AsyncClient {
        let persistence = RedisPersistence::builder()
            .url(self.redis.url())
            .mqtt_version(version)
            .build()
            .expect("valid options");
        mqtt::CreateOptionsBuilder::new()
            .server_uri(self.broker.uri())
            .client_id(&self.client_id)
            .mqtt_version(version)
            .user_persistence(persistence)
            .send_while_disconnected(true)
            .allow_disconnected_send_at_anytime(true)
            .max_buffered_messages(100)
            .create_client()
            .unwrap_or_else(|e| panic!("an MQTT {version} client starts on the store: {e}"))
    }

    /// Starts a client of `version` on what the store holds, connects into
    /// the broker session, and returns how many copies of each payload the
    /// subscriber got; the client then disconnects.
    fn start_and_collect(&self, version: u32, expected: usize) -> Vec<(String, usize)> {
        let client = self.client(version);
        client.connect(session(version)).wait_for(DELIVERY_TIMEOUT).expect("connect");
        let received = self.subscriber.collect(expected, DELIVERY_TIMEOUT, QUIET);
        client.disconnect(None).wait_for(DELIVERY_TIMEOUT).expect("disconnect");
        payload_counts(&received).into_iter().collect()
    }

    /// Opens the broker session of the client id, as MQTT `version`, with no store.
    fn open_session(&self, version: u32) {
        let client = mqtt::CreateOptionsBuilder::new()
            .server_uri(self.broker.uri())
            .client_id(&self.client_id)
            .mqtt_version(version)
            .persistence(mqtt::PersistenceType::None)
            .create_client()
            .expect("create");
        client.connect(session(version)).wait_for(DELIVERY_TIMEOUT).expect("connect");
        client.disconnect(None).wait_for(DELIVERY_TIMEOUT).expect("disconnect");
    }

    fn seed(&self, records: &[(String, Vec<u8>)]) {
        let mut conn = self.redis.connection();
        for (key, value) in records {
            let () = conn.hset(self.hash(), key, value).expect("HSET");
        }
    }

    /// How many fields the store's quarantine holds (none when it does not exist).
    fn quarantine_fields(&self) -> usize {
        let quarantine = paho_mqtt_redis::Config::quarantine_name(&self.hash());
        self.redis.connection().hlen(quarantine).expect("HLEN")
    }
}

/// Connect options that keep the broker session, for either version.
fn session(version: u32) -> mqtt::ConnectOptions {
    if version == V5 {
        mqtt::ConnectOptionsBuilder::new_v5()
            .clean_start(false)
            .properties(mqtt::properties![mqtt::PropertyCode::SessionExpiryInterval => 3600])
            .connect_timeout(Duration::from_secs(5))
            .finalize()
    } else {
        mqtt::ConnectOptionsBuilder::with_mqtt_version(version)
            .clean_session(false)
            .connect_timeout(Duration::from_secs(5))
            .finalize()
    }
}

fn once_each(payloads: &[&str]) -> Vec<(String, usize)> {
    payloads.iter().map(|payload| ((*payload).to_owned(), 1)).collect()
}

/// Queued publishes (command records) of one version, restarted as the other.
fn queued_commands_survive(from: u32, to: u32) {
    let scene = Scene::new(&format!("commands-{from}-{to}"));
    let payloads = ["queued #1", "queued #2", "queued #3"];
    {
        let first = scene.client(from);
        for payload in payloads {
            let _token = first.publish(mqtt::Message::new(&scene.topic, payload, 1));
        }
        let hash = scene.hash();
        let stored = support::wait_until(DELIVERY_TIMEOUT, || scene.redis.fields(&hash).len() == 3);
        assert!(stored, "three command records: {:?}", scene.redis.fields(&hash));
    } // the "crash": never connected, the records stay
    assert_eq!(scene.start_and_collect(to, payloads.len()), once_each(&payloads), "after the change");
    assert_eq!(scene.redis.fields(&scene.hash()), Vec::<String>::new(), "nothing left");
    assert_eq!(scene.start_and_collect(to, 0), [], "nothing again at the next start");
}

#[test]
fn queued_publishes_of_mqtt_3_are_sent_once_by_mqtt_5() {
    queued_commands_survive(V3, V5);
}

#[test]
fn queued_publishes_of_mqtt_5_are_sent_once_by_mqtt_3() {
    queued_commands_survive(V5, V3);
}

/// An MQTT PUBLISH packet as Paho stores it: QoS `qos`, message id `id`,
/// with an MQTT 5 property block when `properties` is `Some`.
fn publish_packet(topic: &str, id: u16, qos: u8, payload: &str, properties: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(topic.len()).expect("short topic").to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    if let Some(properties) = properties {
        body.push(u8::try_from(properties.len()).expect("short properties"));
        body.extend_from_slice(properties);
    }
    body.extend_from_slice(payload.as_bytes());
    let mut packet = vec![0x30 | (qos << 1), u8::try_from(body.len()).expect("a short packet")];
    packet.extend_from_slice(&body);
    packet
}

fn key(version: u32, v3_prefix: &str, id: u16) -> String {
    let prefix = if version == V5 { v3_prefix.replace('-', "5-") } else { v3_prefix.to_owned() };
    format!("{prefix}{id}")
}

/// A sent QoS 1 PUBLISH (`s-`), a QoS 2 PUBLISH whose PUBREL was sent
/// (`s-` and `sc-`: the broker has it, it must not come again) and an
/// inbound QoS 2 PUBLISH (`r-`) of one version, restarted as the other:
/// the first two resume once, the third is set aside.
fn exchanges_survive(from: u32, to: u32) {
    let scene = Scene::new(&format!("exchanges-{from}-{to}"));
    scene.open_session(to);
    let properties: Option<&[u8]> = (from == V5).then_some(&[]);
    let pubrel = vec![0x62, 0x02, 0x00, 0x02];
    scene.seed(&[
        (key(from, "s-", 1), publish_packet(&scene.topic, 1, 1, "sent qos1", properties)),
        (key(from, "s-", 2), publish_packet(&scene.topic, 2, 2, "released qos2", properties)),
        (key(from, "sc-", 2), pubrel),
        (key(from, "r-", 3), publish_packet(&scene.topic, 3, 2, "received qos2", properties)),
    ]);
    assert_eq!(scene.start_and_collect(to, 1), once_each(&["sent qos1"]), "after the change");
    // The inbound one cannot change version: MQTT 5 hands a message to the
    // application when it arrives, MQTT 3.1.1 when its PUBREL does
    // (`MQTTProtocol_handlePubrels`), so the other version would deliver it
    // twice or never. It is set aside.
    assert_eq!(scene.redis.fields(&scene.hash()), Vec::<String>::new(), "nothing left in the store");
    assert!(scene.quarantine_fields() > 0, "the inbound record is in the quarantine");
    assert_eq!(scene.start_and_collect(to, 0), [], "nothing again at the next start");
}

#[test]
fn exchanges_of_mqtt_3_resume_once_under_mqtt_5() {
    exchanges_survive(V3, V5);
}

#[test]
fn exchanges_of_mqtt_5_resume_once_under_mqtt_3() {
    exchanges_survive(V5, V3);
}

#[test]
fn an_mqtt_5_message_with_properties_is_set_aside_for_an_mqtt_3_client() {
    let scene = Scene::new("properties-5-3");
    scene.open_session(V3);
    // A user property (0x26): an MQTT 3.1.1 client cannot send it.
    let user_property = [0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'];
    scene.seed(&[
        ("s5-1".to_owned(), publish_packet(&scene.topic, 1, 1, "with a property", Some(&user_property))),
        ("s5-2".to_owned(), publish_packet(&scene.topic, 2, 1, "plain", Some(&[]))),
    ]);
    assert_eq!(
        scene.start_and_collect(V3, 1),
        once_each(&["plain"]),
        "the client starts and sends the other"
    );
    assert_eq!(scene.redis.fields(&scene.hash()), Vec::<String>::new(), "nothing left in the store");
    assert!(scene.quarantine_fields() > 0, "the message with a property is in the quarantine");
    assert_eq!(scene.start_and_collect(V3, 0), [], "nothing again at the next start");
}
