//! [`RedisPersistence`]: Paho's persistence callbacks mapped onto one Redis hash.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use paho_mqtt::ClientPersistence;
use redis::{RedisError, RedisResult};
use smallvec::SmallVec;

use crate::budget::{self, COUNTER_FIELD};
use crate::config::{Builder, Config};
use crate::connection::Link;
use crate::local::{is_command_key, paho_carries_on_without, FieldIndex, FieldName, RecordCache};
use crate::stats::{Counters, Operation};
use crate::{resp, Error, Stats, StatsHandle};

/// Capacity of the put buffer when the store is created: a typical MQTT packet fits.
const PUT_BUFFER_INITIAL: usize = 1024;

/// The largest record `put` accepts: Redis's own limit on one value
/// (`proto-max-bulk-len`, 512 MiB by default). An MQTT packet is at most
/// 256 MiB, so Paho never comes near it.
const MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;

/// A put buffer grown beyond this by one large message is released afterwards,
/// so one 10 MB publish does not pin 10 MB for the life of the client.
const PUT_BUFFER_RETAINED_MAX: usize = 64 * 1024;

/// Keeps a Paho MQTT client's in-flight messages in one Redis hash.
///
/// Register it with
/// [`CreateOptionsBuilder::user_persistence`](paho_mqtt::CreateOptionsBuilder::user_persistence).
/// Paho then calls `open` with the client id and server URI, and the store
/// lives in the hash `{key_prefix}{client_id}:{server_uri}` (see
/// [`Config::hash_name`]).
///
/// # Round trips
///
/// Paho calls the store synchronously from its own threads, so each Redis
/// round trip is latency of the client. The store therefore assumes it is the
/// only writer of its hash and keeps what it can locally:
///
/// - `open` reads the whole hash with one `HGETALL`. Paho's restore (three
///   `keys`, one `get` per record, `contains_key` per sent PUBLISH) is answered
///   from that snapshot, and each snapshot entry is freed once read.
/// - An index of the hash's fields answers `keys`, `contains_key` and the
///   `remove` of a key never written (Paho removes four keys per
///   acknowledged message, usually three of them absent) without a round trip.
/// - Paho writes each queued command (`c-` record) and reads it back when it
///   sends the command; the read is served from a small cache of the latest
///   command records.
/// - Paho removes a command record just before it writes the PUBLISH record
///   (`s-`) of the same message. That removal is sent with the next write, in
///   the same pipeline and after it, so the message is never absent from
///   Redis in between (with Paho's own order, a crash at that moment loses
///   it). A crash before that write leaves the command record, which Paho
///   restores and sends: the message was not sent yet, so nothing is
///   duplicated.
/// - `put` encodes its `HSET` straight into one reused buffer, joining Paho's
///   buffers in place.
///
/// An online QoS 1 publish costs 4 Redis commands in 3 round trips (0.3 sent
/// 8 commands), and restoring any number of records costs one command.
///
/// After every reconnect, the store compares its index with the hash: records
/// Redis lost (a restart without persistence) are logged, and command records
/// still cached are written again.
///
/// # Failures
///
/// Each callback either succeeds or fails with
/// [`paho_mqtt::Error::PersistenceError`] and leaves the store as it was; the
/// reason is logged through the [`log`] crate (operation, key, error). A broken
/// connection is re-established once within the failing call, so the first
/// call after a Redis restart succeeds.
///
/// Exceptions follow what Paho C does with a failure, so that Redis ends up
/// holding what Paho believes it holds:
///
/// - A `put` of a command record (`c-`, written for every publish) does not
///   fail: when Redis cannot take it, it is kept in memory, served to Paho's
///   read-back, and written with the next successful write. Paho C 1.3.16
///   keeps a command whose record failed to persist queued and sends it,
///   while paho-mqtt 0.14 frees that publish's token when told of the
///   failure: the process then crashes (a use after free). Such a message is
///   not crash-safe until Redis has taken it; [`RedisPersistence::unwritten`]
///   counts them.
/// - A `put` of a PUBLISH, PUBREL or received-PUBLISH record (`s-`, `sc-`,
///   `r-`) that cannot reach Redis, or times out, is kept the same way: Paho C
///   ignores the result of those writes and sends (or handles) the packet
///   anyway. Failing it and forgetting the record would, once the command
///   record's removal went out, leave a message Paho has in flight in no
///   record at all. A refusal by Redis (a full store, `WRONGTYPE`) still
///   fails such a `put`; with a budget, the command record's removal then
///   does not happen either (it runs inside the same script).
/// - A `remove` that cannot reach Redis succeeds locally and is sent with the
///   next successful write. Paho ignores failed removes, and the index must
///   follow Paho.
///
/// # `contains_key` answers inverted, on purpose
///
/// Paho C's `pcontainskey` callback returns `0` when the key is present.
/// paho-mqtt 0.14 converts the Rust `bool` with `true → 1`, so an
/// implementation returning the plain truth tells Paho C the opposite: after a
/// restart, a QoS 2 message whose PUBREL was already sent is published again
/// (a duplicate), and one whose PUBREL was not is never re-sent (a loss).
/// This type's [`ClientPersistence::contains_key`] therefore returns `true`
/// when the key is **absent**, so Paho C sees the truth. Rust code that wants
/// the plain answer calls [`RedisPersistence::contains`]. The end-to-end test
/// `tests/qos2_restart.rs` pins this, and fails once paho-mqtt fixes the
/// conversion.
///
/// # Threads
///
/// `RedisPersistence` is `Send` and `Sync`. Paho C may call it from its send
/// and receive threads; every call takes an internal lock, so calls never
/// interleave on the Redis connection.
#[derive(Debug)]
pub struct RedisPersistence {
    config: Config,
    /// Outside the lock: `stats()` never waits for a Redis call.
    counters: Arc<Counters>,
    state: Mutex<State>,
}

/// What changes while the store is in use; guarded by one lock.
struct State {
    link: Link,
    /// `None` before `open` and after `close`.
    store: Option<OpenStore>,
    /// The put buffer: commands are encoded here, reused across calls.
    packed: BytesMut,
}

/// The local knowledge about the open store's hash.
#[derive(Debug)]
struct OpenStore {
    hash: String,
    /// The fields as Paho wrote them: removed fields leave at once, even
    /// while their `HDEL` waits in `removals_owed`.
    fields: FieldIndex,
    /// The hash as `open` read it, until Paho's restore has read each record.
    restore_snapshot: HashMap<String, Vec<u8>>,
    /// The latest command records, and every record Redis has not taken yet.
    cache: RecordCache,
    /// Fields removed locally whose `HDEL` has not been sent yet.
    removals_owed: Vec<FieldName>,
    /// The connection generation the index was last checked against.
    synced_generation: u64,
    /// A write failed with an unknown outcome (it timed out, or the
    /// connection broke before the reply): Redis may still run it, so the
    /// index is checked against the hash at the next chance.
    outcome_unknown: bool,
    /// The QoS 1 PUBLISH records whose removal `defer_qos1_removals` defers.
    qos1_publishes: HashSet<FieldName>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("store", &self.store)
            .field("put_buffer_capacity", &self.packed.capacity())
            .finish_non_exhaustive()
    }
}

impl Default for RedisPersistence {
    fn default() -> Self {
        Self::from_config(Config::default())
    }
}

/// The replies of one pipelined exchange, one per command: `Ok` or the error
/// reply. Inline, so that reading them does not allocate.
type Replies = SmallVec<[RedisResult<()>; 4]>;

/// What one write exchange carries: one write of the records kept in memory
/// and of the new record, if any, and the owed removals.
#[derive(Debug, Clone, Copy)]
struct WritePlan {
    write: bool,
    /// Records kept in memory that the write carries.
    owed_records: usize,
    removals: Removals,
}

/// Where the owed removals go in a write exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removals {
    None,
    /// Inside the budget's write script: they happen only with the write.
    InsideWrite,
    /// As their own command after the write.
    AfterWrite,
}

impl WritePlan {
    /// The replies to read.
    fn commands(self) -> usize {
        usize::from(self.write) + usize::from(self.removals == Removals::AfterWrite)
    }
}

impl RedisPersistence {
    /// A store on the Redis at `127.0.0.1:6379`, database 0, with no key prefix.
    ///
    /// Never fails: nothing connects until Paho calls `open`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store on the Redis at `url`, with default timeouts and no key prefix.
    ///
    /// Accepts `redis://[user:password@]host[:port][/db]`, with feature
    /// `unix-socket` also `redis+unix:///path[?db=N]` and `unix:///path`, and
    /// with feature `tls` also `rediss://…`. A scheme whose feature is off is
    /// rejected with [`Error::FeatureDisabled`], naming the feature.
    pub fn with_url(url: &str) -> Result<Self, Error> {
        Self::builder().url(url).build()
    }

    /// A builder for every option.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A store with a validated configuration.
    pub fn from_config(config: Config) -> Self {
        let counters = Arc::new(Counters::new());
        Self {
            config,
            counters: Arc::clone(&counters),
            state: Mutex::new(State {
                link: Link::new(counters),
                store: None,
                packed: BytesMut::with_capacity(PUT_BUFFER_INITIAL),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The name of the Redis hash of the open store, or `None` before `open`.
    pub fn hash_name(&self) -> Option<String> {
        self.lock().store.as_ref().map(|store| store.hash.clone())
    }

    /// Whether `key` is in the store: the plain answer, for Rust callers.
    ///
    /// (The trait's [`ClientPersistence::contains_key`] answers inverted for
    /// Paho C's sake; see the type's documentation.)
    pub fn contains(&self, key: &str) -> Result<bool, Error> {
        Ok(self.lock().store.as_ref().ok_or(Error::NotOpen)?.fields.contains(key))
    }

    /// The store's counters since it was created: calls by kind, Redis round
    /// trips, bytes, errors, reconnects, and the calls answered locally (see
    /// [`Stats`]). Lock-free: never waits for a Redis call in progress.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// A handle on this store's counters, to keep after the store is moved
    /// into Paho's create options.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle::new(Arc::clone(&self.counters))
    }

    /// How many records Redis has not taken yet (it was unreachable, or it
    /// refused a command record): they are in memory only until it does.
    pub fn unwritten(&self) -> usize {
        self.lock().store.as_ref().map_or(0, |store| store.cache.not_in_redis_count())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a
        // way that matters (the worst case is a stale connection), and a
        // poisoned lock must not turn into a panic inside a Paho callback.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_open(&self, client_id: &str, server_uri: &str) -> Result<String, Error> {
        let hash = self.config.hash_name(client_id, server_uri);
        let mut state = self.lock();
        let State { link, store, .. } = &mut *state;
        *store = None;
        let read = link.run(&self.config, "HGETALL", &hash, |conn| {
            redis::cmd("HGETALL").arg(&hash).query::<Vec<(Vec<u8>, Vec<u8>)>>(conn)
        });
        let entries = match read {
            Err(Error::Command { source, .. }) if source.code() == Some("WRONGTYPE") => {
                let found = link
                    .run(&self.config, "TYPE", &hash, |conn| redis::cmd("TYPE").arg(&hash).query(conn))
                    .unwrap_or_else(|_| "value of another type".to_owned());
                return Err(Error::NotAHash { hash, found });
            }
            other => other?,
        };
        let mut opened = OpenStore {
            hash: hash.clone(),
            fields: FieldIndex::default(),
            restore_snapshot: HashMap::with_capacity(entries.len()),
            cache: RecordCache::new(Arc::clone(&self.counters)),
            removals_owed: Vec::new(),
            synced_generation: link.generation(),
            outcome_unknown: false,
            qos1_publishes: HashSet::new(),
        };
        for (field, value) in entries {
            if field == COUNTER_FIELD.as_bytes() {
                continue;
            }
            self.counters.add_bytes_read(value.len());
            if let Some(key) = paho_key(field) {
                opened.fields.insert(&key);
                opened.restore_snapshot.insert(key, value);
            }
        }
        *store = Some(opened);
        Ok(hash)
    }

    fn try_put(&self, key: &str, buffers: &[&[u8]]) -> Result<(), Error> {
        // Checked before anything is reserved: on a 32-bit device a corrupt
        // length could otherwise wrap, or ask the allocator for the impossible.
        let len = buffers.iter().try_fold(0usize, |sum, buffer| sum.checked_add(buffer.len()));
        match len {
            Some(len) if len <= MAX_VALUE_BYTES => {}
            _ => return Err(Error::ValueTooLarge { key: key.to_owned(), max: MAX_VALUE_BYTES }),
        }
        let mut state = self.lock();
        let State { link, store, packed } = &mut *state;
        let store = store.as_mut().ok_or(Error::NotOpen)?;
        // Paho writes only after its restore is over; what it did not read by
        // then it never will.
        if !store.restore_snapshot.is_empty() {
            store.restore_snapshot = HashMap::new();
        }
        // This write replaces the field, so an owed removal of it must not follow it.
        store.removals_owed.retain(|owed| owed.as_slice() != key.as_bytes());
        let deferrable = self.config.defer_qos1_removals() && is_qos1_publish(key, buffers);

        packed.clear();
        // A QoS 1 PUBLISH record may leave its command record's removal owed
        // (see `Builder::defer_qos1_removals`); any other write takes it along.
        let plan = store.encode_writes(&self.config, packed, Some((key, buffers)), !deferrable);
        let commands = plan.commands();
        let exchanged = link.run(&self.config, "HSET", &store.hash, |conn| exchange(conn, packed, commands));
        if packed.capacity() > PUT_BUFFER_RETAINED_MAX {
            *packed = BytesMut::with_capacity(PUT_BUFFER_INITIAL);
        }
        let mut replies = match exchanged {
            Ok(replies) => replies.into_iter(),
            Err(error) if paho_carries_on_without(key) => {
                // Paho acts as if the record were stored (for a PUBLISH record,
                // while its command record's removal is owed): Redis must get it.
                store.outcome_unknown = true;
                store.keep_unwritten(key, buffers, &error);
                return Ok(());
            }
            Err(error) => {
                // The HSET may still reach Redis (a hung Redis runs it once it
                // resumes). Paho was told it failed, so it must not stay.
                if !store.fields.contains(key) {
                    store.removals_owed.push(FieldName::from_slice(key.as_bytes()));
                }
                store.outcome_unknown = true;
                return Err(error);
            }
        };
        let written = replies.next().unwrap_or(Ok(()));
        store.writes_done(plan, &written);
        if plan.removals == Removals::AfterWrite {
            store.owed_removals_done(replies.next());
        }
        let result = match written {
            Ok(()) => {
                self.counters
                    .add_bytes_written(buffers.iter().map(|b| b.len()).fold(0, usize::saturating_add));
                store.fields.insert(key);
                store.cache.in_redis(key, buffers);
                if deferrable {
                    store.qos1_publishes.insert(FieldName::from_slice(key.as_bytes()));
                }
                Ok(())
            }
            Err(source) => {
                let error = store.write_error(&self.config, source);
                if is_command_key(key) {
                    store.keep_unwritten(key, buffers, &error);
                    Ok(())
                } else {
                    Err(error)
                }
            }
        };
        store.resync_if_reconnected(link, &self.config, packed);
        result
    }

    fn try_get(&self, key: &str) -> Result<Vec<u8>, Error> {
        let mut state = self.lock();
        let State { link, store, packed } = &mut *state;
        let store = store.as_mut().ok_or(Error::NotOpen)?;
        if let Some(value) = store.restore_snapshot.remove(key) {
            if store.restore_snapshot.is_empty() {
                store.restore_snapshot = HashMap::new();
            }
            // Paho reads a restored command record again when it sends it.
            store.cache.in_redis(key, &[&value]);
            self.counters.add_snapshot_hit();
            return Ok(value);
        }
        if let Some(value) = store.cache.get(key) {
            self.counters.add_cache_hit();
            return Ok(value.to_vec());
        }
        if !store.fields.contains(key) {
            self.counters.add_index_hit();
            return Err(Error::KeyNotFound { key: key.to_owned() });
        }
        let hash = &store.hash;
        let value = link.run(&self.config, "HGET", hash, |conn| {
            redis::cmd("HGET").arg(hash).arg(key).query::<Option<Vec<u8>>>(conn)
        })?;
        if let Some(value) = &value {
            self.counters.add_bytes_read(value.len());
        }
        store.resync_if_reconnected(link, &self.config, packed);
        value.ok_or_else(|| Error::KeyNotFound { key: key.to_owned() })
    }

    fn try_remove(&self, key: &str) -> Result<(), Error> {
        let mut state = self.lock();
        let State { link, store, packed } = &mut *state;
        let store = store.as_mut().ok_or(Error::NotOpen)?;
        store.restore_snapshot.remove(key);
        if !store.fields.remove(key) {
            // Never written (Paho removes every key a message might have used).
            self.counters.add_index_hit();
            return Ok(());
        }
        let owe = FieldName::from_slice(key.as_bytes());
        let acknowledged_qos1 = store.qos1_publishes.remove(key.as_bytes());
        // Only a command record's removal waits (a record of another kind is
        // cached only while it waits for Redis itself).
        let cached_command = store.cache.remove(key) && is_command_key(key);
        if cached_command || acknowledged_qos1 {
            // Sent with the next write, after it: see the type's documentation
            // and `Builder::defer_qos1_removals`.
            store.removals_owed.push(owe);
            return Ok(());
        }
        store.removals_owed.push(owe);
        packed.clear();
        store.encode_owed_removals(&self.config, packed);
        let exchanged = link.run(&self.config, "HDEL", &store.hash, |conn| exchange(conn, packed, 1));
        match exchanged {
            Ok(mut replies) => {
                if let Some(Err(source)) = replies.pop() {
                    // An error reply: nothing was removed; the field is back.
                    store.removals_owed.pop();
                    store.fields.insert(key);
                    return Err(Error::Command { command: "HDEL", hash: store.hash.clone(), source });
                }
                store.removals_owed.clear();
            }
            Err(error) => {
                log::warn!(
                    "redis persistence: remove of key {key:?} is owed to Redis, which is unreachable: {error}"
                );
                store.outcome_unknown = true;
                return Ok(());
            }
        }
        store.resync_if_reconnected(link, &self.config, packed);
        Ok(())
    }

    fn try_keys(&self) -> Result<Vec<String>, Error> {
        let mut state = self.lock();
        let State { link, store, packed } = &mut *state;
        let store = store.as_mut().ok_or(Error::NotOpen)?;
        if store.outcome_unknown {
            // Best effort: if Redis is still unreachable, the index answers.
            store.resync(link, &self.config, packed);
        }
        Ok(store.fields.keys())
    }

    fn try_clear(&self) -> Result<(), Error> {
        let mut state = self.lock();
        let State { link, store, .. } = &mut *state;
        let store = store.as_mut().ok_or(Error::NotOpen)?;
        let hash = &store.hash;
        let deleted = link.run(&self.config, "DEL", hash, |conn| {
            redis::pipe().atomic().cmd("DEL").arg(hash).ignore().query::<()>(conn)
        });
        if let Err(error) = deleted {
            // A DEL that timed out may still run once Redis answers again.
            store.outcome_unknown = true;
            return Err(error);
        }
        store.fields.clear();
        store.cache.clear();
        store.removals_owed.clear();
        store.qos1_publishes.clear();
        store.restore_snapshot = HashMap::new();
        store.synced_generation = link.generation();
        store.outcome_unknown = false;
        Ok(())
    }

    fn try_close(&self) {
        let mut state = self.lock();
        let State { link, store, packed } = &mut *state;
        if let Some(store) = store.as_mut() {
            store.flush_owed(link, &self.config, packed);
            let unwritten = store.cache.not_in_redis_count();
            if unwritten > 0 {
                log::error!(
                    "redis persistence: closing `{}` with {unwritten} records Redis never took",
                    store.hash
                );
            }
        }
        link.disconnect();
        *store = None;
    }
}

/// Whether a write is the PUBLISH record of a QoS 1 message: the first byte of
/// the MQTT packet Paho writes is its fixed header, QoS in bits 1-2.
fn is_qos1_publish(key: &str, buffers: &[&[u8]]) -> bool {
    let publish_record = key.starts_with("s-") || key.starts_with("s5-");
    let header = buffers.iter().find_map(|buffer| buffer.first());
    publish_record && header.is_some_and(|header| header >> 4 == 3 && (header >> 1) & 0b11 == 1)
}

/// Sends the commands in `packed` in one write and reads one reply per
/// command. An error reply is returned in its slot; an I/O error or a timeout
/// fails the whole exchange (the connection is then dropped and the exchange
/// may be repeated: every command sent here is idempotent).
fn exchange(conn: &mut redis::Connection, packed: &[u8], commands: usize) -> RedisResult<Replies> {
    conn.send_packed_command(packed)?;
    let mut replies = Replies::new();
    for _ in 0..commands {
        match conn.recv_response() {
            Ok(value) => replies.push(value.extract_error().map(drop)),
            Err(error) if is_reply_error(&error) => replies.push(Err(error)),
            Err(error) => return Err(error),
        }
    }
    Ok(replies)
}

/// Whether `error` is Redis's answer to a command, after which the connection
/// still reads in step.
fn is_reply_error(error: &RedisError) -> bool {
    !(error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error())
}

impl OpenStore {
    /// Appends the start of a write of `pairs` field/value pairs: `HSET`, or
    /// with a budget the write script, which then also takes `removals`
    /// fields after the pairs; the pairs (and those fields) follow.
    fn encode_write_start(&self, config: &Config, packed: &mut BytesMut, pairs: usize, removals: usize) {
        match config.max_store_bytes() {
            None => {
                resp::begin(packed, pairs.saturating_mul(2).saturating_add(2));
                resp::arg(packed, b"HSET");
                resp::arg(packed, self.hash.as_bytes());
            }
            Some(limit) => {
                resp::begin(packed, pairs.saturating_mul(2).saturating_add(removals).saturating_add(7));
                resp::arg(packed, b"EVAL");
                resp::arg(packed, budget::WRITE_SCRIPT.as_bytes());
                resp::arg(packed, b"1");
                resp::arg(packed, self.hash.as_bytes());
                resp::arg_number(packed, limit);
                resp::arg(packed, COUNTER_FIELD.as_bytes());
                resp::arg_number(packed, u64::try_from(pairs).unwrap_or(u64::MAX));
            }
        }
    }

    /// Appends one write (one `HSET`, or with a budget one script: all or
    /// nothing) of the records Redis has not taken yet and of `record`, then
    /// the owed removals if `with_removals`: inside the budget's script, so
    /// that a refused write removes nothing either, or else as an `HDEL` after
    /// the write.
    fn encode_writes(
        &self,
        config: &Config,
        packed: &mut BytesMut,
        record: Option<(&str, &[&[u8]])>,
        with_removals: bool,
    ) -> WritePlan {
        let new_key = record.map(|(key, _)| key.as_bytes());
        // An older unwritten value of the key being written is superseded.
        let owed = || self.cache.not_in_redis().filter(move |(key, _)| Some(*key) != new_key);
        let owed_records = if self.cache.not_in_redis_count() == 0 { 0 } else { owed().count() };
        let pairs = owed_records + usize::from(record.is_some());
        let removals = match (with_removals && !self.removals_owed.is_empty(), config.max_store_bytes()) {
            (false, _) => Removals::None,
            (true, Some(_)) if pairs > 0 => Removals::InsideWrite,
            (true, _) => Removals::AfterWrite,
        };
        if pairs > 0 {
            let inside = if removals == Removals::InsideWrite { self.removals_owed.len() } else { 0 };
            self.encode_write_start(config, packed, pairs, inside);
            if owed_records > 0 {
                for (key, value) in owed() {
                    resp::arg(packed, key);
                    resp::arg(packed, value);
                }
            }
            if let Some((key, buffers)) = record {
                resp::arg(packed, key.as_bytes());
                resp::arg_from_parts(packed, buffers);
            }
            if inside > 0 {
                for field in &self.removals_owed {
                    resp::arg(packed, field);
                }
            }
        }
        if removals == Removals::AfterWrite {
            self.encode_owed_removals(config, packed);
        }
        WritePlan { write: pairs > 0, owed_records, removals }
    }

    /// Appends one removal (`HDEL`, or the budget's script) of every owed removal.
    fn encode_owed_removals(&self, config: &Config, packed: &mut BytesMut) -> bool {
        if self.removals_owed.is_empty() {
            return false;
        }
        let fields = self.removals_owed.len();
        if config.max_store_bytes().is_some() {
            resp::begin(packed, fields.saturating_add(5));
            resp::arg(packed, b"EVAL");
            resp::arg(packed, budget::REMOVE_SCRIPT.as_bytes());
            resp::arg(packed, b"1");
            resp::arg(packed, self.hash.as_bytes());
            resp::arg(packed, COUNTER_FIELD.as_bytes());
        } else {
            resp::begin(packed, fields.saturating_add(2));
            resp::arg(packed, b"HDEL");
            resp::arg(packed, self.hash.as_bytes());
        }
        for field in &self.removals_owed {
            resp::arg(packed, field);
        }
        true
    }

    /// The error for a write Redis refused.
    fn write_error(&self, config: &Config, source: RedisError) -> Error {
        match (config.max_store_bytes(), source.code()) {
            (Some(limit), Some("STOREFULL")) => Error::StoreFull {
                hash: self.hash.clone(),
                limit,
                detail: source.detail().unwrap_or("no room").to_owned(),
            },
            _ => Error::Command { command: "HSET", hash: self.hash.clone(), source },
        }
    }

    /// Takes in the reply to the write of `plan`.
    fn writes_done(&mut self, plan: WritePlan, reply: &RedisResult<()>) {
        match reply {
            Ok(()) => {
                if plan.owed_records > 0 {
                    log::info!(
                        "redis persistence: wrote {} records kept in memory to `{}`",
                        plan.owed_records,
                        self.hash
                    );
                    self.cache.all_in_redis();
                }
                if plan.removals == Removals::InsideWrite {
                    self.removals_owed.clear();
                }
            }
            Err(error) if plan.owed_records > 0 => log::warn!(
                "redis persistence: {} records of `{}` are still in memory only: {error}",
                self.cache.not_in_redis_count(),
                self.hash
            ),
            Err(_) => {}
        }
    }

    fn owed_removals_done(&mut self, reply: Option<RedisResult<()>>) {
        match reply {
            Some(Ok(())) => self.removals_owed.clear(),
            Some(Err(error)) => log::warn!(
                "redis persistence: {} owed removals from `{}` failed, will retry: {error}",
                self.removals_owed.len(),
                self.hash
            ),
            None => {}
        }
    }

    /// Keeps a record Redis did not take, for Paho carries on as if it had
    /// (see the type's documentation); it is written with the next write.
    fn keep_unwritten(&mut self, key: &str, buffers: &[&[u8]], error: &Error) {
        self.fields.insert(key);
        self.cache.insert(key, buffers, false);
        log::warn!(
            "redis persistence: keeping record {key:?} in memory ({} not yet in Redis): {error}",
            self.cache.not_in_redis_count()
        );
    }

    /// Sends the owed writes and removals, if any; failures are logged.
    fn flush_owed(&mut self, link: &mut Link, config: &Config, packed: &mut BytesMut) {
        packed.clear();
        let plan = self.encode_writes(config, packed, None, true);
        let commands = plan.commands();
        if commands == 0 {
            return;
        }
        match link.run(config, "HSET", &self.hash, |conn| exchange(conn, packed, commands)) {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                if plan.write {
                    let written = replies.next().unwrap_or(Ok(()));
                    self.writes_done(plan, &written);
                }
                if plan.removals == Removals::AfterWrite {
                    self.owed_removals_done(replies.next());
                }
            }
            Err(error) => {
                log::warn!("redis persistence: cannot send owed writes to `{}`: {error}", self.hash)
            }
        }
    }

    /// After a reconnect, Redis may have restarted and lost the hash: compares
    /// the index with the hash, reports what was lost, writes again the
    /// command records still cached, and sends what is owed.
    fn resync_if_reconnected(&mut self, link: &mut Link, config: &Config, packed: &mut BytesMut) {
        if self.synced_generation != link.generation() || self.outcome_unknown {
            self.resync(link, config, packed);
        }
    }

    /// Compares the index with the hash (see `resync_if_reconnected`).
    fn resync(&mut self, link: &mut Link, config: &Config, packed: &mut BytesMut) {
        let hash = &self.hash;
        let present: Vec<Vec<u8>> =
            match link.run(config, "HKEYS", hash, |conn| redis::cmd("HKEYS").arg(hash).query(conn)) {
                Ok(present) => present,
                Err(error) => {
                    log::warn!("redis persistence: cannot check `{hash}` after reconnecting: {error}");
                    return;
                }
            };
        let present: HashSet<&[u8]> = present.iter().map(Vec::as_slice).collect();
        let missing: Vec<String> = self
            .fields
            .iter()
            .filter(|field| !present.contains(field))
            .map(|field| String::from_utf8_lossy(field).into_owned())
            .collect();
        let mut lost = Vec::new();
        let mut rewritten = 0usize;
        for key in missing {
            if self.cache.mark_not_in_redis(&key) {
                rewritten = rewritten.saturating_add(1);
            } else if !self.cache.contains(&key) {
                self.fields.remove(&key);
                self.qos1_publishes.remove(key.as_bytes());
                lost.push(key);
            }
        }
        if lost.is_empty() && rewritten == 0 {
            log::info!("redis persistence: `{hash}` is intact after reconnecting");
        } else {
            log::error!(
                "redis persistence: records of `{hash}` are gone from Redis (it restarted without its \
                 data, or a timed-out write ran late): {rewritten} command records are written again \
                 from memory; {} messages are lost: {lost:?}",
                lost.len(),
            );
        }
        self.synced_generation = link.generation();
        self.outcome_unknown = false;
        self.flush_owed(link, config, packed);
    }
}

/// A hash field as a key Paho can take, or `None` for a field someone else
/// wrote that Paho never would: paho-mqtt 0.14 aborts the process on a key with
/// a NUL byte, and Paho's keys are always ASCII.
fn paho_key(field: Vec<u8>) -> Option<String> {
    match String::from_utf8(field) {
        Ok(key) if !key.contains('\0') => Some(key),
        Ok(key) => {
            log::warn!("redis persistence: skipping field {key:?}: it contains a NUL byte");
            None
        }
        Err(e) => {
            log::warn!(
                "redis persistence: skipping field {:?}: not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            );
            None
        }
    }
}

/// What `contains_key` must return so that Paho C, reading paho-mqtt 0.14's
/// conversion (`true → 1`, and `0` means "present" to Paho C), sees `present`.
const fn answer_for_paho_c(present: bool) -> bool {
    !present
}

/// Logs a failed callback and turns it into the only error Paho understands.
fn report(counters: &Counters, operation: &str, key: Option<&str>, error: Error) -> paho_mqtt::Error {
    counters.add_error();
    match key {
        Some(key) => log::warn!("redis persistence: {operation} of key {key:?} failed: {error}"),
        None => log::warn!("redis persistence: {operation} failed: {error}"),
    }
    error.into()
}

impl ClientPersistence for RedisPersistence {
    fn open(&mut self, client_id: &str, server_uri: &str) -> paho_mqtt::Result<()> {
        let hash =
            self.try_open(client_id, server_uri).map_err(|e| report(&self.counters, "open", None, e))?;
        log::debug!("redis persistence: opened `{hash}` on {}", self.config.address());
        Ok(())
    }

    fn close(&mut self) -> paho_mqtt::Result<()> {
        self.try_close();
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> paho_mqtt::Result<()> {
        self.counters.record(Operation::Put);
        self.try_put(key, &buffers).map_err(|e| report(&self.counters, "put", Some(key), e))
    }

    fn get(&mut self, key: &str) -> paho_mqtt::Result<Vec<u8>> {
        self.counters.record(Operation::Get);
        self.try_get(key).map_err(|e| report(&self.counters, "get", Some(key), e))
    }

    fn remove(&mut self, key: &str) -> paho_mqtt::Result<()> {
        self.counters.record(Operation::Remove);
        self.try_remove(key).map_err(|e| report(&self.counters, "remove", Some(key), e))
    }

    fn keys(&mut self) -> paho_mqtt::Result<Vec<String>> {
        self.counters.record(Operation::Keys);
        self.try_keys().map_err(|e| report(&self.counters, "keys", None, e))
    }

    fn clear(&mut self) -> paho_mqtt::Result<()> {
        self.counters.record(Operation::Clear);
        self.try_clear().map_err(|e| report(&self.counters, "clear", None, e))
    }

    /// Returns `true` when `key` is **absent**: see the type's documentation.
    ///
    /// Answered from the store's index of fields, without a round trip. Before
    /// `open` the answer is "absent": Paho then re-sends a QoS 2 PUBLISH rather
    /// than assume its PUBREL went out, which risks a duplicate instead of a
    /// loss.
    fn contains_key(&mut self, key: &str) -> bool {
        self.counters.record(Operation::ContainsKey);
        match self.contains(key) {
            Ok(present) => {
                self.counters.add_index_hit();
                answer_for_paho_c(present)
            }
            Err(e) => {
                drop(report(&self.counters, "contains_key", Some(key), e));
                answer_for_paho_c(false)
            }
        }
    }
}
