//! A plan's commands as RESP, written into the transport's one reused buffer.

use bytes::BytesMut;

use super::resp;
use super::scripts::SCRIPTS;
use crate::core::{Command, Plan, BUDGET_COUNTER_FIELD};

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
    /// `EVALSHA` of the repair script: one per open that set records aside,
    /// so always the script (over TCP too, and it needs the stored value
    /// compared, which a transaction cannot do).
    RepairScript,
    /// `MULTI`, `HSET`, `HDEL`, `EXEC`: a write that removes fields, over a
    /// connection that may use transactions (see `Wire::of`).
    Transaction,
}

impl Wire {
    /// How `command` is sent, under `budget`. `transactions`: the connection
    /// may send a write that removes fields as `MULTI`/`HSET`/`HDEL`/`EXEC`
    /// instead of the write-and-remove script (the pipelined transport, when
    /// Redis allows `MULTI` and `EXEC`; over TCP, `tests/command_counts.rs`
    /// counts the script). Both are all or nothing: Redis refuses a
    /// transaction whole (`EXECABORT`) when it refused a queued command
    /// (`-OOM` at `maxmemory`), and runs it without interleaving. The
    /// transaction took 1.3 µs of Redis's time against the script's 3.45 µs
    /// (measured by the author).
    pub(crate) fn of(command: &Command<'_>, budget: Option<u64>, transactions: bool) -> Self {
        match command {
            Command::ReadAll => Self::Hgetall,
            Command::KeyType => Self::Type,
            Command::Read(_) => Self::Hget,
            Command::ListFields => Self::Hkeys,
            Command::DeleteAll => Self::Del,
            Command::Write { .. } if budget.is_some() => Self::WriteScript,
            Command::Write { removals: [], riding: [], .. } => Self::Hset,
            // Nothing to write: the removals alone, one HDEL (atomic by itself).
            Command::Write { records, .. } if transactions && records.waiting_count() == 0 => Self::Hdel,
            Command::Write { .. } if transactions => Self::Transaction,
            Command::Write { .. } => Self::WriteAndRemoveScript,
            Command::Remove(_) if budget.is_some() => Self::RemoveScript,
            Command::Remove(_) => Self::Hdel,
            Command::SetByteCount(_) => Self::Hset,
            Command::DropByteCount => Self::Hdel,
            Command::Repair { .. } => Self::RepairScript,
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
            Self::WriteAndRemoveScript | Self::WriteScript | Self::RemoveScript | Self::RepairScript => {
                "EVALSHA"
            }
            Self::Transaction => "MULTI/EXEC",
        }
    }

    /// How many replies Redis sends: one per command sent.
    #[cfg_attr(not(feature = "unix-socket"), allow(dead_code))] // the Unix socket's transport counts them
    pub(crate) fn replies(self) -> usize {
        match self {
            Self::Transaction => 4,
            _ => 1,
        }
    }
}

/// The name of `plan`'s first command as sent (`HSET` for an empty plan).
pub(crate) fn first_name(plan: &Plan<'_>, transactions: bool) -> &'static str {
    plan.commands.first().map_or("HSET", |command| Wire::of(command, plan.budget, transactions).name())
}

/// Appends `plan`'s commands to `packed`, each as `Wire::of` says.
pub(super) fn encode(plan: &Plan<'_>, transactions: bool, packed: &mut BytesMut) {
    let hash = plan.hash.as_bytes();
    for command in &plan.commands {
        let wire = Wire::of(command, plan.budget, transactions);
        match *command {
            Command::ReadAll => simple(packed, &[b"HGETALL", hash]),
            Command::KeyType => simple(packed, &[b"TYPE", hash]),
            Command::Read(key) => simple(packed, &[b"HGET", hash, key.as_bytes()]),
            Command::ListFields => simple(packed, &[b"HKEYS", hash]),
            // One DEL of one key is atomic by itself; inside MULTI/EXEC, Redis
            // at `maxmemory` would refuse it (seen on 7.0: -OOM, -EXECABORT).
            Command::DeleteAll => simple(packed, &[b"DEL", hash]),
            Command::Write { records, removals, riding } => {
                let pairs = records.waiting_count();
                let pair_args = pairs.saturating_mul(2);
                let removed = removals.len().saturating_add(riding.len());
                let write_pairs = |packed: &mut BytesMut| {
                    for (field, value) in records.waiting() {
                        resp::arg(packed, field);
                        resp::arg(packed, value);
                    }
                };
                let remove_fields = |packed: &mut BytesMut| {
                    for field in removals.iter().chain(riding) {
                        resp::arg(packed, field);
                    }
                };
                match (wire, plan.budget) {
                    (Wire::Transaction, _) => {
                        simple(packed, &[b"MULTI".as_slice()]);
                        resp::begin(packed, pair_args.saturating_add(2));
                        resp::arg(packed, b"HSET");
                        resp::arg(packed, hash);
                        write_pairs(packed);
                        resp::begin(packed, removed.saturating_add(2));
                        resp::arg(packed, b"HDEL");
                        resp::arg(packed, hash);
                        remove_fields(packed);
                        simple(packed, &[b"EXEC".as_slice()]);
                        continue;
                    }
                    (Wire::Hdel, _) => {
                        resp::begin(packed, removed.saturating_add(2));
                        resp::arg(packed, b"HDEL");
                        resp::arg(packed, hash);
                    }
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
                        resp::arg(packed, BUDGET_COUNTER_FIELD.as_bytes());
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
                        resp::arg(packed, BUDGET_COUNTER_FIELD.as_bytes());
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
                resp::arg(packed, BUDGET_COUNTER_FIELD.as_bytes());
                resp::arg_number(packed, bytes);
            }
            Command::DropByteCount => simple(packed, &[b"HDEL", hash, BUDGET_COUNTER_FIELD.as_bytes()]),
            Command::Repair { records, removals, riding, quarantine, aside, clear } => {
                let pairs = if clear { 0 } else { records.waiting_count() };
                let removed = if clear { 0 } else { removals.len().saturating_add(riding.len()) };
                let args = aside
                    .len()
                    .saturating_mul(4)
                    .saturating_add(pairs.saturating_mul(2))
                    .saturating_add(removed)
                    .saturating_add(10);
                resp::begin(packed, args);
                resp::arg(packed, b"EVALSHA");
                resp::arg(packed, SCRIPTS.repair.get_hash().as_bytes());
                resp::arg(packed, b"2");
                resp::arg(packed, hash);
                resp::arg(packed, quarantine.as_bytes());
                match plan.budget {
                    Some(limit) => resp::arg_number(packed, limit),
                    None => resp::arg(packed, b""),
                }
                resp::arg(packed, BUDGET_COUNTER_FIELD.as_bytes());
                resp::arg(packed, if clear { b"1" } else { b"0" });
                resp::arg_number(packed, u64::try_from(aside.len()).unwrap_or(u64::MAX));
                for set_aside in aside {
                    resp::arg(packed, &set_aside.key);
                    resp::arg_number(packed, set_aside.at_ms);
                    resp::arg(packed, &set_aside.value);
                    resp::arg(packed, set_aside.reason.as_bytes());
                }
                resp::arg_number(packed, u64::try_from(pairs).unwrap_or(u64::MAX));
                if !clear {
                    for (field, value) in records.waiting() {
                        resp::arg(packed, field);
                        resp::arg(packed, value);
                    }
                    for field in removals.iter().chain(riding) {
                        resp::arg(packed, field);
                    }
                }
            }
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
    use crate::core::QUARANTINE_REASON_SUFFIX;
    use crate::core::{CacheLimits, FieldName, Table};

    /// The script names the reason's field as the store does.
    #[test]
    fn the_repair_script_names_reasons_as_the_store_reads_them() {
        assert!(super::super::scripts::REPAIR_SCRIPT.contains(&format!("'{QUARANTINE_REASON_SUFFIX}'")));
    }

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
    /// name `Wire` gives it, and it is as many commands as `Wire` expects
    /// replies.
    #[test]
    fn each_command_is_named_as_it_is_encoded() {
        let removals: [FieldName; 1] = [smallvec![b'c', b'-', b'1']];
        let mut table = Table::new(CacheLimits::default());
        table.write("s-1", &[b"value"]);
        let write = |removals| Command::Write { records: &table, removals, riding: &[] };
        let aside = [crate::core::Aside {
            key: smallvec![b's', b'-', b'2'],
            value: Vec::new(),
            reason: "empty".to_owned(),
            at_ms: 1,
        }];
        let repair = |clear| Command::Repair {
            records: &table,
            removals: &removals,
            riding: &[],
            quarantine: "h:quarantine",
            aside: &aside,
            clear,
        };
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
            repair(false),
            repair(true),
        ];
        for (budget, transactions) in [(None, false), (Some(100), false), (None, true), (Some(100), true)] {
            for command in all {
                let plan = Plan { hash: "h", budget, commands: smallvec![command] };
                let mut packed = BytesMut::new();
                encode(&plan, transactions, &mut packed);
                let sent = commands(&packed);
                let name = first_name(&plan, transactions);
                let first = sent.first().and_then(|args| args.first()).expect("a command");
                let case = format!("{command:?} under {budget:?}, transactions {transactions}");
                assert_eq!(Some(String::from_utf8_lossy(first).as_ref()), name.split('/').next(), "{case}");
                assert_eq!(sent.len(), Wire::of(&command, budget, transactions).replies(), "{case}");
            }
        }
    }

    /// A write that removes fields, with transactions: `MULTI`, the `HSET`
    /// of every pair, the `HDEL` of every removal, `EXEC`; with nothing to
    /// write, the `HDEL` alone.
    #[test]
    fn a_write_that_removes_fields_is_a_transaction() {
        let removals: [FieldName; 1] = [smallvec![b'c', b'-', b'1']];
        let riding: [FieldName; 1] = [smallvec![b'c', b'-', b'2']];
        let mut table = Table::new(CacheLimits::default());
        table.write("s-1", &[b"ab", b"c"]);
        let write = Command::Write { records: &table, removals: &removals, riding: &riding };
        let plan = Plan { hash: "h", budget: None, commands: smallvec![write] };
        let mut packed = BytesMut::new();
        encode(&plan, true, &mut packed);
        let words = |args: &[&str]| args.iter().map(|arg| arg.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            commands(&packed),
            [
                words(&["MULTI"]),
                words(&["HSET", "h", "s-1", "abc"]),
                words(&["HDEL", "h", "c-1", "c-2"]),
                words(&["EXEC"])
            ]
        );
        let nothing = Table::new(CacheLimits::default());
        let removal_only = Command::Write { records: &nothing, removals: &removals, riding: &riding };
        let plan = Plan { hash: "h", budget: None, commands: smallvec![removal_only] };
        packed.clear();
        encode(&plan, true, &mut packed);
        assert_eq!(commands(&packed), [words(&["HDEL", "h", "c-1", "c-2"])]);
    }
}
