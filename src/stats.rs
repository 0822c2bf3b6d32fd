//! Operation counters of a store: the public [`Stats`] snapshot and the
//! crate-internal [`Counters`] that the store bumps on its hot path.
//!
//! Counting must cost next to nothing and must never block or panic inside a
//! Paho callback, so every counter is an independent `AtomicU64` updated with
//! `Ordering::Relaxed`: a snapshot reads each counter on its own, and two
//! counters read in one snapshot may be a few operations apart while calls are
//! running. On targets without 64-bit atomics each counter is a `u64` behind
//! its own `Mutex` instead (never held across anything but one addition).

/// A snapshot of a store's counters, taken by `Monitor::stats()` (or `RedisPersistence::stats()`).
///
/// Every field but [`unwritten_records`](Self::unwritten_records) (a gauge)
/// counts from the creation of the store and only grows (it wraps at
/// `u64::MAX`, which no store reaches); [`lease_lost`](Self::lease_lost) is
/// a gauge too. [`Stats::since`] gives the activity of an interval: the
/// difference of two snapshots. The counters are read one by one while other
/// threads may be updating them, so a snapshot taken during calls may be a few
/// operations apart from one field to the next.
///
/// New counters may be added in minor releases, hence `#[non_exhaustive]`:
/// start from [`Stats::default`] to build one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// `put` calls: Paho storing a record.
    pub puts: u64,
    /// `get` calls: Paho reading a record back (after a restart, or a queued command before sending it).
    pub gets: u64,
    /// `remove` calls: Paho deleting a record once its exchange is complete.
    pub removes: u64,
    /// `keys` calls: Paho listing the store (when it restores a session).
    pub keys: u64,
    /// `clear` calls: Paho emptying the store (a clean session).
    pub clears: u64,
    /// `contains_key` calls by Paho (the application's
    /// `Monitor::contains` calls are not counted).
    pub contains_key_calls: u64,
    /// Requests sent to Redis and answered (a pipeline counts once), retries included.
    pub round_trips: u64,
    /// Record bytes of the `put` calls that succeeded (values only: no keys,
    /// no protocol overhead), including records kept in memory until Redis
    /// takes them.
    pub bytes_written: u64,
    /// Record bytes received from Redis (values only).
    pub bytes_read: u64,
    /// Calls that failed and were reported to Paho as a persistence error
    /// (or, for `contains_key`, answered "absent" because the store was not open).
    pub errors: u64,
    /// Connections to Redis re-established after one broke.
    pub reconnects: u64,
    /// Waits for Redis that ended in a timeout (`io_timeout` or
    /// `connect_timeout`): each one stalled a Paho thread that long.
    pub timeouts: u64,
    /// `get` calls answered from the local cache, without a round trip.
    pub cache_hits: u64,
    /// `remove`, `contains_key` and `get` calls answered from the local index
    /// of fields, without a round trip: the remove of a key that is not
    /// stored, every `contains_key`, the `get` of an unknown key.
    pub index_hits: u64,
    /// Records served from the snapshot read when the store was opened, without a round trip.
    pub snapshot_hits: u64,
    /// Not a count but the current number of records (mostly queued
    /// publishes) held in memory only, because Redis could not take them
    /// (see `RedisPersistence::unwritten`). While it is above zero, those
    /// messages would not survive a crash: an application that prefers to
    /// refuse publishing then can check it before each publish.
    pub unwritten_records: u64,
    /// Records `open` found that no restore of this client can take, moved
    /// to the store's quarantine (see `admin::Stores::quarantine`); counted
    /// once Redis has moved them.
    pub quarantined: u64,
    /// Records `open` found in a form only another MQTT version restores,
    /// given to Paho rewritten into this client's version (the original
    /// removed with the rewrite's write).
    pub rewritten: u64,
    /// Not a count but a gauge: 1 once the store's lease was lost to another
    /// process (this one was paused, or cut off from Redis, longer than the
    /// lease): the store is fenced and writes nothing more to its hash, so
    /// every record Paho stores from then on is in memory only. Restart the
    /// client. 0 otherwise.
    pub lease_lost: u64,
}

impl Stats {
    /// The activity between `earlier` and this snapshot: each counter's
    /// difference (wrapping, like the counters), and the gauges
    /// ([`unwritten_records`](Self::unwritten_records),
    /// [`lease_lost`](Self::lease_lost)) as they are in this snapshot.
    ///
    /// ```
    /// # fn work() {}
    /// # let store = paho_mqtt_redis::RedisPersistence::new();
    /// # let monitor = store.monitor();
    /// let before = monitor.stats();
    /// work();
    /// let interval = monitor.stats().since(&before);
    /// println!("{} round trips, {} unwritten now", interval.round_trips, interval.unwritten_records);
    /// ```
    #[must_use]
    pub fn since(&self, earlier: &Stats) -> Stats {
        let Stats {
            puts,
            gets,
            removes,
            keys,
            clears,
            contains_key_calls,
            round_trips,
            bytes_written,
            bytes_read,
            errors,
            reconnects,
            timeouts,
            cache_hits,
            index_hits,
            snapshot_hits,
            unwritten_records,
            quarantined,
            rewritten,
            lease_lost,
        } = *self;
        Stats {
            puts: puts.wrapping_sub(earlier.puts),
            gets: gets.wrapping_sub(earlier.gets),
            removes: removes.wrapping_sub(earlier.removes),
            keys: keys.wrapping_sub(earlier.keys),
            clears: clears.wrapping_sub(earlier.clears),
            contains_key_calls: contains_key_calls.wrapping_sub(earlier.contains_key_calls),
            round_trips: round_trips.wrapping_sub(earlier.round_trips),
            bytes_written: bytes_written.wrapping_sub(earlier.bytes_written),
            bytes_read: bytes_read.wrapping_sub(earlier.bytes_read),
            errors: errors.wrapping_sub(earlier.errors),
            reconnects: reconnects.wrapping_sub(earlier.reconnects),
            timeouts: timeouts.wrapping_sub(earlier.timeouts),
            cache_hits: cache_hits.wrapping_sub(earlier.cache_hits),
            index_hits: index_hits.wrapping_sub(earlier.index_hits),
            snapshot_hits: snapshot_hits.wrapping_sub(earlier.snapshot_hits),
            quarantined: quarantined.wrapping_sub(earlier.quarantined),
            rewritten: rewritten.wrapping_sub(earlier.rewritten),
            // Gauges: the later value.
            unwritten_records,
            lease_lost,
        }
    }
}

/// One of the store operations that Paho (or a Rust caller) invokes; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Put,
    Get,
    Remove,
    Keys,
    Clear,
    ContainsKey,
}

/// The live counters of one store. All methods take `&self` and never block
/// for longer than one addition, never allocate and never panic.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    puts: Counter,
    gets: Counter,
    removes: Counter,
    keys: Counter,
    clears: Counter,
    contains_key_calls: Counter,
    round_trips: Counter,
    bytes_written: Counter,
    bytes_read: Counter,
    errors: Counter,
    reconnects: Counter,
    timeouts: Counter,
    cache_hits: Counter,
    index_hits: Counter,
    snapshot_hits: Counter,
    unwritten_records: Counter,
    quarantined: Counter,
    rewritten: Counter,
    lease_lost: Counter,
}

impl Counters {
    /// Counters at zero.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Counts one call of `operation`, whatever its outcome.
    pub(crate) fn record(&self, operation: Operation) {
        let counter = match operation {
            Operation::Put => &self.puts,
            Operation::Get => &self.gets,
            Operation::Remove => &self.removes,
            Operation::Keys => &self.keys,
            Operation::Clear => &self.clears,
            Operation::ContainsKey => &self.contains_key_calls,
        };
        counter.add(1);
    }

    /// Counts one request answered by Redis (a pipeline or MULTI/EXEC block counts once).
    pub(crate) fn add_round_trip(&self) {
        self.round_trips.add(1);
    }

    /// Counts `bytes` of record values a `put` stored.
    pub(crate) fn add_bytes_written(&self, bytes: usize) {
        self.bytes_written.add(widen(bytes));
    }

    /// Counts `bytes` of record values received from Redis.
    pub(crate) fn add_bytes_read(&self, bytes: usize) {
        self.bytes_read.add(widen(bytes));
    }

    /// Counts one call that failed (reported to Paho as an error).
    pub(crate) fn add_error(&self) {
        self.errors.add(1);
    }

    /// Counts one connection re-established after a break.
    pub(crate) fn add_reconnect(&self) {
        self.reconnects.add(1);
    }

    /// Counts one wait for Redis that timed out.
    pub(crate) fn add_timeout(&self) {
        self.timeouts.add(1);
    }

    /// Counts one `get` answered from the local cache.
    pub(crate) fn add_cache_hit(&self) {
        self.cache_hits.add(1);
    }

    /// Counts one `remove`/`contains_key` answered from the local index.
    pub(crate) fn add_index_hit(&self) {
        self.index_hits.add(1);
    }

    /// Counts one record served from the snapshot read at `open`.
    pub(crate) fn add_snapshot_hit(&self) {
        self.snapshot_hits.add(1);
    }

    /// Counts records moved to the quarantine and records rewritten at `open`.
    pub(crate) fn add_repaired(&self, (quarantined, rewritten): (u64, u64)) {
        self.quarantined.add(quarantined);
        self.rewritten.add(rewritten);
    }

    /// Sets the number of command records held in memory only.
    pub(crate) fn set_unwritten_records(&self, records: usize) {
        self.unwritten_records.set(widen(records));
    }

    /// Sets the lease-lost gauge.
    pub(crate) fn set_lease_lost(&self, lost: bool) {
        self.lease_lost.set(u64::from(lost));
    }

    /// The current number of records held in memory only.
    pub(crate) fn unwritten_records(&self) -> u64 {
        self.unwritten_records.get()
    }

    /// The current values, read counter by counter.
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            puts: self.puts.get(),
            gets: self.gets.get(),
            removes: self.removes.get(),
            keys: self.keys.get(),
            clears: self.clears.get(),
            contains_key_calls: self.contains_key_calls.get(),
            round_trips: self.round_trips.get(),
            bytes_written: self.bytes_written.get(),
            bytes_read: self.bytes_read.get(),
            errors: self.errors.get(),
            reconnects: self.reconnects.get(),
            timeouts: self.timeouts.get(),
            cache_hits: self.cache_hits.get(),
            index_hits: self.index_hits.get(),
            snapshot_hits: self.snapshot_hits.get(),
            unwritten_records: self.unwritten_records.get(),
            quarantined: self.quarantined.get(),
            rewritten: self.rewritten.get(),
            lease_lost: self.lease_lost.get(),
        }
    }
}

/// `usize` to `u64` without a cast that could truncate: `usize` is at most 64 bits
/// on every target Rust supports, and saturating is the right answer otherwise.
fn widen(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(target_has_atomic = "64")]
type Counter = atomic::AtomicCounter;

#[cfg(not(target_has_atomic = "64"))]
type Counter = locked::LockedCounter;

#[cfg(target_has_atomic = "64")]
mod atomic {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// One lock-free counter. `Relaxed` suffices: a counter orders nothing else,
    /// and each atomic addition is still never lost.
    #[derive(Debug, Default)]
    pub(super) struct AtomicCounter(AtomicU64);

    impl AtomicCounter {
        pub(super) fn add(&self, amount: u64) {
            // fetch_add wraps on overflow, it does not panic.
            self.0.fetch_add(amount, Ordering::Relaxed);
        }

        pub(super) fn get(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }

        pub(super) fn set(&self, value: u64) {
            self.0.store(value, Ordering::Relaxed);
        }
    }
}

/// The fallback for targets without 64-bit atomics (some 32-bit MCUs and MIPS);
/// compiled in tests everywhere so that it is tested too.
#[cfg(any(test, not(target_has_atomic = "64")))]
mod locked {
    use std::sync::{Mutex, PoisonError};

    /// One counter behind its own lock, held only for one addition.
    #[derive(Debug, Default)]
    pub(super) struct LockedCounter(pub(super) Mutex<u64>);

    impl LockedCounter {
        pub(super) fn add(&self, amount: u64) {
            // A poisoned lock still holds a valid u64: keep counting rather than panic.
            let mut value = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            *value = value.wrapping_add(amount);
        }

        pub(super) fn get(&self) -> u64 {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(super) fn set(&self, value: u64) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn new_counters_are_all_zero() {
        assert_eq!(Counters::new().snapshot(), Stats::default());
    }

    #[test]
    fn each_operation_has_its_own_counter() {
        let counters = Counters::new();
        let operations = [
            (Operation::Put, 1),
            (Operation::Get, 2),
            (Operation::Remove, 3),
            (Operation::Keys, 4),
            (Operation::Clear, 5),
            (Operation::ContainsKey, 6),
        ];
        for (operation, times) in operations {
            for _ in 0..times {
                counters.record(operation);
            }
        }
        let stats = counters.snapshot();
        let expected = Stats {
            puts: 1,
            gets: 2,
            removes: 3,
            keys: 4,
            clears: 5,
            contains_key_calls: 6,
            ..Stats::default()
        };
        assert_eq!(stats, expected);
    }

    #[test]
    fn every_other_counter_is_separate() {
        let counters = Counters::new();
        counters.add_round_trip();
        counters.add_round_trip();
        counters.add_bytes_written(100);
        counters.add_bytes_written(23);
        counters.add_bytes_read(7);
        counters.add_error();
        counters.add_reconnect();
        counters.add_reconnect();
        counters.add_reconnect();
        counters.add_cache_hit();
        counters.add_index_hit();
        counters.add_index_hit();
        counters.add_snapshot_hit();
        let expected = Stats {
            round_trips: 2,
            bytes_written: 123,
            bytes_read: 7,
            errors: 1,
            reconnects: 3,
            cache_hits: 1,
            index_hits: 2,
            snapshot_hits: 1,
            ..Stats::default()
        };
        assert_eq!(counters.snapshot(), expected);
    }

    #[test]
    fn no_increment_is_lost_across_threads() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 10_000;
        let counters = Arc::new(Counters::new());
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..PER_THREAD {
                        counters.record(Operation::Put);
                        counters.add_bytes_written(3);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a counting thread panicked");
        }
        let stats = counters.snapshot();
        assert_eq!(stats.puts, THREADS * PER_THREAD);
        assert_eq!(stats.bytes_written, 3 * THREADS * PER_THREAD);
    }

    #[test]
    fn the_locked_fallback_counts_and_wraps_like_the_atomic_one() {
        let locked = locked::LockedCounter::default();
        locked.add(5);
        locked.add(u64::MAX);
        assert_eq!(locked.get(), 4, "wrapping addition, as AtomicU64::fetch_add");
        #[cfg(target_has_atomic = "64")]
        {
            let atomic = atomic::AtomicCounter::default();
            atomic.add(5);
            atomic.add(u64::MAX);
            assert_eq!(atomic.get(), locked.get());
            atomic.set(7);
            assert_eq!(atomic.get(), 7);
        }
        locked.set(7);
        assert_eq!(locked.get(), 7, "a gauge is set, not added to");
    }

    #[test]
    fn the_locked_fallback_survives_a_poisoned_lock() {
        let counter = Arc::new(locked::LockedCounter::default());
        counter.add(2);
        let poisoner = Arc::clone(&counter);
        let outcome = std::thread::spawn(move || {
            let _guard = poisoner.0.lock();
            panic!("poison the counter's lock");
        })
        .join();
        assert!(outcome.is_err(), "the helper thread should have panicked");
        assert!(counter.0.is_poisoned());
        counter.add(3);
        assert_eq!(counter.get(), 5);
    }

    #[test]
    fn since_subtracts_counters_and_keeps_the_later_gauges() {
        let earlier =
            Stats { puts: 5, round_trips: u64::MAX, unwritten_records: 9, lease_lost: 0, ..Stats::default() };
        let later = Stats {
            puts: 8,
            round_trips: 1,
            unwritten_records: 2,
            lease_lost: 1,
            quarantined: 3,
            ..Stats::default()
        };
        let interval = later.since(&earlier);
        assert_eq!(
            interval,
            Stats {
                puts: 3,
                round_trips: 2,
                unwritten_records: 2,
                lease_lost: 1,
                quarantined: 3,
                ..Stats::default()
            },
            "round_trips wrapped like the counter"
        );
        assert_eq!(later.since(&later), Stats { unwritten_records: 2, lease_lost: 1, ..Stats::default() });
    }

    #[test]
    fn widen_keeps_every_usize() {
        assert_eq!(widen(0), 0);
        assert_eq!(widen(usize::MAX), u64::try_from(usize::MAX).unwrap_or(u64::MAX));
    }
}
