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
use super::FieldName;
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
    /// Writes every record, then removes `removals` and `tied`: all of it or
    /// nothing (`HSET` when nothing is removed, else one script; Redis runs a
    /// script atomically and a refused write inside it stops it before any
    /// change). `tied` are removals that must never run without this write.
    Write { records: Records<'a>, removals: &'a [FieldName], tied: &'a [FieldName] },
    /// Removes fields (`HDEL`, or the budget's script, which keeps its count).
    Remove(&'a [FieldName]),
    /// Sets the budget's byte count to the sum of the values `open` read.
    SetByteCount(u64),
    /// Removes a byte count that writes without a budget no longer keep.
    DropByteCount,
}

impl Command<'_> {
    /// The Redis command this becomes, as sent: the name errors and logs give
    /// (a write under a budget is the budget's script, not an `HSET`).
    pub(crate) fn redis_name(&self, budget: Option<u64>) -> &'static str {
        match self {
            Command::ReadAll => "HGETALL",
            Command::KeyType => "TYPE",
            Command::Read(_) => "HGET",
            Command::ListFields => "HKEYS",
            Command::DeleteAll => "DEL",
            Command::Write { removals: [], tied: [], .. } if budget.is_none() => "HSET",
            Command::Write { .. } => "EVALSHA",
            Command::Remove(_) if budget.is_none() => "HDEL",
            Command::Remove(_) => "EVALSHA",
            Command::SetByteCount(_) => "HSET",
            Command::DropByteCount => "HDEL",
        }
    }
}

/// The records a write carries: those Redis has not taken yet, then the new one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Records<'a> {
    /// Records kept in memory, all written again (`None` when there are none).
    pub(crate) kept: Option<&'a Table>,
    /// The record `put` is writing: its key and the parts Paho passed.
    pub(crate) new: Option<(&'a str, &'a [&'a [u8]])>,
}

impl<'a> Records<'a> {
    /// Every (field, value parts) pair, each field once: a kept older value of
    /// the new record's key is superseded by it.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&'a [u8], Parts<'a>)> + 'a {
        let new_key = self.new.map(|(key, _)| key.as_bytes());
        let kept = self
            .kept
            .into_iter()
            .flat_map(Table::waiting)
            .filter(move |(key, _)| Some(*key) != new_key)
            .map(|(key, value)| (key, Parts::One(value)));
        let new = self.new.map(|(key, parts)| (key.as_bytes(), Parts::Many(parts)));
        kept.chain(new)
    }

    /// The number of pairs.
    pub(crate) fn len(&self) -> usize {
        self.pairs().count()
    }
}

/// A value, in one piece or as the parts Paho passed to `put`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Parts<'a> {
    One(&'a [u8]),
    Many(&'a [&'a [u8]]),
}

impl<'a> Parts<'a> {
    /// The parts, in order.
    pub(crate) fn slices(self) -> impl Iterator<Item = &'a [u8]> {
        let (one, many): (Option<&'a [u8]>, &'a [&'a [u8]]) = match self {
            Parts::One(value) => (Some(value), &[]),
            Parts::Many(parts) => (None, parts),
        };
        one.into_iter().chain(many.iter().copied())
    }

    /// The total length.
    pub(crate) fn len(self) -> usize {
        self.slices().map(<[u8]>::len).fold(0, usize::saturating_add)
    }
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
