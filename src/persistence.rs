//! [`RedisPersistence`]: the adapter between Paho's persistence callbacks and
//! the store's core: it runs the core's plans on the transport, inverts
//! `contains_key` for paho-mqtt 0.14, logs failures and counts calls.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use paho_mqtt::ClientPersistence;

use crate::config::{Builder, Config};
use crate::core::drive::{self, Confirmations, Runner, Served};
use crate::core::{Core, Exchange, Plan, Settings};
use crate::lease::{Lease, Standing};
use crate::stats::{Counters, Operation};
use crate::transport::Transport;
use crate::{Error, Stats};

/// The largest record `put` accepts: Redis's own limit on one value
/// (`proto-max-bulk-len`, 512 MiB by default). An MQTT packet is at most
/// 256 MiB, so Paho never comes near it.
const MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;

/// How often `open` tries Redis again while it waits for it (`wait_for_redis`).
const WAIT_FOR_REDIS_STEP: Duration = Duration::from_millis(100);

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
/// - `open` takes the store's lease (one `SET`, see "One owner" below) and
///   reads the whole hash with one `HGETALL`. Paho's restore (three
///   `keys`, one `get` per record, `contains_key` per sent PUBLISH) is answered
///   from that snapshot, and each snapshot entry is freed once read.
/// - A table of the hash's records answers `keys`, `contains_key` and the
///   `remove` of a key never written (Paho removes four keys per
///   acknowledged message, usually three of them absent) without a round trip.
/// - Paho writes each queued command (`c-` record) and reads it back when it
///   sends the command; the read is served from a small cache of the latest
///   command records.
/// - Paho removes the command record of a QoS 1 or 2 message just before it
///   writes the message's PUBLISH record (`s-`). That removal waits for that
///   write and runs inside it, atomically (`MULTI`/`EXEC` over the Unix
///   socket, a script over TCP), so the message is never absent
///   from Redis in between (with Paho's own order, a crash at that moment
///   loses it) and never in both records. A crash before that write leaves
///   the command record, which Paho restores and sends: the message was not
///   sent yet, so nothing is duplicated. Every other removal (a QoS 0
///   message, a SUBSCRIBE, a message Paho dropped) is sent at once: a crash
///   never restores what Paho has acted on.
/// - `put` encodes its write straight into one reused buffer, joining Paho's
///   buffers in place.
///
/// An online QoS 1 publish costs 3 Redis commands (0.3 sent 8), and
/// restoring any number of records costs two commands (a third, one script,
/// when `open` sets records aside or rewrites them).
///
/// Over a Unix socket (`redis+unix://`, feature `unix-socket`) the store
/// writes behind: a `put` or `remove` returns once its command is written to
/// the socket (from then on it reaches Redis even if the process is killed),
/// and Redis's reply is taken in at a later call; a refusal found then is
/// handled like a record Redis could not take. Over TCP each call waits for
/// its reply: data in flight on a loopback TCP socket is lost when the
/// process is killed.
///
/// `open` checks every record it reads against what Paho C's restore can
/// take. A record no restore of this client can take (an empty one, a
/// truncated packet, bytes no client wrote) is never shown to Paho: it is
/// moved, atomically with its removal from the store's hash, to the hash
/// `{hash}:quarantine` beside it (see [`Config::quarantine_name`]), with why,
/// logged once per `open` and counted in [`Stats::quarantined`]; a record only
/// another MQTT version restores is rewritten for this one
/// ([`Stats::rewritten`]). Paho C would otherwise delete the first kind
/// without a trace (`MQTTPersistence_restorePackets`). The operator lists,
/// reads, puts back and purges them with [`admin::Stores`](crate::admin::Stores)
/// or `paho-mqtt-redis quarantine`. When Redis cannot take the move, the
/// records stay in the hash, hidden from Paho, and the next write (or the
/// next `open`) moves them first.
///
/// After every reconnect, and after a command whose outcome is unknown (it
/// timed out), the store compares its index with the hash both ways: records
/// Redis lost (a restart without persistence) are written again from memory
/// where the store has them and logged as lost otherwise; fields Paho had
/// removed (a timed-out write that ran late) are removed.
///
/// # Failures
///
/// Each callback either succeeds or fails with
/// [`paho_mqtt::Error::PersistenceError`] and leaves the store as it was; the
/// reason is logged through the [`log`] crate (operation, key, error) and kept
/// for [`RedisPersistence::last_error`], so that an application whose
/// `create_client()` failed with that bare error can ask its clone why. A broken
/// connection is re-established once within the failing call, so the first
/// call after a Redis restart succeeds. A call waits for Redis at most once:
/// after a timeout (or a failed connect) it does nothing more that waits, so
/// a hung Redis costs a call at most `connect_timeout + io_timeout`.
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
/// - A `put` of any other record Paho writes (PUBLISH, PUBREL, received
///   PUBLISH, inbound queue: `s-`, `sc-`, `r-`, `q-`) that Redis cannot take
///   (unreachable, timed out, `-OOM`, over the budget) is kept the same way:
///   Paho C ignores the result of those writes and sends (or handles, or
///   queues) the message anyway. Failing it and forgetting the record would
///   leave a message Paho holds in no record at all. The command record's
///   removal that rides with a PUBLISH record's write does not happen without
///   it (they run in one script). Only a key Paho never writes fails.
/// - A `remove` that cannot reach Redis, or that Redis refuses (`-LOADING`,
///   `-READONLY`), succeeds locally and is sent again with the next exchange.
///   Paho ignores failed removes, and the index must follow Paho.
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
/// the plain answer asks a [`Monitor`]: [`Monitor::contains`] (a type without
/// `contains_key`, so the two cannot be mixed up). The end-to-end test
/// `tests/qos2_restart.rs` pins this, and fails once paho-mqtt fixes the
/// conversion.
///
/// # A monitor the application keeps
///
/// Paho takes the store by value, and `RedisPersistence` is not `Clone`:
/// each Paho client has its own store, and nothing else can make Paho's
/// calls on it. Keep a [`Monitor`] ([`monitor`](Self::monitor)) instead: a
/// read-only handle (`Clone`, `Send`, `Sync`) on the store Paho drives, with
/// its [`stats`](Monitor::stats), [`hash_name`](Monitor::hash_name),
/// [`unwritten`](Monitor::unwritten) records and
/// [`contains`](Monitor::contains). It has no Paho callbacks, so it cannot
/// write to, or close, the store.
///
/// ```no_run
/// use paho_mqtt as mqtt;
/// use paho_mqtt_redis::RedisPersistence;
///
/// let store = RedisPersistence::with_url("redis://127.0.0.1:6379/0")?;
/// let monitor = store.monitor();
/// let client = mqtt::CreateOptionsBuilder::new()
///     .server_uri("tcp://127.0.0.1:1883")
///     .client_id("gateway-17")
///     .user_persistence(store)
///     .create_client()?;
/// // Paho has opened the store.
/// println!("store `{}`", monitor.hash_name().unwrap_or_default());
/// if monitor.unwritten() > 0 {
///     println!("{} messages are not crash-safe yet", monitor.unwritten());
/// }
/// println!("{} Redis round trips", monitor.stats().round_trips);
/// # drop(client);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The connection to Redis closes, and the lease is released, when Paho
/// closes the store; a store dropped while open (a client dropped halfway
/// through its creation) is closed then. A monitor outlives both: it then
/// answers `None` for the hash and keeps the last counters. Two stores
/// built for one client id are refused like two processes (see "One owner
/// per store"). Paho sees only [`paho_mqtt::Error::PersistenceError`] (so
/// `AsyncClient::new` fails with it); the cause is in the log and in
/// [`Monitor::last_error`].
///
/// # One owner per store
///
/// `open` takes the store for this process with a lease in Redis, the
/// string [`Config::lease_name`] (`{hash}:owner`), before it reads the hash;
/// a thread renews it every third of [`Builder::lease`] (default 10 s) on a
/// connection of its own, and `close` deletes it if it is still this
/// store's. A live owner makes `open` fail with [`Error::InUse`] naming it;
/// a dead one on this host (its pid gone or reused) is taken over at once;
/// one this host cannot look up (another host or pid namespace) is waited
/// out, at most the lease plus 1 s, and refused if it renews meanwhile.
///
/// The lease costs Paho's calls a clock read: no command, no wait. Past the
/// lease's validity (the last confirmed renewal plus ¾ of the lease, on a
/// monotonic clock), a call renews it before it writes; and a reconnect
/// confirms it before anything is written on the new connection. A store
/// whose lease was taken by another (this process was paused, or cut off
/// from Redis, past it) is fenced: nothing more is written to or removed
/// from the hash, Paho's records stay in memory as when Redis is down,
/// [`Stats::lease_lost`] turns 1 and the log says it once. A pause between
/// that clock read and the write's system call is not covered (see the
/// README's "One owner per store").
///
/// # Threads
///
/// `RedisPersistence` is `Send` and `Sync`. Paho C may call it from its send
/// and receive threads, and the application from its own; every call takes
/// an internal lock, so calls never interleave on the Redis connection.
/// [`stats`](Self::stats) and [`config`](Self::config) take no lock.
#[derive(Debug)]
pub struct RedisPersistence {
    shared: Arc<Shared>,
}

impl Drop for RedisPersistence {
    /// A store dropped while open (Paho always closes it first, but a client
    /// may be dropped halfway through its creation) is closed: what it owes
    /// Redis is written, its lease released. Monitors must not keep it open.
    fn drop(&mut self) {
        let open = self.lock().core.as_ref().map(|core| core.hash().to_owned());
        if let Some(hash) = open {
            log::warn!("redis persistence: `{hash}` dropped while open (Paho did not close it): closing it");
            self.try_close();
        }
    }
}

/// A read-only view of a [`RedisPersistence`], for the application to keep
/// while Paho owns the store: see
/// [its documentation](RedisPersistence#a-monitor-the-application-keeps).
///
/// `Clone`, `Send` and `Sync`; it has no Paho callbacks, so nothing done
/// through it changes the store. [`stats`](Self::stats),
/// [`hash_name`](Self::hash_name) and [`unwritten`](Self::unwritten) never
/// wait for a Redis call in progress.
#[derive(Debug, Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl Monitor {
    /// The store's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The name of the Redis hash of the open store, or `None` before Paho
    /// opens it and after it closes it. Never waits for a Redis call in progress.
    pub fn hash_name(&self) -> Option<String> {
        self.shared.hash_name()
    }

    /// Whether `key` is in the open store: the plain answer (Paho C's
    /// `contains_key` is inverted, see [`RedisPersistence`]), or `None` when
    /// no store is open. Answered from the store's index, without a round
    /// trip, but it waits for a Paho call in progress (at most
    /// `connect_timeout + io_timeout`).
    pub fn contains(&self, key: &str) -> Option<bool> {
        self.shared.contains(key)
    }

    /// The store's counters since it was created (see
    /// [`RedisPersistence::stats`]). Lock-free.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// How many records Redis has not taken yet (see
    /// [`RedisPersistence::unwritten`]). Lock-free.
    pub fn unwritten(&self) -> usize {
        self.shared.unwritten()
    }

    /// Why the latest failed call failed, or `None` if none has: what Paho
    /// (and so `create_client()`) only sees as
    /// [`paho_mqtt::Error::PersistenceError`]. The monitor the application keeps
    /// tells why the store Paho was given failed.
    ///
    /// It is the latest failure of any callback (`open` included), kept until
    /// the next one replaces it: a success does not clear it, so compare
    /// [`Stats::errors`](crate::Stats::errors) to tell whether it is new. The same cause is logged
    /// through the [`log`] crate when it happens.
    ///
    /// ```no_run
    /// use paho_mqtt as mqtt;
    /// use paho_mqtt_redis::RedisPersistence;
    ///
    /// let store = RedisPersistence::new();
    /// let monitor = store.monitor();
    /// let created = mqtt::CreateOptionsBuilder::new()
    ///     .server_uri("tcp://127.0.0.1:1883")
    ///     .client_id("gateway-17")
    ///     .user_persistence(store)
    ///     .create_client();
    /// if let Err(error) = created {
    ///     // `error` is only PersistenceError; the store says why, such as
    ///     // "cannot connect to Redis at 127.0.0.1:6379: …".
    ///     match monitor.last_error() {
    ///         Some(cause) => eprintln!("no MQTT client: {error}: {cause}"),
    ///         None => eprintln!("no MQTT client: {error}"),
    ///     }
    /// }
    /// ```
    pub fn last_error(&self) -> Option<Arc<Error>> {
        self.shared.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The store behind a [`RedisPersistence`] and its monitors.
#[derive(Debug)]
struct Shared {
    config: Config,
    /// Outside the lock: `stats()` never waits for a Redis call.
    counters: Arc<Counters>,
    /// The open store's hash, outside the lock for the same reason.
    hash: Mutex<Option<String>>,
    state: Mutex<State>,
    /// The value of this store's lease, the same at every `open`.
    owner: String,
    /// The cause of the latest failed call (`last_error`), outside the lock.
    last_error: Mutex<Option<Arc<Error>>>,
}

/// What changes while the store is in use; guarded by one lock.
#[derive(Debug)]
struct State {
    transport: Transport,
    /// `None` before `open` and after `close`.
    core: Option<Core>,
    /// The open store's lease: this process owns the hash.
    lease: Option<Lease>,
}

impl Default for RedisPersistence {
    fn default() -> Self {
        Self::from_config(Config::default())
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
        let transport = Transport::new(&config, Arc::clone(&counters));
        let state = Mutex::new(State { transport, core: None, lease: None });
        Self {
            shared: Arc::new(Shared {
                config,
                counters,
                hash: Mutex::new(None),
                state,
                owner: crate::lease::own_value(),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// A read-only handle on this store for the application, which keeps it
    /// while Paho owns the store (see [`Monitor`]).
    pub fn monitor(&self) -> Monitor {
        Monitor { shared: Arc::clone(&self.shared) }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The name of the Redis hash of the open store, or `None` before `open`
    /// and after `close`. Never waits for a Redis call in progress.
    pub fn hash_name(&self) -> Option<String> {
        self.shared.hash_name()
    }

    /// The store's counters since it was created: calls by kind, Redis round
    /// trips, bytes, errors, reconnects, and the calls answered locally (see
    /// [`Stats`]). Lock-free: never waits for a Redis call in progress.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// How many records Redis has not taken yet (it was unreachable, or it
    /// refused them): they are in memory only until it does. Lock-free, like
    /// [`stats`](Self::stats) (it is [`Stats::unwritten_records`]).
    pub fn unwritten(&self) -> usize {
        self.shared.unwritten()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn settings(&self) -> Settings {
        Settings {
            budget: self.shared.config.max_store_bytes(),
            defer_qos1_removals: self.shared.config.defer_qos1_removals(),
            version: self.shared.config.mqtt_version(),
            ..Settings::default()
        }
    }

    /// Runs `call` on the open store's core, with the transport as its runner.
    fn with_open<T>(
        &self,
        call: impl FnOnce(&mut Core, &mut Connected<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut state = self.lock();
        let State { transport, core, lease } = &mut *state;
        let core = core.as_mut().ok_or(Error::NotOpen)?;
        if let Some(lease) = lease {
            // A clock read while the lease is valid.
            fence_unless_held(core, lease.standing(), &self.shared.counters);
        }
        transport.begin_call();
        let result = call(core, &mut Connected { transport, config: &self.shared.config });
        self.shared.counters.set_unwritten_records(core.unwritten());
        self.shared.counters.add_repaired(core.take_repaired());
        result
    }

    fn try_open(&self, client_id: &str, server_uri: &str) -> Result<String, Error> {
        let hash = self.shared.config.hash_name(client_id, server_uri);
        let mut state = self.lock();
        let State { transport, core, lease } = &mut *state;
        transport.begin_call();
        let mut runner = Connected { transport, config: &self.shared.config };
        if let Some(mut previous) = core.take() {
            // Paho opens a store once; a second open must not drop what the
            // first one still owes Redis silently.
            drive::close(&mut previous, &mut runner);
            self.set_hash_name(None);
        }
        // Released before it is taken again (the same process would find itself alive).
        *lease = None;
        runner.transport.set_gate(None);
        // A closed (or reopened) store holds nothing in memory any more.
        self.shared.counters.set_unwritten_records(0);
        self.shared.counters.set_lease_lost(false);
        // Taken before the hash is read: from here on no other process writes it.
        let taken = self.acquire_lease(&hash)?;
        runner.transport.set_gate(Some(taken.gate()));
        let mut opened = Core::new(hash.clone(), self.settings());
        if let Err(error) = drive::open(&mut opened, &mut runner) {
            runner.transport.set_gate(None);
            return Err(error); // the lease is released with `taken`
        }
        *lease = Some(taken);
        self.shared.counters.add_repaired(opened.take_repaired());
        self.shared.counters.set_unwritten_records(opened.unwritten());
        *core = Some(opened);
        self.set_hash_name(Some(hash.clone()));
        Ok(hash)
    }

    /// Takes the lease of `hash`: the first command of `open`, so the one
    /// that finds Redis not up yet, tried again until it answers or
    /// `wait_for_redis` passes (see [`Builder::wait_for_redis`]).
    fn acquire_lease(&self, hash: &str) -> Result<Lease, Error> {
        let config = &self.shared.config;
        let began = Instant::now();
        let mut attempts = 0u32;
        loop {
            let result = Lease::acquire(config, hash, &self.shared.owner, &self.shared.counters);
            let error = match result {
                Ok(lease) => {
                    if attempts > 0 {
                        log::info!(
                            "redis persistence: Redis at {} answered after {:?} ({attempts} failed attempts)",
                            config.address(),
                            began.elapsed()
                        );
                    }
                    return Ok(lease);
                }
                Err(error) => error,
            };
            if error.is_timeout() {
                self.shared.counters.add_timeout();
            }
            let left = config.wait_for_redis().saturating_sub(began.elapsed());
            if !error.is_not_up_yet() {
                return Err(error);
            }
            if left.is_zero() {
                if attempts > 0 {
                    log::info!(
                        "redis persistence: Redis at {} did not answer within wait_for_redis ({:?}, {} attempts)",
                        config.address(),
                        config.wait_for_redis(),
                        attempts.saturating_add(1)
                    );
                }
                return Err(error);
            }
            if attempts == 0 {
                log::info!(
                    "redis persistence: Redis at {} is not up yet ({error}); waiting up to {:?}",
                    config.address(),
                    config.wait_for_redis()
                );
            }
            attempts = attempts.saturating_add(1);
            std::thread::sleep(left.min(WAIT_FOR_REDIS_STEP));
        }
    }

    fn try_put(&self, key: &str, buffers: &[&[u8]]) -> Result<(), Error> {
        // Checked before anything is reserved: on a 32-bit device a corrupt
        // length could otherwise wrap, or ask the allocator for the impossible.
        let len = buffers.iter().try_fold(0usize, |sum, buffer| sum.checked_add(buffer.len()));
        let len = match len {
            Some(len) if len <= MAX_VALUE_BYTES => len,
            _ => return Err(Error::ValueTooLarge { key: key.to_owned(), max: MAX_VALUE_BYTES }),
        };
        self.with_open(|core, runner| drive::put(core, runner, key, buffers))?;
        self.shared.counters.add_bytes_written(len);
        Ok(())
    }

    fn try_get(&self, key: &str) -> Result<Vec<u8>, Error> {
        let got = self.with_open(|core, runner| drive::get(core, runner, key));
        match &got {
            Ok((_, Served::Snapshot)) => self.shared.counters.add_snapshot_hit(),
            Ok((_, Served::Cache)) => self.shared.counters.add_cache_hit(),
            Ok((_, Served::Redis)) => {}
            Err(Error::KeyNotFound { .. }) => self.shared.counters.add_index_hit(),
            Err(_) => {}
        }
        got.map(|(value, _)| value)
    }

    fn try_remove(&self, key: &str) -> Result<(), Error> {
        self.with_open(|core, runner| {
            if !core.contains(key) {
                // Never written (Paho removes every key a message might have used).
                self.shared.counters.add_index_hit();
            }
            drive::remove(core, runner, key)
        })
    }

    fn try_keys(&self) -> Result<Vec<String>, Error> {
        self.with_open(|core, runner| Ok(drive::keys(core, runner)))
    }

    fn try_clear(&self) -> Result<(), Error> {
        self.with_open(|core, runner| drive::clear(core, runner))
    }

    fn try_close(&self) {
        let mut state = self.lock();
        let State { transport, core, lease } = &mut *state;
        if let (Some(core), Some(lease)) = (core.as_mut(), lease.as_ref()) {
            fence_unless_held(core, lease.standing(), &self.shared.counters);
        }
        transport.begin_call();
        if let Some(core) = core.as_mut() {
            drive::close(core, &mut Connected { transport, config: &self.shared.config });
            self.shared.counters.add_repaired(core.take_repaired());
        }
        transport.disconnect();
        transport.set_gate(None);
        // Released after the last write: compare-and-delete, only if still ours.
        *lease = None;
        *core = None;
        self.shared.counters.set_unwritten_records(0);
        self.set_hash_name(None);
    }

    fn set_hash_name(&self, hash: Option<String>) {
        *self.shared.hash.lock().unwrap_or_else(PoisonError::into_inner) = hash;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a
        // way that matters (the worst case is a stale connection), and a
        // poisoned lock must not turn into a panic inside a Paho callback.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hash_name(&self) -> Option<String> {
        self.hash.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The plain answer, `None` when no store is open.
    fn contains(&self, key: &str) -> Option<bool> {
        self.lock().core.as_ref().map(|core| core.contains(key))
    }

    fn unwritten(&self) -> usize {
        usize::try_from(self.counters.unwritten_records()).unwrap_or(usize::MAX)
    }
}

/// Fences `core` unless its lease is held, and lifts the fence once it is
/// held again (see `Core::fence`); logs each change once.
fn fence_unless_held(core: &mut Core, standing: Standing, counters: &Counters) {
    let lost = matches!(standing, Standing::Lost(_));
    let why = match standing {
        Standing::Held if core.fenced().is_none() => return,
        Standing::Held => None,
        standing => Some(standing.reason()),
    };
    if core.fenced() == why.as_deref() {
        return;
    }
    counters.set_lease_lost(lost);
    match (&why, core.fenced()) {
        // A lost lease was logged as an error where it was found.
        (Some(why), None) if !lost => log::warn!(
            "redis persistence: `{}` writes nothing until its lease is confirmed ({why}); records wait in memory",
            core.hash()
        ),
        (None, Some(_)) => log::info!("redis persistence: the lease of `{}` is confirmed again", core.hash()),
        _ => {}
    }
    core.fence(why);
}

/// The transport, with the configuration its exchanges need, as the core's runner.
struct Connected<'a> {
    transport: &'a mut Transport,
    config: &'a Config,
}

impl Runner for Connected<'_> {
    fn run(&mut self, plan: &Plan<'_>) -> Exchange {
        self.transport.run(self.config, plan)
    }

    fn replies(&mut self) -> Confirmations {
        self.transport.replies()
    }

    fn settle(&mut self) {
        self.transport.settle(self.config);
    }

    fn generation(&self) -> u64 {
        self.transport.generation()
    }

    fn may_wait(&self) -> bool {
        self.transport.may_wait()
    }
}

/// What `contains_key` must return so that Paho C, reading paho-mqtt 0.14's
/// conversion (`true → 1`, and `0` means "present" to Paho C), sees `present`.
const fn answer_for_paho_c(present: bool) -> bool {
    !present
}

/// Logs a failed callback, keeps its cause for `last_error`, and turns it
/// into the only error Paho understands.
fn report(shared: &Shared, operation: &str, key: Option<&str>, error: Error) -> paho_mqtt::Error {
    shared.counters.add_error();
    match key {
        Some(key) => log::warn!("redis persistence: {operation} of key {key:?} failed: {error}"),
        None => log::warn!("redis persistence: {operation} failed: {error}"),
    }
    *shared.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(error));
    paho_mqtt::Error::PersistenceError
}

impl ClientPersistence for RedisPersistence {
    fn open(&mut self, client_id: &str, server_uri: &str) -> paho_mqtt::Result<()> {
        let hash = self.try_open(client_id, server_uri).map_err(|e| report(&self.shared, "open", None, e))?;
        log::debug!("redis persistence: opened `{hash}` on {}", self.shared.config.address());
        Ok(())
    }

    fn close(&mut self) -> paho_mqtt::Result<()> {
        self.try_close();
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> paho_mqtt::Result<()> {
        self.shared.counters.record(Operation::Put);
        self.try_put(key, &buffers).map_err(|e| report(&self.shared, "put", Some(key), e))
    }

    fn get(&mut self, key: &str) -> paho_mqtt::Result<Vec<u8>> {
        self.shared.counters.record(Operation::Get);
        self.try_get(key).map_err(|e| report(&self.shared, "get", Some(key), e))
    }

    fn remove(&mut self, key: &str) -> paho_mqtt::Result<()> {
        self.shared.counters.record(Operation::Remove);
        self.try_remove(key).map_err(|e| report(&self.shared, "remove", Some(key), e))
    }

    fn keys(&mut self) -> paho_mqtt::Result<Vec<String>> {
        self.shared.counters.record(Operation::Keys);
        self.try_keys().map_err(|e| report(&self.shared, "keys", None, e))
    }

    fn clear(&mut self) -> paho_mqtt::Result<()> {
        self.shared.counters.record(Operation::Clear);
        self.try_clear().map_err(|e| report(&self.shared, "clear", None, e))
    }

    /// Returns `true` when `key` is **absent**: see the type's documentation.
    ///
    /// Answered from the store's index of fields, without a round trip. Before
    /// `open` the answer is "absent": Paho then re-sends a QoS 2 PUBLISH rather
    /// than assume its PUBREL went out, which risks a duplicate instead of a
    /// loss.
    fn contains_key(&mut self, key: &str) -> bool {
        self.shared.counters.record(Operation::ContainsKey);
        match self.shared.contains(key) {
            Some(present) => {
                self.shared.counters.add_index_hit();
                answer_for_paho_c(present)
            }
            None => {
                drop(report(&self.shared, "contains_key", Some(key), Error::NotOpen));
                answer_for_paho_c(false)
            }
        }
    }
}
