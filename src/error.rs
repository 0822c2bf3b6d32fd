//! The crate's one error type.

/// Everything that can go wrong while configuring or using a [`RedisPersistence`].
///
/// Paho only understands "success" or "persistence error", so inside the
/// [`ClientPersistence`] callbacks every variant becomes
/// [`paho_mqtt::Error::PersistenceError`] after being logged. The variants are
/// for the Rust-facing API ([`RedisPersistence::with_url`],
/// [`Builder::build`], [`admin`](crate::admin)) and for the log.
///
/// Which calls return which variants: building a store
/// ([`Builder::build`], [`Builder::into_config`]) returns the configuration
/// errors, [`Error::InvalidUrl`], [`Error::FeatureDisabled`] and
/// [`Error::InvalidOption`]; [`admin`](crate::admin) returns
/// [`Error::Connect`], [`Error::Command`], [`Error::NotAHash`] and
/// [`Error::PutBackRefused`]; the others come from Paho's calls on the store
/// (`open`'s [`Error::InUse`], [`Error::Fenced`], [`Error::StoreFull`],
/// [`Error::ValueTooLarge`], [`Error::KeyNotFound`], [`Error::NotOpen`],
/// and the Redis failures), where Paho sees only `PersistenceError` and the
/// variant goes to the log.
///
/// No variant ever carries a password.
///
/// The cause behind [`Error::Connect`] and [`Error::Command`] is kept whole
/// and reachable through [`std::error::Error::source`], but as a boxed error
/// rather than redis-rs's own type, so that a new major version of redis-rs
/// does not change this crate's API. [`Error::is_timeout`] and
/// [`Error::redis_code`] answer what a caller usually asks of it.
///
/// [`RedisPersistence`]: crate::RedisPersistence
/// [`RedisPersistence::with_url`]: crate::RedisPersistence::with_url
/// [`Builder::build`]: crate::Builder::build
/// [`Builder::into_config`]: crate::Builder::into_config
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

    /// A builder option is out of range: a zero timeout, a zero
    /// `max_store_bytes`, a lease shorter than [`MIN_LEASE`](crate::MIN_LEASE),
    /// an MQTT version Paho does not know.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The builder option, such as `io_timeout` or `max_store_bytes`.
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

    /// Another process (or another `RedisPersistence` of this process) has
    /// the store open: its lease (`{hash}:owner`) names it, and it is alive,
    /// or it kept renewing its lease while `open` waited for it to expire.
    #[error(
        "the store `{hash}` is in use by {owner}: two clients with one client id would overwrite \
         each other's records (stop that one, or give this client another client id)"
    )]
    InUse {
        /// The Redis hash that holds the store.
        hash: String,
        /// Who holds it, as its lease says: host, pid, and since when.
        owner: String,
    },

    /// The store's lease was lost (another process took the store over while
    /// this one was paused or cut off from Redis), or this process cannot
    /// confirm it: nothing more is written to or removed from the hash.
    #[error("the store `{hash}` is fenced: {reason}; nothing is written to it any more")]
    Fenced {
        /// The Redis hash that holds the store.
        hash: String,
        /// Why: who holds the lease now, or that it could not be confirmed.
        reason: String,
    },

    /// Connecting (or reconnecting) to Redis failed.
    #[error("cannot connect to Redis at {addr}: {source}")]
    Connect {
        /// Where we tried to connect: `host:port` or a socket path, never credentials.
        addr: String,
        /// What went wrong, as redis-rs reported it (see the enum's
        /// documentation); [`Error::is_timeout`] tells a timeout.
        #[source]
        source: Cause,
    },

    /// Redis answered a command with an error, or the connection broke during it.
    #[error("Redis {command} on `{hash}` failed: {source}")]
    Command {
        /// The Redis command that failed, or that could not be sent because
        /// Redis had not answered the ones before it: `HSET`, `HDEL`, `HGET`,
        /// `HGETALL`, `HKEYS`, `DEL`, `TYPE`, `SET`, `GET` and `PTTL` (the
        /// lease), `MULTI/EXEC` for a write with a
        /// removal over the Unix socket, or `EVALSHA` for the store's scripts
        /// (a write with a removal over TCP, any write or removal under
        /// `max_store_bytes`, the lease's renewal and release, and
        /// [`admin::Stores::purge`](crate::admin::Stores::purge));
        /// also `SCAN` and `HSTRLEN` for [`admin`](crate::admin).
        command: &'static str,
        /// The Redis hash that holds the store (the pattern, for `SCAN`).
        hash: String,
        /// What went wrong, as redis-rs reported it (see the enum's
        /// documentation); [`Error::redis_code`] gives Redis's error code.
        #[source]
        source: Cause,
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

    /// An operator's put-back of a quarantined record was refused
    /// ([`admin::Stores::put_back`](crate::admin::Stores::put_back)); nothing changed.
    #[error("cannot put `{entry}` of `{quarantine}` back into `{hash}`: {why}")]
    PutBackRefused {
        /// The store's hash.
        hash: String,
        /// Its quarantine.
        quarantine: String,
        /// The quarantine's entry, `{key}@{ms}`.
        entry: String,
        /// Why, for the operator.
        why: String,
    },

    /// `get` of a key that is not in the store.
    #[error("key `{key}` is not in the store")]
    KeyNotFound {
        /// The Paho key, such as `s-12`.
        key: String,
    },
}

/// The cause behind [`Error::Connect`] and [`Error::Command`]: redis-rs's
/// error, boxed so that its type is not part of this crate's API.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// Connecting to Redis failed with `source`.
    pub(crate) fn connect(addr: String, source: redis::RedisError) -> Self {
        Error::Connect { addr, source: Box::new(source) }
    }

    /// Redis command `command` on the store `hash` failed with `source`.
    pub(crate) fn command(command: &'static str, hash: &str, source: redis::RedisError) -> Self {
        Error::Command { command, hash: hash.to_owned(), source: Box::new(source) }
    }

    /// Whether Redis did not answer within `io_timeout` (or did not accept
    /// the connection within `connect_timeout`).
    pub fn is_timeout(&self) -> bool {
        self.redis_error().is_some_and(redis::RedisError::is_timeout)
    }

    /// The code of Redis's error reply, such as `OOM`, `LOADING`, `NOPERM` or
    /// `WRONGPASS`; `None` when Redis sent no error reply (a broken
    /// connection, a timeout) and for the other variants.
    pub fn redis_code(&self) -> Option<&str> {
        self.redis_error()?.code()
    }

    /// Whether this failure is one of a Redis that is not up yet (nothing
    /// accepts connections, the socket is missing, the connect timed out or
    /// dropped, or Redis is still loading its data): one waiting may cure.
    pub(crate) fn is_not_up_yet(&self) -> bool {
        if self.redis_code() == Some("LOADING") {
            return true;
        }
        matches!(self, Error::Connect { .. })
            && self.redis_error().is_some_and(|error| {
                error.is_connection_refusal() || error.is_timeout() || error.is_connection_dropped()
            })
    }

    fn redis_error(&self) -> Option<&redis::RedisError> {
        match self {
            Error::Connect { source, .. } | Error::Command { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }
}

impl From<Error> for paho_mqtt::Error {
    fn from(_: Error) -> Self {
        paho_mqtt::Error::PersistenceError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_reachable_through_source_without_naming_redis_types() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply");
        let error = Error::command("EVALSHA", "dev:broker:1883", timed_out.into());
        assert_eq!(error.to_string(), "Redis EVALSHA on `dev:broker:1883` failed: no reply");
        let source = std::error::Error::source(&error).expect("a cause");
        assert!(source.downcast_ref::<redis::RedisError>().is_some(), "{source:?}");
        assert!(error.is_timeout());
        assert_eq!(error.redis_code(), None, "no error reply");

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::connect("127.0.0.1:6379".to_owned(), refused.into());
        assert!(!error.is_timeout());
        assert!(!Error::NotOpen.is_timeout());
        assert_eq!(Error::NotOpen.redis_code(), None);
    }
}
