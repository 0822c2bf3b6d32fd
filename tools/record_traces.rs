//! Records the persistence calls real Paho clients make, as trace fixtures for
//! the crash-point checker.
//!
//! ```text
//! record_traces OUT_DIR [SCENARIO_FILTER...]   # run by scripts/record-traces.sh
//! ```
//! `MQTT_URI` names a throwaway mosquitto (default `tcp://127.0.0.1:1883`).
//! Every client of a scenario persists into one in-memory map through a
//! [`Recorder`], which writes one line per call while it holds the map's lock,
//! so the lines are in the order Paho's threads got the lock. A filter keeps
//! only the scenarios whose file name contains one of the words given. The
//! format is described in tests/fixtures/traces/README.md.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;

#[path = "support/mqtt_wire.rs"]
mod mqtt_wire;
use mqtt_wire::{publish_packet, read_packet};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long any one step may take before the scenario fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The store and the trace, behind one lock so that a line's position is the call's.
#[derive(Default)]
struct Shared {
    data: BTreeMap<String, Vec<u8>>,
    lines: Vec<String>,
}

/// A handle on one scenario's store and trace; clones share both, as two
/// processes on one Redis would.
#[derive(Clone, Default)]
struct Trace(Arc<Mutex<Shared>>);

impl Trace {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic on one Paho thread must not lose the rest of the trace.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn comment(&self, text: &str) {
        self.lock().lines.push(format!("# {text}"));
    }

    fn event(&self, text: &str) {
        self.lock().lines.push(format!("# event: {text}"));
    }

    fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    fn keys(&self) -> Vec<String> {
        self.lock().data.keys().cloned().collect()
    }

    fn count_keys(&self, prefix: &str) -> usize {
        self.lock().data.keys().filter(|key| key.starts_with(prefix)).count()
    }

    /// Polls the store until `done` holds for it.
    fn wait_until(&self, what: &str, done: impl Fn(&BTreeMap<String, Vec<u8>>) -> bool) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if done(&self.lock().data) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}; the store holds {:?}", self.keys()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until no key of the store starts with one of `prefixes`.
    fn wait_without(&self, prefixes: &[&str]) -> Result<()> {
        self.wait_until(&format!("no {prefixes:?} records"), |data| {
            !data.keys().any(|key| prefixes.iter().any(|prefix| key.starts_with(prefix)))
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An in-memory `ClientPersistence` that writes every call to its trace.
struct Recorder {
    trace: Trace,
}

impl mqtt::ClientPersistence for Recorder {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        self.trace.lock().lines.push(format!("open {client_id} {server_uri}"));
        Ok(())
    }

    fn close(&mut self) -> mqtt::Result<()> {
        self.trace.lock().lines.push("close".to_owned());
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let value = buffers.concat();
        let mut shared = self.trace.lock();
        shared.lines.push(format!("put {key} {}", hex(&value)));
        shared.data.insert(key.to_owned(), value);
        Ok(())
    }

    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        let mut shared = self.trace.lock();
        let value = shared.data.get(key).cloned();
        shared.lines.push(format!("get {key} {}", value.as_deref().map_or("!".to_owned(), hex)));
        value.ok_or(mqtt::Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        let mut shared = self.trace.lock();
        shared.lines.push(format!("remove {key}"));
        shared.data.remove(key);
        Ok(())
    }

    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        let mut shared = self.trace.lock();
        let keys: Vec<String> = shared.data.keys().cloned().collect();
        let line =
            std::iter::once("keys").chain(keys.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        shared.lines.push(line);
        Ok(keys)
    }

    fn clear(&mut self) -> mqtt::Result<()> {
        let mut shared = self.trace.lock();
        shared.lines.push("clear".to_owned());
        shared.data.clear();
        Ok(())
    }

    /// Inverted: paho-mqtt 0.14 hands Rust's `true` to Paho C as 1, which it reads as "absent".
    fn contains_key(&mut self, key: &str) -> bool {
        let mut shared = self.trace.lock();
        let present = shared.data.contains_key(key);
        shared.lines.push(format!("contains {key} {}", if present { "yes" } else { "no" }));
        !present
    }
}

/// One trace file: its clients share the [`Trace`].
struct Scenario {
    name: String,
    version: u32,
    trace: Trace,
    client_id: String,
    topic: String,
    /// Payloads published, in order.
    sent: Vec<String>,
}

impl Scenario {
    fn new(version: u32, scene: &str, about: &str, options: &str) -> Self {
        let (tag, label) = if version == mqtt::MQTT_VERSION_5 { ("v5", "5") } else { ("v311", "3.1.1") };
        let name = format!("{tag}-{scene}");
        let trace = Trace::default();
        trace.comment(&format!("scenario: {name}"));
        trace.comment(&format!("mqtt: {label}"));
        trace.comment("client: paho-mqtt 0.14.0 (Paho C 1.3.16), recorded by tools/record_traces.rs");
        trace.comment(&format!("about: {about}"));
        trace.comment(&format!("options: {options}"));
        trace.comment("store: one in-memory map shared by every client of the scenario");
        Self {
            client_id: format!("traces-{name}"),
            topic: format!("traces/{name}"),
            name,
            version,
            trace,
            sent: Vec::new(),
        }
    }

    fn v5(&self) -> bool {
        self.version == mqtt::MQTT_VERSION_5
    }

    /// `stem` with the version's key suffix: `s-` or `s5-`.
    fn key(&self, stem: &str) -> String {
        if self.v5() {
            format!("{stem}5-")
        } else {
            format!("{stem}-")
        }
    }

    fn err(&self, what: &str, error: impl std::fmt::Display) -> Box<dyn std::error::Error> {
        format!("{}: {what}: {error}", self.name).into()
    }

    /// A client persisting into the scenario's store; `tweak` adds create options.
    fn client(
        &self,
        server_uri: &str,
        tweak: impl FnOnce(mqtt::CreateOptionsBuilder) -> mqtt::CreateOptionsBuilder,
    ) -> Result<mqtt::AsyncClient> {
        self.trace.event(&format!("create client at {server_uri}"));
        let builder = mqtt::CreateOptionsBuilder::new()
            .server_uri(server_uri)
            .client_id(&self.client_id)
            .mqtt_version(self.version)
            .user_persistence(Recorder { trace: self.trace.clone() });
        let client = tweak(builder).create_client().map_err(|e| self.err("creating the client", e))?;
        let trace = self.trace.clone();
        client.set_connected_callback(move |_| trace.event("connected"));
        let trace = self.trace.clone();
        client.set_connection_lost_callback(move |_| trace.event("connection lost"));
        Ok(client)
    }

    fn connect_options(&self, clean: bool, auto_reconnect: bool) -> Result<mqtt::ConnectOptions> {
        let mut builder = if self.v5() {
            let mut builder = mqtt::ConnectOptionsBuilder::new_v5();
            builder.clean_start(clean);
            if !clean {
                // Without a session expiry mosquitto forgets an MQTT 5 session on disconnect.
                let mut properties = mqtt::Properties::new();
                properties
                    .push_int(mqtt::PropertyCode::SessionExpiryInterval, 300)
                    .map_err(|e| self.err("session expiry property", e))?;
                builder.properties(properties);
            }
            builder
        } else {
            let mut builder = mqtt::ConnectOptionsBuilder::with_mqtt_version(self.version);
            builder.clean_session(clean);
            builder
        };
        if auto_reconnect {
            builder.automatic_reconnect(Duration::from_secs(1), Duration::from_secs(2));
        }
        Ok(builder.finalize())
    }

    fn connect(&self, client: &mqtt::AsyncClient, clean: bool, auto_reconnect: bool) -> Result<()> {
        let options = self.connect_options(clean, auto_reconnect)?;
        self.trace.event(&format!("connect clean={clean}"));
        client.connect(options).wait_for(TIMEOUT).map_err(|e| self.err("connecting", e))?;
        Ok(())
    }

    /// Connects once at `uri` with the scenario's client id and no persistence, and
    /// disconnects: `keep` leaves a session there, otherwise any session is ended.
    fn prime_session(&self, uri: &str, keep: bool) -> Result<()> {
        let client = mqtt::CreateOptionsBuilder::new()
            .server_uri(uri)
            .client_id(&self.client_id)
            .mqtt_version(self.version)
            .persistence(mqtt::PersistenceType::None)
            .create_client()
            .map_err(|e| self.err("creating the priming client", e))?;
        let options = self.connect_options(!keep, false)?;
        client.connect(options).wait_for(TIMEOUT).map_err(|e| self.err("priming the session", e))?;
        client.disconnect(None).wait_for(TIMEOUT).map_err(|e| self.err("priming the session", e))?;
        let state = if keep { "holds a session" } else { "holds no session" };
        self.trace.event(&format!("mosquitto {state} for the client id (made beforehand)"));
        Ok(())
    }

    /// Publishes message `n` of the scenario; the payload names it.
    fn publish(&mut self, client: &mqtt::AsyncClient, n: usize, qos: i32) -> Result<mqtt::DeliveryToken> {
        let payload = format!("{} #{n:02}", self.name);
        self.trace.event(&format!("publish {n} qos={qos}"));
        let message = mqtt::Message::new(&self.topic, payload.as_bytes(), qos);
        let token = client.try_publish(message).map_err(|e| self.err(&format!("publishing {n}"), e))?;
        self.sent.push(payload);
        Ok(token)
    }

    /// Publishes messages 1 to `count` of the scenario, all with `qos`.
    fn publish_n(
        &mut self,
        client: &mqtt::AsyncClient,
        count: usize,
        qos: i32,
    ) -> Result<Vec<mqtt::DeliveryToken>> {
        (1..=count).map(|n| self.publish(client, n, qos)).collect()
    }

    /// Waits for `tokens`, for `subscriber` to get `expected`, and for the
    /// store to hold no record of the key stems `stems` (`c`, `s`, `sc`), then
    /// disconnects and destroys `client`.
    fn complete(
        &self,
        client: mqtt::AsyncClient,
        tokens: Vec<mqtt::DeliveryToken>,
        subscriber: &Subscriber,
        expected: &[String],
        stems: &[&str],
    ) -> Result<()> {
        self.wait_all(tokens)?;
        subscriber.wait_for(self, expected)?;
        let prefixes: Vec<String> = stems.iter().map(|stem| self.key(stem)).collect();
        self.trace.wait_without(&prefixes.iter().map(String::as_str).collect::<Vec<_>>())?;
        self.disconnect(&client)?;
        self.destroy(client);
        Ok(())
    }

    fn wait_all(&self, tokens: Vec<mqtt::DeliveryToken>) -> Result<()> {
        for token in tokens {
            token.wait_for(TIMEOUT).map_err(|e| self.err("waiting for a delivery", e))?;
        }
        Ok(())
    }

    fn disconnect(&self, client: &mqtt::AsyncClient) -> Result<()> {
        self.trace.event("disconnect");
        client.disconnect(None).wait_for(TIMEOUT).map_err(|e| self.err("disconnecting", e))?;
        Ok(())
    }

    /// Destroys the client (Paho closes the store) and notes it.
    fn destroy(&self, client: mqtt::AsyncClient) {
        self.trace.event("destroy client");
        drop(client);
    }

    /// How many calls `op` on a key starting with `prefix` the trace holds.
    fn calls(&self, op: &str, prefix: &str) -> usize {
        self.trace
            .lines()
            .iter()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(op) && words.next().unwrap_or("").starts_with(prefix)
            })
            .count()
    }

    fn events(&self, text: &str) -> usize {
        self.trace.lines().iter().filter(|line| line.strip_prefix("# event: ") == Some(text)).count()
    }

    fn require(&self, ok: bool, what: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(format!("{}: expected {what}; the trace:\n{}", self.name, self.trace.lines().join("\n"))
                .into())
        }
    }

    /// At least `n` calls `op` on `prefix` keys.
    fn require_calls(&self, op: &str, prefix: &str, n: usize) -> Result<()> {
        let got = self.calls(op, prefix);
        self.require(got >= n, &format!("at least {n} `{op} {prefix}*` calls, got {got}"))
    }

    fn require_none(&self, op: &str, prefix: &str) -> Result<()> {
        let got = self.calls(op, prefix);
        self.require(got == 0, &format!("no `{op} {prefix}*` calls, got {got}"))
    }

    /// Writes the trace and returns how many calls it holds.
    fn write(&self, out: &Path) -> Result<usize> {
        let lines = self.trace.lines();
        let calls = lines.iter().filter(|line| !line.starts_with('#')).count();
        let path = out.join(format!("{}.trace", self.name));
        std::fs::write(&path, lines.join("\n") + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("{}: {calls} calls", path.display());
        Ok(calls)
    }
}

/// A client at mosquitto, without persistence, that collects what arrives on a scenario's topic.
struct Subscriber {
    client: mqtt::AsyncClient,
    got: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    fn new(mqtt_uri: &str, scenario: &Scenario) -> Result<Self> {
        let client = mqtt::CreateOptionsBuilder::new()
            .server_uri(mqtt_uri)
            .client_id(format!("{}-subscriber", scenario.client_id))
            .persistence(mqtt::PersistenceType::None)
            .create_client()
            .map_err(|e| scenario.err("creating the subscriber", e))?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        client.set_message_callback(move |_, message| {
            if let Some(message) = message {
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(message.payload_str().into_owned());
            }
        });
        client.connect(None).wait_for(TIMEOUT).map_err(|e| scenario.err("connecting the subscriber", e))?;
        client.subscribe(&scenario.topic, 2).wait_for(TIMEOUT).map_err(|e| scenario.err("subscribing", e))?;
        Ok(Self { client, got })
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until every payload of `expected` arrived (duplicates allowed: QoS 1).
    fn wait_for(&self, scenario: &Scenario, expected: &[String]) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let got = self.got();
            let missing: Vec<&String> = expected.iter().filter(|payload| !got.contains(payload)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return scenario.require(false, &format!("the subscriber to get {missing:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) {
        drop(self.client.disconnect(None).wait_for(TIMEOUT));
    }
}

/// Where the traces go and which broker to use.
struct Env {
    out: PathBuf,
    mqtt_uri: String,
    filters: Vec<String>,
    written: Vec<(String, usize)>,
}

impl Env {
    fn wanted(&self, version: u32, scene: &str) -> bool {
        let tag = if version == mqtt::MQTT_VERSION_5 { "v5" } else { "v311" };
        let name = format!("{tag}-{scene}");
        self.filters.is_empty() || self.filters.iter().any(|filter| name.contains(filter.as_str()))
    }

    fn save(&mut self, scenario: &Scenario) -> Result<()> {
        let calls = scenario.write(&self.out)?;
        self.written.push((scenario.name.clone(), calls));
        Ok(())
    }

    /// A few QoS 0 publishes while connected.
    fn qos0_online(&mut self, version: u32) -> Result<()> {
        let sc = self.online(
            version,
            "qos0-online",
            "5 QoS 0 publishes while connected to mosquitto (persist_qos0 is on by default)",
            5,
            0,
            &["c"],
        )?;
        sc.require_calls("put", &sc.key("c"), 5)?;
        sc.require_calls("remove", &sc.key("c"), 5)?;
        sc.require_none("put", &sc.key("s"))?;
        sc.require_calls("close", "", 1)?;
        self.save(&sc)
    }

    /// A burst of QoS 1 publishes while connected.
    fn qos1_online_burst(&mut self, version: u32) -> Result<()> {
        let sc = self.online(
            version,
            "qos1-online-burst",
            "50 QoS 1 publishes in a burst while connected to mosquitto, then all acknowledged",
            50,
            1,
            &["c", "s"],
        )?;
        sc.require_calls("put", &sc.key("c"), 50)?;
        sc.require_calls("put", &sc.key("s"), 50)?;
        sc.require_calls("remove", &sc.key("s"), 50)?;
        sc.require_none("put", &sc.key("sc"))?;
        self.save(&sc)
    }

    /// QoS 2 publishes while connected: s-, then sc- on PUBREC, both removed on PUBCOMP.
    fn qos2_online(&mut self, version: u32) -> Result<()> {
        let sc = self.online(
            version,
            "qos2-online",
            "20 QoS 2 publishes while connected to mosquitto, each through PUBREC, PUBREL, PUBCOMP",
            20,
            2,
            &["c", "s", "sc"],
        )?;
        sc.require_calls("put", &sc.key("s"), 20)?;
        sc.require_calls("put", &sc.key("sc"), 20)?;
        sc.require_calls("remove", &sc.key("sc"), 20)?;
        sc.require_calls("remove", &sc.key("s"), 20)?;
        self.save(&sc)
    }

    /// `count` publishes of `qos` while connected with a clean session: all
    /// delivered, and no record of the key stems `stems` left.
    fn online(
        &self,
        version: u32,
        scene: &str,
        about: &str,
        count: usize,
        qos: i32,
        stems: &[&str],
    ) -> Result<Scenario> {
        let mut sc = Scenario::new(version, scene, about, "create: defaults; connect: clean=true");
        let subscriber = Subscriber::new(&self.mqtt_uri, &sc)?;
        let client = sc.client(&self.mqtt_uri, |b| b)?;
        sc.connect(&client, true, false)?;
        let tokens = sc.publish_n(&client, count, qos)?;
        sc.complete(client, tokens, &subscriber, &sc.sent, stems)?;
        subscriber.stop();
        Ok(sc)
    }

    fn offline_options(b: mqtt::CreateOptionsBuilder) -> mqtt::CreateOptionsBuilder {
        b.send_while_disconnected(true).allow_disconnected_send_at_anytime(true)
    }

    /// Messages published before the first connect, sent once it is up.
    fn offline(&mut self, version: u32, scene: &str, count: usize, qos: i32) -> Result<()> {
        let mut sc = Scenario::new(
            version,
            scene,
            &format!(
                "{count} QoS {qos} publishes before the first connect (c- records), then connect and send"
            ),
            "create: send_while_disconnected, allow_disconnected_send_at_anytime; connect: clean=false",
        );
        let subscriber = Subscriber::new(&self.mqtt_uri, &sc)?;
        let client = sc.client(&self.mqtt_uri, Self::offline_options)?;
        let tokens = sc.publish_n(&client, count, qos)?;
        let buffered = sc.trace.count_keys(&sc.key("c"));
        sc.require(buffered == count, &format!("{count} c- records while offline, found {buffered}"))?;
        sc.connect(&client, false, false)?;
        sc.complete(client, tokens, &subscriber, &sc.sent, &["c", "s", "sc"])?;
        subscriber.stop();
        sc.require_calls("put", &sc.key("c"), count)?;
        sc.require_calls("remove", &sc.key("c"), count)?;
        if qos > 0 {
            sc.require_calls("put", &sc.key("s"), count)?;
        } else {
            sc.require_none("put", &sc.key("s"))?;
        }
        self.save(&sc)
    }

    /// SUBSCRIBE and UNSUBSCRIBE pass through the store as c- commands.
    fn subscribe(&mut self, version: u32) -> Result<()> {
        let sc = Scenario::new(
            version,
            "subscribe",
            "subscribe and unsubscribe while connected to mosquitto, then a subscribe while offline",
            "create: send_while_disconnected, allow_disconnected_send_at_anytime; connect: clean=true",
        );
        let client = sc.client(&self.mqtt_uri, Self::offline_options)?;
        sc.connect(&client, true, false)?;
        sc.trace.event("subscribe traces/sub/a qos=1");
        client.subscribe("traces/sub/a", 1).wait_for(TIMEOUT).map_err(|e| sc.err("subscribing", e))?;
        sc.trace.event("subscribe many traces/sub/b qos=0, traces/sub/c qos=2");
        client
            .subscribe_many(&["traces/sub/b", "traces/sub/c"], &[0, 2])
            .wait_for(TIMEOUT)
            .map_err(|e| sc.err("subscribing to two", e))?;
        sc.trace.event("unsubscribe traces/sub/a");
        client.unsubscribe("traces/sub/a").wait_for(TIMEOUT).map_err(|e| sc.err("unsubscribing", e))?;
        sc.trace.wait_without(&[&sc.key("c")])?;
        let online_puts = sc.calls("put", &sc.key("c"));
        sc.disconnect(&client)?;
        // Paho C refuses SUBSCRIBE while disconnected, whatever send_while_disconnected says.
        sc.trace.event("subscribe traces/sub/offline qos=1 while disconnected");
        let outcome = client.subscribe("traces/sub/offline", 1).wait_for(TIMEOUT);
        sc.trace.event(&format!(
            "offline subscribe: {}",
            outcome.as_ref().map_or_else(|e| format!("refused: {e}"), |_| "accepted".to_owned())
        ));
        if outcome.is_ok() {
            sc.require_calls("put", &sc.key("c"), online_puts + 1)?;
        } else {
            sc.require(sc.calls("put", &sc.key("c")) == online_puts, "no c- put for a refused subscribe")?;
        }
        sc.destroy(client);
        sc.require_calls("put", &sc.key("c"), 3)?;
        sc.require_calls("remove", &sc.key("c"), 3)?;
        sc.require_none("put", &sc.key("s"))?;
        self.save(&sc)
    }

    /// A buffer of 5 that drops its oldest command when a sixth comes.
    fn delete_oldest(&mut self, version: u32) -> Result<()> {
        let mut sc = Scenario::new(
            version,
            "delete-oldest",
            "10 QoS 1 publishes offline into a buffer of 5 that deletes the oldest, then connect",
            "create: max_buffered_messages=5, delete_oldest_messages, send_while_disconnected, \
             allow_disconnected_send_at_anytime; connect: clean=false",
        );
        let subscriber = Subscriber::new(&self.mqtt_uri, &sc)?;
        let client = sc.client(&self.mqtt_uri, |b| {
            Self::offline_options(b).max_buffered_messages(5).delete_oldest_messages(true)
        })?;
        let mut tokens = sc.publish_n(&client, 10, 1)?;
        let removed_offline = sc.calls("remove", &sc.key("c"));
        sc.require(removed_offline == 5, &format!("5 c- removed while offline, got {removed_offline}"))?;
        let buffered = sc.trace.count_keys(&sc.key("c"));
        sc.require(buffered == 5, &format!("5 c- records left, found {buffered}"))?;
        sc.connect(&client, false, false)?;
        // The deleted messages' tokens never complete: wait for the 5 kept ones only.
        // The oldest 5 tokens live until the client is gone, in case Paho still completes them.
        let kept = tokens.split_off(5);
        sc.complete(client, kept, &subscriber, &sc.sent[5..], &["c", "s"])?;
        // Held until the client is gone, in case Paho still completes them.
        drop(tokens);
        let got = subscriber.got();
        subscriber.stop();
        let dropped: Vec<&String> = sc.sent[..5].iter().filter(|payload| got.contains(payload)).collect();
        sc.require(dropped.is_empty(), &format!("the 5 oldest never delivered, but {dropped:?} were"))?;
        sc.require_calls("put", &sc.key("c"), 10)?;
        sc.require_calls("put", &sc.key("s"), 5)?;
        self.save(&sc)
    }

    /// QoS 1 and 2 stream through a proxy to mosquitto that cuts the connection midway.
    fn reconnect(&mut self, version: u32) -> Result<()> {
        let mut sc = Scenario::new(
            version,
            "reconnect",
            "30 publishes alternating QoS 1 and 2 through a proxy to mosquitto that withholds \
             the acks of 9 to 12, then cuts the connection; Paho reconnects by itself and resends",
            "create: send_while_disconnected; connect: clean=false, automatic_reconnect 1..2 s",
        );
        let subscriber = Subscriber::new(&self.mqtt_uri, &sc)?;
        let proxy = Proxy::start(self.mqtt_uri.trim_start_matches("tcp://"))?;
        let client = sc.client(&proxy.uri, |b| b.send_while_disconnected(true))?;
        sc.connect(&client, false, true)?;
        let mut tokens = Vec::new();
        let sent = sc.key("s");
        for n in 1..=30 {
            if n == 9 {
                sc.trace.event("proxy drops what mosquitto sends from now on");
                proxy.hold_acks();
            }
            tokens.push(sc.publish(&client, n, if n % 2 == 1 { 1 } else { 2 })?);
            if n == 12 {
                // Cut only once 9 to 12 are written and the socket is idle: a cut during a
                // write made paho-mqtt 0.14 / Paho C 1.3.16 abort on a double free in 12 of 12 runs.
                sc.trace.wait_until("s- records of 9 to 12", |data| {
                    (9..=12).all(|id| data.contains_key(&format!("{sent}{id}")))
                })?;
                std::thread::sleep(Duration::from_millis(200));
                sc.trace.event("proxy cuts the connection");
                proxy.cut();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sc.complete(client, tokens, &subscriber, &sc.sent, &["c", "s", "sc"])?;
        subscriber.stop();
        sc.require(sc.events("connection lost") >= 1, "a connection lost event")?;
        sc.require(sc.events("connected") >= 2, "two connected events")?;
        sc.require_calls("put", &sc.key("s"), 30)?;
        sc.require_calls("put", &sc.key("sc"), 15)?;
        self.save(&sc)
    }

    /// An inbound QoS 2 message whose PUBREL comes only after the client restarted.
    fn inbound_qos2(&mut self, version: u32) -> Result<()> {
        let sc = Scenario::new(
            version,
            "inbound-qos2-pubrel-pending",
            "a fake broker sends a QoS 2 PUBLISH and withholds PUBREL; the client is destroyed, a \
             second one restores from the store, reconnects, and the broker then sends PUBREL",
            "create: defaults; connect: clean=false; broker: fake, in-process on 127.0.0.1",
        );
        let (uri, broker) = fake_broker(&sc.trace, vec![Session::SendQos2, Session::ReleaseQos2])?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let on_message = |got: &Arc<Mutex<Vec<String>>>, trace: &Trace| {
            let (got, trace) = (Arc::clone(got), trace.clone());
            move |_: &mqtt::AsyncClient, message: Option<mqtt::Message>| {
                if let Some(message) = message {
                    trace.event(&format!("message arrived: {}", message.payload_str()));
                    got.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(message.payload_str().into_owned());
                }
            }
        };
        let client = sc.client(&uri, |b| b)?;
        client.set_message_callback(on_message(&got, &sc.trace));
        sc.connect(&client, false, false)?;
        let inbound = sc.key("r");
        sc.trace.wait_until("an r- record", |data| data.keys().any(|key| key.starts_with(&inbound)))?;
        // Paho persists before it sends PUBREC; wait until the broker saw it.
        wait_for_event(&sc, "broker got PUBREC 7")?;
        sc.trace.event("restart");
        sc.destroy(client);
        let early = got.lock().unwrap_or_else(PoisonError::into_inner).len();
        let client = sc.client(&uri, |b| b)?;
        client.set_message_callback(on_message(&got, &sc.trace));
        sc.connect(&client, false, false)?;
        sc.trace.wait_without(&[&inbound])?;
        wait_for_event(&sc, "broker got PUBCOMP 7")?;
        sc.disconnect(&client)?;
        sc.destroy(client);
        broker.join().map_err(|_| sc.err("fake broker", "panicked"))?;
        let got = got.lock().unwrap_or_else(PoisonError::into_inner).clone();
        sc.require(got == [INBOUND_PAYLOAD], &format!("the message delivered once, got {got:?}"))?;
        sc.trace.comment(&format!(
            "note: delivered to the app {} the restart",
            if early > 0 { "before" } else { "after" }
        ));
        sc.require_calls("put", &inbound, 1)?;
        sc.require_calls("remove", &inbound, 1)?;
        sc.require_calls("open", "", 2)?;
        sc.require_calls("close", "", 2)?;
        sc.require_calls("get", &inbound, 1)?;
        self.save(&sc)
    }

    /// QoS 1 and 2 left in flight at a fake broker; a second client on the same store finishes them at mosquitto.
    fn restart(&mut self, version: u32, session_at_broker: bool) -> Result<()> {
        let (scene, about) = if session_at_broker {
            (
                "restart",
                "3 QoS 1 (never acknowledged) and 3 QoS 2 (PUBREC only) in flight at a fake broker; \
                 the client is destroyed and a second one on the same store connects to mosquitto, \
                 which holds a session for the client id: Paho resends and completes them",
            )
        } else {
            (
                "restart-session-lost",
                "as restart, but mosquitto holds no session for the client id: CONNACK says \
                 session present 0 and Paho discards the restored in-flight messages unsent",
            )
        };
        let mut sc =
            Scenario::new(version, scene, about, "create: defaults; connect: clean=false (both clients)");
        let subscriber = Subscriber::new(&self.mqtt_uri, &sc)?;
        // Paho C resends only if CONNACK says session present; else it drops its in-flight state.
        sc.prime_session(&self.mqtt_uri, session_at_broker)?;
        let (uri, broker) = fake_broker(&sc.trace, vec![Session::Hold])?;
        let client = sc.client(&uri, |b| b)?;
        sc.connect(&client, false, false)?;
        let mut tokens = Vec::new();
        for n in 1..=6 {
            tokens.push(sc.publish(&client, n, if n <= 3 { 1 } else { 2 })?);
        }
        let (s, scomp) = (sc.key("s"), sc.key("sc"));
        sc.trace.wait_until("6 s- and 3 sc- records", |data| {
            data.keys().filter(|key| key.starts_with(&s)).count() == 6
                && data.keys().filter(|key| key.starts_with(&scomp)).count() == 3
        })?;
        wait_for_events(&sc, "broker got PUBREL", 3)?;
        sc.trace.event("restart");
        drop(tokens);
        sc.destroy(client);
        broker.join().map_err(|_| sc.err("fake broker", "panicked"))?;
        let puts_before = sc.calls("put", "");
        let client = sc.client(&self.mqtt_uri, |b| b)?;
        sc.connect(&client, false, false)?;
        sc.trace.wait_without(&[&sc.key("c"), &s, &scomp])?;
        // mosquitto only ever saw the QoS 1 PUBLISHes; the QoS 2 ones went to the fake broker.
        let qos1 = sc.sent[..3].to_vec();
        if session_at_broker {
            subscriber.wait_for(&sc, &qos1)?;
        } else {
            // Give a resend, if Paho made one, the time to arrive.
            std::thread::sleep(Duration::from_millis(500));
        }
        sc.disconnect(&client)?;
        sc.destroy(client);
        let got = subscriber.got();
        subscriber.stop();
        sc.require_calls("open", "", 2)?;
        sc.require_calls("close", "", 2)?;
        sc.require_calls("keys", "", 1)?;
        sc.require_calls("get", &s, 6)?;
        sc.require_calls("contains", "", 1)?;
        sc.require_calls("remove", &s, 6)?;
        sc.require_calls("remove", &scomp, 3)?;
        let resent = sc.calls("put", "") - puts_before;
        if session_at_broker {
            // The resends rewrite s- (DUP set) and sc-.
            sc.require(resent >= 6, &format!("the 6 records rewritten on resend, got {resent} puts"))?;
        } else {
            sc.require(resent == 0, &format!("no put after the restart, got {resent}"))?;
            sc.require(got.is_empty(), &format!("nothing delivered, got {got:?}"))?;
        }
        self.save(&sc)
    }
}

/// Waits until the trace holds the event `text`.
fn wait_for_event(sc: &Scenario, text: &str) -> Result<()> {
    wait_for_events(sc, text, 1)
}

/// Waits until the trace holds `n` events starting with `text`.
fn wait_for_events(sc: &Scenario, text: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let count = || {
        sc.trace
            .lines()
            .iter()
            .filter(|line| line.strip_prefix("# event: ").is_some_and(|event| event.starts_with(text)))
            .count()
    };
    while count() < n {
        if Instant::now() > deadline {
            return Err(sc.err("waiting", format!("{n} events `{text}`, saw {}", count())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A TCP proxy to mosquitto whose connections can be cut, to make Paho see a dropped link.
struct Proxy {
    uri: String,
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// While set, what mosquitto sends is dropped: the client's messages stay unacknowledged.
    hold: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: binding: {e}"))?;
        let uri = format!("tcp://{}", listener.local_addr()?);
        let live = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_owned();
        let streams = Arc::clone(&live);
        let hold = Arc::new(AtomicBool::new(false));
        let held = Arc::clone(&hold);
        // Lives until the process ends: one blocked accept is cheaper than a shutdown protocol.
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(&upstream) else { continue };
                let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else { continue };
                if let (Ok(d), Ok(u)) = (down.try_clone(), up.try_clone()) {
                    streams.lock().unwrap_or_else(PoisonError::into_inner).extend([d, u]);
                }
                // A new connection starts unheld: the reconnect must get its acks.
                held.store(false, Ordering::SeqCst);
                let never = Arc::new(AtomicBool::new(false));
                std::thread::spawn(move || pump(down, up2, &never));
                let held = Arc::clone(&held);
                std::thread::spawn(move || pump(up, down2, &held));
            }
        });
        Ok(Self { uri, live, hold })
    }

    fn hold_acks(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        for stream in self.live.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either closes, dropping what comes while `hold` is set.
fn pump(mut from: TcpStream, mut to: TcpStream, hold: &AtomicBool) {
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buffer) {
        if !hold.load(Ordering::SeqCst) && to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

const INBOUND_PAYLOAD: &str = "inbound qos 2, PUBREL held";

/// What the fake broker does on one connection.
#[derive(Clone, Copy, PartialEq)]
enum Session {
    /// After CONNACK sends a QoS 2 PUBLISH (id 7) and never its PUBREL.
    SendQos2,
    /// CONNACK with session present, then the PUBREL for id 7.
    ReleaseQos2,
    /// Never acknowledges QoS 1; answers QoS 2 with PUBREC only.
    Hold,
}

/// Serves one connection per entry of `sessions` on a free port of 127.0.0.1; broker steps go to the trace as events.
fn fake_broker(trace: &Trace, sessions: Vec<Session>) -> Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("fake broker: binding: {e}"))?;
    let uri = format!("tcp://{}", listener.local_addr()?);
    let trace = trace.clone();
    let handle = std::thread::spawn(move || {
        for session in sessions {
            let Ok((stream, _)) = listener.accept() else { return };
            serve(stream, session, &trace);
        }
    });
    Ok((uri, handle))
}

fn serve(mut stream: TcpStream, session: Session, trace: &Trace) {
    while let Some((header, body)) = read_packet(&mut stream) {
        let id = body.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let mut reply = Vec::new();
        match header >> 4 {
            1 => {
                let v5 = body.get(6) == Some(&5);
                let present = u8::from(session == Session::ReleaseQos2);
                reply = if v5 { vec![0x20, 3, present, 0, 0] } else { vec![0x20, 2, present, 0] };
                match session {
                    Session::SendQos2 => {
                        trace.event("broker sends PUBLISH qos=2 id=7");
                        // An empty property list in MQTT 5.
                        let properties: Option<&[u8]> = v5.then_some(&[]);
                        reply.extend(publish_packet(
                            2,
                            7,
                            "traces/in",
                            INBOUND_PAYLOAD.as_bytes(),
                            properties,
                        ));
                    }
                    Session::ReleaseQos2 => {
                        trace.event("broker sends PUBREL 7");
                        reply.extend([0x62, 2, 0, 7]);
                    }
                    Session::Hold => {}
                }
            }
            3 => {
                let qos = (header >> 1) & 3;
                let start = 2 + usize::from(id);
                let msg_id = body.get(start..start + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                if qos == 2 {
                    trace.event(&format!("broker got PUBLISH {msg_id} qos=2, answers PUBREC only"));
                    let [hi, lo] = msg_id.to_be_bytes();
                    reply = vec![0x50, 2, hi, lo];
                } else {
                    trace.event(&format!("broker got PUBLISH {msg_id} qos={qos}, never acknowledges"));
                }
            }
            5 => trace.event(&format!("broker got PUBREC {id}")),
            6 => trace.event(&format!("broker got PUBREL {id}")),
            7 => trace.event(&format!("broker got PUBCOMP {id}")),
            12 => reply = vec![0xd0, 0],
            14 => break,
            _ => {}
        }
        if !reply.is_empty() && stream.write_all(&reply).is_err() {
            break;
        }
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: record_traces OUT_DIR [SCENARIO_FILTER...]")?);
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut env = Env {
        out,
        mqtt_uri: std::env::var("MQTT_URI").unwrap_or_else(|_| "tcp://127.0.0.1:1883".to_owned()),
        filters: args.collect(),
        written: Vec::new(),
    };
    type Run = fn(&mut Env, u32) -> Result<()>;
    let both: [(&str, Run); 10] = [
        ("qos0-online", Env::qos0_online),
        ("qos1-online-burst", Env::qos1_online_burst),
        ("qos2-online", Env::qos2_online),
        ("offline-buffer", |env, v| env.offline(v, "offline-buffer", 60, 1)),
        ("subscribe", Env::subscribe),
        ("delete-oldest", Env::delete_oldest),
        ("reconnect", Env::reconnect),
        ("inbound-qos2-pubrel-pending", Env::inbound_qos2),
        ("restart", |env, v| env.restart(v, true)),
        ("restart-session-lost", |env, v| env.restart(v, false)),
    ];
    for version in [mqtt::MQTT_VERSION_3_1_1, mqtt::MQTT_VERSION_5] {
        for (scene, run) in both {
            if env.wanted(version, scene) {
                run(&mut env, version)?;
            }
        }
    }
    // QoS 0 offline once, in MQTT 3.1.1: the MQTT 5 path differs only in key prefixes.
    if env.wanted(mqtt::MQTT_VERSION_3_1_1, "qos0-offline") {
        env.offline(mqtt::MQTT_VERSION_3_1_1, "qos0-offline", 5, 0)?;
    }
    let total: usize = env.written.iter().map(|(_, calls)| calls).sum();
    println!("wrote {} traces, {total} calls, to {}", env.written.len(), env.out.display());
    Ok(())
}
