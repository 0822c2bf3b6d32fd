//! The record table: one entry per Paho key the store knows of, saying what
//! the store holds of it and where it stands with Redis (see the diagram in
//! the core's module doc). Transitions are the named methods below; the
//! queues (`waiting`, `removals`, `riding`) only index the records in those
//! standings, so that a plan need not scan the table.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::paho;

/// A hash field name. Paho's keys are at most 13 bytes (`c5-4294967295`), so
/// they are stored inline: a record's key costs no allocation.
pub(crate) type FieldName = SmallVec<[u8; 16]>;

/// Maps and sets keyed by Paho's keys hash them with FxHash (rustc-hash), not
/// std's SipHash: SipHash resists keys chosen to collide, and these come from
/// Paho and from this store's own hash (whoever can write that can delete
/// it). SipHash took a tenth of the client's instructions in a run of QoS 1
/// publishes (BENCHMARKS.md, "Instructions per message").
pub(crate) type KeyMap<K, V> = FxHashMap<K, V>;
pub(crate) type KeySet<K> = FxHashSet<K>;

/// The number of a write or removal sent to Redis.
pub(crate) type Seq = u64;

/// What the store holds of a record's value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// As `open` read it, until Paho's restore reads it or ends.
    Restored(Vec<u8>),
    /// In memory: Redis has not taken it yet, or a command record kept for
    /// Paho's read-back (evicted beyond [`CacheLimits`]).
    Kept(Vec<u8>),
    /// Only in Redis.
    InRedis,
}

/// What a record is, as far as the core's rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `c-`: a queued command; for a QoS ≥ 1 PUBLISH, the message id its
    /// PUBLISH record will carry.
    Command { sent_as: Option<i32> },
    /// `s-`: a PUBLISH record; QoS 1 ones may have their removal deferred.
    Publish { qos1: bool },
    /// Any other record Paho writes.
    Other,
    /// A key Paho never writes: a write Redis refuses is not kept for later
    /// (see [`paho::put_failure_ignored`]).
    Foreign,
}

/// Where a record stands with Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Redis holds it as Paho last wrote it.
    InRedis,
    /// Redis must take it: every write carries it.
    WriteOwed,
    /// Carried by write `Seq`, not answered yet.
    Writing(Seq),
    /// Paho removed it; Redis must lose it.
    RemovalOwed,
    /// Its removal went out in `Seq`, not answered yet.
    Removing(Seq),
    /// A command record Paho removed while sending its message: its removal
    /// waits for the write of the message's PUBLISH record (`Core::moving`).
    AwaitsPublish,
    /// Its removal rides inside every write until Redis has its message's
    /// PUBLISH record (the key here): alone, the message would be in no record.
    RidesWith(FieldName),
    /// Its removal rode in write `Seq` with that PUBLISH record.
    Riding(Seq, FieldName),
}

impl Standing {
    /// Whether Paho sees the record: it wrote it and has not removed it.
    pub(crate) fn present(&self) -> bool {
        matches!(self, Standing::InRedis | Standing::WriteOwed | Standing::Writing(_))
    }
}

#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) value: Value,
    pub(crate) kind: Kind,
    pub(crate) standing: Standing,
    /// When its kept value was last written, for eviction.
    stamp: u64,
}

/// How much of the written command records the store keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheLimits {
    /// Most command records kept once written to Redis. A record evicted
    /// before Paho reads it back (a long burst, or records queued while
    /// offline) is read from Redis instead.
    pub(crate) records: usize,
    /// Most bytes of kept values: the memory this may cost (Paho frees its
    /// own copy of a message once its record is written).
    pub(crate) bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self { records: 4096, bytes: 1024 * 1024 }
    }
}

/// Recycled value buffers kept, so that keeping a record does not allocate.
const SPARE_BUFFERS_MAX: usize = 16;

/// A recycled buffer larger than this is freed instead of kept.
const SPARE_BUFFER_CAPACITY_MAX: usize = 64 * 1024;

/// Every record the store knows of, by key.
#[derive(Debug, Default)]
pub(crate) struct Table {
    map: KeyMap<FieldName, Record>,
    /// Records in `WriteOwed`.
    waiting: KeySet<FieldName>,
    /// Records in `RemovalOwed`, in the order Paho removed them.
    removals: Vec<FieldName>,
    /// Records in `RidesWith`.
    riding: Vec<FieldName>,
    /// Records in `Riding`: a rewrite of their PUBLISH record takes them along again.
    sent_riders: Vec<FieldName>,
    /// Written command records with a kept value, oldest first: an entry
    /// whose stamp is no longer its record's is skipped.
    recent: VecDeque<(u64, FieldName)>,
    next_stamp: u64,
    /// Kept values and their bytes (keys included).
    pub(super) kept: usize,
    pub(super) kept_bytes: usize,
    /// Records whose value is `Restored`.
    restored: usize,
    spare: Vec<Vec<u8>>,
    limits: CacheLimits,
}

impl Table {
    pub(crate) fn new(limits: CacheLimits) -> Self {
        Self { limits, ..Self::default() }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Record> {
        self.map.get(key)
    }

    /// Whether Paho sees `key` in the store.
    pub(crate) fn present(&self, key: &[u8]) -> bool {
        self.map.get(key).is_some_and(|record| record.standing.present())
    }

    /// The keys Paho sees, in no particular order.
    pub(crate) fn present_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.map.iter().filter(|(_, record)| record.standing.present()).map(|(key, _)| key.as_slice())
    }

    /// The keys Paho sees, highest message id first (see
    /// [`crate::paho::restore_order`]), the same order on every call. Only
    /// valid UTF-8 without NUL ever enters the table, so every key converts.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            self.present_keys().filter_map(|key| std::str::from_utf8(key).ok().map(str::to_owned)).collect();
        keys.sort_by_cached_key(|key| paho::restore_order(key));
        keys
    }

    /// The records a write carries: (key, value) of every `WriteOwed` one.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.waiting.iter().filter_map(|key| match self.map.get(key).map(|record| &record.value) {
            Some(Value::Kept(value) | Value::Restored(value)) => Some((key.as_slice(), value.as_slice())),
            _ => None,
        })
    }

    pub(crate) fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn removals(&self) -> &[FieldName] {
        &self.removals
    }

    pub(crate) fn riding(&self) -> &[FieldName] {
        &self.riding
    }

    /// Whether anything is owed to Redis.
    pub(crate) fn owes(&self) -> bool {
        !self.waiting.is_empty() || !self.removals.is_empty() || !self.riding.is_empty()
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.next_stamp
    }

    /// Moves `key` to `standing`, keeping the queues in step.
    fn stand(&mut self, key: &[u8], standing: Standing) {
        let Some(record) = self.map.get_mut(key) else { return };
        let before = std::mem::replace(&mut record.standing, standing);
        let field = FieldName::from_slice(key);
        match before {
            Standing::WriteOwed => {
                self.waiting.remove(key);
            }
            Standing::RemovalOwed => self.removals.retain(|owed| owed.as_slice() != key),
            Standing::RidesWith(_) => self.riding.retain(|owed| owed.as_slice() != key),
            Standing::Riding(..) => self.sent_riders.retain(|rider| rider.as_slice() != key),
            _ => {}
        }
        match self.map.get(key).map(|record| &record.standing) {
            Some(Standing::WriteOwed) => {
                self.waiting.insert(field);
            }
            Some(Standing::RemovalOwed) => self.removals.push(field),
            Some(Standing::RidesWith(_)) => self.riding.push(field),
            Some(Standing::Riding(..)) => self.sent_riders.push(field),
            _ => {}
        }
    }

    fn set_value(&mut self, key: &[u8], value: Value) {
        let Some(record) = self.map.get_mut(key) else { return };
        let before = std::mem::replace(&mut record.value, value);
        let key_len = key.len();
        match &before {
            Value::Kept(old) => {
                self.kept = self.kept.saturating_sub(1);
                self.kept_bytes = self.kept_bytes.saturating_sub(key_len.saturating_add(old.len()));
            }
            Value::Restored(_) => self.restored = self.restored.saturating_sub(1),
            Value::InRedis => {}
        }
        match self.map.get(key).map(|record| &record.value) {
            Some(Value::Kept(new)) => {
                self.kept = self.kept.saturating_add(1);
                self.kept_bytes = self.kept_bytes.saturating_add(key_len.saturating_add(new.len()));
            }
            Some(Value::Restored(_)) => self.restored = self.restored.saturating_add(1),
            _ => {}
        }
        if let Value::Kept(buffer) | Value::Restored(buffer) = before {
            if self.spare.len() < SPARE_BUFFERS_MAX && buffer.capacity() <= SPARE_BUFFER_CAPACITY_MAX {
                self.spare.push(buffer);
            }
        }
    }

    /// The record of `key`, made (in Redis, of `kind`) if the table lacks it.
    fn entry(&mut self, key: &[u8], kind: Kind) -> &mut Record {
        self.map.entry(FieldName::from_slice(key)).or_insert(Record {
            value: Value::InRedis,
            kind,
            standing: Standing::InRedis,
            stamp: 0,
        })
    }

    /// `open` found `key` holding `value`.
    pub(crate) fn restore(&mut self, key: &str, value: Vec<u8>) {
        self.entry(key.as_bytes(), kind_of(key, &value));
        self.set_value(key.as_bytes(), Value::Restored(value));
    }

    /// `open` found `old` holding a record that Paho restores only as `new`
    /// = `value`: Paho sees `new`, owed to Redis, and the removal of `old`
    /// rides with its write, so that Redis never holds both, nor neither.
    pub(crate) fn rewrite(&mut self, old: &str, new: &str, value: Vec<u8>) {
        let new_key = new.as_bytes();
        self.entry(new_key, kind_of(new, &value));
        self.set_value(new_key, Value::Restored(value));
        self.stand(new_key, Standing::WriteOwed);
        self.entry(old.as_bytes(), Kind::Foreign);
        self.stand(old.as_bytes(), Standing::RidesWith(FieldName::from_slice(new_key)));
    }

    /// Paho's restore is over (it writes only after it): what it did not
    /// read by then it never will.
    pub(crate) fn end_restore(&mut self) {
        if self.restored == 0 {
            return;
        }
        let restored: Vec<(FieldName, bool)> = self
            .map
            .iter()
            .filter(|(_, record)| matches!(record.value, Value::Restored(_)))
            .map(|(key, record)| (key.clone(), record.standing == Standing::InRedis))
            .collect();
        for (key, in_redis) in restored {
            // One Redis still owes stays, as any value not in Redis.
            let value = match self.map.get_mut(&key).map(|record| &mut record.value) {
                Some(Value::Restored(value)) if !in_redis => Value::Kept(std::mem::take(value)),
                _ => Value::InRedis,
            };
            self.set_value(&key, value);
        }
    }

    /// `put`: Paho wrote `parts` under `key`; Redis owes it. Returns the
    /// standing it had.
    pub(crate) fn write(&mut self, key: &str, parts: &[&[u8]]) -> Option<Standing> {
        let mut value = self.spare.pop().unwrap_or_default();
        value.clear();
        for part in parts {
            value.extend_from_slice(part);
        }
        let kind = kind_of(key, &value);
        let key = key.as_bytes();
        // A PUBLISH record written again (Paho resends it, `MQTTPacket_sends`)
        // while a write carrying it and its riders is unanswered: this write
        // carries them too, lest it land alone and the other be refused.
        let resent: SmallVec<[FieldName; 1]> = self
            .sent_riders
            .iter()
            .filter(|rider| {
                matches!(self.map.get(*rider).map(|r| &r.standing), Some(Standing::Riding(_, p)) if p.as_slice() == key)
            })
            .cloned()
            .collect();
        for rider in resent {
            self.stand(&rider, Standing::RidesWith(FieldName::from_slice(key)));
        }
        let before = self.map.get(key).map(|record| record.standing.clone());
        self.entry(key, kind).kind = kind;
        self.set_value(key, Value::Kept(value));
        self.stand(key, Standing::WriteOwed);
        before
    }

    /// Paho removed `key` (or a failed `put` left it so): `standing` says
    /// what Redis owes, a record of a key the table lacks included.
    pub(crate) fn remove(&mut self, key: &[u8], standing: Standing) {
        self.entry(key, kind_of(std::str::from_utf8(key).unwrap_or_default(), &[]));
        self.set_value(key, Value::InRedis);
        self.stand(key, standing);
    }

    /// Drops `key` from the table: Redis has lost it, and so has Paho.
    pub(crate) fn forget(&mut self, key: &[u8]) {
        self.set_value(key, Value::InRedis);
        self.stand(key, Standing::InRedis);
        self.map.remove(key);
    }

    /// The value of `key` for Paho's `get`, if held. A restored value is
    /// handed over, unless Redis still owes it or it is a command record
    /// (Paho reads that again when it sends it).
    pub(crate) fn read(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let record = self.map.get(key)?;
        match &record.value {
            Value::Kept(value) => Some(value.clone()),
            Value::Restored(value) => {
                let value = value.clone();
                if record.standing != Standing::InRedis {
                    self.set_value(key, Value::Kept(value.clone()));
                } else if matches!(record.kind, Kind::Command { .. }) {
                    self.set_value(key, Value::Kept(value.clone()));
                    self.remember(key);
                    self.evict();
                } else {
                    self.set_value(key, Value::InRedis);
                }
                Some(value)
            }
            Value::InRedis => None,
        }
    }

    /// Every record of the queues is carried by `seq`: `WriteOwed` ones when
    /// `records`, `RemovalOwed` ones when `removals`, `RidesWith` ones with
    /// records. Returns their keys.
    pub(crate) fn send(&mut self, seq: Seq, records: bool, removals: bool) -> Carried {
        // Drained, not taken: the queues keep their capacity (a steady-state
        // `put` allocates nothing, `tests/allocations.rs`).
        let Self { map, waiting, removals: owed, riding, sent_riders, .. } = self;
        let mut carried = Carried::new();
        let mut carry = |key: FieldName, to: fn(Seq, &Standing) -> Option<Standing>| {
            if let Some(record) = map.get_mut(&key) {
                if let Some(standing) = to(seq, &record.standing) {
                    record.standing = standing;
                    carried.push(key);
                }
            }
        };
        if records {
            waiting.drain().for_each(|key| carry(key, |seq, _| Some(Standing::Writing(seq))));
            for key in riding.drain(..) {
                sent_riders.push(key.clone());
                carry(key, |seq, standing| match standing {
                    Standing::RidesWith(publish) => Some(Standing::Riding(seq, publish.clone())),
                    _ => None,
                });
            }
        }
        if removals {
            owed.drain(..).for_each(|key| carry(key, |seq, _| Some(Standing::Removing(seq))));
        }
        carried
    }

    /// Redis took `seq`: its records are in Redis (a command record's value
    /// stays for Paho's read-back, any other is dropped), its removals done.
    /// Returns how many records it wrote.
    pub(crate) fn confirmed(&mut self, seq: Seq, carried: &[FieldName]) -> usize {
        let mut written = 0;
        for key in carried {
            let Some(record) = self.map.get(key) else { continue };
            match &record.standing {
                Standing::Writing(sent) if *sent == seq => {
                    written += 1;
                    let command = matches!(record.kind, Kind::Command { .. });
                    self.stand(key, Standing::InRedis);
                    if command {
                        self.remember(key);
                    } else {
                        self.set_value(key, Value::InRedis);
                    }
                }
                Standing::Removing(sent) | Standing::Riding(sent, _) if *sent == seq => {
                    self.forget(key);
                }
                _ => {} // written or removed again since
            }
        }
        self.evict();
        written
    }

    /// Redis refused `seq`: what it carried is owed again. Returns how many
    /// records wait again.
    pub(crate) fn refused(&mut self, seq: Seq, carried: &[FieldName]) -> usize {
        let mut waiting = 0;
        for key in carried {
            let Some(record) = self.map.get(key) else { continue };
            let again = match &record.standing {
                // Not Paho's: the write failed, as far as the store can tell.
                Standing::Writing(sent) if *sent == seq && record.kind == Kind::Foreign => {
                    self.forget(key);
                    continue;
                }
                Standing::Writing(sent) if *sent == seq => {
                    waiting += 1;
                    Standing::WriteOwed
                }
                Standing::Removing(sent) if *sent == seq => Standing::RemovalOwed,
                Standing::Riding(sent, publish) if *sent == seq => {
                    if self.unwritten(publish) {
                        Standing::RidesWith(publish.clone())
                    } else {
                        Standing::RemovalOwed
                    }
                }
                _ => continue,
            };
            self.stand(key, again);
        }
        waiting
    }

    /// Whether `key` is present and Redis may not have it yet.
    pub(crate) fn unwritten(&self, key: &[u8]) -> bool {
        self.map
            .get(key)
            .is_some_and(|record| matches!(record.standing, Standing::WriteOwed | Standing::Writing(_)))
    }

    /// The removals riding with PUBLISH record `publish` need wait no longer
    /// (Paho is done with the message).
    pub(crate) fn release_riders(&mut self, publish: &[u8]) {
        let riders: SmallVec<[FieldName; 1]> = self
            .riding
            .iter()
            .filter(|key| {
                matches!(self.map.get(*key).map(|r| &r.standing), Some(Standing::RidesWith(p)) if p.as_slice() == publish)
            })
            .cloned()
            .collect();
        for key in riders {
            self.stand(&key, Standing::RemovalOwed);
        }
    }

    /// After a reconnect, Redis holds `present`: what it lost is written
    /// again where a value is held, and forgotten (returned) where not; what
    /// it holds that Paho removed is removed again. Returns (written again,
    /// lost, stale).
    pub(crate) fn reconcile(&mut self, present: &KeySet<&[u8]>) -> (usize, Vec<String>, Vec<String>) {
        let missing: Vec<FieldName> =
            self.present_keys().filter(|key| !present.contains(key)).map(FieldName::from_slice).collect();
        let (mut rewritten, mut lost) = (0usize, Vec::new());
        for key in missing {
            let Some(record) = self.map.get(&key) else { continue };
            match (&record.value, &record.standing) {
                (_, Standing::WriteOwed) => {}
                (Value::Kept(_) | Value::Restored(_), _) => {
                    rewritten += 1;
                    self.stand(&key, Standing::WriteOwed);
                }
                (Value::InRedis, _) => {
                    lost.push(String::from_utf8_lossy(&key).into_owned());
                    self.forget(&key);
                }
            }
        }
        let mut stale = Vec::new();
        for field in present {
            let owed = match self.map.get(*field).map(|record| &record.standing) {
                None | Some(Standing::Removing(_)) => false,
                Some(standing) => !standing.present(),
            };
            if !owed && !self.present(field) {
                stale.push(String::from_utf8_lossy(field).into_owned());
                self.remove(field, Standing::RemovalOwed);
            }
        }
        (rewritten, lost, stale)
    }

    /// `clear` ran: nothing is left.
    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.limits);
    }

    /// A command record just written keeps its value for Paho's read-back,
    /// until evicted (by the caller, once its other values are dropped: a
    /// write's records that are not kept must not push this one out).
    fn remember(&mut self, key: &[u8]) {
        let stamp = self.stamp();
        if let Some(record) = self.map.get_mut(key) {
            record.stamp = stamp;
            self.recent.push_back((stamp, FieldName::from_slice(key)));
        }
    }

    /// Drops the oldest kept values of written records beyond the limits.
    fn evict(&mut self) {
        while self.kept > self.limits.records || self.kept_bytes > self.limits.bytes {
            let Some((stamp, key)) = self.recent.pop_front() else { return };
            if evictable(&self.map, &key, stamp) {
                self.set_value(&key, Value::InRedis);
            }
        }
        // Entries of records gone since pile up while nothing is evicted.
        if self.recent.len() > self.kept.saturating_mul(2).saturating_add(64) {
            let map = &self.map;
            self.recent.retain(|(stamp, key)| evictable(map, key, *stamp));
        }
    }
}

/// Whether `key`'s kept value is the one written at `stamp`, and Redis has it.
fn evictable(map: &KeyMap<FieldName, Record>, key: &[u8], stamp: u64) -> bool {
    map.get(key).is_some_and(|record| {
        record.stamp == stamp
            && record.standing == Standing::InRedis
            && matches!(record.value, Value::Kept(_))
    })
}

/// The keys a command carried, inline for the usual one or two.
pub(crate) type Carried = SmallVec<[FieldName; 2]>;

fn kind_of(key: &str, value: &[u8]) -> Kind {
    match paho::kind_of(key) {
        Some(paho::Kind::Command) => Kind::Command { sent_as: paho::Command::read(value).sent_as() },
        Some(paho::Kind::PublishSent) => {
            Kind::Publish { qos1: paho::is_qos1_publish(key, value.first().copied()) }
        }
        Some(_) => Kind::Other,
        // `paho::put_failure_ignored` is false exactly for these.
        None => Kind::Foreign,
    }
}

#[cfg(test)]
impl Table {
    /// The invariant the queues keep: each indexes exactly the records in
    /// its standing, and every command a standing names is in `in_flight`.
    pub(crate) fn check_queues(&self, in_flight: &[Seq]) -> Result<(), String> {
        let mut found: [Vec<FieldName>; 4] = Default::default();
        for (key, record) in &self.map {
            let queue = match &record.standing {
                Standing::WriteOwed => 0,
                Standing::RemovalOwed => 1,
                Standing::RidesWith(_) => 2,
                Standing::Riding(seq, _) | Standing::Writing(seq) | Standing::Removing(seq)
                    if !in_flight.contains(seq) =>
                {
                    return Err(format!("{key:?} is {:?}, not in flight", record.standing));
                }
                Standing::Riding(..) => 3,
                _ => continue,
            };
            if let Some(keys) = found.get_mut(queue) {
                keys.push(key.clone());
            }
            if queue == 0 && record.value == Value::InRedis {
                return Err(format!("{key:?} is owed without a value"));
            }
        }
        let waiting: Vec<FieldName> = self.waiting.iter().cloned().collect();
        let queues = [waiting, self.removals.clone(), self.riding.clone(), self.sent_riders.clone()];
        for (mut expected, mut queue) in found.into_iter().zip(queues) {
            expected.sort();
            queue.sort();
            if expected != queue {
                return Err(format!("a queue holds {queue:?}, the records in its standing are {expected:?}"));
            }
        }
        Ok(())
    }
}
