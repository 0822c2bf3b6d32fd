//! The transport: runs the core's plans against Redis, one exchange at a time.
//!
//! A plan's commands are encoded into one reused buffer (`encode`), sent in
//! one write and answered in order; replies are parsed by redis-rs. The caller
//! waits for the replies: this transport is synchronous, over TCP or a Unix
//! socket. A connection that breaks is opened again once within the exchange,
//! and the exchange repeated (every command a plan holds is idempotent); a
//! timeout is not repeated, so a hung Redis costs one exchange one wait.
//!
//! Over a Unix socket (feature `unix-socket`) the store uses the pipelined
//! transport instead (`pipelined`): writes and removals return once written,
//! replies are taken in later. TCP stays synchronous: on loopback, data in
//! flight on a socket whose process is killed is lost (see `pipelined`).

mod encode;
#[cfg(feature = "unix-socket")]
mod frame;
mod link;
#[cfg(feature = "unix-socket")]
mod pipelined;
mod resp;
mod scripts;

pub(crate) use link::connect;

use std::sync::Arc;

use bytes::BytesMut;
use redis::{FromRedisValue, RedisError, RedisResult, Value};
use smallvec::SmallVec;

use crate::core::{Command, Exchange, Failure, Patience, Plan, Reply};
use crate::stats::Counters;
use crate::{Config, Error};
use link::Link;

/// Capacity of the command buffer when the store is created: a typical MQTT packet fits.
const BUFFER_INITIAL: usize = 1024;

/// A buffer grown beyond this by one large message is released afterwards,
/// so one 10 MB publish does not pin 10 MB for the life of the client.
const BUFFER_RETAINED_MAX: usize = 64 * 1024;

/// The store's connection to Redis and its command buffer.
pub(crate) struct Transport {
    #[cfg(feature = "unix-socket")]
    pipelined: Option<pipelined::Pipelined>,
    link: Link,
    counters: Arc<Counters>,
    packed: BytesMut,
    /// When a call may wait for Redis over TCP (the pipelined transport keeps its own).
    patience: Patience,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("generation", &self.link.generation())
            .field("buffer_capacity", &self.packed.capacity())
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(config: &Config, counters: Arc<Counters>) -> Self {
        #[cfg(not(feature = "unix-socket"))]
        let _ = config;
        Self {
            #[cfg(feature = "unix-socket")]
            pipelined: config.is_unix_socket().then(|| pipelined::Pipelined::new(Arc::clone(&counters))),
            link: Link::new(Arc::clone(&counters)),
            counters,
            packed: BytesMut::with_capacity(BUFFER_INITIAL),
            patience: Patience::new(config.connect_timeout(), config.io_timeout()),
        }
    }

    /// How many connections have been opened so far.
    pub(crate) fn generation(&self) -> u64 {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &self.pipelined {
            return pipelined.generation();
        }
        self.link.generation()
    }

    /// Drops the connection; the next exchange reconnects.
    pub(crate) fn disconnect(&mut self) {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &mut self.pipelined {
            pipelined.disconnect();
        }
        self.link.disconnect();
    }

    /// Starts a Paho call: its first exchange may wait for Redis.
    pub(crate) fn begin_call(&mut self) {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &mut self.pipelined {
            pipelined.begin_call();
        }
        self.patience.begin_call();
        self.link.hear(&mut self.patience);
    }

    /// Whether a follow-up exchange may still wait for Redis in this call:
    /// a hung or absent Redis costs a call one wait, not one per exchange.
    pub(crate) fn may_wait(&self) -> bool {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &self.pipelined {
            return pipelined.may_wait();
        }
        // While hung, the probe tells when Redis answers again.
        self.patience.may_wait(true)
    }

    /// Replies to plans that were sent unanswered, oldest first (only the
    /// pipelined transport sends so).
    pub(crate) fn replies(&mut self) -> SmallVec<[Result<(), RedisError>; 4]> {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &mut self.pipelined {
            return pipelined.replies();
        }
        SmallVec::new()
    }

    /// Waits, at most once, for the replies still due (before `close`).
    pub(crate) fn settle(&mut self, config: &Config) {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &mut self.pipelined {
            pipelined.settle(config);
        }
        #[cfg(not(feature = "unix-socket"))]
        let _ = config;
    }

    /// Sends `plan` and reads one reply per command (or, pipelined, returns
    /// once a write is written).
    pub(crate) fn run(&mut self, config: &Config, plan: &Plan<'_>) -> Exchange {
        #[cfg(feature = "unix-socket")]
        if let Some(pipelined) = &mut self.pipelined {
            return pipelined.run(config, plan);
        }
        self.packed.clear();
        // Over TCP a write that removes fields stays the script (no transactions).
        encode::encode(plan, false, &mut self.packed);
        let name = encode::first_name(plan, false);
        let packed = &self.packed;
        let exchanged =
            self.link.run(config, &mut self.patience, name, plan.hash, |conn| exchange(conn, packed, plan));
        if self.packed.capacity() > BUFFER_RETAINED_MAX {
            self.packed = BytesMut::with_capacity(BUFFER_INITIAL);
        }
        let generation = self.link.generation();
        match exchanged {
            Ok(replies) => {
                for reply in &replies {
                    match reply {
                        Ok(Reply::Value(Some(value))) => self.counters.add_bytes_read(value.len()),
                        Ok(Reply::Entries(entries)) => {
                            let bytes =
                                entries.iter().map(|(_, value)| value.len()).fold(0, usize::saturating_add);
                            self.counters.add_bytes_read(bytes);
                        }
                        _ => {}
                    }
                }
                Exchange { replies, failure: None, generation, sent: false }
            }
            Err(error) => {
                // Sent but unanswered commands may still run; a connect
                // failure sent nothing.
                let may_run_late = !matches!(error, Error::Connect { .. });
                self.patience.gave_up();
                Exchange {
                    replies: SmallVec::new(),
                    failure: Some(Failure { error, may_run_late }),
                    generation,
                    sent: false,
                }
            }
        }
    }
}

type Replies = SmallVec<[Result<Reply, RedisError>; 2]>;

/// Sends the commands in `packed` in one write and reads one reply per
/// command. An error reply is returned in its slot; an I/O error or a timeout
/// fails the whole exchange (the connection is then dropped).
fn exchange(conn: &mut redis::Connection, packed: &[u8], plan: &Plan<'_>) -> RedisResult<Replies> {
    let replies = send_and_read(conn, packed, plan)?;
    let unknown_script =
        |reply: &Result<Reply, RedisError>| matches!(reply, Err(e) if e.code() == Some("NOSCRIPT"));
    if replies.iter().any(unknown_script) {
        // Nothing ran of the refused scripts, and the rest is idempotent.
        scripts::load(conn)?;
        return send_and_read(conn, packed, plan);
    }
    Ok(replies)
}

fn send_and_read(conn: &mut redis::Connection, packed: &[u8], plan: &Plan<'_>) -> RedisResult<Replies> {
    conn.send_packed_command(packed)?;
    let mut replies = Replies::new();
    for command in &plan.commands {
        let value = match conn.recv_response() {
            Ok(value) => value.extract_error(),
            Err(error) if is_reply_error(&error) => Err(error),
            Err(error) => return Err(error),
        };
        replies.push(value.and_then(|value| parse(command, value)));
    }
    Ok(replies)
}

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
