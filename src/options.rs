//! [`Options`]: a store's settings read from a configuration file (feature
//! `serde`), built through [`Builder`] so that they are validated in one place.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::{Builder, Error, RedisPersistence};

/// A store's settings as a gateway's configuration file holds them: every
/// option of [`Builder`], deserialized with [serde](https://serde.rs) from
/// TOML, JSON, YAML or anything serde reads. Needs feature `serde`.
///
/// Every field is optional and defaults as the builder's option does;
/// durations are whole milliseconds (`io_timeout_ms`, `connect_timeout_ms`,
/// `lease_ms`), and an unknown field is an error, so that a typo is not
/// silently ignored. Nothing is validated until [`build`](Self::build) (or
/// [`into_builder`](Self::into_builder) and the builder's `build`), which
/// fails as the builder does ([`Error::InvalidUrl`], [`Error::InvalidOption`], …).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use paho_mqtt_redis::Options;
///
/// let options: Options = serde_json::from_str(r#"{
///     "url": "redis://127.0.0.1:6379/0",
///     "key_prefix": "gateway:mqtt:",
///     "io_timeout_ms": 500,
///     "max_store_bytes": 67108864,
///     "mqtt_version": 5
/// }"#)?;
/// let store = options.build()?;
/// assert_eq!(store.config().io_timeout().as_millis(), 500);
/// # Ok(())
/// # }
/// ```
///
/// `Debug` never prints the URL, which may hold a password.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// [`Builder::url`].
    url: Option<String>,
    /// [`Builder::key_prefix`].
    key_prefix: String,
    /// [`Builder::connect_timeout`], in milliseconds.
    connect_timeout_ms: Option<u64>,
    /// [`Builder::io_timeout`], in milliseconds.
    io_timeout_ms: Option<u64>,
    /// [`Builder::max_store_bytes`].
    max_store_bytes: Option<u64>,
    /// [`Builder::defer_qos1_removals`].
    defer_qos1_removals: bool,
    /// [`Builder::mqtt_version`].
    mqtt_version: Option<u32>,
    /// [`Builder::lease`], in milliseconds.
    lease_ms: Option<u64>,
}

impl Options {
    /// A builder with these options set, for options the file does not hold.
    pub fn into_builder(self) -> Builder {
        let mut builder = RedisPersistence::builder()
            .key_prefix(self.key_prefix)
            .defer_qos1_removals(self.defer_qos1_removals);
        if let Some(url) = self.url {
            builder = builder.url(url);
        }
        if let Some(ms) = self.connect_timeout_ms {
            builder = builder.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.io_timeout_ms {
            builder = builder.io_timeout(Duration::from_millis(ms));
        }
        if let Some(bytes) = self.max_store_bytes {
            builder = builder.max_store_bytes(bytes);
        }
        if let Some(version) = self.mqtt_version {
            builder = builder.mqtt_version(version);
        }
        if let Some(ms) = self.lease_ms {
            builder = builder.lease(Duration::from_millis(ms));
        }
        builder
    }

    /// Validates the options (as [`Builder::build`]) into a store.
    pub fn build(self) -> Result<RedisPersistence, Error> {
        self.into_builder().build()
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("url", &self.url.as_ref().map(|_| "<url>"))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("io_timeout_ms", &self.io_timeout_ms)
            .field("max_store_bytes", &self.max_store_bytes)
            .field("defer_qos1_removals", &self.defer_qos1_removals)
            .field("mqtt_version", &self.mqtt_version)
            .field("lease_ms", &self.lease_ms)
            .finish()
    }
}
