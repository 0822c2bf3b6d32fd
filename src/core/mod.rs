//! The store's core: what the store knows and decides, without a socket.
//!
//! Words used throughout, one name per idea:
//! - **record**: a Paho key and its value. The **table** ([`table::Table`])
//!   has one per key the store knows of, with what the store holds of its
//!   value and its **standing** with Redis.
//! - **owed**: what Redis must still be told, a write or a removal.
//! - **plan**: the Redis commands of one exchange, as data borrowing the table.
//! - **the move**: Paho sending a queued QoS ≥ 1 message takes it from its
//!   command record to its PUBLISH record (`MQTTAsync_processCommand`
//!   removes the first before it writes the second: the store's one crash
//!   window). The removal **rides** inside the PUBLISH record's write.
//! - **the check**: comparing the table with the hash's fields after a
//!   reconnect, or after a command whose outcome is unknown (it timed out).
//! - **budget**: `max_store_bytes`; the hash then keeps its byte count in
//!   [`BUDGET_COUNTER_FIELD`].
//! - **set aside**: a record `open` read that no restore of this client can
//!   take (`paho::restore::at_open`): never in the table, never shown to
//!   Paho. The **repair** ([`Command::Repair`], one script) moves it to the
//!   **quarantine** (`{hash}:quarantine`) while the hash still holds it as
//!   read, then writes what is owed: first after `open`'s read, before `open`
//!   answers, and, while it has not succeeded, in place of every command that
//!   changes the hash (so nothing is written over a record set aside, nor
//!   deleted); the check leaves such records alone. A **rewrite** (another
//!   version's record Paho restores only converted) enters the table owed,
//!   its original's removal riding with it (`RidesWith`), so Redis holds
//!   the original or the rewrite, never both. A crash before the repair
//!   leaves the records in the hash, and the next `open` checks them again.
//!
//! Paho's calls go in as methods that only change the table; [`Core::poll`]
//! then yields the next plan (the call's own first, then upkeep: the check,
//! the byte count's repair, owed records and removals); what became of it
//! comes back through [`Core::complete`], and replies to plans sent ahead
//! (write-behind) through [`Core::confirm`]. Which connection the transport
//! is on, and whether it may still wait in this call, are arguments: nothing
//! here blocks or does I/O, so the crash-point checker (`checker`) replays
//! recorded Paho calls against a simulated Redis that fails, hangs, refuses
//! and restarts, and checks Redis after every call.
//!
//! A record's standing, with the transitions that move it (`seq` numbers
//! the command that carries it; `put` of any standing makes it `WriteOwed`):
//!
//! ```text
//!  (none) ─ open ─> InRedis ─ remove ─> RemovalOwed ─ poll ─> Removing(seq) ─ confirmed ─> (none)
//!                     ▲                      ▲                     │
//!                     │                      └───── refused ───────┘
//!                     └─────────────────── confirmed ──────────────┐
//!  (none) ─ put ─> WriteOwed ─ poll ─> Writing(seq) ───────────────┘
//!                     ▲                     │
//!                     └─ refused, or lost ──┘
//!
//!  The move (a command record removed right after Paho read it back):
//!  InRedis        ─ remove ──────────────────────────────> AwaitsPublish
//!  AwaitsPublish  ─ put of its PUBLISH record s-N ───────> RidesWith(s-N)
//!  AwaitsPublish  ─ any other call ──────────────────────> RemovalOwed
//!  RidesWith(s-N) ─ poll: any write ─────────────────────> Riding(seq, s-N)
//!  RidesWith(s-N) ─ s-N removed ─────────────────────────> RemovalOwed
//!  Riding         ─ confirmed ───────────────────────────> (none)
//!  Riding         ─ refused, s-N in Redis ───────────────> RemovalOwed
//!  Riding         ─ refused while s-N owed; s-N put again ─> RidesWith(s-N)
//! ```
//!
//! The promise kept here: at every instant, what Redis holds is what a
//! restarted client may safely restore. A write carries every owed record,
//! every removal riding with them and, unless deferred
//! (`defer_qos1_removals`), every owed removal, all or nothing; a removal
//! that rides is never sent alone while its PUBLISH record is not in Redis.

pub(crate) mod drive;
mod patience;
mod plan;
mod table;

#[cfg(test)]
mod checker;
#[cfg(test)]
mod quarantine_tests;
#[cfg(test)]
mod repair_on_redis_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use redis::RedisError;

pub(crate) use patience::Patience;
pub(crate) use plan::{Command, Exchange, Failure, Plan, Reply};
pub(crate) use table::{CacheLimits, FieldName, KeySet, Table};
use table::{Carried, Kind, Seq, Standing, Value};

use crate::paho::restore::AtOpen;
use crate::paho::{self, CommandRemoval};
use crate::Error;
use drive::Served;

/// The hash field in which a store with `max_store_bytes` keeps its byte
/// count. Never a Paho key, and never shown to Paho (which would try to
/// restore it, fail, and delete it); tools that read a store skip it.
pub const BUDGET_COUNTER_FIELD: &str = "paho-mqtt-redis:bytes";

/// What the core is told of the store's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    /// `max_store_bytes`.
    pub(crate) budget: Option<u64>,
    /// `defer_qos1_removals`.
    pub(crate) defer_qos1_removals: bool,
    pub(crate) cache: CacheLimits,
    /// The MQTT version of the client (`mqtt_version`).
    pub(crate) version: paho::Version,
    /// Tests only: a verdict in place of `paho::restore::at_open`'s, so that
    /// the plumbing of the quarantine is tested apart from the check.
    #[cfg(test)]
    pub(crate) judge: Option<Judge>,
}

/// What `open` does with a record: [`paho::restore::at_open`]'s signature.
#[cfg(test)]
pub(crate) type Judge = fn(&str, &[u8], paho::Version) -> AtOpen;

/// A record `open` set aside: the quarantine takes it at the next
/// repair (see [`Command::Repair`]), and until then it stays in the hash,
/// hidden from Paho.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aside {
    /// Its field in the store's hash.
    pub(crate) key: FieldName,
    /// Its value as `open` read it: moved only while the hash still holds it.
    pub(crate) value: Vec<u8>,
    /// Why no restore can take it (`paho::restore::at_open`).
    pub(crate) reason: String,
    /// When `open` read it, in milliseconds since the Unix epoch: its
    /// quarantine entry is `{key}@{at_ms}` (see [`quarantine_entry`]).
    pub(crate) at_ms: u64,
}

/// What `open` set aside and the quarantine has not taken yet. While any
/// is left, every command that changes the hash is the repair, which moves
/// these first: nothing is written over them, nor deleted.
#[derive(Debug)]
struct SetAside {
    /// `{hash}:quarantine`.
    quarantine: String,
    records: Vec<Aside>,
    /// The plan handed out is the repair (see `sent`).
    handed: bool,
    /// Since `take_repaired`: records moved to the quarantine, records rewritten.
    counted: (u64, u64),
}

/// The quarantine's field holding the value of `key` set aside at `at_ms`.
/// Its reason is in the field of the same name plus [`QUARANTINE_REASON_SUFFIX`].
/// An entry's name ends in digits and a reason's in the suffix, so each
/// splits back from the right whatever the key holds.
#[cfg(test)]
pub(crate) fn quarantine_entry(key: &[u8], at_ms: u64) -> Vec<u8> {
    let mut entry = key.to_vec();
    entry.extend_from_slice(format!("@{at_ms}").as_bytes());
    entry
}

/// What a quarantine entry's name is followed by in its reason's field.
pub const QUARANTINE_REASON_SUFFIX: &str = "#reason";

/// What a completed call gives back to Paho.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Done,
    Value(Vec<u8>),
}

/// Where Paho is in sending a queued message (see `paho::CommandRemoval`).
#[derive(Debug, Default)]
enum Move {
    #[default]
    Idle,
    /// Paho just read this command record back: removing it next is a send.
    ReadBack(FieldName),
    /// Paho removed the command record while sending it; the removal
    /// (`AwaitsPublish`) waits for the PUBLISH record of `message_id`.
    Removed { command: FieldName, message_id: i32 },
}

/// The plan handed out, whose exchange comes back through `complete`.
#[derive(Debug)]
enum Awaiting {
    Open,
    KeyType,
    Put(Put),
    Get(String),
    Remove,
    Clear,
    /// `close`'s write of what is owed; `records`: it writes, else it removes.
    Close {
        records: bool,
    },
    /// Upkeep: the same, between calls.
    Flush {
        records: bool,
    },
    Check,
    ByteCount(Option<u64>),
    /// `open`'s repair: what it set aside goes to the quarantine, its
    /// rewrites replace their originals.
    Repair,
}

#[derive(Debug)]
struct Put {
    key: FieldName,
    /// The owed removals ride along (not for a QoS 1 PUBLISH record with
    /// `defer_qos1_removals`).
    removals: bool,
    /// Paho ignores the result: the record waits in memory if Redis does not take it.
    keep: bool,
    /// Paho saw the key before.
    was_present: bool,
    /// The write took the place of an owed removal of the same key.
    superseded_removal: bool,
}

/// A write or removal sent and not answered yet.
#[derive(Debug)]
struct InFlight {
    seq: Seq,
    /// As sent, for the error of a refusal.
    command: &'static str,
    /// The record a `put` wrote, for the log.
    key: Option<FieldName>,
    carried: Carried,
    /// It carried the records set aside to the quarantine.
    repair: bool,
}

/// What the core wants of Redis besides Paho's calls.
#[derive(Debug, Default)]
struct Upkeep {
    /// The connection the table was last checked on; `None` when a command
    /// may have run late (check at the next chance).
    checked: Option<u64>,
    /// What is owed goes out now, not with the next write.
    flush: bool,
    /// `open` found a byte count to repair: the value to set, or `None` to drop it.
    byte_count: Option<Option<u64>>,
    /// With a budget, `open` set records aside or rewrote some: the repair
    /// takes the byte count again from the values.
    recount: bool,
}

/// The core of one open store.
#[derive(Debug)]
pub(crate) struct Core {
    hash: String,
    settings: Settings,
    records: Table,
    moving: Move,
    awaiting: Option<Awaiting>,
    /// Oldest first: a pipelined transport answers them later.
    in_flight: VecDeque<InFlight>,
    upkeep: Upkeep,
    /// What `open` set aside, on its way to the quarantine.
    aside: SetAside,
    /// Why nothing may be written to or removed from the hash now (its
    /// lease is lost, or not confirmed in time), if so: see [`Core::fence`].
    fence: Option<String>,
}

impl Core {
    /// A core for the store in `hash`, before `open` has read it.
    pub(crate) fn new(hash: String, settings: Settings) -> Self {
        Self {
            settings,
            records: Table::new(settings.cache),
            moving: Move::Idle,
            awaiting: None,
            in_flight: VecDeque::new(),
            upkeep: Upkeep::default(),
            aside: SetAside {
                quarantine: crate::Config::quarantine_name(&hash),
                records: Vec::new(),
                handed: false,
                counted: (0, 0),
            },
            hash,
            fence: None,
        }
    }

    /// Records moved to the quarantine and records rewritten since the last call.
    pub(crate) fn take_repaired(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.aside.counted)
    }

    /// Fences the store (`Some(why)`) or lifts the fence (`None`). While
    /// fenced, no write or removal goes to Redis: `drive` fails such a plan
    /// without running it, as if Redis were unreachable (a `put` Paho
    /// ignores the result of is kept in memory, a removal stays owed), and
    /// upkeep (the check, flushes) waits; reads still run. The hash may be
    /// another process's by then: the store must not touch it.
    pub(crate) fn fence(&mut self, why: Option<String>) {
        if self.fence.is_some() && why.is_none() {
            // The lease is confirmed again: look at the hash before writing
            // what was held (Redis may have restarted meanwhile), then write it.
            self.upkeep.checked = None;
            self.upkeep.flush = true;
        }
        self.fence = why;
    }

    /// Why the store is fenced, if it is (see [`Core::fence`]).
    pub(crate) fn fenced(&self) -> Option<&str> {
        self.fence.as_deref()
    }

    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether Paho's `key` is in the store.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.records.present(key.as_bytes())
    }

    /// How many records Redis has not taken yet.
    pub(crate) fn unwritten(&self) -> usize {
        self.records.waiting_count()
    }

    /// Whether anything is still owed to Redis.
    pub(crate) fn owes(&self) -> bool {
        self.records.owes() || matches!(self.moving, Move::Removed { .. })
    }

    /// `open`: read the whole hash.
    pub(crate) fn open(&mut self) {
        self.awaiting = Some(Awaiting::Open);
    }

    /// `put`: Redis owes the record now.
    pub(crate) fn put(&mut self, key: &str, parts: &[&[u8]]) {
        // Paho writes only after its restore is over.
        self.records.end_restore();
        self.learn_version(key);
        let field = FieldName::from_slice(key.as_bytes());
        match std::mem::take(&mut self.moving) {
            Move::Removed { command, message_id } if paho::is_publish_record_of(key, message_id) => {
                // The write that ends the move carries its removal, and so
                // does every write until this record is in Redis.
                self.records.remove(&command, Standing::RidesWith(field.clone()));
            }
            // A new command under the same key (Paho numbers anew after a
            // client discarded its records): this write replaces it.
            Move::Removed { command, .. } if command == field => {}
            // `MQTTAsync_addCommand` may queue a command between the removal
            // and the PUBLISH record's write (it takes only `mqttcommand_mutex`).
            moving @ Move::Removed { .. } if paho::is_command_key(key) => self.moving = moving,
            moving @ Move::Removed { .. } => {
                self.moving = moving;
                self.end_move();
            }
            Move::ReadBack(_) | Move::Idle => {}
        }
        let was_present = self.records.present(key.as_bytes());
        let before = self.records.write(key, parts);
        let qos1 = self.records.get(key.as_bytes()).is_some_and(|r| r.kind == Kind::Publish { qos1: true });
        // A QoS 1 PUBLISH record may leave removals owed (see
        // `Builder::defer_qos1_removals`): a crash then restores a duplicate.
        let removals = !(self.settings.defer_qos1_removals && qos1);
        if removals || self.records.removals().is_empty() {
            self.upkeep.flush = false;
        }
        self.awaiting = Some(Awaiting::Put(Put {
            key: field,
            removals,
            keep: paho::put_failure_ignored(key),
            was_present,
            superseded_removal: before == Some(Standing::RemovalOwed),
        }));
    }

    /// Paho names every record it writes by the MQTT version it was created
    /// with: a record of the other version than `mqtt_version` says the
    /// setting is wrong. Said once: from then on the core knows the version.
    fn learn_version(&mut self, key: &str) {
        let Ok((_, version, _)) = paho::parse_key(key) else { return };
        if version != self.settings.version {
            log::error!(
                "redis persistence: Paho writes {key:?}, a record of MQTT {}, but the store of `{}` was built \
                 for MQTT {}: set `Builder::mqtt_version` to the version the client is created with. At open, \
                 records of this client's version were taken for another version's (rewritten into it when \
                 nothing was lost, else set aside in the quarantine, where `paho-mqtt-redis quarantine` finds them)",
                version.name(),
                self.hash,
                self.settings.version.name(),
            );
            self.settings.version = version;
        }
    }

    /// `get`: the value from memory, or `None` when Redis must be asked.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, Served)>, Error> {
        self.end_move();
        if paho::is_command_key(key) {
            self.moving = Move::ReadBack(FieldName::from_slice(key.as_bytes()));
        }
        let field = key.as_bytes();
        let served = match self.records.get(field) {
            Some(record) if record.standing.present() => match record.value {
                Value::Restored(_) => Served::Snapshot,
                Value::Kept(_) => Served::Cache,
                Value::InRedis => Served::Redis,
            },
            _ => return Err(Error::KeyNotFound { key: key.to_owned() }),
        };
        if let Some(value) = self.records.read(field) {
            return Ok(Some((value, served)));
        }
        self.awaiting = Some(Awaiting::Get(key.to_owned()));
        Ok(None)
    }

    /// `remove`: the removal goes out now, waits for the next write
    /// (`defer_qos1_removals`), or rides with the move.
    pub(crate) fn remove(&mut self, key: &str) {
        // A command restored from the other MQTT version's record is removed
        // under this version's key (see `paho::command_twin`).
        let twin = paho::command_twin(key)
            .filter(|twin| !self.records.present(key.as_bytes()) && self.records.present(twin.as_bytes()));
        let key = twin.as_deref().unwrap_or(key);
        let read_back = match &self.moving {
            Move::ReadBack(read) => Some(read.as_slice()),
            _ => None,
        };
        let how = paho::is_command_key(key).then(|| CommandRemoval::of(key, read_back));
        match how {
            // A command dropped by `MQTTAsync_addCommand` may come between a
            // removal and its PUBLISH record's write.
            Some(CommandRemoval::Done) if matches!(self.moving, Move::Removed { .. }) => {}
            // Anything else means Paho did not write that PUBLISH record.
            _ => self.end_move(),
        }
        let field = key.as_bytes();
        // Paho is done with a message before Redis took its PUBLISH record:
        // its command record's removal need wait no longer.
        self.records.release_riders(field);
        let Some(record) = self.records.get(field).filter(|record| record.standing.present()) else {
            return; // never written (Paho removes every key a message might have used)
        };
        let written = matches!(record.standing, Standing::InRedis | Standing::Writing(_));
        let deferred =
            written && self.settings.defer_qos1_removals && record.kind == Kind::Publish { qos1: true };
        if let (Some(CommandRemoval::Sending), Kind::Command { sent_as: Some(message_id) }) =
            (how, record.kind)
        {
            self.records.remove(field, Standing::AwaitsPublish);
            self.moving = Move::Removed { command: FieldName::from_slice(field), message_id };
            return;
        }
        self.records.remove(field, Standing::RemovalOwed);
        if !deferred {
            self.upkeep.flush = false;
            self.awaiting = Some(Awaiting::Remove);
        }
    }

    /// The store's keys, as Paho's restore lists them.
    pub(crate) fn keys(&mut self) -> Vec<String> {
        self.end_move();
        self.records.keys()
    }

    /// `clear`: deletes the hash.
    pub(crate) fn clear(&mut self) {
        self.awaiting = Some(Awaiting::Clear);
    }

    /// `close`: what is still owed goes out now.
    pub(crate) fn close(&mut self) {
        self.end_move();
        self.upkeep.flush = false;
        self.awaiting = self.owed_plan().map(|records| Awaiting::Close { records });
    }

    /// The move is over without its PUBLISH record (Paho failed to send the
    /// command, or `CommandRemoval`'s invariant no longer holds): the waiting
    /// removal goes out now.
    fn end_move(&mut self) {
        if let Move::Removed { command, message_id } = std::mem::take(&mut self.moving) {
            log::debug!(
                "redis persistence: {:?} was removed but the PUBLISH record of message {message_id} was not \
                 written next; removing it now",
                String::from_utf8_lossy(&command),
            );
            self.records.remove(&command, Standing::RemovalOwed);
            self.upkeep.flush = true;
        }
    }

    /// What a write or removal of everything owed would be: `Some(true)` a
    /// write, `Some(false)` removals only.
    fn owed_plan(&self) -> Option<bool> {
        if self.records.waiting_count() > 0 {
            Some(true)
        } else {
            (!self.records.removals().is_empty()).then_some(false)
        }
    }

    /// The one command that writes what the table owes (`records`), or
    /// removes it.
    fn owed_command(&self, records: bool, removals: bool) -> Command<'_> {
        if self.repair_due() {
            return self.repair_command(false);
        }
        let owed = if removals { self.records.removals() } else { &[] };
        if records {
            Command::Write { records: &self.records, removals: owed, riding: self.records.riding() }
        } else {
            Command::Remove(owed)
        }
    }

    /// Whether the next command that changes the hash must be the repair:
    /// records set aside are still in the hash, or (with a budget) the byte
    /// count must be taken again after them.
    fn repair_due(&self) -> bool {
        !self.aside.records.is_empty() || self.upkeep.recount
    }

    /// The repair: moves what is set aside to the quarantine, then writes
    /// and removes everything owed, or (`clear`) deletes the hash.
    fn repair_command(&self, clear: bool) -> Command<'_> {
        Command::Repair {
            records: &self.records,
            removals: self.records.removals(),
            riding: self.records.riding(),
            quarantine: &self.aside.quarantine,
            aside: &self.aside.records,
            clear,
        }
    }

    /// The next plan: the current call's, then (with `upkeep`, when the
    /// transport may still wait in this call) what the core wants besides.
    /// `generation` counts the transport's connections: a new one may be to
    /// a Redis that restarted and lost records.
    pub(crate) fn poll(&mut self, generation: u64, upkeep: bool) -> Option<Plan<'_>> {
        if self.awaiting.is_none() && upkeep && self.fence.is_none() {
            self.awaiting = if self.upkeep.checked != Some(generation) {
                Some(Awaiting::Check)
            } else if let Some(repair) = self.upkeep.byte_count.take() {
                Some(Awaiting::ByteCount(repair))
            } else if std::mem::take(&mut self.upkeep.flush) {
                self.owed_plan().map(|records| Awaiting::Flush { records })
            } else {
                None
            };
        }
        let awaiting = self.awaiting.as_ref()?;
        self.aside.handed = self.repair_due()
            && matches!(
                awaiting,
                Awaiting::Put(_)
                    | Awaiting::Remove
                    | Awaiting::Clear
                    | Awaiting::Close { .. }
                    | Awaiting::Flush { .. }
                    | Awaiting::Repair
            );
        let command = match awaiting {
            Awaiting::Clear if self.aside.handed => self.repair_command(true),
            Awaiting::Open => Command::ReadAll,
            Awaiting::KeyType => Command::KeyType,
            Awaiting::Put(put) => self.owed_command(true, put.removals),
            Awaiting::Get(key) => Command::Read(key),
            Awaiting::Remove => self.owed_command(false, true),
            Awaiting::Clear => Command::DeleteAll,
            Awaiting::Close { records } | Awaiting::Flush { records } => self.owed_command(*records, true),
            Awaiting::Check => Command::ListFields,
            Awaiting::ByteCount(Some(bytes)) => Command::SetByteCount(*bytes),
            Awaiting::ByteCount(None) => Command::DropByteCount,
            Awaiting::Repair => self.owed_command(true, true),
        };
        Some(Plan {
            hash: &self.hash,
            budget: self.settings.budget,
            commands: [command].into_iter().collect(),
        })
    }

    /// Takes in what became of the plan handed out. Returns the current
    /// call's answer once it has one (upkeep's outcomes are logged here).
    pub(crate) fn complete(&mut self, exchange: Exchange) -> Option<Result<Answer, Error>> {
        let Exchange { replies, failure, generation, sent, command } = exchange;
        let outcome = match (replies.into_iter().next(), failure) {
            (Some(reply), _) => Outcome::Replied(reply),
            (None, Some(failure)) => Outcome::Failed(failure),
            (None, None) if sent => Outcome::Sent,
            (None, None) => Outcome::Failed(Failure { error: Error::NotOpen, may_run_late: false }),
        };
        if matches!(&outcome, Outcome::Failed(failure) if failure.may_run_late) {
            self.upkeep.checked = None;
        }
        let Some(awaiting) = self.awaiting.take() else { return Some(Err(Error::NotOpen)) };
        let answer = match awaiting {
            Awaiting::Open => match self.opened(outcome, generation, command) {
                Err(Error::NotAHash { .. }) => {
                    // Ask what the key is, for the error.
                    self.awaiting = Some(Awaiting::KeyType);
                    return None;
                }
                // Before `open` answers: Paho restores nothing until it has.
                Ok(_) if self.repair_due() || self.records.waiting_count() > 0 => {
                    self.awaiting = Some(Awaiting::Repair);
                    return None;
                }
                opened => opened,
            },
            Awaiting::Repair => {
                let aside = self.aside.records.len();
                self.owed_sent(true, outcome, command);
                if aside > 0 && self.aside.records.is_empty() {
                    log::warn!(
                        "redis persistence: {aside} records of `{}` that no restore can take were moved to `{}`",
                        self.hash,
                        self.aside.quarantine
                    );
                } else if aside > 0 {
                    log::warn!(
                        "redis persistence: {aside} records of `{}` that no restore can take stay in it, hidden \
                         from Paho: the move to `{}` failed, and goes with the next write (or the next open)",
                        self.hash,
                        self.aside.quarantine
                    );
                }
                Ok(Answer::Done)
            }
            Awaiting::KeyType => {
                let found = match outcome {
                    Outcome::Replied(Ok(Reply::Type(found))) => found,
                    _ => "value of another type".to_owned(),
                };
                Err(Error::NotAHash { hash: self.hash.clone(), found })
            }
            Awaiting::Put(put) => self.put_done(put, outcome, command),
            Awaiting::Get(key) => match outcome {
                Outcome::Replied(Ok(Reply::Value(Some(value)))) => Ok(Answer::Value(value)),
                Outcome::Replied(Ok(_)) | Outcome::Sent => Err(Error::KeyNotFound { key }),
                Outcome::Replied(Err(source)) => Err(self.command_error(command, source)),
                Outcome::Failed(failure) => Err(failure.error),
            },
            Awaiting::Remove => {
                self.owed_sent(false, outcome, command);
                Ok(Answer::Done)
            }
            Awaiting::Clear => match outcome {
                Outcome::Replied(Ok(_)) | Outcome::Sent => {
                    if std::mem::take(&mut self.aside.handed) {
                        self.repaired_now();
                    }
                    self.records.clear();
                    self.moving = Move::Idle;
                    self.upkeep = Upkeep { checked: Some(generation), ..Upkeep::default() };
                    Ok(Answer::Done)
                }
                Outcome::Replied(Err(source)) => Err(self.command_error(command, source)),
                Outcome::Failed(failure) => {
                    // A DEL that timed out may still run once Redis answers again.
                    self.upkeep.checked = None;
                    Err(failure.error)
                }
            },
            Awaiting::Close { records } => {
                self.owed_sent(records, outcome, command);
                Ok(Answer::Done)
            }
            Awaiting::Flush { records } => {
                self.owed_sent(records, outcome, command);
                return None;
            }
            Awaiting::Check => {
                self.checked(outcome, generation);
                return None;
            }
            Awaiting::ByteCount(_) => {
                let error = match outcome {
                    Outcome::Replied(Ok(_)) | Outcome::Sent => return None,
                    Outcome::Replied(Err(error)) => error.to_string(),
                    Outcome::Failed(failure) => failure.error.to_string(),
                };
                log::warn!("redis persistence: cannot repair the byte count of `{}`: {error}", self.hash);
                return None;
            }
        };
        Some(answer)
    }

    fn command_error(&self, command: &'static str, source: RedisError) -> Error {
        Error::command(command, &self.hash, source)
    }

    fn opened(&mut self, outcome: Outcome, generation: u64, command: &'static str) -> Result<Answer, Error> {
        let entries = match outcome {
            Outcome::Replied(Ok(Reply::Entries(entries))) => entries,
            Outcome::Replied(Ok(_)) | Outcome::Sent => Vec::new(),
            Outcome::Replied(Err(source)) if source.code() == Some("WRONGTYPE") => {
                return Err(Error::NotAHash { hash: self.hash.clone(), found: String::new() })
            }
            Outcome::Replied(Err(source)) => return Err(self.command_error(command, source)),
            Outcome::Failed(failure) => return Err(failure.error),
        };
        self.upkeep.checked = Some(generation);
        let mut byte_count = None;
        let mut bytes = 0u64;
        let at_ms = unix_ms();
        let mut rewrites = Vec::new();
        for (field, value) in entries {
            if field == BUDGET_COUNTER_FIELD.as_bytes() {
                byte_count = Some(String::from_utf8_lossy(&value).trim().parse::<u64>().ok());
                continue;
            }
            bytes = bytes.saturating_add(u64::try_from(value.len()).unwrap_or(u64::MAX));
            let Some(key) = paho_key(field) else { continue };
            match self.verdict(&key, &value) {
                AtOpen::Restore => self.records.restore(&key, value),
                AtOpen::Quarantine(reason) => self.set_aside(&key, value, reason, at_ms),
                AtOpen::Rewrite { key: new, value: new_value } => rewrites.push((key, value, new, new_value)),
            }
        }
        // After every record restored as it is: a rewrite must not take the
        // place of one (nor of another rewrite), which would lose it.
        for (key, value, new, new_value) in rewrites {
            if self.records.get(new.as_bytes()).is_some() || paho_key(new.clone().into_bytes()).is_none() {
                let reason = format!("its rewrite into {new:?} would replace a record of that key");
                self.set_aside(&key, value, reason, at_ms);
            } else {
                self.records.rewrite(&key, &new, new_value);
                self.aside.counted.1 = self.aside.counted.1.saturating_add(1);
            }
        }
        self.upkeep.recount = self.settings.budget.is_some()
            && (!self.aside.records.is_empty() || self.records.waiting_count() > 0);
        // A byte count is trusted only if it is the sum of the values: one
        // left by an earlier run without a budget is stale.
        self.upkeep.byte_count = match (self.settings.budget, byte_count) {
            // The repair counts the bytes that stay.
            (Some(_), _) if self.upkeep.recount => None,
            (Some(_), Some(count)) if count != Some(bytes) => Some(Some(bytes)),
            (None, Some(_)) => Some(None),
            _ => None,
        };
        Ok(Answer::Done)
    }

    /// What `open` does with `key` = `value` (`paho::restore::at_open`).
    fn verdict(&self, key: &str, value: &[u8]) -> AtOpen {
        #[cfg(test)]
        if let Some(judge) = self.settings.judge {
            return judge(key, value, self.settings.version);
        }
        paho::restore::at_open(key, value, self.settings.version)
    }

    fn set_aside(&mut self, key: &str, value: Vec<u8>, reason: String, at_ms: u64) {
        log::debug!("redis persistence: setting {key:?} of `{}` aside: {reason}", self.hash);
        self.aside.records.push(Aside { key: FieldName::from_slice(key.as_bytes()), value, reason, at_ms });
    }

    /// The repair ran: what was set aside is in the quarantine, the byte count right.
    fn repaired_now(&mut self) {
        let moved = u64::try_from(self.aside.records.len()).unwrap_or(u64::MAX);
        self.aside.counted.0 = self.aside.counted.0.saturating_add(moved);
        self.aside.records.clear();
        self.upkeep.recount = false;
    }

    fn put_done(&mut self, put: Put, outcome: Outcome, command: &'static str) -> Result<Answer, Error> {
        let Put { key, removals, keep, was_present, superseded_removal } = put;
        let refusal = match outcome {
            Outcome::Replied(reply) => {
                self.sent(Some(key.clone()), true, removals, command);
                self.confirm(reply.map(drop))
            }
            Outcome::Sent => {
                self.sent(Some(key), true, removals, command);
                return Ok(Answer::Done);
            }
            Outcome::Failed(failure) if keep => {
                // Paho acts as if the record were stored: Redis must get it.
                self.upkeep.checked = None;
                if matches!(failure.error, Error::Fenced { .. }) {
                    // Logged once, where the store was fenced.
                    return Ok(Answer::Done);
                }
                log::warn!(
                    "redis persistence: keeping record {:?} in memory ({} not yet in Redis): {}",
                    String::from_utf8_lossy(&key),
                    self.records.waiting_count(),
                    failure.error
                );
                return Ok(Answer::Done);
            }
            Outcome::Failed(failure) => {
                self.upkeep.checked = None;
                // The write may still reach Redis (a hung Redis runs it once
                // it resumes). Paho was told it failed: it must not stay.
                let late = failure.may_run_late && !was_present;
                self.undo_put(&key, superseded_removal || late, was_present);
                return Err(failure.error);
            }
        };
        match refusal {
            Some(error) if !keep => {
                self.undo_put(&key, superseded_removal, was_present);
                Err(error)
            }
            _ => Ok(Answer::Done),
        }
    }

    /// A put Paho was told failed leaves the key as it was: owed a removal,
    /// as Redis had it, or unknown.
    fn undo_put(&mut self, key: &[u8], removal_owed: bool, was_present: bool) {
        match (removal_owed, was_present) {
            (true, _) => self.records.remove(key, Standing::RemovalOwed),
            (false, true) => self.records.remove(key, Standing::InRedis),
            (false, false) => self.records.forget(key),
        }
    }

    /// Notes the owed command (`records`: a write, else removals only) as
    /// sent, as `command`: Redis has what it carried, unless its reply says otherwise.
    fn sent(&mut self, key: Option<FieldName>, records: bool, removals: bool, command: &'static str) {
        let seq = self.in_flight.back().map_or(0, |last| last.seq.wrapping_add(1));
        // The repair carries everything owed.
        let repair = std::mem::take(&mut self.aside.handed);
        let carried = self.records.send(seq, records || repair, removals || repair);
        self.in_flight.push_back(InFlight { seq, command, key, carried, repair });
    }

    /// Takes in Redis's reply to the oldest write or removal not answered
    /// yet. A refusal undoes what it carried: its records and removals are
    /// owed again (a write and its removals are all or nothing). Returns the
    /// refusal, as an error.
    pub(crate) fn confirm(&mut self, reply: Result<(), RedisError>) -> Option<Error> {
        let InFlight { seq, command, key, carried, repair } = self.in_flight.pop_front()?;
        let source = match reply {
            Ok(()) => {
                if repair {
                    self.repaired_now();
                }
                let written = self.records.confirmed(seq, &carried);
                let kept = written.saturating_sub(usize::from(key.is_some()));
                if kept > 0 && written > 1 {
                    log::info!("redis persistence: wrote {kept} records kept in memory to `{}`", self.hash);
                }
                return None;
            }
            Err(source) => source,
        };
        let waiting = self.records.refused(seq, &carried);
        let error = match (self.settings.budget, source.code()) {
            (Some(limit), Some("STOREFULL")) => Error::StoreFull {
                hash: self.hash.clone(),
                limit,
                detail: source.detail().unwrap_or("no room").to_owned(),
            },
            _ => self.command_error(command, source),
        };
        match &key {
            Some(key) => log::warn!(
                "redis persistence: put of key {:?} is kept in memory ({} records wait for Redis): {error}",
                String::from_utf8_lossy(key),
                self.records.waiting_count()
            ),
            None if waiting > 0 => log::warn!(
                "redis persistence: {waiting} records kept in memory are still not in `{}`: {error}",
                self.hash
            ),
            None => log::warn!(
                "redis persistence: {} removals owed to `{}` failed, will retry: {error}",
                self.records.removals().len(),
                self.hash
            ),
        }
        Some(error)
    }

    /// What is owed, sent on its own (`remove`, `close`, a flush). Paho
    /// ignores `remove`'s result, so a refused or unreachable one stays owed.
    fn owed_sent(&mut self, records: bool, outcome: Outcome, command: &'static str) {
        match outcome {
            Outcome::Replied(reply) => {
                self.sent(None, records, true, command);
                let _ = self.confirm(reply.map(drop));
            }
            Outcome::Sent => self.sent(None, records, true, command),
            Outcome::Failed(failure) if matches!(failure.error, Error::Fenced { .. }) => {}
            Outcome::Failed(failure) => {
                self.upkeep.checked = None;
                log::warn!(
                    "redis persistence: {} records and {} removals are owed to `{}`, which is unreachable: {}",
                    self.records.waiting_count(),
                    self.records.removals().len(),
                    self.hash,
                    failure.error
                );
            }
        }
    }

    /// The check: records Redis lost are written again from memory where
    /// the core has them and reported lost otherwise; fields Redis has that
    /// Paho removed (a write that ran late) are removed.
    fn checked(&mut self, outcome: Outcome, generation: u64) {
        let fields = match outcome {
            Outcome::Replied(Ok(Reply::Fields(fields))) => fields,
            Outcome::Replied(Ok(_)) => Vec::new(),
            Outcome::Replied(Err(error)) => {
                log::warn!("redis persistence: cannot check `{}` after reconnecting: {error}", self.hash);
                return;
            }
            Outcome::Failed(failure) => {
                let error = failure.error;
                log::warn!("redis persistence: cannot check `{}` after reconnecting: {error}", self.hash);
                return;
            }
            Outcome::Sent => return,
        };
        // What is set aside and gone from the hash was moved by a repair
        // that ran late, or lost with it: either way, nothing is left to move.
        let held: KeySet<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        self.aside.records.retain(|aside| held.contains(aside.key.as_slice()));
        let aside: KeySet<&[u8]> = self.aside.records.iter().map(|aside| aside.key.as_slice()).collect();
        // Records set aside are neither Paho's nor stale.
        let present: KeySet<&[u8]> = fields
            .iter()
            .map(Vec::as_slice)
            .filter(|field| *field != BUDGET_COUNTER_FIELD.as_bytes())
            .filter(|field| !aside.contains(field) || self.records.present(field))
            .collect();
        let (rewritten, lost, stale) = self.records.reconcile(&present);
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
        self.upkeep.checked = Some(generation);
        self.upkeep.flush = self.owed_plan().is_some();
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
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

#[cfg(test)]
impl Core {
    /// The record table's invariant (see `Table::check_queues`).
    pub(crate) fn check_queues(&self) -> Result<(), String> {
        let in_flight: Vec<Seq> = self.in_flight.iter().map(|sent| sent.seq).collect();
        self.records.check_queues(&in_flight)
    }
}
