//! The stores on a Redis as an operator sees them: find them, measure them,
//! read their records, delete one. The `paho-mqtt-redis` command (feature
//! `cli`) is this module plus formatting.
//!
//! [`Stores`] connects as [`RedisPersistence`](crate::RedisPersistence)
//! does, from the same [`Config`]: the same URL schemes and feature checks,
//! query parameters, AUTH, database, timeouts and errors. It reads the
//! stores' hashes directly and keeps no state: run it beside a live client
//! only to look, and purge a store only while no client uses it.
//!
//! ```no_run
//! use paho_mqtt_redis::admin::Stores;
//! use paho_mqtt_redis::RedisPersistence;
//!
//! let config = RedisPersistence::builder().url("redis+unix:///run/redis/redis.sock").into_config()?;
//! let mut stores = Stores::connect(&config)?;
//! for store in stores.list(None)? {
//!     if let Some(size) = stores.size(&store)? {
//!         println!("{} on {}: {} records in flight", store.client_id, store.server, size.records);
//!     }
//! }
//! # Ok::<(), paho_mqtt_redis::Error>(())
//! ```

use std::fmt;

use redis::{Connection, RedisError};

use crate::core::BUDGET_COUNTER_FIELD;
use crate::{paho, Config, Error};

/// A connection for looking into the stores under one key prefix.
pub struct Stores {
    config: Config,
    conn: Connection,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One store: a Redis hash named `{key_prefix}{client_id}:{server}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct Store {
    /// The MQTT client id.
    pub client_id: String,
    /// The server URI as Paho passes it to `open`: without its scheme, such as `127.0.0.1:1883`.
    pub server: String,
    /// The Redis hash.
    pub hash: String,
}

/// How much a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Size {
    /// Records: fields that are Paho keys (the budget's byte count is not one).
    pub records: usize,
    /// Bytes of the records' values.
    pub bytes: u64,
}

impl Stores {
    /// Connects to the Redis of `config`.
    pub fn connect(config: &Config) -> Result<Self, Error> {
        Ok(Self { config: config.clone(), conn: crate::transport::connect(config)? })
    }

    /// The store of `client_id` on `server` (a scheme such as `tcp://` is
    /// ignored), or `None` when Redis holds no such key; [`Error::NotAHash`]
    /// when the key holds something else.
    pub fn find(&mut self, client_id: &str, server: &str) -> Result<Option<Store>, Error> {
        let server = server_name(server);
        let hash = self.config.hash_name(client_id, server);
        let found: String = self.query("TYPE", &hash, |conn| redis::cmd("TYPE").arg(&hash).query(conn))?;
        match found.as_str() {
            "none" => Ok(None),
            "hash" => Ok(Some(Store { client_id: client_id.to_owned(), server: server.to_owned(), hash })),
            _ => Err(Error::NotAHash { hash, found }),
        }
    }

    /// Every store under the key prefix, or only `client_id`'s, sorted by
    /// client id and server. Found with `SCAN`, never `KEYS`, so a large
    /// Redis is not blocked.
    pub fn list(&mut self, client_id: Option<&str>) -> Result<Vec<Store>, Error> {
        let prefix = self.config.key_prefix().to_owned();
        let client_pattern = client_id.map(|id| format!("{}:", glob_escape(id))).unwrap_or_default();
        let pattern = format!("{}{client_pattern}*", glob_escape(&prefix));
        let mut cursor: u64 = 0;
        let mut stores = Vec::new();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).arg("TYPE").arg("hash");
            let (next, names): (u64, Vec<Vec<u8>>) = self.query("SCAN", &pattern, |conn| scan.query(conn))?;
            for name in names {
                // Paho's client ids and server URIs are UTF-8: any other name is no store.
                let Ok(hash) = String::from_utf8(name) else { continue };
                let Some((found, server)) = hash.strip_prefix(&prefix).and_then(split_store_name) else {
                    continue;
                };
                if client_id.is_none_or(|id| id == found) {
                    let (client_id, server) = (found.to_owned(), server.to_owned());
                    stores.push(Store { client_id, server, hash });
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        stores.sort();
        stores.dedup(); // SCAN may return a key twice
        Ok(stores)
    }

    /// The store's record count and bytes, or `None` when no field of the
    /// hash is a Paho key (a hash of something else whose name matched).
    pub fn size(&mut self, store: &Store) -> Result<Option<Size>, Error> {
        let hash = &store.hash;
        let fields: Vec<Vec<u8>> =
            self.query("HKEYS", hash, |conn| redis::cmd("HKEYS").arg(hash).query(conn))?;
        let records: Vec<Vec<u8>> = fields.into_iter().filter(|field| is_record(field)).collect();
        if records.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for field in &records {
            pipe.cmd("HSTRLEN").arg(hash).arg(field);
        }
        let lengths: Vec<u64> = self.query("HSTRLEN", hash, |conn| pipe.query(conn))?;
        Ok(Some(Size { records: records.len(), bytes: lengths.iter().sum() }))
    }

    /// Every field of the store but the budget's byte count, as (key, value),
    /// in no particular order: Paho's records, and anything else written
    /// there (a field name that is not UTF-8 is shown lossily).
    pub fn records(&mut self, store: &Store) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let hash = &store.hash;
        let fields: Vec<(Vec<u8>, Vec<u8>)> =
            self.query("HGETALL", hash, |conn| redis::cmd("HGETALL").arg(hash).query(conn))?;
        Ok(fields
            .into_iter()
            .filter(|(field, _)| field != BUDGET_COUNTER_FIELD.as_bytes())
            .map(|(field, value)| (String::from_utf8_lossy(&field).into_owned(), value))
            .collect())
    }

    /// Deletes the store of `client_id` on `server`: every message in flight
    /// there is lost. Returns how many records it held, or `None` when there
    /// was no such key; [`Error::NotAHash`], and nothing deleted, when the
    /// key holds something else.
    pub fn purge(&mut self, client_id: &str, server: &str) -> Result<Option<usize>, Error> {
        let hash = self.config.hash_name(client_id, server_name(server));
        // One script: the type is checked and the hash deleted with nothing in between.
        let script = redis::Script::new(PURGE_SCRIPT);
        let (found, fields): (String, Vec<Vec<u8>>) =
            self.query("EVALSHA", &hash, |conn| script.key(&hash).invoke(conn))?;
        match found.as_str() {
            "none" => Ok(None),
            "hash" => Ok(Some(fields.iter().filter(|field| is_record(field)).count())),
            _ => Err(Error::NotAHash { hash, found }),
        }
    }

    /// Runs `command`; a failure names the Redis command and the key it was for.
    fn query<T>(
        &mut self,
        name: &'static str,
        key: &str,
        command: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Error> {
        command(&mut self.conn).map_err(|source| Error::command(name, key, source))
    }
}

/// Deletes `KEYS[1]` if it is a hash; returns its type and the fields it had.
const PURGE_SCRIPT: &str = r"
local found = redis.call('TYPE', KEYS[1]).ok
if found ~= 'hash' then return {found, {}} end
local fields = redis.call('HKEYS', KEYS[1])
redis.call('DEL', KEYS[1])
return {found, fields}
";

/// Whether a field of a store is one of Paho's records (the budget's byte
/// count is not, nor is anything else written there).
fn is_record(field: &[u8]) -> bool {
    std::str::from_utf8(field).is_ok_and(|key| paho::parse_key(key).is_ok())
}

/// A server URI as Paho names it in a store's hash, without its scheme:
/// `tcp://host:port` → `host:port`.
pub fn server_name(server: &str) -> &str {
    server.split_once("://").map_or(server, |(_, rest)| rest)
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

/// Splits a hash name (without the prefix) into client id and server, or `None`.
///
/// The server is Paho's URI without its scheme, so it is found from the right:
/// - it ends with `:PORT` or `:PORT/path` (1 to 5 digits): the host is what
///   precedes that colon back to the previous `:`, or, for an IPv6 host, back
///   to its `[`; the client id is everything before, and may contain `:`;
/// - otherwise it is a socket path (`unix://`): it starts at the last `:/`.
fn split_store_name(name: &str) -> Option<(&str, &str)> {
    let port_colon = name.char_indices().rev().filter(|&(_, c)| c == ':').map(|(i, _)| i).find(|&i| {
        let after = name.get(i + 1..).unwrap_or_default();
        let port = after.split_once('/').map_or(after, |(port, _path)| port);
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
