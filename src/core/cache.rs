//! Records kept in memory: the latest command records written, and every
//! record Redis has not taken yet.
//!
//! Paho writes each command record and reads it back when the command is sent,
//! usually milliseconds later (`MQTTAsync_processCommand`); that read is served
//! here. A record Redis has not taken (it was unreachable, or refused it) is
//! kept here until it does, for Paho carries on without it (see
//! [`crate::paho::put_failure_ignored`]).

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{FieldName, KeyMap, KeySet};
use crate::paho::is_command_key;
use crate::stats::Counters;

/// How much of the written command records the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheLimits {
    /// Most command records kept once written to Redis. A record evicted
    /// before Paho reads it back (a long burst, or records queued while
    /// offline) is read from Redis instead.
    pub(crate) records: usize,
    /// Most bytes of written command records kept: the memory this cache may
    /// cost (Paho frees its own copy of a message once its record is written).
    pub(crate) bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self { records: 4096, bytes: 1024 * 1024 }
    }
}

/// Recycled record buffers kept, so that caching a record does not allocate.
const SPARE_BUFFERS_MAX: usize = 16;

/// A recycled buffer larger than this is freed instead of kept.
const SPARE_BUFFER_CAPACITY_MAX: usize = 64 * 1024;

/// The latest command records and every record Redis has not taken yet.
///
/// A record Redis has not taken yet (waiting: Redis was down or refused it)
/// is never evicted: until it is written, this is its only copy; nor is one
/// whose write was sent and not answered yet (in flight: a refusal may still
/// come back). Once written, only command records stay (Paho reads no other
/// back), and the oldest are evicted beyond the limits. Records are found by
/// key in a hash map, so a `put` costs the same with 1 or 4,096 cached.
#[derive(Debug)]
pub(crate) struct RecordCache {
    /// Where the count of records not in Redis is published (`Stats::unwritten_records`).
    counters: Arc<Counters>,
    records: KeyMap<FieldName, Cached>,
    /// The records Redis has not taken yet.
    waiting: KeySet<FieldName>,
    /// Written records, oldest first, for eviction: an entry whose stamp is
    /// no longer its record's (removed, rewritten, waiting or in flight again)
    /// is skipped.
    order: VecDeque<(u64, FieldName)>,
    next_stamp: u64,
    spare: Vec<Vec<u8>>,
    /// Bytes of the keys and values held.
    bytes: usize,
    limits: CacheLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Written,
    Waiting,
    /// Sent in the write numbered so, not answered yet.
    InFlight(u64),
}

#[derive(Debug)]
struct Cached {
    value: Vec<u8>,
    state: State,
    stamp: u64,
}

/// The keys a write carried, inline for the usual one or two.
pub(crate) type Carried = SmallVec<[FieldName; 2]>;

impl RecordCache {
    /// An empty cache that publishes its count of unwritten records to `counters`.
    pub(crate) fn new(counters: Arc<Counters>, limits: CacheLimits) -> Self {
        Self {
            counters,
            records: KeyMap::default(),
            waiting: KeySet::default(),
            order: VecDeque::new(),
            next_stamp: 0,
            spare: Vec::new(),
            bytes: 0,
            limits,
        }
    }

    fn publish_count(&self) {
        self.counters.set_unwritten_records(self.waiting.len());
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.next_stamp
    }

    /// Keeps `key`'s value, given as the parts Paho passed to `put`: written
    /// (`in_redis`) or waiting for Redis.
    pub(crate) fn insert(&mut self, key: &str, value_parts: &[&[u8]], in_redis: bool) {
        self.remove(key);
        let mut value = self.spare.pop().unwrap_or_default();
        value.clear();
        for part in value_parts {
            value.extend_from_slice(part);
        }
        self.bytes = self.bytes.saturating_add(key.len()).saturating_add(value.len());
        let stamp = self.stamp();
        let field = FieldName::from_slice(key.as_bytes());
        let state = if in_redis {
            self.order.push_back((stamp, field.clone()));
            State::Written
        } else {
            self.waiting.insert(field.clone());
            self.publish_count();
            State::Waiting
        };
        self.records.insert(field, Cached { value, state, stamp });
        self.evict();
    }

    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        self.records.get(key.as_bytes()).map(|cached| cached.value.as_slice())
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.records.contains_key(key.as_bytes())
    }

    /// Marks `key` as not in Redis (Redis lost it), so it is written again;
    /// returns whether a record Redis had was found.
    pub(crate) fn mark_not_in_redis(&mut self, key: &str) -> bool {
        match self.records.get_mut(key.as_bytes()) {
            Some(cached) if cached.state != State::Waiting => {
                cached.state = State::Waiting;
                self.waiting.insert(FieldName::from_slice(key.as_bytes()));
                self.publish_count();
                true
            }
            _ => false,
        }
    }

    /// Notes that Redis now holds `value_parts` under `key`: a command record
    /// is kept for Paho's read-back, an older value of another record that
    /// was waiting for Redis is dropped (it must not overwrite this one).
    pub(crate) fn in_redis(&mut self, key: &str, value_parts: &[&[u8]]) {
        if is_command_key(key) {
            self.insert(key, value_parts, true);
        } else {
            self.remove(key);
        }
    }

    /// Forgets `key`; returns whether it was there.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        match self.records.remove(key.as_bytes()) {
            Some(cached) => {
                if cached.state == State::Waiting {
                    self.waiting.remove(key.as_bytes());
                    self.publish_count();
                }
                self.recycle(key.len(), cached);
                true
            }
            None => false,
        }
    }

    /// The records Redis has not taken yet, as (key, value).
    pub(crate) fn not_in_redis(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.waiting
            .iter()
            .filter_map(|key| self.records.get(key).map(|cached| (key.as_slice(), cached.value.as_slice())))
    }

    pub(crate) fn not_in_redis_count(&self) -> usize {
        self.waiting.len()
    }

    /// Every waiting record was sent in write `seq`: it is in flight until
    /// that write is answered. Returns their keys.
    pub(crate) fn send_waiting(&mut self, seq: u64) -> Carried {
        let carried: Carried = self.waiting.drain().collect();
        for key in &carried {
            if let Some(cached) = self.records.get_mut(key) {
                cached.state = State::InFlight(seq);
            }
        }
        self.publish_count();
        carried
    }

    /// Redis took write `seq`: its records are written (a command record
    /// stays for Paho's read-back, any other is dropped).
    pub(crate) fn confirmed(&mut self, seq: u64, carried: &[FieldName]) {
        for key in carried {
            let Some(cached) = self.records.get(key) else { continue };
            if cached.state != State::InFlight(seq) {
                continue; // written again since, or removed and put anew
            }
            if std::str::from_utf8(key).is_ok_and(is_command_key) {
                let stamp = self.stamp();
                if let Some(cached) = self.records.get_mut(key) {
                    cached.state = State::Written;
                    cached.stamp = stamp;
                }
                self.order.push_back((stamp, key.clone()));
            } else if let Some(cached) = self.records.remove(key) {
                self.recycle(key.len(), cached);
            }
        }
        self.evict();
    }

    /// Redis refused write `seq`: its records wait again. Returns how many.
    pub(crate) fn refused(&mut self, seq: u64, carried: &[FieldName]) -> usize {
        let mut waiting = 0;
        for key in carried {
            if let Some(cached) = self.records.get_mut(key) {
                if cached.state == State::InFlight(seq) {
                    cached.state = State::Waiting;
                    self.waiting.insert(key.clone());
                    waiting += 1;
                }
            }
        }
        self.publish_count();
        waiting
    }

    /// Whether `key` waits for Redis (or is in flight to it).
    pub(crate) fn is_unwritten(&self, key: &[u8]) -> bool {
        self.records.get(key).is_some_and(|cached| cached.state != State::Written)
    }

    pub(crate) fn clear(&mut self) {
        for (key, cached) in std::mem::take(&mut self.records) {
            self.recycle(key.len(), cached);
        }
        self.waiting.clear();
        self.publish_count();
        self.order.clear();
    }

    fn evict(&mut self) {
        while self.records.len() > self.limits.records || self.bytes > self.limits.bytes {
            let Some((stamp, key)) = self.order.pop_front() else { return };
            let live = self.records.get(&key).is_some_and(|c| c.state == State::Written && c.stamp == stamp);
            if live {
                if let Some(cached) = self.records.remove(&key) {
                    self.recycle(key.len(), cached);
                }
            }
        }
        // Entries of records gone since pile up while nothing is evicted.
        if self.order.len() > self.records.len().saturating_mul(2).saturating_add(64) {
            let records = &self.records;
            self.order.retain(|(stamp, key)| {
                records.get(key).is_some_and(|c| c.state == State::Written && c.stamp == *stamp)
            });
        }
    }

    fn recycle(&mut self, key_len: usize, cached: Cached) {
        self.bytes = self.bytes.saturating_sub(key_len).saturating_sub(cached.value.len());
        if self.spare.len() < SPARE_BUFFERS_MAX && cached.value.capacity() <= SPARE_BUFFER_CAPACITY_MAX {
            self.spare.push(cached.value);
        }
    }
}

impl Drop for RecordCache {
    /// A closed (or reopened) store holds nothing in memory any more.
    fn drop(&mut self) {
        self.counters.set_unwritten_records(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_serves_the_latest_value_and_forgets_removed_records() {
        let mut cache = RecordCache::new(Arc::default(), CacheLimits::default());
        cache.insert("c-1", &[b"ab", b"c"], true);
        cache.insert("c-1", &[b"xyz"], true);
        assert_eq!(cache.get("c-1"), Some(&b"xyz"[..]));
        assert!(cache.remove("c-1"));
        assert_eq!(cache.get("c-1"), None);
        assert!(!cache.remove("c-1"));
    }

    #[test]
    fn cache_evicts_only_records_redis_has() {
        let mut cache = RecordCache::new(Arc::default(), CacheLimits::default());
        cache.insert("c-0", &[b"only copy"], false);
        for n in 1..=CacheLimits::default().records + 10 {
            cache.insert(&format!("c-{n}"), &[b"v"], true);
        }
        assert_eq!(cache.records.len(), CacheLimits::default().records);
        assert_eq!(cache.get("c-0"), Some(&b"only copy"[..]), "an unwritten record was evicted");
        assert_eq!(cache.get("c-1"), None, "the oldest written record stays");
        assert_eq!(cache.not_in_redis().count(), 1);
        assert_eq!(cache.not_in_redis_count(), 1);
        assert!(cache.remove("c-0"));
        assert_eq!(cache.not_in_redis_count(), 0);
        cache.insert("c-0", &[b"only copy"], false);
        assert!(cache.mark_not_in_redis(&format!("c-{}", CacheLimits::default().records + 10)));
        assert_eq!(cache.not_in_redis().count(), 2);
        assert_eq!(cache.not_in_redis_count(), 2);
        let carried = cache.send_waiting(1);
        assert_eq!(cache.not_in_redis_count(), 0);
        assert_eq!(cache.refused(1, &carried), 2, "a refusal makes them wait again");
        let carried = cache.send_waiting(2);
        cache.confirmed(2, &carried);
        assert_eq!(cache.not_in_redis_count(), 0);
        assert!(cache.contains("c-0"), "a written command record stays for the read-back");
    }

    #[test]
    fn cache_publishes_its_unwritten_count_until_dropped() {
        let counters = Arc::new(Counters::new());
        let mut cache = RecordCache::new(Arc::clone(&counters), CacheLimits::default());
        cache.insert("c-1", &[b"a"], false);
        cache.insert("c-2", &[b"b"], false);
        assert_eq!(counters.snapshot().unwritten_records, 2);
        cache.remove("c-1");
        assert_eq!(counters.snapshot().unwritten_records, 1);
        let carried = cache.send_waiting(1);
        cache.confirmed(1, &carried);
        assert_eq!(counters.snapshot().unwritten_records, 0);
        cache.insert("c-3", &[b"c"], false);
        drop(cache);
        assert_eq!(counters.snapshot().unwritten_records, 0, "a dropped cache holds nothing");
    }

    #[test]
    fn cache_is_bounded_in_bytes() {
        let mut cache = RecordCache::new(Arc::default(), CacheLimits::default());
        let big = vec![7u8; 300 * 1024];
        for n in 0..5 {
            cache.insert(&format!("c-{n}"), &[&big], true);
        }
        assert!(cache.bytes <= CacheLimits::default().bytes, "{} bytes cached", cache.bytes);
        assert_eq!(cache.get("c-4").map(<[u8]>::len), Some(big.len()));
    }
}
