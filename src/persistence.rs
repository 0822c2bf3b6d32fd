//! [`RedisPersistence`]: Paho's persistence callbacks mapped onto one Redis hash.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use paho_mqtt::ClientPersistence;

use crate::config::{Builder, Config};
use crate::connection::Link;
use crate::Error;

/// Capacity of the put buffer when the store is created: a typical MQTT packet fits.
const PUT_BUFFER_INITIAL: usize = 1024;

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
/// Each callback either succeeds or fails with
/// [`paho_mqtt::Error::PersistenceError`] and leaves the store as it was; the
/// reason is logged through the [`log`] crate (operation, key, error). A broken
/// connection is re-established once within the failing call, so the first
/// call after a Redis restart succeeds.
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
    state: Mutex<State>,
}

/// What changes while the store is in use; guarded by one lock.
struct State {
    link: Link,
    /// The hash of the open store; `None` before `open` and after `close`.
    hash: Option<String>,
    /// The put buffer, reused across calls so a put does not allocate.
    put_buffer: BytesMut,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("hash", &self.hash)
            .field("put_buffer_capacity", &self.put_buffer.capacity())
            .finish_non_exhaustive()
    }
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
        Self {
            config,
            state: Mutex::new(State {
                link: Link::new(),
                hash: None,
                put_buffer: BytesMut::with_capacity(PUT_BUFFER_INITIAL),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The name of the Redis hash of the open store, or `None` before `open`.
    pub fn hash_name(&self) -> Option<String> {
        self.lock().hash.clone()
    }

    /// Whether `key` is in the store: the plain answer, for Rust callers.
    ///
    /// (The trait's [`ClientPersistence::contains_key`] answers inverted for
    /// Paho C's sake; see the type's documentation.)
    pub fn contains(&mut self, key: &str) -> Result<bool, Error> {
        self.exchange("HEXISTS", |conn, hash| redis::cmd("HEXISTS").arg(hash).arg(key).query(conn))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a
        // way that matters (the worst case is a stale connection), and a
        // poisoned lock must not turn into a panic inside a Paho callback.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one Redis exchange against the open store's hash.
    fn exchange<T>(
        &self,
        command: &'static str,
        mut request: impl FnMut(&mut redis::Connection, &str) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let mut state = self.lock();
        let State { link, hash, .. } = &mut *state;
        let hash = hash.as_deref().ok_or(Error::NotOpen)?;
        link.run(&self.config, command, hash, |conn| request(conn, hash))
    }

    fn try_open(&self, client_id: &str, server_uri: &str) -> Result<String, Error> {
        let hash = self.config.hash_name(client_id, server_uri);
        let mut state = self.lock();
        state.link.connected(&self.config)?;
        state.hash = Some(hash.clone());
        Ok(hash)
    }

    fn try_put(&self, key: &str, buffers: &[&[u8]]) -> Result<(), Error> {
        let mut state = self.lock();
        let State { link, hash, put_buffer } = &mut *state;
        let hash = hash.as_deref().ok_or(Error::NotOpen)?;
        put_buffer.clear();
        put_buffer.reserve(buffers.iter().map(|b| b.len()).fold(0, usize::saturating_add));
        for buffer in buffers {
            put_buffer.extend_from_slice(buffer);
        }
        let value: &[u8] = put_buffer;
        let result = link.run(&self.config, "HSET", hash, |conn| {
            redis::cmd("HSET").arg(hash).arg(key).arg(value).query::<()>(conn)
        });
        if put_buffer.capacity() > PUT_BUFFER_RETAINED_MAX {
            *put_buffer = BytesMut::with_capacity(PUT_BUFFER_INITIAL);
        }
        result
    }

    fn try_get(&self, key: &str) -> Result<Vec<u8>, Error> {
        self.exchange("HGET", |conn, hash| {
            redis::cmd("HGET").arg(hash).arg(key).query::<Option<Vec<u8>>>(conn)
        })?
        .ok_or_else(|| Error::KeyNotFound { key: key.to_owned() })
    }

    fn try_remove(&self, key: &str) -> Result<(), Error> {
        let removed: u64 =
            self.exchange("HDEL", |conn, hash| redis::cmd("HDEL").arg(hash).arg(key).query(conn))?;
        if removed == 0 {
            log::trace!("redis persistence: remove of absent key {key:?}");
        }
        Ok(())
    }

    fn try_keys(&self) -> Result<Vec<String>, Error> {
        let (fields,): (Vec<Vec<u8>>,) =
            self.exchange("HKEYS", |conn, hash| redis::pipe().atomic().cmd("HKEYS").arg(hash).query(conn))?;
        Ok(fields.into_iter().filter_map(paho_key).collect())
    }

    fn try_clear(&self) -> Result<(), Error> {
        self.exchange("DEL", |conn, hash| redis::pipe().atomic().cmd("DEL").arg(hash).ignore().query(conn))
    }

    fn try_close(&self) {
        let mut state = self.lock();
        state.link.disconnect();
        state.hash = None;
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
fn report(operation: &str, key: Option<&str>, error: Error) -> paho_mqtt::Error {
    match key {
        Some(key) => log::warn!("redis persistence: {operation} of key {key:?} failed: {error}"),
        None => log::warn!("redis persistence: {operation} failed: {error}"),
    }
    error.into()
}

impl ClientPersistence for RedisPersistence {
    fn open(&mut self, client_id: &str, server_uri: &str) -> paho_mqtt::Result<()> {
        let hash = self.try_open(client_id, server_uri).map_err(|e| report("open", None, e))?;
        log::debug!("redis persistence: opened `{hash}` on {}", self.config.address());
        Ok(())
    }

    fn close(&mut self) -> paho_mqtt::Result<()> {
        self.try_close();
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> paho_mqtt::Result<()> {
        self.try_put(key, &buffers).map_err(|e| report("put", Some(key), e))
    }

    fn get(&mut self, key: &str) -> paho_mqtt::Result<Vec<u8>> {
        self.try_get(key).map_err(|e| report("get", Some(key), e))
    }

    fn remove(&mut self, key: &str) -> paho_mqtt::Result<()> {
        self.try_remove(key).map_err(|e| report("remove", Some(key), e))
    }

    fn keys(&mut self) -> paho_mqtt::Result<Vec<String>> {
        self.try_keys().map_err(|e| report("keys", None, e))
    }

    fn clear(&mut self) -> paho_mqtt::Result<()> {
        self.try_clear().map_err(|e| report("clear", None, e))
    }

    /// Returns `true` when `key` is **absent**: see the type's documentation.
    ///
    /// When Redis cannot be asked, the answer is "absent": Paho then re-sends
    /// a QoS 2 PUBLISH rather than assume its PUBREL went out, which risks a
    /// duplicate instead of a loss.
    fn contains_key(&mut self, key: &str) -> bool {
        match self.contains(key) {
            Ok(present) => answer_for_paho_c(present),
            Err(e) => {
                drop(report("contains_key", Some(key), e));
                answer_for_paho_c(false)
            }
        }
    }
}
