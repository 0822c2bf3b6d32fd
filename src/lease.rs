//! One owner per store: a lease in Redis (`{hash}:owner`, a string with an
//! expiry) naming the process that has the store open, taken at `open`,
//! renewed by a thread with a connection of its own, and released at
//! `close`. Paho's calls only read a clock here (`Lease::standing`), so the
//! lease costs the publish path no Redis command and no wait.
//!
//! The value says who owns it: host name, boot id and pid namespace (together:
//! whether its pid can be looked up here), pid and process start time
//! (a reused pid has another), since when, and a random token that makes it
//! this store's alone. Every change of a lease held by someone else is a
//! compare-and-set in a script, so two openers racing for a dead owner's
//! lease cannot both win, and a renewal or release never touches another's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;

use crate::stats::Counters;
use crate::transport::{connect, Gate};
use crate::{Config, Error};

/// How often `open` looks at a lease it waits out.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// What `open` adds to the lease when it waits one out: polling granularity
/// and the difference between Redis's clock and ours.
const WAIT_SLACK: Duration = Duration::from_secs(1);

/// Most attempts of `open` to take a lease that keeps changing hands under it.
const MAX_RACES: usize = 10;

/// Renews the lease if it is still ours. Returns 1 when renewed; 2 when it
/// was gone (Redis restarted, or it expired and nobody took it) and is
/// taken again; else the value that holds it now.
const RENEW_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return held
";

/// Takes the lease of `ARGV[1]` (a dead owner's) if it still holds it: 1 if taken.
const TAKE_OVER_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes the lease if it is still ours: 1 if deleted.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

struct Scripts {
    renew: redis::Script,
    take_over: redis::Script,
    release: redis::Script,
}

static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    renew: redis::Script::new(RENEW_SCRIPT),
    take_over: redis::Script::new(TAKE_OVER_SCRIPT),
    release: redis::Script::new(RELEASE_SCRIPT),
});

/// Who a process is, as far as telling it alive from another host goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    host: String,
    /// `/proc/sys/kernel/random/boot_id`: the same host and the same boot.
    boot: String,
    /// The target of `/proc/self/ns/pid`: pids are comparable only within one.
    pid_ns: String,
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
    start: Option<u64>,
}

impl Identity {
    /// This process. Parts that cannot be read stay empty: such an owner is
    /// never recognised as local, so its lease is waited out.
    pub(crate) fn own() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).map(|text| text.trim().to_owned()).ok();
        let host = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        let pid = std::process::id();
        Self {
            host: host.replace(char::is_whitespace, "_"),
            boot: read("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|target| target.to_string_lossy().replace(char::is_whitespace, "_"))
                .unwrap_or_default(),
            pid,
            start: start_time(pid),
        }
    }
}

/// Field 22 of `/proc/<pid>/stat` (the start time), or `None` when the
/// process is gone or a zombie (killed, not yet reaped: it holds no store).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything, spaces too.
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `state` was field 3; field 22 is 19 further.
    fields.nth(18)?.parse().ok()
}

/// Whether a process whose start time is `ticks` (field 22 of
/// `/proc/<pid>/stat`, clock ticks since boot) started later than a second
/// after unix time `since`: the boot time (`btime` of `/proc/stat`) plus
/// `ticks` at `USER_HZ`, which is 100 on every architecture this crate
/// targets. Unreadable: `false` (the owner may be alive; its lease is waited out).
fn started_after(ticks: u64, since: u64) -> bool {
    const USER_HZ: u64 = 100;
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|secs| secs.trim().parse::<u64>().ok())
    });
    boot.is_some_and(|boot| boot.saturating_add(ticks / USER_HZ) > since.saturating_add(1))
}

/// A lease's value: who owns the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    who: Identity,
    /// Unix time, seconds.
    since: u64,
    token: String,
}

impl Owner {
    fn new(who: Identity) -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
        Self { who, since, token: token() }
    }

    /// The lease's value: `key=value` words, readable with `redis-cli GET`.
    fn value(&self) -> String {
        let Identity { host, boot, pid_ns, pid, start } = &self.who;
        let start = start.map_or_else(String::new, |start| start.to_string());
        format!(
            "host={host} pid={pid} since={} boot={boot} pidns={pid_ns} start={start} token={}",
            self.since, self.token
        )
    }

    /// Reads a lease's value; what it lacks stays empty (and is then not local).
    pub(crate) fn parse(value: &str) -> Self {
        let mut owner = Self::default();
        for (name, field) in value.split_whitespace().filter_map(|word| word.split_once('=')) {
            let field = field.to_owned();
            match name {
                "host" => owner.who.host = field,
                "pid" => owner.who.pid = field.parse().unwrap_or(0),
                "since" => owner.since = field.parse().unwrap_or(0),
                "boot" => owner.who.boot = field,
                "pidns" => owner.who.pid_ns = field,
                "start" => owner.who.start = field.parse().ok(),
                "token" => owner.token = field,
                _ => {}
            }
        }
        owner
    }

    /// For errors and logs: host, pid, since.
    pub(crate) fn describe(&self) -> String {
        if self.who.host.is_empty() && self.who.pid == 0 {
            return "an unknown process (its lease names no host or pid)".to_owned();
        }
        format!("pid {} on host {}, owner since unix time {}", self.who.pid, self.who.host, self.since)
    }

    /// Whether this owner is alive, seen from `me`; `None` when `me` cannot
    /// look it up (another host, boot or pid namespace, or unknown parts).
    pub(crate) fn alive(&self, me: &Identity) -> Option<bool> {
        let local = !me.boot.is_empty()
            && !me.pid_ns.is_empty()
            && self.who.boot == me.boot
            && self.who.pid_ns == me.pid_ns
            && self.who.pid != 0;
        if !local {
            return None;
        }
        if self.who.pid == me.pid {
            // This very process: another store on the same hash.
            return Some(true);
        }
        Some(match (start_time(self.who.pid), self.who.start) {
            (None, _) => false,
            (Some(now), Some(then)) if now == then => true,
            // Another start time than the owner wrote: the pid is a newer
            // process if it started after the lease was written. A start time
            // a process reads of itself may be another's view of it (under
            // qemu-user, `/proc/self/stat` is emulated), so a mismatch alone
            // proves nothing: an older process may be the owner.
            (Some(now), _) => !started_after(now, self.since),
        })
    }
}

/// The lease value of a new store of this process: who it is, since now,
/// and a token of its own.
pub(crate) fn own_value() -> String {
    Owner::new(Identity::own()).value()
}

/// A random token, from the standard library's per-process random hash keys.
fn token() -> String {
    use std::hash::BuildHasher;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
    let random = std::hash::RandomState::new();
    format!("{:016x}{:016x}", random.hash_one(nanos), random.hash_one((std::process::id(), nanos)))
}

/// Where the lease stands, as a Paho call sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Confirmed recently enough: writes may go.
    Held,
    /// Not confirmed in time, and not known lost (Redis unreachable, or a
    /// renewal under way): writes wait in memory.
    Unconfirmed(String),
    /// Someone else holds it: nothing is written any more.
    Lost(String),
}

/// The lease of one open store; released when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    shared: Arc<Shared>,
    renewer: Option<JoinHandle<()>>,
}

struct Shared {
    hash: String,
    key: String,
    value: String,
    duration: Duration,
    config: Config,
    /// The lease's own connection, used by the renewer and by a Paho call
    /// whose lease's validity has passed.
    conn: Mutex<Option<redis::Connection>>,
    /// Nanoseconds after `base` until which the lease is surely ours.
    valid_until: AtomicU64,
    base: Instant,
    /// Lost to someone else: final.
    lost: Mutex<Option<String>>,
    lost_flag: AtomicBool,
    /// The store's, for `Stats::lease_lost` the moment the renewer finds it lost.
    counters: Arc<Counters>,
    /// The last renewal timed out (Redis hangs): Paho's calls do not wait
    /// for it again until the renewer gets through.
    unreachable: AtomicBool,
    /// Set at release: the renewer stops.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// The outcome of one renewal.
enum Renewal {
    Renewed,
    Lost(String),
    Unreachable(Error),
}

impl Lease {
    /// Takes the lease of `hash` for this process, waiting out one held by a
    /// process this host cannot look up (at most the lease plus 1 s), and
    /// starts its renewal.
    ///
    /// `value` is the store's own (see [`own_value`]), the same at every
    /// `open` of one store: a lease holding it is this store's already (a
    /// release that failed, or a `SET` that timed out and ran late).
    pub(crate) fn acquire(
        config: &Config,
        hash: &str,
        value: &str,
        counters: &Arc<Counters>,
    ) -> Result<Self, Error> {
        let key = Config::lease_name(hash);
        let me = Identity::own();
        let value = value.to_owned();
        let duration = config.lease();
        let millis = duration_millis(duration);
        let mut conn = connect(config)?;
        let command_error = |command: &'static str, source| Error::command(command, &key, source);
        let mut waited: Option<(Instant, String, i64)> = None;
        let mut races = 0;
        loop {
            let base = Instant::now();
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("NX")
                .arg("PX")
                .arg(millis)
                .query(&mut conn)
                .map_err(|source| command_error("SET", source))?;
            if set.is_some() {
                if let Some((since, holder, _)) = &waited {
                    log::info!(
                        "redis persistence: the lease of `{hash}` held by {holder} expired after {:?}; taken",
                        since.elapsed()
                    );
                }
                return Ok(Self::start(Arc::clone(counters), hash, value, config, conn, base));
            }
            let (held, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query(&mut conn)
                .map_err(|source| command_error("GET", source))?;
            let Some(held) = held else { continue }; // expired in between
            let held = String::from_utf8_lossy(&held).into_owned();
            if held == value {
                let () = redis::cmd("PEXPIRE")
                    .arg(&key)
                    .arg(millis)
                    .query::<i64>(&mut conn)
                    .map(drop)
                    .map_err(|source| command_error("PEXPIRE", source))?;
                return Ok(Self::start(Arc::clone(counters), hash, value, config, conn, base));
            }
            let holder = Owner::parse(&held);
            let in_use = || Error::InUse { hash: hash.to_owned(), owner: holder.describe() };
            races += 1;
            if races > MAX_RACES {
                return Err(in_use());
            }
            match holder.alive(&me) {
                Some(true) => return Err(in_use()),
                Some(false) => {
                    let taken: i64 = SCRIPTS
                        .take_over
                        .key(&key)
                        .arg(&held)
                        .arg(&value)
                        .arg(millis)
                        .invoke(&mut conn)
                        .map_err(|source| command_error("EVALSHA", source))?;
                    if taken == 1 {
                        log::warn!(
                            "redis persistence: took `{hash}` over from {}, which is dead",
                            holder.describe()
                        );
                        return Ok(Self::start(Arc::clone(counters), hash, value, config, conn, base));
                    }
                }
                None => {
                    races -= 1; // waiting is bounded by the deadline
                    match &waited {
                        None => {
                            log::warn!(
                                "redis persistence: `{hash}` is held by {} (not a process of this host: it \
                                 cannot be looked up); waiting up to {:?} for its lease to expire",
                                holder.describe(),
                                duration + WAIT_SLACK
                            );
                            waited = Some((Instant::now(), held.clone(), ttl));
                        }
                        // Another value: a new owner took it. A longer expiry: renewed.
                        Some((_, before, _)) if *before != held => return Err(in_use()),
                        Some((_, _, before)) if ttl > *before || ttl < 0 => return Err(in_use()),
                        Some((since, _, _)) if since.elapsed() > duration + WAIT_SLACK => {
                            return Err(in_use())
                        }
                        Some(_) => {}
                    }
                    if let Some((_, _, last)) = &mut waited {
                        *last = ttl;
                    }
                    let left = u64::try_from(ttl).map_or(WAIT_POLL, Duration::from_millis);
                    std::thread::sleep(left.clamp(Duration::from_millis(1), WAIT_POLL));
                }
            }
        }
    }

    /// The lease just taken (at `taken_at`, on `conn`), and its renewer.
    fn start(
        counters: Arc<Counters>,
        hash: &str,
        value: String,
        config: &Config,
        conn: redis::Connection,
        taken_at: Instant,
    ) -> Self {
        let shared = Arc::new(Shared {
            hash: hash.to_owned(),
            key: Config::lease_name(hash),
            value,
            duration: config.lease(),
            config: config.clone(),
            conn: Mutex::new(Some(conn)),
            valid_until: AtomicU64::new(0),
            base: taken_at,
            lost: Mutex::new(None),
            lost_flag: AtomicBool::new(false),
            counters,
            unreachable: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        shared.confirmed(taken_at);
        let renewing = Arc::clone(&shared);
        let renewer = std::thread::Builder::new()
            .name("redis-persistence-lease".to_owned())
            .spawn(move || renewing.renew_until_stopped());
        let renewer = match renewer {
            Ok(handle) => Some(handle),
            Err(error) => {
                // Paho's calls then renew it themselves once its validity passes.
                log::warn!("redis persistence: cannot start the lease's renewal thread: {error}");
                None
            }
        };
        Self { shared, renewer }
    }

    /// Where the lease stands: a clock read while it is valid; past its
    /// validity, one renewal on the lease's connection (unless the renewer
    /// is using it, or the last renewal could not reach Redis).
    pub(crate) fn standing(&self) -> Standing {
        self.shared.standing(true)
    }

    /// What a new connection of the store must pass before it is used: a
    /// renewal now, whatever the validity (see `transport::Gate`).
    pub(crate) fn gate(&self) -> Gate {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || {
            shared.force_renewal();
            match shared.standing(true) {
                Standing::Held => Ok(()),
                standing => Err(Error::Fenced { hash: shared.hash.clone(), reason: standing.reason() }),
            }
        })
    }
}

impl Standing {
    /// Why writes may not go, for `Error::Fenced` (empty when they may).
    pub(crate) fn reason(&self) -> String {
        match self {
            Standing::Held => String::new(),
            Standing::Unconfirmed(why) => why.clone(),
            Standing::Lost(holder) => format!("its lease is lost to {holder}"),
        }
    }
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The lease was confirmed by a command sent at `sent`: it is ours until
    /// `sent + lease − margin`. A quarter of the lease is left as margin for
    /// the difference between Redis's clock and ours.
    fn confirmed(&self, sent: Instant) {
        let valid = self.duration.saturating_sub(self.duration / 4);
        let until = sent.saturating_duration_since(self.base).saturating_add(valid);
        self.valid_until.store(u64::try_from(until.as_nanos()).unwrap_or(u64::MAX), Ordering::Release);
        self.unreachable.store(false, Ordering::Release);
    }

    fn force_renewal(&self) {
        self.valid_until.store(0, Ordering::Release);
        self.unreachable.store(false, Ordering::Release);
    }

    fn lost_to(&self) -> Option<String> {
        if !self.lost_flag.load(Ordering::Acquire) {
            return None;
        }
        self.lost.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn standing(&self, may_renew: bool) -> Standing {
        if let Some(holder) = self.lost_to() {
            return Standing::Lost(holder);
        }
        if self.now() < self.valid_until.load(Ordering::Acquire) {
            return Standing::Held;
        }
        let unconfirmed =
            || Standing::Unconfirmed(format!("the lease `{}` is not confirmed in time", self.key));
        if !may_renew || self.unreachable.load(Ordering::Acquire) {
            return unconfirmed();
        }
        let mut conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // The renewer is at it: its outcome will tell.
            Err(TryLockError::WouldBlock) => return unconfirmed(),
        };
        match self.renew(&mut conn) {
            Renewal::Renewed => Standing::Held,
            Renewal::Lost(holder) => Standing::Lost(holder),
            Renewal::Unreachable(error) => {
                // Only a hung Redis costs a call a wait; a refused
                // connection fails at once, so the next call tries again
                // (a restarted Redis is used as soon as it is back).
                self.unreachable.store(error.is_timeout(), Ordering::Release);
                Standing::Unconfirmed(format!("the lease `{}` cannot be renewed: {error}", self.key))
            }
        }
    }

    /// One renewal (compare-and-set) on `conn`, connecting first if needed;
    /// a connection found broken (Redis restarted, `CLIENT KILL`) is opened
    /// again once, as the store's own transport does.
    fn renew(&self, conn: &mut Option<redis::Connection>) -> Renewal {
        match self.renew_once(conn) {
            Renewal::Unreachable(error) if conn.is_none() && !error.is_timeout() => self.renew_once(conn),
            renewal => renewal,
        }
    }

    fn renew_once(&self, conn: &mut Option<redis::Connection>) -> Renewal {
        if self.lost_to().is_some() {
            return Renewal::Lost(self.lost_to().unwrap_or_default());
        }
        if conn.is_none() {
            match connect(&self.config) {
                Ok(fresh) => *conn = Some(fresh),
                Err(error) => return Renewal::Unreachable(error),
            }
        }
        let Some(connection) = conn.as_mut() else { return Renewal::Unreachable(Error::NotOpen) };
        let sent = Instant::now();
        let renewed: redis::RedisResult<Value> = SCRIPTS
            .renew
            .key(&self.key)
            .arg(&self.value)
            .arg(duration_millis(self.duration))
            .invoke(connection);
        match renewed {
            Ok(Value::Int(1)) => {
                self.confirmed(sent);
                Renewal::Renewed
            }
            Ok(Value::Int(2)) => {
                self.confirmed(sent);
                log::warn!(
                    "redis persistence: the lease `{}` was gone (Redis restarted without it, or it expired \
                     while this process was paused or cut off from Redis, and nobody took it); taken again",
                    self.key
                );
                Renewal::Renewed
            }
            Ok(other) => {
                let holder = match other {
                    Value::BulkString(held) => Owner::parse(&String::from_utf8_lossy(&held)).describe(),
                    other => format!("an unreadable lease ({other:?})"),
                };
                *self.lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(holder.clone());
                self.lost_flag.store(true, Ordering::Release);
                self.counters.set_lease_lost(true);
                log::error!(
                    "redis persistence: the lease `{}` is lost to {holder} (this process was paused, or cut \
                     off from Redis, longer than the lease): the store writes nothing more to its hash; what \
                     Paho stores from now on is kept in memory only. Restart the client.",
                    self.key
                );
                Renewal::Lost(holder)
            }
            Err(source) => {
                let broken = source.is_io_error() || source.is_connection_dropped() || source.is_timeout();
                if broken {
                    *conn = None;
                }
                Renewal::Unreachable(Error::command("EVALSHA", &self.key, source))
            }
        }
    }

    /// The renewer: a renewal every third of the lease, until stopped or lost.
    fn renew_until_stopped(&self) {
        let interval = self.duration / 3;
        let mut warned = false;
        loop {
            {
                let stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
                let (stop, _) = self
                    .wake
                    .wait_timeout_while(stop, interval, |stop| !*stop)
                    .unwrap_or_else(PoisonError::into_inner);
                if *stop {
                    return;
                }
            }
            let renewal = {
                let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
                self.renew(&mut conn)
            };
            match renewal {
                Renewal::Renewed => {
                    if std::mem::take(&mut warned) {
                        log::info!("redis persistence: the lease `{}` is renewed again", self.key);
                    }
                }
                Renewal::Lost(_) => return,
                Renewal::Unreachable(error) => {
                    self.unreachable.store(error.is_timeout(), Ordering::Release);
                    if !std::mem::replace(&mut warned, true) {
                        log::warn!("redis persistence: cannot renew the lease `{}`: {error}", self.key);
                    }
                }
            }
        }
    }
}

impl Drop for Lease {
    /// Stops the renewer and deletes the lease if it is still ours.
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        if self.shared.lost_to().is_some() {
            return;
        }
        let mut conn = self.shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let release = |connection: &mut redis::Connection| {
            SCRIPTS.release.key(&self.shared.key).arg(&self.shared.value).invoke::<i64>(connection)
        };
        let mut released = match conn.as_mut() {
            Some(connection) => {
                release(connection).map_err(|e| Error::command("EVALSHA", &self.shared.key, e))
            }
            None => Err(Error::NotOpen),
        };
        if released.is_err() {
            // The connection may have broken since the last renewal: once more on a new one.
            released = connect(&self.shared.config).and_then(|mut fresh| {
                release(&mut fresh).map_err(|e| Error::command("EVALSHA", &self.shared.key, e))
            });
        }
        if let Err(error) = released {
            log::warn!(
                "redis persistence: cannot release the lease `{}` (it expires by itself): {error}",
                self.shared.key
            );
        }
    }
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_as_its_owner() {
        let me = Identity::own();
        let owner = Owner::new(me.clone());
        assert_eq!(Owner::parse(&owner.value()), owner);
        assert_eq!(owner.alive(&me), Some(true), "this process");
        assert!(owner.describe().contains(&format!("pid {}", std::process::id())), "{}", owner.describe());
    }

    #[test]
    fn a_gone_or_reused_pid_on_this_host_is_dead_and_another_host_unknown() {
        let me = Identity::own();
        assert!(!me.boot.is_empty() && !me.pid_ns.is_empty() && me.start.is_some(), "{me:?}");
        let gone = Owner { who: Identity { pid: u32::MAX - 1, ..me.clone() }, ..Owner::default() };
        assert_eq!(gone.alive(&me), Some(false));
        // pid 1 exists in every namespace; another start time is another process.
        let init = start_time(1);
        let reused =
            Owner { who: Identity { pid: 1, start: init.map(|t| t + 1), ..me.clone() }, ..Owner::default() };
        assert_eq!(reused.alive(&me), Some(false), "pid 1 started after a lease of 1970");
        // Another start time, but the process is older than the lease: the
        // owner as another view of /proc saw itself (qemu-user emulates
        // /proc/self/stat), so it may be alive.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
        let older = Owner {
            who: Identity { pid: 1, start: init.map(|t| t + 1), ..me.clone() },
            since: now,
            ..Owner::default()
        };
        assert_eq!(older.alive(&me), Some(true));
        let init_itself = Owner { who: Identity { pid: 1, start: init, ..me.clone() }, ..Owner::default() };
        assert_eq!(init_itself.alive(&me), Some(true));
        let elsewhere =
            Owner { who: Identity { boot: "another".to_owned(), ..me.clone() }, ..Owner::default() };
        assert_eq!(elsewhere.alive(&me), None);
        assert_eq!(Owner::parse("garbage").alive(&me), None);
    }
}
