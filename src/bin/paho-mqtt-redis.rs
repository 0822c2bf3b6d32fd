//! `paho-mqtt-redis`: look into the stores that `RedisPersistence` keeps in Redis.
//!
//! ```text
//! paho-mqtt-redis list  [--url URL] [--prefix P] [--json]
//! paho-mqtt-redis show  CLIENT_ID [--server HOST:PORT] [--url URL] [--prefix P] [--json]
//! paho-mqtt-redis purge CLIENT_ID --server HOST:PORT --yes [--url URL] [--prefix P]
//! ```
//!
//! A store is the Redis hash `{prefix}{client_id}:{server_uri}`, where Paho's
//! server URI has lost its scheme: `host:port`, `[v6 address]:port`,
//! `host:port/path` for websockets, or a socket path for `unix://`. The name is
//! split from the right, so client ids may contain `:`; see [`split_store_name`].

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use paho_mqtt_redis::decode::{self, Content, DecodeError, PropertyValue, Record};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(version, about = "Inspect the MQTT stores that paho-mqtt-redis keeps in Redis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Common {
    /// The Redis server: redis://[user:password@]host[:port][/db] or redis+unix:///path[?db=N].
    #[arg(
        long,
        default_value = "redis://127.0.0.1:6379/0",
        env = "PAHO_MQTT_REDIS_URL",
        hide_env_values = true
    )]
    url: String,
    /// The key prefix the stores were created with (`key_prefix` of the builder).
    #[arg(long, default_value = "")]
    prefix: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every store: client id, server URI, record count and bytes.
    List {
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every record of a client's stores, decoded (raw bytes and the reason where decoding fails).
    Show {
        /// The MQTT client id.
        client_id: String,
        /// Only the store for this server (host:port, as Paho names it; a scheme such as tcp:// is ignored).
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete one store: every in-flight message of that client and server is lost.
    Purge {
        /// The MQTT client id.
        client_id: String,
        /// The server (host:port, as Paho names it; a scheme such as tcp:// is ignored).
        #[arg(long)]
        server: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
}

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match run(cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = out.flush();
            eprintln!("paho-mqtt-redis: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, out: &mut impl Write) -> Result<()> {
    let written = match cli.command {
        Command::List { common, json } => list(&common, json, out),
        Command::Show { client_id, server, common, json } => {
            show(&common, &client_id, server.as_deref(), json, out)
        }
        Command::Purge { client_id, server, yes, common } => purge(&common, &client_id, &server, yes, out),
    };
    written?.map_err(|e| format!("cannot write the output: {e}"))
}

/// The outcome of a command: `Err` for a failure to report, `Ok(Err)` for a broken stdout.
type Outcome = Result<std::io::Result<()>>;

fn connect(url: &str) -> Result<redis::Connection> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
    client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to Redis: {e}"))
}

fn redis_error(command: &str) -> impl Fn(redis::RedisError) -> String + '_ {
    move |e| format!("Redis {command} failed: {e}")
}

/// One store found in Redis.
struct Store {
    hash: String,
    client_id: String,
    server: String,
}

/// Splits a hash name (without the prefix) into client id and server URI, or `None`.
///
/// The server URI is Paho's, without its scheme, so it is found from the right:
/// - it ends with `:PORT` or `:PORT/path` (1 to 5 digits): the host is what
///   precedes that colon back to the previous `:`, or, for an IPv6 host, back
///   to its `[`; the client id is everything before, and may contain `:`;
/// - otherwise it is a socket path (`unix://`): it starts at the last `:/`.
fn split_store_name(name: &str) -> Option<(&str, &str)> {
    let port_colon = name.char_indices().rev().filter(|&(_, c)| c == ':').map(|(i, _)| i).find(|&i| {
        let after = name.get(i + 1..).unwrap_or_default();
        let (port, _path) = after.split_once('/').map_or((after, ""), |(port, path)| (port, path));
        (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
    });
    let separator = match port_colon {
        Some(port_colon) => {
            let before = name.get(..port_colon)?;
            if before.ends_with(']') {
                let bracket = before.rfind('[')?;
                bracket.checked_sub(1).filter(|&i| name.get(i..bracket) == Some(":"))?
            } else {
                before.rfind(':')?
            }
        }
        None => name.rfind(":/")?,
    };
    let client_id = name.get(..separator)?;
    let server = name.get(separator + 1..)?;
    (!client_id.is_empty() && !server.is_empty()).then_some((client_id, server))
}

/// A Redis glob pattern matching `literal` exactly.
fn glob_escape(literal: &str) -> String {
    let mut pattern = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// A server as Paho names it in the hash: `tcp://host:port` → `host:port`.
fn server_name(server: &str) -> &str {
    server.split_once("://").map_or(server, |(_, rest)| rest)
}

/// The stores whose names start with `prefix` + `client_prefix`, via SCAN (never KEYS).
fn scan_stores(conn: &mut redis::Connection, prefix: &str, client_prefix: &str) -> Result<Vec<Store>> {
    let pattern = format!("{}{}*", glob_escape(prefix), glob_escape(client_prefix));
    let mut cursor: u64 = 0;
    let mut stores = Vec::new();
    loop {
        let (next, names): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("hash")
            .query(conn)
            .map_err(redis_error("SCAN"))?;
        for name in names {
            let Ok(hash) = String::from_utf8(name) else { continue };
            let Some(rest) = hash.strip_prefix(prefix) else { continue };
            if let Some((client_id, server)) = split_store_name(rest) {
                let (client_id, server) = (client_id.to_owned(), server.to_owned());
                stores.push(Store { hash, client_id, server });
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    stores.sort_by(|a, b| (&a.client_id, &a.server).cmp(&(&b.client_id, &b.server)));
    stores.dedup_by(|a, b| a.hash == b.hash); // SCAN may return a key twice
    Ok(stores)
}

/// Record count and total value bytes of a store, in one pipeline after HKEYS; `None`
/// when no field is a Paho key (a hash of something else that happens to match).
fn measure(conn: &mut redis::Connection, hash: &str) -> Result<Option<(usize, u64)>> {
    let mut fields: Vec<String> = redis::cmd("HKEYS").arg(hash).query(conn).map_err(redis_error("HKEYS"))?;
    fields.retain(|field| field != paho_mqtt_redis::BUDGET_COUNTER_FIELD);
    if !fields.iter().any(|field| decode::parse_key(field).is_ok()) {
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    for field in &fields {
        pipe.cmd("HSTRLEN").arg(hash).arg(field);
    }
    let lengths: Vec<u64> = pipe.query(conn).map_err(redis_error("HSTRLEN"))?;
    Ok(Some((fields.len(), lengths.iter().sum())))
}

fn list(common: &Common, json: bool, out: &mut impl Write) -> Outcome {
    let mut conn = connect(&common.url)?;
    let mut rows = Vec::new();
    for store in scan_stores(&mut conn, &common.prefix, "")? {
        if let Some((records, bytes)) = measure(&mut conn, &store.hash)? {
            rows.push((store, records, bytes));
        }
    }
    if json {
        let stores: Vec<Value> = rows
            .iter()
            .map(|(store, records, bytes)| {
                json!({ "hash": store.hash, "client_id": store.client_id, "server": store.server,
                        "records": records, "bytes": bytes })
            })
            .collect();
        return Ok(writeln!(out, "{}", Value::Array(stores)));
    }
    Ok(print_table(&rows, out))
}

fn print_table(rows: &[(Store, usize, u64)], out: &mut impl Write) -> std::io::Result<()> {
    let width = |title: &str, cell: &dyn Fn(&(Store, usize, u64)) -> String| {
        rows.iter().map(|row| cell(row).chars().count()).chain([title.len()]).max().unwrap_or(0)
    };
    let client_width = width("CLIENT ID", &|row| row.0.client_id.clone());
    let server_width = width("SERVER", &|row| row.0.server.clone());
    writeln!(
        out,
        "{:client_width$}  {:server_width$}  {:>7}  {:>9}",
        "CLIENT ID", "SERVER", "RECORDS", "BYTES"
    )?;
    for (store, records, bytes) in rows {
        writeln!(
            out,
            "{:client_width$}  {:server_width$}  {records:>7}  {bytes:>9}",
            store.client_id, store.server
        )?;
    }
    writeln!(out, "{} store(s)", rows.len())
}

fn show(common: &Common, client_id: &str, server: Option<&str>, json: bool, out: &mut impl Write) -> Outcome {
    let mut conn = connect(&common.url)?;
    let stores = match server {
        Some(server) => {
            let server = server_name(server).to_owned();
            let hash = format!("{}{client_id}:{server}", common.prefix);
            let exists: bool =
                redis::cmd("EXISTS").arg(&hash).query(&mut conn).map_err(redis_error("EXISTS"))?;
            if exists {
                vec![Store { hash, client_id: client_id.to_owned(), server }]
            } else {
                Vec::new()
            }
        }
        None => {
            let mut stores = scan_stores(&mut conn, &common.prefix, &format!("{client_id}:"))?;
            stores.retain(|store| store.client_id == client_id);
            stores
        }
    };
    if stores.is_empty() {
        return Err(format!(
            "no store for client id {client_id:?}{}",
            match server {
                Some(server) => format!(" and server {:?}", server_name(server)),
                None => String::new(),
            }
        ));
    }
    let mut shown = Vec::new();
    for store in stores {
        let records: BTreeMap<Vec<u8>, Vec<u8>> =
            redis::cmd("HGETALL").arg(&store.hash).query(&mut conn).map_err(redis_error("HGETALL"))?;
        let mut decoded: Vec<(String, std::result::Result<Record, DecodeError>, Vec<u8>)> = records
            .into_iter()
            .filter(|(field, _)| field != paho_mqtt_redis::BUDGET_COUNTER_FIELD.as_bytes())
            .map(|(field, value)| {
                let key = String::from_utf8_lossy(&field).into_owned();
                let record = decode::decode(&key, &value);
                (key, record, value)
            })
            .collect();
        decoded.sort_by_key(|(key, _, _)| record_order(key));
        shown.push((store, decoded));
    }
    if json {
        let stores: Vec<Value> = shown.iter().map(|(store, records)| store_json(store, records)).collect();
        return Ok(writeln!(out, "{}", Value::Array(stores)));
    }
    Ok(print_records(&shown, out))
}

type Decoded = (String, std::result::Result<Record, DecodeError>, Vec<u8>);

/// Records in the order Paho uses them: sent, PUBREL, received, commands, queue; by number within each.
fn record_order(key: &str) -> (u8, u64, String) {
    match decode::parse_key(key) {
        Ok((kind, _, number)) => {
            let group = match kind {
                decode::Kind::PublishSent => 0,
                decode::Kind::PubrelSent => 1,
                decode::Kind::PublishReceived => 2,
                decode::Kind::Command => 3,
                decode::Kind::QueuedMessage => 4,
            };
            (group, u64::from(number), String::new())
        }
        Err(_) => (5, 0, key.to_owned()),
    }
}

fn print_records(shown: &[(Store, Vec<Decoded>)], out: &mut impl Write) -> std::io::Result<()> {
    for (store, records) in shown {
        let bytes: usize = records.iter().map(|(_, _, value)| value.len()).sum();
        writeln!(
            out,
            "store {} (client {:?}, server {}): {} record(s), {bytes} bytes",
            store.hash,
            store.client_id,
            store.server,
            records.len()
        )?;
        for (key, record, value) in records {
            match record {
                Ok(record) => writeln!(out, "  {record}")?,
                Err(error) => {
                    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
                    writeln!(out, "  {key} UNDECODABLE: {}", error.reason)?;
                    writeln!(out, "    raw ({} bytes): {hex}", value.len())?;
                }
            }
        }
    }
    Ok(())
}

fn store_json(store: &Store, records: &[Decoded]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(key, record, value)| match record {
            Ok(record) => record_json(record),
            Err(error) => {
                json!({ "key": key, "size": value.len(), "error": error.reason, "raw_hex": hex(value) })
            }
        })
        .collect();
    json!({ "hash": store.hash, "client_id": store.client_id, "server": store.server, "records": records })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn record_json(record: &Record) -> Value {
    let mut object = json!({
        "key": record.key,
        "size": record.size,
        "kind": format!("{:?}", record.kind),
        "mqtt_version": match record.version { decode::Version::V3 => "3", decode::Version::V5 => "5" },
        "operation": record.operation(),
        "direction": record.direction(),
        "message_id": record.message_id(),
    });
    let properties = |list: &[decode::Property]| -> Value {
        list.iter()
            .map(|p| {
                let value = match &p.value {
                    PropertyValue::Byte(v) => json!(v),
                    PropertyValue::U16(v) => json!(v),
                    PropertyValue::U32(v) | PropertyValue::VarInt(v) => json!(v),
                    PropertyValue::Binary(v) => json!(hex(v)),
                    PropertyValue::Text(v) => json!(v),
                    PropertyValue::Pair(k, v) => json!([k, v]),
                };
                json!({ "id": p.id, "name": p.name(), "value": value })
            })
            .collect()
    };
    let extra = match &record.content {
        Content::Publish(p) => json!({
            "topic": p.topic, "qos": p.qos, "retain": p.retain, "dup": p.dup, "token": p.token,
            "payload_len": p.payload.len(), "preview": decode::preview(&p.payload, decode::PREVIEW_CHARS),
            "payload_hex": hex(&p.payload), "properties": properties(&p.properties),
        }),
        Content::Pubrel(p) => {
            json!({ "reason_code": p.reason_code, "properties": properties(&p.properties) })
        }
        Content::Subscribe(s) => json!({
            "token": s.token,
            "filters": s.filters.iter().map(|(f, q)| json!({ "filter": f, "qos": q })).collect::<Vec<_>>(),
            "properties": properties(&s.properties),
        }),
        Content::Unsubscribe(u) => {
            json!({ "token": u.token, "filters": u.filters, "properties": properties(&u.properties) })
        }
    };
    if let (Value::Object(object), Value::Object(extra)) = (&mut object, extra) {
        object.extend(extra);
    }
    object
}

fn purge(common: &Common, client_id: &str, server: &str, yes: bool, out: &mut impl Write) -> Outcome {
    let hash = format!("{}{client_id}:{}", common.prefix, server_name(server));
    if !yes {
        return Err(format!(
            "purge deletes every in-flight message in `{hash}`; run it again with --yes to confirm"
        ));
    }
    let mut conn = connect(&common.url)?;
    let (records, deleted): (usize, u64) = redis::pipe()
        .atomic()
        .cmd("HLEN")
        .arg(&hash)
        .cmd("DEL")
        .arg(&hash)
        .query(&mut conn)
        .map_err(redis_error("DEL"))?;
    if deleted == 0 {
        return Err(format!("no store `{hash}`: nothing deleted"));
    }
    Ok(writeln!(out, "deleted store {hash} ({records} record(s))"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_split_from_the_right() {
        let cases = [
            ("gateway-17:127.0.0.1:1883", Some(("gateway-17", "127.0.0.1:1883"))),
            ("a:b:c:broker.example:8883", Some(("a:b:c", "broker.example:8883"))),
            ("dev:[::1]:1883", Some(("dev", "[::1]:1883"))),
            ("dev:with:colons:[fe80::1]:1883", Some(("dev:with:colons", "[fe80::1]:1883"))),
            ("ws-client:host:80/mqtt", Some(("ws-client", "host:80/mqtt"))),
            ("local:/run/mosquitto.sock", Some(("local", "/run/mosquitto.sock"))),
            ("id:host:1883", Some(("id", "host:1883"))),
            ("host:1883", None),
            (":host:1883", None),
            ("no-separator", None),
            ("dev[::1]:1883", None),
        ];
        for (name, expected) in cases {
            assert_eq!(split_store_name(name), expected, "{name}");
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert_eq!(glob_escape("plain:id"), "plain:id");
    }

    #[test]
    fn a_scheme_on_the_server_is_ignored() {
        assert_eq!(server_name("tcp://127.0.0.1:1883"), "127.0.0.1:1883");
        assert_eq!(server_name("127.0.0.1:1883"), "127.0.0.1:1883");
    }
}
