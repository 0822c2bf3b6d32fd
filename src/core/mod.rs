//! The store's core: what the store knows and decides, without a socket.
//!
//! Each Paho call goes in as a method call; what must happen in Redis comes
//! out as a [`Plan`] (commands as data), and what became of it goes back in
//! as an [`Exchange`] through [`Core::complete`]. After each call the caller
//! asks [`Core::follow_up`] for what the core wants done next (a check of the
//! hash after a reconnect, removals owed). Nothing here blocks or does I/O, so
//! every decision is tested in microseconds, and the crash-point checker
//! (`checker`, in tests) replays recorded Paho call sequences against a
//! simulated Redis that fails, hangs, refuses and restarts.
//!
//! The promise kept here: at every instant, what Redis holds is what a
//! restarted client may safely restore. Paho's own order of calls has one
//! crash window, which the core closes: `MQTTAsync_processCommand` removes a
//! command record before it writes the PUBLISH record of the same message, so
//! the removal waits for that write and runs inside it, atomically (see
//! [`crate::paho::CommandRemoval`] for how the core tells that removal from
//! Paho dropping a message).

mod cache;
pub(crate) mod drive;
mod index;
mod plan;

#[cfg(test)]
mod checker;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use redis::RedisError;
use smallvec::SmallVec;

pub(crate) use cache::{CacheLimits, RecordCache};
pub(crate) use index::{FieldIndex, FieldName, KeyMap, KeySet};
pub(crate) use plan::{Command, Exchange, Failure, Plan, Records, Reply};

use crate::paho::{self, CommandRemoval, PreviousCall};
use crate::stats::Counters;
use crate::Error;

/// The hash field in which a store with `max_store_bytes` keeps its byte
/// count. Never a Paho key, and never shown to Paho (which would try to
/// restore it, fail, and delete it); tools that read a store skip it.
pub const BYTE_COUNT_FIELD: &str = "paho-mqtt-redis:bytes";

/// What the core is told of the store's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    /// `max_store_bytes`.
    pub(crate) budget: Option<u64>,
    /// `defer_qos1_removals`.
    pub(crate) defer_qos1_removals: bool,
    pub(crate) cache: CacheLimits,
    /// 0.4's rule, for the checker to show it catches it: every command
    /// record's removal waits for the next write.
    #[cfg(test)]
    pub(crate) legacy_command_removals: bool,
}

/// What a completed call gives back to Paho.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Done,
    Value(Vec<u8>),
}

/// A removal that waits for the write of its message's PUBLISH record.
#[derive(Debug, Clone)]
struct Handoff {
    command: FieldName,
    /// The message id the PUBLISH record carries in its key.
    message_id: i32,
}

/// A write or removal sent to Redis whose reply has not been taken in yet,
/// with what to undo if Redis refused it.
#[derive(Debug)]
struct Unconfirmed {
    seq: u64,
    /// The Redis command it went out as, for the error of a refusal.
    command: &'static str,
    /// The record `put` wrote, if any, for the log.
    key: Option<FieldName>,
    /// The records the write carried (in flight in the cache).
    records: cache::Carried,
    removals: SmallVec<[FieldName; 2]>,
    /// Tied removals the write carried, with their PUBLISH records.
    tied: SmallVec<[(FieldName, FieldName); 1]>,
}

/// What the core waits to hear of, one entry per plan handed out, oldest first.
#[derive(Debug)]
enum Pending {
    Open,
    KeyType,
    Put(PendingPut),
    Get {
        key: String,
    },
    Remove {
        removals: usize,
    },
    /// `records`: the flush wrote the records waiting in memory (else it only removed).
    Flush {
        removals: usize,
        records: bool,
    },
    Resync,
    Clear,
    ByteCount,
}

#[derive(Debug)]
struct PendingPut {
    /// Inline: a `put` allocates nothing for the core's bookkeeping.
    key: FieldName,
    /// How many of the owed removals ride inside the write.
    removals: usize,
    /// The record is kept in memory whatever Redis says (Paho ignores the
    /// `put`'s result), until Redis has taken it.
    keep: bool,
    was_indexed: bool,
    /// The write took the place of an owed removal of the same field, which
    /// is owed again if the write fails (Paho was told the put failed).
    superseded_removal: bool,
    qos1: bool,
}

/// The core of one open store.
#[derive(Debug)]
pub(crate) struct Core {
    hash: String,
    settings: Settings,
    /// The fields as Paho wrote them: a removed field leaves at once, even
    /// while its removal waits.
    fields: FieldIndex,
    /// The hash as `open` read it, until Paho's restore has read each record.
    snapshot: KeyMap<String, Vec<u8>>,
    cache: RecordCache,
    /// The command records of QoS ≥ 1 PUBLISH commands: what each will be sent as.
    publishes: KeyMap<FieldName, paho::Command>,
    /// Fields removed locally whose removal has not reached Redis yet.
    removals_owed: Vec<FieldName>,
    handoff: Option<Handoff>,
    /// Command records whose removal rides only inside a write, because the
    /// PUBLISH record of their message waits in memory (`tied_to`, in the
    /// same order): removed alone, the message would be in no record in Redis.
    tied: Vec<FieldName>,
    tied_to: Vec<FieldName>,
    /// The QoS 1 PUBLISH records whose removal `defer_qos1_removals` defers.
    qos1_publishes: KeySet<FieldName>,
    previous: PreviousCall,
    /// The connection generation the index was last checked against.
    synced_generation: u64,
    /// A command may have run late (it timed out, or the connection broke
    /// after it was sent): the hash is checked at the next chance.
    outcome_unknown: bool,
    /// The owed removals (and kept records) should go out now, not with the next write.
    flush_due: bool,
    /// `open` found a byte count to repair: the value to set, or `None` to drop it.
    byte_count_repair: Option<Option<u64>>,
    pending: VecDeque<Pending>,
    /// Writes and removals sent and not answered yet, oldest first (a
    /// pipelined transport answers them later, see [`Core::confirm`]).
    unconfirmed: VecDeque<Unconfirmed>,
    next_seq: u64,
}

impl Core {
    /// A core for the store in `hash`, before `open` has read it.
    pub(crate) fn new(hash: String, settings: Settings, counters: Arc<Counters>) -> Self {
        Self {
            hash,
            settings,
            fields: FieldIndex::default(),
            snapshot: KeyMap::default(),
            cache: RecordCache::new(counters, settings.cache),
            publishes: KeyMap::default(),
            removals_owed: Vec::new(),
            handoff: None,
            tied: Vec::new(),
            tied_to: Vec::new(),
            qos1_publishes: KeySet::default(),
            previous: PreviousCall::Other,
            synced_generation: 0,
            outcome_unknown: false,
            flush_due: false,
            byte_count_repair: None,
            pending: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            next_seq: 0,
        }
    }

    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether Paho's `key` is in the store.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.fields.contains(key)
    }

    /// How many records Redis has not taken yet.
    pub(crate) fn unwritten(&self) -> usize {
        self.cache.not_in_redis_count()
    }

    /// The store's keys, as Paho's restore lists them.
    pub(crate) fn keys(&mut self) -> Vec<String> {
        self.end_handoff();
        self.previous = PreviousCall::Other;
        self.fields.keys()
    }

    fn plan<'a>(&'a self, commands: impl IntoIterator<Item = Command<'a>>) -> Plan<'a> {
        Plan { hash: &self.hash, budget: self.settings.budget, commands: commands.into_iter().collect() }
    }

    /// `open`: read the whole hash.
    pub(crate) fn open(&mut self) -> Plan<'_> {
        self.pending.push_back(Pending::Open);
        self.plan([Command::ReadAll])
    }

    /// After `open` found the key is not a hash: ask what it is.
    pub(crate) fn key_type(&mut self) -> Plan<'_> {
        self.pending.push_back(Pending::KeyType);
        self.plan([Command::KeyType])
    }

    /// `put`: writes the record, with the records kept in memory and the
    /// owed removals, in one command.
    pub(crate) fn put<'a>(&'a mut self, key: &'a str, parts: &'a [&'a [u8]]) -> Plan<'a> {
        // Paho writes only after its restore is over; what it did not read by
        // then it never will.
        if !self.snapshot.is_empty() {
            self.snapshot = KeyMap::default();
        }
        let command_record = paho::is_command_key(key);
        match &self.handoff {
            Some(handoff) if paho::is_publish_record_of(key, handoff.message_id) => {
                // The write that ends the handoff carries its removal, and so
                // does every write until this record is in Redis.
                if let Some(handoff) = self.handoff.take() {
                    self.tied.push(handoff.command);
                    self.tied_to.push(FieldName::from_slice(key.as_bytes()));
                }
            }
            // A new command under the same key (Paho numbers anew after a
            // client discarded its records): the waiting removal is stale.
            Some(handoff) if handoff.command.as_slice() == key.as_bytes() => self.handoff = None,
            // `MQTTAsync_addCommand` may queue a command between the removal
            // and the PUBLISH record's write (it takes only `mqttcommand_mutex`).
            Some(_) if command_record => {}
            Some(_) => self.end_handoff(),
            None => {}
        }
        if let Some(at) = self.tied.iter().position(|tied| tied.as_slice() == key.as_bytes()) {
            // The same: this write must not be followed by that removal.
            self.tied.remove(at);
            self.tied_to.remove(at);
        }
        // This write replaces the field, so an owed removal of it must not follow it.
        let owed_before = self.removals_owed.len();
        self.removals_owed.retain(|owed| owed.as_slice() != key.as_bytes());
        let superseded_removal = self.removals_owed.len() < owed_before;
        let first_byte = parts.iter().find_map(|part| part.first().copied());
        let qos1 = paho::is_qos1_publish(key, first_byte);
        // A QoS 1 PUBLISH record may leave removals owed (see
        // `Builder::defer_qos1_removals`): a crash then restores a duplicate.
        let removals = if self.settings.defer_qos1_removals && qos1 { 0 } else { self.removals_owed.len() };
        if removals == self.removals_owed.len() {
            self.flush_due = false;
        }
        let keep = paho::put_failure_ignored(key);
        if keep {
            self.cache.insert(key, parts, false);
        }
        if command_record {
            let command = self.cache.get(key).map_or(paho::Command::Other, paho::Command::read);
            let field = FieldName::from_slice(key.as_bytes());
            if command.sent_as().is_some() {
                self.publishes.insert(field, command);
            } else {
                self.publishes.remove(&field);
            }
        }
        let kept = self.cache.not_in_redis_count() > usize::from(keep);
        self.pending.push_back(Pending::Put(PendingPut {
            key: FieldName::from_slice(key.as_bytes()),
            removals,
            keep,
            was_indexed: self.fields.contains(key),
            superseded_removal,
            qos1,
        }));
        self.previous = PreviousCall::Other;
        let this: &'a Self = self;
        let records = Records { kept: kept.then_some(&this.cache), new: Some((key, parts)) };
        let owed = this.removals_owed.get(..removals).unwrap_or_default();
        this.plan([Command::Write { records, removals: owed, tied: &this.tied }])
    }

    /// `get`: answered from memory when the core has the record, else a plan
    /// to read it.
    pub(crate) fn get<'a>(&'a mut self, key: &'a str) -> Result<Result<Vec<u8>, Plan<'a>>, Error> {
        self.end_handoff();
        self.previous = if paho::is_command_key(key) {
            PreviousCall::GetCommand(FieldName::from_slice(key.as_bytes()))
        } else {
            PreviousCall::Other
        };
        if let Some(value) = self.snapshot.remove(key) {
            if self.snapshot.is_empty() {
                self.snapshot = KeyMap::default();
            }
            // Paho reads a restored command record again when it sends it.
            self.cache.in_redis(key, &[&value]);
            return Ok(Ok(value));
        }
        if let Some(value) = self.cache.get(key) {
            return Ok(Ok(value.to_vec()));
        }
        if !self.fields.contains(key) {
            return Err(Error::KeyNotFound { key: key.to_owned() });
        }
        self.pending.push_back(Pending::Get { key: key.to_owned() });
        Ok(Err(self.plan([Command::Read(key)])))
    }

    /// Where a `get` of `key` would be answered from memory, if it would.
    pub(crate) fn in_memory(&self, key: &str) -> Option<drive::Served> {
        if self.snapshot.contains_key(key) {
            Some(drive::Served::Snapshot)
        } else if self.cache.contains(key) {
            Some(drive::Served::Cache)
        } else {
            None
        }
    }

    /// `remove`: the plan is empty when the removal waits (or when the key
    /// was never written).
    pub(crate) fn remove(&mut self, key: &str) -> Plan<'_> {
        self.snapshot.remove(key);
        let command_record = paho::is_command_key(key);
        let how = command_record.then(|| CommandRemoval::of(key, &self.previous));
        // A command dropped by `MQTTAsync_addCommand` may come between a
        // removal and its PUBLISH record's write; anything else means Paho
        // did not write it.
        if how != Some(CommandRemoval::Done) {
            self.end_handoff();
        }
        self.previous = PreviousCall::Other;
        let field = FieldName::from_slice(key.as_bytes());
        let publish = self.publishes.remove(&field);
        self.cache.remove(key);
        if let Some(at) = self.tied_to.iter().position(|publish| *publish == field) {
            // Paho is done with the message before Redis took its PUBLISH
            // record: its command record's removal need wait no longer.
            self.tied_to.remove(at);
            self.removals_owed.push(self.tied.remove(at));
        }
        let acknowledged_qos1 = self.qos1_publishes.remove(key.as_bytes());
        if !self.fields.remove(key) {
            // Never written (Paho removes every key a message might have used).
            return self.flush_if_due();
        }
        #[cfg(test)]
        if self.settings.legacy_command_removals && command_record {
            self.removals_owed.push(field);
            return self.plan([]);
        }
        if how == Some(CommandRemoval::Sending) {
            if let Some(message_id) = publish.and_then(paho::Command::sent_as) {
                self.handoff = Some(Handoff { command: field, message_id });
                return self.flush_if_due();
            }
        }
        self.removals_owed.push(field);
        if acknowledged_qos1 && self.settings.defer_qos1_removals {
            return self.flush_if_due();
        }
        self.flush_due = false;
        let removals = self.removals_owed.len();
        self.pending.push_back(Pending::Remove { removals });
        self.plan([Command::Remove(&self.removals_owed)])
    }

    /// `clear`: deletes the hash.
    pub(crate) fn clear(&mut self) -> Plan<'_> {
        self.pending.push_back(Pending::Clear);
        self.plan([Command::DeleteAll])
    }

    /// `close`: what is still owed, sent now.
    pub(crate) fn close(&mut self) -> Plan<'_> {
        self.end_handoff();
        self.flush_plan()
    }

    /// The waiting removal goes out now: Paho is not writing that PUBLISH
    /// record (it failed to send the command, or the invariant
    /// `CommandRemoval` relies on no longer holds).
    fn end_handoff(&mut self) {
        if let Some(handoff) = self.handoff.take() {
            log::debug!(
                "redis persistence: {:?} was removed but the PUBLISH record of message {} was not \
                 written next; removing it now",
                String::from_utf8_lossy(&handoff.command),
                handoff.message_id
            );
            self.removals_owed.push(handoff.command);
            self.flush_due = true;
        }
    }

    fn flush_if_due(&mut self) -> Plan<'_> {
        if !self.flush_due {
            return self.plan([]);
        }
        self.flush_plan()
    }

    /// One command with every kept record and owed removal, or an empty plan.
    fn flush_plan(&mut self) -> Plan<'_> {
        self.flush_due = false;
        let kept = self.cache.not_in_redis_count() > 0;
        let removals = self.removals_owed.len();
        if !kept && removals == 0 {
            return self.plan([]);
        }
        self.pending.push_back(Pending::Flush { removals, records: kept });
        let command = if kept {
            Command::Write {
                records: Records { kept: Some(&self.cache), new: None },
                removals: &self.removals_owed,
                tied: &self.tied,
            }
        } else {
            Command::Remove(&self.removals_owed)
        };
        self.plan([command])
    }

    /// What the core wants done after a call: a check of the hash after a
    /// reconnect or a command that may have run late, the owed removals, a
    /// byte count repair. `None` when nothing is wanted.
    pub(crate) fn follow_up(&mut self, generation: u64) -> Option<Plan<'_>> {
        if self.synced_generation != generation || self.outcome_unknown {
            self.pending.push_back(Pending::Resync);
            return Some(self.plan([Command::ListFields]));
        }
        if let Some(repair) = self.byte_count_repair.take() {
            self.pending.push_back(Pending::ByteCount);
            let command = repair.map_or(Command::DropByteCount, Command::SetByteCount);
            return Some(self.plan([command]));
        }
        if self.flush_due {
            let plan = self.flush_plan();
            return (!plan.is_empty()).then_some(plan);
        }
        None
    }

    /// Takes in what became of the oldest plan handed out.
    pub(crate) fn complete(&mut self, exchange: Exchange) -> Result<Answer, Error> {
        let Exchange { replies, failure, generation, sent } = exchange;
        let mut replies = replies.into_iter();
        let outcome = match (replies.next(), failure) {
            (Some(reply), _) => Outcome::Replied(reply),
            (None, Some(failure)) => Outcome::Failed(failure),
            (None, None) if sent => Outcome::Sent,
            (None, None) => Outcome::Failed(Failure { error: Error::NotOpen, may_run_late: false }),
        };
        if let Outcome::Failed(failure) = &outcome {
            self.outcome_unknown |= failure.may_run_late;
        }
        let Some(pending) = self.pending.pop_front() else {
            return Err(Error::NotOpen);
        };
        match pending {
            Pending::Open => self.opened(outcome, generation),
            Pending::KeyType => match outcome {
                Outcome::Replied(Ok(Reply::Type(found))) => {
                    Err(Error::NotAHash { hash: self.hash.clone(), found })
                }
                _ => Err(Error::NotAHash {
                    hash: self.hash.clone(),
                    found: "value of another type".to_owned(),
                }),
            },
            Pending::Put(put) => self.put_done(put, outcome),
            Pending::Get { key } => match outcome {
                Outcome::Replied(Ok(Reply::Value(Some(value)))) => Ok(Answer::Value(value)),
                Outcome::Replied(Ok(_)) => Err(Error::KeyNotFound { key }),
                Outcome::Replied(Err(source)) => Err(self.command_error("HGET", source)),
                Outcome::Failed(failure) => Err(failure.error),
                Outcome::Sent => Err(Error::KeyNotFound { key }),
            },
            Pending::Remove { removals } => {
                self.owed_sent(removals, false, outcome);
                Ok(Answer::Done)
            }
            Pending::Flush { removals, records } => {
                self.owed_sent(removals, records, outcome);
                Ok(Answer::Done)
            }
            Pending::Resync => {
                self.resynced(outcome, generation);
                Ok(Answer::Done)
            }
            Pending::Clear => match outcome {
                Outcome::Replied(Ok(_)) => {
                    self.cleared(generation);
                    Ok(Answer::Done)
                }
                Outcome::Replied(Err(source)) => Err(self.command_error("DEL", source)),
                Outcome::Failed(failure) => {
                    // A DEL that timed out may still run once Redis answers again.
                    self.outcome_unknown = true;
                    Err(failure.error)
                }
                Outcome::Sent => {
                    self.cleared(generation);
                    Ok(Answer::Done)
                }
            },
            Pending::ByteCount => {
                match outcome {
                    Outcome::Replied(Ok(_)) | Outcome::Sent => {}
                    Outcome::Replied(Err(error)) => {
                        log::warn!(
                            "redis persistence: cannot repair the byte count of `{}`: {error}",
                            self.hash
                        )
                    }
                    Outcome::Failed(failure) => log::warn!(
                        "redis persistence: cannot repair the byte count of `{}`: {}",
                        self.hash,
                        failure.error
                    ),
                }
                Ok(Answer::Done)
            }
        }
    }

    fn command_error(&self, command: &'static str, source: RedisError) -> Error {
        Error::command(command, &self.hash, source)
    }

    fn opened(&mut self, outcome: Outcome, generation: u64) -> Result<Answer, Error> {
        let entries = match outcome {
            Outcome::Replied(Ok(Reply::Entries(entries))) => entries,
            Outcome::Replied(Ok(_)) => Vec::new(),
            Outcome::Replied(Err(source)) if source.code() == Some("WRONGTYPE") => {
                return Err(Error::NotAHash { hash: self.hash.clone(), found: String::new() })
            }
            Outcome::Replied(Err(source)) => return Err(self.command_error("HGETALL", source)),
            Outcome::Failed(failure) => return Err(failure.error),
            Outcome::Sent => Vec::new(),
        };
        self.synced_generation = generation;
        self.snapshot = KeyMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut byte_count = None;
        let mut bytes = 0u64;
        for (field, value) in entries {
            if field == BYTE_COUNT_FIELD.as_bytes() {
                byte_count = Some(String::from_utf8_lossy(&value).trim().parse::<u64>().ok());
                continue;
            }
            bytes = bytes.saturating_add(u64::try_from(value.len()).unwrap_or(u64::MAX));
            let Some(key) = paho_key(field) else { continue };
            if paho::is_command_key(&key) {
                let command = paho::Command::read(&value);
                if command.sent_as().is_some() {
                    self.publishes.insert(FieldName::from_slice(key.as_bytes()), command);
                }
            }
            self.fields.insert(&key);
            self.snapshot.insert(key, value);
        }
        // A byte count is trusted only if it is the sum of the values: one
        // left by an earlier run without a budget is stale.
        self.byte_count_repair = match (self.settings.budget, byte_count) {
            (Some(_), Some(count)) if count != Some(bytes) => Some(Some(bytes)),
            (None, Some(_)) => Some(None),
            _ => None,
        };
        Ok(Answer::Done)
    }

    fn put_done(&mut self, put: PendingPut, outcome: Outcome) -> Result<Answer, Error> {
        let PendingPut { key: field, removals, keep, was_indexed, superseded_removal, qos1, .. } = put;
        // Built from a `&str` by `put`.
        let key = std::str::from_utf8(&field).unwrap_or_default();
        match outcome {
            Outcome::Replied(reply) => {
                let written = reply.is_ok();
                self.sent(Some(&field), removals, true);
                if written || keep {
                    self.fields.insert(key);
                }
                if written && qos1 {
                    self.qos1_publishes.insert(field.clone());
                }
                match self.confirm(reply.map(drop)) {
                    Some(error) if !keep => {
                        if superseded_removal {
                            self.removals_owed.push(field);
                        }
                        Err(error)
                    }
                    _ => Ok(Answer::Done),
                }
            }
            Outcome::Sent => {
                self.sent(Some(&field), removals, true);
                self.fields.insert(key);
                if qos1 {
                    self.qos1_publishes.insert(field);
                }
                Ok(Answer::Done)
            }
            Outcome::Failed(failure) => {
                if keep {
                    // Paho acts as if the record were stored: Redis must get it.
                    self.outcome_unknown = true;
                    self.keep(key, &failure.error);
                    Ok(Answer::Done)
                } else {
                    if superseded_removal || (failure.may_run_late && !was_indexed) {
                        // The write may still reach Redis (a hung Redis runs it
                        // once it resumes). Paho was told it failed: it must not stay.
                        self.removals_owed.push(field);
                    }
                    self.outcome_unknown = true;
                    Err(failure.error)
                }
            }
        }
    }

    /// Notes a write (`records`: it carried every record waiting in memory)
    /// or a removal as sent, with `removals` of the owed removals and, for a
    /// write, every tied one: Redis has them now, unless its reply says
    /// otherwise (see [`Core::confirm`]).
    fn sent(&mut self, key: Option<&FieldName>, removals: usize, records: bool) {
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        let removals = removals.min(self.removals_owed.len());
        let owed = self.removals_owed.get(..removals).unwrap_or_default();
        // Named as the plan that was sent named it.
        let command = if records {
            let records = Records { kept: None, new: None };
            Command::Write { records, removals: owed, tied: &self.tied }
        } else {
            Command::Remove(owed)
        }
        .redis_name(self.settings.budget);
        let carried = if records { self.cache.send_waiting(seq) } else { cache::Carried::new() };
        let removals = self.removals_owed.drain(..removals).collect();
        let tied =
            if records { self.tied.drain(..).zip(self.tied_to.drain(..)).collect() } else { SmallVec::new() };
        self.unconfirmed.push_back(Unconfirmed {
            seq,
            command,
            key: key.cloned(),
            records: carried,
            removals,
            tied,
        });
    }

    /// Takes in Redis's reply to the oldest write or removal sent and not
    /// answered yet. A refusal undoes what it carried: its records wait in
    /// memory again, its removals are owed again (a write and its removals
    /// are all or nothing). Returns the refusal, as an error.
    pub(crate) fn confirm(&mut self, reply: Result<(), RedisError>) -> Option<Error> {
        let Unconfirmed { seq, command, key, records, removals, tied } = self.unconfirmed.pop_front()?;
        let source = match reply {
            Ok(()) => {
                if records.len() > 1 {
                    log::info!(
                        "redis persistence: wrote {} records kept in memory to `{}`",
                        records.len() - usize::from(key.is_some()),
                        self.hash
                    );
                }
                self.cache.confirmed(seq, &records);
                return None;
            }
            Err(source) => source,
        };
        let waiting = self.cache.refused(seq, &records);
        for removal in removals {
            let owed = self.removals_owed.contains(&removal);
            if !owed && !self.fields.contains_bytes(&removal) {
                self.removals_owed.push(removal);
            }
        }
        for (command, publish) in tied {
            if self.cache.is_unwritten(&publish) {
                self.tied.push(command);
                self.tied_to.push(publish);
            } else if !self.fields.contains_bytes(&command) && !self.removals_owed.contains(&command) {
                self.removals_owed.push(command);
            }
        }
        let error = self.write_error(command, source);
        match &key {
            Some(key) => log::warn!(
                "redis persistence: put of key {:?} is kept in memory ({} records wait for Redis): {error}",
                String::from_utf8_lossy(key),
                self.cache.not_in_redis_count()
            ),
            None if waiting > 0 => log::warn!(
                "redis persistence: {waiting} records kept in memory are still not in `{}`: {error}",
                self.hash
            ),
            None => log::warn!(
                "redis persistence: {} removals owed to `{}` failed, will retry: {error}",
                self.removals_owed.len(),
                self.hash
            ),
        }
        Some(error)
    }

    /// Keeps a record Redis did not take (Paho carries on as if it had); it
    /// goes with the next write.
    fn keep(&mut self, key: &str, error: &Error) {
        self.fields.insert(key);
        log::warn!(
            "redis persistence: keeping record {key:?} in memory ({} not yet in Redis): {error}",
            self.cache.not_in_redis_count()
        );
    }

    /// The error for a write Redis refused.
    fn write_error(&self, command: &'static str, source: RedisError) -> Error {
        match (self.settings.budget, source.code()) {
            (Some(limit), Some("STOREFULL")) => Error::StoreFull {
                hash: self.hash.clone(),
                limit,
                detail: source.detail().unwrap_or("no room").to_owned(),
            },
            _ => self.command_error(command, source),
        }
    }

    /// Owed removals (and, with `records`, every record waiting in memory)
    /// sent on their own, for a `remove` or a flush. Paho ignores `remove`'s
    /// result, so a refused or unreachable one stays owed either way.
    fn owed_sent(&mut self, removals: usize, records: bool, outcome: Outcome) {
        match outcome {
            Outcome::Replied(reply) => {
                self.sent(None, removals, records);
                let _ = self.confirm(reply.map(drop));
            }
            Outcome::Sent => self.sent(None, removals, records),
            Outcome::Failed(failure) => {
                self.outcome_unknown = true;
                log::warn!(
                    "redis persistence: {} records and {} removals are owed to `{}`, which is unreachable: {}",
                    self.cache.not_in_redis_count(),
                    self.removals_owed.len(),
                    self.hash,
                    failure.error
                );
            }
        }
    }

    /// Compares the index with the hash: records Redis lost are written again
    /// from memory where the core has them and reported lost otherwise;
    /// fields Redis has that Paho removed (a write that ran late) are removed.
    fn resynced(&mut self, outcome: Outcome, generation: u64) {
        let present = match outcome {
            Outcome::Replied(Ok(Reply::Fields(present))) => present,
            Outcome::Replied(Ok(_)) => Vec::new(),
            Outcome::Replied(Err(error)) => {
                log::warn!("redis persistence: cannot check `{}` after reconnecting: {error}", self.hash);
                return;
            }
            Outcome::Failed(failure) => {
                log::warn!(
                    "redis persistence: cannot check `{}` after reconnecting: {}",
                    self.hash,
                    failure.error
                );
                return;
            }
            Outcome::Sent => return,
        };
        let present: HashSet<&[u8]> = present.iter().map(Vec::as_slice).collect();
        let missing: Vec<String> = self
            .fields
            .iter()
            .filter(|field| !present.contains(field))
            .map(|field| String::from_utf8_lossy(field).into_owned())
            .collect();
        let mut lost = Vec::new();
        let mut rewritten = 0usize;
        for key in missing {
            if self.cache.mark_not_in_redis(&key) {
                rewritten = rewritten.saturating_add(1);
            } else if self.cache.contains(&key) {
                // Kept in memory already: it goes with the next write.
            } else if let Some(value) = self.snapshot.get(&key) {
                self.cache.insert(&key, &[value], false);
                rewritten = rewritten.saturating_add(1);
            } else {
                self.fields.remove(&key);
                self.qos1_publishes.remove(key.as_bytes());
                self.publishes.remove(key.as_bytes());
                lost.push(key);
            }
        }
        let mut stale = Vec::new();
        for field in present {
            // A removal waiting for its PUBLISH record is Paho's, not a late write's.
            let owed = self.removals_owed.iter().chain(&self.tied).any(|owed| owed.as_slice() == field)
                || self.handoff.as_ref().is_some_and(|handoff| handoff.command.as_slice() == field);
            if field != BYTE_COUNT_FIELD.as_bytes() && !owed && !self.fields.contains_bytes(field) {
                stale.push(String::from_utf8_lossy(field).into_owned());
                self.removals_owed.push(FieldName::from_slice(field));
            }
        }
        if lost.is_empty() && rewritten == 0 && stale.is_empty() {
            log::info!("redis persistence: `{}` is intact after reconnecting", self.hash);
        } else {
            log::error!(
                "redis persistence: `{}` differs from what Paho stored (Redis restarted without its data, \
                 or a timed-out write ran late): {rewritten} records are written again from memory; \
                 {} fields Paho had removed are removed: {stale:?}; {} messages are lost: {lost:?}",
                self.hash,
                stale.len(),
                lost.len(),
            );
        }
        self.synced_generation = generation;
        self.outcome_unknown = false;
        self.flush_due = self.cache.not_in_redis_count() > 0 || !self.removals_owed.is_empty();
    }

    fn cleared(&mut self, generation: u64) {
        self.fields.clear();
        self.cache.clear();
        self.removals_owed.clear();
        self.handoff = None;
        self.tied.clear();
        self.tied_to.clear();
        self.publishes.clear();
        self.qos1_publishes.clear();
        self.snapshot = KeyMap::default();
        self.synced_generation = generation;
        self.outcome_unknown = false;
        self.flush_due = false;
    }

    /// Whether anything is still owed to Redis (kept records or removals).
    pub(crate) fn owes(&self) -> bool {
        self.cache.not_in_redis_count() > 0
            || !self.removals_owed.is_empty()
            || !self.tied.is_empty()
            || self.handoff.is_some()
    }
}

/// The first reply of an exchange, or why there is none.
enum Outcome {
    Replied(Result<Reply, RedisError>),
    /// Sent, and durable once sent (a Unix socket): the reply comes later,
    /// through [`Core::confirm`].
    Sent,
    Failed(Failure),
}

/// A hash field as a key Paho can take, or `None` for a field someone else
/// wrote that Paho never would: paho-mqtt 0.14 aborts the process on a key with
/// a NUL byte, and Paho's keys are always ASCII.
fn paho_key(field: Vec<u8>) -> Option<String> {
    match String::from_utf8(field) {
        Ok(key) if !key.contains('\0') => Some(key),
        Ok(key) => {
            log::warn!("redis persistence: skipping field {key:?}: it contains a NUL byte");
            None
        }
        Err(e) => {
            log::warn!(
                "redis persistence: skipping field {:?}: not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            );
            None
        }
    }
}
