//! A simulated Redis for the core's tests: runs plans on a map in memory, and
//! fails the ways a real one does.
//!
//! What it models of a real Redis (and was seen there): an error reply changes
//! nothing (a refused `HSET`, a script refused at its first write under
//! `maxmemory`); a command that timed out was still sent, so a hung Redis runs
//! it when it resumes, before anything a later connection sends (its bytes
//! were queued first); a restart without persistence empties the hash and is
//! seen as a new connection.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use redis::RedisError;
use smallvec::SmallVec;

use super::drive::Runner;
use super::patience::Patience;
use super::{Command, Exchange, Failure, Plan, Reply, BUDGET_COUNTER_FIELD};
use crate::Error;

/// How the simulated Redis answers the next exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answers everything.
    Up,
    /// Refuses connections: nothing is sent.
    Down,
    /// Takes the commands and never answers in time: each exchange times out,
    /// and its writes run when Redis resumes.
    Hung,
    /// Out of memory: refuses writes (`-OOM`), runs removals and reads.
    Full,
    /// Loading its data after a restart: refuses every command (`-LOADING`).
    Loading,
}

/// A command of a plan, owned, so that a hung Redis can run it later.
#[derive(Debug, Clone)]
enum Owned {
    Write {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        removals: Vec<Vec<u8>>,
        budget: Option<u64>,
    },
    Remove(Vec<Vec<u8>>),
    DeleteAll,
    SetByteCount(u64),
    DropByteCount,
    ReadAll,
    KeyType,
    Read(Vec<u8>),
    ListFields,
    Repair {
        moves: Vec<super::Aside>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        removals: Vec<Vec<u8>>,
        budget: Option<u64>,
        clear: bool,
    },
}

/// What the simulated Redis calls every command in errors.
const SIMULATED: &str = "simulated";

/// The simulated store's `connect_timeout` and `io_timeout`.
pub(crate) const TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct SimRedis {
    /// The store's hash: what a crash right now leaves for a restarted client.
    pub(crate) hash: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Its quarantine (`{hash}:quarantine`): entries and their reasons, as the repair script writes them.
    pub(crate) quarantine: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) mode: Mode,
    generation: u64,
    /// The connection broke (a timeout, a restart): the next exchange reconnects.
    broken: bool,
    /// Writes sent to a hung Redis, run when it answers again.
    late: Vec<Owned>,
    /// Exchanges run, for tests that count them.
    pub(crate) exchanges: usize,
    /// Exchanges whose plan may change the hash (writes, removals), for the
    /// checker's lost lease: none may come from a fenced core.
    pub(crate) changes: usize,
    /// When a call may wait, on `clock`'s virtual time.
    pub(crate) patience: Patience,
    /// Virtual time: a wait for a hung Redis advances it, nothing sleeps.
    pub(crate) clock: Instant,
    /// Like the Unix-socket transport: a single write or removal is durable
    /// once sent and answered later (at the next call; a hung Redis answers
    /// once it resumes).
    pub(crate) pipelined: bool,
    /// Replies to pipelined plans, not yet taken in by the core.
    due: std::collections::VecDeque<Result<(), RedisError>>,
}

impl Default for SimRedis {
    fn default() -> Self {
        Self {
            hash: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            mode: Mode::Up,
            generation: 1,
            broken: false,
            late: Vec::new(),
            exchanges: 0,
            changes: 0,
            patience: Patience::new(TIMEOUT, TIMEOUT),
            clock: Instant::now(),
            pipelined: false,
            due: std::collections::VecDeque::new(),
        }
    }
}

impl SimRedis {
    /// Redis restarts without its data.
    pub(crate) fn restart_empty(&mut self) {
        self.hash.clear();
        self.quarantine.clear();
        self.late.clear();
        self.broken = true;
    }

    /// The hash's Paho keys, without the byte count.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.hash
            .keys()
            .filter(|field| field.as_slice() != BUDGET_COUNTER_FIELD.as_bytes())
            .map(|field| String::from_utf8_lossy(field).into_owned())
            .collect()
    }

    /// Starts a Paho call (see [`Runner::may_wait`]).
    pub(crate) fn begin_call(&mut self) {
        self.patience.begin_call();
    }

    /// Runs `plan` as the current mode says.
    pub(crate) fn exchange(&mut self, plan: &Plan<'_>) -> Exchange {
        self.exchanges += 1;
        if plan.changes_hash() {
            self.changes += 1;
        }
        let behind = matches!(plan.commands.as_slice(), [Command::Write { .. } | Command::Remove(_)]);
        if self.pipelined && behind && self.mode != Mode::Down {
            return self.send_behind(plan);
        }
        match self.mode {
            Mode::Down => self.patience.waited(),
            // As the transports do: no call waits for a Redis known hung,
            // and nothing is sent to it.
            Mode::Hung if self.patience.hung() => {
                let refused =
                    io::Error::new(io::ErrorKind::TimedOut, "Redis has not answered since a timeout");
                let error = Error::connect("simulated".to_owned(), refused.into());
                let failure = Some(Failure { error, may_run_late: false });
                return Exchange {
                    replies: SmallVec::new(),
                    failure,
                    generation: self.generation,
                    sent: false,
                    command: SIMULATED,
                };
            }
            Mode::Hung => {
                self.clock = self.patience.wait_until(self.clock);
                self.patience.timed_out();
            }
            // Redis answers (for the TCP transport, its probe has heard it).
            _ => self.patience.answered(),
        }
        let commands: Vec<Owned> = plan.commands.iter().map(|command| owned(plan, command)).collect();
        match self.mode {
            Mode::Down => {
                self.broken = true;
                return Exchange {
                    replies: SmallVec::new(),
                    failure: Some(Failure {
                        error: Error::connect(
                            "simulated".to_owned(),
                            io::Error::new(io::ErrorKind::ConnectionRefused, "refused").into(),
                        ),
                        may_run_late: false,
                    }),
                    generation: self.generation,
                    sent: false,
                    command: SIMULATED,
                };
            }
            Mode::Hung => {
                self.reconnect_if_broken();
                self.late.extend(commands);
                self.broken = true;
                return Exchange {
                    replies: SmallVec::new(),
                    failure: Some(Failure {
                        error: Error::command(
                            "simulated",
                            plan.hash,
                            io::Error::new(io::ErrorKind::TimedOut, "timed out").into(),
                        ),
                        may_run_late: true,
                    }),
                    generation: self.generation,
                    sent: false,
                    command: SIMULATED,
                };
            }
            Mode::Up | Mode::Full => {}
            Mode::Loading => {
                self.reconnect_if_broken();
                let replies = commands
                    .iter()
                    .map(|_| Err(refusal("LOADING", "Redis is loading the dataset")))
                    .collect();
                return Exchange {
                    replies,
                    failure: None,
                    generation: self.generation,
                    sent: false,
                    command: SIMULATED,
                };
            }
        }
        self.reconnect_if_broken();
        let mode = self.mode;
        let replies = commands.iter().map(|command| self.execute(mode, command)).collect();
        Exchange { replies, failure: None, generation: self.generation, sent: false, command: SIMULATED }
    }

    /// A pipelined write: in Redis at once (its bytes are in Redis's socket,
    /// even while it is hung), its reply later. True of the real transport
    /// because it keeps what is unanswered within one read of Redis's, which
    /// Redis runs even when the writer is gone (`tests/write_behind.rs`).
    fn send_behind(&mut self, plan: &Plan<'_>) -> Exchange {
        self.reconnect_if_broken();
        for command in &plan.commands {
            let reply = match self.mode {
                Mode::Hung => self.execute(Mode::Up, &owned(plan, command)),
                mode => self.execute(mode, &owned(plan, command)),
            };
            self.due.push_back(reply.map(drop));
        }
        Exchange {
            replies: SmallVec::new(),
            failure: None,
            generation: self.generation,
            sent: true,
            command: SIMULATED,
        }
    }

    fn reconnect_if_broken(&mut self) {
        if self.broken {
            self.broken = false;
            self.generation += 1;
            // What a hung Redis was sent runs before a new connection's commands.
            for command in std::mem::take(&mut self.late) {
                let _ = self.execute(Mode::Up, &command);
            }
        }
    }

    fn execute(&mut self, mode: Mode, command: &Owned) -> Result<Reply, RedisError> {
        let full = mode == Mode::Full;
        if mode == Mode::Loading {
            return Err(refusal("LOADING", "Redis is loading the dataset"));
        }
        match command {
            Owned::ReadAll => {
                Ok(Reply::Entries(self.hash.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            }
            Owned::KeyType => Ok(Reply::Type("hash".to_owned())),
            Owned::Read(field) => Ok(Reply::Value(self.hash.get(field).cloned())),
            Owned::ListFields => Ok(Reply::Fields(self.hash.keys().cloned().collect())),
            Owned::DeleteAll => {
                self.hash.clear();
                Ok(Reply::Done)
            }
            Owned::Write { pairs, removals, budget } => {
                if full {
                    return Err(refusal("OOM", "command not allowed when used memory > 'maxmemory'"));
                }
                if let Some(limit) = budget {
                    let mut after = self.value_bytes();
                    for (field, value) in pairs {
                        after = after - self.hash.get(field).map_or(0, Vec::len) as u64 + value.len() as u64;
                    }
                    for field in removals {
                        after -= self.hash.get(field).map_or(0, Vec::len) as u64;
                    }
                    if after > *limit {
                        return Err(refusal("STOREFULL", "the store would hold too many bytes"));
                    }
                    for (field, value) in pairs {
                        self.hash.insert(field.clone(), value.clone());
                    }
                    for field in removals {
                        self.hash.remove(field);
                    }
                    self.hash
                        .insert(BUDGET_COUNTER_FIELD.as_bytes().to_vec(), after.to_string().into_bytes());
                    return Ok(Reply::Done);
                }
                for (field, value) in pairs {
                    self.hash.insert(field.clone(), value.clone());
                }
                for field in removals {
                    self.hash.remove(field);
                }
                Ok(Reply::Done)
            }
            Owned::Remove(fields) => {
                for field in fields {
                    self.hash.remove(field);
                }
                if self.hash.contains_key(BUDGET_COUNTER_FIELD.as_bytes()) {
                    if self.hash.len() == 1 {
                        self.hash.clear();
                    } else {
                        let used = self.value_bytes();
                        self.hash
                            .insert(BUDGET_COUNTER_FIELD.as_bytes().to_vec(), used.to_string().into_bytes());
                    }
                }
                Ok(Reply::Done)
            }
            Owned::SetByteCount(bytes) => {
                if full {
                    return Err(refusal("OOM", "command not allowed when used memory > 'maxmemory'"));
                }
                self.hash.insert(BUDGET_COUNTER_FIELD.as_bytes().to_vec(), bytes.to_string().into_bytes());
                Ok(Reply::Done)
            }
            Owned::DropByteCount => {
                self.hash.remove(BUDGET_COUNTER_FIELD.as_bytes());
                Ok(Reply::Done)
            }
            Owned::Repair { moves, pairs, removals, budget, clear } => {
                if full {
                    return Err(refusal("OOM", "command not allowed when used memory > 'maxmemory'"));
                }
                // As the repair script: only what the hash still holds as read.
                let moves: Vec<&super::Aside> = moves
                    .iter()
                    .filter(|aside| self.hash.get(aside.key.as_slice()) == Some(&aside.value))
                    .collect();
                let moved = |field: &[u8]| moves.iter().any(|aside| aside.key.as_slice() == field);
                let mut after = None;
                if let (Some(limit), false) = (budget, clear) {
                    let mut bytes = self
                        .hash
                        .iter()
                        .filter(|(field, _)| {
                            field.as_slice() != BUDGET_COUNTER_FIELD.as_bytes() && !moved(field)
                        })
                        .map(|(_, value)| value.len() as u64)
                        .sum::<u64>();
                    for (field, value) in pairs {
                        if !moved(field) {
                            bytes -= self.hash.get(field).map_or(0, Vec::len) as u64;
                        }
                        bytes += value.len() as u64;
                    }
                    for field in removals {
                        if !moved(field) {
                            bytes -= self.hash.get(field).map_or(0, Vec::len) as u64;
                        }
                    }
                    if bytes > *limit {
                        return Err(refusal("STOREFULL", "the store would hold too many bytes"));
                    }
                    after = Some(bytes);
                }
                for aside in &moves {
                    let mut at_ms = aside.at_ms;
                    let mut entry = super::quarantine_entry(&aside.key, at_ms);
                    while self.quarantine.contains_key(&entry) {
                        at_ms += 1;
                        entry = super::quarantine_entry(&aside.key, at_ms);
                    }
                    let mut why = entry.clone();
                    why.extend_from_slice(super::QUARANTINE_REASON_SUFFIX.as_bytes());
                    self.quarantine.insert(entry, aside.value.clone());
                    self.quarantine.insert(why, aside.reason.clone().into_bytes());
                    self.hash.remove(aside.key.as_slice());
                }
                if *clear {
                    self.hash.clear();
                    return Ok(Reply::Done);
                }
                for (field, value) in pairs {
                    self.hash.insert(field.clone(), value.clone());
                }
                for field in removals {
                    self.hash.remove(field);
                }
                if let Some(bytes) = after {
                    let counter = BUDGET_COUNTER_FIELD.as_bytes().to_vec();
                    if self.hash.keys().any(|field| *field != counter) {
                        self.hash.insert(counter, bytes.to_string().into_bytes());
                    } else {
                        self.hash.remove(&counter);
                    }
                }
                Ok(Reply::Done)
            }
        }
    }

    /// The sum of the values' lengths, as the budget counts it.
    pub(crate) fn value_bytes(&self) -> u64 {
        self.hash
            .iter()
            .filter(|(field, _)| field.as_slice() != BUDGET_COUNTER_FIELD.as_bytes())
            .map(|(_, value)| value.len() as u64)
            .sum()
    }
}

impl Runner for SimRedis {
    fn run(&mut self, plan: &Plan<'_>) -> Exchange {
        self.exchange(plan)
    }

    fn replies(&mut self) -> super::drive::Confirmations {
        // A hung Redis answers nothing until it resumes.
        if self.mode == Mode::Hung {
            return super::drive::Confirmations::new();
        }
        if !self.due.is_empty() {
            self.patience.answered();
        }
        self.due.drain(..).collect()
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn may_wait(&self) -> bool {
        self.patience.may_wait(true)
    }
}

fn refusal(code: &str, detail: &str) -> RedisError {
    redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
}

fn owned(plan: &Plan<'_>, command: &Command<'_>) -> Owned {
    match command {
        Command::ReadAll => Owned::ReadAll,
        Command::KeyType => Owned::KeyType,
        Command::Read(key) => Owned::Read(key.as_bytes().to_vec()),
        Command::ListFields => Owned::ListFields,
        Command::DeleteAll => Owned::DeleteAll,
        Command::Write { records, removals, riding } => Owned::Write {
            pairs: records.waiting().map(|(field, value)| (field.to_vec(), value.to_vec())).collect(),
            removals: removals.iter().chain(riding.iter()).map(|field| field.to_vec()).collect(),
            budget: plan.budget,
        },
        Command::Remove(fields) => Owned::Remove(fields.iter().map(|field| field.to_vec()).collect()),
        Command::SetByteCount(bytes) => Owned::SetByteCount(*bytes),
        Command::DropByteCount => Owned::DropByteCount,
        Command::Repair { records, removals, riding, aside, clear, .. } => Owned::Repair {
            moves: aside.to_vec(),
            pairs: if *clear {
                Vec::new()
            } else {
                records.waiting().map(|(field, value)| (field.to_vec(), value.to_vec())).collect()
            },
            removals: if *clear {
                Vec::new()
            } else {
                removals.iter().chain(riding.iter()).map(|field| field.to_vec()).collect()
            },
            budget: plan.budget,
            clear: *clear,
        },
    }
}
