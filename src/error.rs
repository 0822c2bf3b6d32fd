//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong while configuring or using a [`RedisPersistence`].
///
/// Paho only understands "success" or "persistence error", so inside the
/// [`ClientPersistence`] callbacks every variant becomes
/// [`paho_mqtt::Error::PersistenceError`] after being logged. The variants are
/// for the Rust-facing API ([`RedisPersistence::with_url`],
/// [`Builder::build`], [`RedisPersistence::contains`]) and for the log.
///
/// No variant ever carries a password.
///
/// [`RedisPersistence`]: crate::RedisPersistence
/// [`RedisPersistence::with_url`]: crate::RedisPersistence::with_url
/// [`RedisPersistence::contains`]: crate::RedisPersistence::contains
/// [`Builder::build`]: crate::Builder::build
/// [`ClientPersistence`]: paho_mqtt::ClientPersistence
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed.
    #[error(
        "invalid Redis URL: {reason} (expected redis://[user:password@]host[:port][/db], \
         rediss://…, redis+unix:///path[?db=N] or unix:///path)"
    )]
    InvalidUrl {
        /// Why the URL was rejected. Never contains the URL itself, which may hold a password.
        reason: String,
    },

    /// The URL needs a cargo feature of this crate that was not enabled.
    #[error("the `{scheme}` Redis URL scheme needs the `{feature}` feature of paho-mqtt-redis")]
    FeatureDisabled {
        /// The URL scheme that was given, such as `rediss`.
        scheme: String,
        /// The feature to enable in `Cargo.toml`.
        feature: &'static str,
    },

    /// A timeout option is out of range.
    #[error("invalid {option}: {value:?} (must be greater than zero)")]
    InvalidTimeout {
        /// The builder option, such as `io_timeout`.
        option: &'static str,
        /// The rejected value.
        value: Duration,
    },

    /// A builder option is out of range.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The builder option, such as `max_store_bytes`.
        option: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A write would take the store beyond its `max_store_bytes`; nothing was written.
    #[error("the store `{hash}` is full: {detail} (max_store_bytes is {limit})")]
    StoreFull {
        /// The Redis hash that holds the store.
        hash: String,
        /// The configured limit in bytes.
        limit: u64,
        /// What Redis reported, such as the size the store would have reached.
        detail: String,
    },

    /// An operation was attempted before `open` (or after `close`).
    #[error("the store is not open (Paho calls `open` before any other operation)")]
    NotOpen,

    /// Connecting (or reconnecting) to Redis failed.
    #[error("cannot connect to Redis at {addr}: {source}")]
    Connect {
        /// Where we tried to connect: `host:port` or a socket path, never credentials.
        addr: String,
        /// The error reported by redis-rs.
        #[source]
        source: redis::RedisError,
    },

    /// Redis answered a command with an error, or the connection broke during it.
    #[error("Redis {command} on `{hash}` failed: {source}")]
    Command {
        /// The Redis command, such as `HSET`.
        command: &'static str,
        /// The Redis hash that holds the store.
        hash: String,
        /// The error reported by redis-rs.
        #[source]
        source: redis::RedisError,
    },

    /// The store's Redis key exists but is not a hash: something else uses the name.
    #[error(
        "the Redis key `{hash}` holds a {found}, not a hash: another program uses this name \
         (choose another key_prefix, or delete the key)"
    )]
    NotAHash {
        /// The Redis key the store would use.
        hash: String,
        /// What the key holds, as Redis's `TYPE` names it (such as `string`).
        found: String,
    },

    /// A record larger than Redis takes (512 MiB); nothing was written.
    #[error("the record `{key}` is larger than the {max} bytes Redis takes")]
    ValueTooLarge {
        /// The Paho key.
        key: String,
        /// The largest record accepted.
        max: usize,
    },

    /// `get` of a key that is not in the store.
    #[error("key `{key}` is not in the store")]
    KeyNotFound {
        /// The Paho key, such as `s-12`.
        key: String,
    },
}

impl From<Error> for paho_mqtt::Error {
    fn from(_: Error) -> Self {
        paho_mqtt::Error::PersistenceError
    }
}
