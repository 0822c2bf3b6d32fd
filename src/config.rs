//! Where the store lives and how long we wait for it: [`Config`] and its consuming [`Builder`].

use std::fmt;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::paho::Version;
use crate::{Error, RedisPersistence};

/// What [`Config::quarantine_name`] appends to a store's hash name.
pub(crate) const QUARANTINE_SUFFIX: &str = ":quarantine";
/// What [`Config::lease_name`] appends to a store's hash name.
pub(crate) const LEASE_SUFFIX: &str = ":owner";

/// The Redis port used when neither a URL nor a port is given.
pub const DEFAULT_PORT: u16 = 6379;

/// How long `open` (and a reconnect) may take to establish a connection: 3 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a single Redis round trip may take before the call fails: 2 s.
///
/// Every store call runs inside a Paho thread, so this bounds how long a hung
/// Redis can stall the MQTT client.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a store's lease lasts without renewal: 10 s (see [`Builder::lease`]).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The shortest lease [`Builder::lease`] accepts: Redis expires keys to the
/// millisecond, and a renewal every third of it must have time to run.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// A validated configuration of a [`RedisPersistence`].
///
/// `Debug` shows the address, database, user name and prefix, and prints
/// `<redacted>` in place of any password.
#[derive(Clone)]
pub struct Config {
    addr: ConnectionAddr,
    redis: RedisConnectionInfo,
    key_prefix: String,
    connect_timeout: Duration,
    io_timeout: Duration,
    max_store_bytes: Option<u64>,
    defer_qos1_removals: bool,
    mqtt_version: Version,
    lease: Duration,
    wait_for_redis: Duration,
}

impl Config {
    /// How long `open` waits for a Redis that is not up yet (see
    /// [`Builder::wait_for_redis`]); zero: it does not wait.
    pub fn wait_for_redis(&self) -> Duration {
        self.wait_for_redis
    }

    /// How long the store's lease lasts without renewal (see [`Builder::lease`]).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The MQTT version of the client the store serves (see [`Builder::mqtt_version`]).
    pub fn mqtt_version(&self) -> crate::MqttVersion {
        self.mqtt_version
    }

    /// The most bytes of records the store may hold in Redis, if limited.
    pub fn max_store_bytes(&self) -> Option<u64> {
        self.max_store_bytes
    }

    /// Whether the removal of an acknowledged QoS 1 message waits for the next write.
    pub fn defer_qos1_removals(&self) -> bool {
        self.defer_qos1_removals
    }

    /// Whether Redis is reached over a Unix socket.
    #[cfg(feature = "unix-socket")]
    pub(crate) fn is_unix_socket(&self) -> bool {
        matches!(self.addr, ConnectionAddr::Unix(_))
    }

    /// The path of the Unix socket Redis is reached on, if it is.
    #[cfg(feature = "unix-socket")]
    pub(crate) fn unix_socket(&self) -> Option<&std::path::Path> {
        match &self.addr {
            ConnectionAddr::Unix(path) => Some(path),
            _ => None,
        }
    }

    /// The key prefix put in front of every hash name (empty by default).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The timeout of one Redis round trip.
    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// The Redis database number.
    pub fn db(&self) -> i64 {
        self.redis.db()
    }

    /// Where Redis is: `host:port` or the socket path. Never includes credentials.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The name of the Redis hash that holds the store of one MQTT client.
    ///
    /// `{key_prefix}{client_id}:{server_uri}`: with no prefix this is exactly
    /// the name used by paho-mqtt-redis 0.3, so stores written by 0.3 are
    /// restored by this version.
    pub fn hash_name(&self, client_id: &str, server_uri: &str) -> String {
        // No length arithmetic of our own: on a 32-bit target an unchecked sum
        // of lengths is one more place that could overflow.
        format!("{}{client_id}:{server_uri}", self.key_prefix)
    }

    /// The hash beside a store that holds the records `open` set aside
    /// (no restore could take them), with why: `{hash}:quarantine`. Under
    /// the same prefix, so an ACL that covers the store covers it.
    pub fn quarantine_name(hash: &str) -> String {
        format!("{hash}{QUARANTINE_SUFFIX}")
    }

    /// The key beside a store naming the process that has it open: `{hash}:owner`.
    pub fn lease_name(hash: &str) -> String {
        format!("{hash}{LEASE_SUFFIX}")
    }

    /// The redis-rs connection parameters, with the timeouts applied.
    pub(crate) fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        // Nagle's algorithm would hold back our small requests; every call is latency-bound.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        Ok(self
            .addr
            .clone()
            .into_connection_info()?
            .set_redis_settings(self.redis.clone())
            .set_tcp_settings(tcp))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: ConnectionAddr::Tcp("127.0.0.1".to_owned(), DEFAULT_PORT),
            redis: default_redis_settings(),
            key_prefix: String::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            max_store_bytes: None,
            defer_qos1_removals: false,
            mqtt_version: Version::V3,
            lease: DEFAULT_LEASE,
            wait_for_redis: Duration::ZERO,
        }
    }
}

fn default_redis_settings() -> RedisConnectionInfo {
    // CLIENT SETINFO would cost a round trip on every (re)connect and needs one more ACL grant.
    RedisConnectionInfo::default().set_skip_set_lib_name()
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = matches!(self.addr, ConnectionAddr::TcpTls { .. });
        f.debug_struct("Config")
            .field("address", &self.addr.to_string())
            .field("tls", &tls)
            .field("db", &self.redis.db())
            .field("username", &self.redis.username())
            .field("password", &self.redis.password().map(|_| Redacted))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("max_store_bytes", &self.max_store_bytes)
            .field("defer_qos1_removals", &self.defer_qos1_removals)
            .field("lease", &self.lease)
            .field("wait_for_redis", &self.wait_for_redis)
            .finish()
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses a Redis URL with redis-rs, after checking that this build supports its scheme.
pub(crate) fn parse_url(url: &str) -> Result<(ConnectionAddr, RedisConnectionInfo), Error> {
    let parsed = redis::parse_redis_url(url).ok_or_else(|| Error::InvalidUrl { reason: unparsable(url) })?;
    let scheme = parsed.scheme();
    match scheme {
        "redis" | "valkey" => {}
        "rediss" | "valkeys" if !cfg!(feature = "tls") => {
            return Err(Error::FeatureDisabled { scheme: scheme.to_owned(), feature: "tls" })
        }
        "redis+unix" | "valkey+unix" | "unix" if !cfg!(feature = "unix-socket") => {
            return Err(Error::FeatureDisabled { scheme: scheme.to_owned(), feature: "unix-socket" })
        }
        _ => {}
    }
    let unix = matches!(scheme, "redis+unix" | "valkey+unix" | "unix");
    // redis-rs ignores query parameters it does not know, so a typo (or `?db=`
    // on a TCP URL, where the database is the path) would silently do nothing.
    let known: &[&str] = if unix { &["db", "user", "pass", "protocol"] } else { &["protocol"] };
    if let Some((name, _)) = parsed.query_pairs().find(|(name, _)| !known.contains(&name.as_ref())) {
        let known = known.join(", ");
        let reason = if name.is_empty() {
            format!("a query parameter without a name (known here: {known})")
        } else {
            format!("unknown query parameter `{name}` (known here: {known})")
        };
        return Err(Error::InvalidUrl { reason });
    }
    let info =
        parsed.into_connection_info().map_err(|e| Error::InvalidUrl { reason: describe_url_error(&e) })?;
    if info.redis_settings().db() < 0 {
        return Err(Error::InvalidUrl { reason: "Invalid database number: it must be 0 or more".to_owned() });
    }
    if matches!(info.addr(), ConnectionAddr::Tcp(_, 0) | ConnectionAddr::TcpTls { port: 0, .. }) {
        return Err(Error::InvalidUrl { reason: "port 0 cannot be connected to".to_owned() });
    }
    let redis = info.redis_settings().clone().set_skip_set_lib_name();
    Ok((info.addr().clone(), redis))
}

/// Why the URL parser refused `url`, without repeating the URL (it may hold a password).
fn unparsable(url: &str) -> String {
    let scheme = url.trim_start().split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "valkey+unix" | "unix") => {
            "the URL does not parse: check the host, the port (1 to 65535), the brackets of an IPv6 \
             address, and look for spaces or stray characters"
                .to_owned()
        }
        _ => "not a URL with a redis://, rediss://, redis+unix:// or unix:// scheme".to_owned(),
    }
}

/// redis-rs puts its reason in the error's description and sometimes a detail after it.
fn describe_url_error(error: &redis::RedisError) -> String {
    match error.detail() {
        Some(detail) => format!("{error} ({detail})"),
        None => error.to_string(),
    }
}

/// A consuming builder for [`RedisPersistence`].
///
/// ```
/// use std::time::Duration;
/// use paho_mqtt_redis::RedisPersistence;
///
/// let persistence = RedisPersistence::builder()
///     .url("redis://127.0.0.1:6379/2")
///     .key_prefix("gateway:mqtt:")
///     .io_timeout(Duration::from_millis(500))
///     .build()?;
/// # Ok::<(), paho_mqtt_redis::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    url: Option<SecretUrl>,
    key_prefix: String,
    connect_timeout: Option<Duration>,
    io_timeout: Option<Duration>,
    max_store_bytes: Option<u64>,
    defer_qos1_removals: bool,
    mqtt_version: Option<u32>,
    lease: Option<Duration>,
    wait_for_redis: Duration,
}

/// A URL kept for `build`, printed without its contents (it may hold a password).
#[derive(Default)]
struct SecretUrl(String);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<url>")
    }
}

impl Builder {
    /// The Redis server: `redis://[user:password@]host[:port][/db]`,
    /// `redis+unix:///path[?db=N]` or `unix:///path` (feature `unix-socket`),
    /// `rediss://…` (feature `tls`). Default: `redis://127.0.0.1:6379/0`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(SecretUrl(url.into()));
        self
    }

    /// A prefix put in front of every hash name, to share one Redis between
    /// applications. Default: none (the naming of 0.3).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long connecting may take. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long one Redis round trip may take. Default: [`DEFAULT_IO_TIMEOUT`].
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = Some(timeout);
        self
    }

    /// Limits the bytes of records the store holds in Redis (the sum of the
    /// values; Redis's own overhead comes on top). Default: no limit.
    ///
    /// Enforced by Redis itself: with a limit, each write is a Lua script
    /// that checks the store's byte count and writes only if the result fits,
    /// so concurrent writers and crashes cannot overshoot it. The count lives
    /// in the hash as the field `paho-mqtt-redis:bytes`
    /// ([`admin::BUDGET_COUNTER_FIELD`](crate::admin::BUDGET_COUNTER_FIELD)), which Paho never sees.
    ///
    /// Redis refuses a write beyond the limit. A record Paho writes (`c-`,
    /// `s-`, `sc-`, `r-`, `q-`) is then kept in memory
    /// ([`RedisPersistence::unwritten`]) and written once the store has room,
    /// because Paho C carries on whatever such a `put` returns (see
    /// [`RedisPersistence`]); only a key Paho never writes fails, with
    /// [`Error::StoreFull`]. Removals Paho asked for earlier
    /// run inside the script of the next write, so a refused write removes
    /// nothing either (Paho removes a message's command record just before it
    /// writes the PUBLISH record that replaces it). To refuse publishes before the
    /// store fills, also bound Paho's queue with
    /// `CreateOptionsBuilder::max_buffered_messages`.
    pub fn max_store_bytes(mut self, bytes: u64) -> Self {
        self.max_store_bytes = Some(bytes);
        self
    }

    /// Sends the removal of an acknowledged QoS 1 message with the next
    /// write instead of at once. Default: off.
    ///
    /// On, an online QoS 1 publish costs 2 Redis commands in 2 round trips
    /// instead of 3 in 3. The price: until the next write, the store still
    /// holds the last acknowledged QoS 1 message, so a crash in that window
    /// makes the restarted client send it again: a duplicate, which QoS 1 (at
    /// least once) allows. QoS 2 records are never deferred: a crash could
    /// then duplicate a QoS 2 message.
    pub fn defer_qos1_removals(mut self, defer: bool) -> Self {
        self.defer_qos1_removals = defer;
        self
    }

    /// The MQTT version the client is created with: the value given to
    /// `paho_mqtt::CreateOptionsBuilder::mqtt_version` (`0`, Paho's default,
    /// `3` and `4` are MQTT 3.1.1 records; `5` is MQTT 5). Default: `0`.
    ///
    /// Paho C names its records by the version it was created with, and
    /// does not tell its store. `open` uses this to take over the records an
    /// earlier run of the other version left: rewritten into this version
    /// when nothing is lost, else set aside in the quarantine.
    pub fn mqtt_version(mut self, version: u32) -> Self {
        self.mqtt_version = Some(version);
        self
    }

    /// How long the store's lease lasts without renewal. Default:
    /// [`DEFAULT_LEASE`] (10 s); at least [`MIN_LEASE`].
    ///
    /// `open` takes the store for this process with a lease in Redis
    /// (`{hash}:owner`, see [`Config::lease_name`]), renewed every third of
    /// this by a thread of the store, so that a second process with the same
    /// client id is refused ([`Error::InUse`]) instead of overwriting this
    /// one's records. After a crash, a new process on the same host takes
    /// the store over at once; one on another host (or in another pid
    /// namespace: another container) cannot tell a dead owner from a paused
    /// one, and waits until the lease expires, at most this plus 1 s, inside
    /// `open` (so inside Paho's client creation). Shorter: faster takeovers
    /// from another host, more renewals (3 per lease), and a store that
    /// stops writing ([`Error::Fenced`]) after a shorter stall of its
    /// process or of Redis. It should exceed `io_timeout` several times, so
    /// that one slow renewal does not cost the lease.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How long `open` (so Paho's `create_client()`) waits for a Redis that
    /// is not up yet, for an application that may start before Redis does.
    /// Default: zero, `open` fails at once (as before this option).
    ///
    /// While the connection is refused, the Unix socket does not exist yet,
    /// the connect times out, the connection drops during the handshake, or
    /// Redis answers `-LOADING` (it is still reading its data from disk),
    /// `open` tries again every 100 ms until Redis answers or this much time
    /// has passed since `open` began. Each attempt is bounded by
    /// `connect_timeout` (and `io_timeout`), and none starts after the
    /// bound, so `open` returns within about this plus `connect_timeout`
    /// plus `io_timeout`. Once the bound passes, `open` fails with the last
    /// attempt's error ([`RedisPersistence::last_error`]), exactly as without
    /// waiting: it never opens a store it has not read, since Paho would then
    /// start without the previous run's records and overwrite them. Failures
    /// waiting cannot fix (a wrong password, a missing ACL grant, the socket's
    /// permissions, [`Error::InUse`]) fail at once. The first failed attempt
    /// is logged (`info`), and so is the wait's end.
    ///
    /// Paho calls `open` from `create_client()` on the application's thread,
    /// which waits there. The alternative is the application's own retry of
    /// `create_client()` (each failure gives the cause through
    /// [`RedisPersistence::last_error`]), or ordering the services
    /// (systemd `After=` and `Requires=` on Redis's unit).
    pub fn wait_for_redis(mut self, bound: Duration) -> Self {
        self.wait_for_redis = bound;
        self
    }

    /// Validates the options. Nothing connects until Paho calls `open`.
    pub fn build(self) -> Result<RedisPersistence, Error> {
        Ok(RedisPersistence::from_config(self.into_config()?))
    }

    /// Validates the options into a [`Config`].
    pub fn into_config(self) -> Result<Config, Error> {
        let mut config = Config { key_prefix: self.key_prefix, ..Config::default() };
        if let Some(SecretUrl(url)) = self.url {
            (config.addr, config.redis) = parse_url(&url)?;
        }
        config.connect_timeout =
            positive("connect_timeout", self.connect_timeout)?.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        config.io_timeout = positive("io_timeout", self.io_timeout)?.unwrap_or(DEFAULT_IO_TIMEOUT);
        if self.max_store_bytes == Some(0) {
            return Err(Error::InvalidOption {
                option: "max_store_bytes",
                reason: "must be greater than zero (leave it unset for no limit)".to_owned(),
            });
        }
        config.max_store_bytes = self.max_store_bytes;
        config.defer_qos1_removals = self.defer_qos1_removals;
        config.wait_for_redis = self.wait_for_redis;
        config.lease = positive("lease", self.lease)?.unwrap_or(DEFAULT_LEASE);
        if config.lease < MIN_LEASE {
            return Err(Error::InvalidOption {
                option: "lease",
                reason: format!("{:?} is shorter than the shortest lease, {MIN_LEASE:?}", config.lease),
            });
        }
        config.mqtt_version = match self.mqtt_version.unwrap_or(0) {
            0 | 3 | 4 => Version::V3,
            5 => Version::V5,
            other => {
                return Err(Error::InvalidOption {
                    option: "mqtt_version",
                    reason: format!("{other} is not an MQTT version Paho knows (0, 3, 4 or 5)"),
                })
            }
        };
        Ok(config)
    }
}

/// redis-rs rejects zero socket timeouts, and a zero timeout could never succeed anyway.
fn positive(option: &'static str, value: Option<Duration>) -> Result<Option<Duration>, Error> {
    match value {
        Some(value) if value.is_zero() => {
            Err(Error::InvalidOption { option, reason: "must be greater than zero".to_owned() })
        }
        other => Ok(other),
    }
}
