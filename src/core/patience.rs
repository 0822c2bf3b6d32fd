//! When a Paho call may still wait for Redis, and until when: the one rule
//! that both transports and the simulated Redis follow. Paho calls the store
//! from its own threads, so a wait is the MQTT client's latency:
//!
//! - a call waits at most `connect_timeout + io_timeout` in all, counted from
//!   its first wait, and each wait at most `io_timeout`;
//! - a call waits once: after a wait (a timeout, a failed connect, or for a
//!   transport that waits for earlier replies, any wait) it does not again;
//! - a Redis that did not answer in time is **hung**: no call waits for it
//!   (Paho's records wait in memory) until something shows that it answers
//!   again (a reply, a connection it closed, a probe), unless nothing could
//!   show it (no connection left to hear from), when one call tries again.
//!
//! Time comes in as an argument, so these rules are tested on virtual time.

use std::time::{Duration, Instant};

/// One transport's patience with Redis.
#[derive(Debug, Clone)]
// Only the Unix socket's transport waits against deadlines; redis-rs's TCP
// connection waits `io_timeout` per read.
#[cfg_attr(not(any(feature = "unix-socket", test)), allow(dead_code))]
pub(crate) struct Patience {
    connect_timeout: Duration,
    io_timeout: Duration,
    hung: bool,
    /// The current call has had its one wait.
    waited: bool,
    /// When the current call must be done waiting, from its first wait.
    deadline: Option<Instant>,
}

#[cfg_attr(not(any(feature = "unix-socket", test)), allow(dead_code))]
impl Patience {
    pub(crate) fn new(connect_timeout: Duration, io_timeout: Duration) -> Self {
        Self { connect_timeout, io_timeout, hung: false, waited: false, deadline: None }
    }

    /// A Paho call starts: it may wait again, within a deadline of its own.
    pub(crate) fn begin_call(&mut self) {
        self.waited = false;
        self.deadline = None;
    }

    /// Whether the current call may still wait for Redis; `can_hear`: if
    /// Redis is hung, something would tell when it answers again.
    pub(crate) fn may_wait(&self, can_hear: bool) -> bool {
        !self.waited && (!self.hung || !can_hear)
    }

    pub(crate) fn hung(&self) -> bool {
        self.hung
    }

    /// Until when a wait starting at `now` may last.
    pub(crate) fn wait_until(&mut self, now: Instant) -> Instant {
        now.checked_add(self.io_timeout)
            .map_or(self.call_deadline(now), |end| end.min(self.call_deadline(now)))
    }

    /// Until when a connect and its handshake starting at `now` may last.
    pub(crate) fn connect_until(&mut self, now: Instant) -> Instant {
        now.checked_add(self.connect_timeout)
            .map_or(self.call_deadline(now), |end| end.min(self.call_deadline(now)))
    }

    fn call_deadline(&mut self, now: Instant) -> Instant {
        let most = self.connect_timeout.saturating_add(self.io_timeout);
        *self.deadline.get_or_insert_with(|| now.checked_add(most).unwrap_or(now))
    }

    /// A wait ran out: Redis is hung, and this call waits no more.
    pub(crate) fn timed_out(&mut self) {
        self.hung = true;
        self.waited = true;
    }

    /// The call had its wait (or a connect failed): it waits no more.
    pub(crate) fn waited(&mut self) {
        self.waited = true;
    }

    /// Redis answered: calls may wait for it again.
    pub(crate) fn answered(&mut self) {
        self.hung = false;
    }
}
