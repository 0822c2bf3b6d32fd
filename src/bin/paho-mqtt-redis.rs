//! `paho-mqtt-redis`: look into the stores that `RedisPersistence` keeps in Redis.
//!
//! ```text
//! paho-mqtt-redis [--url URL] [--prefix P] [--timeout S] COMMAND …
//! paho-mqtt-redis list  [--url URL] [--prefix P] [--json]
//! paho-mqtt-redis show  CLIENT_ID [--server HOST:PORT] [--url URL] [--prefix P] [--json]
//! paho-mqtt-redis purge CLIENT_ID --server HOST:PORT --yes [--url URL] [--prefix P]
//! paho-mqtt-redis quarantine list    CLIENT_ID --server HOST:PORT [--json]
//! paho-mqtt-redis quarantine show    CLIENT_ID ENTRY --server HOST:PORT [--json]
//! paho-mqtt-redis quarantine export  CLIENT_ID --server HOST:PORT
//! paho-mqtt-redis quarantine restore CLIENT_ID ENTRY --server HOST:PORT
//! paho-mqtt-redis quarantine purge   CLIENT_ID [ENTRY] --server HOST:PORT --yes
//! ```
//!
//! `--url`, `--prefix` and `--timeout` (and `PAHO_MQTT_REDIS_URL`) are
//! accepted before the command or anywhere after it, for every command.
//!
//! The quarantine of a store holds the records its `open` found that no
//! restore could take, each under an entry `{key}@{ms}` with why.
//!
//! A store is the Redis hash `{prefix}{client_id}:{server_uri}`, where Paho's
//! server URI has lost its scheme: `host:port`, `[v6 address]:port`,
//! `host:port/path` for websockets, or a socket path for `unix://`.
//!
//! Redis is configured through the library's `Builder` and reached through
//! `paho_mqtt_redis::admin`: the same URLs, feature checks, timeouts and
//! errors as the store itself. This file only parses arguments and prints.

use clap::{Args, Parser, Subcommand};
use paho_mqtt_redis::admin::{self, Quarantined, Size, Store, Stores};
use paho_mqtt_redis::decode::{self, Content, DecodeError, PropertyValue, Record};
use paho_mqtt_redis::{Config, RedisPersistence};
use serde_json::{json, Value};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "Inspect the MQTT stores that paho-mqtt-redis keeps in Redis")]
struct Cli {
    /// Where the stores are: accepted before the subcommand or after it.
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Where the stores are, and how long to wait for Redis: options of every
/// command, given before or after the subcommand (`global`).
#[derive(Args, Debug)]
struct Common {
    /// The Redis server: redis://[user:password@]host[:port][/db], redis+unix:///path[?db=N]
    /// (feature unix-socket) or rediss://… (feature tls).
    #[arg(
        long,
        global = true,
        default_value = "redis://127.0.0.1:6379/0",
        env = "PAHO_MQTT_REDIS_URL",
        hide_env_values = true
    )]
    url: String,
    /// The key prefix the stores were created with (`key_prefix` of the builder).
    #[arg(long, global = true, default_value = "")]
    prefix: String,
    /// How long to wait for Redis to accept the connection, and for each answer, in seconds.
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECONDS")]
    timeout: f64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every store: client id, server URI, record count and bytes.
    List {
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
    },
    /// A store's quarantine: the records its open found that no restore could take.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

/// What to do with a store's quarantine.
#[derive(Subcommand, Debug)]
enum QuarantineCommand {
    /// Every record set aside: entry, key, when, size and why.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One record set aside, decoded where it decodes, else as hex.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// The entry, as `list` names it (`{key}@{ms}`).
        entry: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every record set aside, raw, as JSON (values in hex).
    Export {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Put one record back into its store (only while no process has the store open).
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The entry, as `list` names it (`{key}@{ms}`).
        entry: String,
    },
    /// Delete one record set aside, or all of them.
    Purge {
        #[command(flatten)]
        store: StoreArgs,
        /// The entry, as `list` names it; without one, every record is deleted.
        entry: Option<String>,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// Which store: client id and server, and the Redis it is on.
#[derive(Args, Debug)]
struct StoreArgs {
    /// The MQTT client id.
    client_id: String,
    /// The server (host:port, as Paho names it; a scheme such as tcp:// is ignored).
    #[arg(long)]
    server: String,
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
        Command::List { json } => list(&cli.common, json, out),
        Command::Show { client_id, server, json } => {
            show(&cli.common, &client_id, server.as_deref(), json, out)
        }
        Command::Purge { client_id, server, yes } => purge(&cli.common, &client_id, &server, yes, out),
        Command::Quarantine { command } => quarantine(command, &cli.common, out),
    };
    written?.map_err(|e| format!("cannot write the output: {e}"))
}

/// The outcome of a command: `Err` for a failure to report, `Ok(Err)` for a broken stdout.
type Outcome = Result<std::io::Result<()>>;

/// `common`'s Redis and prefix, configured as a store's would be.
fn config(common: &Common) -> Result<Config> {
    let timeout = Duration::try_from_secs_f64(common.timeout)
        .map_err(|_| format!("invalid --timeout {}: a number of seconds", common.timeout))?;
    let builder = RedisPersistence::builder()
        .url(common.url.as_str())
        .key_prefix(common.prefix.as_str())
        .connect_timeout(timeout)
        .io_timeout(timeout);
    builder.into_config().map_err(failed)
}

/// The stores under `common`'s prefix, on its Redis.
fn connect(common: &Common) -> Result<Stores> {
    Stores::connect(&config(common)?).map_err(failed)
}

/// A failure of the library, for the user: its message names what failed.
fn failed(error: paho_mqtt_redis::Error) -> String {
    error.to_string()
}

fn list(common: &Common, json: bool, out: &mut impl Write) -> Outcome {
    let mut stores = connect(common)?;
    let mut rows = Vec::new();
    for store in stores.list(None).map_err(failed)? {
        if let Some(Size { records, bytes, .. }) = stores.size(&store).map_err(failed)? {
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
    let mut connection = connect(common)?;
    let stores = match server {
        Some(server) => connection.find(client_id, server).map_err(failed)?.into_iter().collect(),
        None => connection.list(Some(client_id)).map_err(failed)?,
    };
    if stores.is_empty() {
        return Err(format!(
            "no store for client id {client_id:?}{}",
            match server {
                Some(server) => format!(" and server {:?}", admin::server_name(server)),
                None => String::new(),
            }
        ));
    }
    let mut shown = Vec::new();
    for store in stores {
        let mut decoded: Vec<Decoded> = connection
            .records(&store)
            .map_err(failed)?
            .into_iter()
            .map(|(key, value)| {
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
    let hash = config(common)?.hash_name(client_id, admin::server_name(server));
    if !yes {
        return Err(format!(
            "purge deletes every in-flight message in `{hash}`; run it again with --yes to confirm"
        ));
    }
    match connect(common)?.purge(client_id, server).map_err(failed)? {
        Some(records) => Ok(writeln!(out, "deleted store {hash} ({records} record(s))")),
        None => Err(format!("no store `{hash}`: nothing deleted")),
    }
}

fn quarantine(command: QuarantineCommand, common: &Common, out: &mut impl Write) -> Outcome {
    match command {
        QuarantineCommand::List { store, json } => {
            let (hash, entries) = quarantined(&store, common)?;
            if json {
                let entries: Vec<Value> = entries.iter().map(|entry| entry_json(entry, false)).collect();
                return Ok(writeln!(out, "{}", Value::Array(entries)));
            }
            Ok(print_quarantine(&hash, &entries, out))
        }
        QuarantineCommand::Show { store, entry, json } => {
            let (hash, entries) = quarantined(&store, common)?;
            let Some(found) = entries.into_iter().find(|found| found.entry == entry) else {
                return Err(format!("no entry {entry:?} in the quarantine of `{hash}`"));
            };
            let record = decode::decode(&found.key, &found.value);
            if json {
                let mut object = entry_json(&found, true);
                if let (Value::Object(object), Ok(record)) = (&mut object, &record) {
                    object.insert("decoded".to_owned(), record_json(record));
                }
                return Ok(writeln!(out, "{object}"));
            }
            Ok(print_entry(&found, &record, out))
        }
        QuarantineCommand::Export { store } => {
            let (_, entries) = quarantined(&store, common)?;
            let entries: Vec<Value> = entries.iter().map(|entry| entry_json(entry, true)).collect();
            Ok(writeln!(out, "{}", Value::Array(entries)))
        }
        QuarantineCommand::Restore { store, entry } => {
            let mut stores = connect(common)?;
            let named = stores.named(&store.client_id, &store.server);
            stores.put_back(&named, &entry).map_err(failed)?;
            Ok(writeln!(out, "put {entry} back into store {}", named.hash))
        }
        QuarantineCommand::Purge { store, entry, yes } => {
            let mut stores = connect(common)?;
            let named = stores.named(&store.client_id, &store.server);
            let quarantine = Config::quarantine_name(&named.hash);
            if !yes {
                let what = entry.as_deref().map_or("every record".to_owned(), |entry| format!("{entry:?}"));
                return Err(format!(
                    "purge deletes {what} of `{quarantine}`; run it again with --yes to confirm"
                ));
            }
            let deleted = stores.purge_quarantine(&named, entry.as_deref()).map_err(failed)?;
            if deleted == 0 && entry.is_some() {
                return Err(format!("no such entry in `{quarantine}`: nothing deleted"));
            }
            Ok(writeln!(out, "deleted {deleted} record(s) from {quarantine}"))
        }
    }
}

/// The store's hash and the records of its quarantine.
fn quarantined(store: &StoreArgs, common: &Common) -> Result<(String, Vec<Quarantined>)> {
    let mut stores = connect(common)?;
    let named = stores.named(&store.client_id, &store.server);
    let entries = stores.quarantine(&named).map_err(failed)?;
    Ok((named.hash, entries))
}

/// Milliseconds since the Unix epoch.
fn unix_ms(entry: &Quarantined) -> u128 {
    entry.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis())
}

fn entry_json(entry: &Quarantined, value: bool) -> Value {
    let mut object = json!({
        "entry": entry.entry, "key": entry.key, "at_ms": unix_ms(entry),
        "size": entry.value.len(), "reason": entry.reason,
    });
    if let (Value::Object(object), true) = (&mut object, value) {
        object.insert("value_hex".to_owned(), json!(hex(&entry.value)));
    }
    object
}

fn print_quarantine(hash: &str, entries: &[Quarantined], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "quarantine of {hash}: {} record(s)", entries.len())?;
    for entry in entries {
        writeln!(out, "  {}  {} bytes  {}", entry.entry, entry.value.len(), entry.reason)?;
    }
    Ok(())
}

fn print_entry(
    entry: &Quarantined,
    record: &std::result::Result<Record, DecodeError>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "{} (key {}, {} bytes): {}", entry.entry, entry.key, entry.value.len(), entry.reason)?;
    match record {
        Ok(record) => writeln!(out, "  {record}")?,
        Err(error) => writeln!(out, "  undecodable: {}", error.reason)?,
    }
    writeln!(out, "  raw: {}", hex(&entry.value))
}
