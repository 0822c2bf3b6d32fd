//! A plan's commands as RESP, written into the transport's one reused buffer.

use bytes::BytesMut;

use super::resp;
use super::scripts::SCRIPTS;
use crate::core::{Command, Plan, BYTE_COUNT_FIELD};

/// How a command goes to Redis: decided here only. `encode` writes the
/// command as this says, and the transports name it by it (`Wire::name`) and
/// expect its number of replies (`Wire::replies`), so that what is sent, what
/// is awaited and what an error names cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Hgetall,
    Type,
    Hget,
    Hkeys,
    Del,
    Hset,
    Hdel,
    /// `EVALSHA` of the write-and-remove script.
    WriteAndRemoveScript,
    /// `EVALSHA` of the budget's write script.
    WriteScript,
    /// `EVALSHA` of the budget's remove script.
    RemoveScript,
}

impl Wire {
    /// How `command` is sent, under `budget`.
    pub(crate) fn of(command: &Command<'_>, budget: Option<u64>) -> Self {
        match command {
            Command::ReadAll => Self::Hgetall,
            Command::KeyType => Self::Type,
            Command::Read(_) => Self::Hget,
            Command::ListFields => Self::Hkeys,
            Command::DeleteAll => Self::Del,
            Command::Write { .. } if budget.is_some() => Self::WriteScript,
            Command::Write { removals: [], tied: [], .. } => Self::Hset,
            Command::Write { .. } => Self::WriteAndRemoveScript,
            Command::Remove(_) if budget.is_some() => Self::RemoveScript,
            Command::Remove(_) => Self::Hdel,
            Command::SetByteCount(_) => Self::Hset,
            Command::DropByteCount => Self::Hdel,
        }
    }

    /// The Redis command, as errors and logs name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Hgetall => "HGETALL",
            Self::Type => "TYPE",
            Self::Hget => "HGET",
            Self::Hkeys => "HKEYS",
            Self::Del => "DEL",
            Self::Hset => "HSET",
            Self::Hdel => "HDEL",
            Self::WriteAndRemoveScript | Self::WriteScript | Self::RemoveScript => "EVALSHA",
        }
    }

    /// How many replies Redis sends: one per command sent.
    pub(crate) fn replies(self) -> usize {
        1
    }
}

/// The name of `plan`'s first command as sent (`HSET` for an empty plan).
pub(crate) fn first_name(plan: &Plan<'_>) -> &'static str {
    plan.commands.first().map_or("HSET", |command| Wire::of(command, plan.budget).name())
}

/// Appends `plan`'s commands to `packed`, each as `Wire::of` says.
pub(super) fn encode(plan: &Plan<'_>, packed: &mut BytesMut) {
    let hash = plan.hash.as_bytes();
    for command in &plan.commands {
        let wire = Wire::of(command, plan.budget);
        match *command {
            Command::ReadAll => simple(packed, &[b"HGETALL", hash]),
            Command::KeyType => simple(packed, &[b"TYPE", hash]),
            Command::Read(key) => simple(packed, &[b"HGET", hash, key.as_bytes()]),
            Command::ListFields => simple(packed, &[b"HKEYS", hash]),
            // One DEL of one key is atomic by itself; inside MULTI/EXEC, Redis
            // at `maxmemory` would refuse it (seen on 7.0: -OOM, -EXECABORT).
            Command::DeleteAll => simple(packed, &[b"DEL", hash]),
            Command::Write { records, removals, tied } => {
                let pairs = records.len();
                let pair_args = pairs.saturating_mul(2);
                let removed = removals.len().saturating_add(tied.len());
                let write_pairs = |packed: &mut BytesMut| {
                    for (field, value) in records.pairs() {
                        resp::arg(packed, field);
                        resp::arg_from_parts(packed, value.len(), value.slices());
                    }
                };
                let remove_fields = |packed: &mut BytesMut| {
                    for field in removals.iter().chain(tied) {
                        resp::arg(packed, field);
                    }
                };
                match (wire, plan.budget) {
                    (Wire::Hset, _) => {
                        resp::begin(packed, pair_args.saturating_add(2));
                        resp::arg(packed, b"HSET");
                        resp::arg(packed, hash);
                    }
                    (Wire::WriteScript, Some(limit)) => {
                        resp::begin(packed, pair_args.saturating_add(removed).saturating_add(7));
                        resp::arg(packed, b"EVALSHA");
                        resp::arg(packed, SCRIPTS.write.get_hash().as_bytes());
                        resp::arg(packed, b"1");
                        resp::arg(packed, hash);
                        resp::arg_number(packed, limit);
                        resp::arg(packed, BYTE_COUNT_FIELD.as_bytes());
                        resp::arg_number(packed, u64::try_from(pairs).unwrap_or(u64::MAX));
                    }
                    _ => {
                        resp::begin(packed, pair_args.saturating_add(removed).saturating_add(5));
                        resp::arg(packed, b"EVALSHA");
                        resp::arg(packed, SCRIPTS.write_and_remove.get_hash().as_bytes());
                        resp::arg(packed, b"1");
                        resp::arg(packed, hash);
                        resp::arg_number(packed, u64::try_from(pairs).unwrap_or(u64::MAX));
                    }
                }
                write_pairs(packed);
                remove_fields(packed);
            }
            Command::Remove(fields) => {
                match wire {
                    Wire::RemoveScript => {
                        resp::begin(packed, fields.len().saturating_add(5));
                        resp::arg(packed, b"EVALSHA");
                        resp::arg(packed, SCRIPTS.remove.get_hash().as_bytes());
                        resp::arg(packed, b"1");
                        resp::arg(packed, hash);
                        resp::arg(packed, BYTE_COUNT_FIELD.as_bytes());
                    }
                    _ => {
                        resp::begin(packed, fields.len().saturating_add(2));
                        resp::arg(packed, b"HDEL");
                        resp::arg(packed, hash);
                    }
                }
                for field in fields {
                    resp::arg(packed, field);
                }
            }
            Command::SetByteCount(bytes) => {
                resp::begin(packed, 4);
                resp::arg(packed, b"HSET");
                resp::arg(packed, hash);
                resp::arg(packed, BYTE_COUNT_FIELD.as_bytes());
                resp::arg_number(packed, bytes);
            }
            Command::DropByteCount => simple(packed, &[b"HDEL", hash, BYTE_COUNT_FIELD.as_bytes()]),
        }
    }
}

fn simple(packed: &mut BytesMut, args: &[&[u8]]) {
    resp::begin(packed, args.len());
    for argument in args {
        resp::arg(packed, argument);
    }
}

#[cfg(test)]
mod tests {
    use smallvec::smallvec;

    use super::*;
    use crate::core::{FieldName, Records};

    /// The arguments of each command in `packed`, as Redis reads them.
    fn commands(packed: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut rest = packed;
        let mut commands = Vec::new();
        while !rest.is_empty() {
            let value = redis::parse_redis_value(rest).expect("RESP");
            let redis::Value::Array(args) = value else { panic!("not a command: {value:?}") };
            let args: Vec<Vec<u8>> = args
                .into_iter()
                .map(|arg| match arg {
                    redis::Value::BulkString(bytes) => bytes,
                    other => panic!("not an argument: {other:?}"),
                })
                .collect();
            let encoded_len = {
                let mut again = BytesMut::new();
                resp::begin(&mut again, args.len());
                for arg in &args {
                    resp::arg(&mut again, arg);
                }
                again.len()
            };
            rest = &rest[encoded_len..];
            commands.push(args);
        }
        commands
    }

    /// Every command of every form: encoded alone, its first word is the
    /// name `Wire` gives it.
    #[test]
    fn each_command_is_named_as_it_is_encoded() {
        let parts = [b"value".as_slice()];
        let removals: [FieldName; 1] = [smallvec![b'c', b'-', b'1']];
        let new = Some(("s-1", &parts[..]));
        let write = |removals| Command::Write { records: Records { kept: None, new }, removals, tied: &[] };
        let all = [
            Command::ReadAll,
            Command::KeyType,
            Command::Read("s-1"),
            Command::ListFields,
            Command::DeleteAll,
            write(&[]),
            write(&removals),
            Command::Remove(&removals),
            Command::SetByteCount(7),
            Command::DropByteCount,
        ];
        for budget in [None, Some(100)] {
            for command in all {
                let plan = Plan { hash: "h", budget, commands: smallvec![command] };
                let mut packed = BytesMut::new();
                encode(&plan, &mut packed);
                let sent = commands(&packed);
                let name = first_name(&plan);
                let first = sent.first().and_then(|args| args.first()).expect("a command");
                assert_eq!(String::from_utf8_lossy(first), name, "{command:?} under {budget:?}");
            }
        }
    }
}
