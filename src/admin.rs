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
//! Each store may have a quarantine beside it (`{hash}:quarantine`, see
//! [`Config::quarantine_name`]): the records its `open` found that no
//! restore could take, set aside with why. [`Stores::quarantine`] lists
//! them, [`Stores::put_back`] returns one to its store, and
//! [`Stores::purge_quarantine`] deletes them.
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
use std::time::{Duration, SystemTime};

use redis::{Connection, RedisError};

use crate::config::{LEASE_SUFFIX, QUARANTINE_SUFFIX};
pub use crate::core::BUDGET_COUNTER_FIELD;
use crate::core::QUARANTINE_REASON_SUFFIX;
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

/// A record in a store's quarantine: set aside by `open` because no restore
/// of its client could take it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quarantined {
    /// Its entry in the quarantine, `{key}@{ms}`: what names it to
    /// [`Stores::put_back`] and [`Stores::purge_quarantine`].
    pub entry: String,
    /// Its Paho key in the store (a field name that was not UTF-8 is shown lossily).
    pub key: String,
    /// When `open` set it aside.
    pub at: SystemTime,
    /// Why no restore could take it.
    pub reason: String,
    /// Its value, the exact bytes the store held.
    pub value: Vec<u8>,
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
                let Some(name) = hash.strip_prefix(&prefix).filter(|name| !is_beside_a_store(name)) else {
                    continue;
                };
                let Some((found, server)) = split_store_name(name) else { continue };
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

    /// The store of `client_id` on `server` (a scheme such as `tcp://` is
    /// ignored), named without asking Redis: for its quarantine, which may
    /// outlive a store all of whose records were set aside.
    pub fn named(&self, client_id: &str, server: &str) -> Store {
        let server = server_name(server);
        Store {
            client_id: client_id.to_owned(),
            server: server.to_owned(),
            hash: self.config.hash_name(client_id, server),
        }
    }

    /// Every record in `store`'s quarantine, oldest first (an empty list
    /// when it has none). These are the raw entries: export them as they are.
    pub fn quarantine(&mut self, store: &Store) -> Result<Vec<Quarantined>, Error> {
        let quarantine = Config::quarantine_name(&store.hash);
        let fields: Vec<(Vec<u8>, Vec<u8>)> =
            self.query("HGETALL", &quarantine, |conn| redis::cmd("HGETALL").arg(&quarantine).query(conn))?;
        let reasons: std::collections::HashMap<&[u8], &[u8]> = fields
            .iter()
            .filter_map(|(field, value)| {
                field.strip_suffix(QUARANTINE_REASON_SUFFIX.as_bytes()).map(|entry| (entry, value.as_slice()))
            })
            .collect();
        let mut entries: Vec<Quarantined> = fields
            .iter()
            .filter(|(field, _)| !field.ends_with(QUARANTINE_REASON_SUFFIX.as_bytes()))
            .map(|(field, value)| {
                let entry = String::from_utf8_lossy(field).into_owned();
                let (key, at) = split_entry(&entry);
                let reason = reasons.get(field.as_slice()).map_or_else(
                    || "(no reason recorded)".to_owned(),
                    |reason| String::from_utf8_lossy(reason).into_owned(),
                );
                Quarantined { key: key.to_owned(), at, reason, value: value.clone(), entry }
            })
            .collect();
        entries.sort_by(|a, b| (a.at, &a.entry).cmp(&(b.at, &b.entry)));
        Ok(entries)
    }

    /// One record of `store`'s quarantine, by its entry (`{key}@{ms}`), or
    /// `None` when there is no such entry.
    pub fn quarantined(&mut self, store: &Store, entry: &str) -> Result<Option<Quarantined>, Error> {
        Ok(self.quarantine(store)?.into_iter().find(|found| found.entry == entry))
    }

    /// Puts a quarantined record back into its store, under its key, and
    /// removes it from the quarantine, atomically. Refused, changing
    /// nothing ([`Error::PutBackRefused`]), while a process owns the store
    /// (its key `{hash}:owner` exists, see [`Config::lease_name`]), when
    /// the store already holds that key, or when there is no such entry.
    /// The store's next `open` checks it again: put back only what its
    /// client can now restore (or the quarantine takes it again).
    pub fn put_back(&mut self, store: &Store, entry: &str) -> Result<(), Error> {
        let quarantine = Config::quarantine_name(&store.hash);
        let owner = Config::lease_name(&store.hash);
        let (key, _) = split_entry(entry);
        let script = redis::Script::new(PUT_BACK_SCRIPT);
        let outcome: String = self.query("EVALSHA", &quarantine, |conn| {
            script
                .key(&store.hash)
                .key(&quarantine)
                .key(&owner)
                .arg(entry)
                .arg(key)
                .arg(BUDGET_COUNTER_FIELD)
                .invoke(conn)
        })?;
        let why = match outcome.as_str() {
            "restored" => return Ok(()),
            "owned" => format!("a process has the store open (`{owner}` exists): close it first"),
            "missing" => "no such entry in the quarantine".to_owned(),
            "taken" => format!("the store holds a record `{key}` already"),
            found => format!("`{}` holds a {found}, not a hash", store.hash),
        };
        Err(Error::PutBackRefused { hash: store.hash.clone(), quarantine, entry: entry.to_owned(), why })
    }

    /// Deletes the record `entry` of `store`'s quarantine, or (`None`) every
    /// record of it. Returns how many records were deleted.
    pub fn purge_quarantine(&mut self, store: &Store, entry: Option<&str>) -> Result<usize, Error> {
        let quarantine = Config::quarantine_name(&store.hash);
        match entry {
            Some(entry) => {
                let reason = format!("{entry}{QUARANTINE_REASON_SUFFIX}");
                let deleted: usize = self.query("HDEL", &quarantine, |conn| {
                    redis::cmd("HDEL").arg(&quarantine).arg(entry).arg(&reason).query(conn)
                })?;
                // The entry, and its reason if it had one.
                Ok(usize::from(deleted > 0))
            }
            None => {
                let script = redis::Script::new(PURGE_SCRIPT);
                let (found, fields): (String, Vec<Vec<u8>>) =
                    self.query("EVALSHA", &quarantine, |conn| script.key(&quarantine).invoke(conn))?;
                match found.as_str() {
                    "none" | "hash" => Ok(fields
                        .iter()
                        .filter(|field| !field.ends_with(QUARANTINE_REASON_SUFFIX.as_bytes()))
                        .count()),
                    _ => Err(Error::NotAHash { hash: quarantine, found }),
                }
            }
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

/// `KEYS` = the store, its quarantine, its owner key; `ARGV` = the entry,
/// its Paho key, the budget's counter field. Puts the entry back under its
/// key (keeping a byte count the store has), or says why not.
/// `TYPE`, not `EXISTS`: the README's least-privilege ACL allows it.
const PUT_BACK_SCRIPT: &str = r"
if redis.call('TYPE', KEYS[3]).ok ~= 'none' then return 'owned' end
local found = redis.call('TYPE', KEYS[1]).ok
if found ~= 'none' and found ~= 'hash' then return found end
local value = redis.call('HGET', KEYS[2], ARGV[1])
if not value then return 'missing' end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 'taken' end
redis.call('HSET', KEYS[1], ARGV[2], value)
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[3], #value)
end
redis.call('HDEL', KEYS[2], ARGV[1], ARGV[1] .. '#reason')
return 'restored'
";

/// A quarantine entry's Paho key and when it was set aside: `{key}@{ms}`,
/// split from the right (a key may hold `@`).
fn split_entry(entry: &str) -> (&str, SystemTime) {
    let (key, ms) = entry.rsplit_once('@').unwrap_or((entry, ""));
    let at = ms.parse::<u64>().map_or(SystemTime::UNIX_EPOCH, |ms| {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)).unwrap_or(SystemTime::UNIX_EPOCH)
    });
    (key, at)
}

/// Whether a hash name (without the prefix) is beside a store rather than one.
fn is_beside_a_store(name: &str) -> bool {
    name.ends_with(QUARANTINE_SUFFIX) || name.ends_with(LEASE_SUFFIX)
}

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
    fn quarantine_entries_split_from_the_right() {
        let (key, at) = split_entry("s-1@1733548800123");
        assert_eq!(key, "s-1");
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).ok(),
            Some(Duration::from_millis(1733548800123))
        );
        assert_eq!(split_entry("odd@key@5").0, "odd@key");
        assert!(PUT_BACK_SCRIPT.contains(&format!("'{QUARANTINE_REASON_SUFFIX}'")));
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
