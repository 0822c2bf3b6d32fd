//! The synchronous transport, over TCP (and TLS): each exchange waits for
//! its replies, read by redis-rs's connection. On loopback, data in flight on
//! a socket whose process is killed is reset and lost, so nothing is sent
//! ahead here (see `pipelined` for the Unix socket, where it is not).
//!
//! A connection that breaks is opened again once within the exchange, and
//! the exchange repeated (every command a plan holds is idempotent); a
//! timeout is not repeated, and marks Redis hung (`Patience`) until a probe
//! thread's `PING` on connections of its own is answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use redis::{ConnectionLike, RedisError, RedisResult};
use smallvec::SmallVec;

use super::{encode, parse, scripts, Replies};
use crate::core::{Exchange, Failure, Patience, Plan, Reply};
use crate::stats::Counters;
use crate::{Config, Error};

/// A lazily opened, self-healing connection to Redis, and its command buffer.
///
/// Every command this crate sends is idempotent (HSET of a whole value, HDEL,
/// DEL, reads), so repeating one after the connection broke mid-call cannot
/// change the outcome; that is what makes the single automatic retry safe.
pub(crate) struct Tcp {
    conn: Option<redis::Connection>,
    packed: BytesMut,
    patience: Patience,
    /// How many connections have been opened: a change tells the store that
    /// Redis may have restarted (and lost data) since it last looked.
    generation: u64,
    counters: Arc<Counters>,
    /// While Redis is hung (see `Patience`), a probe thread `PING`s it on
    /// connections of its own and sets this once it answers.
    probe: Option<Arc<AtomicBool>>,
    /// What a reconnect must pass (the store's lease).
    pub(super) gate: Option<super::Gate>,
}

/// How long the probe waits between two `PING`s of a hung Redis.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp")
            .field("connected", &self.conn.is_some())
            .field("generation", &self.generation)
            .field("hung", &self.patience.hung())
            .finish_non_exhaustive()
    }
}

impl Tcp {
    pub(crate) fn new(config: &Config, counters: Arc<Counters>) -> Self {
        Self {
            conn: None,
            packed: BytesMut::with_capacity(super::BUFFER_INITIAL),
            patience: Patience::new(config.connect_timeout(), config.io_timeout()),
            generation: 0,
            counters,
            probe: None,
            gate: None,
        }
    }

    /// Starts a Paho call: it may wait once, unless Redis is hung.
    pub(crate) fn begin_call(&mut self) {
        self.patience.begin_call();
        if self.probe.as_ref().is_some_and(|answered| answered.load(Ordering::Acquire)) {
            self.probe = None;
            self.patience.answered();
        }
    }

    pub(crate) fn may_wait(&self) -> bool {
        // While hung, the probe tells when Redis answers again.
        self.patience.may_wait(true)
    }

    /// Sends `plan` and reads one reply per command.
    pub(crate) fn run(&mut self, config: &Config, plan: &Plan<'_>) -> Exchange {
        self.packed.clear();
        // Over TCP a write that removes fields stays the script (no transactions).
        encode::encode(plan, false, &mut self.packed);
        let command = encode::first_name(plan, false);
        let packed = std::mem::take(&mut self.packed);
        let exchanged =
            self.exchange_with_retry(config, command, plan.hash, |conn| exchange(conn, &packed, plan));
        self.packed = packed;
        if self.packed.capacity() > super::BUFFER_RETAINED_MAX {
            self.packed = BytesMut::with_capacity(super::BUFFER_INITIAL);
        }
        let generation = self.generation;
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
                Exchange { replies, failure: None, generation, sent: false, command }
            }
            Err(error) => {
                // Sent but unanswered commands may still run; a connect
                // failure (or a reconnect the lease did not let through) sent nothing.
                let may_run_late = !matches!(error, Error::Connect { .. } | Error::Fenced { .. });
                self.patience.waited();
                let failure = Some(Failure { error, may_run_late });
                Exchange { replies: SmallVec::new(), failure, generation, sent: false, command }
            }
        }
    }

    /// The number of connections opened so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Drops the connection; the next command reconnects.
    pub(crate) fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Runs `command` on the connection, reconnecting once if the connection
    /// turns out to be broken. A timeout is not retried: a hung Redis must cost
    /// the caller one `io_timeout`, not two.
    fn exchange_with_retry<T>(
        &mut self,
        config: &Config,
        name: &'static str,
        hash: &str,
        mut command: impl FnMut(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let fail = |source: RedisError| Error::command(name, hash, source);
        if self.patience.hung() {
            // Nothing is sent: the probe has not heard from Redis yet.
            let source =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis has not answered since a timeout");
            return Err(Error::connect(config.address(), source.into()));
        }
        let conn = self.connected(config)?;
        let error = match command(conn) {
            Ok(value) => {
                self.counters.add_round_trip();
                return Ok(value);
            }
            Err(error) if !unusable_after(&error, conn) => {
                self.counters.add_round_trip();
                return Err(fail(error)); // an error reply
            }
            Err(error) => error,
        };
        self.conn = None;
        if error.is_timeout() {
            // A hung Redis would only time out again; the next call that finds
            // it answering reconnects.
            self.counters.add_timeout();
            self.probe(config);
            return Err(fail(error));
        }
        log::info!("redis persistence: connection lost during {name} on `{hash}` ({error}); reconnecting");
        let conn = self.connected(config)?;
        match command(conn) {
            Ok(value) => {
                self.counters.add_round_trip();
                log::info!("redis persistence: reconnected to {}", config.address());
                Ok(value)
            }
            Err(error) => {
                if unusable_after(&error, conn) {
                    self.conn = None;
                } else {
                    self.counters.add_round_trip();
                }
                Err(fail(error))
            }
        }
    }

    /// Marks Redis hung and starts a thread that `PING`s it until it answers.
    fn probe(&mut self, config: &Config) {
        self.patience.timed_out();
        if self.probe.is_some() {
            return;
        }
        log::warn!(
            "redis persistence: Redis at {} did not answer within {:?}; records wait in memory until it does",
            config.address(),
            config.io_timeout()
        );
        let answered = Arc::new(AtomicBool::new(false));
        let heard = Arc::clone(&answered);
        let config = config.clone();
        let spawned =
            std::thread::Builder::new().name("redis-persistence-probe".to_owned()).spawn(move || loop {
                std::thread::sleep(PROBE_INTERVAL);
                let pinged = connect(&config)
                    .and_then(|mut conn| {
                        redis::cmd("PING")
                            .query::<String>(&mut conn)
                            .map_err(|source| Error::connect(config.address(), source))
                    })
                    .is_ok();
                if pinged {
                    log::info!("redis persistence: Redis at {} answers again", config.address());
                    heard.store(true, Ordering::Release);
                    return;
                }
            });
        match spawned {
            Ok(_) => self.probe = Some(answered),
            // No probe: do not stop waiting for Redis, or nothing would clear it.
            Err(_) => self.patience.answered(),
        }
    }

    /// The connection, opened now if there is none.
    fn connected(&mut self, config: &Config) -> Result<&mut redis::Connection, Error> {
        if self.conn.is_none() {
            let conn = match connect(config) {
                Ok(conn) => conn,
                Err(error) => {
                    if matches!(error, Error::Connect { .. }) && error.is_timeout() {
                        self.counters.add_timeout();
                        self.probe(config);
                    }
                    return Err(error);
                }
            };
            if self.generation > 0 {
                if let Some(gate) = &self.gate {
                    gate()?;
                }
                self.counters.add_reconnect();
            }
            self.generation = self.generation.wrapping_add(1);
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(Error::NotOpen)
    }
}

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
            Err(error) if super::is_reply_error(&error) => Err(error),
            Err(error) => return Err(error),
        };
        replies.push(value.and_then(|value| parse(command, value)));
    }
    Ok(replies)
}

/// Whether `conn` can no longer be trusted after `error`: it broke, or a late
/// reply to the failed command could be read as the answer to the next one.
fn unusable_after(error: &RedisError, conn: &redis::Connection) -> bool {
    !conn.is_open() || error.is_timeout() || error.is_io_error() || error.is_connection_dropped()
}

/// A new connection to the Redis of `config`, with its timeouts set.
pub(crate) fn connect(config: &Config) -> Result<redis::Connection, Error> {
    let connect_error = |source: RedisError| Error::connect(config.address(), source);
    // redis-rs connects to a Unix socket without a timeout: with Redis hung
    // and its accept backlog full, that blocks for ever. A bounded connect
    // first says whether Redis accepts connections at all.
    #[cfg(feature = "unix-socket")]
    if let Some(path) = config.unix_socket() {
        super::pipelined::connect_unix(path, config.connect_timeout())
            .map_err(|e| connect_error(e.into()))?;
    }
    let client =
        redis::Client::open(config.connection_info().map_err(connect_error)?).map_err(connect_error)?;
    let conn = client.get_connection_with_timeout(config.connect_timeout()).map_err(connect_error)?;
    conn.set_read_timeout(Some(config.io_timeout())).map_err(connect_error)?;
    conn.set_write_timeout(Some(config.io_timeout())).map_err(connect_error)?;
    Ok(conn)
}
