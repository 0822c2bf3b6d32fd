//! Paho clients as the tests use them: MQTT 3.1.1, publishing allowed before the first connect.

use paho_mqtt::sync_channel::RecvTimeoutError;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;

/// The MQTT version of every test client.
pub const MQTT_VERSION: u32 = mqtt::MQTT_VERSION_3_1_1;

/// Create options for a client that keeps its store in `persistence` and may
/// publish while disconnected, even before its first connect.
pub fn create_options(
    server_uri: &str,
    client_id: &str,
    persistence: impl mqtt::ClientPersistence + Send + 'static,
) -> mqtt::CreateOptions {
    mqtt::CreateOptionsBuilder::new()
        .server_uri(server_uri)
        .client_id(client_id)
        .mqtt_version(MQTT_VERSION)
        .user_persistence(persistence)
        .send_while_disconnected(true)
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(100_000)
        .finalize()
}

/// A client created with [`create_options`].
pub fn client(
    server_uri: &str,
    client_id: &str,
    persistence: impl mqtt::ClientPersistence + Send + 'static,
) -> mqtt::AsyncClient {
    mqtt::AsyncClient::new(create_options(server_uri, client_id, persistence)).expect("create a Paho client")
}

/// Connect options that keep the broker session (`clean_session(false)`):
/// with a clean session Paho deletes the in-flight records it just restored.
pub fn persistent_session() -> mqtt::ConnectOptions {
    mqtt::ConnectOptionsBuilder::with_mqtt_version(MQTT_VERSION)
        .clean_session(false)
        .connect_timeout(Duration::from_secs(5))
        .finalize()
}

/// Connects and waits for the CONNACK.
pub fn connect(client: &mqtt::AsyncClient, options: mqtt::ConnectOptions) {
    client.connect(options).wait_for(Duration::from_secs(10)).expect("connect to the test broker");
}

/// A subscriber with no persistence, collecting everything published on one topic.
pub struct Subscriber {
    client: mqtt::AsyncClient,
    messages: mqtt::SyncReceiver<Option<mqtt::Message>>,
}

impl Subscriber {
    /// Subscribes to `topic` at QoS 2 and waits for the SUBACK.
    pub fn start(server_uri: &str, topic: &str) -> Self {
        let client = mqtt::CreateOptionsBuilder::new()
            .server_uri(server_uri)
            .client_id(super::unique_id("subscriber"))
            .mqtt_version(MQTT_VERSION)
            .persistence(mqtt::PersistenceType::None)
            .create_client()
            .expect("create the subscriber");
        let messages = client.start_consuming();
        let options =
            mqtt::ConnectOptionsBuilder::with_mqtt_version(MQTT_VERSION).clean_session(true).finalize();
        connect(&client, options);
        client.subscribe(topic, 2).wait_for(Duration::from_secs(10)).expect("subscribe");
        Self { client, messages }
    }

    /// The next message, or `None` when none arrived within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<mqtt::Message> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.messages.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(message)) => return Some(message),
                Ok(None) => {} // a reconnect notice; keep listening
                Err(_) => return None,
            }
        }
    }

    /// Waits until `expected` messages arrived (or `timeout` passed), then
    /// listens `quiet` longer so that duplicates would be seen too.
    pub fn collect(&self, expected: usize, timeout: Duration, quiet: Duration) -> Vec<mqtt::Message> {
        let mut received = Vec::new();
        let deadline = Instant::now() + timeout;
        let mut quiet_deadline = None;
        loop {
            let until = match quiet_deadline {
                Some(at) => at,
                None => deadline,
            };
            let left = until.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(Some(message)) => received.push(message),
                Ok(None) => {} // a reconnect notice; keep listening
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
            if received.len() >= expected && quiet_deadline.is_none() {
                quiet_deadline = Some(Instant::now() + quiet);
            }
        }
        received
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect(None).wait_for(Duration::from_secs(2));
    }
}

/// The payloads of `messages` as strings, sorted, for comparisons.
pub fn payloads(messages: &[mqtt::Message]) -> Vec<String> {
    let mut payloads: Vec<String> = messages.iter().map(|m| m.payload_str().into_owned()).collect();
    payloads.sort();
    payloads
}

/// How many times each payload arrived: duplicates are counted, not hidden.
pub fn payload_counts(messages: &[mqtt::Message]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in messages {
        *counts.entry(message.payload_str().into_owned()).or_insert(0) += 1;
    }
    counts
}

/// Checks what a subscriber `received` against the `expected` payloads, each
/// with the QoS it was published at: a QoS 2 message arrives exactly once, a
/// QoS 1 message at least once, nothing else arrives. Panics naming `what`,
/// the missing, the unexpected and every duplicate. Returns how many extra
/// QoS 1 deliveries (duplicates, allowed) arrived; the failure message counts
/// them too.
#[track_caller]
pub fn assert_delivered(received: &[mqtt::Message], expected: &[(String, i32)], what: &str) -> usize {
    let mut counts = payload_counts(received);
    let (mut missing, mut qos2_duplicates, mut qos1_duplicates) = (Vec::new(), Vec::new(), Vec::new());
    let mut qos1_extra = 0;
    for (payload, qos) in expected {
        match (counts.remove(payload).unwrap_or(0), qos) {
            (0, _) => missing.push(payload.as_str()),
            (1, _) => {}
            (n, 2) => qos2_duplicates.push(format!("{payload} x{n}")),
            (n, _) => {
                qos1_extra += n - 1;
                qos1_duplicates.push(format!("{payload} x{n}"));
            }
        }
    }
    assert!(
        missing.is_empty() && qos2_duplicates.is_empty() && counts.is_empty(),
        "{what}: {} of {} messages arrived, in {} deliveries; missing: {missing:?}; \
         QoS 2 duplicates (must be none): {qos2_duplicates:?}; unexpected: {counts:?}; \
         {qos1_extra} QoS 1 duplicates (allowed): {qos1_duplicates:?}",
        expected.len() - missing.len(),
        expected.len(),
        received.len(),
    );
    if qos1_extra > 0 {
        println!("{what}: {qos1_extra} QoS 1 duplicates (allowed): {qos1_duplicates:?}");
    }
    qos1_extra
}

/// The Redis hash of a store without a key prefix, as `open` names it: Paho
/// passes the server URI without its `tcp://`.
pub fn store_hash(client_id: &str, server_uri: &str) -> String {
    paho_mqtt_redis::Config::default().hash_name(client_id, server_uri.trim_start_matches("tcp://"))
}

/// An MQTT "broker" that accepts one connection, answers CONNECT with CONNACK
/// and then reads and ignores everything.
pub struct BlackHoleBroker {
    port: u16,
}

impl BlackHoleBroker {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                swallow(stream);
            }
        });
        Self { port }
    }

    pub fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

fn swallow(mut stream: TcpStream) {
    let mut header = [0u8; 1];
    if stream.read_exact(&mut header).is_err() {
        return;
    }
    // Skip the CONNECT's remaining length and body.
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
    // CONNACK: session not present, connection accepted.
    if stream.write_all(&[0x20, 0x02, 0x00, 0x00]).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}
