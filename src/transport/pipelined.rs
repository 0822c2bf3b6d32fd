//! The write-behind transport over a Unix socket: writes and removals are
//! written to the socket and the call returns; Redis's replies are read
//! without waiting at the start of the next call and taken in then.
//!
//! Why this is safe over a Unix socket and not over TCP (both measured): bytes
//! whose `write()` returned are in the kernel's buffer on Redis's side of the
//! socket, and Redis reads them even if the writer is SIGKILLed right after
//! (5,000 of 5,000 pipelined `HSET`s with no reply read reached Redis); over
//! TCP loopback, a socket closed with unread data is reset and what was in
//! flight is dropped (157 of 5,000 lost). So a record is as durable as Redis
//! once written here; the reply only says whether Redis accepted it, and a
//! refusal is handled like an unwritten record (kept in memory, written again).
//!
//! No thread reads the replies: each call starts with one read that does not
//! wait (the socket is non-blocking then), into one reused buffer, and takes
//! in the complete replies found there (`frame` finds where each ends; a
//! reply cut short waits for the next read). A call waits only when it must:
//! the outstanding window is full, an exchange needs its replies, `close`
//! settles, the handshake, or a connection given up on is drained; each wait
//! is a blocking read bounded by the socket's read timeout, set to what is
//! left of the wait's deadline. No thread wakes per reply.
//!
//! Written by hand because redis-rs's connection reads each reply in the
//! caller's thread, waiting for it; what is left to redis-rs is what it does
//! well: the URL and its settings, the RESP parser (`redis::parse_redis_value`,
//! on complete replies) and reply conversion. The socket is opened with
//! `socket2` so that the connect is bounded too (redis-rs connects Unix
//! sockets with a blocking `connect`, which waits as long as Redis's accept
//! backlog is full).
//!
//! A write that also removes fields goes as `MULTI`, `HSET`, `HDEL`, `EXEC`
//! when Redis allows transactions (checked in the handshake), instead of the
//! write-and-remove script: all or nothing too, and less of Redis's time (see
//! `encode::Wire`). Its four replies answer one command: the first refusal
//! among them (a command refused when queued, `EXECABORT`, or an error in
//! `EXEC`'s array) is its refusal, else `EXEC`'s answer confirms it.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redis::{RedisError, Value};
use smallvec::SmallVec;

use super::encode::{self, Wire};
use super::frame::{self, Frame, Scan, Scanned};
use super::{parse, resp, scripts};
use crate::core::{Command, Exchange, Failure, Patience, Plan, Reply};
use crate::stats::Counters;
use crate::{Config, Error};

/// Most commands written and not answered yet; beyond, a call waits for replies.
const MAX_OUTSTANDING_COMMANDS: usize = 256;
/// Most bytes written and not answered yet, counting what the kernel charges
/// per write (`WRITE_OVERHEAD`). When the writer dies, Redis runs what its
/// next read takes (16 KiB, `PROTO_IOBUF_LEN`), then fails to write the
/// replies and drops the rest (measured by review: with Redis stopped, 10 of
/// 40 2-KB puts reached it after the writer was killed). So what is
/// outstanding must fit in one read for all of it to be durable; a larger
/// single command goes out alone, after everything before it was answered.
const MAX_OUTSTANDING_BYTES: usize = 15 * 1024;
/// What the kernel charges a Unix socket's send buffer per write, besides the
/// bytes (about 770 measured), rounded up.
const WRITE_OVERHEAD: usize = 1024;
/// The most one `write` takes (see `Connection::write_by`), at most: a Unix
/// socket's write is allocated (and waited for) in pieces of up to half the
/// send buffer less 64 bytes (`unix_stream_sendmsg`), so a smaller buffer
/// than the default 208 KiB makes the chunk smaller. Larger than nearly
/// every record.
const WRITE_CHUNK_MAX: usize = 16 * 1024;
/// The least chunk, whatever the send buffer says.
const WRITE_CHUNK_MIN: usize = 1024;
/// How often a connect to a Redis whose accept backlog is full is tried again.
const CONNECT_RETRY: Duration = Duration::from_millis(5);
/// The reply buffer of a new connection: 256 replies to writes fit.
const READ_BUFFER_INITIAL: usize = 4 * 1024;
/// The least room a read is given; the buffer grows when it has less.
const READ_ROOM_MIN: usize = 1024;

/// Replies to plans sent unanswered, as the core takes them.
pub(crate) type Confirmations = SmallVec<[Result<(), RedisError>; 4]>;

/// What running a plan came to: its replies, `None` when sent unanswered, or
/// why not (and whether what was sent may still run).
type Outcome = Result<Option<SmallVec<[Result<Reply, RedisError>; 2]>>, (Error, bool)>;

/// A command sent whose replies have not all come, in `Pipelined::outstanding`.
struct Sent {
    /// What it counts in `outstanding_bytes`.
    bytes: usize,
    /// Its replies still due: one per command on the wire (4 for `MULTI`/`EXEC`).
    replies: usize,
    /// Whether the core waits for its answer (a plan sent behind), or nobody
    /// does (what was left of an exchange that timed out).
    confirmed: bool,
    /// Its last reply is `EXEC`'s, which is a refusal when null.
    exec: bool,
    /// The first of its replies that refused it.
    refusal: Option<RedisError>,
}

impl Sent {
    fn new(bytes: usize, wire: Option<Wire>, confirmed: bool) -> Self {
        let replies = wire.map_or(1, Wire::replies);
        Self { bytes, replies, confirmed, exec: wire == Some(Wire::Transaction), refusal: None }
    }
}

/// What the next reply on a connection came to.
enum Next {
    /// A complete reply, at `start` in the connection's buffer.
    Reply(usize, Frame),
    /// None within the wait (or, not waiting, none yet).
    Nothing,
    /// The connection closed, broke, or sent what cannot be read.
    Lost(std::io::Error),
}

/// One connection, and the replies read off it and not taken in yet.
struct Connection {
    stream: UnixStream,
    /// Bytes read: `input[parsed..filled]` are not taken in yet, and may
    /// end inside a reply. Reused; its length is its capacity.
    input: Vec<u8>,
    parsed: usize,
    filled: usize,
    /// Where the scan of the reply at `parsed` stands.
    scan: Scan,
    /// Whether the socket is non-blocking now (for the read at a call's
    /// start and the writes that follow; a wait makes it blocking).
    nonblocking: bool,
    /// The socket's read timeout now.
    read_timeout: Option<Duration>,
    /// The socket's write timeout now (a system call to change).
    write_timeout: Duration,
    /// The most one `write` takes: see `write_by`.
    write_chunk: usize,
}

impl Connection {
    fn new(stream: UnixStream, write_timeout: Duration, write_chunk: usize) -> Self {
        Self {
            stream,
            input: vec![0; READ_BUFFER_INITIAL],
            parsed: 0,
            filled: 0,
            scan: Scan::default(),
            nonblocking: false,
            read_timeout: None,
            write_timeout,
            write_chunk,
        }
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> std::io::Result<()> {
        if self.nonblocking != nonblocking {
            self.stream.set_nonblocking(nonblocking)?;
            self.nonblocking = nonblocking;
        }
        Ok(())
    }

    /// Writes all of `bytes` by `deadline`. The socket's timeout bounds each
    /// wait for room in the socket's buffer, not a `write`: one `write` of a
    /// large record to a Redis that reads slowly but steadily waits many
    /// times (measured: 16 MiB at 640 KiB/s took 25 s with a 200 ms
    /// timeout). So a `write` takes at most `write_chunk`, which the kernel
    /// allocates (and waits for) at once. A non-blocking socket is written
    /// without waiting until it is full, then made blocking.
    fn write_by(&mut self, mut bytes: &[u8], deadline: Instant, io_timeout: Duration) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "not written within the call's time",
                ));
            }
            // Only a call near its end changes the timeout (one more system call).
            let timeout = left.min(io_timeout);
            if !self.nonblocking && timeout != self.write_timeout {
                self.stream.set_write_timeout(Some(timeout))?;
                self.write_timeout = timeout;
            }
            let chunk = bytes.get(..self.write_chunk).unwrap_or(bytes);
            match (&self.stream).write(chunk) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => bytes = bytes.get(written..).unwrap_or_default(),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock && self.nonblocking => {
                    self.set_nonblocking(false)?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Reads what has arrived: without waiting (`deadline` `None`), or
    /// waiting until `deadline` for something. Returns whether it read
    /// anything; an error when the connection closed or broke.
    fn fill(&mut self, deadline: Option<Instant>) -> std::io::Result<bool> {
        self.make_room();
        loop {
            match deadline {
                None => self.set_nonblocking(true)?,
                Some(deadline) => {
                    self.set_nonblocking(false)?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    if self.read_timeout != Some(left) {
                        self.stream.set_read_timeout(Some(left))?;
                        self.read_timeout = Some(left);
                    }
                }
            }
            let room = self.input.get_mut(self.filled..).unwrap_or_default();
            match (&self.stream).read(room) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection",
                    ))
                }
                Ok(read) => {
                    self.filled = self.filled.saturating_add(read);
                    return Ok(true);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // Not waiting, or the timeout ran out (checked again above).
                    if deadline.is_none() {
                        return Ok(false);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Room for a read: what was taken in is dropped from the buffer, which
    /// grows if what is left (a long reply not complete yet) fills most of it.
    fn make_room(&mut self) {
        if self.parsed == self.filled {
            self.parsed = 0;
            self.filled = 0;
        }
        if self.input.len().saturating_sub(self.filled) >= READ_ROOM_MIN {
            return;
        }
        if self.parsed > 0 {
            self.input.copy_within(self.parsed..self.filled, 0);
            self.filled = self.filled.saturating_sub(self.parsed);
            self.parsed = 0;
        }
        if self.input.len().saturating_sub(self.filled) < READ_ROOM_MIN {
            let grown = self.input.len().saturating_mul(2).max(self.filled.saturating_add(READ_ROOM_MIN));
            self.input.resize(grown, 0);
        }
    }

    /// The next complete reply among the bytes read, without reading.
    fn buffered(&mut self) -> Next {
        let unread = self.input.get(self.parsed..self.filled).unwrap_or_default();
        match frame::scan(unread, &mut self.scan) {
            Scanned::Complete(frame) => {
                let start = self.parsed;
                self.parsed = start.saturating_add(frame.len);
                Next::Reply(start, frame)
            }
            Scanned::Partial => Next::Nothing,
            Scanned::Invalid => Next::Lost(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unreadable reply from Redis",
            )),
        }
    }

    /// The next reply, waiting until `deadline` for it.
    fn next_by(&mut self, deadline: Instant) -> Next {
        loop {
            match self.buffered() {
                Next::Nothing => {}
                next => return next,
            }
            match self.fill(Some(deadline)) {
                Ok(true) => {}
                Ok(false) => return Next::Nothing,
                Err(error) => return Next::Lost(error),
            }
        }
    }

    /// The bytes of the reply at `start`.
    fn reply(&self, start: usize, frame: Frame) -> &[u8] {
        self.input.get(start..start.saturating_add(frame.len)).unwrap_or_default()
    }

    /// The refusal the reply at `start` says, if any: an error reply, an
    /// error in an array (an `EXEC` whose command failed), or, when it is
    /// `EXEC`'s (`exec`), a null array (nothing ran).
    fn refusal(&self, start: usize, frame: Frame, exec: bool) -> Option<RedisError> {
        if frame.error {
            let parsed = redis::parse_redis_value(self.reply(start, frame)).and_then(Value::extract_error);
            return Some(parsed.err().unwrap_or_else(|| {
                io_error(std::io::ErrorKind::InvalidData, "an error reply redis-rs read as none")
            }));
        }
        (exec && frame.null_array)
            .then(|| io_error(std::io::ErrorKind::Other, "EXEC ran nothing (null reply)"))
    }

    /// A reply buffer grown by one large reply is released once it is read.
    fn shrink(&mut self) {
        if self.parsed == self.filled && self.input.len() > super::BUFFER_RETAINED_MAX {
            self.input = vec![0; READ_BUFFER_INITIAL];
            self.parsed = 0;
            self.filled = 0;
        }
    }
}

/// The pipelined transport.
pub(crate) struct Pipelined {
    conn: Option<Connection>,
    /// A connection given up on with commands unanswered: shut down for
    /// writing, so that Redis runs what it was sent and then closes it. No
    /// new connection is opened until it has, so that nothing sent on it can
    /// run after anything sent on the next one (such as the check of the
    /// hash after reconnecting).
    draining: Option<Connection>,
    generation: u64,
    counters: Arc<Counters>,
    packed: BytesMut,
    /// Whether `packed` was encoded with transactions (see `transactions`).
    packed_with_transactions: bool,
    /// The commands sent and not answered yet, oldest first.
    outstanding: VecDeque<Sent>,
    outstanding_bytes: usize,
    /// Replies taken off the connection and not yet given to the core.
    delivered: Confirmations,
    /// When a call may wait, and until when (a hung Redis is known to
    /// answer again from a reply, or from a drained connection's close).
    patience: Patience,
    /// A write was refused with `NOSCRIPT`: reconnect (which loads them) first.
    reload_scripts: bool,
    /// The connection (the last one, when none is open) may send writes that
    /// remove fields as `MULTI`/`EXEC`: Redis answered both in the handshake.
    transactions: bool,
    /// Whether the handshake asks Redis whether it allows transactions: not
    /// after a Redis that allowed `MULTI` and refused `EXEC` (the connection
    /// was then left in a transaction, and closed).
    probe_transactions: bool,
    /// What a reconnect must pass (the store's lease).
    pub(super) gate: Option<super::Gate>,
}

impl std::fmt::Debug for Pipelined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelined")
            .field("connected", &self.conn.is_some())
            .field("generation", &self.generation)
            .field("outstanding", &self.outstanding.len())
            .field("hung", &self.patience.hung())
            .field("transactions", &self.transactions)
            .finish_non_exhaustive()
    }
}

fn io_error(kind: std::io::ErrorKind, what: &'static str) -> RedisError {
    std::io::Error::new(kind, what).into()
}

impl Pipelined {
    pub(crate) fn new(config: &Config, counters: Arc<Counters>) -> Self {
        Self {
            conn: None,
            draining: None,
            generation: 0,
            counters,
            packed: BytesMut::with_capacity(super::BUFFER_INITIAL),
            packed_with_transactions: false,
            outstanding: VecDeque::new(),
            outstanding_bytes: 0,
            delivered: Confirmations::new(),
            patience: Patience::new(config.connect_timeout(), config.io_timeout()),
            reload_scripts: false,
            transactions: false,
            probe_transactions: true,
            gate: None,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts a call: takes in what Redis answered since the last one (one
    /// read, without waiting). With nothing unanswered there is nothing to
    /// read: a connection Redis closed meanwhile is found by the next write,
    /// which connects again (as after any broken write).
    pub(crate) fn begin_call(&mut self) {
        self.patience.begin_call();
        self.collect();
        if self.outstanding.is_empty() {
            return;
        }
        let Some(conn) = &mut self.conn else { return };
        match conn.fill(None) {
            Ok(true) => self.take_buffered(),
            Ok(false) => {}
            Err(_) => self.lost(),
        }
    }

    pub(crate) fn may_wait(&self) -> bool {
        // Hung with no connection left (a write timed out), nothing would
        // tell it answers again (unless Redis closes a connection it was
        // draining): a call may then try once more.
        self.patience.may_wait(self.conn.is_some() || self.draining.is_some())
    }

    /// The replies that came in since the last call, oldest first.
    pub(crate) fn replies(&mut self) -> Confirmations {
        self.collect();
        std::mem::take(&mut self.delivered)
    }

    /// Leaves the connection. One with commands unanswered is drained (see
    /// `draining`); any other is closed.
    pub(crate) fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.outstanding.is_empty() {
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            } else {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                self.draining = Some(conn);
            }
        }
        // Sent and never answered: their outcome is unknown; they are sent
        // again (every write is idempotent) once the core hears of it.
        while let Some(sent) = self.outstanding.pop_front() {
            self.outstanding_bytes = self.outstanding_bytes.saturating_sub(sent.bytes);
            if sent.confirmed {
                self.delivered
                    .push(Err(io_error(std::io::ErrorKind::ConnectionAborted, "connection closed")));
            }
        }
    }

    /// Waits (at most `io_timeout`, once) for every reply still due.
    pub(crate) fn settle(&mut self, config: &Config) {
        if self.may_wait() && !self.outstanding.is_empty() {
            // Its error is the next call's to meet: nothing here names a command.
            let _ = self.wait_for(config, 0, "", "");
        }
    }

    /// Takes in the replies already read, and sees whether a connection
    /// being drained has closed; reads nothing else.
    fn collect(&mut self) {
        self.drain(None);
        self.take_buffered();
    }

    /// Takes in every complete reply already read.
    fn take_buffered(&mut self) {
        loop {
            let Some(conn) = &mut self.conn else { return };
            match conn.buffered() {
                Next::Reply(start, frame) => self.take_in(start, frame),
                Next::Nothing => return,
                Next::Lost(_) => {
                    self.lost();
                    return;
                }
            }
        }
    }

    /// The connection closed, broke or cannot be read in step any more: what
    /// was read of it is taken in, and it is left (drained, if it has
    /// commands unanswered).
    fn lost(&mut self) {
        while let Some(conn) = &mut self.conn {
            match conn.buffered() {
                Next::Reply(start, frame) => self.take_in(start, frame),
                Next::Nothing | Next::Lost(_) => break,
            }
        }
        self.disconnect();
    }

    /// Discards what a connection being drained still answers (its commands
    /// were reported as aborted, and are sent again), until Redis closes it
    /// or, with a deadline, the deadline passes. Returns whether it is closed.
    fn drain(&mut self, deadline: Option<Instant>) -> bool {
        let Some(draining) = &mut self.draining else { return true };
        let closed = loop {
            draining.parsed = 0;
            draining.filled = 0;
            match draining.fill(deadline) {
                Ok(true) => {}
                Ok(false) => break false,
                Err(_) => break true,
            }
        };
        if closed {
            // Redis ran what it was sent and closed the connection: it answers.
            self.draining = None;
            self.patience.answered();
        }
        closed
    }

    /// Waits until at most `left` plans and `left_bytes` bytes are
    /// unanswered, or `io_timeout` passed. `name` is the command the caller
    /// waits to send (or to read the answer of), named in the error.
    fn wait_for(
        &mut self,
        config: &Config,
        left: usize,
        name: &'static str,
        hash: &str,
    ) -> Result<(), Error> {
        self.wait_until(config, left, usize::MAX, name, hash)
    }

    fn wait_until(
        &mut self,
        config: &Config,
        left: usize,
        left_bytes: usize,
        name: &'static str,
        hash: &str,
    ) -> Result<(), Error> {
        let deadline = self.patience.wait_until(Instant::now());
        self.patience.waited();
        while self.outstanding.len() > left || self.outstanding_bytes > left_bytes {
            let Some(conn) = &mut self.conn else { return Err(self.closed(config)) };
            match conn.next_by(deadline) {
                Next::Reply(start, frame) => self.take_in(start, frame),
                Next::Nothing => {
                    self.patience.timed_out();
                    self.counters.add_timeout();
                    log::warn!(
                        "redis persistence: Redis at {} has not answered for {:?}; records wait in memory \
                         until it does",
                        config.address(),
                        config.io_timeout()
                    );
                    let waited = io_error(
                        std::io::ErrorKind::TimedOut,
                        "no reply to earlier commands within io_timeout",
                    );
                    return Err(Error::command(name, hash, waited));
                }
                Next::Lost(_) => {
                    self.lost();
                    return Err(self.closed(config));
                }
            }
        }
        Ok(())
    }

    fn closed(&self, config: &Config) -> Error {
        Error::connect(
            config.address(),
            io_error(std::io::ErrorKind::ConnectionAborted, "the connection closed"),
        )
    }

    /// One reply off the connection, at `start` in its buffer: it answers
    /// the oldest command's next command on the wire.
    fn take_in(&mut self, start: usize, frame: Frame) {
        if self.patience.hung() {
            self.patience.answered();
            log::info!("redis persistence: Redis answers again");
        }
        let Some(sent) = self.outstanding.front_mut() else { return };
        sent.replies = sent.replies.saturating_sub(1);
        if sent.confirmed && sent.refusal.is_none() {
            if let Some(conn) = &self.conn {
                sent.refusal = conn.refusal(start, frame, sent.exec && sent.replies == 0);
            }
        }
        if sent.replies > 0 {
            return;
        }
        let Some(sent) = self.outstanding.pop_front() else { return };
        self.outstanding_bytes = self.outstanding_bytes.saturating_sub(sent.bytes);
        if sent.confirmed {
            let reply = sent.refusal.map_or(Ok(()), Err);
            if reply.as_ref().is_err_and(|error| error.code() == Some("NOSCRIPT")) {
                // Redis forgot the scripts (SCRIPT FLUSH): a new connection loads them.
                self.reload_scripts = true;
            }
            self.delivered.push(reply);
        }
    }

    /// Runs `plan`: a single write or removal is written and answered later;
    /// anything else waits for what is outstanding, then for its own replies.
    pub(crate) fn run(&mut self, config: &Config, plan: &Plan<'_>) -> Exchange {
        self.collect();
        let behind = matches!(plan.commands.as_slice(), [Command::Write { .. } | Command::Remove(_)]);
        let result = if behind { self.send_behind(config, plan) } else { self.exchange(config, plan) };
        let generation = self.generation;
        // As encoded for the connection it went out on.
        let command = encode::first_name(plan, self.packed_with_transactions);
        match result {
            Ok(Some(replies)) => Exchange { replies, failure: None, generation, sent: false, command },
            Ok(None) => Exchange { replies: SmallVec::new(), failure: None, generation, sent: true, command },
            Err((error, may_run_late)) => {
                self.patience.waited();
                let failure = Some(Failure { error, may_run_late });
                Exchange { replies: SmallVec::new(), failure, generation, sent: false, command }
            }
        }
    }

    /// Encodes `plan` into `packed`, as the connection may send it.
    fn encode(&mut self, plan: &Plan<'_>) {
        self.packed.clear();
        encode::encode(plan, self.transactions, &mut self.packed);
        self.packed_with_transactions = self.transactions;
    }

    fn send_behind(&mut self, config: &Config, plan: &Plan<'_>) -> Outcome {
        let name = encode::first_name(plan, self.transactions);
        if self.reload_scripts {
            self.reload_scripts = false;
            self.disconnect();
        }
        self.encode(plan);
        let bytes = self.packed.len().saturating_add(WRITE_OVERHEAD);
        // What is outstanding, with this, must fit in one read of Redis's
        // (see MAX_OUTSTANDING_BYTES); a command too large for that goes alone.
        let room = MAX_OUTSTANDING_BYTES.saturating_sub(bytes);
        let full = self.outstanding.len() >= MAX_OUTSTANDING_COMMANDS || self.outstanding_bytes > room;
        if full {
            if !self.may_wait() {
                // Nothing sent: the core keeps the records in memory.
                return Err((self.busy(name, plan), false));
            }
            self.wait_until(config, MAX_OUTSTANDING_COMMANDS.saturating_sub(1), room, name, plan.hash)
                .map_err(|error| (error, false))?;
        }
        self.write(config, name, plan)?;
        let wire = plan.commands.first().map(|command| Wire::of(command, plan.budget, self.transactions));
        self.outstanding.push_back(Sent::new(bytes, wire, true));
        self.outstanding_bytes = self.outstanding_bytes.saturating_add(bytes);
        self.shrink();
        Ok(None)
    }

    fn busy(&self, name: &'static str, plan: &Plan<'_>) -> Error {
        Error::command(
            name,
            plan.hash,
            io_error(std::io::ErrorKind::WouldBlock, "Redis has not answered what was sent"),
        )
    }

    /// Writes the encoded plan, connecting first (and once more if the
    /// connection turns out broken: every command is idempotent). A new
    /// connection that differs in allowing transactions encodes it again.
    fn write(&mut self, config: &Config, name: &'static str, plan: &Plan<'_>) -> Result<(), (Error, bool)> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.connect(config).map_err(|error| {
                    if matches!(error, Error::Connect { .. }) && error.is_timeout() {
                        self.counters.add_timeout();
                    }
                    (error, false)
                })?;
                if self.packed_with_transactions != self.transactions {
                    self.encode(plan);
                }
            }
            let deadline = self.patience.wait_until(Instant::now());
            let Some(conn) = &mut self.conn else { continue };
            match conn.write_by(&self.packed, deadline, config.io_timeout()) {
                Ok(()) => {
                    self.counters.add_round_trip();
                    return Ok(());
                }
                Err(error) => {
                    let timed_out =
                        matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
                    if timed_out {
                        self.counters.add_timeout();
                        self.patience.timed_out();
                        // Part of it may be in the socket: nobody waits for
                        // its reply, and the connection is drained, not cut.
                        self.outstanding.push_back(Sent::new(0, None, false));
                    }
                    self.disconnect();
                    if timed_out || attempt == 1 {
                        // Part of it may have gone out and run late.
                        let source = RedisError::from(error);
                        return Err((Error::command(name, plan.hash, source), true));
                    }
                    log::info!("redis persistence: connection lost during {name}; reconnecting");
                }
            }
        }
        Err((self.busy(name, plan), false))
    }

    /// A plan whose replies the caller needs: waits for what is outstanding,
    /// then for each command's replies.
    fn exchange(&mut self, config: &Config, plan: &Plan<'_>) -> Outcome {
        let name = encode::first_name(plan, self.transactions);
        if !self.outstanding.is_empty() {
            if !self.may_wait() {
                return Err((self.busy(name, plan), false));
            }
            self.wait_for(config, 0, name, plan.hash).map_err(|error| (error, false))?;
        }
        self.encode(plan);
        self.write(config, name, plan)?;
        let deadline = self.patience.wait_until(Instant::now());
        let mut replies = SmallVec::new();
        for (answered, command) in plan.commands.iter().enumerate() {
            let wire = Wire::of(command, plan.budget, self.transactions);
            let mut refusal = None;
            let mut value = None;
            for read in 0..wire.replies() {
                let Some(conn) = &mut self.conn else { return Err((self.closed(config), true)) };
                match conn.next_by(deadline) {
                    Next::Reply(start, frame) => {
                        let last = read.saturating_add(1) == wire.replies();
                        if refusal.is_none() {
                            refusal = conn.refusal(start, frame, last && wire == Wire::Transaction);
                        }
                        if last && refusal.is_none() {
                            value = Some(
                                redis::parse_redis_value(conn.reply(start, frame))
                                    .and_then(Value::extract_error)
                                    .and_then(|value| parse(command, value)),
                            );
                        }
                        self.patience.answered();
                    }
                    Next::Nothing => {
                        // The rest of its replies come when Redis resumes (which
                        // tells it answers again); nobody waits for them.
                        let mut rest = Sent::new(0, Some(wire), false);
                        rest.replies = wire.replies().saturating_sub(read);
                        self.outstanding.push_back(rest);
                        for later in plan.commands.iter().skip(answered.saturating_add(1)) {
                            let wire = Wire::of(later, plan.budget, self.transactions);
                            self.outstanding.push_back(Sent::new(0, Some(wire), false));
                        }
                        self.patience.timed_out();
                        self.counters.add_timeout();
                        let source = io_error(std::io::ErrorKind::TimedOut, "no reply within io_timeout");
                        return Err((Error::command(name, plan.hash, source), true));
                    }
                    Next::Lost(error) => {
                        self.disconnect();
                        return Err((Error::command(name, plan.hash, error.into()), true));
                    }
                }
            }
            let reply = match refusal {
                Some(refusal) => Err(refusal),
                None => value.unwrap_or(Ok(Reply::Done)),
            };
            if let Ok(Reply::Value(Some(value))) = &reply {
                self.counters.add_bytes_read(value.len());
            }
            if let Ok(Reply::Entries(entries)) = &reply {
                let bytes = entries.iter().map(|(_, value)| value.len()).fold(0, usize::saturating_add);
                self.counters.add_bytes_read(bytes);
            }
            replies.push(reply);
        }
        self.shrink();
        Ok(Some(replies))
    }

    fn shrink(&mut self) {
        if self.packed.capacity() > super::BUFFER_RETAINED_MAX {
            self.packed = BytesMut::with_capacity(super::BUFFER_INITIAL);
        }
        if let Some(conn) = &mut self.conn {
            conn.shrink();
        }
    }

    /// Opens the socket (bounded by `connect_timeout`), authenticates, selects
    /// the database, loads the scripts and asks whether Redis allows
    /// transactions (`MULTI` then `EXEC`, which run nothing).
    fn connect(&mut self, config: &Config) -> Result<(), Error> {
        let connect_error = |source: RedisError| Error::connect(config.address(), source);
        // The connect and the handshake share `connect_timeout`, within the call's deadline.
        let deadline = self.patience.connect_until(Instant::now());
        if self.draining.is_some() {
            // Hung, the drain is not waited for: the calls that follow see it end.
            if self.patience.hung() && !self.drain(Some(Instant::now())) {
                let busy = "Redis has not closed the connection given up on yet";
                // Not a timeout: nothing waited.
                return Err(connect_error(io_error(std::io::ErrorKind::ResourceBusy, busy)));
            }
            if !self.drain(Some(deadline)) {
                // Its close will tell that Redis answers: no call waits for it again.
                self.patience.timed_out();
                let waited = "Redis has not closed the connection given up on within connect_timeout";
                return Err(connect_error(io_error(std::io::ErrorKind::TimedOut, waited)));
            }
        }
        let info = config.connection_info().map_err(connect_error)?;
        let redis::ConnectionAddr::Unix(path) = info.addr() else {
            return Err(connect_error(io_error(
                std::io::ErrorKind::InvalidInput,
                "not a Unix socket address",
            )));
        };
        let left = |deadline: Instant| {
            let left = deadline.saturating_duration_since(Instant::now());
            (!left.is_zero()).then_some(left).ok_or_else(|| {
                connect_error(io_error(std::io::ErrorKind::TimedOut, "no answer within connect_timeout"))
            })
        };
        let stream = connect_unix(path, left(deadline)?).map_err(|e| connect_error(e.into()))?;
        let handshake_timeout = left(deadline)?;
        stream.set_write_timeout(Some(handshake_timeout)).map_err(|e| connect_error(e.into()))?;
        let send_buffer = socket2::SockRef::from(&stream).send_buffer_size().unwrap_or(0);
        let write_chunk = (send_buffer / 2).saturating_sub(64).clamp(WRITE_CHUNK_MIN, WRITE_CHUNK_MAX);
        let mut conn = Connection::new(stream, handshake_timeout, write_chunk);
        let settings = info.redis_settings();
        let mut handshake = BytesMut::new();
        let mut expected = 0;
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => command(&mut handshake, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => command(&mut handshake, &[b"AUTH", password.as_bytes()]),
            }
            expected += 1;
        }
        if settings.db() != 0 {
            command(&mut handshake, &[b"SELECT", settings.db().to_string().as_bytes()]);
            expected += 1;
        }
        // Loaded now, so that a script refused late as unknown cannot happen
        // on this connection (short of a SCRIPT FLUSH).
        for source in scripts::SOURCES {
            command(&mut handshake, &[b"SCRIPT", b"LOAD", source.as_bytes()]);
            expected += 1;
        }
        let probe = self.probe_transactions;
        if probe {
            command(&mut handshake, &[b"MULTI"]);
            command(&mut handshake, &[b"EXEC"]);
        }
        (&conn.stream).write_all(&handshake).map_err(|e| connect_error(e.into()))?;
        let answer = |conn: &mut Connection| match conn.next_by(deadline) {
            Next::Reply(start, frame) => Ok(conn.refusal(start, frame, true)),
            Next::Nothing => {
                Err(connect_error(io_error(std::io::ErrorKind::TimedOut, "no answer within connect_timeout")))
            }
            Next::Lost(error) => Err(connect_error(error.into())),
        };
        for _ in 0..expected {
            if let Some(refusal) = answer(&mut conn)? {
                return Err(connect_error(refusal));
            }
        }
        let transactions = if probe {
            match (answer(&mut conn)?, answer(&mut conn)?) {
                (None, None) => true,
                (Some(refusal), _) => {
                    log::debug!(
                        "redis persistence: MULTI refused ({refusal}): writes that remove fields run as a script"
                    );
                    false
                }
                (None, Some(refusal)) => {
                    // The connection is left in a transaction: not to be used.
                    self.probe_transactions = false;
                    return Err(connect_error(refusal));
                }
            }
        } else {
            false
        };
        conn.stream.set_write_timeout(Some(config.io_timeout())).map_err(|e| connect_error(e.into()))?;
        conn.write_timeout = config.io_timeout();
        if self.generation > 0 {
            if let Some(gate) = &self.gate {
                gate()?;
            }
            self.counters.add_reconnect();
        }
        self.generation = self.generation.wrapping_add(1);
        self.transactions = transactions;
        self.conn = Some(conn);
        // It answered the handshake.
        self.patience.answered();
        Ok(())
    }
}

fn command(buf: &mut BytesMut, args: &[&[u8]]) {
    resp::begin(buf, args.len());
    for argument in args {
        resp::arg(buf, argument);
    }
}

/// Connects to a Unix socket within `timeout`: a connect to a socket whose
/// accept backlog is full fails at once with `EAGAIN` when non-blocking, and
/// is tried again until the deadline.
pub(crate) fn connect_unix(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let address = socket2::SockAddr::unix(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        match socket.connect(&address) {
            Ok(()) => {
                socket.set_nonblocking(false)?;
                return Ok(socket.into());
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(CONNECT_RETRY);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out (accept backlog full)",
                ))
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::core::{CacheLimits, Table};

    /// A Redis that reads slowly: it answers the handshake, then takes 32 KiB
    /// every 50 ms. Writing 16 MiB to it takes 25 s, each `write` making some
    /// progress within `io_timeout`; the call must give up by its deadline,
    /// `connect_timeout + io_timeout`, as with a hung Redis.
    #[test]
    fn a_slow_reader_costs_a_call_no_more_than_a_hung_redis() {
        let (dir, listener) = fake_redis();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let server = std::thread::spawn(move || {
            let mut stream = accept_answering_handshake(&listener);
            let mut chunk = vec![0u8; 32 * 1024];
            while !stopped.load(Ordering::Relaxed) {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let config = config_of(&dir);
        let counters = Arc::new(Counters::new());
        let mut transport = Pipelined::new(&config, Arc::clone(&counters));
        let value = vec![7u8; 16 << 20];
        let parts = [value.as_slice()];
        let table = owing("s-1", &parts);
        let plan = write(&table);

        transport.begin_call();
        let started = Instant::now();
        let exchange = transport.run(&config, &plan);
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        transport.disconnect();
        let _ = server.join();

        let shown = format!("{exchange:?} after {took:?}");
        let failure = exchange.failure.unwrap_or_else(|| panic!("the write did not complete: {shown}"));
        assert!(failure.error.is_timeout(), "{:?}", failure.error);
        assert!(failure.may_run_late, "part of it was written");
        assert_eq!(counters.snapshot().timeouts, 1);
        // 5 s is 12 times the deadline (400 ms), and 1/5 of what writing it all takes.
        assert!(took < Duration::from_secs(5), "the call took {took:?}");
    }

    /// After a write timed out on a connection with a command still
    /// unanswered, no new connection is opened before Redis has closed the
    /// old one: otherwise what it still had to run could run after the new
    /// connection's commands. A fake Redis answers nothing on the first
    /// connection until told, then reads it to the end, and checks that no
    /// second connection is waiting to be accepted before it closes it.
    #[test]
    fn a_connection_given_up_on_is_closed_by_redis_before_the_next_opens() {
        let (dir, listener) = fake_redis();
        let (drain_now, drain_signal) = mpsc::channel::<()>();
        let (closed_first, first_closed) = mpsc::channel::<bool>();
        let server = std::thread::spawn(move || {
            let mut first = accept_answering_handshake(&listener);
            drain_signal.recv().expect("told to drain");
            let mut rest = Vec::new();
            let _ = first.read_to_end(&mut rest); // until the client's end of writing
            listener.set_nonblocking(true).expect("non-blocking");
            let early = listener.accept().is_ok();
            drop(first);
            closed_first.send(early).expect("report");
            listener.set_nonblocking(false).expect("blocking");
            let mut second = accept_answering_handshake(&listener);
            let mut chunk = [0u8; 4096];
            let _ = second.read(&mut chunk);
            second.write_all(b":1\r\n").expect("a reply");
            let _ = second.read(&mut chunk);
        });
        let config = config_of(&dir);
        let counters = Arc::new(Counters::new());
        let mut transport = Pipelined::new(&config, Arc::clone(&counters));
        let big = vec![7u8; 4 << 20];
        let (big, small) = ([big.as_slice()], [b"x".as_slice()]);

        transport.begin_call();
        let unanswered = transport.run(&config, &read("s-1"));
        assert!(
            unanswered.failure.is_some_and(|failure| failure.error.is_timeout()),
            "the read is not answered"
        );
        transport.begin_call();
        let given_up = transport.run(&config, &write(&owing("s-2", &big)));
        assert!(given_up.failure.is_some_and(|failure| failure.error.is_timeout()), "the socket filled");
        transport.begin_call();
        let meanwhile = transport.run(&config, &write(&owing("s-3", &small)));
        assert!(meanwhile.failure.is_some(), "no connection while Redis has not closed the old one");
        assert_eq!(counters.snapshot().timeouts, 2, "the read and the write; the refusal waited for nothing");

        drain_now.send(()).expect("signal");
        let early = first_closed.recv().expect("the first connection closed");
        assert!(!early, "a second connection was opened before Redis closed the first");
        // The close is seen by a read a moment after the server's report.
        let seen = Instant::now() + Duration::from_secs(10);
        while transport.draining.is_some() && Instant::now() < seen {
            std::thread::sleep(Duration::from_millis(5));
            transport.collect();
        }
        transport.begin_call();
        let after = transport.run(&config, &write(&owing("s-4", &small)));
        assert!(after.failure.is_none(), "{:?}", after.failure);
        assert!(after.sent);
        drop(transport);
        let _ = server.join();
    }

    /// A handshake answered a byte at a time is bounded by the same
    /// deadline: the socket's timeout bounds one `read`, and a reply takes many.
    #[test]
    fn a_trickling_handshake_costs_no_more_than_a_hung_redis() {
        let (dir, listener) = fake_redis();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            for byte in b"$40\r\n0123456789012345678901234567890123456789\r\n".iter().cycle().take(400) {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let config = config_of(&dir);
        let mut transport = Pipelined::new(&config, Arc::new(Counters::new()));
        let small = [b"x".as_slice()];
        transport.begin_call();
        let started = Instant::now();
        let exchange = transport.run(&config, &write(&owing("s-1", &small)));
        let took = started.elapsed();
        drop(transport);
        let _ = server.join();
        let failure = exchange.failure.expect("no handshake within the deadline");
        assert!(failure.error.is_timeout(), "{:?}", failure.error);
        // The handshake takes 20 s at this pace; the deadline is 400 ms.
        assert!(took < Duration::from_secs(5), "the call took {took:?}");
    }

    const HASH: &str = "fake:broker:1883";

    /// `connect_timeout` and `io_timeout` of the tests: a call's deadline is 400 ms.
    const TIMEOUT: Duration = Duration::from_millis(200);

    /// A socket for a fake Redis, in a directory of its own.
    fn fake_redis() -> (tempfile::TempDir, UnixListener) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let listener = UnixListener::bind(dir.path().join("redis.sock")).expect("bind");
        (dir, listener)
    }

    /// A store's configuration for the fake Redis in `dir`.
    fn config_of(dir: &tempfile::TempDir) -> Config {
        crate::RedisPersistence::builder()
            .url(format!("redis+unix://{}", dir.path().join("redis.sock").display()))
            .connect_timeout(TIMEOUT)
            .io_timeout(TIMEOUT)
            .into_config()
            .expect("valid")
    }

    /// The next connection, its handshake (one `SCRIPT LOAD` per script,
    /// then `MULTI` and `EXEC`) answered.
    fn accept_answering_handshake(listener: &UnixListener) -> UnixStream {
        let (mut stream, _) = listener.accept().expect("accept");
        for _ in scripts::SOURCES {
            stream.write_all(b"$1\r\nx\r\n").expect("a handshake reply");
        }
        stream.write_all(b"+OK\r\n*0\r\n").expect("the transaction probe's replies");
        stream
    }

    fn read(key: &str) -> Plan<'_> {
        Plan { hash: HASH, budget: None, commands: [Command::Read(key)].into_iter().collect() }
    }

    /// A table owing one record: `key`, of `parts`.
    fn owing(key: &str, parts: &[&[u8]]) -> Table {
        let mut table = Table::new(CacheLimits::default());
        table.write(key, parts);
        table
    }

    fn write(records: &Table) -> Plan<'_> {
        let commands = [Command::Write { records, removals: &[], riding: &[] }].into_iter().collect();
        Plan { hash: HASH, budget: None, commands }
    }
}
