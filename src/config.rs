//! Where the store lives and how long we wait for it: [`Config`] and its consuming [`Builder`].

use std::fmt;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::{Error, RedisPersistence};

/// The Redis port used when neither a URL nor a port is given.
pub const DEFAULT_PORT: u16 = 6379;

/// How long `open` (and a reconnect) may take to establish a connection: 3 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a single Redis round trip may take before the call fails: 2 s.
///
/// Every store call runs inside a Paho thread, so this bounds how long a hung
/// Redis can stall the MQTT client.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(2);

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
}

impl Config {
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
    let parsed = redis::parse_redis_url(url).ok_or_else(|| Error::InvalidUrl {
        reason: "not a URL with a redis://, rediss://, redis+unix:// or unix:// scheme".to_owned(),
    })?;
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
    let info =
        parsed.into_connection_info().map_err(|e| Error::InvalidUrl { reason: describe_url_error(&e) })?;
    let redis = info.redis_settings().clone().set_skip_set_lib_name();
    Ok((info.addr().clone(), redis))
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
        Ok(config)
    }
}

/// redis-rs rejects zero socket timeouts, and a zero timeout could never succeed anyway.
fn positive(option: &'static str, value: Option<Duration>) -> Result<Option<Duration>, Error> {
    match value {
        Some(value) if value.is_zero() => Err(Error::InvalidTimeout { option, value }),
        other => Ok(other),
    }
}
