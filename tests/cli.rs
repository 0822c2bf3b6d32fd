//! The `paho-mqtt-redis` command against a real redis-server: stores filled
//! with the records captured from real Paho runs (tests/fixtures/records), and
//! one written by a real Paho client through `RedisPersistence`.
#![cfg(feature = "cli")]

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use paho_mqtt as mqtt;
use paho_mqtt_redis::RedisPersistence;
use serde_json::Value;
use support::RedisServer;

/// Runs the built binary with `args`.
fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paho-mqtt-redis")).args(args).output().expect("run paho-mqtt-redis")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("the output is JSON")
}

/// The value of the captured fixture `{scene}__{key}.bin`.
fn fixture(scene: &str, key: &str) -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/records/{scene}__{key}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn hset(conn: &mut redis::Connection, hash: &str, key: &str, value: &[u8]) {
    redis::cmd("HSET").arg(hash).arg(key).arg(value).query::<()>(conn).expect("HSET");
}

/// Stores as Paho leaves them: the in-flight records of MQTT 3.1.1 and 5 runs, under
/// client ids with and without `:`, plus keys that are not stores.
fn fill(redis: &RedisServer) -> redis::Connection {
    let mut conn = redis.connection();
    for key in ["s-3", "s-4", "sc-4", "r-7"] {
        hset(&mut conn, "gw:10.0.0.1:1883", key, &fixture("v311-inflight", key));
    }
    for key in ["s5-3", "sc5-4"] {
        hset(&mut conn, "gw:[::1]:8883", key, &fixture("v5-inflight", key));
    }
    // A client id that starts like the first one, with a colon: never shown for `gw`.
    hset(&mut conn, "gw:2:10.0.0.1:1883", "c-1", &fixture("v311-offline", "c-1"));
    redis::cmd("SET").arg("unrelated:string:1").arg("x").query::<()>(&mut conn).expect("SET");
    hset(&mut conn, "not-a-store:host:1", "field", b"value");
    conn
}

#[test]
fn list_shows_every_store_with_counts_and_bytes() {
    let redis = RedisServer::start();
    fill(&redis);
    let url = redis.url();
    let bytes = |scene: &str, keys: &[&str]| keys.iter().map(|k| fixture(scene, k).len() as u64).sum::<u64>();
    let gw_v3 = bytes("v311-inflight", &["s-3", "s-4", "sc-4", "r-7"]);
    let gw_v5 = bytes("v5-inflight", &["s5-3", "sc5-4"]);
    let gw2 = bytes("v311-offline", &["c-1"]);

    let table = stdout(&cli(&["list", "--url", &url]));
    let rows: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        vec![
            vec!["CLIENT", "ID", "SERVER", "RECORDS", "BYTES"],
            vec!["gw", "10.0.0.1:1883", "4", &gw_v3.to_string()],
            vec!["gw", "[::1]:8883", "2", &gw_v5.to_string()],
            vec!["gw:2", "10.0.0.1:1883", "1", &gw2.to_string()],
            vec!["3", "store(s)"],
        ],
        "{table}"
    );

    let listed = json(&cli(&["list", "--url", &url, "--json"]));
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["client_id"], "gw:2");
    assert_eq!(listed[2]["server"], "10.0.0.1:1883");
    assert_eq!(listed[2]["records"], 1);
    assert_eq!(listed[0]["bytes"], gw_v3);
}

#[test]
fn list_with_a_prefix_sees_only_the_prefixed_stores() {
    let redis = RedisServer::start();
    let mut conn = fill(&redis);
    hset(&mut conn, "mqtt:*dev?:127.0.0.1:1883", "s-3", &fixture("v311-inflight", "s-3"));
    let url = redis.url();
    let listed = json(&cli(&["list", "--url", &url, "--prefix", "mqtt:", "--json"]));
    let ids: Vec<&str> =
        listed.as_array().unwrap().iter().map(|s| s["client_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["*dev?"]);
    let shown = json(&cli(&["show", "*dev?", "--url", &url, "--prefix", "mqtt:", "--json"]));
    assert_eq!(shown[0]["records"][0]["key"], "s-3");
}

#[test]
fn show_decodes_every_record_of_every_server_of_one_client() {
    let redis = RedisServer::start();
    let mut conn = fill(&redis);
    hset(&mut conn, "gw:[::1]:8883", "s5-9", &[0x32, 0x7f, 0x00]);
    let text = stdout(&cli(&["show", "gw", "--url", &redis.url()]));
    let expected = [
        "store gw:10.0.0.1:1883 (client \"gw\", server 10.0.0.1:1883): 4 record(s), ",
        "  s-3 PUBLISH out qos=1 id=3 topic=\"fixtures/out/qos1\" 25 B \"qos 1, never acknowledged\"",
        "  s-4 PUBLISH out qos=2 retain id=4 topic=\"fixtures/out/qos2\" 18 B \"qos 2, PUBREC only\"",
        "  sc-4 PUBREL out id=4",
        "  r-7 PUBLISH in qos=2 id=7 topic=\"fixtures/in/qos2\" 40 B \"qos 2 from the broker, PUBREL never sent\"",
        "store gw:[::1]:8883 (client \"gw\", server [::1]:8883): 3 record(s), ",
        "  s5-3 PUBLISH out qos=1 id=3 topic=\"fixtures/out/qos1\" 25 B \"qos 1, never acknowledged\" \
         [message-expiry-interval=3600] [user-property=\"origin\"=\"capture_fixtures\"]",
        "  s5-9 UNDECODABLE: the packet says it has 127 bytes after its header, the record has 1",
        "    raw (3 bytes): 327f00",
        "  sc5-4 PUBREL out id=4",
    ];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(line.starts_with(expected), "expected {expected:?}\n     got {line:?}");
    }
    assert!(!text.contains("gw:2"), "another client's store was shown:\n{text}");
}

#[test]
fn show_json_of_one_server() {
    let redis = RedisServer::start();
    fill(&redis);
    let shown =
        json(&cli(&["show", "gw", "--server", "tcp://10.0.0.1:1883", "--url", &redis.url(), "--json"]));
    let stores = shown.as_array().unwrap();
    assert_eq!(stores.len(), 1);
    let records = stores[0]["records"].as_array().unwrap();
    let keys: Vec<&str> = records.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["s-3", "s-4", "sc-4", "r-7"]);
    let s4 = &records[1];
    assert_eq!(s4["operation"], "PUBLISH");
    assert_eq!(s4["topic"], "fixtures/out/qos2");
    assert_eq!(
        (s4["qos"].as_u64(), s4["retain"].as_bool(), s4["dup"].as_bool()),
        (Some(2), Some(true), Some(false))
    );
    assert_eq!(s4["message_id"], 4);
    assert_eq!(s4["payload_len"], 18);
    assert_eq!(s4["size"], fixture("v311-inflight", "s-4").len());
}

#[test]
fn show_of_an_unknown_client_fails() {
    let redis = RedisServer::start();
    fill(&redis);
    let output = cli(&["show", "nobody", "--url", &redis.url()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no store for client id \"nobody\""));
}

#[test]
fn purge_needs_yes_and_deletes_exactly_one_store() {
    let redis = RedisServer::start();
    let mut conn = fill(&redis);
    let url = redis.url();
    let exists = |conn: &mut redis::Connection, hash: &str| -> bool {
        redis::cmd("EXISTS").arg(hash).query(conn).expect("EXISTS")
    };

    let refused = cli(&["purge", "gw", "--server", "10.0.0.1:1883", "--url", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert!(exists(&mut conn, "gw:10.0.0.1:1883"));

    let purged = stdout(&cli(&["purge", "gw", "--server", "10.0.0.1:1883", "--yes", "--url", &url]));
    assert_eq!(purged, "deleted store gw:10.0.0.1:1883 (4 record(s))\n");
    assert!(!exists(&mut conn, "gw:10.0.0.1:1883"));
    assert!(exists(&mut conn, "gw:[::1]:8883"));
    assert!(exists(&mut conn, "gw:2:10.0.0.1:1883"));

    let again = cli(&["purge", "gw", "--server", "10.0.0.1:1883", "--yes", "--url", &url]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let port = support::free_port();
    let output = cli(&["list", "--url", &format!("redis://127.0.0.1:{port}/0")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect to Redis"));
}

/// A store written just now by a real Paho client: messages published before any connect.
#[test]
fn show_a_store_written_by_paho() {
    let redis = RedisServer::start();
    let port = support::free_port(); // no broker: the messages stay queued
    let server_uri = format!("tcp://127.0.0.1:{port}");
    let client_id = support::unique_id("cli:show");
    let persistence = RedisPersistence::with_url(&redis.url()).expect("a valid URL");
    let client = support::mqtt::client(&server_uri, &client_id, persistence);
    for (qos, payload) in [(0, "zero"), (1, "one"), (2, "two")] {
        client.try_publish(mqtt::Message::new(format!("cli/{qos}"), payload, qos)).expect("queue a message");
    }
    let hash = format!("{client_id}:127.0.0.1:{port}");
    let mut conn = redis.connection();
    assert!(support::wait_until(Duration::from_secs(10), || {
        redis::cmd("HLEN").arg(&hash).query::<usize>(&mut conn).unwrap_or(0) == 3
    }));

    let text = stdout(&cli(&["show", &client_id, "--url", &redis.url()]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, (qos, payload)) in lines[1..].iter().zip([(0, "zero"), (1, "one"), (2, "two")]) {
        let expected = format!("PUBLISH queued out qos={qos} token=");
        assert!(line.starts_with("  c-") && line.contains(&expected), "{line}");
        let expected = format!("topic=\"cli/{qos}\" {} B \"{payload}\"", payload.len());
        assert!(line.ends_with(&expected), "{line}");
    }
    drop(client);
}

/// A store with `max_store_bytes` keeps its byte count in the hash; the
/// command counts and shows only the records.
#[test]
fn the_budget_counter_is_not_a_record() {
    let redis = RedisServer::start();
    let mut store =
        RedisPersistence::builder().url(redis.url()).max_store_bytes(1000).build().expect("valid");
    mqtt::ClientPersistence::open(&mut store, "budgeted", "broker:1883").expect("open");
    mqtt::ClientPersistence::put(&mut store, "s-1", vec![&fixture("v311-inflight", "s-3")]).expect("put");
    let listed = json(&cli(&["list", "--url", &redis.url(), "--json"]));
    let stores = listed.as_array().expect("an array of stores");
    assert_eq!(stores.len(), 1, "{listed}");
    assert_eq!(stores[0]["records"], 1, "{listed}");
    let shown = stdout(&cli(&["show", "budgeted", "--url", &redis.url()]));
    assert!(
        shown.contains("s-1") && !shown.contains(paho_mqtt_redis::admin::BUDGET_COUNTER_FIELD),
        "{shown}"
    );
    let purged =
        stdout(&cli(&["purge", "budgeted", "--server", "broker:1883", "--yes", "--url", &redis.url()]));
    assert_eq!(purged.trim(), "deleted store budgeted:broker:1883 (1 record(s))");
}

/// The command takes its URL through the library's `Builder`: a Unix socket
/// with `?db=N` reaches the same database the store wrote to.
#[cfg(feature = "unix-socket")]
#[test]
fn the_url_means_what_it_means_to_the_store() {
    let redis = RedisServer::start();
    let url = format!("{}?db=3", redis.unix_url());
    let mut store = RedisPersistence::with_url(&url).expect("valid");
    mqtt::ClientPersistence::open(&mut store, "in-db-3", "broker:1883").expect("open");
    mqtt::ClientPersistence::put(&mut store, "s-1", vec![&fixture("v311-inflight", "s-3")]).expect("put");
    mqtt::ClientPersistence::close(&mut store).expect("close");

    let listed = json(&cli(&["list", "--url", &url, "--json"]));
    let stores = listed.as_array().expect("an array of stores");
    assert_eq!(stores.len(), 1, "{listed}");
    assert_eq!(stores[0]["client_id"], "in-db-3", "{listed}");
    let elsewhere = json(&cli(&["list", "--url", &redis.url(), "--json"]));
    assert_eq!(elsewhere.as_array().map(Vec::len), Some(0), "database 0 holds no store: {elsewhere}");
}

/// A bad URL gets the library's error, which never repeats a password.
#[test]
fn a_bad_url_is_the_librarys_error_without_the_password() {
    let output = cli(&["list", "--url", "redis://user:s3cret-pw@127.0.0.1:notaport/0"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid Redis URL") && stderr.contains("expected redis://"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

#[test]
fn a_wrong_password_is_a_clear_error_without_the_password() {
    let redis = RedisServer::start();
    redis.require_password("right-pw");
    let output = cli(&["list", "--url", &format!("redis://:wrong-pw@127.0.0.1:{}/0", redis.port())]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("cannot connect to Redis at 127.0.0.1:{}", redis.port());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("wrong-pw") && !stderr.contains("right-pw"), "{stderr}");
}

/// The timeout goes to the library's builder, which checks it.
#[test]
fn the_timeout_is_checked_and_bounds_a_hung_redis() {
    let redis = RedisServer::start();
    for bad in ["0", "-1", "soon"] {
        let output = cli(&["list", "--url", &redis.url(), "--timeout", bad]);
        assert_ne!(output.status.code(), Some(0), "--timeout {bad}");
        assert!(!String::from_utf8_lossy(&output.stderr).is_empty(), "--timeout {bad}: a reason");
    }
    let frozen = redis.freeze();
    let output = cli(&["list", "--url", &redis.url(), "--timeout", "0.3"]);
    frozen.thaw();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Redis SCAN on") || stderr.contains("cannot connect"), "{stderr}");
}

/// A quarantine as `open` leaves it, by hand (see tests/admin.rs): a real
/// PUBLISH record (decodes), an empty one, and a lease's key beside the store.
#[test]
fn quarantine_lists_shows_exports_restores_and_purges() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let url = redis.url();
    let hash = "gw:10.0.0.1:1883";
    let publish = fixture("v311-inflight", "s-3");
    hset(&mut conn, hash, "s-4", &fixture("v311-inflight", "s-4"));
    let quarantine = format!("{hash}:quarantine");
    for (entry, value, reason) in [
        ("s-3@1733548800000", publish.as_slice(), "MQTT 5 record"),
        ("c-9@1733548800001", b"", "empty record"),
    ] {
        hset(&mut conn, &quarantine, entry, value);
        hset(&mut conn, &quarantine, &format!("{entry}#reason"), reason.as_bytes());
    }
    redis::cmd("SET").arg(format!("{hash}:owner")).arg("host 1 0").query::<()>(&mut conn).expect("SET");
    let at = |args: &[&str]| -> Output {
        let mut all = vec!["quarantine"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", "tcp://10.0.0.1:1883", "--url", &url]);
        cli(&all)
    };

    let listed = stdout(&cli(&["list", "--url", &url]));
    assert!(listed.contains("1 store(s)"), "neither the quarantine nor the owner is a store: {listed}");

    let text = stdout(&at(&["list", "gw"]));
    assert!(text.contains("2 record(s)"), "{text}");
    assert!(text.contains("s-3@1733548800000") && text.contains("MQTT 5 record"), "{text}");
    let entries = json(&at(&["list", "gw", "--json"]));
    assert_eq!(entries[1]["key"], "c-9");
    assert_eq!(entries[1]["size"], 0);
    assert_eq!(entries[1]["reason"], "empty record");
    assert_eq!(entries[1]["at_ms"], 1_733_548_800_001u64);

    let shown = json(&at(&["show", "gw", "s-3@1733548800000", "--json"]));
    assert_eq!(shown["decoded"]["kind"], "PublishSent", "{shown}");
    let shown = stdout(&at(&["show", "gw", "c-9@1733548800001"]));
    assert!(shown.contains("undecodable"), "{shown}");
    assert_eq!(at(&["show", "gw", "c-9@1"]).status.code(), Some(1));

    let exported = json(&at(&["export", "gw"]));
    let hex: String = publish.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(exported[0]["value_hex"], Value::String(hex), "the exact bytes");

    let refused = at(&["restore", "gw", "s-3@1733548800000"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains(":owner"), "names the lease");
    redis::cmd("DEL").arg(format!("{hash}:owner")).query::<()>(&mut conn).expect("DEL");
    let restored = stdout(&at(&["restore", "gw", "s-3@1733548800000"]));
    assert!(restored.contains("put s-3@1733548800000 back"), "{restored}");
    let held: Vec<u8> = redis::cmd("HGET").arg(hash).arg("s-3").query(&mut conn).expect("HGET");
    assert_eq!(held, publish);

    let refused = at(&["purge", "gw"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(stdout(&at(&["purge", "gw", "--yes"])), format!("deleted 1 record(s) from {quarantine}\n"));
    assert_eq!(json(&at(&["list", "gw", "--json"])), Value::Array(Vec::new()));
}

/// `--url`, `--prefix` and `--timeout` are accepted before the subcommand
/// (and before a nested one) as well as after it, with the same meaning.
#[test]
fn options_are_accepted_before_the_subcommand() {
    let redis = RedisServer::start();
    let mut conn = fill(&redis);
    hset(&mut conn, "mqtt:gw:10.0.0.1:1883", "s-3", &fixture("v311-inflight", "s-3"));
    let url = redis.url();
    let before = json(&cli(&["--url", &url, "--prefix", "mqtt:", "--timeout", "2", "list", "--json"]));
    let after = json(&cli(&["list", "--url", &url, "--prefix", "mqtt:", "--timeout", "2", "--json"]));
    let mixed = json(&cli(&["--prefix", "mqtt:", "list", "--json", "--url", &url]));
    assert_eq!(before, after);
    assert_eq!(before, mixed);
    assert_eq!(before.as_array().map(Vec::len), Some(1), "only the prefixed store: {before}");

    let shown = json(&cli(&["--url", &url, "--prefix", "mqtt:", "show", "gw", "--json"]));
    assert_eq!(shown[0]["records"][0]["key"], "s-3");
    let quarantined = stdout(&cli(&[
        "--url",
        &url,
        "--prefix",
        "mqtt:",
        "quarantine",
        "list",
        "gw",
        "--server",
        "10.0.0.1:1883",
    ]));
    assert!(quarantined.contains("0 record(s)"), "{quarantined}");

    // An option before the command is checked as one after it.
    let bad = cli(&["--timeout", "0", "list", "--url", &url]);
    assert_ne!(bad.status.code(), Some(0), "--timeout 0 before the command is checked too");
}
