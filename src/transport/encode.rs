//! A plan's commands as RESP, written into the transport's one reused buffer.

use bytes::BytesMut;

use super::resp;
use super::scripts::SCRIPTS;
use crate::core::{Command, Plan, BUDGET_COUNTER_FIELD};

/// Appends `plan`'s commands to `packed`.
pub(super) fn encode(plan: &Plan<'_>, packed: &mut BytesMut) {
    let hash = plan.hash.as_bytes();
    for command in &plan.commands {
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
                match (plan.budget, removals.len().saturating_add(tied.len())) {
                    (None, 0) => {
                        resp::begin(packed, pair_args.saturating_add(2));
                        resp::arg(packed, b"HSET");
                        resp::arg(packed, hash);
                    }
                    (None, removed) => {
                        resp::begin(packed, pair_args.saturating_add(removed).saturating_add(5));
                        resp::arg(packed, b"EVALSHA");
                        resp::arg(packed, SCRIPTS.write_and_remove.get_hash().as_bytes());
                        resp::arg(packed, b"1");
                        resp::arg(packed, hash);
                        resp::arg_number(packed, u64::try_from(pairs).unwrap_or(u64::MAX));
                    }
                    (Some(limit), removed) => {
                        resp::begin(packed, pair_args.saturating_add(removed).saturating_add(7));
                        resp::arg(packed, b"EVALSHA");
                        resp::arg(packed, SCRIPTS.write.get_hash().as_bytes());
                        resp::arg(packed, b"1");
                        resp::arg(packed, hash);
                        resp::arg_number(packed, limit);
                        resp::arg(packed, BUDGET_COUNTER_FIELD.as_bytes());
                        resp::arg_number(packed, u64::try_from(pairs).unwrap_or(u64::MAX));
                    }
                }
                for (field, value) in records.pairs() {
                    resp::arg(packed, field);
                    resp::arg_from_parts(packed, value.len(), value.slices());
                }
                for field in removals.iter().chain(tied) {
                    resp::arg(packed, field);
                }
            }
            Command::Remove(fields) => {
                match plan.budget {
                    None => {
                        resp::begin(packed, fields.len().saturating_add(2));
                        resp::arg(packed, b"HDEL");
                        resp::arg(packed, hash);
                    }
                    Some(_) => {
                        resp::begin(packed, fields.len().saturating_add(5));
                        resp::arg(packed, b"EVALSHA");
                        resp::arg(packed, SCRIPTS.remove.get_hash().as_bytes());
                        resp::arg(packed, b"1");
                        resp::arg(packed, hash);
                        resp::arg(packed, BUDGET_COUNTER_FIELD.as_bytes());
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
        }
    }
}

fn simple(packed: &mut BytesMut, args: &[&[u8]]) {
    resp::begin(packed, args.len());
    for argument in args {
        resp::arg(packed, argument);
    }
}
