//! The Lua scripts a plan's writes run as, where one `HSET` or `HDEL` would
//! not do.
//!
//! Redis runs a script atomically, and refuses a script's first write when it
//! is out of memory (`maxmemory`) before anything changed: a write that also
//! removes fields is therefore all or nothing, which `MULTI`/`EXEC` gives too
//! but with three more commands. The pipelined transport (Unix socket) sends
//! those four commands instead when Redis allows them, for less of Redis's
//! time (see `encode::Wire`); over TCP, and where Redis refuses `MULTI`, a
//! write that removes fields is the script below.
//!
//! Scripts run by their SHA (`EVALSHA`), so a write does not carry the
//! script's text; a Redis that does not know one yet (it restarted, or its
//! scripts were flushed) answers `NOSCRIPT`, and the transport loads them and
//! sends the exchange again. redis-rs's `Script` computes the SHA.
//!
//! With `max_store_bytes`, writes and removals keep the store's byte count
//! (the sum of its values) in one field of the hash
//! ([`crate::admin::BUDGET_COUNTER_FIELD`]) and a write that would exceed the budget
//! is refused.

/// `KEYS[1]` the hash; `ARGV` = number of pairs, the field/value pairs, then
/// fields to remove once the pairs are written. The removals ride here because
/// they must not happen without the write: Paho removes a command record just
/// before it writes the same message's PUBLISH record.
pub(crate) const WRITE_AND_REMOVE_SCRIPT: &str = r"
local hash, last_pair = KEYS[1], 1 + 2 * tonumber(ARGV[1])
for i = 2, last_pair, 2 do redis.call('HSET', hash, ARGV[i], ARGV[i + 1]) end
for i = last_pair + 1, #ARGV do redis.call('HDEL', hash, ARGV[i]) end
return 1
";

/// `KEYS[1]` the hash; `ARGV` = limit, counter field, number of pairs, the
/// field/value pairs, then fields to remove once the pairs are written.
/// Writes all pairs and removes those fields, or changes nothing; returns the
/// new byte count, or the error reply `STOREFULL …`.
pub(crate) const WRITE_SCRIPT: &str = r"
local hash, limit, counter = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local last_pair = 3 + 2 * tonumber(ARGV[3])
local used = tonumber(redis.call('HGET', hash, counter))
if not used then
  used = 0
  for _, value in ipairs(redis.call('HVALS', hash)) do used = used + #value end
end
local after = used
for i = 4, last_pair, 2 do
  after = after - redis.call('HSTRLEN', hash, ARGV[i]) + #ARGV[i + 1]
end
for i = last_pair + 1, #ARGV do
  after = after - redis.call('HSTRLEN', hash, ARGV[i])
end
if after > limit then
  return redis.error_reply('STOREFULL the store would hold ' .. after .. ' bytes')
end
for i = 4, last_pair, 2 do redis.call('HSET', hash, ARGV[i], ARGV[i + 1]) end
for i = last_pair + 1, #ARGV do redis.call('HDEL', hash, ARGV[i]) end
redis.call('HSET', hash, counter, after)
return after
";

/// `KEYS[1]` the hash; `ARGV` = counter field, then the fields to remove.
/// Returns the bytes freed. An empty store loses its counter too, so that its
/// hash disappears like one without a budget.
pub(crate) const REMOVE_SCRIPT: &str = r"
local hash, counter = KEYS[1], ARGV[1]
local freed = 0
for i = 2, #ARGV do
  freed = freed + redis.call('HSTRLEN', hash, ARGV[i])
  redis.call('HDEL', hash, ARGV[i])
end
local used = tonumber(redis.call('HGET', hash, counter))
if used then
  if redis.call('HLEN', hash) <= 1 then
    redis.call('HDEL', hash, counter)
  else
    redis.call('HSET', hash, counter, math.max(used - freed, 0))
  end
end
return freed
";

/// `open`'s repair (`Command::Repair`). `KEYS[1]` the hash, `KEYS[2]` its
/// quarantine; `ARGV` = limit (empty: no budget), counter field, `1` to
/// delete the hash instead of writing, number of records set aside, then
/// for each its field, the time it was read (ms), its value and the reason;
/// then the number of pairs, the pairs and the fields to remove, as for
/// `WRITE_AND_REMOVE_SCRIPT`.
///
/// A record set aside is moved only while the hash still holds the value
/// that was checked (a repair that ran late moved it already), to the
/// entry `{field}@{ms}` (the next free ms, so that two quarantines of one
/// field stay apart), with the reason in `{entry}#reason`. With a budget,
/// the byte count is taken again from the values that stay, and a write
/// beyond the budget changes nothing (`STOREFULL`). Returns the records moved.
pub(crate) const REPAIR_SCRIPT: &str = r"
local hash, quarantine = KEYS[1], KEYS[2]
local limit, counter, clear = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1'
local moves, moved, at = {}, {}, 5
for _ = 1, tonumber(ARGV[4]) do
  if redis.call('HGET', hash, ARGV[at]) == ARGV[at + 2] then
    moves[#moves + 1] = at
    moved[ARGV[at]] = true
  end
  at = at + 4
end
local first_pair, last_pair = at + 1, at + 2 * tonumber(ARGV[at])
local after
if limit and not clear then
  after = 0
  local all = redis.call('HGETALL', hash)
  for i = 1, #all, 2 do
    if all[i] ~= counter and not moved[all[i]] then after = after + #all[i + 1] end
  end
  for i = first_pair, last_pair, 2 do
    if not moved[ARGV[i]] then after = after - redis.call('HSTRLEN', hash, ARGV[i]) end
    after = after + #ARGV[i + 1]
  end
  for i = last_pair + 1, #ARGV do
    if not moved[ARGV[i]] then after = after - redis.call('HSTRLEN', hash, ARGV[i]) end
  end
  if after > limit then
    return redis.error_reply('STOREFULL the store would hold ' .. after .. ' bytes')
  end
end
for _, m in ipairs(moves) do
  local ms = tonumber(ARGV[m + 1])
  local entry = ARGV[m] .. '@' .. string.format('%.0f', ms)
  while redis.call('HEXISTS', quarantine, entry) == 1 do
    ms = ms + 1
    entry = ARGV[m] .. '@' .. string.format('%.0f', ms)
  end
  redis.call('HSET', quarantine, entry, ARGV[m + 2], entry .. '#reason', ARGV[m + 3])
  redis.call('HDEL', hash, ARGV[m])
end
if clear then
  redis.call('DEL', hash)
  return #moves
end
for i = first_pair, last_pair, 2 do redis.call('HSET', hash, ARGV[i], ARGV[i + 1]) end
for i = last_pair + 1, #ARGV do redis.call('HDEL', hash, ARGV[i]) end
if after then
  if redis.call('HLEN', hash) > redis.call('HEXISTS', hash, counter) then
    redis.call('HSET', hash, counter, after)
  else
    redis.call('HDEL', hash, counter)
  end
end
return #moves
";

/// The scripts, with their SHA computed once.
pub(crate) struct Scripts {
    pub(crate) write_and_remove: redis::Script,
    pub(crate) write: redis::Script,
    pub(crate) remove: redis::Script,
    pub(crate) repair: redis::Script,
}

pub(crate) static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    write_and_remove: redis::Script::new(WRITE_AND_REMOVE_SCRIPT),
    write: redis::Script::new(WRITE_SCRIPT),
    remove: redis::Script::new(REMOVE_SCRIPT),
    repair: redis::Script::new(REPAIR_SCRIPT),
});

/// Every script's source.
pub(crate) const SOURCES: [&str; 4] = [WRITE_AND_REMOVE_SCRIPT, WRITE_SCRIPT, REMOVE_SCRIPT, REPAIR_SCRIPT];

/// Loads every script into Redis (`SCRIPT LOAD`), after a `NOSCRIPT`.
pub(crate) fn load(conn: &mut redis::Connection) -> redis::RedisResult<()> {
    for source in SOURCES {
        let _sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(source).query(conn)?;
    }
    Ok(())
}
