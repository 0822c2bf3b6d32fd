//! The one Redis connection of a store, re-established once when it breaks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionLike, RedisError, RedisResult};

use crate::core::Patience;
use crate::stats::Counters;
use crate::{Config, Error};

/// A lazily opened, self-healing connection to Redis.
///
/// Every command this crate sends is idempotent (HSET of a whole value, HDEL,
/// DEL, reads), so repeating one after the connection broke mid-call cannot
/// change the outcome; that is what makes the single automatic retry safe.
pub(crate) struct Link {
    conn: Option<redis::Connection>,
    /// How many connections have been opened: a change tells the store that
    /// Redis may have restarted (and lost data) since it last looked.
    generation: u64,
    counters: Arc<Counters>,
    /// While Redis is hung (see `Patience`), a probe thread `PING`s it on
    /// connections of its own and sets this once it answers.
    probe: Option<Arc<AtomicBool>>,
}

/// How long the probe waits between two `PING`s of a hung Redis.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

impl Link {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self { conn: None, generation: 0, counters, probe: None }
    }

    /// The number of connections opened so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Drops the connection; the next command reconnects.
    pub(crate) fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Tells `patience` if the probe heard from a hung Redis.
    pub(crate) fn hear(&mut self, patience: &mut Patience) {
        if self.probe.as_ref().is_some_and(|answered| answered.load(Ordering::Acquire)) {
            self.probe = None;
            patience.answered();
        }
    }

    /// Runs `command` on the connection, reconnecting once if the connection
    /// turns out to be broken. A timeout is not retried: a hung Redis must cost
    /// the caller one `io_timeout`, not two.
    pub(crate) fn run<T>(
        &mut self,
        config: &Config,
        patience: &mut Patience,
        name: &'static str,
        hash: &str,
        mut command: impl FnMut(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let fail = |source: RedisError| Error::command(name, hash, source);
        self.hear(patience);
        if patience.hung() {
            // Nothing is sent: the probe has not heard from Redis yet.
            let source =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis has not answered since a timeout");
            return Err(Error::connect(config.address(), source.into()));
        }
        let conn = self.connected(config, patience)?;
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
            self.probe(config, patience);
            return Err(fail(error));
        }
        log::info!("redis persistence: connection lost during {name} on `{hash}` ({error}); reconnecting");
        let conn = self.connected(config, patience)?;
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
    fn probe(&mut self, config: &Config, patience: &mut Patience) {
        patience.timed_out();
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
            Err(_) => patience.answered(),
        }
    }

    /// The connection, opened now if there is none.
    pub(crate) fn connected(
        &mut self,
        config: &Config,
        patience: &mut Patience,
    ) -> Result<&mut redis::Connection, Error> {
        if self.conn.is_none() {
            let conn = match connect(config) {
                Ok(conn) => conn,
                Err(error) => {
                    if matches!(error, Error::Connect { .. }) && error.is_timeout() {
                        self.counters.add_timeout();
                        self.probe(config, patience);
                    }
                    return Err(error);
                }
            };
            if self.generation > 0 {
                self.counters.add_reconnect();
            }
            self.generation = self.generation.wrapping_add(1);
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(Error::NotOpen)
    }
}

/// Whether `conn` can no longer be trusted after `error`: it broke, or a late
/// reply to the failed command could be read as the answer to the next one.
fn unusable_after(error: &RedisError, conn: &redis::Connection) -> bool {
    !conn.is_open() || error.is_timeout() || error.is_io_error() || error.is_connection_dropped()
}

/// A new connection to the Redis of `config`, with its timeouts set.
pub(crate) fn connect(config: &Config) -> Result<redis::Connection, Error> {
    let connect_error = |source: RedisError| Error::connect(config.address(), source);
    let client =
        redis::Client::open(config.connection_info().map_err(connect_error)?).map_err(connect_error)?;
    let conn = client.get_connection_with_timeout(config.connect_timeout()).map_err(connect_error)?;
    conn.set_read_timeout(Some(config.io_timeout())).map_err(connect_error)?;
    conn.set_write_timeout(Some(config.io_timeout())).map_err(connect_error)?;
    Ok(conn)
}
