//! Plans: the Redis commands the core asks for, as data, and what became of them.
//!
//! A plan borrows the core (for the records it keeps in memory) and the
//! caller (for the record being written), so building one copies nothing; a
//! transport encodes it, sends it, and hands the [`Exchange`] back to the
//! core. The core's crash-point checker runs plans against a simulated Redis
//! instead.

use redis::RedisError;
use smallvec::SmallVec;

use super::table::Table;
use super::{Aside, FieldName};
use crate::Error;

/// The commands of one exchange with Redis, in the order they must run.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The store's hash.
    pub(crate) hash: &'a str,
    /// The store's byte budget, if any: writes and removals then run as the
    /// budget's scripts, which keep the byte count.
    pub(crate) budget: Option<u64>,
    pub(crate) commands: SmallVec<[Command<'a>; 2]>,
}

impl Plan<'_> {
    /// Whether running the plan may change the hash (a fenced store runs
    /// none of these: see `Core::fence`).
    pub(crate) fn changes_hash(&self) -> bool {
        self.commands.iter().any(|command| {
            !matches!(command, Command::ReadAll | Command::KeyType | Command::Read(_) | Command::ListFields)
        })
    }
}

/// One Redis command of a plan.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command<'a> {
    /// `HGETALL`: every field and value.
    ReadAll,
    /// `TYPE` of the hash's key (after `ReadAll` found it is not a hash).
    KeyType,
    /// `HGET` of one field.
    Read(&'a str),
    /// `HKEYS`: every field name.
    ListFields,
    /// `DEL` of the whole hash.
    DeleteAll,
    /// Writes every record the table owes (`Table::waiting`), then removes
    /// `removals` and `riding`: all of it or nothing (`encode::Wire` says
    /// how). `riding` are removals that must never run without this write.
    Write { records: &'a Table, removals: &'a [FieldName], riding: &'a [FieldName] },
    /// Removes fields (`HDEL`, or the budget's script, which keeps its count).
    Remove(&'a [FieldName]),
    /// Sets the budget's byte count to the sum of the values `open` read.
    SetByteCount(u64),
    /// Removes a byte count that writes without a budget no longer keep.
    DropByteCount,
    /// `open`'s repair, and every command that changes the hash while it is
    /// due: moves each record set aside that the hash still holds as `open`
    /// read it to the quarantine hash, then runs what `Write` would (or,
    /// `clear`, deletes the hash); with a budget, takes the byte count again
    /// from the values. All or nothing: one script.
    Repair {
        records: &'a Table,
        removals: &'a [FieldName],
        riding: &'a [FieldName],
        quarantine: &'a str,
        aside: &'a [Aside],
        clear: bool,
    },
}

/// What Redis answered to one command.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A write or removal ran.
    Done,
    /// `HGET`'s value, `None` for a missing field.
    Value(Option<Vec<u8>>),
    /// `HGETALL`'s fields and values.
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
    /// `HKEYS`'s fields.
    Fields(Vec<Vec<u8>>),
    /// `TYPE`'s answer.
    Type(String),
}

/// What became of a plan's commands.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// One entry per command answered, in plan order: the reply, or Redis's
    /// error reply (the command then changed nothing). Shorter than the plan
    /// when the exchange broke off.
    pub(crate) replies: SmallVec<[Result<Reply, RedisError>; 2]>,
    /// Why the commands after `replies` have no answer, if the exchange broke off.
    pub(crate) failure: Option<Failure>,
    /// How many connections the transport has opened so far: a change tells
    /// the core that Redis may have restarted, and lost records, meanwhile.
    pub(crate) generation: u64,
    /// The commands were written and their replies will come later, through
    /// [`super::Core::confirm`] (`replies` is then empty).
    pub(crate) sent: bool,
    /// The Redis command the plan went out as (the transport decides it),
    /// for the errors and logs of its outcome.
    pub(crate) command: &'static str,
}

/// Why an exchange broke off.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    /// Whether the unanswered commands may still run: they were sent, and then
    /// the reply timed out or the connection broke. A hung Redis runs them
    /// when it resumes.
    pub(crate) may_run_late: bool,
}
