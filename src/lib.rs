//! Redis-backed client persistence for the [Paho MQTT Rust client](paho_mqtt).
//!
//! Paho keeps every QoS 1 and QoS 2 message in a persistence store until the
//! broker has acknowledged it, so that a client restarted after a crash sends
//! it again. Paho's own file persistence writes each message to flash, which
//! wears out the flash of an embedded gateway. [`RedisPersistence`] keeps the
//! store in a Redis on the same device instead: in RAM, outside the client's
//! process, so it survives a crash of the application.
//!
//! ```no_run
//! use paho_mqtt as mqtt;
//! use paho_mqtt_redis::RedisPersistence;
//!
//! let persistence = RedisPersistence::with_url("redis://127.0.0.1:6379/0")?;
//! let client = mqtt::CreateOptionsBuilder::new()
//!     .server_uri("tcp://127.0.0.1:1883")
//!     .client_id("gateway-17")
//!     .user_persistence(persistence)
//!     .create_client()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Paho calls the store synchronously from its own threads, so Redis round
//! trips are the client's latency: run Redis locally (TCP on 127.0.0.1, or a
//! Unix socket with feature `unix-socket`). The store keeps what it can in
//! memory so that most calls need none: restoring a store is one `HGETALL`
//! (after the `SET` of its lease), an online QoS 1 publish 3 writes (see
//! [`RedisPersistence`]'s "Round trips").
//!
//! At `open` the store takes the store for its process (a lease: a second
//! process fails with [`Error::InUse`]), and checks every record against
//! what Paho C's restore can parse, before Paho sees any: a record none can
//! take is set aside in a quarantine beside the hash, and one written by the
//! other MQTT version is rewritten when nothing is lost (tell the store the
//! client's version with [`Builder::mqtt_version`]).
//!
//! Inside, a sans-IO core decides what Redis must hold after each Paho call
//! (plans of Redis commands, no socket), a transport runs the plans, and the
//! `ClientPersistence` impl adapts the two to Paho; every rule taken from
//! Paho C lives in one module, with the Paho C function it comes from.
//!
//! Also here: [`Monitor`], the read-only handle the application keeps on
//! the store Paho owns ([`RedisPersistence::monitor`]), with the store's
//! counters ([`Stats`]); [`admin`],
//! which finds, reads and purges the stores on a Redis; and with feature
//! `decode` the `decode` module, which turns the records Paho stores
//! into readable messages (the `paho-mqtt-redis` command of feature `cli`
//! uses it and turns `decode` on).
//!
//! Note that [`RedisPersistence`]'s `contains_key` deliberately answers
//! inverted, to undo an inversion in paho-mqtt 0.14: see
//! [its documentation](RedisPersistence#contains_key-answers-inverted-on-purpose).
//! The plain answer is [`Monitor::contains`].

#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly (see Cargo.toml), where each
// feature-gated item is shown with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Paho calls this crate through `extern "C"` callbacks, where a panic aborts
// the whole process: library code must not contain a way to panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod admin;
mod config;
mod core;
#[cfg(feature = "decode")]
#[cfg_attr(docsrs, doc(cfg(feature = "decode")))]
pub mod decode;
mod error;
mod lease;
#[cfg(feature = "serde")]
mod options;
mod paho;
mod persistence;
mod stats;
mod transport;

pub use config::{
    Builder, Config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, DEFAULT_LEASE, DEFAULT_PORT, MIN_LEASE,
};
pub use error::{Cause, Error};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use options::Options;
pub use paho::Version as MqttVersion;
// For the fuzz crate only (fuzz/fuzz_targets/restore_check.rs), which turns `decode` on.
#[cfg(feature = "decode")]
#[doc(hidden)]
pub use paho::restore::fuzz_at_open;
pub use persistence::{Monitor, RedisPersistence};
pub use stats::Stats;

/// Guides: deploying on a device, what the store guarantees, how it works
/// inside, migrating from 0.3 and 0.4, what to do about each error, and
/// the command that inspects stores.
///
/// Each is a page of this documentation, shipped with the crate (the
/// markdown files under `src/guide/`), so that its links work on docs.rs and
/// crates.io alike; their Rust examples are compiled as doctests.
pub mod guide {
    #[doc = include_str!("guide/deployment.md")]
    pub mod deployment {}
    #[doc = include_str!("guide/guarantees.md")]
    pub mod guarantees {}
    #[doc = include_str!("guide/architecture.md")]
    pub mod architecture {}
    #[doc = include_str!("guide/migrating.md")]
    pub mod migrating {}
    #[doc = include_str!("guide/troubleshooting.md")]
    pub mod troubleshooting {}
    #[doc = include_str!("guide/inspecting.md")]
    pub mod inspecting {}
}

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
