//! Captures the records of real Paho runs as test fixtures for `paho_mqtt_redis::decode`.
//!
//! ```text
//! capture_fixtures OUT_DIR      # run by scripts/capture-fixtures.sh
//! ```
//! Settings come from the environment: `REDIS_URL` (a throwaway Redis: the
//! store hashes are deleted) and `MQTT_URI` (a mosquitto). For MQTT 3.1.1 and
//! MQTT 5, three scenes each leave records of every prefix in Redis:
//!
//! - `offline`: messages published before any connect: `c-` commands.
//! - `inflight`: a client connected to a fake broker run here, which never
//!   acknowledges a QoS 1 PUBLISH (`s-`), answers a QoS 2 one with PUBREC only
//!   (`s-` + `sc-`), sends a QoS 2 PUBLISH but never its PUBREL (`r-`), and
//!   sends QoS 1 and 0 messages that the client, having no message callback,
//!   queues (`q-`).
//! - `broker`: a client subscribed at the real mosquitto without a message
//!   callback; messages published to it are queued (`q-`). MQTT 3.1.1 only:
//!   Paho C 1.3.16 never stores `q5-` records (see `synthesized_q5`), so one
//!   `q5-` record is built here as Paho would write it (`v5-synthesized`).
//!
//! Each record is written to `OUT_DIR/{version}-{scene}__{key}.bin`, byte for
//! byte as read back from the Redis hash. SUBSCRIBE and UNSUBSCRIBE commands
//! live in the store only until they are sent, so a tap between Paho and the
//! store copies every `put` and those are written from the tap
//! (`{version}-transient__{key}.bin`). `OUT_DIR/manifest.tsv` lists what each
//! scene sent, from the sender's side, for the tests to compare against.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;

#[path = "support/mqtt_wire.rs"]
mod mqtt_wire;
use mqtt_wire::{publish_packet, read_packet};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Every `put` the tap saw: key and value.
type Puts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The MQTT versions captured, with the name used in fixture file names.
const VERSIONS: [(u32, &str); 2] = [(mqtt::MQTT_VERSION_3_1_1, "v311"), (mqtt::MQTT_VERSION_5, "v5")];

/// What a scene sent, as the sender knows it: one manifest line.
struct Sent {
    scene: String,
    operation: &'static str,
    topic: String,
    qos: i32,
    retain: bool,
    message_id: Option<u16>,
    payload: Vec<u8>,
}

impl Sent {
    fn new(scene: &str, operation: &'static str, topic: &str, qos: i32) -> Self {
        Self {
            scene: scene.to_owned(),
            operation,
            topic: topic.to_owned(),
            qos,
            retain: false,
            message_id: None,
            payload: Vec::new(),
        }
    }

    fn with(mut self, retain: bool, message_id: Option<u16>, payload: &[u8]) -> Self {
        self.retain = retain;
        self.message_id = message_id;
        self.payload = payload.to_vec();
        self
    }

    fn line(&self) -> String {
        let hex: String = self.payload.iter().map(|b| format!("{b:02x}")).collect();
        let id = self.message_id.map_or("-".to_owned(), |id| id.to_string());
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.scene,
            self.operation,
            self.topic,
            self.qos,
            u8::from(self.retain),
            id,
            if hex.is_empty() { "-".to_owned() } else { hex }
        )
    }
}

/// Forwards to a [`RedisPersistence`] and keeps a copy of every `put`.
struct Tap {
    inner: RedisPersistence,
    puts: Puts,
}

impl mqtt::ClientPersistence for Tap {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        self.inner.open(client_id, server_uri)
    }
    fn close(&mut self) -> mqtt::Result<()> {
        self.inner.close()
    }
    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let value = buffers.concat();
        self.puts.lock().map_err(|_| mqtt::Error::PersistenceError)?.push((key.to_owned(), value));
        self.inner.put(key, buffers)
    }
    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        self.inner.remove(key)
    }
    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.inner.keys()
    }
    fn clear(&mut self) -> mqtt::Result<()> {
        self.inner.clear()
    }
    fn contains_key(&mut self, key: &str) -> bool {
        self.inner.contains_key(key)
    }
}

struct Capture {
    out: PathBuf,
    redis_url: String,
    mqtt_uri: String,
    manifest: Vec<Sent>,
    files: usize,
}

impl Capture {
    fn client(&self, server_uri: &str, client_id: &str, version: u32) -> Result<(mqtt::AsyncClient, Puts)> {
        let puts = Arc::new(Mutex::new(Vec::new()));
        let tap = Tap { inner: RedisPersistence::with_url(&self.redis_url)?, puts: Arc::clone(&puts) };
        let client = mqtt::CreateOptionsBuilder::new()
            .server_uri(server_uri)
            .client_id(client_id)
            .mqtt_version(version)
            .user_persistence(tap)
            .send_while_disconnected(true)
            .allow_disconnected_send_at_anytime(true)
            .create_client()?;
        Ok((client, puts))
    }

    fn redis(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.redis_url.as_str())?
            .get_connection_with_timeout(Duration::from_secs(5))?)
    }

    /// The hash of a client's store, read directly.
    fn records(&self, client_id: &str, server_uri: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let hash =
            paho_mqtt_redis::Config::default().hash_name(client_id, server_uri.trim_start_matches("tcp://"));
        Ok(redis::cmd("HGETALL").arg(hash).query(&mut self.redis()?)?)
    }

    /// Waits until the store holds a record of each prefix in `prefixes`, at least `counts` of each.
    fn wait_for(
        &self,
        client_id: &str,
        server_uri: &str,
        wanted: &[(&str, usize)],
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records = self.records(client_id, server_uri)?;
            let complete = wanted.iter().all(|(prefix, count)| {
                records.keys().filter(|key| key_prefix(key) == *prefix).count() >= *count
            });
            if complete {
                return Ok(records);
            }
            if Instant::now() > deadline {
                let keys: Vec<&String> = records.keys().collect();
                return Err(format!("{client_id}: wanted {wanted:?}, the store holds {keys:?}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn write(&mut self, scene: &str, records: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        for (key, value) in records {
            std::fs::write(self.out.join(format!("{scene}__{key}.bin")), value)?;
            self.files += 1;
        }
        println!(
            "{scene}: {} records: {}",
            records.len(),
            records.keys().cloned().collect::<Vec<_>>().join(" ")
        );
        Ok(())
    }

    fn sent(&mut self, sent: Sent) {
        self.manifest.push(sent);
    }

    /// Publishes before any connect: the messages stay queued as `c-` records.
    fn offline(&mut self, version: u32, name: &str) -> Result<()> {
        let scene = format!("{name}-offline");
        let client_id = format!("fixtures-{scene}");
        let server_uri = "tcp://127.0.0.1:9"; // never connected to
        let (client, _) = self.client(server_uri, &client_id, version)?;
        let messages: [(&str, &[u8], i32, bool); 4] = [
            ("fixtures/offline/qos0", b"qos 0, queued while offline", 0, false),
            ("fixtures/offline/qos1-retained", b"{\"temperature\": 21.5}", 1, true),
            ("fixtures/offline/qos2", b"qos 2, queued while offline", 2, false),
            ("fixtures/offline/binary", &[0x00, 0x01, 0xfe, 0xff, 0x80], 1, false),
        ];
        for (topic, payload, qos, retain) in messages {
            let mut builder =
                mqtt::MessageBuilder::new().topic(topic).payload(payload).qos(qos).retained(retain);
            if version == mqtt::MQTT_VERSION_5 {
                builder = builder.properties(v5_properties()?);
            }
            client.try_publish(builder.finalize())?;
            self.sent(Sent::new(&scene, "PUBLISH", topic, qos).with(retain, None, payload));
        }
        let records = self.wait_for(&client_id, server_uri, &[(prefix("c", version), messages.len())])?;
        self.write(&scene, &records)?;
        drop(client);
        Ok(())
    }

    /// Against the fake broker: s-, sc-, r- and q- records, plus transient subscribe/unsubscribe commands.
    fn inflight(&mut self, version: u32, name: &str) -> Result<()> {
        let scene = format!("{name}-inflight");
        let client_id = format!("fixtures-{scene}");
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let server_uri = format!("tcp://{}", listener.local_addr()?);
        let broker_log = Arc::new(Mutex::new(Vec::new()));
        let broker = {
            let log = Arc::clone(&broker_log);
            std::thread::spawn(move || fake_broker(&listener, &log))
        };
        let (client, puts) = self.client(&server_uri, &client_id, version)?;
        let options = if version == mqtt::MQTT_VERSION_5 {
            mqtt::ConnectOptionsBuilder::new_v5().clean_start(false).finalize()
        } else {
            mqtt::ConnectOptionsBuilder::with_mqtt_version(version).clean_session(false).finalize()
        };
        client.connect(options).wait_for(Duration::from_secs(10))?;
        client.subscribe("fixtures/in/#", 2).wait_for(Duration::from_secs(10))?;
        self.sent(
            Sent::new(&format!("{name}-transient"), "SUBSCRIBE", "fixtures/in/#", 2).with(false, None, b""),
        );
        client.unsubscribe("fixtures/unused/#").wait_for(Duration::from_secs(10))?;
        self.sent(
            Sent::new(&format!("{name}-transient"), "UNSUBSCRIBE", "fixtures/unused/#", 0)
                .with(false, None, b""),
        );
        // The broker sends its messages once it saw the SUBSCRIBE; ours are never completed.
        let outbound: [(&str, &[u8], i32, bool); 2] = [
            ("fixtures/out/qos1", b"qos 1, never acknowledged", 1, false),
            ("fixtures/out/qos2", b"qos 2, PUBREC only", 2, true),
        ];
        for (topic, payload, qos, retain) in outbound {
            let mut builder =
                mqtt::MessageBuilder::new().topic(topic).payload(payload).qos(qos).retained(retain);
            if version == mqtt::MQTT_VERSION_5 {
                builder = builder.properties(v5_properties()?);
            }
            drop(client.publish(builder.finalize()));
        }
        let records = self.wait_for(
            &client_id,
            &server_uri,
            &[
                (prefix("s", version), 2),
                (prefix("sc", version), 1),
                (prefix("r", version), 1),
                (prefix("q", version), if version == mqtt::MQTT_VERSION_5 { 0 } else { 2 }),
            ],
        )?;
        self.write(&scene, &records)?;
        if version == mqtt::MQTT_VERSION_5 {
            // Paho C 1.3.16 never writes q5- records (see `synthesized_q5`): build one as it would.
            let (topic, payload) = INBOUND_QOS1;
            let synthesized = BTreeMap::from([("q5-1".to_owned(), synthesized_q5(topic, payload, 1, 8))]);
            let scene = format!("{name}-synthesized");
            self.write(&scene, &synthesized)?;
            self.sent(Sent::new(&scene, "PUBLISH", topic, 1).with(false, Some(8), payload));
        }
        let log = broker_log.lock().map_err(|_| "broker log poisoned")?.clone();
        for line in log {
            let BrokerEvent { operation, topic, qos, retain, id, payload } = line;
            self.sent(Sent::new(&scene, operation, &topic, qos).with(retain, id, &payload));
        }
        let transient: BTreeMap<String, Vec<u8>> = puts
            .lock()
            .map_err(|_| "tap poisoned")?
            .iter()
            .filter(|(key, value)| {
                key_prefix(key) == prefix("c", version)
                    && value.get(..4).map(|t| t != mqtt_int(3).as_slice()).unwrap_or(false)
            })
            .cloned()
            .collect();
        if transient.len() != 2 {
            return Err(format!(
                "expected a SUBSCRIBE and an UNSUBSCRIBE command, the tap saw {}",
                transient.len()
            )
            .into());
        }
        self.write(&format!("{name}-transient"), &transient)?;
        drop(client);
        let _ = broker.join();
        Ok(())
    }

    /// At mosquitto: a subscriber without a message callback queues what arrives (`q-`).
    fn at_broker(&mut self, version: u32, name: &str) -> Result<()> {
        let scene = format!("{name}-broker");
        let client_id = format!("fixtures-{scene}");
        let server_uri = self.mqtt_uri.clone();
        let (client, _) = self.client(&server_uri, &client_id, version)?;
        let options = mqtt::ConnectOptionsBuilder::with_mqtt_version(version).finalize();
        client.connect(options).wait_for(Duration::from_secs(10))?;
        let topic = format!("fixtures/broker/{name}");
        client.subscribe(&topic, 2).wait_for(Duration::from_secs(10))?;
        let publisher = mqtt::CreateOptionsBuilder::new()
            .server_uri(&server_uri)
            .client_id(format!("{client_id}-publisher"))
            .mqtt_version(version)
            .persistence(mqtt::PersistenceType::None)
            .create_client()?;
        publisher
            .connect(mqtt::ConnectOptionsBuilder::with_mqtt_version(version).finalize())
            .wait_for(Duration::from_secs(10))?;
        for (qos, payload) in
            [(1, &b"delivered by mosquitto at qos 1"[..]), (2, b"delivered by mosquitto at qos 2")]
        {
            publisher.publish(mqtt::Message::new(&topic, payload, qos)).wait_for(Duration::from_secs(10))?;
            // The broker downgrades nothing here: the subscription is QoS 2.
            self.sent(Sent::new(&scene, "PUBLISH", &topic, qos).with(false, None, payload));
        }
        let records = self.wait_for(&client_id, &server_uri, &[(prefix("q", version), 2)])?;
        self.write(&scene, &records)?;
        drop(publisher.disconnect(None).wait_for(Duration::from_secs(5)));
        drop(client.disconnect(None).wait_for(Duration::from_secs(5)));
        Ok(())
    }
}

/// The QoS 1 message the fake broker sends (message id 8).
const INBOUND_QOS1: (&str, &[u8]) = ("fixtures/in/qos1", b"qos 1 from the broker, queued for the app");

/// A `q5-` record as `MQTTPersistence_persistQueueEntry` lays it out, with the
/// properties the fake broker sends (payload format indicator 1).
///
/// Paho C 1.3.16 never stores one: in MQTT 5 that function keeps the return
/// value of `MQTTProperties_write` (the properties' length, never 0) in `rc`
/// and then calls `pput` only `if (rc == 0 ...)`. So the MQTT 5 queue is not
/// persisted at all; this record is what it would write, for the decoder's tests.
fn synthesized_q5(topic: &str, payload: &[u8], qos: i32, id: i32) -> Vec<u8> {
    let len = |n: usize| i32::try_from(n).unwrap_or(i32::MAX).to_ne_bytes();
    let mut record = Vec::new();
    record.extend(len(payload.len()));
    record.extend(payload);
    for int in [qos, 0, 0, id] {
        record.extend(int.to_ne_bytes()); // qos, retained, dup, msgid
    }
    record.extend(topic.as_bytes());
    record.push(0);
    record.extend(len(topic.len()));
    record.extend([2, 0x01, 0x01]);
    record
}

fn v5_properties() -> Result<mqtt::Properties> {
    let mut properties = mqtt::Properties::new();
    properties.push_int(mqtt::PropertyCode::MessageExpiryInterval, 3600)?;
    properties.push_string_pair(mqtt::PropertyCode::UserProperty, "origin", "capture_fixtures")?;
    Ok(properties)
}

/// `s`, `sc`, `r`, `c` or `q` with the version's suffix and the dash: `sc5-`.
fn prefix(stem: &str, version: u32) -> &'static str {
    let v5 = version == mqtt::MQTT_VERSION_5;
    match (stem, v5) {
        ("s", false) => "s-",
        ("s", true) => "s5-",
        ("sc", false) => "sc-",
        ("sc", true) => "sc5-",
        ("r", false) => "r-",
        ("r", true) => "r5-",
        ("c", false) => "c-",
        ("c", true) => "c5-",
        ("q", false) => "q-",
        _ => "q5-",
    }
}

fn key_prefix(key: &str) -> &str {
    key.find('-').and_then(|dash| key.get(..=dash)).unwrap_or(key)
}

fn mqtt_int(value: i32) -> [u8; 4] {
    value.to_ne_bytes()
}

#[derive(Clone)]
struct BrokerEvent {
    operation: &'static str,
    topic: String,
    qos: i32,
    retain: bool,
    id: Option<u16>,
    payload: Vec<u8>,
}

/// A broker for one connection that completes nothing: enough to leave every kind of record in flight.
fn fake_broker(listener: &TcpListener, log: &Mutex<Vec<BrokerEvent>>) {
    let Ok((mut stream, _)) = listener.accept() else { return };
    let mut v5 = false;
    let record = |event: BrokerEvent| {
        if let Ok(mut log) = log.lock() {
            log.push(event);
        }
    };
    while let Some((header, body)) = read_packet(&mut stream) {
        let id = || body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let reply: Vec<u8> = match header >> 4 {
            1 => {
                v5 = body.get(6) == Some(&5);
                if v5 {
                    vec![0x20, 3, 0, 0, 0]
                } else {
                    vec![0x20, 2, 0, 0]
                }
            }
            3 => {
                let qos = (header >> 1) & 3;
                let topic_len = body.get(..2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                let topic =
                    String::from_utf8_lossy(body.get(2..2 + topic_len).unwrap_or_default()).into_owned();
                let msg_id = body.get(2 + topic_len..4 + topic_len).map(|b| u16::from_be_bytes([b[0], b[1]]));
                let mut rest = 4 + topic_len;
                if v5 {
                    let props_len = body.get(rest).copied().unwrap_or(0);
                    rest += 1 + usize::from(props_len);
                }
                record(BrokerEvent {
                    operation: "PUBLISH",
                    topic,
                    qos: i32::from(qos),
                    retain: header & 1 == 1,
                    id: msg_id,
                    payload: body.get(rest..).unwrap_or_default().to_vec(),
                });
                match (qos, msg_id) {
                    (2, Some(msg_id)) => {
                        record(BrokerEvent {
                            operation: "PUBREL",
                            topic: "-".to_owned(),
                            qos: 1,
                            retain: false,
                            id: Some(msg_id),
                            payload: Vec::new(),
                        });
                        let [hi, lo] = msg_id.to_be_bytes();
                        vec![0x50, 2, hi, lo]
                    }
                    _ => Vec::new(), // QoS 1 is never acknowledged
                }
            }
            8 => {
                let [hi, lo] = id().unwrap_or(0).to_be_bytes();
                let mut reply = if v5 { vec![0x90, 4, hi, lo, 0, 2] } else { vec![0x90, 3, hi, lo, 2] };
                let inbound: [(u8, u16, &str, &[u8]); 3] = [
                    (2, 7, "fixtures/in/qos2", b"qos 2 from the broker, PUBREL never sent"),
                    (1, 8, INBOUND_QOS1.0, INBOUND_QOS1.1),
                    (0, 0, "fixtures/in/qos0", b"qos 0 from the broker, queued for the app"),
                ];
                for (qos, msg_id, topic, payload) in inbound {
                    // MQTT 5: payload format indicator, UTF-8.
                    let properties: Option<&[u8]> = v5.then_some(&[0x01, 0x01]);
                    reply.extend(publish_packet(qos, msg_id, topic, payload, properties));
                    let operation = "PUBLISH";
                    let id = (qos > 0).then_some(msg_id);
                    let event = BrokerEvent {
                        operation,
                        topic: topic.to_owned(),
                        qos: i32::from(qos),
                        retain: false,
                        id,
                        payload: payload.to_vec(),
                    };
                    record(event);
                }
                reply
            }
            10 => {
                let [hi, lo] = id().unwrap_or(0).to_be_bytes();
                if v5 {
                    vec![0xb0, 4, hi, lo, 0, 0]
                } else {
                    vec![0xb0, 2, hi, lo]
                }
            }
            12 => vec![0xd0, 0],
            14 => break,
            _ => Vec::new(), // PUBACK, PUBREC and PUBREL from the client: never answered
        };
        if !reply.is_empty() && stream.write_all(&reply).is_err() {
            break;
        }
    }
}

fn main() -> Result<()> {
    env_logger::init();
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: capture_fixtures OUT_DIR")?);
    let mut capture = Capture {
        out: out.clone(),
        redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned()),
        mqtt_uri: std::env::var("MQTT_URI").unwrap_or_else(|_| "tcp://127.0.0.1:1883".to_owned()),
        manifest: Vec::new(),
        files: 0,
    };
    std::fs::create_dir_all(&out)?;
    for (version, name) in VERSIONS {
        capture.offline(version, name)?;
        capture.inflight(version, name)?;
        if version == mqtt::MQTT_VERSION_5 {
            println!("{name}-broker: skipped: Paho C 1.3.16 never stores q5- records (see synthesized_q5)");
        } else {
            capture.at_broker(version, name)?;
        }
    }
    write_manifest(&out, &capture.manifest)?;
    println!(
        "wrote {} records and {} manifest lines to {}",
        capture.files,
        capture.manifest.len(),
        out.display()
    );
    Ok(())
}

fn write_manifest(out: &Path, manifest: &[Sent]) -> Result<()> {
    let mut text = String::from(
        "# What each scene sent, from the sender's side (capture_fixtures).\n\
         # scene\toperation\ttopic\tqos\tretain\tmessage_id\tpayload_hex\n",
    );
    for sent in manifest {
        text.push_str(&sent.line());
    }
    let _ = writeln!(text, "# end");
    std::fs::write(out.join("manifest.tsv"), text)?;
    Ok(())
}
