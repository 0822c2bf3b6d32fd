//! The transports: run the core's plans against Redis. Each is a thin
//! driver of one kind of connection; both encode a plan into one reused
//! buffer (`encode`, which alone decides how each command goes to Redis),
//! send it in one write, and follow one rule for when a call may wait
//! (`crate::core::Patience`).
//!
//! - `tcp`: synchronous, over TCP (and TLS): each exchange waits for its
//!   replies; on loopback, data in flight on a socket whose process is
//!   killed is lost.
//! - `pipelined` (feature `unix-socket`): writes and removals return once
//!   written to the Unix socket, which Redis reads even if the writer dies;
//!   replies are taken in at later calls, without a thread.

mod encode;
#[cfg(feature = "unix-socket")]
mod frame;
#[cfg(feature = "unix-socket")]
mod pipelined;
mod resp;
mod scripts;
mod tcp;

pub(crate) use tcp::connect;

use std::sync::Arc;

use redis::{FromRedisValue, RedisError, RedisResult, Value};
use smallvec::SmallVec;

use crate::core::{Command, Exchange, Plan, Reply};
use crate::stats::Counters;
use crate::Config;

/// Asked before a new connection, other than the first, is used: Redis may
/// have restarted and lost the store's lease meanwhile, and another process
/// taken it, so the lease is confirmed before anything is written on it.
/// An error fails the exchange as a connect failure (nothing was sent).
pub(crate) type Gate = Arc<dyn Fn() -> Result<(), crate::Error> + Send + Sync>;

/// Capacity of the command buffer when the store is created: a typical MQTT packet fits.
const BUFFER_INITIAL: usize = 1024;

/// A buffer grown beyond this by one large message is released afterwards,
/// so one 10 MB publish does not pin 10 MB for the life of the client.
const BUFFER_RETAINED_MAX: usize = 64 * 1024;

/// The store's connection to Redis, of the kind its URL names.
#[derive(Debug)]
// One per store, made once and never moved in a loop: the sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transport {
    Tcp(tcp::Tcp),
    #[cfg(feature = "unix-socket")]
    Unix(pipelined::Pipelined),
}

impl Transport {
    pub(crate) fn new(config: &Config, counters: Arc<Counters>) -> Self {
        #[cfg(feature = "unix-socket")]
        if config.is_unix_socket() {
            return Self::Unix(pipelined::Pipelined::new(config, counters));
        }
        Self::Tcp(tcp::Tcp::new(config, counters))
    }

    /// Sets what a reconnect must pass before it is used (see [`Gate`]).
    pub(crate) fn set_gate(&mut self, gate: Option<Gate>) {
        match self {
            Self::Tcp(tcp) => tcp.gate = gate,
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.gate = gate,
        }
    }

    /// How many connections have been opened so far.
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Self::Tcp(tcp) => tcp.generation(),
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.generation(),
        }
    }

    /// Drops the connection; the next exchange reconnects.
    pub(crate) fn disconnect(&mut self) {
        match self {
            Self::Tcp(tcp) => tcp.disconnect(),
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.disconnect(),
        }
    }

    /// Starts a Paho call: it may wait for Redis once.
    pub(crate) fn begin_call(&mut self) {
        match self {
            Self::Tcp(tcp) => tcp.begin_call(),
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.begin_call(),
        }
    }

    /// Whether this call may still wait for Redis (see `Patience`).
    pub(crate) fn may_wait(&self) -> bool {
        match self {
            Self::Tcp(tcp) => tcp.may_wait(),
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.may_wait(),
        }
    }

    /// Replies to plans sent unanswered, oldest first (only over the Unix socket).
    pub(crate) fn replies(&mut self) -> SmallVec<[Result<(), RedisError>; 4]> {
        match self {
            Self::Tcp(_) => SmallVec::new(),
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.replies(),
        }
    }

    /// Waits, at most once, for the replies still due (before `close`).
    pub(crate) fn settle(&mut self, config: &Config) {
        match self {
            Self::Tcp(_) => {}
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.settle(config),
        }
        #[cfg(not(feature = "unix-socket"))]
        let _ = config;
    }

    /// Sends `plan` and reads one reply per command (or, over the Unix
    /// socket, returns once a write or removal is written).
    pub(crate) fn run(&mut self, config: &Config, plan: &Plan<'_>) -> Exchange {
        match self {
            Self::Tcp(tcp) => tcp.run(config, plan),
            #[cfg(feature = "unix-socket")]
            Self::Unix(unix) => unix.run(config, plan),
        }
    }
}

/// One reply per command of a plan.
type Replies = SmallVec<[Result<Reply, RedisError>; 2]>;

/// The reply to `command`, parsed by redis-rs.
fn parse(command: &Command<'_>, value: Value) -> RedisResult<Reply> {
    Ok(match command {
        Command::ReadAll => Reply::Entries(FromRedisValue::from_redis_value(value)?),
        Command::KeyType => Reply::Type(FromRedisValue::from_redis_value(value)?),
        Command::Read(_) => Reply::Value(FromRedisValue::from_redis_value(value)?),
        Command::ListFields => Reply::Fields(FromRedisValue::from_redis_value(value)?),
        _ => Reply::Done,
    })
}

/// Whether `error` is Redis's answer to a command, after which the connection
/// still reads in step.
fn is_reply_error(error: &RedisError) -> bool {
    !(error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error())
}
